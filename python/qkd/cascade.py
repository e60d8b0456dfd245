"""Cascade error reconciliation.

:func:`reconcile` runs both parties in this process (through the wire encoding) and returns
Bob's corrected key with statistics (leakage, efficiency, round trips). :class:`Alice` and
:class:`Bob` are the two sans-IO parties for driving the protocol yourself, e.g. over your own
transport::

    bob = Bob(bob_key, qber=0.02)  # algorithm=None: DEFAULT_ALGORITHM
    alice = Alice(alice_key)
    msg = bob.start()
    while (reply := alice.handle(msg)) is not None:
        msg = bob.handle(reply)
    corrected = bob.key()

:func:`variants` lists the algorithm names. Every function here, the pipeline and the sessions
use :data:`DEFAULT_ALGORITHM` ("yanetal", the engine's default, as in the C API and the KME)
when ``algorithm`` is None.
"""

from ._qkd import DEFAULT_ALGORITHM, Alice, Bob, reconcile, variants

__all__ = ["DEFAULT_ALGORITHM", "Alice", "Bob", "reconcile", "variants"]
