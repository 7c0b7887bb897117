"""Typed views of the protocol's shared types (PROTOCOL §7, §8) and of the events a
command stream yields.  Parsing is lenient where the protocol says so (unknown extra keys
are ignored, missing optional fields are None) and strict where a wrong value would
mislead (a uuid that is not 16 bytes)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .codec import as_uuid, opt_uuid
from .errors import ProtocolError, escape_controls


def _map(v: Any, what: str) -> Dict[str, Any]:
    if not isinstance(v, dict):
        raise ProtocolError(f"the server sent a malformed {what}")
    return v


def _int(d: Dict[str, Any], key: str, what: str, default: Optional[int] = None) -> int:
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError(f"the server sent a {what} with a malformed {key}")
    return v


def _opt_int(d: Dict[str, Any], key: str, what: str) -> Optional[int]:
    return None if d.get(key) is None else _int(d, key, what)


def _str(d: Dict[str, Any], key: str, what: str) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise ProtocolError(f"the server sent a {what} with a malformed {key}")
    return v


def _opt_str(d: Dict[str, Any], key: str, what: str) -> Optional[str]:
    return None if d.get(key) is None else _str(d, key, what)


@dataclass(frozen=True)
class Welcome:
    """The server's answer to Hello."""

    protocol_version: int
    server_version: str
    computer_name: str
    principal: str
    heartbeat_interval_ms: int
    heartbeat_timeout_ms: int

    @classmethod
    def parse(cls, v: Any) -> "Welcome":
        d = _map(v, "Welcome")
        w = "Welcome"
        return cls(
            _int(d, "protocol_version", w),
            _str(d, "server_version", w),
            _str(d, "computer_name", w),
            _str(d, "principal", w),
            _int(d, "heartbeat_interval_ms", w, 180000),
            _int(d, "heartbeat_timeout_ms", w, 240000),
        )


@dataclass(frozen=True)
class SessionInfo:
    """One session as the server sees it, relative to this client (§8).  ``state`` and
    ``availability`` are SPEC §3's, derived from attachment, closed reason and the
    running command as the protocol's table says."""

    instance_id: uuid.UUID
    name: str
    configuration_name: str
    owner: str
    created_at_ms: int
    attachment: str
    closed_reason: Optional[str]
    running_command: Optional[str]
    idle_timeout_ms: int
    output_buffering_mode: str
    disconnected_at_ms: Optional[int]
    expires_at_ms: Optional[int]
    pending_output_bytes: int
    dropped_output_bytes: int
    jobs: int
    computer_name: str = ""
    #: The running command is suspended because nobody reads its output (``block`` mode).
    blocked: bool = False

    @classmethod
    def parse(cls, v: Any, computer_name: str = "") -> "SessionInfo":
        d = _map(v, "session")
        w = "session"
        return cls(
            instance_id=as_uuid(d.get("instance_id"), "instance_id"),
            name=escape_controls(_str(d, "name", w)),
            configuration_name=escape_controls(_str(d, "configuration_name", w)),
            owner=escape_controls(_str(d, "owner", w)),
            created_at_ms=_int(d, "created_at_ms", w),
            attachment=_str(d, "attachment", w),
            closed_reason=_opt_str(d, "closed_reason", w),
            running_command=_opt_str(d, "running_command", w),
            idle_timeout_ms=_int(d, "idle_timeout_ms", w),
            output_buffering_mode=_str(d, "output_buffering_mode", w),
            disconnected_at_ms=_opt_int(d, "disconnected_at_ms", w),
            expires_at_ms=_opt_int(d, "expires_at_ms", w),
            pending_output_bytes=_int(d, "pending_output_bytes", w, 0),
            dropped_output_bytes=_int(d, "dropped_output_bytes", w, 0),
            jobs=_int(d, "jobs", w, 0),
            computer_name=computer_name,
            blocked=d.get("blocked") is True,
        )

    @property
    def state(self) -> str:
        if self.closed_reason is not None:
            return "Closed"
        return "Opened" if self.attachment == "you" else "Disconnected"

    @property
    def availability(self) -> str:
        if self.closed_reason is not None:
            return "None"
        if self.attachment == "you":
            return "Busy" if self.running_command is not None else "Available"
        return "Busy" if self.attachment == "other" else "None"


