"""Streams of a session's output: an invoked command's (until its own ``Finished``), or
what a Receive or ReceiveJob delivers (until the server's ``Received`` summary).

Acknowledgement follows the reference client's policy (PROTOCOL §12): an entry is
acknowledged once the caller has taken it and asks for the next, when nothing more is
waiting or 128 KiB are unacknowledged; the ``Finished`` that ends an invoke, and what
arrived before an ``Error detached``, are acknowledged at once and written before the
call returns.  So a program killed mid-stream loses nothing it had not consumed, and a
session is never left busy by a client that forgot to acknowledge.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import IO, Any, Iterator, List, Optional, Union

from . import codec
from .connection import Connection, Input
from .errors import DetachedError, LingerError, ProtocolError, from_error_body
from .types import Dropped, Finished, Output, ReceiveSummary, parse_entry

ACK_EVERY = 128 * 1024
Event = Union[Output, Finished, Dropped]
StdinSource = Union[None, bool, bytes, bytearray, memoryview, IO[bytes]]


@dataclass
class Result:
    """A command run to its end: its own output and status; the entries of earlier
    commands that the stream delivered first (output nobody had received); and how many
    bytes ``drop`` buffering discarded while nobody read."""

    status: int
    stdout: bytes = b""
    stderr: bytes = b""
    earlier: List[Event] = field(default_factory=list)
    dropped_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.status == 0

    def text(self, encoding: str = "utf-8") -> str:
        """stdout decoded (undecodable bytes replaced)."""
        return self.stdout.decode(encoding, "replace")


class OutputStream:
    """Iterate it for events; it ends by itself.  Not thread-safe: one consumer."""

    def __init__(self, conn: Connection, rid: int, q: Any, command_id: Optional[uuid.UUID],
                 job_id: Optional[uuid.UUID] = None, stdin: Optional[Input] = None,
                 timeout: Optional[float] = None):
        self.conn = conn
        self.rid = rid
        self._q = q
        #: The invoked command (None for a receive).
        self.command_id = command_id
        #: The job an invoke started, if any.
        self.job_id = job_id
        #: Where the command's standard input goes (an invoke with ``stdin=True``).
        self.stdin = stdin
        #: The command's status once its Finished arrived (an invoke).
        self.status: Optional[int] = None
        #: The server's summary once a receive ended.
        self.summary: Optional[ReceiveSummary] = None
        #: For a receive: the status of the last Finished delivered.
        self.last_status: Optional[int] = None
        self.timeout = timeout
        self._last_seq = 0
        self._unacked = 0
        self._done = False
        self._feeder: Optional[threading.Thread] = None
        self._feed_error: Optional[BaseException] = None

    def __iter__(self) -> Iterator[Event]:
        while True:
            ev = self.next_event()
            if ev is None:
                return
            yield ev

    @property
    def done(self) -> bool:
        return self._done

    def _ack(self, wait: bool = False) -> None:
        if self._last_seq and self._unacked:
            self._unacked = 0
            self.conn.send(codec.ack(self.rid, self._last_seq), wait=wait)

    def _end(self) -> None:
        self._done = True
        self.conn.forget(self.rid)

    def next_event(self) -> Optional[Event]:
        """The next event, or None at the end of the stream."""
        if self._done:
            return None
        if self._unacked and (self._q.empty() or self._unacked >= ACK_EVERY):
            self._ack()
        while True:
            try:
                name, value = self.conn.get(self._q, self.timeout)
            except LingerError:
                self._end()
                raise
            if name in ("Output", "Finished", "Dropped"):
                ev = parse_entry(name, value)
                if ev.seq <= self._last_seq:
                    continue  # never re-sent within a request; be safe anyway
                self._last_seq = ev.seq
                self._unacked += max(len(ev.data), 1) if isinstance(ev, Output) else 1
                if isinstance(ev, Finished):
                    self.last_status = ev.status
                    if self.command_id is not None and ev.command_id == self.command_id:
                        # Ours: acknowledge at once and wait until that is written, so the
                        # session is free (and stays attached) when this returns.
                        self.status = ev.status
                        self._ack(wait=True)
                        self._end()
                return ev
            if name == "Reply":
                reply_name, reply = codec.variant(value.get("reply"))
                if reply_name == "Received":
                    self.summary = ReceiveSummary.parse(reply)
                    self._ack(wait=True)
                    self._end()
                    return None
                continue
            if name == "Error":
                err = from_error_body(value.get("error"))
                if isinstance(err, DetachedError):
                    self._ack(wait=True)
                self._end()
                raise err
            if name in ("Screen", "Watched"):
                continue
            self._end()
            raise ProtocolError(f"{self.conn.computer} sent an unexpected {name}")

    def cancel(self) -> None:
        """Stops the command, as Ctrl-C does (SIGINT; SIGKILL after the cancel timeout);
        output goes on arriving until its Finished."""
        if not self._done:
            self.conn.send(codec.cancel(self.rid))

    def close(self) -> None:
        """Stops following the stream; the command keeps running and its unreceived output
        waits on the server (a later receive gets it)."""
        if not self._done:
            self._ack(wait=True)
            self._end()

    def result(self) -> Result:
        """Reads the stream to its end; this command's output and status."""
        out, err = bytearray(), bytearray()
        earlier: List[Event] = []
        dropped = 0
        for ev in self:
            if isinstance(ev, Dropped):
                dropped += ev.bytes
                continue
            mine = self.command_id is None or ev.command_id == self.command_id
            if isinstance(ev, Output) and mine:
                (out if ev.stream == "stdout" else err).extend(ev.data)
            elif not mine:
                earlier.append(ev)
        self.join_feeder()
        status = self.status if self.status is not None else (self.last_status or 0)
        return Result(status, bytes(out), bytes(err), earlier, dropped)

    # --- forwarded input fed from a source ------------------------------------------------

    def feed(self, source: StdinSource) -> None:
        """Feeds ``source`` (bytes or a binary file) to the command's stdin in a thread of
        its own, then ends the input."""
        if self.stdin is None:
            raise LingerError("this command does not read forwarded input (invoke with stdin)")
        inp = self.stdin

        def run() -> None:
            try:
                if isinstance(source, (bytes, bytearray, memoryview)):
                    inp.write(bytes(source))
                elif source is not None and not isinstance(source, bool):
                    while True:
                        chunk = source.read(codec.STDIN_CHUNK)
                        if not chunk:
                            break
                        inp.write(chunk)
                inp.close()
            except BaseException as e:  # reported by join_feeder
                self._feed_error = e

        self._feeder = threading.Thread(target=run, name="linger-stdin", daemon=True)
        self._feeder.start()

    def join_feeder(self) -> None:
        if self._feeder is not None:
            self._feeder.join(timeout=5)
            if self._feed_error is not None and not isinstance(self._feed_error, LingerError):
                raise self._feed_error
