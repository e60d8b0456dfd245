import numpy as np
import pytest

import qkd
from qkd import entropy


def test_assess_random_passes(rng):
    data = rng.integers(0, 256, 1 << 16, dtype=np.uint8)
    r = entropy.assess(data)
    assert r["verdict"] == "pass" and r["passed"] is True
    assert r["n_bytes"] == 1 << 16
    assert r["false_alarm"] == entropy.DEFAULT_FALSE_ALARM == 2.0**-20
    for check in ["shannon", "min_entropy", "monobit", "runs", "repetition_count", "adaptive_proportion"]:
        assert r[check]["passed"] is True


def test_assess_constant_fails_and_small_is_insufficient():
    r = entropy.assess(bytes(4096))
    assert r["verdict"] == "fail" and not r["passed"] and r["reasons"]
    assert entropy.assess(b"\x5a" * 63)["verdict"] == "insufficient_data"


def test_assess_bool_input_is_packed(rng):
    bits = rng.integers(0, 2, 8 * 4096).astype(bool)
    a = entropy.assess(bits)
    b = entropy.assess(qkd.pack_bits(bits))
    assert a == b


def test_shannon_and_min_entropy_by_hand():
    assert entropy.shannon_entropy(bytes(range(256))) == pytest.approx(8.0, abs=1e-12)
    assert entropy.shannon_entropy(bytes(100)) == 0.0
    assert entropy.shannon_entropy(b"\x00\x01" * 50) == pytest.approx(1.0, abs=1e-12)
    m = entropy.min_entropy(b"\x00\x01\x02\x03" * 64)
    assert m["samples"] == 256 and m["max_count"] == 64 and m["p_max_hat"] == 0.25


def test_entropy_bad_input():
    with pytest.raises(qkd.InputError, match="false-alarm probability"):
        entropy.assess(bytes(100), false_alarm=1.5)
    with pytest.raises(qkd.InputError, match="dtype"):
        entropy.shannon_entropy(np.zeros(10, dtype=np.float32))
    with pytest.raises(TypeError):
        entropy.min_entropy(None)
