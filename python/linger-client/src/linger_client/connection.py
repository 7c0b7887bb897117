"""One connection to one daemon: the handshake and login (PROTOCOL §5, §2.1), then
requests multiplexed by ``rid`` (§5 "Request ids").

A single I/O thread owns the transport: it writes queued frames, reads and decodes frames,
routes each message to the queue of the request it answers, feeds ``StdinAck`` straight to
the forwarded input it concerns (so a writer waiting for room never depends on someone
reading output), sends ``Ping`` every ``heartbeat_interval_ms`` and cuts a connection that
has been silent past ``heartbeat_timeout_ms`` (§11.5).  Callers block on their own queue,
from any thread.
"""

from __future__ import annotations

import os
import queue
import select
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import codec
from .errors import (
    AuthenticationError,
    ConnectionLostError,
    LingerError,
    LingerTimeoutError,
    ProtocolError,
    escape_controls,
    from_error_body,
)
from .keys import Signer
from .transport import Transport, recv_some, send_all
from .types import Welcome

#: Put on every request's queue when the connection ends.
END = object()
#: Frames at most this big leave the I/O thread's buffer in one send.
_SEND_SLICE = 256 * 1024


class Login:
    """What a TLS login signs and with which keys (§2.1)."""

    def __init__(self, user: str, channel_binding: bytes, certificate_sha256: bytes,
                 signers: Callable[[], List[Signer]]):
        self.user = user
        self.channel_binding = channel_binding
        self.certificate_sha256 = certificate_sha256
        self.signers = signers

    def message(self, nonce: bytes) -> bytes:
        """``linger_proto::auth::signed_message``: tag, nonce, binding, cert hash, user."""
        return (
            b"linger-auth-v1\0" + nonce + self.channel_binding + self.certificate_sha256
            + self.user.encode()
        )


class _Handshake:
    """Reads whole messages during the handshake, keeping any bytes read past them."""

    def __init__(self, t: Transport, computer: str, deadline: float):
        self.t = t
        self.computer = computer
        self.deadline = deadline
        # Before Welcome the server reads at most 16 KiB frames; it writes small ones.
        self.decoder = codec.FrameDecoder()
        self.ready: List[Any] = []

    def send(self, msg: Any) -> None:
        try:
            send_all(self.t, codec.encode_control(msg), self.deadline)
        except OSError:
            raise ConnectionLostError(f"the connection to {self.computer} was lost") from None

    def read(self) -> Tuple[str, Any]:
        while not self.ready:
            try:
                data = recv_some(self.t, self.deadline)
            except OSError:
                data = b""
            if not data:
                # Closed before answering: a daemon at its limit, or dying.
                raise ConnectionLostError(f"the connection to {self.computer} was lost")
            try:
                self.ready.extend(self.decoder.feed(data))
            except ProtocolError as e:
                raise ProtocolError(
                    f"{self.computer} speaks an incompatible protocol: its answer to Hello is malformed: {e.message}"
                ) from None
        name, value = codec.variant(self.ready.pop(0))
        if name == "Goodbye":
            raise _goodbye(value, self.computer)
        return name, value


def _goodbye(value: Any, computer: str) -> LingerError:
    body = value.get("error") if isinstance(value, dict) else None
    err = from_error_body(body)
    if isinstance(err, AuthenticationError):
        return err
    return ProtocolError(f"{computer} closed the connection: {err.message}", err.hint, from_server=True)


