#!/usr/bin/env python3
"""Belief-propagation threshold of an LDPC degree profile over a binary symmetric channel, by
sampled density evolution.

The density of the variable-to-check messages (log-likelihood ratios, all-zero codeword, which
loses nothing on a symmetric channel) is carried as a population of samples and pushed through
the check and variable updates of the sum-product decoder (population dynamics: Richardson and
Urbanke, "Modern Coding Theory", 2008, sections 4.5 and 4.9). The threshold is the largest
crossover probability at which the error probability of the messages falls below 1e-4, found by
bisection; the efficiency an infinitely long code of this profile reaches is then
f* = (1 - R) / h(p*).

Used to judge the degree profiles of the built-in codes (core/src/reconcile/ldpc/construct.rs).
Every block column of a `rows x 200` base matrix is one variable node type; checks get the
row degrees the placement gives (as equal as possible).

    python3 scripts/ldpc-threshold.py --check                       # (3,6): p* = 0.084
    python3 scripts/ldpc-threshold.py --rows 32 2:31,3:118,8:51     # the rate-0.84 mother code

Needs numpy (target/py-venv has it after scripts/test-python.sh). Sampling noise moves p* by
about 1 % of its value between seeds.
"""

import argparse
import math

import numpy as np

COLUMNS = 200


def edge_perspective(counts: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    degrees = np.array(sorted(counts))
    edges = degrees * np.array([counts[d] for d in degrees], dtype=float)
    return degrees, edges / edges.sum()


def converges(lam, rho, p: float, rng, population: int, iterations: int) -> bool:
    llr = math.log((1 - p) / p)

    def channel(k: int) -> np.ndarray:
        return np.where(rng.random(k) < p, -llr, llr)

    v2c = channel(population)
    for _ in range(iterations):
        t = np.tanh(np.clip(v2c, -40, 40) / 2)
        c2v = np.empty(population)
        degree = rng.choice(rho[0], size=population, p=rho[1])
        for d in rho[0]:
            at = np.nonzero(degree == d)[0]
            product = np.prod(t[rng.integers(0, population, (len(at), d - 1))], axis=1)
            c2v[at] = 2 * np.arctanh(np.clip(product, -1 + 1e-15, 1 - 1e-15))
        v2c = channel(population)
        degree = rng.choice(lam[0], size=population, p=lam[1])
        for d in lam[0]:
            at = np.nonzero(degree == d)[0]
            v2c[at] += c2v[rng.integers(0, population, (len(at), d - 1))].sum(axis=1)
        if np.mean(v2c < 0) + 0.5 * np.mean(v2c == 0) < 1e-4:
            return True
    return False


def threshold(variables, checks, lo, hi, steps, seed, population, iterations) -> float:
    rng = np.random.default_rng(seed)
    lam, rho = edge_perspective(variables), edge_perspective(checks)
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if converges(lam, rho, mid, rng, population, iterations) else (lo, mid)
    return lo


def balanced_checks(variables: dict[int, int], rows: int) -> dict[int, int]:
    edges = sum(d * c for d, c in variables.items())
    low, high_rows = divmod(edges, rows)
    return {low: rows - high_rows, **({low + 1: high_rows} if high_rows else {})}


def binary_entropy(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profile", nargs="?", help="degree:columns,... over the 200 block columns")
    ap.add_argument("--rows", type=int, help="block rows (1 - R = rows / 200)")
    ap.add_argument("--check", action="store_true", help="the regular (3,6) ensemble instead")
    ap.add_argument("--lo", type=float, default=0.005)
    ap.add_argument("--hi", type=float, default=0.15)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--population", type=int, default=30000)
    ap.add_argument("--iterations", type=int, default=250)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.check:
        variables, checks, gap = {3: 1}, {6: 1}, 0.5
    else:
        if not a.profile or not a.rows:
            ap.error("give --rows and a profile, or --check")
        variables = {int(d): int(c) for d, c in (x.split(":") for x in a.profile.split(","))}
        if sum(variables.values()) != COLUMNS:
            ap.error(f"the profile has {sum(variables.values())} columns; expected {COLUMNS}")
        checks, gap = balanced_checks(variables, a.rows), a.rows / COLUMNS
    p = threshold(variables, checks, a.lo, a.hi, a.steps, a.seed, a.population, a.iterations)
    print(f"variables {variables} checks {checks}: p* = {p:.4f}, f* = {gap / binary_entropy(p):.3f}")


if __name__ == "__main__":
    main()
