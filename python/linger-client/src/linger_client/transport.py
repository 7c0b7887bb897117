"""Byte transports to a lingerd (PROTOCOL §2): the per-user daemon's Unix socket and
TCP + TLS 1.3.  Both are used non-blocking: one I/O thread per connection reads and writes
(an OpenSSL connection must not be read and written from two threads at once), and the
handshake helpers here wait with ``select`` against a deadline.

TLS uses pyOpenSSL rather than the standard library's ``ssl``: the login signs the RFC 9266
``tls-exporter`` channel binding, and ``ssl`` offers no keying-material exporter
(``get_channel_binding`` knows only ``tls-unique``, which TLS 1.3 does not define).
pyOpenSSL is the Python Cryptographic Authority's binding over the same OpenSSL that
``cryptography`` ships.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import stat
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import (
    LingerError,
    ProtocolError,
    UnreachableError,
    UsageError,
)

DEFAULT_TLS_PORT = 5990
#: lingerd's exit status when another daemon already serves its socket.
EXIT_ALREADY_SERVING = 3
CHANNEL_BINDING_LABEL = b"EXPORTER-Channel-Binding"
_READ = 256 * 1024


class Transport:
    """A connected, non-blocking byte stream."""

    computer: str = ""
    #: Set when the last read needs the socket writable first (a TLS quirk).
    want_write: bool = False

    def fileno(self) -> int:
        raise NotImplementedError

    def recv(self) -> Optional[bytes]:
        """Bytes read, ``b""`` at the end of the stream, ``None`` if none are ready."""
        raise NotImplementedError

    def send(self, data: bytes) -> int:
        """How many bytes of ``data`` were written (0: would block)."""
        raise NotImplementedError

    def pending(self) -> bool:
        """Whether bytes are already decrypted and waiting (select would not see them)."""
        return False

    def close(self) -> None:
        raise NotImplementedError


class UnixTransport(Transport):
    def __init__(self, sock: socket.socket, computer: str = "localhost"):
        sock.setblocking(False)
        self.sock = sock
        self.computer = computer

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self) -> Optional[bytes]:
        try:
            return self.sock.recv(_READ)
        except (BlockingIOError, InterruptedError):
            return None
        except ConnectionResetError:
            return b""

    def send(self, data: bytes) -> int:
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class TlsTransport(Transport):
    def __init__(self, conn: "object", sock: socket.socket, computer: str):
        self.conn = conn
        self.sock = sock
        self.computer = computer

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self) -> Optional[bytes]:
        from OpenSSL import SSL

        self.want_write = False
        try:
            return self.conn.recv(_READ)  # type: ignore[attr-defined]
        except SSL.WantReadError:
            return None
        except SSL.WantWriteError:
            self.want_write = True
            return None
        except SSL.ZeroReturnError:
            return b""
        except SSL.SysCallError as e:
            if e.args and e.args[0] in (-1, errno.ECONNRESET, errno.EPIPE):
                return b""  # -1: unexpected EOF
            raise OSError(str(e)) from None
        except SSL.Error as e:
            raise ProtocolError(f"TLS failed: {e}") from None

    def send(self, data: bytes) -> int:
        from OpenSSL import SSL

        try:
            return self.conn.send(data)  # type: ignore[attr-defined]
        except (SSL.WantReadError, SSL.WantWriteError):
            return 0
        except SSL.SysCallError as e:
            raise OSError(str(e)) from None
        except SSL.Error as e:
            raise ProtocolError(f"TLS failed: {e}") from None

    def pending(self) -> bool:
        return bool(self.conn.pending())  # type: ignore[attr-defined]

    def close(self) -> None:
        try:
            self.conn.shutdown()  # type: ignore[attr-defined]
        except Exception:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def send_all(t: Transport, data: bytes, deadline: float) -> None:
    """Writes all of ``data`` before ``deadline`` (handshake only)."""
    while data:
        n = t.send(data)
        if n:
            data = data[n:]
            continue
        _wait(t, write=True, deadline=deadline)


def recv_some(t: Transport, deadline: float) -> bytes:
    """The next bytes (``b""`` at the end) before ``deadline`` (handshake only)."""
    while True:
        data = t.recv()
        if data is not None:
            return data
        _wait(t, write=t.want_write, deadline=deadline)


def _wait(t: Transport, write: bool, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise UnreachableError(f"{t.computer or 'the server'} did not answer in time")
    if write:
        select.select([], [t.fileno()], [], left)
    else:
        select.select([t.fileno()], [], [], left)


# --- computer names --------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a computer name points: ``local`` or ``tls`` with host, port and user."""

    kind: str
    host: str = ""
    port: int = DEFAULT_TLS_PORT
    user: Optional[str] = None