@dataclass(frozen=True)
class JobInfo:
    """One job of a session (§8, §15)."""

    job_id: uuid.UUID
    kind: str
    command: str
    state: str
    status: Optional[int]
    has_more_data: bool
    pending_output_bytes: int
    started_at_ms: int
    ended_at_ms: Optional[int]

    @classmethod
    def parse(cls, v: Any) -> "JobInfo":
        d = _map(v, "job")
        w = "job"
        return cls(
            job_id=as_uuid(d.get("job_id"), "job_id"),
            kind=_str(d, "kind", w),
            command=_str(d, "command", w),
            state=_str(d, "state", w),
            status=_opt_int(d, "status", w),
            has_more_data=bool(d.get("has_more_data", False)),
            pending_output_bytes=_int(d, "pending_output_bytes", w, 0),
            started_at_ms=_int(d, "started_at_ms", w),
            ended_at_ms=_opt_int(d, "ended_at_ms", w),
        )

    @property
    def ended(self) -> bool:
        return self.state != "Running"


@dataclass(frozen=True)
class ConfigurationInfo:
    """A session configuration of the server (SPEC §10)."""

    name: str
    shell: List[str]
    idle_timeout_ms: int
    max_idle_timeout_ms: int
    output_buffering: str
    restricted: Optional[List[str]]
    raw: Dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def parse(cls, v: Any) -> "ConfigurationInfo":
        d = _map(v, "configuration")
        w = "configuration"
        return cls(
            name=_str(d, "name", w),
            shell=list(d.get("shell") or []),
            idle_timeout_ms=_int(d, "idle_timeout_ms", w),
            max_idle_timeout_ms=_int(d, "max_idle_timeout_ms", w),
            output_buffering=_str(d, "output_buffering", w),
            restricted=d.get("restricted"),
            raw=d,
        )


@dataclass(frozen=True)
class ReceiveSummary:
    """How a Receive or ReceiveJob ended (§7 ``Received``)."""

    commands_finished: int
    dropped_output_bytes: int
    running_command: Optional[str]

    @classmethod
    def parse(cls, v: Any) -> "ReceiveSummary":
        d = _map(v, "receive summary")
        w = "receive summary"
        return cls(
            _int(d, "commands_finished", w, 0),
            _int(d, "dropped_output_bytes", w, 0),
            _opt_str(d, "running_command", w),
        )


# --- events of a command stream ------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """A chunk of output.  ``command_id`` tells whose: a stream may begin with output of
    earlier commands that nobody received (PROTOCOL §10, "Earlier commands' entries")."""

    stream: str  # "stdout" or "stderr"
    data: bytes
    command_id: uuid.UUID
    seq: int


@dataclass(frozen=True)
class Finished:
    """A command (or background job) ended with ``status``."""

    command_id: uuid.UUID
    status: int
    seq: int


@dataclass(frozen=True)
class Dropped:
    """Under ``drop`` buffering, ``bytes`` of output were discarded here."""

    bytes: int
    seq: int


def parse_entry(name: str, v: Any) -> Any:
    """An Output/Finished/Dropped message as an event."""
    d = _map(v, name)
    if name == "Output":
        data = d.get("data")
        if not isinstance(data, (bytes, bytearray)):
            raise ProtocolError("the server sent output without data")
        stream = d.get("stream")
        if stream not in ("stdout", "stderr"):
            raise ProtocolError("the server sent output of an unknown stream")
        return Output(stream, bytes(data), as_uuid(d.get("command_id"), "command_id"), _int(d, "seq", name))
    if name == "Finished":
        return Finished(as_uuid(d.get("command_id"), "command_id"), _int(d, "status", name), _int(d, "seq", name))
    if name == "Dropped":
        return Dropped(_int(d, "bytes", name), _int(d, "seq", name))
    raise ProtocolError(f"unexpected {name}")


__all__ = [
    "Welcome",
    "SessionInfo",
    "JobInfo",
    "ConfigurationInfo",
    "ReceiveSummary",
    "Output",
    "Finished",
    "Dropped",
    "opt_uuid",
]
