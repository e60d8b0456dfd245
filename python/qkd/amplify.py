"""Privacy amplification: the finite-key secret length and the Toeplitz hash.

:func:`secret_length` (ideal-qubit BB84, Tomamichel et al. 2012) takes scalars or numpy arrays,
broadcast against each other like a numpy ufunc: with arrays, every value of the result dict is
an array of the broadcast shape. :func:`decoy_secret_length` (decoy-state BB84, Lim et al. 2014)
takes per-intensity counts, as :func:`decoy_expected_counts` simulates them for a device. The
formulas and their assumptions are in docs/security.md.

Toeplitz convention (DESIGN §4): for input x of n bits and output of m bits the seed s has
n + m - 1 bits, T[i][j] = s[i - j + n - 1], and y = T x over GF(2).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _qkd
from ._qkd import (
    MAX_TOEPLITZ_INPUT_BITS,
    binary_entropy,
    qber_rung,
    seed_bits_needed,
    toeplitz,
)
from .errors import InputError

__all__ = [
    "MAX_TOEPLITZ_INPUT_BITS",
    "binary_entropy",
    "decoy_expected_counts",
    "decoy_secret_length",
    "decoy_typical_device",
    "qber_rung",
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


def _to_json(value: Any) -> str:
    """JSON text of a mapping that may hold numpy scalars and arrays."""

    def plain(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        raise InputError(f"{type(o).__name__} is not a number or a list of numbers")

    return json.dumps(value, default=plain)


def decoy_secret_length(
    counts: Mapping[str, Any],
    leak_ec_bits: int,
    eps_sec: float = 1e-10,
    eps_cor: float = 1e-15,
) -> dict[str, Any]:
    """Finite-key secret length of decoy-state BB84 (Lim, Curty, Walenta, Xu, Zbinden,
    PRA 89, 022307 (2014)) with every intermediate bound::

        l = s_X0 + s_X1 - s_X1 h(phi_X) - lambda_EC - 6 log2(21/eps_sec) - log2(2/eps_cor)

    Args:
        counts: ``{"intensities": [mu1, mu2, mu3], "probabilities": [p1, p2, p3],
            "x": {"detections": [3 counts], "errors": [3 counts]}, "z": {...}}``, lists in the
            order of the intensities (``mu1 > mu2 + mu3``, ``mu2 > mu3 >= 0``); X is the key
            basis. The same shape as ``qkd keyrate --model lim2014 --counts FILE.json``.
        leak_ec_bits: lambda_EC, bits disclosed by error correction (both sides).
        eps_sec, eps_cor: secrecy and correctness parameters in (0, 1).

    Returns:
        dict: ``bits`` (0 when no key), ``raw_bits`` and every bound (``tau_0``, ``tau_1``,
        ``s_x0``, ``s_x1``, ``s_z0``, ``s_z1``, ``v_z1``, ``gamma``, ``phi_x``, the per-basis
        Hoeffding terms under ``x`` and ``z``, ``pa_cost_bits``, ``cor_cost_bits``,
        ``asymptotic_bits``, ``model``).

    Raises:
        InputError: malformed counts (unknown or missing fields, negative counts, errors above
            detections), intensities out of order, parameters out of range.
    """
    if not isinstance(counts, Mapping):
        raise InputError(f"counts is a {type(counts).__name__}; expected a dict")
    result: dict[str, Any] = _qkd.decoy_secret_length_json(
        _to_json(dict(counts)), _count("leak_ec_bits", leak_ec_bits), eps_sec, eps_cor
    )
    return result


def decoy_typical_device() -> dict[str, Any]:
    """The typical device of Lim et al.'s numerical section: detector efficiency (with Bob's
    losses) ``eta_bob = 0.1``, dark counts ``p_dc = 6e-7``, misalignment ``e_mis = 5e-3``,
    ``f_ec = 1.16``, and fixed (not optimised) intensities, probabilities and ``q_x``."""
    device: dict[str, Any] = json.loads(_qkd.decoy_typical_device_json())
    return device


def decoy_expected_counts(
    loss_db: float, pulses: float, **device: Any
) -> tuple[dict[str, Any], int]:
    """Expected counts of ``pulses`` pulses sent over a channel of ``loss_db`` dB (fibre at
    0.2 dB/km: ``loss_db = 0.2 * km``), for the typical device (:func:`decoy_typical_device`)
    with any of its fields overridden by keyword (``intensities``, ``probabilities``, ``q_x``,
    ``eta_bob``, ``p_dc``, ``e_mis``, ``f_ec``).

    Returns:
        (counts, leak_ec_bits): counts for :func:`decoy_secret_length`, and the error-correction
        leakage ``f_ec * n_X * h(E_X)`` it implies.
    """
    full = decoy_typical_device()
    unknown = set(device) - set(full)
    if unknown:
        raise InputError(f"unknown device fields {sorted(unknown)}; expected some of {sorted(full)}")
    full.update(device)
    counts_json, leak = _qkd.decoy_expected_counts_json(_to_json(full), loss_db, pulses)
    counts: dict[str, Any] = json.loads(counts_json)
    return counts, int(leak)
