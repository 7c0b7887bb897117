"""linger-client: a Python client of linger's documented wire protocol (docs/PROTOCOL.md).

It talks to lingerd itself — over the user's local Unix socket or over TLS 1.3 with an SSH
key login — without running the ``linger`` CLI.  Start with :class:`Client`.
"""

from .client import Client, __version__, local_user
from .errors import (
    AuthenticationError,
    BusyError,
    ClosedError,
    ConnectionLostError,
    DetachedError,
    ExistsError,
    HostKeyError,
    InternalError,
    InvalidRequestError,
    LimitError,
    LingerConnectionError,
    LingerError,
    LingerTimeoutError,
    NotFoundError,
    ProtocolError,
    UnreachableError,
    UsageError,
)
from .home import ClientHome
from .stream import OutputStream, Result
from .types import ConfigurationInfo, Dropped, Finished, JobInfo, Output, ReceiveSummary, SessionInfo, Welcome

__all__ = [
    "Client",
    "ClientHome",
    "OutputStream",
    "Result",
    "SessionInfo",
    "JobInfo",
    "ConfigurationInfo",
    "ReceiveSummary",
    "Welcome",
    "Output",
    "Finished",
    "Dropped",
    "LingerError",
    "UsageError",
    "NotFoundError",
    "ClosedError",
    "BusyError",
    "DetachedError",
    "InvalidRequestError",
    "ExistsError",
    "LimitError",
    "InternalError",
    "LingerConnectionError",
    "UnreachableError",
    "ConnectionLostError",
    "ProtocolError",
    "AuthenticationError",
    "HostKeyError",
    "LingerTimeoutError",
    "local_user",
    "__version__",
]