class Input:
    """The forwarded standard input of one command (§12.1): a byte stream sent in slices
    no larger than STDIN_CHUNK, never past the last ``StdinAck.written`` plus
    STDIN_WINDOW, and nothing before the first ``StdinAck``."""

    def __init__(self, conn: "Connection", rid: int):
        self.conn = conn
        self.rid = rid
        self.command_id: Optional[uuid.UUID] = None
        self.written = 0
        self.sent = 0
        self.ready = False
        self.closed = False
        self.finished = False
        self.eof_sent = False
        self.cond = threading.Condition()

    # Called from the I/O thread.
    def feeds(self, command_id: uuid.UUID) -> None:
        with self.cond:
            self.command_id = command_id
            self.cond.notify_all()

    def acked(self, command_id: uuid.UUID, written: int, closed: bool) -> None:
        with self.cond:
            if self.command_id is not None and command_id != self.command_id:
                return
            self.ready = True
            self.written = max(self.written, written)
            self.closed = self.closed or closed
            self.cond.notify_all()

    def stop(self) -> None:
        """The command ended or the stream was given up: wake and release writers."""
        with self.cond:
            self.finished = True
            self.cond.notify_all()

    # Called by writers.
    def _wait_room(self, need: int) -> bool:
        """Waits until ``need`` more bytes may be sent; False when nothing more will be
        taken (input closed, command ended, connection gone)."""
        with self.cond:
            while True:
                if self.closed or self.finished or self.conn.ended is not None:
                    return False
                if self.ready and self.command_id is not None and (
                    self.sent + need <= self.written + codec.STDIN_WINDOW
                ):
                    return True
                self.cond.wait(0.5)

    def write(self, data: bytes) -> None:
        """Sends ``data`` (blocking while the window is full).  Bytes the command will no
        longer read are discarded, as the host itself does."""
        view = memoryview(bytes(data))
        while view:
            n = min(len(view), codec.STDIN_CHUNK)
            if not self._wait_room(n):
                return
            chunk = bytes(view[:n])
            assert self.command_id is not None
            self.conn.send_raw(codec.encode_stdin(self.rid, self.command_id, self.sent, chunk, False))
            self.sent += n
            view = view[n:]

    def close(self) -> None:
        """Ends the input: the command reads EOF once everything before is written."""
        if self.eof_sent or not self._wait_room(0):
            return
        assert self.command_id is not None
        self.conn.send_raw(codec.encode_stdin(self.rid, self.command_id, self.sent, b"", True))
        self.eof_sent = True


