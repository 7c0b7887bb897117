"""Fixtures for the collection's tests: three lingerd TLS daemons on loopback, each with
its own directories and HOME (three "hosts"), an inventory and an ansible.cfg that point
ansible-core at this collection, and a teardown that ends every process by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python" / "testsupport"))

from linger_world import World, kill  # noqa: E402

COLLECTIONS = REPO / "ansible"
HOSTS = {"h1": "127.0.0.2", "h2": "127.0.0.3", "h3": "127.0.0.4"}


def target_python() -> str:
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


class Fleet:
    """Three daemons and the controller's files."""

    def __init__(self, world: World):
        self.world = world
        self.key, pub = world.keygen("controller")
        self.daemons = {}
        for name, addr in HOSTS.items():
            d = world.daemon(name)
            d.authorize([pub])
            d.start(listen=f"{addr}:0")
            self.daemons[name] = d
        self.dir = world.path("playbooks")
        self.dir.mkdir()
        self.inventory = self.dir / "inventory.yml"
        self.write_inventory()
        (self.dir / "ansible.cfg").write_text(
            "[defaults]\n"
            f"collections_path = {COLLECTIONS}\n"
            "host_key_checking = False\n"
                        "forks = 5\n"
            f"local_tmp = {self.dir}/ansible-local\n"
            "retry_files_enabled = False\n"
            "stdout_callback = default\n"
        )

    def write_inventory(self, session: str = "") -> None:
        lines = ["all:", "  hosts:"]
        for name, d in self.daemons.items():
            host, port = d.address.rsplit(":", 1)
            lines += [f"    {name}:", f"      ansible_host: {host}", f"      ansible_linger_port: {port}"]
            if name == "h3":
                lines.append("      ansible_pipelining: true")
        lines += [
            "  vars:",
            "    ansible_connection: linger.linger.linger",
            f"    ansible_linger_identity: {self.key}",
            "    ansible_linger_host_key_checking: accept-new",
            f"    ansible_linger_home: {self.world.path('homeA')}",
            # The "hosts" are this machine: its system Python runs the modules.
            f"    ansible_python_interpreter: {target_python()}",
        ]
        if session:
            lines.append(f"    ansible_linger_session: {session}")
        self.inventory.write_text("\n".join(lines) + "\n")

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update(
            ANSIBLE_CONFIG=str(self.dir / "ansible.cfg"),
            HOME=str(self.dir),
            LINGER_HOME=str(self.world.path("homeA")),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
        )
        env.pop("SSH_AUTH_SOCK", None)
        return env

    def playbook_cmd(self, playbook: Path, *extra: str) -> List[str]:
        exe = Path(sys.executable).with_name("ansible-playbook")
        return [str(exe), "-i", str(self.inventory), str(playbook), *extra]

    def run(self, playbook: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
        """Runs ansible-playbook to its end (in its own process group, killed on timeout)."""
        p = subprocess.Popen(self.playbook_cmd(playbook, *extra), cwd=self.dir, env=self.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        self.world.procs.append(p)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
            raise AssertionError(f"ansible-playbook timed out:\n{out}")
        return subprocess.CompletedProcess(p.args, p.returncode, out, "")

    def start(self, playbook: Path, *extra: str) -> subprocess.Popen:
        """Starts ansible-playbook in its own process group (so it and its forked workers
        can be killed as the controller dying would)."""
        log = open(self.dir / f"{playbook.stem}.log", "w")
        p = subprocess.Popen(self.playbook_cmd(playbook, *extra), cwd=self.dir, env=self.env(),
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.world.procs.append(p)
        return p

    def kill_group(self, p: subprocess.Popen) -> None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


@pytest.fixture
def world():
    w = World()
    try:
        yield w
    finally:
        # Controller processes first (their whole process groups), then the daemons.
        for p in w.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                kill(p.pid, signal.SIGKILL)
            p.wait()
        w.procs.clear()
        w.teardown()


@pytest.fixture
def fleet(world):
    return Fleet(world)
