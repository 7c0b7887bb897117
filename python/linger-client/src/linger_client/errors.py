"""Typed errors of the linger client.

Every error is a :class:`LingerError` with a one-line ``message``, an optional ``hint``
(what to do about it) and a ``kind``.  Errors the server sent (docs/PROTOCOL.md §9) map to
one class per error kind, so callers can ``except BusyError`` instead of comparing
strings; errors the client finds itself (no daemon, a refused key, a changed host key,
a lost connection) have classes of their own.  ``exit_code`` is the code the reference CLI
would exit with (SPEC §13), for programs that wrap this library in a command.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


def escape_controls(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\u{1b}``), as the reference
    client shows anything a server wrote: a hostile server must not forge lines or drive
    the user's terminal through an error message (SPEC §12)."""
    if not any(_is_control(c) for c in text):
        return text
    out = []
    for c in text:
        if not _is_control(c):
            out.append(c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        else:
            out.append("\\u{%x}" % ord(c))
    return "".join(out)


def _is_control(c: str) -> bool:
    o = ord(c)
    return o < 0x20 or 0x7F <= o < 0xA0


class LingerError(Exception):
    """Base of every error this library raises."""

    #: The error class, as the CLI's ``--json`` error records name it.
    kind: str = "other"
    #: The reference CLI's exit code for this class (SPEC §13).
    exit_code: int = 1

    def __init__(self, message: str, hint: Optional[str] = None, *, from_server: bool = False):
        self.message = message
        self.hint = hint
        #: True when the text came from the server (it is then already escaped).
        self.from_server = from_server
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(LingerError):
    """A call that cannot be right whatever the server says (a bad computer name, say)."""

    kind = "usage"
    exit_code = 2


class NotFoundError(LingerError):
    """No such session (or job) for this principal: server kind ``not_found``."""

    kind = "not_found"
    exit_code = 3


class ClosedError(NotFoundError):
    """The session has ended: server kind ``closed``.  A subclass of NotFoundError because
    for the caller both mean "that session is not there to use" (the CLI exits 3 for both)."""

    kind = "closed"


class BusyError(LingerError):
    """The session runs another command, or is attached to another client: ``busy``."""

    kind = "busy"
    exit_code = 4


class DetachedError(LingerError):
    """The session was detached from this client while a request received its output;
    its command keeps running (``detached``): receive it later."""

    kind = "detached"


class InvalidRequestError(LingerError):
    """A value the server refuses (a bad name, an idle timeout out of range):
    ``invalid_request``."""

    kind = "invalid_request"
    exit_code = 2


class ExistsError(InvalidRequestError):
    """A session of that name already exists for this principal: ``exists``."""

    kind = "exists"


class LimitError(LingerError):
    """A server limit refused the request: ``limit``."""

    kind = "limit"


class InternalError(LingerError):
    """The server failed (a session host could not be started, say): ``internal``."""

    kind = "internal"


class LingerConnectionError(LingerError):
    """The daemon cannot be reached, or the connection to it broke."""

    kind = "connection"
    exit_code = 6


class UnreachableError(LingerConnectionError):
    """Nothing answered (no daemon, refused TCP connection, failed TLS handshake, an
    untrusted socket directory)."""


class ConnectionLostError(LingerConnectionError):
    """The connection ended while a request was in progress."""


class ProtocolError(LingerConnectionError):
    """The peer does not speak this protocol version, sent something malformed, or said
    ``Goodbye``."""

    kind = "protocol"


class AuthenticationError(LingerError):
    """The client could not log in: no usable key, a key it may not use, or every key
    refused by the server."""

    kind = "auth"
    exit_code = 5


class HostKeyError(AuthenticationError):
    """The server's identity is unknown and may not be learnt, has changed, or is revoked
    in known_hosts (the CLI reports these as authentication errors too)."""


class LingerTimeoutError(LingerError):
    """An operation outlasted its timeout."""

    kind = "timeout"
    exit_code = 7


_BY_KIND: Dict[str, Type[LingerError]] = {
    "not_found": NotFoundError,
    "closed": ClosedError,
    "busy": BusyError,
    "detached": DetachedError,
    "invalid_request": InvalidRequestError,
    "exists": ExistsError,
    "limit": LimitError,
    "internal": InternalError,
    "auth": AuthenticationError,
    "protocol": ProtocolError,
}


def from_error_body(body: Any) -> LingerError:
    """The exception for a server ``ErrorBody`` ``{kind, message, hint}``.  An unknown
    kind (a newer server) becomes a plain LingerError rather than a crash."""
    if not isinstance(body, dict):
        return ProtocolError("the server sent a malformed error")
    kind = body.get("kind")
    message = body.get("message")
    hint = body.get("hint")
    cls = _BY_KIND.get(kind, LingerError) if isinstance(kind, str) else LingerError
    text = escape_controls(message) if isinstance(message, str) else "the server reported an error"
    err = cls(
        text,
        escape_controls(hint) if isinstance(hint, str) and hint else None,
        from_server=True,
    )
    if cls is LingerError and isinstance(kind, str):
        err.kind = escape_controls(kind)
    return err