class Connection:
    """An open, logged-in connection.  Use :func:`handshake` to make one."""

    def __init__(self, t: Transport, computer: str, welcome: Welcome, decoder: codec.FrameDecoder,
                 early: List[Any], operation_timeout: float):
        self.t = t
        self.computer = computer
        self.welcome = welcome
        self.operation_timeout = operation_timeout
        self.ended: Optional[LingerError] = None
        self._decoder = decoder
        self._lock = threading.Lock()
        self._written_cond = threading.Condition(self._lock)
        self._out: List[bytes] = []
        self._queued = 0  # bytes ever queued
        self._written = 0  # bytes ever written
        self._routes: Dict[int, "queue.Queue[Any]"] = {}
        self._inputs: Dict[int, Input] = {}
        self._next_rid = 1
        self._nonce = 0
        self._closing = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._heard = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"linger-io {computer}", daemon=True)
        for msg in early:
            self._dispatch(msg)
        self._thread.start()

    # --- sending -----------------------------------------------------------------------

    def send(self, msg: Any, wait: bool = False) -> None:
        """Queues a control message; with ``wait``, returns once it is on the wire."""
        self.send_raw(codec.encode_control(msg), wait)

    def send_raw(self, frame: bytes, wait: bool = False) -> None:
        with self._lock:
            if self.ended is not None or self._closing:
                raise self.lost()
            self._out.append(frame)
            self._queued += len(frame)
            mark = self._queued
        self._wake()
        if wait:
            deadline = time.monotonic() + self.operation_timeout
            with self._written_cond:
                while self._written < mark and self.ended is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LingerTimeoutError(f"writing to {self.computer} took longer than {self.operation_timeout:.0f}s")
                    self._written_cond.wait(left)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    # --- requests ----------------------------------------------------------------------

    def start(self, req: Any, with_input: bool = False) -> Tuple[int, "queue.Queue[Any]", Optional[Input]]:
        """Sends request ``req``; returns its rid, the queue of its answers and, with
        ``with_input``, the Input that feeds its command."""
        q: "queue.Queue[Any]" = queue.Queue()
        with self._lock:
            rid = self._next_rid
            self._next_rid += 1
            self._routes[rid] = q
            inp = None
            if with_input:
                # Before the request goes out: its first StdinAck may follow at once.
                inp = Input(self, rid)
                self._inputs[rid] = inp
        try:
            self.send(codec.request(rid, req))
        except LingerError:
            self.forget(rid)
            raise
        return rid, q, inp

    def forget(self, rid: int) -> None:
        """Nothing more is routed to request ``rid``."""
        with self._lock:
            self._routes.pop(rid, None)
            inp = self._inputs.pop(rid, None)
        if inp is not None:
            inp.stop()

    def get(self, q: "queue.Queue[Any]", timeout: Optional[float]) -> Tuple[str, Any]:
        """The next message on a request's queue as ``(variant, value)``."""
        try:
            msg = q.get(timeout=timeout)
        except queue.Empty:
            raise LingerTimeoutError(
                f"waiting for {self.computer} to answer took longer than {timeout:.0f}s"
            ) from None
        if msg is END:
            q.put(END)  # every later read sees the end too
            raise self.lost()
        return msg

    def call(self, req: Any, timeout: Optional[float] = None) -> Tuple[str, Any]:
        """Sends a request and returns its one ``Reply`` as ``(variant, value)``; an
        ``Error`` answer is raised as its typed exception."""
        rid, q, _ = self.start(req)
        try:
            name, value = self.get(q, timeout if timeout is not None else self.operation_timeout)
        finally:
            self.forget(rid)
        if name == "Reply":
            return codec.variant(value.get("reply"))
        if name == "Error":
            raise from_error_body(value.get("error"))
        raise ProtocolError(f"{self.computer} sent an unexpected answer ({escape_controls(name)})")

    def lost(self) -> LingerError:
        return self.ended or ConnectionLostError(f"the connection to {self.computer} was lost")

    @property
    def is_closed(self) -> bool:
        return self.ended is not None or self._closing

    def close(self) -> None:
        """Closes the connection once what is queued is written (the last Ack included);
        commands keep running on the server."""
        with self._lock:
            self._closing = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    # --- the I/O thread ----------------------------------------------------------------

    def _run(self) -> None:
        interval = max(self.welcome.heartbeat_interval_ms, 100) / 1000
        silence = max(self.welcome.heartbeat_timeout_ms, 200) / 1000
        next_ping = time.monotonic() + interval
        buf = bytearray()
        err: Optional[LingerError] = None
        try:
            while True:
                now = time.monotonic()
                with self._lock:
                    if now >= next_ping:
                        # Queued here, under the lock, so byte positions stay in order.
                        self._nonce += 1
                        ping = codec.encode_control(codec.ping(self._nonce))
                        self._out.append(ping)
                        self._queued += len(ping)
                        next_ping = now + interval
                    for frame in self._out:
                        buf += frame
                    self._out.clear()
                    closing = self._closing
                if closing and not buf:
                    break
                if now - self._heard > silence:
                    err = ConnectionLostError(
                        f"the connection to {self.computer} was lost ({self.computer} was silent for {silence:.0f}s)"
                    )
                    break
                fd = self.t.fileno()
                wants = [fd] if buf or self.t.want_write else []
                timeout = 0 if self.t.pending() else max(0.0, min(next_ping, self._heard + silence) - now)
                readable, writable, _ = select.select([fd, self._wake_r], wants, [], timeout)
                if self._wake_r in readable:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                if fd in readable or self.t.pending() or (self.t.want_write and writable):
                    if not self._read_available():
                        break
                if buf and fd in writable:
                    n = self.t.send(bytes(buf[:_SEND_SLICE]))
                    if n:
                        del buf[:n]
                        with self._written_cond:
                            self._written += n
                            self._written_cond.notify_all()
        except LingerError as e:
            err = e
        except OSError as e:
            err = ConnectionLostError(f"the connection to {self.computer} was lost ({e})")
        finally:
            self._finish(err)

    def _read_available(self) -> bool:
        """Reads and dispatches what the transport has; False at the end of the stream."""
        for _ in range(64):  # bounded, so writes (acks) are not starved
            data = self.t.recv()
            if data is None:
                return True
            if not data:
                return False
            self._heard = time.monotonic()
            self._decoder.push(data)
            while True:
                msg = self._decoder.pop()
                if msg is None:
                    break
                if not self._dispatch(msg):
                    return False
        return True

    def _dispatch(self, msg: Any) -> bool:
        """Routes one message; False when it ends the connection (Goodbye)."""
        name, value = codec.variant(msg)
        if name == "Goodbye":
            self.ended = _goodbye(value, self.computer)
            return False
        if name in ("Pong", "Welcome", "Challenge", "AuthFailed"):
            return True
        if not isinstance(value, dict):
            raise ProtocolError(f"{self.computer} sent a malformed {escape_controls(name)}")
        rid = value.get("rid")
        if name == "StdinAck":
            with self._lock:
                inp = self._inputs.get(rid)  # type: ignore[arg-type]
            if inp is not None:
                inp.acked(codec.as_uuid(value.get("command_id")), int(value.get("written", 0)),
                          bool(value.get("closed", False)))
            return True
        if name not in ("Reply", "Error", "Output", "Finished", "Dropped", "Screen", "Watched"):
            raise ProtocolError(f"{self.computer} sent an unknown message ({escape_controls(name)})")
        with self._lock:
            q = self._routes.get(rid)  # type: ignore[arg-type]
            inp = self._inputs.get(rid)  # type: ignore[arg-type]
        if name == "Reply" and inp is not None:
            reply_name, reply = codec.variant(value.get("reply"))
            if reply_name == "Started" and isinstance(reply, dict):
                # Here rather than where the reply is read: the first StdinAck follows at once.
                inp.feeds(codec.as_uuid(reply.get("command_id")))
        if q is not None:
            q.put((name, value))
        return True

    def _finish(self, err: Optional[LingerError]) -> None:
        with self._written_cond:
            if self.ended is None:
                self.ended = err or ConnectionLostError(f"the connection to {self.computer} was lost")
            routes = list(self._routes.values())
            inputs = list(self._inputs.values())
            self._written_cond.notify_all()
        for q in routes:
            q.put(END)
        for inp in inputs:
            inp.stop()
        self.t.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


