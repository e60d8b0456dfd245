"""Exceptions raised by qkd.

Every error the engine reports is a :class:`QkdError`. The message is the core's message: it
says what was wrong and what was expected.

- :class:`InputError` (also a ``ValueError``): a bad argument: wrong dtype, wrong length, a
  parameter out of range.
- :class:`ProtocolError`: a peer's message that does not decode, has another version, or
  does not fit this side's state (a session that ended in an error raises it).
- :class:`AuthenticationError` (a :class:`ProtocolError`): a session's transcript failed
  authentication, or the link's authentication key pool is exhausted; no key is released.
- :class:`StoreError`: the key store failed (I/O, corruption, unknown key ID).

:class:`InputWarning` (a ``UserWarning``) flags input that is accepted but probably not what
was meant: a ``uint8`` array of only 0 and 1 values (16 bytes or more) where packed key bytes
are expected.

Passing ``None`` or a value of the wrong Python type where a key is expected raises the
ordinary ``TypeError``.
"""

__all__ = [
    "QkdError",
    "InputError",
    "ProtocolError",
    "AuthenticationError",
    "StoreError",
    "EtsiError",
    "InputWarning",
]


class QkdError(Exception):
    """Base class of every error raised by qkd."""


class InputError(QkdError, ValueError):
    """A bad argument: wrong dtype, wrong length or a parameter out of range."""


class InputWarning(UserWarning):
    """Input that is accepted but probably not what was meant (see the module doc)."""


class ProtocolError(QkdError):
    """A peer's message that is malformed, of another version, or unexpected."""


class AuthenticationError(ProtocolError):
    """A session's transcript failed authentication (a message was altered, dropped, replayed
    or forged, or the peer named used pool key), or the authentication key pool is exhausted."""


class StoreError(QkdError):
    """The key store failed."""


class EtsiError(ProtocolError):
    """A KME answered an ETSI GS QKD 014 request with an error, or could not be reached.

    Attributes:
        status: the HTTP status code (400, 401, 503, ...), or None when no answer came.
        message: the Error object's ``message``.
        details: the Error object's ``details`` list, if any.
    """

    def __init__(self, status: int | None, message: str, details: object = None) -> None:
        super().__init__(f"KME error {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.details = details
