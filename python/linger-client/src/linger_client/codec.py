"""Framing and encoding of the client protocol (docs/PROTOCOL.md §3, §3.1, §4).

A frame is a 4-byte big-endian length word, then the body.  With the top bit clear the
body is one MessagePack value (a *control frame*); with it set it is a *data frame*: a
fixed 50-byte header and raw bytes (command output from the server, forwarded input to
it), so that output never goes through MessagePack.  This module turns frames into Python
values and back; it knows nothing of sockets.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, Dict, List, Optional, Tuple

import msgpack

from .errors import ProtocolError

#: The client protocol version this library speaks (there is no negotiation, §1).
PROTOCOL_VERSION = 4
#: Largest frame body in either direction (§3).
MAX_FRAME_LEN = 8 * 1024 * 1024
DATA_FLAG = 0x80000000
DATA_HEADER_LEN = 50
KIND_OUTPUT = 1
KIND_INPUT = 2
#: Largest slice of input in one Stdin message (STDIN_CHUNK, §12.1).
STDIN_CHUNK = 256 * 1024
#: Input never sent at or beyond the last acknowledged position plus this (§12.1).
STDIN_WINDOW = 4 * 1024 * 1024

_NIL = bytes(16)
_HEADER = struct.Struct(">BBQ16sQ16s")
assert _HEADER.size == DATA_HEADER_LEN


def encode_control(msg: Any) -> bytes:
    """One control frame holding ``msg`` (a dict/str made by the builders below).  Strings
    are MessagePack str and bytes are bin, as rmp_serde writes them."""
    body = msgpack.packb(msg, use_bin_type=True)
    if len(body) > MAX_FRAME_LEN:
        raise ProtocolError(f"a message of {len(body)} bytes is larger than the protocol allows")
    return struct.pack(">I", len(body)) + body


def encode_stdin(rid: int, command_id: uuid.UUID, offset: int, data: bytes, eof: bool) -> bytes:
    """A ``Stdin`` data frame (§3.1): kind 2, flags bit 0 = eof, channel nil."""
    header = _HEADER.pack(KIND_INPUT, 1 if eof else 0, rid, _NIL, offset, command_id.bytes)
    n = len(header) + len(data)
    return struct.pack(">I", DATA_FLAG | n) + header + data


def decode_body(word: int, body: bytes) -> Any:
    """The message in a frame whose length word was ``word``.

    Control frames decode to ``{"Variant": value}`` (or a bare variant name); data frames
    to ``{"Output": {...}}`` with ``data`` as bytes, so callers see one shape for both.
    """
    if word & DATA_FLAG:
        return _decode_data(body)
    if not body:
        raise ProtocolError("the server sent an empty frame")
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises several types: all mean "malformed"
        raise ProtocolError(f"the server sent a malformed message: {e}") from None
    if isinstance(msg, dict) and "Output" in msg:
        raise ProtocolError("the server sent output in a control frame")
    return msg


def _decode_data(body: bytes) -> Any:
    if len(body) < DATA_HEADER_LEN:
        raise ProtocolError("the server sent a data frame shorter than its header")
    kind, flags, rid, channel, seq, command_id = _HEADER.unpack_from(body)
    if kind != KIND_OUTPUT:
        raise ProtocolError(f"the server sent a data frame of kind {kind}")
    if flags not in (0, 1):
        raise ProtocolError(f"the server sent output with flags {flags}")
    if channel != _NIL:
        raise ProtocolError("the server sent output with a channel")
    return {
        "Output": {
            "rid": rid,
            "seq": seq,
            "command_id": command_id,
            "stream": "stderr" if flags else "stdout",
            "data": bytes(body[DATA_HEADER_LEN:]),
        }
    }


class FrameDecoder:
    """Splits a byte stream into messages as its bytes arrive (a TLS record or a socket
    read may hold part of a frame or several)."""

    def __init__(self, max_len: int = MAX_FRAME_LEN):
        self._buf = bytearray()
        self.max_len = max_len

    def push(self, data: bytes) -> None:
        self._buf += data

    def pop(self) -> Optional[Any]:
        """The next whole message, or None until more bytes arrive.  A malformed frame
        raises only once the messages before it have been taken."""
        if len(self._buf) < 4:
            return None
        (word,) = struct.unpack_from(">I", self._buf)
        n = word & ~DATA_FLAG & 0xFFFFFFFF
        if n > self.max_len:
            raise ProtocolError(
                f"the server announced a frame of {n} bytes, larger than the {self.max_len} allowed"
            )
        if len(self._buf) < 4 + n:
            return None
        body = bytes(self._buf[4 : 4 + n])
        del self._buf[: 4 + n]
        msg = decode_body(word, body)
        if msg is None:
            raise ProtocolError("the server sent a message that is not a protocol variant")
        return msg

    def feed(self, data: bytes) -> List[Any]:
        """Pushes ``data`` and returns every whole message now available."""
        self.push(data)
        out: List[Any] = []
        while True:
            msg = self.pop()
            if msg is None:
                return out
            out.append(msg)


def variant(msg: Any) -> Tuple[str, Any]:
    """``(name, value)`` of an enum value: ``{"Name": value}`` or a bare ``"Name"``
    (a unit variant, also accepted as ``{"Name": nil}``)."""
    if isinstance(msg, str):
        return msg, None
    if isinstance(msg, dict) and len(msg) == 1:
        (name, value), = msg.items()
        if isinstance(name, str):
            return name, value
    raise ProtocolError("the server sent a message that is not a protocol variant")


def as_uuid(value: Any, field: str = "id") -> uuid.UUID:
    """A uuid from its 16-byte bin form (§4: the textual form is not used on the wire)."""
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return uuid.UUID(bytes=bytes(value))
    raise ProtocolError(f"the server sent a malformed {field}")


def opt_uuid(value: Any, field: str = "id") -> Optional[uuid.UUID]:
    return None if value is None else as_uuid(value, field)


# --- builders of client messages (field order as declared in linger-proto) ---------------


def hello(client_id: uuid.UUID, client_name: str) -> Dict[str, Any]:
    return {
        "Hello": {
            "protocol_version": PROTOCOL_VERSION,
            "client_id": client_id.bytes,
            "client_name": client_name,
        }
    }


def request(rid: int, req: Any) -> Dict[str, Any]:
    return {"Request": {"rid": rid, "request": req}}


def ack(rid: int, seq: int) -> Dict[str, Any]:
    return {"Ack": {"rid": rid, "seq": seq}}


def cancel(rid: int) -> Dict[str, Any]:
    return {"Cancel": {"rid": rid}}


def withdraw(rid: int) -> Dict[str, Any]:
    return {"Withdraw": {"rid": rid}}


def ping(nonce: int) -> Dict[str, Any]:
    return {"Ping": {"nonce": nonce}}


def authenticate(user: str, public_key: str, signature: str) -> Dict[str, Any]:
    return {"Authenticate": {"user": user, "public_key": public_key, "signature": signature}}
