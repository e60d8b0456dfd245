"""Privacy amplification: the finite-key secret length and the Toeplitz hash.

:func:`secret_length` (ideal-qubit BB84, Tomamichel et al. 2012) takes scalars or numpy arrays,
broadcast against each other like a numpy ufunc: with arrays, every value of the result dict is
an array of the broadcast shape. The formulas and their assumptions are in docs/security.md.

Toeplitz convention (DESIGN §4): for input x of n bits and output of m bits the seed s has
n + m - 1 bits, T[i][j] = s[i - j + n - 1], and y = T x over GF(2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _qkd
from ._qkd import (
    MAX_TOEPLITZ_INPUT_BITS,
    binary_entropy,
    seed_bits_needed,
    toeplitz,
)
from .errors import InputError

__all__ = [
    "MAX_TOEPLITZ_INPUT_BITS",
    "binary_entropy",
    "secret_length",
    "seed_bits_needed",
    "toeplitz",
]

_COUNTS = ("key_bits", "sample_bits", "leak_ec_bits", "confirm_tag_bits", "length_choices")


def _count(name: str, value: Any) -> Any:
    """An integer count from a Python or numpy number (integral floats accepted)."""
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():
            raise InputError(f"{name} = {value} is not an integer")
        return int(value)
    return value


def _broadcast(fn: Any, names: tuple[str, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    """Calls ``fn`` once per element of the broadcast arguments; a dict of arrays (or of
    scalars when every argument is a scalar)."""

    def call(args: tuple[Any, ...]) -> dict[str, Any]:
        fixed = tuple(_count(n, a) if n in _COUNTS else a for n, a in zip(names, args))
        result: dict[str, Any] = fn(*fixed)
        return result

    if all(np.ndim(v) == 0 for v in values):
        return call(tuple(v.item() if isinstance(v, np.generic) else v for v in values))
    try:
        arrays = np.broadcast_arrays(*(np.asarray(v) for v in values))
    except ValueError as e:
        raise InputError(f"arguments do not broadcast together: {e}") from None
    shape = arrays[0].shape
    rows = [call(tuple(a[i].item() for a in arrays)) for i in np.ndindex(shape)]
    if not rows:
        raise InputError("empty arrays: nothing to compute")
    out: dict[str, Any] = {}
    for key, first in rows[0].items():
        if isinstance(first, str):
            out[key] = first
        else:
            out[key] = np.array([r[key] for r in rows]).reshape(shape)
    return out


def secret_length(
    key_bits: Any,
    sample_bits: Any,
    qber: Any,
    leak_ec_bits: Any,
    confirm_tag_bits: Any = 0,
    length_choices: Any = 1,
    eps_sec: Any = 1e-10,
    eps_cor: Any = 1e-15,
    preparation_quality: Any = 1.0,
) -> dict[str, Any]:
    """Finite-key secret length of ideal-qubit BB84 (Tomamichel, Lim, Gisin, Renner 2012)::

        l = n (q - h(Q_tol + mu)) - leak_EC - max(t, log2(2/eps_cor)) - 2 log2(L/eps_sec)
        mu = sqrt((n + k)/(n k) (k + 1)/k ln(4 L / eps_sec))

    Args:
        key_bits: n, key bits after the sample was removed.
        sample_bits: k, bits disclosed to estimate the QBER.
        qber: Q_tol, the tolerated QBER fixed before the sample was seen, in [0, 0.5].
        leak_ec_bits: bits disclosed by reconciliation on both sides (no confirmation tag).
        confirm_tag_bits: t, the confirmation tag length.
        length_choices: L, the number of QBER-ladder rungs the length is chosen from.
        eps_sec, eps_cor: secrecy and correctness parameters in (0, 1).
        preparation_quality: q (1 for ideal BB84).

    Every argument may be a numpy array; they broadcast like a ufunc's.

    Returns:
        dict: ``bits`` (0 when no key) and every term (``raw_bits``, ``asymptotic_bits``,
        ``eps_smooth``, ``qber_deviation``, ``phase_error_bound``, ``entropy_bits``,
        ``leak_ec_bits``, ``confirm_cost_bits``, ``secrecy_cost_bits``, ``model``), arrays of
        the broadcast shape when any argument is an array.

    Raises:
        InputError: a parameter out of range, a negative or non-integral count.
    """
    names = (
        "key_bits",
        "sample_bits",
        "qber",
        "leak_ec_bits",
        "confirm_tag_bits",
        "length_choices",
        "eps_sec",
        "eps_cor",
        "preparation_quality",
    )
    values = (
        key_bits,
        sample_bits,
        qber,
        leak_ec_bits,
        confirm_tag_bits,
        length_choices,
        eps_sec,
        eps_cor,
        preparation_quality,
    )
    return _broadcast(_qkd.secret_length, names, values)
