import math

import numpy as np
import pytest

import qkd
from qkd import estimate


def serfling_by_hand(n, k, x, eps):
    nr = n - k
    d = math.sqrt((nr + k) * (k + 1) * math.log(1 / eps) / (2 * nr * k * k))
    return min(x / k + d, 1.0)


def test_qber_upper_bound_serfling_formula():
    got = estimate.qber_upper_bound(10_000, 1_000, 30, eps=1e-6, bound="serfling")
    assert got == pytest.approx(serfling_by_hand(10_000, 1_000, 30, 1e-6), rel=1e-12)


def test_hypergeometric_is_tighter_and_above_observed():
    h = estimate.qber_upper_bound(10_000, 1_000, 30, eps=1e-6)
    s = estimate.qber_upper_bound(10_000, 1_000, 30, eps=1e-6, bound="serfling")
    assert 0.03 < h < s


def test_sample_positions():
    seed = bytes(range(32))
    p = estimate.sample_positions(1000, 100, seed)
    assert p.dtype == np.int64 and len(p) == 100
    assert np.all(np.diff(p) > 0) and p[0] >= 0 and p[-1] < 1000
    np.testing.assert_array_equal(p, estimate.sample_positions(1000, 100, seed))
    with pytest.raises(qkd.InputError, match="expected exactly 32 bytes"):
        estimate.sample_positions(1000, 100, b"short")


def test_two_party_estimation_counts_sample_errors_exactly():
    a, b, _ = qkd.simulate(20_000, 0.05, seed=11, packed=False)
    seed = bytes(32)
    msg, a_rest = estimate.disclose_sample(a, 2_000, seed)
    assert isinstance(msg, bytes)
    est, b_rest = estimate.compare_sample(b, msg, eps=1e-6)
    pos = estimate.sample_positions(20_000, 2_000, seed)
    assert est["errors"] == int((a[pos] != b[pos]).sum())
    assert est["observed_qber"] == est["errors"] / 2_000
    keep = np.ones(20_000, dtype=bool)
    keep[pos] = False
    np.testing.assert_array_equal(qkd.unpack_bits(a_rest, bits=18_000), a[keep])
    np.testing.assert_array_equal(qkd.unpack_bits(b_rest, bits=18_000), b[keep])


def test_estimate_qber_one_call():
    a, b, _ = qkd.simulate(50_000, 0.02, seed=2)
    est, ar, br = estimate.estimate_qber(a, b, 5_000, seed=bytes(32), packed=False)
    assert est["k"] == 5_000 and est["remaining_bits"] == 45_000
    assert len(ar) == len(br) == 45_000
    total = int((ar != br).sum()) + est["errors"]
    assert total == 1_000


def test_estimate_bad_input():
    a, b, _ = qkd.simulate(1_000, 0.02, seed=2)
    with pytest.raises(qkd.InputError, match="leaves no key"):
        estimate.estimate_qber(a, b, 1_000)
    with pytest.raises(qkd.InputError, match="expected equal lengths"):
        estimate.estimate_qber(a, b[:-1], 10)
    with pytest.raises(qkd.InputError, match="eps"):
        estimate.estimate_qber(a, b, 10, eps=0.0)
    with pytest.raises(qkd.InputError, match="unknown bound"):
        estimate.qber_upper_bound(100, 10, 1, bound="chernoff")
    with pytest.raises(qkd.InputError, match="errors in a sample"):
        estimate.qber_upper_bound(100, 10, 11)
    with pytest.raises(TypeError):
        estimate.disclose_sample(None, 10)


def test_compare_sample_protocol_errors():
    a, b, _ = qkd.simulate(1_000, 0.02, seed=2)
    msg, _ = estimate.disclose_sample(a, 100)
    with pytest.raises(qkd.ProtocolError, match="does not decode"):
        estimate.compare_sample(b, b"\x01")
    with pytest.raises(qkd.ProtocolError, match="key has 992 bits"):
        estimate.compare_sample(b[:-1], msg)
