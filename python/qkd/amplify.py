"""Privacy amplification: the finite-key secret length and the Toeplitz hash.

Toeplitz convention (DESIGN §4): for input x of n bits and output of m bits the seed s has
n + m - 1 bits, T[i][j] = s[i - j + n - 1], and y = T x over GF(2).
"""

from ._qkd import (
    MAX_TOEPLITZ_INPUT_BITS,
    binary_entropy,
    secret_length,
    seed_bits_needed,
    toeplitz,
)

__all__ = [
    "MAX_TOEPLITZ_INPUT_BITS",
    "binary_entropy",
    "secret_length",
    "seed_bits_needed",
    "toeplitz",
]
