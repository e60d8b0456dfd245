"""Python side of the call-overhead measurement (see benches/overhead.rs): the same cases
through `import qkd`, median and minimum of QKD_OVERHEAD_REPS runs (default 15).

    python python/benches/overhead.py
"""

import json
import os
import statistics
import time

import numpy as np

import qkd


def run(name, reps, f):
    f()  # warm-up
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    t.sort()
    print(json.dumps({"side": "python", "case": name, "median_s": round(t[reps // 2], 6),
                      "min_s": round(t[0], 6), "reps": reps}))


def random_packed(seed, bits):
    # Not the bytes of random_block() in overhead.rs: the timing depends only on the sizes.
    return np.random.default_rng(seed).integers(0, 256, (bits + 7) // 8, dtype=np.uint8)


def main():
    reps = int(os.environ.get("QKD_OVERHEAD_REPS", "15"))
    n = 1_000_000
    a, b, _ = qkd.simulate(n, 0.03, seed=1)

    def reconcile():
        key, st = qkd.cascade.reconcile(a, b, "option8", qber=0.03, seed=bytes(32))
        assert st["residual_errors"] == 0

    run("reconcile_option8_1e6_q3", reps, reconcile)

    # The binding layer alone: a 10^6-bit key into a BitBlock and back out (what every call
    # adds per key argument and result), with no core work in between.
    run("binding_roundtrip_1e6", 200, lambda: qkd.pack_bits(a))

    m = n // 2
    x = random_packed(2, n)
    s = random_packed(3, n + m - 1)
    run("toeplitz_1e6_to_5e5", reps, lambda: qkd.amplify.toeplitz(x, s, m))

    bits = 1 << 20
    A, B, _ = qkd.simulate(bits, 0.03, seed=4)

    def pipeline():
        keys, reports, summary = qkd.pipeline.process(A, B, block_bits=bits, sample_bits=1 << 14)
        assert summary["blocks_with_key"] == 1

    run("pipeline_2e20_q3", reps, pipeline)


if __name__ == "__main__":
    main()
