"""The client API: one computer, one (lazily opened) connection, and every request of the
protocol as a method.  Synchronous on purpose — it is meant for scripts and for tools
such as Ansible, which are synchronous — while the connection underneath multiplexes, so
several threads may use one Client at once.

    from linger_client import Client

    with Client("localhost") as c:
        s = c.new_session("work")
        c.run(s, "cd /tmp; export X=1")
        print(c.run(s, 'echo "$X $PWD"').text())      # 1 /tmp
"""

from __future__ import annotations

import fnmatch
import os
import pwd
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from . import codec
from .connection import Connection, Login, handshake
from .errors import (
    ExistsError,
    LingerError,
    LingerTimeoutError,
    NotFoundError,
    ProtocolError,
    UsageError,
    from_error_body,
)
from .home import ClientHome, default_socket, parse_duration
from .keys import Agent, Signer, signers as find_signers
from .known_hosts import checking_from_option, verify as verify_host_key
from .stream import OutputStream, Result, StdinSource
from .transport import connect_local, connect_tls, parse_computer
from .types import ConfigurationInfo, JobInfo, SessionInfo, Welcome

__version__ = "0.1.0"

SessionRef = Union[SessionInfo, uuid.UUID, str]
BUFFERING = ("block", "drop", "spool")


def _ms(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else int(round(seconds * 1000))


def local_user() -> str:
    """Whom a TLS login asks to act as by default: the local user's name."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER") or "nobody"


_FORWARDED = re.compile(r"(LANG|LANGUAGE|TERM|COLORTERM|NO_COLOR|LC_[A-Z_]+)")
MAX_ENV_VARIABLES = 32
MAX_ENV_VALUE_LEN = 256


def forwardable_environment(env: Mapping[str, str]) -> Dict[str, str]:
    """The variables of ``env`` a new session takes (PROTOCOL.md, NewSession.environment):
    locale and terminal type, short and on one line, at most 32."""
    out: Dict[str, str] = {}
    for k in sorted(env):
        v = env[k]
        if (_FORWARDED.fullmatch(k) and len(v.encode()) <= MAX_ENV_VALUE_LEN
                and not any(c in v for c in "\0\n\r")):
            out[k] = v
            if len(out) == MAX_ENV_VARIABLES:
                break
    return out


class Client:
    """A client of one computer's lingerd.

    ``computer``: ``"localhost"`` (or ``"."``) for the user's own daemon on its Unix
    socket, else ``[tls://][user@]host[:port]`` for TLS (port 5990 by default).

    Keyword options (each defaults to the client's ``options.toml``, then to the
    reference client's default):

    * ``home``: a :class:`ClientHome` (default: from ``LINGER_HOME``/XDG, as the CLI).
    * ``identity_file``: the SSH private key to log in with; else ssh-agent, then
      ``~/.ssh/id_ed25519``, ``id_ecdsa``, ``id_rsa``.
    * ``host_key_checking``: ``"accept-new"``, ``"strict"`` or ``"ask"``.
    * ``user``: whom to log in as (default: the ``user@`` of the computer, else the local user).
    * ``socket_path``: the local daemon's socket; ``autostart``: start lingerd if none runs.
    * ``client_id``: act as this client identity instead of the home's.
    * ``open_timeout``, ``operation_timeout``, ``cancel_timeout`` in seconds.
    """

    def __init__(
        self,
        computer: str = "localhost",
        *,
        home: Optional[ClientHome] = None,
        identity_file: "Optional[os.PathLike[str] | str]" = None,
        host_key_checking: Optional[str] = None,
        user: Optional[str] = None,
        socket_path: "Optional[os.PathLike[str] | str]" = None,
        autostart: bool = True,
        client_id: Optional[uuid.UUID] = None,
        client_name: Optional[str] = None,
        ssh_agent: Optional[str] = None,
        open_timeout: Optional[float] = None,
        operation_timeout: Optional[float] = None,
        cancel_timeout: Optional[float] = None,
    ):
        self.target = parse_computer(computer)
        self.computer = "localhost" if computer == "." else computer
        self.home = home or ClientHome.from_env()
        opts = self.home.options()
        self.identity_file = identity_file if identity_file is not None else opts.get("identity_file")
        self.host_key_checking = checking_from_option(
            host_key_checking if host_key_checking is not None else opts.get("host_key_checking")
        )
        self.user = user or self.target.user or local_user()
        self.socket_path = Path(socket_path) if socket_path else default_socket()
        self.autostart = autostart
        self._client_id = client_id
        self.client_name = client_name or f"linger-client {__version__} (python)"
        self.ssh_agent = ssh_agent
        self.open_timeout = open_timeout if open_timeout is not None else parse_duration(
            opts.get("open_timeout", 180), "open_timeout")
        self.operation_timeout = operation_timeout if operation_timeout is not None else parse_duration(
            opts.get("operation_timeout", 180), "operation_timeout")
        self.cancel_timeout = cancel_timeout if cancel_timeout is not None else parse_duration(
            opts.get("cancel_timeout", 60), "cancel_timeout")
        self._conn: Optional[Connection] = None
        self._lock = threading.Lock()

    # --- the connection ----------------------------------------------------------------

    @property
    def client_id(self) -> uuid.UUID:
        if self._client_id is None:
            self._client_id = self.home.client_id()
        return self._client_id

    @property
    def connection(self) -> Connection:
        """The open connection, dialled on first use and again after it ended."""
        with self._lock:
            if self._conn is None or self._conn.is_closed:
                self._conn = self._dial()
            return self._conn

    def _signers(self) -> List[Signer]:
        agent = Agent(self.ssh_agent) if self.ssh_agent else None
        return find_signers(self.identity_file, agent=agent)

    def _dial(self) -> Connection:
        t0 = time.monotonic()
        if self.target.kind == "local":
            t = connect_local(self.socket_path, self.autostart, timeout=min(self.open_timeout, 10.0))
            left = max(1.0, self.open_timeout - (time.monotonic() - t0))
            return handshake(t, "localhost", self.client_id, self.client_name, None,
                             timeout=left, operation_timeout=self.operation_timeout)
        tls = connect_tls(self.target, self.computer, timeout=min(self.open_timeout, 10.0))
        try:
            verify_host_key(self.home.known_hosts, self.target.host, self.target.port,
                            tls.server_key, self.host_key_checking)
        except BaseException:
            tls.transport.close()
            raise
        login = Login(self.user, tls.channel_binding, tls.certificate_sha256, self._signers)
        left = max(1.0, self.open_timeout - (time.monotonic() - t0))
        return handshake(tls.transport, self.computer, self.client_id, self.client_name, login,
                         timeout=min(left, 30.0), operation_timeout=self.operation_timeout)

    @property
    def welcome(self) -> Welcome:
        """The server's Welcome: its version, computer name, our principal."""
        return self.connection.welcome

    def close(self) -> None:
        """Closes the connection (sessions and their commands keep running)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, req: Any, expect: str, timeout: Optional[float] = None) -> Any:
        name, value = self.connection.call(req, timeout)
        if name != expect:
            raise ProtocolError(f"{self.computer} answered with {name} where {expect} was expected")
        return value

    def ping(self) -> float:
        """Round-trip time of a ListSessions (a request every daemon answers), in seconds."""
        t0 = time.monotonic()
        self.sessions()
        return time.monotonic() - t0

    # --- sessions ------------------------------------------------------------------------

    def _session(self, v: Any) -> SessionInfo:
        return SessionInfo.parse(v, self.computer)

    def new_session(self, name: Optional[str] = None, *, configuration: Optional[str] = None,
                    idle_timeout: Optional[float] = None, buffering: Optional[str] = None,
                    environment: Optional[Dict[str, str]] = None) -> SessionInfo:
        """Starts a session, attached to this client (NewSession).  Without ``name`` it is
        ``SessionN`` for the first N not in use.  ``idle_timeout`` in seconds.
        ``environment``: locale and terminal variables for its shell (the server takes only
        LANG, LANGUAGE, LC_*, TERM, COLORTERM and NO_COLOR); default: this process's own."""
        if buffering is not None and buffering not in BUFFERING:
            raise UsageError(f"invalid buffering '{buffering}'", "use block, drop or spool")
        env = forwardable_environment(os.environ if environment is None else environment)
        names = [name] if name is not None else [f"Session{n}" for n in range(1, 1000)]
        for candidate in names:
            req = {"NewSession": {"name": candidate, "configuration": configuration,
                                  "idle_timeout_ms": _ms(idle_timeout), "buffering": buffering}}
            if env:
                req["NewSession"]["environment"] = env
            try:
                return self._session(self._call(req, "Session", timeout=max(self.operation_timeout, 30)))
            except ExistsError:
                if name is not None:
                    raise
        raise UsageError("no free default session name (Session1…Session999 are all in use)")

    def sessions(self, ids: Sequence[uuid.UUID] = ()) -> List[SessionInfo]:
        """The caller's sessions on this computer (all of them when ``ids`` is empty;
        else those ids' records, ended ones included) — ListSessions."""
        req = {"ListSessions": {"instance_ids": [i.bytes for i in ids]}}
        return [self._session(v) for v in self._call(req, "Sessions")]

    def get(self, pattern: Optional[str] = None) -> List[SessionInfo]:
        """Sessions whose name matches ``pattern`` (``*``/``?`` wildcards), or all."""
        found = self.sessions()
        if pattern is None:
            return found
        return [s for s in found if fnmatch.fnmatchcase(s.name, pattern)]

    def session(self, ref: SessionRef) -> SessionInfo:
        """One session, by SessionInfo, InstanceId (uuid or its text) or exact name;
        NotFoundError if there is none."""
        if isinstance(ref, SessionInfo):
            ref = ref.instance_id
        if isinstance(ref, str):
            try:
                ref = uuid.UUID(ref)
            except ValueError:
                for s in self.sessions():
                    if s.name == ref:
                        return s
                raise NotFoundError(f"no session named '{ref}' on {self.computer}") from None
        found = self.sessions([ref])
        if not found:
            raise NotFoundError(f"no session {ref} on {self.computer}")
        return found[0]

    def _id(self, ref: SessionRef) -> uuid.UUID:
        if isinstance(ref, SessionInfo):
            return ref.instance_id
        if isinstance(ref, uuid.UUID):
            return ref
        return self.session(ref).instance_id

    def remove_session(self, ref: SessionRef) -> SessionInfo:
        """Ends the session and every process in it (RemoveSession); the record returned
        carries ``closed_reason``."""
        req = {"RemoveSession": {"instance_id": self._id(ref).bytes}}
        return self._session(self._call(req, "Session", timeout=max(self.operation_timeout, 30)))

    def connect_session(self, ref: SessionRef, *, buffering: Optional[str] = None) -> SessionInfo:
        """Attaches the session to this client (Connect); BusyError if another client
        holds it."""
        req = {"Connect": {"instance_id": self._id(ref).bytes, "buffering": buffering}}
        return self._session(self._call(req, "Session"))

    def disconnect_session(self, ref: SessionRef, *, idle_timeout: Optional[float] = None,
                           buffering: Optional[str] = None) -> SessionInfo:
        """Detaches the session (Disconnect): its commands keep running and the idle
        clock starts.  ``idle_timeout`` (seconds) replaces the session's."""
        req = {"Disconnect": {"instance_id": self._id(ref).bytes,
                              "idle_timeout_ms": _ms(idle_timeout), "buffering": buffering}}
        return self._session(self._call(req, "Session"))

    def configurations(self) -> List[ConfigurationInfo]:
        """The server's session configurations this principal may use."""
        return [ConfigurationInfo.parse(v) for v in self._call("ListConfigurations", "Configurations")]

    # --- commands ------------------------------------------------------------------------

    def _invoke(self, ref: SessionRef, script: str, args: Sequence[str], *, kind: str,
                stdin: bool, disconnected: bool, wait: float) -> Any:
        conn = self.connection
        req = {"Invoke": {
            "instance_id": self._id(ref).bytes,
            "script": script,
            "args": [str(a) for a in args],
            "wait_ms": _ms(wait),
            "cancel_timeout_ms": _ms(self.cancel_timeout),
            "disconnected": disconnected,
            "kind": kind,
            "stdin": stdin,
        }}
        rid, q, inp = conn.start(req, with_input=stdin)
        try:
            name, value = conn.get(q, wait + self.operation_timeout)
            if name == "Error":
                raise from_error_body(value.get("error"))
            reply_name, started = codec.variant(value.get("reply")) if name == "Reply" else ("", None)
            if reply_name != "Started" or not isinstance(started, dict):
                raise ProtocolError(f"{self.computer} sent an unexpected answer to Invoke")
        except BaseException:
            # Given up while waiting (a timeout, Ctrl-C): the server must not run it later.
            if not conn.is_closed:
                try:
                    conn.send(codec.withdraw(rid))
                except LingerError:
                    pass
            conn.forget(rid)
            raise
        command_id = codec.as_uuid(started.get("command_id"), "command_id")
        job_id = codec.opt_uuid(started.get("job_id"), "job_id")
        if disconnected or kind == "Job":
            conn.forget(rid)  # nothing more comes for it: the output waits on the server
            return command_id, job_id
        return OutputStream(conn, rid, q, command_id, job_id, inp)

    def invoke(self, ref: SessionRef, script: str, args: Sequence[str] = (), *,
               stdin: StdinSource = None, wait: float = 240.0) -> OutputStream:
        """Runs ``script`` in the session's shell (``args`` as ``$1 $2 …``) and returns the
        stream of its output; iterate it for Output/Finished events.

        ``stdin``: None (the command reads /dev/null), bytes or a binary file (fed in a
        thread, then EOF), or True (write with ``stream.stdin.write()`` and end it with
        ``stream.stdin.close()``).  ``wait``: seconds to wait for a busy session's slot.
        """
        forwarded = stdin is not None and stdin is not False
        stream = self._invoke(ref, script, args, kind="Plain", stdin=forwarded,
                              disconnected=False, wait=wait)
        if forwarded and stdin is not True:
            stream.feed(stdin)
        return stream

    def run(self, ref: SessionRef, script: str, args: Sequence[str] = (), *,
            stdin: StdinSource = None, wait: float = 240.0) -> Result:
        """``invoke`` and read to the end: the command's status, stdout and stderr."""
        return self.invoke(ref, script, args, stdin=stdin, wait=wait).result()

    def invoke_disconnected(self, ref: SessionRef, script: str, args: Sequence[str] = ()) -> uuid.UUID:
        """Starts ``script`` and detaches the session at once (``invoke
        --in-disconnected-session``); returns the command id.  ``receive`` gets its output."""
        command_id, _ = self._invoke(ref, script, args, kind="Plain", stdin=False,
                                     disconnected=True, wait=0)
        return command_id

    def receive(self, ref: SessionRef, *, keep: bool = False,
                buffering: Optional[str] = None) -> OutputStream:
        """Attaches if needed and delivers the output kept in the session, then follows the
        running command to its end (Receive).  With ``keep`` the output stays on the
        server.  ``stream.summary`` says how it ended."""
        conn = self.connection
        req = {"Receive": {"instance_id": self._id(ref).bytes, "keep": keep, "buffering": buffering}}
        rid, q, _ = conn.start(req)
        return OutputStream(conn, rid, q, None)

    # --- jobs ----------------------------------------------------------------------------

    def start_job(self, ref: SessionRef, script: str, args: Sequence[str] = ()) -> uuid.UUID:
        """Runs ``script`` as a job (``invoke --as-job``: kind ``Job``, a Remote job in the
        session's foreground); returns its job id at once.  BusyError if the session runs
        something."""
        _, job_id = self._invoke(ref, script, args, kind="Job", stdin=False,
                                 disconnected=False, wait=0)
        assert job_id is not None
        return job_id

    def start_background_job(self, ref: SessionRef, script: str, args: Sequence[str] = (), *,
                             wait: float = 240.0) -> uuid.UUID:
        """Starts ``script`` as a background job of the session (``linger job start``): it
        inherits the session's state and runs while the session takes other commands."""
        stream = self._invoke(ref, script, args, kind="BackgroundJob", stdin=False,
                              disconnected=False, wait=wait)
        result = stream.result()
        if result.status != 0 or stream.job_id is None:
            raise ProtocolError(f"{self.computer} could not launch the job (status {result.status})")
        return stream.job_id

    def jobs(self, ref: SessionRef) -> List[JobInfo]:
        """Every job record the session holds, oldest first (ListJobs)."""
        req = {"ListJobs": {"instance_id": self._id(ref).bytes}}
        return [JobInfo.parse(v) for v in self._call(req, "Jobs")]

    def job(self, ref: SessionRef, job_id: uuid.UUID) -> JobInfo:
        for j in self.jobs(ref):
            if j.job_id == job_id:
                return j
        raise NotFoundError(f"no job {job_id} in that session")

    def receive_job(
        self, ref: SessionRef, job_id: uuid.UUID, *, keep: bool = False, follow: bool = True
    ) -> OutputStream:
        """A job's output (ReceiveJob): kept output, then (with ``follow``, unless ``keep``) up
        to its end; ``follow=False`` takes what a running job has produced so far and returns
        (PowerShell's Receive-Job)."""
        conn = self.connection
        req = {
            "ReceiveJob": {
                "instance_id": self._id(ref).bytes,
                "job_id": job_id.bytes,
                "keep": keep,
                "follow": follow,
            }
        }
        rid, q, _ = conn.start(req)
        return OutputStream(conn, rid, q, None)

    def stop_job(self, ref: SessionRef, job_id: uuid.UUID) -> Optional[JobInfo]:
        """Stops a running job (StopJob); returns its record as it was before the stop."""
        req = {"StopJob": {"instance_id": self._id(ref).bytes, "job_id": job_id.bytes}}
        found = [JobInfo.parse(v) for v in self._call(req, "Jobs")]
        return found[0] if found else None

    def remove_job(self, ref: SessionRef, job_id: uuid.UUID) -> None:
        """Forgets an ended job (RemoveJob); BusyError while it runs."""
        req = {"RemoveJob": {"instance_id": self._id(ref).bytes, "job_id": job_id.bytes}}
        self._call(req, "Jobs")

    def wait_job(self, ref: SessionRef, job_id: uuid.UUID, *, timeout: Optional[float] = None,
                 poll: float = 0.1) -> JobInfo:
        """Polls ListJobs until the job has ended (as ``linger job wait``)."""
        instance_id = self._id(ref)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            j = self.job(instance_id, job_id)
            if j.ended:
                return j
            if deadline is not None and time.monotonic() > deadline:
                raise LingerTimeoutError(f"job {job_id} did not end within {timeout}s")
            time.sleep(poll)

