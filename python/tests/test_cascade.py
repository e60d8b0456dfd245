import numpy as np
import pytest

import qkd
from qkd import cascade
from qkd.amplify import binary_entropy

N = 1 << 15


@pytest.fixture(scope="module")
def pair():
    a, b, rep = qkd.simulate(N, 0.03, seed=5)
    return a, b, rep


def test_variants_listed():
    names = cascade.variants()
    assert "original" in names and "option8" in names and "biconf" in names


@pytest.mark.parametrize("algorithm", ["original", "biconf", "option8"])
def test_reconcile_corrects_and_counts(pair, algorithm):
    a, b, rep = pair
    corrected, st = cascade.reconcile(a, b, algorithm=algorithm, qber=0.03, seed=bytes(32))
    assert st["initial_errors"] == rep["errors"] == round(0.03 * N)
    assert st["residual_errors"] == 0
    np.testing.assert_array_equal(corrected, a)
    assert st["corrected"] >= st["initial_errors"]
    # Efficiency: disclosed / (n h(e/n)), recomputed here from the counts.
    f = st["disclosed_bits"] / (N * binary_entropy(st["initial_errors"] / N))
    assert st["efficiency"] == pytest.approx(f, rel=1e-12)
    assert 1.0 < f < 1.6
    assert st["round_trips"] >= 1 and st["algorithm"] == algorithm


def test_reconcile_default_qber_from_pair(pair):
    a, b, _ = pair
    corrected, st = cascade.reconcile(a, b)
    assert st["qber"] == pytest.approx(0.03, abs=1e-4)
    np.testing.assert_array_equal(corrected, a)


def test_two_party_objects_match_one_call(pair):
    a, b, _ = pair
    seed = bytes(range(32))
    bob = cascade.Bob(b, 0.03, "option8", seed)
    alice = cascade.Alice(a)
    assert len(bob) == len(alice) == N
    msg = bob.start()
    rounds = 0
    while (reply := alice.handle(msg)) is not None:
        msg = bob.handle(reply)
        rounds += 1
    assert alice.done and bob.done
    np.testing.assert_array_equal(bob.key(), a)
    _, st = cascade.reconcile(a, b, "option8", 0.03, seed)
    assert alice.disclosed_bits == bob.stats["disclosed_bits"] == st["disclosed_bits"]
    assert bob.stats["round_trips"] == st["round_trips"]
    assert "Bob(bits=32768" in repr(bob)


def test_reconcile_bad_input(pair):
    a, b, _ = pair
    with pytest.raises(qkd.InputError, match="unknown Cascade algorithm 'turbo'"):
        cascade.reconcile(a, b, algorithm="turbo")
    with pytest.raises(qkd.InputError, match="QBER estimate 0.6"):
        cascade.reconcile(a, b, qber=0.6)
    with pytest.raises(qkd.InputError, match="expected equal lengths"):
        cascade.reconcile(a, b[:-1])
    with pytest.raises(qkd.InputError, match="dtype"):
        cascade.reconcile(a.astype(np.float32), b)
    with pytest.raises(TypeError):
        cascade.reconcile(a, None)
    with pytest.raises(qkd.InputError, match="32 bytes"):
        cascade.Bob(b, 0.03, seed=b"x")


def test_protocol_errors(pair):
    a, b, _ = pair
    alice = cascade.Alice(a)
    with pytest.raises(qkd.ProtocolError):
        alice.handle(b"\xff\x00garbage")
    with pytest.raises(qkd.ProtocolError):
        alice.handle(b"")  # poisoned after the first failure
    bob = cascade.Bob(b, 0.03)
    with pytest.raises(qkd.ProtocolError):
        bob.handle(b"\x01")
    # A hello for a key of another length is refused by an Alice with a shorter key.
    bob2 = cascade.Bob(b, 0.03)
    with pytest.raises(qkd.QkdError):
        cascade.Alice(a[:-1]).handle(bob2.start())
