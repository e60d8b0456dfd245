import math

import numpy as np
import pytest

import qkd
from qkd import amplify


def toeplitz_by_hand(x: np.ndarray, s: np.ndarray, m: int) -> np.ndarray:
    """y[i] = XOR_j s[i - j + n - 1] & x[j] (DESIGN §4), straight from the definition."""
    n = len(x)
    y = np.zeros(m, dtype=bool)
    for i in range(m):
        row = s[i + n - 1 - np.arange(n)]
        y[i] = np.logical_and(row, x).sum() % 2 == 1
    return y


@pytest.mark.parametrize("n, m", [(2, 1), (64, 63), (200, 50), (1000, 333)])
def test_toeplitz_matches_definition(rng, n, m):
    x = rng.integers(0, 2, n).astype(bool)
    s = rng.integers(0, 2, n + m - 1).astype(bool)
    want = toeplitz_by_hand(x, s, m)
    got = amplify.toeplitz(x, s, m, packed=False)
    np.testing.assert_array_equal(got, want)
    got_ref = amplify.toeplitz(x, s, m, method="reference", packed=False)
    np.testing.assert_array_equal(got_ref, want)
    packed = amplify.toeplitz(qkd.pack_bits(x), qkd.pack_bits(s), m, bits=n, seed_bits=n + m - 1)
    np.testing.assert_array_equal(qkd.unpack_bits(packed, bits=m), want)


