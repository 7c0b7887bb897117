"""Test harness shared by the Python client's and the Ansible collection's tests: a
private world of temporary XDG directories, real ``lingerd`` daemons (local socket and
TLS on loopback), SSH keys made with ``ssh-keygen``, a real ``ssh-agent`` when asked, and
a teardown that ends every process it started, by pid.

Modelled on crates/linger-cli/tests/it/common/mod.rs.  The binaries come from
``$LINGER_BIN_DIR`` (default: the workspace's target/debug).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]


def bin_dir() -> Path:
    return Path(os.environ.get("LINGER_BIN_DIR") or REPO / "target" / "debug").resolve()


def lingerd_bin() -> Path:
    p = bin_dir() / "lingerd"
    if not p.is_file():
        raise RuntimeError(f"{p} is missing: build the workspace (cargo build) or set LINGER_BIN_DIR")
    return p


def linger_bin() -> Path:
    return bin_dir() / "linger"


def eventually(what: str, f: Callable[[], bool], timeout: float = 30.0) -> None:
    """Polls ``f`` until it is true (bounds how long a broken build takes to fail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return ") Z " not in stat


def session_members(sid: int) -> List[int]:
    """Every process whose Unix session is ``sid`` (a session host and all it started)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                s = f.read()
            fields = s[s.rindex(")") + 2 :].split()
            if int(fields[3]) == sid:
                out.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Daemon:
    """One lingerd with its own directories: its socket, state and config."""

    def __init__(self, world: "World", name: str):
        self.world = world
        self.name = name
        self.root = world.path(name)
        for sub in ("run", "state", "config/linger", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[str] = None

    @property
    def home(self) -> Path:
        """The HOME of the daemon and so of its sessions (each daemon plays a host)."""
        return self.root / "home"

    @property
    def socket(self) -> Path:
        return self.root / "run/linger/lingerd.sock"

    @property
    def state_dir(self) -> Path:
        return self.root / "state/linger/server"

    @property
    def config_file(self) -> Path:
        return self.root / "config/linger/lingerd.toml"

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update(
            XDG_RUNTIME_DIR=str(self.root / "run"),
            XDG_STATE_HOME=str(self.root / "state"),
            XDG_CONFIG_HOME=str(self.root / "config"),
            LINGER_HOME=str(self.world.path("homeA")),
            HOME=str(self.home),
            LINGERD=str(lingerd_bin()),
        )
        env.pop("SSH_AUTH_SOCK", None)
        return env

    def authorize(self, lines: List[str], extra: str = "") -> None:
        """``[server] authorized_keys`` with these lines (read at every login)."""
        f = self.root / "authorized_keys"
        f.write_text("\n".join(lines) + "\n")
        os.chmod(f, 0o600)
        self.config_file.write_text(f"[server]\nauthorized_keys = {json.dumps(str(f))}\n{extra}")

    def start(self, listen: Optional[str] = None, extra: Tuple[str, ...] = ()) -> Optional[str]:
        """Starts lingerd in the foreground; with ``listen`` (``ADDR:PORT``, port 0 for a
        free one) also on TLS, and returns the address bound (``127.0.0.1:PORT``)."""
        args = [str(lingerd_bin()), "--socket", str(self.socket), "--state-dir", str(self.state_dir)]
        listening = self.state_dir / "listening"
        if listen:
            args += ["--listen", listen]
            try:
                listening.unlink()
            except FileNotFoundError:
                pass
        args += list(extra)
        log = open(self.root / "lingerd.stderr", "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env())
        log.close()
        eventually(f"{self.name}'s socket", self.socket.exists)
        if listen:
            eventually(f"{self.name}'s TLS listener",
                       lambda: listening.exists() and listening.read_text().endswith("\n"))
            self.address = listening.read_text().splitlines()[0]
        return self.address

    def host_pids(self) -> List[int]:
        out = []
        sessions = self.state_dir / "sessions"
        if sessions.is_dir():
            for d in sessions.iterdir():
                try:
                    out.append(int(json.loads((d / "meta.json").read_text())["host_pid"]))
                except (OSError, ValueError, KeyError):
                    continue
        return out

    def session_ids(self) -> List[str]:
        sessions = self.state_dir / "sessions"
        if not sessions.is_dir():
            return []
        out = []
        for d in sessions.iterdir():
            try:
                out.append(uuid.UUID(d.name).hex)
            except ValueError:
                continue
        return out

    def remove_sessions(self) -> None:
        """Removes every session of the daemon's own principal through the protocol (the
        orderly way: the host ends its processes and exits)."""
        if not self.socket.exists() or (self.proc is not None and self.proc.poll() is not None):
            return
        from linger_client import Client, ClientHome

        import threading

        try:
            with Client("localhost", home=ClientHome.at(self.world.path("cleanup")),
                        socket_path=self.socket, autostart=False, operation_timeout=15) as c:
                # In parallel: each removal waits for its host's grace period.
                threads = [threading.Thread(target=_quietly, args=(c.remove_session, s))
                           for s in c.sessions()]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(20)
        except Exception:
            pass

    def stop(self) -> None:
        """SIGTERM and wait (sessions keep running, as with a real daemon restart)."""
        if self.proc is not None:
            kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None

    def teardown(self) -> None:
        self.remove_sessions()
        hosts = self.host_pids()
        ids = self.session_ids()
        for h in hosts:
            for p in session_members(h):
                kill(p, signal.SIGKILL)
        # An autostarted daemon (not our child) is found by its pid file.
        pid_file = self.socket.parent / "lingerd.pid"
        other = None
        try:
            other = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pass
        self.stop()
        if other and alive(other):
            kill(other, signal.SIGTERM)
            eventually("the autostarted lingerd to exit", lambda: not alive(other), timeout=5)
        _remove_cgroups(ids)


def _quietly(f: Callable, *args: object) -> None:
    try:
        f(*args)
    except Exception:
        pass


def _own_cgroups() -> List[Path]:
    out = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            base = Path("/sys/fs/cgroup")
            if controllers == "":
                out.append(base / path.lstrip("/"))
            for c in ("memory", "pids"):
                if c in controllers.split(","):
                    out.append(base / c / path.lstrip("/"))
    except OSError:
        pass
    return out


def _remove_cgroups(ids: List[str]) -> None:
    """Session hosts killed with their daemon leave their control groups behind (the Rust
    harness removes them too)."""
    for base in _own_cgroups():
        for i in ids:
            d = base / f"linger-{i}"
            if d.is_dir():
                try:
                    (d / "cgroup.kill").write_text("1")
                except OSError:
                    pass
                for _ in range(50):
                    try:
                        d.rmdir()
                        break
                    except OSError:
                        time.sleep(0.02)


class World:
    """Temporary directories for a test, its daemons, keys and agents."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lpy", dir="/tmp"))
        for sub in ("homeA", "homeB", "cleanup"):
            (self.dir / sub).mkdir(mode=0o700)
        self.daemons: List[Daemon] = []
        self.agents: List[subprocess.Popen] = []
        self.procs: List[subprocess.Popen] = []

    def path(self, rel: str) -> Path:
        return self.dir / rel

    def daemon(self, name: str = "d1") -> Daemon:
        d = Daemon(self, name)
        self.daemons.append(d)
        return d

    def keygen(self, name: str, passphrase: str = "", kind: str = "ed25519") -> Tuple[Path, str]:
        """A key pair made by ssh-keygen; the private key's path and the public line."""
        key = self.path(name)
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", name, "-f", str(key)],
                       check=True, capture_output=True)
        return key, key.with_suffix(".pub").read_text().strip()

    def start_agent(self) -> str:
        """A real ssh-agent in the foreground on a socket of ours; returns the socket."""
        sock = self.path(f"agent{len(self.agents)}.sock")
        p = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.agents.append(p)
        eventually("ssh-agent's socket", sock.exists)
        return str(sock)

    def ssh_add(self, agent: str, key: Path, passphrase: str = "") -> None:
        """``ssh-add KEY`` into ``agent``; a passphrase is typed by SSH_ASKPASS."""
        env = dict(os.environ, SSH_AUTH_SOCK=agent)
        if passphrase:
            askpass = self.path("askpass.sh")
            askpass.write_text(f"#!/bin/sh\necho {passphrase}\n")
            askpass.chmod(0o700)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        subprocess.run(["ssh-add", str(key)], env=env, check=True, capture_output=True,
                       stdin=subprocess.DEVNULL)

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                kill(p.pid, signal.SIGKILL)
                p.wait()
        for d in self.daemons:
            d.teardown()
        for a in self.agents:
            if a.poll() is None:
                kill(a.pid, signal.SIGTERM)
                a.wait()
        if os.environ.get("LINGER_TEST_KEEP"):
            print(f"kept the test's directory: {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