def handshake(t: Transport, computer: str, client_id: uuid.UUID, client_name: str,
              login: Optional[Login] = None, timeout: float = 30.0,
              operation_timeout: float = 180.0) -> Connection:
    """Hello, the login if the server asks for one (TLS), Welcome (§5 steps 2–3)."""
    h = _Handshake(t, computer, time.monotonic() + timeout)
    try:
        h.send(codec.hello(client_id, client_name))
        name, value = h.read()
        if name == "Challenge":
            if login is None:
                raise ProtocolError(
                    f"{computer} asked for authentication on a transport that does not carry it"
                )
            name, value = _authenticate(h, login, value)
        if name != "Welcome":
            raise ProtocolError(f"{computer} sent an unexpected answer to Hello")
        welcome = Welcome.parse(value)
        if welcome.protocol_version != codec.PROTOCOL_VERSION:
            raise ProtocolError(
                f"{computer} speaks an incompatible protocol: it answered with protocol version "
                f"{welcome.protocol_version}, this client speaks {codec.PROTOCOL_VERSION}"
            )
    except BaseException:
        t.close()
        raise
    return Connection(t, computer, welcome, h.decoder, h.ready, operation_timeout)


def _authenticate(h: _Handshake, login: Login, challenge: Any) -> Tuple[str, Any]:
    """Offers the keys one by one until the server welcomes one (§2.1)."""
    nonce = challenge.get("nonce") if isinstance(challenge, dict) else None
    if not isinstance(nonce, (bytes, bytearray)) or len(nonce) != 32:
        raise ProtocolError(f"{h.computer}'s authentication challenge has the wrong length")
    message = login.message(bytes(nonce))
    signers = login.signers()
    offered = []
    for signer in signers:
        try:
            signature = signer.sign(message)
        except AuthenticationError:
            continue  # an agent that will not sign: try the next key
        offered.append(signer.describe())
        h.send(codec.authenticate(login.user, signer.public_key_line, signature))
        try:
            name, value = h.read()
        except AuthenticationError:
            break  # Goodbye {auth}: no tries left
        if name == "AuthFailed":
            if isinstance(value, dict) and value.get("tries_left", 0) > 0:
                continue
            break
        return name, value
    raise AuthenticationError(
        f"authentication to {h.computer} failed: the server accepted none of the keys offered "
        f"({', '.join(offered) if offered else 'none could sign'})"
    )
