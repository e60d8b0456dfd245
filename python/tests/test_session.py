import numpy as np
import pytest

import qkd
from qkd import pipeline, session
from qkd.errors import AuthenticationError, InputError, ProtocolError, QkdError

BITS = 1 << 16
SETTINGS = dict(sample_bits=1 << 11, frame_bits=1 << 13)
PSK = bytes((7 * i + 3) % 256 for i in range(512))


def links(psk_alice=PSK, psk_bob=PSK, **settings):
    kw = {**SETTINGS, **settings}
    return session.Link(psk_alice, **kw), session.Link(psk_bob, **kw)


def pair(la, lb, block_id="blk-1", qber=0.02, seed=5, bob_id=None):
    a, b, _ = qkd.simulate(BITS, qber, seed=seed)
    return (
        session.AliceSession(la, block_id, a),
        session.BobSession(lb, bob_id or block_id, b),
    )


def test_both_sides_end_with_the_same_key_and_the_pipeline_report():
    la, lb = links()
    assert la.auth_available_bits == lb.auth_available_bits == 8 * len(PSK)
    alice, bob = pair(la, lb)
    assert isinstance(alice, session.Session) and alice.side == "alice" and bob.side == "bob"
    assert alice.block_id == bob.block_id == "blk-1"
    assert not alice.finished and not bob.finished
    with pytest.raises(QkdError, match="has not ended yet"):
        alice.outcome()
    assert bob.poll_transmit() is None  # Bob waits for the hello
    (ra, ka), (rb, kb) = session.run_pair(alice, bob)
    assert alice.finished and bob.finished
    assert ka is not None and ka.dtype == np.uint8 and np.array_equal(ka, kb)
    assert ra["outcome"] == "key" and ra["block_id"] == "blk-1" and ra["confirmed"]
    assert ra["final_bits"] > 0 and len(ka) == (ra["final_bits"] + 7) // 8
    # The first block draws the hash key (128 bits) besides its two pads.
    assert ra["auth_bits"] == rb["auth_bits"] == 384
    assert la.auth_available_bits == lb.auth_available_bits == 8 * len(PSK) - 384
    # The same report on both sides, stage times apart.
    same = {k: v for k, v in ra.items() if not k.startswith("seconds_")}
    assert same == {k: v for k, v in rb.items() if not k.startswith("seconds_")}
    # The columns the pipeline's reports have, flat.
    a, b, _ = qkd.simulate(BITS, 0.02, seed=1)
    _, reports, _ = pipeline.process(a, b, block_bits=BITS, **SETTINGS)
    assert set(reports[0]) <= set(ra)
    assert all(np.isscalar(v) or v is None for v in ra.values())
    # The outcome can be read again, and as bools.
    again, bools = alice.outcome(packed=False)
    assert again == ra and bools.dtype == np.bool_ and len(bools) == ra["final_bits"]
    assert np.array_equal(qkd.pack_bits(bools), ka)
    # A second block spends its two pads only.
    alice, bob = pair(la, lb, "blk-2", seed=6)
    (ra, ka), (rb, kb) = session.run_pair(alice, bob)
    assert np.array_equal(ka, kb) and ra["auth_bits"] == 256
    assert la.auth_spent_bits == 640


def test_the_methods_drive_a_block_by_hand():
    la, lb = links()
    alice, bob = pair(la, lb, "by-hand")
    to_bob, to_alice = [], []
    while True:
        while (m := alice.poll_transmit()) is not None:
            to_bob.append(m)
        while (m := bob.poll_transmit()) is not None:
            to_alice.append(m)
        if not to_bob and not to_alice:
            break
        for m in to_bob:
            assert session.block_id_of(m) == "by-hand"
            bob.handle(m)
        for m in to_alice:
            alice.handle(m)
        to_bob, to_alice = [], []
    (_, ka), (_, kb) = alice.outcome(), bob.outcome()
    assert ka is not None and np.array_equal(ka, kb)


