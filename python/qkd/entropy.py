"""Entropy estimates and the health verdict on final keys and sample files.

:func:`assess` returns one verdict ("pass", "fail" or "insufficient_data") with every
statistic, threshold and outcome; its false-alarm probability on ideal data is at most
``false_alarm`` (default 2^-20).
"""

from ._qkd import DEFAULT_FALSE_ALARM, assess, min_entropy, shannon_entropy

__all__ = ["DEFAULT_FALSE_ALARM", "assess", "min_entropy", "shannon_entropy"]
