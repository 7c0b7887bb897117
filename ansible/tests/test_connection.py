"""ansible-core (the real one, from PyPI) running playbooks over the linger connection
against three lingerd TLS daemons on loopback addresses."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import time
from pathlib import Path

from linger_client import Client, ClientHome
from linger_world import eventually

FILES = Path(__file__).resolve().parent / "files"


def setup_playbooks(fleet) -> bytes:
    """Copies the playbooks next to the inventory with a binary blob holding every byte."""
    for f in ("main.yml", "long.yml", "resume.yml"):
        shutil.copy(FILES / f, fleet.dir / f)
    (fleet.dir / "files").mkdir()
    (fleet.dir / "templates").mkdir()
    shutil.copy(FILES / "greeting.j2", fleet.dir / "templates/greeting.j2")
    blob = (bytes(range(256)) * 300 + os.urandom(70000))[:70000]
    (fleet.dir / "files/blob.bin").write_bytes(blob)
    (fleet.dir / "files/blob.sha256").write_text(hashlib.sha256(blob).hexdigest())
    return blob


def recap(output: str) -> dict:
    """``{host: {ok: N, changed: N, failed: N, unreachable: N}}`` from PLAY RECAP."""
    out = {}
    for m in re.finditer(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output, re.M):
        out[m.group(1)] = {"ok": int(m.group(2)), "changed": int(m.group(3)),
                           "unreachable": int(m.group(4)), "failed": int(m.group(5))}
    return out


def client_for(fleet, name: str) -> Client:
    return Client(fleet.daemons[name].address, home=ClientHome.at(fleet.world.path("homeA")),
                  identity_file=fleet.key, host_key_checking="strict")


def test_a_playbook_runs_over_linger_on_three_hosts(fleet):
    blob = setup_playbooks(fleet)
    r = fleet.run(fleet.dir / "main.yml", "-vvv")
    assert r.returncode == 0, r.stdout
    # h3 pipelines its modules (sent on the command's stdin); h1 uploads each one first.
    # (Ansible does not pipeline the become task, so h3 uploads that one.)
    def uploads(name):
        addr = re.escape(fleet.daemons[name].address)
        return re.findall(rf"<tls://{addr}> PUT \S+ TO \S+(AnsiballZ_\w+)", r.stdout)

    assert len(uploads("h1")) >= 12, uploads("h1")
    assert uploads("h3") == ["AnsiballZ_command"], uploads("h3")
    assert re.search(rf"<tls://{re.escape(fleet.daemons['h3'].address)}> EXEC /bin/sh -c '\S*python3 && sleep 0'", r.stdout)
    summary = recap(r.stdout)
    assert set(summary) == {"h1", "h2", "h3"}, r.stdout
    for host, counts in summary.items():
        assert counts["failed"] == 0 and counts["unreachable"] == 0, r.stdout
        assert counts["ok"] == 18, (host, r.stdout)  # facts + 17 tasks
    for name, d in fleet.daemons.items():
        work = d.home / "work"
        # The files are on each host, intact, with their modes.
        assert (work / "blob.bin").read_bytes() == blob
        assert (work / "hello.txt").read_text() == f"hello {name}\n"
        assert stat.S_IMODE((work / "hello.txt").stat().st_mode) == 0o640
        assert stat.S_IMODE((work / "dir").stat().st_mode) == 0o750
        assert (work / "dir/touched").exists()
        assert (work / "rendered.txt").read_text() == f"Hello from {name} (Linux)\n"
        assert (fleet.dir / f"fetched/{name}.bin").read_bytes() == blob
        assert not list(work.glob("*.linger-tmp*"))
        # One persistent session per host, kept after the play with its state.
        with client_for(fleet, name) as c:
            sessions = c.sessions()
            assert [s.name for s in sessions] == [f"ansible-{name}"]
            assert c.run(sessions[0], 'echo "$LINGER_TEST_VAR $PWD"').text() == f"set-by-raw-{name} {work}\n"
        # The controller pinned each daemon in the client's known_hosts.
    pins = (fleet.world.path("homeA") / "known_hosts").read_text().splitlines()
    assert sorted(p.split()[0] for p in pins) == sorted(f"[{d.address.rsplit(':', 1)[0]}]:{d.address.rsplit(':', 1)[1]}"
                                                        for d in fleet.daemons.values())


def test_a_long_task_survives_the_controller_being_killed(fleet):
    setup_playbooks(fleet)
    fleet.write_inventory(session="survivor")
    p = fleet.start(fleet.dir / "long.yml", "-vvv")
    homes = [d.home for d in fleet.daemons.values()]
    log = fleet.dir / "long.log"

    def started() -> bool:
        if p.poll() is not None:
            raise AssertionError(f"ansible-playbook ended (status {p.returncode}) before the long task "
                                 f"started everywhere:\n{log.read_text()}")
        return all((h / "long.started").exists() for h in homes)

    try:
        eventually("the long task to start on every host", started, timeout=120)
    except AssertionError as e:
        if p.poll() is None:
            fleet.kill_group(p)
            raise AssertionError(f"{e}; started on {[str(h) for h in homes if (h / 'long.started').exists()]}; "
                                 f"ansible-playbook printed:\n{log.read_text()}") from None
        raise
    fleet.kill_group(p)  # ansible-playbook and its workers, as if the controller died
    killed_at = time.monotonic()
    assert not any((h / "long.done").exists() for h in homes), "the task ended before the kill"
    # The command goes on without its controller; the session is disconnected meanwhile.
    with client_for(fleet, "h1") as c:
        s = c.session("survivor")
        assert s.running_command is not None and "sleep 6" in s.running_command
    r = fleet.run(fleet.dir / "resume.yml")
    assert r.returncode == 0, r.stdout
    assert all(v["failed"] == 0 and v["unreachable"] == 0 for v in recap(r.stdout).values()), r.stdout
    assert all((h / "long.done").exists() for h in homes)
    assert time.monotonic() - killed_at < 120
    for name in fleet.daemons:
        with client_for(fleet, name) as c:
            assert [s.name for s in c.sessions()] == ["survivor"]


def test_reset_connection_starts_a_new_session_and_unreachable_is_reported(fleet):
    setup_playbooks(fleet)
    play = fleet.dir / "reset.yml"
    play.write_text(
        "- hosts: h1\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.raw: export KEEP=1\n"
        "    - ansible.builtin.meta: reset_connection\n"
        "    - ansible.builtin.raw: echo \"keep=${KEEP:-gone}\"\n      register: after\n"
        "    - ansible.builtin.assert:\n        that: after.stdout | trim == 'keep=gone'\n"
        "    - ansible.builtin.command: id -un\n      become: true\n      become_method: su\n"
        "      vars:\n        ansible_become_password: secret\n      register: pw\n      ignore_errors: true\n"
        "    - ansible.builtin.assert:\n        that:\n          - pw is failed\n"
        "          - \"'su reads its password from a terminal' in pw.msg\"\n"
    )
    r = fleet.run(play)
    assert r.returncode == 0, r.stdout
    # A host whose daemon is gone is unreachable, with linger's reason.
    fleet.daemons["h2"].stop()
    play2 = fleet.dir / "ping.yml"
    play2.write_text("- hosts: h2\n  gather_facts: false\n  tasks:\n    - ansible.builtin.raw: 'true'\n")
    r = fleet.run(play2)
    assert r.returncode == 4, r.stdout
    assert "UNREACHABLE" in r.stdout and "cannot connect to port" in r.stdout
