"""Malformed and hostile input: a real daemon's answer to a malformed frame, and scripted
peers that send what no honest lingerd sends.  The client must fail with a typed, one-line
error, never hang, and never pass a server's control characters through."""

from __future__ import annotations

import os
import socket
import struct
import threading
import uuid
from typing import Callable

import msgpack
import pytest
from linger_world import eventually

from linger_client import (
    AuthenticationError,
    BusyError,
    Client,
    ClientHome,
    ConnectionLostError,
    LingerError,
    ProtocolError,
)
from linger_client import codec


def frame(msg) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


WELCOME = frame({"Welcome": {"protocol_version": 4, "server_version": "evil", "computer_name": "evil",
                             "principal": "x", "heartbeat_interval_ms": 180000, "heartbeat_timeout_ms": 240000}})


class ScriptedPeer:
    """A Unix socket server that reads the client's Hello (and, per ``script``, more) and
    answers with fixed bytes."""

    def __init__(self, directory, script: Callable[[socket.socket], None]):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, "lingerd.sock")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(1)
        self.script = script
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.srv.accept()
        try:
            read_frame(conn)  # Hello
            self.script(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.srv.close()
        self.thread.join(5)


def read_frame(conn: socket.socket) -> bytes:
    head = recv_exact(conn, 4)
    (n,) = struct.unpack(">I", head)
    return recv_exact(conn, n & 0x7FFFFFFF)


def recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise OSError("closed")
        buf += chunk
    return buf


def peer_client(world, script) -> "tuple[Client, ScriptedPeer]":
    peer = ScriptedPeer(str(world.path("evil")), script)
    c = Client("localhost", home=ClientHome.at(world.path("homeA")), socket_path=peer.path,
               autostart=False, open_timeout=5, operation_timeout=5)
    return c, peer


@pytest.mark.parametrize(
    "answer, expected",
    [
        (struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1", "malformed"),
        (struct.pack(">I", 0x7FFFFFFF), "larger than"),
        (frame({"Welcome": {"protocol_version": 2, "server_version": "old", "computer_name": "x",
                            "principal": "x", "heartbeat_interval_ms": 1, "heartbeat_timeout_ms": 2}}),
         "protocol version 2"),
        (frame({"Goodbye": {"error": {"kind": "protocol", "message": "protocol version 3 is not supported",
                                      "hint": None}}}), "not supported"),
        (frame("Nonsense"), "unexpected answer to Hello"),
        (b"", "was lost"),
    ],
)
def test_a_bad_handshake_fails_cleanly(world, answer, expected):
    def script(conn):
        conn.sendall(answer)

    c, peer = peer_client(world, script)
    try:
        with pytest.raises(LingerError) as e:
            c.sessions()
        assert expected in str(e.value)
        assert isinstance(e.value, (ProtocolError, ConnectionLostError))
    finally:
        peer.close()


def test_server_text_is_escaped_and_errors_are_typed(world):
    def script(conn):
        conn.sendall(WELCOME)
        req = msgpack.unpackb(read_frame(conn), raw=False)
        rid = req["Request"]["rid"]
        conn.sendall(frame({"Error": {"rid": rid, "error": {
            "kind": "busy", "message": "evil\x1b[2J\nlinger: forged line", "hint": "\x07bell"}}}))
        # Then output where only data frames may carry it: the connection must end.
        conn.sendall(frame({"Output": {"rid": 99, "seq": 1, "command_id": b"\0" * 16,
                                       "stream": "stdout", "data": b"x"}}))
        conn.recv(1)

    c, peer = peer_client(world, script)
    try:
        conn = c.connection
        with pytest.raises(BusyError) as e:
            c.sessions()
        text = str(e.value)
        assert "\x1b" not in text and "\n" not in text and "\x07" not in text
        assert text == "evil\\u{1b}[2J\\nlinger: forged line (\\u{7}bell)"
        # The connection ends on the malformed frame that followed (a new call would dial again).
        eventually("the connection to end", lambda: conn.ended is not None)
        assert isinstance(conn.ended, ProtocolError)
        assert "output in a control frame" in str(conn.ended)
    finally:
        c.close()
        peer.close()


def test_a_goodbye_of_kind_auth_is_an_authentication_error(world):
    def script(conn):
        conn.sendall(frame({"Goodbye": {"error": {"kind": "auth", "message": "authentication failed", "hint": None}}}))

    c, peer = peer_client(world, script)
    try:
        with pytest.raises(AuthenticationError):
            c.sessions()
    finally:
        peer.close()


def test_a_challenge_on_the_local_socket_is_refused(world):
    def script(conn):
        conn.sendall(frame({"Challenge": {"nonce": os.urandom(32)}}))

    c, peer = peer_client(world, script)
    try:
        with pytest.raises(ProtocolError) as e:
            c.sessions()
        assert "does not carry it" in str(e.value)
    finally:
        peer.close()


def test_a_connection_lost_mid_command_is_reported(world):
    command_id = uuid.uuid4().bytes

    def script(conn):
        conn.sendall(WELCOME)
        req = msgpack.unpackb(read_frame(conn), raw=False)
        rid = req["Request"]["rid"]
        conn.sendall(frame({"Reply": {"rid": rid, "reply": {"Started": {"command_id": command_id, "job_id": None}}}}))
        header = struct.pack(">BBQ16sQ16s", 1, 0, rid, b"\0" * 16, 1, command_id)
        conn.sendall(struct.pack(">I", 0x80000000 | (len(header) + 3)) + header + b"hi\n")
        read_frame(conn)  # the client's Ack
        # and then the peer vanishes

    c, peer = peer_client(world, script)
    try:
        stream = c.invoke(uuid.uuid4(), "echo hi; sleep 100")
        first = next(iter(stream))
        assert first.data == b"hi\n"
        with pytest.raises(ConnectionLostError):
            list(stream)
    finally:
        c.close()
        peer.close()


def test_the_real_daemon_ends_a_connection_that_sends_garbage(world):
    d = world.daemon()
    d.start()
    c = Client("localhost", home=ClientHome.at(world.path("homeA")), socket_path=d.socket, autostart=False)
    s = c.new_session("survivor")
    conn = c.connection
    conn.send_raw(struct.pack(">I", 4) + b"\x93\x01\x02\x03")  # an array, not a ClientMsg
    with pytest.raises(ProtocolError) as e:
        conn.call({"ListSessions": {"instance_ids": []}})
    assert "malformed message" in str(e.value)
    # The daemon and the session carry on for everyone else; a new connection works.
    c.close()
    with Client("localhost", home=ClientHome.at(world.path("homeA")), socket_path=d.socket,
                autostart=False) as again:
        assert again.run("survivor", "echo alive").stdout == b"alive\n"
    assert s.instance_id


def test_frames_round_trip_as_the_protocol_documents():
    """The hex dumps of PROTOCOL §3.1 and §4."""
    cid = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    hello = codec.encode_control({"Hello": {"protocol_version": 4, "client_id": cid.bytes, "client_name": "x"}})
    assert hello.hex() == (
        "00000044" "81a548656c6c6f83b070726f746f636f6c5f76657273696f6e04"
        "a9636c69656e745f6964c41000112233445566778899aabbccddeeff"
        "ab636c69656e745f6e616d65a178"
    )
    command = uuid.UUID("a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf")
    stdin = codec.encode_stdin(3, command, 0, b"in\n", True)
    assert stdin.hex() == (
        "80000035" "0201" "0000000000000003" + "00" * 16 + "0000000000000000"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf" "696e0a"
    )
    output = bytes.fromhex(
        "80000035" "0100" "0000000000000003" + "00" * 16 + "0000000000000001"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf" "68690a"
    )
    dec = codec.FrameDecoder()
    assert dec.feed(output[:7]) == []
    (msg,) = dec.feed(output[7:])
    assert msg == {"Output": {"rid": 3, "seq": 1, "command_id": command.bytes, "stream": "stdout", "data": b"hi\n"}}
