import numpy as np
import pytest

import qkd
from qkd import amplify, pipeline

BLOCK = 1 << 16
SAMPLE = 1 << 12


@pytest.fixture(scope="module")
def run():
    a, b, _ = qkd.simulate(4 * BLOCK + 100, 0.02, seed=9)
    return pipeline.process(a, b, block_bits=BLOCK, sample_bits=SAMPLE, bits=None)


def test_process_keys_and_reports(run):
    keys, reports, summary = run
    assert len(keys) == len(reports) == 4 == summary["blocks"]
    for i, (k, r) in enumerate(zip(keys, reports)):
        assert r["index"] == i and r["raw_bits"] == BLOCK and r["sample_bits"] == SAMPLE
        assert r["outcome"] == "key" and r["residual_errors"] == 0 and r["confirmed"]
        assert k.dtype == np.uint8 and len(k) == (r["final_bits"] + 7) // 8
        # The finite-key length is the formula on the report's own numbers.
        # Sized for its rung of the default ladder (41 rungs up to 11 %), with both sides'
        # Cascade leakage and the tag charged once.
        assert r["qber_tolerated"] >= r["qber"] and r["leak_bob_bits"] >= r["leak_alice_bits"]
        sl = amplify.secret_length(
            r["reconciled_bits"],
            r["sample_bits"],
            r["qber_tolerated"],
            r["leak_alice_bits"] + r["leak_bob_bits"],
            r["confirm_tag_bits"],
            41,
        )
        assert r["final_bits"] == sl["bits"] == r["secret_bits"]
        assert all(np.isscalar(v) or v is None for v in r.values())
    assert summary["final_bits"] == sum(r["final_bits"] for r in reports)
    assert 0 < summary["secret_fraction"] < 1


@pytest.mark.parametrize("algorithm", ["ldpc-blind", "ldpc-oneway:1.8"])
def test_process_reconciles_with_ldpc(algorithm):
    a, b, _ = qkd.simulate(2 * BLOCK, 0.02, seed=5)
    keys, reports, _ = pipeline.process(
        a, b, block_bits=BLOCK, sample_bits=SAMPLE, algorithm=algorithm, frame_bits=11520
    )
    for k, r in zip(keys, reports):
        assert r["outcome"] == "key" and r["residual_errors"] == 0 and k is not None
        # 61440 bits after the sample hold 5 frames of 11520; the 3840-bit tail is charged,
        # and so is every frame dropped (the sample positions come from the OS CSPRNG, so a
        # sample that reads the QBER low can plan a frame above its code's threshold).
        assert r["dropped_frames"] < 5
        assert r["dropped_frame_bits"] == 3840 + 11520 * r["dropped_frames"]
        leak = r["leak_alice_bits"] + r["leak_bob_bits"] + r["dropped_frame_bits"]
        sl = amplify.secret_length(
            r["reconciled_bits"],
            r["sample_bits"],
            r["qber_tolerated"],
            leak,
            r["confirm_tag_bits"],
            41,
        )
        assert r["final_bits"] == sl["bits"] > 0


def test_process_discards_high_qber():
    a, b, _ = qkd.simulate(BLOCK, 0.2, seed=1)
    keys, reports, summary = pipeline.process(a, b, block_bits=BLOCK, sample_bits=SAMPLE)
    assert keys == [None]
    assert reports[0]["outcome"] == "discarded" and reports[0]["final_bits"] == 0
    assert summary["blocks_discarded"] == 1


def test_process_bad_input():
    a, b, _ = qkd.simulate(BLOCK, 0.02, seed=1)
    with pytest.raises(qkd.InputError, match="sample bits"):
        pipeline.process(a, b, block_bits=BLOCK, sample_bits=BLOCK)
    with pytest.raises(qkd.InputError, match="unknown algorithm"):
        pipeline.process(a, b, block_bits=BLOCK, sample_bits=SAMPLE, algorithm="nope")
    with pytest.raises(qkd.InputError, match="Alice's input has"):
        pipeline.process(a, b[:-1], block_bits=BLOCK, sample_bits=SAMPLE)
    with pytest.raises(qkd.InputError, match="block_bits = 0"):
        pipeline.process(a, b, block_bits=0)
    with pytest.raises(qkd.InputError, match="eps_sec"):
        pipeline.process(a, b, block_bits=BLOCK, sample_bits=SAMPLE, eps_sec=2.0)
    with pytest.raises(TypeError):
        pipeline.process(None, b)
