"""Inputs are checked the same way everywhere: negative integers, keys too short for a block,
unpacked bits passed as packed bytes, and which Cascade variant runs when none is named."""

import warnings

import numpy as np
import pytest

import qkd
from qkd import amplify, cascade, entropy, estimate, pipeline, session, store


@pytest.fixture(scope="module")
def pair():
    a, b, _ = qkd.simulate(1 << 16, 0.03, seed=3)
    return a, b


def negative_calls(a, b, tmp_path):
    """One call per integer parameter kind, each given -1; with the name the error must say."""
    st = store.Store(tmp_path / "s")
    st.append("L", "b", a)
    return [
        ("n", lambda: qkd.simulate(-1, 0.1)),
        ("seed", lambda: qkd.simulate(100, 0.1, seed=-1)),
        ("bits", lambda: qkd.pack_bits(a, bits=-1)),
        ("bits", lambda: qkd.unpack_bits(a, bits=-8)),
        ("k", lambda: estimate.qber_upper_bound(1000, -1, 0)),
        ("errors", lambda: estimate.qber_upper_bound(1000, 100, -1)),
        ("k", lambda: estimate.disclose_sample(a, -5)),
        ("m", lambda: amplify.toeplitz(a, a, -1)),
        ("seed_bits", lambda: amplify.toeplitz(a, a, 8, seed_bits=-1)),
        ("n", lambda: amplify.seed_bits_needed(-1, 10)),
        ("leak_ec_bits", lambda: amplify.secret_length(10000, 1000, 0.02, -1)),
        ("bits", lambda: entropy.assess(a, bits=-1)),
        ("bits", lambda: cascade.Alice(a, bits=-1)),
        ("bits", lambda: cascade.Bob(b, 0.03, bits=-1)),
        ("bits", lambda: cascade.reconcile(a, b, bits=-1)),
        ("block_bits", lambda: pipeline.process(a, b, block_bits=-1)),
        ("sample_bits", lambda: pipeline.process(a, b, block_bits=1 << 15, sample_bits=-1)),
        ("frame_bits", lambda: pipeline.process(a, b, block_bits=1 << 15, frame_bits=-1)),
        ("sample_bits", lambda: session.Link(b"k" * 64, sample_bits=-1)),
        ("leaked_bits", lambda: st.append("L", "c", a, leaked_bits=-1)),
        ("count", lambda: st.allocate("L", "M", [], -1)),
        ("size_bits", lambda: st.allocate("L", "M", [], 1, -256)),
        ("start", lambda: st.ledger(-1)),
        ("limit", lambda: st.ledger(0, -1)),
    ]


def test_negative_integers_are_input_errors_that_name_the_argument(pair, tmp_path):
    a, b = pair
    for name, call in negative_calls(a, b, tmp_path):
        with pytest.raises(qkd.InputError, match=f"^{name} = -\\d+ is negative"):
            call()


def test_keys_shorter_than_one_block_raise(pair):
    a, b = pair
    with pytest.raises(
        qkd.InputError, match=r"65536 bits, fewer than one block \(block_bits = 1048576\)"
    ):
        pipeline.process(a, b)
    # Exactly one block is fine.
    keys, reports, _ = pipeline.process(a, b, block_bits=len(a) * 8, sample_bits=1 << 12)
    assert len(keys) == len(reports) == 1


def test_a_uint8_array_of_bits_warns(pair):
    bits = np.unpackbits(pair[0][:64], bitorder="little")  # 512 uint8 values, each 0 or 1
    with pytest.warns(qkd.InputWarning, match="key: a uint8 array of only 0 and 1 values"):
        packed = qkd.pack_bits(bits)
    assert len(packed) == 512  # still taken as packed bytes, as documented
    with pytest.warns(qkd.InputWarning) as caught:
        estimate.estimate_qber(bits, bits, 64)
    assert [str(w.message).split(":")[0] for w in caught] == ["alice", "bob"]
    # The same bits as bool, packed keys, short arrays and all-zero keys are quiet.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(qkd.pack_bits(bits.astype(bool)), pair[0][:64])
        qkd.pack_bits(pair[0])
        qkd.pack_bits(bits[:15])
        qkd.pack_bits(np.zeros(64, np.uint8))


def test_one_default_cascade_variant_everywhere(pair):
    a, b = pair
    default = cascade.DEFAULT_ALGORITHM
    assert default == "yanetal" and default in cascade.variants()
    seed = bytes(range(32))
    runs = {
        name: cascade.reconcile(a, b, name, qber=0.03, seed=seed)[1]
        for name in (None, default, "option8")
    }
    assert runs[None]["algorithm"] == default
    # Same shuffles, same variant: the same questions; another variant asks others.
    assert runs[None]["disclosed_bits"] == runs[default]["disclosed_bits"]
    assert runs[None]["messages"] == runs[default]["messages"] != runs["option8"]["messages"]
    assert cascade.Bob(b, 0.03).stats["algorithm"] == default
    assert f'algorithm="{default}"' in repr(session.Link(b"k" * 64))
