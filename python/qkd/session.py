"""A block's whole life between two sites as one sans-IO session per side (DESIGN §9).

Each side creates a :class:`Link` once (the same settings and pre-shared authentication secret
on both sides), then an :class:`AliceSession` or :class:`BobSession` per block, on its raw
sifted bits. The sessions never touch a socket: feed each message from the peer to
:meth:`Session.handle` and send whatever :meth:`Session.poll_transmit` returns, over any
transport. Both transcripts are authenticated (Wegman-Carter tags) before either side releases
its key::

    alice_link = Link(psk, sample_bits=1 << 12)
    bob_link = Link(psk, sample_bits=1 << 12)
    alice = AliceSession(alice_link, "block-1", alice_raw)
    bob = BobSession(bob_link, "block-1", bob_raw)
    (report, key), (bob_report, bob_key) = run_pair(alice, bob)

:func:`run_pair` moves the messages in this process; :func:`block_id_of` names the block of a
message, to route many blocks over one connection. A session that ended in an error raises it
from :meth:`Session.outcome` (:class:`qkd.errors.ProtocolError`, or its subclass
:class:`qkd.errors.AuthenticationError`).
"""

from collections.abc import Callable
from typing import Any, Literal

from ._qkd import AliceSession, BobSession, Link, Session, block_id_of
from .errors import ProtocolError, QkdError
from .results import BlockReport

__all__ = ["AliceSession", "BobSession", "Link", "Session", "block_id_of", "run_pair"]

Direction = Literal["to_bob", "to_alice"]


Outcome = tuple[BlockReport, Any] | QkdError


def _outcome(s: Session) -> Outcome:
    if not s.finished:
        return ProtocolError(
            f"{s.side}'s session of block {s.block_id!r}: no message in flight and the session "
            "has not ended"
        )
    try:
        return s.outcome()
    except QkdError as e:
        return e


def run_pair(
    alice: Session,
    bob: Session,
    *,
    tap: Callable[[Direction, bytes], list[bytes]] | None = None,
) -> tuple[Outcome, Outcome]:
    """Run two sessions of one block against each other in this process until neither has
    anything to send.

    Args:
        alice, bob: the two sessions.
        tap: optional ``tap(direction, message) -> list of messages`` applied to every message
            on the way ("to_bob" or "to_alice"): return ``[message]`` to deliver it, ``[]`` to
            drop it, a changed copy to alter it, two copies to replay it.

    Returns:
        (alice_result, bob_result): each ``(report, key)`` as :meth:`Session.outcome` gives it
        (``key`` None when the block yielded none), or the :class:`qkd.errors.QkdError` that
        ended that side (a side still waiting when nothing is in flight gets a ProtocolError).
    """
    while True:
        moved = False
        for sender, receiver, direction in (
            (alice, bob, "to_bob"),
            (bob, alice, "to_alice"),
        ):
            while (message := sender.poll_transmit()) is not None:
                moved = True
                for m in [message] if tap is None else tap(direction, message):
                    try:
                        receiver.handle(m)
                    except QkdError:
                        pass  # the error is also the receiver's outcome
        if not moved:
            return _outcome(alice), _outcome(bob)
