"""A minimal ssh-agent client (draft-miller-ssh-agent): list the agent's keys and ask it
to sign.  Written here because neither the cryptography package nor the standard library
speaks the agent protocol, and these two requests are all the login needs."""

from __future__ import annotations

import socket
import struct
from typing import List, Tuple

from .errors import AuthenticationError
from .sshwire import Reader, string, uint32

SSH_AGENT_FAILURE = 5
SSH2_AGENTC_REQUEST_IDENTITIES = 11
SSH2_AGENT_IDENTITIES_ANSWER = 12
SSH2_AGENTC_SIGN_REQUEST = 13
SSH2_AGENT_SIGN_RESPONSE = 14
#: Ask for rsa-sha2-512 rather than SHA-1 signatures from an RSA key.
SSH_AGENT_RSA_SHA2_512 = 4
_MAX_REPLY = 256 * 1024


class Agent:
    """One ssh-agent, reached on its Unix socket (``SSH_AUTH_SOCK``).  Each call opens its
    own short connection, so an Agent can be kept and used from any thread."""

    def __init__(self, path: str, timeout: float = 10.0):
        self.path = path
        self.timeout = timeout

    def _call(self, payload: bytes) -> Tuple[int, Reader]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                s.sendall(uint32(len(payload)) + payload)
                (n,) = struct.unpack(">I", _recv_exact(s, 4))
                if n == 0 or n > _MAX_REPLY:
                    raise AuthenticationError(f"ssh-agent at {self.path} sent a malformed answer")
                reply = _recv_exact(s, n)
        except OSError as e:
            raise AuthenticationError(f"cannot reach ssh-agent at {self.path}: {e}") from None
        r = Reader(reply)
        return r.byte(), r

    def identities(self) -> List[Tuple[bytes, str]]:
        """``(public key blob, comment)`` of every plain key the agent holds (certificates
        are left out: the server checks plain keys)."""
        kind, r = self._call(bytes([SSH2_AGENTC_REQUEST_IDENTITIES]))
        if kind != SSH2_AGENT_IDENTITIES_ANSWER:
            raise AuthenticationError("ssh-agent would not list its keys")
        try:
            keys = []
            for _ in range(r.uint32()):
                blob = r.string()
                comment = r.string().decode("utf-8", "replace")
                key_type = Reader(blob).string()
                if not key_type.endswith(b"-cert-v01@openssh.com"):
                    keys.append((blob, comment))
            return keys
        except ValueError:
            raise AuthenticationError("ssh-agent sent a malformed key list") from None

    def sign(self, blob: bytes, data: bytes) -> bytes:
        """The agent's signature of ``data`` by key ``blob``, in SSH signature encoding
        (``string algorithm, string signature``); rsa-sha2-512 for RSA keys."""
        key_type = Reader(blob).string()
        flags = SSH_AGENT_RSA_SHA2_512 if key_type == b"ssh-rsa" else 0
        kind, r = self._call(
            bytes([SSH2_AGENTC_SIGN_REQUEST]) + string(blob) + string(data) + uint32(flags)
        )
        if kind != SSH2_AGENT_SIGN_RESPONSE:
            raise AuthenticationError("ssh-agent refused to sign (is the key still loaded?)")
        try:
            return r.string()
        except ValueError:
            raise AuthenticationError("ssh-agent sent a malformed signature") from None


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("the agent closed the connection")
        buf += chunk
    return bytes(buf)
