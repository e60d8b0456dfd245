"""QBER estimation from a disclosed random sample, with a confidence bound.

Alice discloses her bits at ``k`` positions chosen by a 32-byte public seed
(:func:`disclose_sample`); Bob compares them with his (:func:`compare_sample`) and gets the
observed QBER and an upper bound on the error rate of the remaining bits that holds except with
probability ``eps``. Both drop the sample. :func:`estimate_qber` does both sides in one call.
"""

from ._qkd import (
    compare_sample,
    disclose_sample,
    estimate_qber,
    qber_upper_bound,
    sample_positions,
)

__all__ = [
    "compare_sample",
    "disclose_sample",
    "estimate_qber",
    "qber_upper_bound",
    "sample_positions",
]
