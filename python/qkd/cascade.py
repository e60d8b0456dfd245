"""Cascade error reconciliation.

:func:`reconcile` runs both parties in this process (through the wire encoding) and returns
Bob's corrected key with statistics (leakage, efficiency, round trips). :class:`Alice` and
:class:`Bob` are the two sans-IO parties for driving the protocol yourself, e.g. over your own
transport::

    bob = Bob(bob_key, qber=0.02, algorithm="option8")
    alice = Alice(alice_key)
    msg = bob.start()
    while (reply := alice.handle(msg)) is not None:
        msg = bob.handle(reply)
    corrected = bob.key()

:func:`variants` lists the algorithm names.
"""

from ._qkd import Alice, Bob, reconcile, variants

__all__ = ["Alice", "Bob", "reconcile", "variants"]
