"""Pinning of TLS servers' identities in the client's ``known_hosts`` (SPEC §1,
PROTOCOL §2 "Pinning"), the same file and format the ``linger`` CLI uses
(crates/linger/src/known_hosts.rs), so a server pinned by one is known to the other.

Lines are OpenSSH's: ``HOST ssh-ed25519 BASE64``, HOST being ``host`` for port 5990 and
``[host]:port`` otherwise; hashed names (``|1|salt|hash``), comma lists with ``*``/``?``
wildcards and ``!`` negations, and ``@revoked`` markers are read as ssh reads them.
``host_key_checking`` decides about an unknown server: ``accept-new`` pins it,
``strict`` refuses it, ``ask`` asks on the terminal.  A changed key is always refused,
with both fingerprints.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import hashlib
import os
import sys
from pathlib import Path
from typing import Optional, Tuple

from .errors import HostKeyError, LingerError, UsageError
from .keys import fingerprint, openssh_line

DEFAULT_TLS_PORT = 5990
CHECKING = ("ask", "accept-new", "strict")


def host_pattern(host: str, port: int) -> str:
    return host if port == DEFAULT_TLS_PORT else f"[{host}]:{port}"


def checking_from_option(value: Optional[str]) -> str:
    """The option's value, or its default: ``ask`` when stdin and stderr are terminals,
    else ``strict`` (as the reference client decides)."""
    if value is None:
        try:
            on_terminal = sys.stdin.isatty() and sys.stderr.isatty()
        except (AttributeError, ValueError):
            on_terminal = False
        return "ask" if on_terminal else "strict"
    if value not in CHECKING:
        raise UsageError(
            f"invalid host_key_checking '{value}'", "use ask, accept-new or strict"
        )
    return value


def wildcard(pattern: str, text: str) -> bool:
    """OpenSSH's pattern match: ``*`` any run, ``?`` any one character, letters compared
    without case."""
    p, s = pattern.lower(), text.lower()
    # Iterative glob with backtracking to the last star.
    pi = si = 0
    star = -1
    mark = 0
    while si < len(s):
        if pi < len(p) and (p[pi] == "?" or p[pi] == s[si]):
            pi += 1
            si += 1
        elif pi < len(p) and p[pi] == "*":
            star, mark = pi, si
            pi += 1
        elif star >= 0:
            pi = star + 1
            mark += 1
            si = mark
        else:
            return False
    while pi < len(p) and p[pi] == "*":
        pi += 1
    return pi == len(p)


def _names(hosts: str, pattern: str) -> bool:
    if hosts.startswith("|1|"):
        parts = hosts.split("|")
        if len(parts) != 4:
            return False
        try:
            salt = base64.b64decode(parts[2], validate=True)
            want = base64.b64decode(parts[3], validate=True)
        except (binascii.Error, ValueError):
            return False
        got = hmac.new(salt, pattern.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(got, want)
    named = False
    for p in hosts.split(","):
        if p.startswith("!"):
            if wildcard(p[1:], pattern):
                return False
        elif wildcard(p, pattern):
            named = True
    return named


def _lookup(path: Path, pattern: str, presented: bytes) -> Tuple[str, int, Optional[bytes]]:
    """``("same"|"other"|"revoked"|"unknown", line, pinned blob)``."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "unknown", 0, None
    except OSError as e:
        raise LingerError(f"cannot read {path}: {e.strerror}") from None
    same = False
    other: Optional[Tuple[int, bytes]] = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        marker = None
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3:
            continue  # lines that do not parse are skipped, as ssh skips them
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except (binascii.Error, ValueError):
            continue
        if not _names(fields[0], pattern):
            continue
        matches = blob == presented
        if marker == "@revoked":
            if matches:
                return "revoked", n, blob
        elif marker is not None:
            continue  # @cert-authority: not a pin of a plain key
        elif matches:
            same = True
        elif other is None:
            other = (n, blob)
    if same:
        return "same", 0, None
    if other:
        return "other", other[0], other[1]
    return "unknown", 0, None


def verify(path: Path, host: str, port: int, presented: bytes, checking: str) -> None:
    """Checks the server key blob ``presented`` against ``path`` for ``host:port``,
    pinning it if ``checking`` allows.  Raises HostKeyError otherwise."""
    pattern = host_pattern(host, port)
    fp = fingerprint(presented)
    state, line, pinned = _lookup(path, pattern, presented)
    if state == "same":
        return
    if state == "revoked":
        raise HostKeyError(
            f"the key {pattern} presents ({fp}) is revoked ({path}:{line} marks it @revoked)",
            "do not use this server until its owner replaces its identity",
        )
    if state == "other":
        assert pinned is not None
        raise HostKeyError(
            f"the identity of {pattern} has changed: {path}:{line} pins {fingerprint(pinned)} "
            f"but the server presents {fp}",
            "someone may be intercepting the connection; if the server's key was replaced on "
            f"purpose, delete line {line} of {path}",
        )
    if checking == "accept-new":
        accept = True
    elif checking == "strict":
        accept = False
    else:
        accept = _ask(pattern, fp)
    if not accept:
        raise HostKeyError(
            f"the identity of {pattern} is not known ({fp}) and host_key_checking is {checking}",
            "compare the fingerprint with `ssh-keygen -lf STATE_DIR/identity/host_ed25519.pub` "
            f"on the server, then add `{pattern} {openssh_line(presented)}` to {path} or "
            'connect once with host_key_checking="accept-new"',
        )
    pin(path, pattern, presented)


def _ask(pattern: str, fp: str) -> bool:
    try:
        with open("/dev/tty", "r+") as tty:
            tty.write(
                f"The authenticity of linger server '{pattern}' can't be established.\n"
                f"ED25519 key fingerprint is {fp}.\n"
                "Are you sure you want to continue connecting (yes/no)? "
            )
            tty.flush()
            return tty.readline().strip().lower() == "yes"
    except OSError as e:
        raise HostKeyError(
            f"the identity of {pattern} is not known ({fp}) and there is no terminal to ask ({e.strerror})",
            'pass host_key_checking="accept-new" to pin it on first use',
        ) from None


def pin(path: Path, pattern: str, blob: bytes) -> None:
    """Appends ``pattern TYPE BASE64`` in one write (concurrent first connections to
    several servers append whole lines), the file 0600 and never through a symlink."""
    try:
        os.makedirs(path.parent, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, f"{pattern} {openssh_line(blob)}\n".encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise LingerError(f"cannot record the server's identity in {path}: {e.strerror}") from None
