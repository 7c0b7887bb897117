"""Where a client keeps its files, exactly as the reference client does (SPEC §2,
crates/linger/src/home.rs), so that this library and the ``linger`` CLI on one machine
share a client identity, known_hosts and options.

* ``$LINGER_HOME`` (absolute) holds everything, else ``$XDG_STATE_HOME/linger/client``
  (identity) and ``$XDG_CONFIG_HOME/linger`` (options.toml, known_hosts), with the XDG
  defaults ``~/.local/state`` and ``~/.config``.
* The per-user daemon's socket is ``$XDG_RUNTIME_DIR/linger/lingerd.sock`` when
  ``XDG_RUNTIME_DIR`` is absolute, else ``/tmp/linger-<uid>/lingerd.sock`` (PROTOCOL §2).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import LingerError, UsageError


def _env_dir(var: str) -> Optional[Path]:
    v = os.environ.get(var)
    if not v or not os.path.isabs(v):
        return None
    return Path(v)


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/linger``, else ``/tmp/linger-$UID`` (the real uid)."""
    d = _env_dir("XDG_RUNTIME_DIR")
    return d / "linger" if d else Path(f"/tmp/linger-{os.getuid()}")


def default_socket() -> Path:
    return runtime_dir() / "lingerd.sock"


@dataclass(frozen=True)
class ClientHome:
    """A client's directories: two homes behave as two client machines."""

    state_dir: Path
    config_dir: Path

    @classmethod
    def from_env(cls) -> "ClientHome":
        home = _env_dir("LINGER_HOME")
        if home:
            return cls.at(home)
        user_home = _env_dir("HOME") or Path("/")
        state = _env_dir("XDG_STATE_HOME") or user_home / ".local/state"
        config = _env_dir("XDG_CONFIG_HOME") or user_home / ".config"
        return cls(state_dir=state / "linger/client", config_dir=config / "linger")

    @classmethod
    def at(cls, directory: "os.PathLike[str] | str") -> "ClientHome":
        """Everything in one directory (what ``LINGER_HOME`` does)."""
        d = Path(directory)
        return cls(state_dir=d, config_dir=d)

    @property
    def known_hosts(self) -> Path:
        return self.config_dir / "known_hosts"

    @property
    def options_file(self) -> Path:
        return self.config_dir / "options.toml"

    def client_id(self) -> uuid.UUID:
        """This client's identity (a random v4 uuid made on first use and kept in
        ``client_id``, mode 0600): attachments and heartbeats belong to it (§6 Hello)."""
        path = self.state_dir / "client_id"
        try:
            text = path.read_text()
        except FileNotFoundError:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            new = uuid.uuid4()
            # Clients starting at once on a fresh home (Ansible forks one per host) must all
            # end up with one identity, or one's attachments look like another client's:
            # the first to link its file wins and the others adopt it.
            try:
                _create_private_once(path, f"{new}\n".encode())
            except FileExistsError:
                return self.client_id()
            return new
        try:
            return uuid.UUID(text.strip())
        except ValueError:
            raise LingerError(
                f"{path} is corrupt", "delete it to get a new client identity"
            ) from None

    def options(self) -> Dict[str, Any]:
        """The options file (SPEC §11) as a dict; a missing file means none."""
        path = self.options_file
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            import tomllib  # type: ignore[import-not-found]
        except ImportError:  # Python < 3.11
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            return tomllib.loads(data.decode())
        except Exception as e:
            raise UsageError(f"{path}: {e}") from None


def _create_private_once(path: Path, data: bytes) -> None:
    """Creates ``path`` holding ``data`` (0600, never through a symlink) only if it does
    not exist: written to a temporary file and hard-linked into place, so a reader never
    sees it partly written and of several racing processes exactly one succeeds (the
    others get ``FileExistsError``)."""
    tmp = path.with_name(path.name + f".tmp{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def parse_duration(value: Any, what: str) -> float:
    """Seconds from an options-file duration: a number (seconds) or text such as
    ``"90s"``, ``"5m"``, ``"2h 30m"``, ``"250ms"`` (the reference client's forms)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise UsageError(f"invalid duration for {what}: {value!r}")
    import re

    text = value.strip()
    if text.isdigit():
        return float(text)
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    total = 0.0
    pos = 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", text):
        if m.start() != pos or m.group(2) not in units:
            raise UsageError(f"invalid duration '{value}' for {what}; write e.g. 90s, 5m or 2h")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise UsageError(f"invalid duration '{value}' for {what}; write e.g. 90s, 5m or 2h")
    return total