def test_toeplitz_large_ntt_equals_reference(rng):
    n, m = 40_000, 10_000
    x = rng.integers(0, 256, n // 8, dtype=np.uint8)
    s = rng.integers(0, 256, (n + m) // 8, dtype=np.uint8)
    a = amplify.toeplitz(x, s, m)
    b = amplify.toeplitz(x, s, m, method="reference")
    assert a.shape == (m // 8,)
    np.testing.assert_array_equal(a, b)


def test_toeplitz_is_linear(rng):
    n, m = 4096, 1024
    x1 = rng.integers(0, 256, n // 8, dtype=np.uint8)
    x2 = rng.integers(0, 256, n // 8, dtype=np.uint8)
    s = rng.integers(0, 256, (n + m) // 8, dtype=np.uint8)
    lhs = amplify.toeplitz(x1 ^ x2, s, m)
    np.testing.assert_array_equal(lhs, amplify.toeplitz(x1, s, m) ^ amplify.toeplitz(x2, s, m))


def test_toeplitz_bad_input():
    x = np.zeros(100, dtype=np.uint8)
    s = np.zeros(200, dtype=np.uint8)
    assert amplify.seed_bits_needed(800, 100) == 899
    with pytest.raises(qkd.InputError, match="output length is 0"):
        amplify.toeplitz(x, s, 0)
    with pytest.raises(qkd.InputError, match="not shorter than the input"):
        amplify.toeplitz(x, s, 800)
    with pytest.raises(qkd.InputError, match="seed"):
        amplify.toeplitz(x, s[:10], 100)
    with pytest.raises(qkd.InputError, match="unknown Toeplitz method"):
        amplify.toeplitz(x, s, 10, method="nope")
    with pytest.raises(qkd.InputError, match="dtype"):
        amplify.toeplitz(x.astype(np.int16), s, 10)
    with pytest.raises(TypeError):
        amplify.toeplitz(x, None, 10)


def h(p):
    return 0.0 if p in (0.0, 1.0) else -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def test_secret_length_formula_by_hand():
    n, k, q, leak, t, L, es, ec = 1_000_000, 100_000, 0.02, 150_000, 50, 1, 1e-10, 1e-15
    r = amplify.secret_length(n, k, q, leak, t, L, eps_sec=es, eps_cor=ec)
    # eps = eps_sec / (4 L); confirmation charged once as max(t, log2(2/eps_cor)).
    mu = math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(4 * L / es))
    confirm = max(t, math.log2(2 / ec))
    secrecy = 2 * math.log2(L / es)
    raw = n * (1 - h(q + mu)) - leak - confirm - secrecy
    assert r["qber_deviation"] == pytest.approx(mu, rel=1e-12)
    assert r["confirm_cost_bits"] == pytest.approx(confirm, rel=1e-12)
    assert r["secrecy_cost_bits"] == pytest.approx(secrecy, rel=1e-12)
    assert r["raw_bits"] == pytest.approx(raw, rel=1e-9)
    assert r["bits"] == math.floor(r["raw_bits"]) == 624_408
    assert r["asymptotic_bits"] == pytest.approx(n * (1 - h(q)) - leak - t, rel=1e-12)
    assert r["model"] == "bb84-tlgr2012"


def test_secret_length_broadcasts_like_a_ufunc():
    n = np.array([10**5, 10**6, 10**7])
    r = amplify.secret_length(n[:, None], n[:, None] // 10, np.array([0.01, 0.02]), 0)
    assert r["bits"].shape == (3, 2) and r["raw_bits"].shape == (3, 2)
    for i in range(3):
        for j, q in enumerate([0.01, 0.02]):
            one = amplify.secret_length(int(n[i]), int(n[i]) // 10, q, 0)
            assert r["bits"][i, j] == one["bits"]
    # Longer blocks keep a larger fraction; more errors keep less.
    frac = r["bits"] / n[:, None]
    assert np.all(np.diff(frac, axis=0) > 0) and np.all(frac[:, 0] > frac[:, 1])
    assert r["model"] == "bb84-tlgr2012"
    # Integral floats (np.logspace) count as integers; other floats do not.
    assert amplify.secret_length(np.logspace(5, 7, 3), 10_000, 0.02, 0)["bits"].shape == (3,)
    with pytest.raises(qkd.InputError, match="not an integer"):
        amplify.secret_length(1e5 + 0.5, 10_000, 0.02, 0)
    with pytest.raises(qkd.InputError, match="broadcast"):
        amplify.secret_length(np.ones(3) * 1e5, np.ones(2) * 1e4, 0.02, 0)


def test_secret_length_zero_is_not_an_error():
    r = amplify.secret_length(1000, 100, 0.1, 900)
    assert r["bits"] == 0 and r["raw_bits"] < 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eps_sec=0.0), "eps_sec"),
        (dict(eps_cor=1.5), "eps_cor"),
        (dict(qber=0.7), "QBER"),
        (dict(sample_bits=0), "sample size"),
        (dict(key_bits=0), "key length"),
        (dict(key_bits=-5), "negative"),
        (dict(leak_ec_bits=-1), "negative"),
        (dict(length_choices=0), "length_choices"),
        (dict(preparation_quality=-1.0), "preparation quality"),
    ],
)
def test_secret_length_bad_input(kwargs, match):
    args = dict(key_bits=1000, sample_bits=100, qber=0.01, leak_ec_bits=10)
    args.update(kwargs)
    with pytest.raises(qkd.InputError, match=match):
        amplify.secret_length(**args)


def test_binary_entropy():
    assert amplify.binary_entropy(0.5) == 1.0
    assert amplify.binary_entropy(0.0) == 0.0
    assert amplify.binary_entropy(0.11) == pytest.approx(h(0.11), rel=1e-14)


HAND_COUNTS = {
    "intensities": [0.5, 0.2, 0.0002],
    "probabilities": [0.6, 0.2, 0.2],
    "x": {"detections": [19_000_000, 2_500_000, 4_000], "errors": [100_000, 13_000, 800]},
    "z": {"detections": [1_200_000, 160_000, 250], "errors": [6_000, 850, 50]},
}


def test_decoy_secret_length_matches_the_hand_worked_case():
    r = amplify.decoy_secret_length(HAND_COUNTS, 1_200_000)
    # tau_0 = 0.6 e^-0.5 + 0.2 e^-0.2 + 0.2 e^-0.0002 (core's test derives every bound).
    tau0 = 0.6 * math.exp(-0.5) + 0.2 * math.exp(-0.2) + 0.2 * math.exp(-0.0002)
    assert r["tau_0"] == pytest.approx(tau0, rel=1e-12)
    assert r["bits"] == 9_557_773 and r["model"] == "decoy-lim2014"
    assert r["pa_cost_bits"] == pytest.approx(6 * math.log2(21 / 1e-10), rel=1e-12)
    assert 0 < r["phi_x"] < 0.02 and r["s_x1"] > 1e7
    # numpy counts are accepted as well.
    np_counts = dict(HAND_COUNTS, x={k: np.array(v) for k, v in HAND_COUNTS["x"].items()})
    assert amplify.decoy_secret_length(np_counts, np.int64(1_200_000))["bits"] == r["bits"]


def test_decoy_key_rate_falls_with_channel_loss():
    rates = []
    for loss in [0, 10, 20, 60]:
        counts, leak = amplify.decoy_expected_counts(loss, 1e10)
        rates.append(amplify.decoy_secret_length(counts, leak)["bits"] / 1e10)
    assert rates[0] > rates[1] > rates[2] > 0 and rates[3] == 0
    assert amplify.decoy_typical_device()["p_dc"] == 6e-7
    counts, _ = amplify.decoy_expected_counts(10, 1e10, q_x=0.5)
    assert counts["x"]["detections"] == counts["z"]["detections"]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: c["x"].update(detections=[-1, 2, 3]), "counts"),
        (lambda c: c.update(extra=1), "unknown field"),
        (lambda c: c.pop("z"), "missing field"),
        (lambda c: c.update(intensities=[0.1, 0.5, 0.2]), "mu"),
        (lambda c: c["z"].update(errors=[2_000_000, 0, 0]), "exceed"),
    ],
)
def test_decoy_bad_counts_raise_input_error(change, match):
    counts = {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in HAND_COUNTS.items()}
    change(counts)
    with pytest.raises(qkd.InputError, match=match):
        amplify.decoy_secret_length(counts, 1000)


def test_decoy_other_bad_input():
    with pytest.raises(qkd.InputError, match="negative"):
        amplify.decoy_secret_length(HAND_COUNTS, -1)
    with pytest.raises(qkd.InputError, match="dict"):
        amplify.decoy_secret_length([1, 2, 3], 10)  # type: ignore[arg-type]
    with pytest.raises(qkd.InputError, match="unknown device fields"):
        amplify.decoy_expected_counts(10, 1e10, eta=0.5)
    with pytest.raises(qkd.InputError, match="loss_db"):
        amplify.decoy_expected_counts(-3, 1e10)


def test_qber_rung_is_the_engines_ladder():
    rung, rungs = amplify.qber_rung(0.02)
    assert rungs == 41 and rung == pytest.approx(0.0025 * 1.1**22, rel=1e-12)
    assert amplify.qber_rung(0.2) == (None, 41)
    assert amplify.qber_rung(0.001, max_qber=0.05)[0] == 0.0025
    with pytest.raises(qkd.InputError, match="ladder"):
        amplify.qber_rung(0.02, max_qber=0.7)
