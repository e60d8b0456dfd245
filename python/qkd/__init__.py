"""qkd: QKD post-processing from Python.

Raw sifted keys go in as numpy arrays, final keys come out. Submodules:

- :func:`qkd.simulate`: simulated raw key pairs (i.i.d., Bernoulli or burst errors).
- :mod:`qkd.estimate`: QBER from a disclosed random sample, with a confidence bound.
- :mod:`qkd.cascade`: Cascade reconciliation (one call, or the Alice/Bob parties).
- :mod:`qkd.amplify`: finite-key secret length and Toeplitz hashing.
- :mod:`qkd.pipeline`: the whole pipeline over many blocks, with a report per block.
- :mod:`qkd.session`: one block between two sites as a sans-IO session per side (Alice's and
  Bob's), authenticated, over any transport you drive.
- :mod:`qkd.entropy`: entropy estimates and the health verdict on final keys.
- :mod:`qkd.store`: the durable key store (append, allocate, reserve, fetch, ledger).
- :mod:`qkd.etsi`: ETSI GS QKD 014 client (mutual TLS).
- :mod:`qkd.errors`: the exception hierarchy (:class:`QkdError` and subclasses).
- :mod:`qkd.results`: the keys and value types of the dicts returned (``TypedDict``\ s);
  reports stay plain dicts, so ``pandas.DataFrame(reports)`` takes them.

Keys: a 1-D numpy ``uint8`` array holds a packed key, bit ``i`` in bit ``i % 8`` of byte
``i // 8`` (least significant first; unlike ``numpy.packbits``' default order), bits past the
length zero; pass ``bits=`` when the length is not a multiple of 8. A 1-D ``bool`` array holds
one bit per element. Functions accept both (and ``bytes``) and return packed ``uint8`` unless
``packed=False``. :func:`pack_bits` and :func:`unpack_bits` convert. Long operations release
the GIL.

Key material handed to Python lives in ordinary numpy buffers: it is not zeroized when freed.
"""

from . import (
    amplify,
    cascade,
    entropy,
    errors,
    estimate,
    etsi,
    pipeline,
    results,
    session,
    store,
)
from ._qkd import pack_bits, simulate, unpack_bits
from .errors import (
    AuthenticationError,
    EtsiError,
    InputError,
    InputWarning,
    ProtocolError,
    QkdError,
    StoreError,
)

try:
    from importlib.metadata import version as _version

    __version__ = _version("qkd")
except Exception:  # pragma: no cover - not installed as a distribution
    __version__ = "0.0.0"

__all__ = [
    "AuthenticationError",
    "EtsiError",
    "InputError",
    "InputWarning",
    "ProtocolError",
    "QkdError",
    "StoreError",
    "amplify",
    "cascade",
    "entropy",
    "errors",
    "estimate",
    "etsi",
    "pipeline",
    "pack_bits",
    "results",
    "session",
    "simulate",
    "store",
    "unpack_bits",
]
