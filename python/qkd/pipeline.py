"""The whole post-processing pipeline: estimate -> Cascade -> confirm -> finite-key length ->
Toeplitz -> entropy check, block by block, in parallel.

:func:`process` returns the final keys, one flat report dict per block (``pandas.DataFrame``
takes the list as is) and a summary dict.
"""

from ._qkd import process

__all__ = ["process"]