@pytest.mark.parametrize(
    "direction, index", [("to_bob", 0), ("to_bob", 1), ("to_bob", 2), ("to_alice", 0), ("to_alice", 1)]
)
def test_a_flipped_bit_leaves_no_key_on_either_side(direction, index):
    la, lb = links()
    alice, bob = pair(la, lb, "flip")
    seen = {"to_bob": 0, "to_alice": 0}

    def tap(d, m):
        if d == direction and seen[d] == index:
            m = bytearray(m)
            m[len(m) // 2] ^= 0x04
            m = bytes(m)
        seen[d] += 1
        return [m]

    results = session.run_pair(alice, bob, tap=tap)
    assert seen[direction] > index
    for r in results:
        if isinstance(r, QkdError):
            assert isinstance(r, ProtocolError) or "stage" in str(r), r
        else:
            report, key = r
            assert key is None and report["outcome"] != "key"
    # At least the side that received the altered message ended in an error.
    receiver = results[1] if direction == "to_bob" else results[0]
    assert isinstance(receiver, QkdError) or receiver[1] is None


def test_handle_raises_the_session_error_which_is_also_the_outcome():
    la, lb = links()
    alice, bob = pair(la, lb, "garbage")
    with pytest.raises(ProtocolError, match="^malformed message"):
        bob.handle(b"\x01\x02\x03")
    assert bob.finished
    hello = alice.poll_transmit()
    with pytest.raises(ProtocolError, match="the session of this block has ended"):
        bob.handle(hello)
    with pytest.raises(ProtocolError, match="^malformed message"):
        bob.outcome()
    # Bob queued an abort: Alice ends too.
    abort = bob.poll_transmit()
    assert abort is not None and bob.poll_transmit() is None
    with pytest.raises(ProtocolError, match="the peer aborted the block: malformed message"):
        alice.handle(abort)
    with pytest.raises(ProtocolError, match="the peer aborted the block"):
        alice.outcome()


def test_a_message_for_another_block_is_refused():
    la, lb = links()
    alice, bob = pair(la, lb, "b-1", bob_id="b-2")
    hello = alice.poll_transmit()
    assert session.block_id_of(hello) == "b-1"
    with pytest.raises(
        ProtocolError, match='message for block "b-1" reached the session of block "b-2"'
    ):
        bob.handle(hello)
    ra, rb = session.run_pair(alice, bob)
    assert isinstance(rb, ProtocolError) and "b-2" in str(rb)
    assert isinstance(ra, QkdError)  # no key either way
    with pytest.raises(ProtocolError, match="undecodable|wire version"):
        session.block_id_of(b"\x09garbage")


def test_different_secrets_fail_authentication():
    la, lb = links(psk_bob=bytes(len(PSK)))
    alice, bob = pair(la, lb, "auth")
    ra, rb = session.run_pair(alice, bob)
    assert isinstance(rb, AuthenticationError) and "tag mismatch" in str(rb)
    assert isinstance(ra, ProtocolError) and "the peer aborted the block" in str(ra)


def test_bad_arguments():
    la, _ = links()
    a, _, _ = qkd.simulate(BITS, 0.02, seed=1)
    with pytest.raises(InputError, match="sample bits must be positive"):
        session.Link(PSK, sample_bits=0)
    with pytest.raises(InputError, match="unknown algorithm"):
        session.Link(PSK, algorithm="nope")
    with pytest.raises(InputError, match="frame bits"):
        session.Link(PSK, frame_bits=10)
    with pytest.raises(InputError, match="unknown Toeplitz method"):
        session.Link(PSK, toeplitz="nope")
    with pytest.raises(TypeError):
        session.Link(None)
    with pytest.raises(InputError, match="block ID"):
        session.AliceSession(la, "", a)
    with pytest.raises(InputError, match="expected more than twice"):
        session.BobSession(la, "short", a[: 512 // 8])
    with pytest.raises(TypeError):
        session.AliceSession(la, "x", None)
    # A pool of 48 bytes serves one block (384 bits), not two.
    small = session.Link(PSK[:48], **SETTINGS)
    first = session.AliceSession(small, "p-1", a)
    assert small.auth_available_bits == 0
    with pytest.raises(AuthenticationError, match="pool exhausted"):
        session.AliceSession(small, "p-2", a)
    small.auth_refill(PSK[48:80])
    assert small.auth_available_bits == 256
    session.AliceSession(small, "p-2", a)
    assert first.block_id == "p-1" and "p-1" in repr(first)
