import numpy as np
import pytest

import qkd
from conftest import bits_of


def test_iid_has_exact_error_count_and_is_reproducible():
    a, b, rep = qkd.simulate(100_000, 0.03, seed=7)
    assert a.dtype == np.uint8 and a.shape == (12_500,)
    diff = np.unpackbits(a ^ b).sum()
    assert diff == 3000 == rep["errors"]
    assert rep["bits"] == 100_000 and rep["seed"] == 7 and rep["model"]["kind"] == "iid_exact"
    a2, b2, _ = qkd.simulate(100_000, 0.03, seed=7)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)


def test_bool_output_and_odd_length():
    a, b, rep = qkd.simulate(1001, 0.1, seed=1, packed=False)
    assert a.dtype == np.bool_ and a.shape == (1001,)
    assert int((a != b).sum()) == round(0.1 * 1001) == rep["errors"]


def test_os_random_when_no_seed():
    a1, _, r1 = qkd.simulate(4096, 0.0)
    a2, _, _ = qkd.simulate(4096, 0.0)
    assert r1["errors"] == 0 and "seed" not in r1 and "seeded" not in r1["rng"]
    assert not np.array_equal(a1, a2)  # 2^-4096 chance of a false failure


@pytest.mark.parametrize("model", ["bernoulli", "burst"])
def test_other_models_hit_the_rate(model):
    n = 400_000
    a, b, rep = qkd.simulate(n, 0.05, model=model, seed=3)
    errors = int(np.unpackbits(a ^ b).sum())
    assert errors == rep["errors"]
    # Binomial sd ~ 138 at n p = 20000; bursts inflate the variance: allow 10 %.
    assert abs(errors - 0.05 * n) < 0.1 * 0.05 * n


def test_burst_shape_parameters():
    _, _, rep = qkd.simulate(10_000, 0.05, model="burst", seed=1, mean_burst_len=8.0)
    assert rep["chain"]["p_bad_to_good"] == pytest.approx(1 / 8)
    with pytest.raises(qkd.InputError, match="model='burst' only"):
        qkd.simulate(10_000, 0.05, model="iid", mean_burst_len=8.0)


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 0.1), "key length is 0"),
        ((-5, 0.1), "negative"),
        ((100, 0.6), "QBER 0.6 is out of range"),
        ((100, float("nan")), "QBER"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(qkd.InputError, match=match):
        qkd.simulate(*args)


def test_bad_model_and_none():
    with pytest.raises(qkd.InputError, match="unknown error model 'gauss'"):
        qkd.simulate(100, 0.1, model="gauss")
    with pytest.raises(TypeError):
        qkd.simulate(None, 0.1)
