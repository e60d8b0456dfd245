"""The durable key store: final key material in, single-use keys out, never a key twice.

::

    with Store("/var/lib/qkd/store") as s:
        s.append("KME_B", "block-0001", final_key, qber=0.02)
        keys = s.allocate("KME_B", "SAE_A", ["SAE_B"], count=2, size_bits=256)
        delivered = s.fetch([k["key_id"] for k in keys], "SAE_A")   # [(key_id, key), ...]

The peer KME's store reserves the same material with :meth:`Store.reserve_exact`. Every
failure is a :class:`qkd.errors.StoreError` (bad arguments: :class:`qkd.errors.InputError`).
"""

from ._qkd import Store

__all__ = ["Store"]