def parse_computer(computer: str) -> Target:
    """``localhost``/``.`` (the local daemon) or ``[tls://][user@]host[:port]`` (IPv6 in
    brackets), as the reference client reads them (crates/linger/src/tls.rs)."""
    if computer in ("localhost", "."):
        return Target("local")
    if computer.startswith("ssh://"):
        raise UsageError(
            f"invalid computer '{computer}': linger-client speaks to the local socket and "
            "TLS only",
            "use tls://HOST or run `lingerd --listen` on it",
        )
    rest = computer[len("tls://") :] if computer.startswith("tls://") else computer
    if "://" in rest:
        raise UsageError(f"invalid computer '{computer}': the transports are tls:// and the local socket")

    def bad(why: str) -> UsageError:
        return UsageError(f"invalid computer '{computer}': {why}")

    user = None
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not user:
            raise bad("the user before @ is empty")
    port_text = None
    if rest.startswith("["):
        host, sep, after = rest[1:].partition("]")
        if not sep:
            raise bad("an IPv6 address needs its closing ]")
        if after.startswith(":"):
            port_text = after[1:]
        elif after:
            raise bad("expected [ADDR]:PORT")
    else:
        host, sep, port_text_ = rest.rpartition(":")
        if sep:
            port_text = port_text_
        else:
            host = rest
    port = DEFAULT_TLS_PORT
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise bad(f"'{port_text}' is not a port number")
        port = int(port_text)
    if not host or host.startswith("-") or any(c.isspace() or c == "/" for c in host):
        raise bad("expected [tls://][user@]host[:port]")
    return Target("tls", host, port, user)


# --- the local socket ------------------------------------------------------------------


