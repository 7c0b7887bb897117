"""The user's SSH keys and the signature the TLS login sends (PROTOCOL §2.1, SPEC §1).

Which keys, in the reference client's order (crates/linger/src/keys.rs): the identity
file if one is given (or, when it is encrypted, the same key in ssh-agent), else every
key in ssh-agent, then ``~/.ssh/id_ed25519``, ``id_ecdsa`` and ``id_rsa``.

Keys are loaded and used with the ``cryptography`` package.  The signature is an SshSig
(PROTOCOL.sshsig, what ``ssh-keygen -Y sign`` writes) with hash sha512; its envelope is
assembled here because cryptography does not produce SshSig.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path
from typing import List, Optional, Tuple

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .agent import Agent
from .errors import AuthenticationError
from .sshwire import Reader, mpint, string, uint32

#: SshSig namespace of login signatures (``ssh-keygen -Y sign -n``).
SIGNATURE_NAMESPACE = "linger-auth@v1"
DEFAULT_FILES = ("id_ed25519", "id_ecdsa", "id_rsa")
_MAGIC = b"SSHSIG"
_OPENSSH_MAGIC = b"openssh-key-v1\0"


def fingerprint(blob: bytes) -> str:
    """``SHA256:`` and the unpadded base64 of the key blob's SHA-256, as ssh prints it."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def openssh_line(blob: bytes) -> str:
    """``TYPE BASE64`` of a key blob (an OpenSSH public key line without comment)."""
    key_type = Reader(blob).string().decode()
    return f"{key_type} {base64.b64encode(blob).decode()}"


def signed_data(namespace: str, message: bytes) -> bytes:
    """What an SshSig signature actually signs: the magic, the namespace, the hash name
    and the message's SHA-512."""
    return (
        _MAGIC
        + string(namespace.encode())
        + string(b"")
        + string(b"sha512")
        + string(hashlib.sha512(message).digest())
    )


def armour(blob: bytes, namespace: str, signature: bytes) -> str:
    """The armoured SshSig text of ``signature`` (SSH signature encoding) by key ``blob``."""
    raw = (
        _MAGIC
        + uint32(1)
        + string(blob)
        + string(namespace.encode())
        + string(b"")
        + string(b"sha512")
        + string(signature)
    )
    b64 = base64.b64encode(raw).decode()
    lines = [b64[i : i + 70] for i in range(0, len(b64), 70)]
    return "-----BEGIN SSH SIGNATURE-----\n" + "\n".join(lines) + "\n-----END SSH SIGNATURE-----\n"


class Signer:
    """One key the client can log in with."""

    blob: bytes

    def describe(self) -> str:
        raise NotImplementedError

    def raw_sign(self, data: bytes) -> bytes:
        """An SSH-encoded signature of ``data``."""
        raise NotImplementedError

    @property
    def public_key_line(self) -> str:
        return openssh_line(self.blob)

    def sign(self, message: bytes, namespace: str = SIGNATURE_NAMESPACE) -> str:
        """The armoured SshSig over ``message`` in ``namespace``."""
        return armour(self.blob, namespace, self.raw_sign(signed_data(namespace, message)))


class FileSigner(Signer):
    """An unencrypted private key read from a file."""

    def __init__(self, path: Path, key: object):
        self.path = path
        self.key = key
        self.blob = _public_blob(key.public_key())  # type: ignore[attr-defined]

    def describe(self) -> str:
        return str(self.path)

    def raw_sign(self, data: bytes) -> bytes:
        k = self.key
        if isinstance(k, ed25519.Ed25519PrivateKey):
            return string(b"ssh-ed25519") + string(k.sign(data))
        if isinstance(k, ec.EllipticCurvePrivateKey):
            curve, digest = {
                "secp256r1": (b"nistp256", hashes.SHA256()),
                "secp384r1": (b"nistp384", hashes.SHA384()),
                "secp521r1": (b"nistp521", hashes.SHA512()),
            }[k.curve.name]
            r, s = decode_dss_signature(k.sign(data, ec.ECDSA(digest)))
            return string(b"ecdsa-sha2-" + curve) + string(mpint(r) + mpint(s))
        if isinstance(k, rsa.RSAPrivateKey):
            return string(b"rsa-sha2-512") + string(k.sign(data, padding.PKCS1v15(), hashes.SHA512()))
        raise AuthenticationError(f"{self.path}: this kind of key cannot sign a login")


