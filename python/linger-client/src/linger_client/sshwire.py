"""The few SSH wire encodings the login needs (RFC 4251 §5): ``string``, ``uint32`` and
``mpint``, and a reader for them.  Used by the SshSig signature format, the ssh-agent
protocol and the OpenSSH private-key container header; the cryptography package encodes
keys but exposes none of these."""

from __future__ import annotations

import struct


def string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def uint32(n: int) -> bytes:
    return struct.pack(">I", n)


def mpint(n: int) -> bytes:
    """A non-negative integer as an SSH mpint (two's complement, minimal, big-endian)."""
    if n == 0:
        return string(b"")
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if raw[0] & 0x80:
        raw = b"\0" + raw
    return string(raw)


class Reader:
    """Reads SSH wire values from a buffer; a short buffer raises ValueError."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated SSH data")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def uint32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def byte(self) -> int:
        return self.take(1)[0]

    def string(self) -> bytes:
        return self.take(self.uint32())