def check_dir(directory: Path, uid: int) -> None:
    """Refuses a socket directory another user could have made or could write
    (``linger_proto::local::check_dir``): it must be a real directory, ``uid``'s with no
    access for others, or root's and writable by nobody else."""
    try:
        st = os.lstat(directory)
    except OSError as e:
        raise UnreachableError(f"cannot inspect {directory}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnreachableError(f"{directory} is not a directory")
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == uid and not mode & 0o077:
        return
    if st.st_uid == 0 and not mode & 0o022:
        return
    if st.st_uid in (uid, 0):
        raise UnreachableError(
            f"{directory} has mode {mode:o}: others could replace the socket in it",
            "make it 0700, or remove it",
        )
    raise UnreachableError(
        f"{directory} belongs to uid {st.st_uid}, not to you (uid {uid}) or root: another "
        "user may have made it to capture your sessions",
        "remove it, or set XDG_RUNTIME_DIR",
    )


def daemon_program() -> str:
    """``$LINGERD`` if set, else ``lingerd`` on PATH (what the CLI's auto-start runs)."""
    return os.environ.get("LINGERD") or "lingerd"


def connect_local(path: Path, autostart: bool = True, timeout: float = 10.0) -> UnixTransport:
    """Connects to the daemon's socket, starting ``lingerd --socket PATH`` detached when
    nothing listens (as the reference client does), and checks with SO_PEERCRED that the
    daemon runs as this user or root before anything is sent."""
    uid = os.geteuid()
    if path.parent.exists():
        check_dir(path.parent, uid)
    deadline = time.monotonic() + timeout
    child: Optional[subprocess.Popen] = None
    lost_race_at: Optional[float] = None
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if not autostart:
                raise UnreachableError(
                    f"cannot reach lingerd on localhost: no daemon listens on {path}",
                    "start `lingerd`, or let the client start it (autostart=True)",
                ) from None
        except OSError as e:
            s.close()
            raise UnreachableError(f"cannot reach lingerd on localhost: {path}: {e.strerror}") from None
        else:
            if path.parent.exists():
                check_dir(path.parent, uid)
            _check_peer(s, path, uid)
            return UnixTransport(s)
        if child is None or (lost_race_at is not None and time.monotonic() - lost_race_at > 0.25):
            child = _spawn_daemon(path)
            lost_race_at = None
        elif lost_race_at is None and child.poll() is not None:
            if child.returncode == EXIT_ALREADY_SERVING:
                lost_race_at = time.monotonic()
            else:
                why = (child.stderr.read() if child.stderr else b"").decode(errors="replace").strip()
                raise UnreachableError(
                    "cannot start lingerd: "
                    + (why.splitlines()[-1] if why else f"it exited with status {child.returncode}")
                )
        if time.monotonic() > deadline:
            raise UnreachableError(f"cannot start lingerd: it did not open {path} within {timeout:.0f}s")
        time.sleep(0.01)


def _spawn_daemon(path: Path) -> subprocess.Popen:
    try:
        return subprocess.Popen(
            [daemon_program(), "--socket", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # detached: it outlives this client, as tmux's server
        )
    except OSError as e:
        raise UnreachableError(f"cannot start lingerd ({daemon_program()}): {e.strerror}") from None


def _check_peer(s: socket.socket, path: Path, uid: int) -> None:
    try:
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError as e:
        s.close()
        raise UnreachableError(f"cannot tell who serves {path}: {e.strerror}") from None
    _pid, peer_uid, _gid = struct.unpack("3i", creds)
    if peer_uid not in (uid, 0):
        s.close()
        raise UnreachableError(
            f"the daemon on {path} runs as uid {peer_uid}, not as you (uid {uid}) or root: "
            "refusing to talk to it"
        )


# --- TLS ---------------------------------------------------------------------------------


@dataclass
class TlsSession:
    transport: TlsTransport
    #: The server's Ed25519 identity as an SSH public key blob.
    server_key: bytes
    channel_binding: bytes
    certificate_sha256: bytes


def connect_tls(target: Target, computer: str, timeout: float = 10.0) -> TlsSession:
    """TCP to the port, then a TLS 1.3 handshake (no other version).  The certificate is
    not validated by name or chain: the server proves it holds the certificate's key in
    the handshake (OpenSSL checks the CertificateVerify signature whatever the verify
    mode), and the caller pins that key in known_hosts before sending anything."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from OpenSSL import SSL

    from .sshwire import string

    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError as e:
        raise UnreachableError(
            f"cannot reach lingerd on {computer}: cannot connect to port {target.port}: {e.strerror or e}"
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_verify(SSL.VERIFY_NONE, lambda *_: True)
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    try:
        ipaddress.ip_address(target.host)
    except ValueError:
        conn.set_tlsext_host_name(target.host.encode("idna"))
    t = TlsTransport(conn, sock, computer)
    try:
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                _wait(t, write=False, deadline=deadline)
            except SSL.WantWriteError:
                _wait(t, write=True, deadline=deadline)
    except (SSL.Error, OSError) as e:
        t.close()
        raise UnreachableError(f"cannot reach lingerd on {computer}: TLS handshake failed: {e}") from None
    except LingerError:
        t.close()
        raise
    cert = conn.get_peer_certificate(as_cryptography=True)
    if cert is None:
        t.close()
        raise UnreachableError(f"cannot reach lingerd on {computer}: the server presented no certificate")
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        t.close()
        raise UnreachableError(
            f"cannot reach lingerd on {computer}: its certificate is not a lingerd identity: its key is not Ed25519"
        )
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    binding = conn.export_keying_material(CHANNEL_BINDING_LABEL, 32, None)
    return TlsSession(
        transport=t,
        server_key=string(b"ssh-ed25519") + string(raw),
        channel_binding=bytes(binding),
        certificate_sha256=hashlib.sha256(cert.public_bytes(Encoding.DER)).digest(),
    )