class AgentSigner(Signer):
    """A key held by an ssh-agent."""

    def __init__(self, agent: Agent, blob: bytes, comment: str = ""):
        self.agent = agent
        self.blob = blob
        self.comment = comment

    def describe(self) -> str:
        return f"ssh-agent key {fingerprint(self.blob)}"

    def raw_sign(self, data: bytes) -> bytes:
        return self.agent.sign(self.blob, data)


def _public_blob(public_key: object) -> bytes:
    line = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return base64.b64decode(line.split()[1])


def _container(text: bytes) -> Optional[Tuple[bool, bytes]]:
    """``(encrypted, public key blob)`` from an OpenSSH private key file's header, which is
    readable without the passphrase (cryptography will not open an encrypted key without
    it, yet the agent may hold that key)."""
    lines = [l.strip() for l in text.splitlines()]
    try:
        start = lines.index(b"-----BEGIN OPENSSH PRIVATE KEY-----")
        end = lines.index(b"-----END OPENSSH PRIVATE KEY-----")
        raw = base64.b64decode(b"".join(lines[start + 1 : end]))
    except (ValueError, binascii.Error):
        return None
    if not raw.startswith(_OPENSSH_MAGIC):
        return None
    try:
        r = Reader(raw[len(_OPENSSH_MAGIC) :])
        cipher = r.string()
        r.string()  # kdf name
        r.string()  # kdf options
        if r.uint32() < 1:
            return None
        return cipher != b"none", r.string()
    except ValueError:
        return None


def agent_from_env() -> Optional[Agent]:
    path = os.environ.get("SSH_AUTH_SOCK")
    return Agent(path) if path else None


def _agent_keys(agent: Optional[Agent]) -> List[AgentSigner]:
    if agent is None:
        return []
    try:
        return [AgentSigner(agent, blob, comment) for blob, comment in agent.identities()]
    except AuthenticationError:
        return []  # no agent answering is not an error: ssh goes on with key files too


def from_file(path: Path, agent_keys: List[AgentSigner]) -> Optional[Signer]:
    """The signer for the key file ``path``: the file's key, or the agent's copy when the
    file is encrypted.  ``None``: encrypted and not in the agent."""
    try:
        st = os.stat(path)
        text = Path(path).read_bytes()
    except OSError as e:
        raise AuthenticationError(f"cannot read the key {path}: {e.strerror}") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise AuthenticationError(
            f"the private key {path} has mode {mode:o}, open to others; make it private (chmod 600)"
        )
    header = _container(text)
    if header is not None and header[0]:
        for k in agent_keys:
            if k.blob == header[1]:
                return k
        return None
    try:
        key = serialization.load_ssh_private_key(text, password=None)
    except TypeError:  # encrypted in a form the header check did not see
        return None
    except Exception as e:
        raise AuthenticationError(
            f"{path} is not an OpenSSH private key ({e}); keys from `ssh-keygen` are"
        ) from None
    return FileSigner(Path(path), key)


def signers(identity_file: "Optional[os.PathLike[str] | str]" = None, agent: Optional[Agent] = None,
            use_agent: bool = True) -> List[Signer]:
    """The keys to offer, in order (see the module's docstring)."""
    if agent is None and use_agent:
        agent = agent_from_env()
    held = _agent_keys(agent)
    if identity_file is not None:
        path = Path(identity_file).expanduser()
        s = from_file(path, held)
        if s is None:
            raise AuthenticationError(
                f"{path} is protected by a passphrase and ssh-agent does not hold it",
                f"add it with `ssh-add {path}`",
            )
        return [s]
    out: List[Signer] = list(held)
    ssh_dir = Path(os.environ.get("HOME") or "/") / ".ssh"
    for name in DEFAULT_FILES:
        path = ssh_dir / name
        if not path.exists():
            continue
        try:
            s = from_file(path, held)
        except AuthenticationError:
            continue  # unreadable or open to others: ssh skips it too
        if s is not None and all(o.blob != s.blob for o in out):
            out.append(s)
    if not out:
        raise AuthenticationError(
            "no SSH key to authenticate with: ssh-agent holds none and there is no usable "
            "~/.ssh/id_ed25519, id_ecdsa or id_rsa",
            "pass identity_file=, or load a key with ssh-add",
        )
    return out
