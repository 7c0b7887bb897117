"""The client against a real lingerd on its Unix socket: sessions, state shared between
invokes, streamed output, exit codes, standard input, disconnect/receive, jobs, errors."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid

import pytest
from linger_world import eventually

from linger_client import (
    BusyError,
    ClosedError,
    Client,
    ClientHome,
    DetachedError,
    ExistsError,
    Finished,
    InvalidRequestError,
    NotFoundError,
    Output,
    UnreachableError,
)


@pytest.fixture
def daemon(world):
    d = world.daemon()
    d.start()
    return d


def client(world, daemon, home="homeA", **kw) -> Client:
    return Client("localhost", home=ClientHome.at(world.path(home)), socket_path=daemon.socket,
                  autostart=False, **kw)


def test_sessions_new_get_remove(world, daemon):
    with client(world, daemon) as c:
        assert c.welcome.protocol_version == 4
        s = c.new_session("work")
        assert (s.name, s.state, s.availability, s.attachment) == ("work", "Opened", "Available", "you")
        default = c.new_session()
        assert default.name == "Session1"
        assert c.new_session().name == "Session2"
        names = [x.name for x in c.sessions()]
        assert names == ["work", "Session1", "Session2"]
        assert [x.name for x in c.get("Session*")] == ["Session1", "Session2"]
        assert c.session("work").instance_id == s.instance_id
        assert c.session(str(s.instance_id)).name == "work"
        gone = c.remove_session("work")
        assert gone.closed_reason == "it was removed" and gone.state == "Closed"
        assert [x.name for x in c.sessions()] == ["Session1", "Session2"]
        with pytest.raises(NotFoundError):
            c.session("work")
        # The session's processes are gone with it.
        assert len(daemon.host_pids()) == 2


def test_a_session_gets_the_clients_locale_and_terminal_and_nothing_else(world, daemon, monkeypatch):
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setenv("LC_TIME", "C")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("LD_PRELOAD", "")
    monkeypatch.setenv("FOO_CLIENT", "x")
    with client(world, daemon) as c:
        env = c.run(c.new_session("env"), "env").text().splitlines()
        assert {"LANG=de_DE.UTF-8", "LC_TIME=C", "TERM=xterm-256color"} <= set(env), env
        assert not [line for line in env if line.startswith(("LD_PRELOAD=", "FOO_CLIENT="))], env
        chosen = c.run(c.new_session("chosen", environment={"LANG": "C.UTF-8", "BASH_ENV": "/tmp/x"}),
                       "env").text().splitlines()
        assert "LANG=C.UTF-8" in chosen and not [x for x in chosen if x.startswith(("BASH_ENV=", "TERM="))], chosen


def test_state_is_shared_between_invokes(world, daemon):
    with client(world, daemon) as c:
        s = c.new_session("st")
        assert c.run(s, "cd /tmp && export GREETING=hello; counter=41; f() { echo \"f:$1\"; }").status == 0
        r = c.run(s, 'counter=$((counter+1)); echo "$PWD $GREETING $counter"; f "$1"; bash -c \'echo "child:$GREETING"\'', ["x y"])
        assert r.stdout == b"/tmp hello 42\nf:x y\nchild:hello\n"
        assert r.status == 0
    # A new connection, even a new client object, finds the same shell.
    with client(world, daemon) as c2:
        assert c2.run("st", "echo $counter").stdout == b"42\n"


def test_exit_codes_and_the_session_survives(world, daemon):
    with client(world, daemon) as c:
        s = c.new_session("codes")
        assert c.run(s, "true").status == 0
        assert c.run(s, "false").status == 1
        assert c.run(s, "exit 42").status == 42
        assert c.run(s, "set -e; false; echo never").status == 1
        r = c.run(s, "nosuchcommand_xyz")
        assert r.status == 127 and b"nosuchcommand_xyz: command not found" in r.stderr
        assert c.run(s, "echo still here").stdout == b"still here\n"
        # Only the shell exiting ends the session: it then shows Closed.
        r = c.run(s, "builtin exit 9")
        assert r.status == 9
        eventually("the session to show Closed", lambda: c.session(s).state == "Closed")
        assert "exited with status 9" in c.session(s).closed_reason
        with pytest.raises(ClosedError):
            c.run(s, "true")


def test_output_streams_in_order_while_the_command_runs(world, daemon):
    go = world.path("go")
    with client(world, daemon) as c:
        s = c.new_session("stream")
        script = ('echo first; sleep 0.2; echo err1 >&2; while [ ! -e "$1" ]; do sleep 0.02; done; '
                  'for i in $(seq 1 2000); do echo "line $i"; done; sleep 0.2; echo err2 >&2; exit 7')
        stream = c.invoke(s, script, [str(go)])
        events = iter(stream)
        first = next(events)
        assert isinstance(first, Output) and (first.stream, first.data) == ("stdout", b"first\n")
        second = next(events)
        assert (second.stream, second.data) == ("stderr", b"err1\n")
        # The command is still running (it waits for the file): output arrived as produced.
        assert stream.status is None
        go.touch()
        out, err, finished = bytearray(), bytearray(), []
        for ev in events:
            if isinstance(ev, Output):
                (out if ev.stream == "stdout" else err).extend(ev.data)
            elif isinstance(ev, Finished):
                finished.append(ev)
        assert out.decode() == "".join(f"line {i}\n" for i in range(1, 2001))
        assert err == b"err2\n"
        assert [f.status for f in finished] == [7] and stream.status == 7
        assert finished[0].command_id == stream.command_id


def test_stdin_is_forwarded_binary_safe_and_ends(world, daemon):
    data = os.urandom(6 * 1024 * 1024 + 123)  # beyond the 4 MiB input window
    with client(world, daemon) as c:
        s = c.new_session("in")
        r = c.run(s, "sha256sum", stdin=data)
        assert r.stdout.decode().split()[0] == hashlib.sha256(data).hexdigest()
        assert c.run(s, 'read -r x; echo "got:$x"', stdin=b"hi\nrest\n").stdout == b"got:hi\n"
        # A command that stops reading early does not leave the writer hanging.
        r = c.run(s, "head -c 10 | wc -c", stdin=data)
        assert r.stdout.strip() == b"10"
        # Interactive: write, read the answer, write again, then end the input.
        stream = c.invoke(s, 'while read -r l; do echo "[$l]"; done; echo eof', stdin=True)
        stream.stdin.write(b"one\n")
        ev = next(iter(stream))
        assert ev.data == b"[one]\n"
        stream.stdin.write(b"two\n")
        stream.stdin.close()
        assert stream.result().stdout == b"[two]\neof\n"
        # Without stdin the command reads /dev/null.
        assert c.run(s, "cat; echo done").stdout == b"done\n"


def test_disconnect_then_another_client_receives_what_was_produced(world, daemon):
    flag = world.path("flag")
    with client(world, daemon) as a:
        s = a.new_session("dis")
        a.run(s, "x=kept")
        cid = a.invoke_disconnected(s, f'echo one; while [ ! -e {flag} ]; do sleep 0.02; done; echo two; exit 5')
        info = a.session(s)
        assert (info.state, info.availability) == ("Disconnected", "None")
        assert info.expires_at_ms is not None
        eventually("the running command to show", lambda: a.session(s).running_command is not None)
    flag.touch()
    time.sleep(0.3)  # "two" is produced while nobody is attached
    with client(world, daemon, home="homeB") as b:
        stream = b.receive("dis")
        events = list(stream)
        outs = b"".join(e.data for e in events if isinstance(e, Output))
        assert outs == b"one\ntwo\n"
        assert [(e.command_id, e.status) for e in events if isinstance(e, Finished)] == [(cid, 5)]
        assert stream.summary.commands_finished == 1
        # Delivered exactly once: nothing is left for the next receiver.
        again = b.receive("dis")
        assert list(again) == [] and again.summary.commands_finished == 0
        # The session is attached to B now, its state intact; A is refused while B holds it.
        assert b.session("dis").state == "Opened"
        assert b.run("dis", "echo $x").stdout == b"kept\n"
    with client(world, daemon) as a:
        with pytest.raises(BusyError) as e:
            a.run("dis", "true", wait=0)
        assert "attached to another client" in str(e.value)


def test_a_disconnect_interrupts_the_invoke_and_receive_gets_the_rest(world, daemon):
    flag = world.path("flag2")
    with client(world, daemon) as a:
        s = a.new_session("mid")
        stream = a.invoke(s, f"echo a; while [ ! -e {flag} ]; do sleep 0.02; done; echo b")
        first = next(iter(stream))
        assert first.data == b"a\n"
        # Another connection of the same client disconnects the session.
        with client(world, daemon) as a2:
            info = a2.disconnect_session(s, idle_timeout=3600)
            assert info.attachment == "none" and info.idle_timeout_ms == 3600_000
        with pytest.raises(DetachedError):
            list(stream)
        flag.touch()
        rest = a.receive(s)
        assert b"".join(e.data for e in rest if isinstance(e, Output)) == b"b\n"
        assert rest.last_status == 0
        connected = a.connect_session(s)
        assert connected.state == "Opened"


def test_background_and_remote_jobs(world, daemon):
    with client(world, daemon) as c:
        s = c.new_session("jobs")
        c.run(s, "n=7")
        job = c.start_background_job(s, 'echo "n=$n"; sleep 0.3; echo oops >&2; exit 4')
        listed = c.jobs(s)
        assert [j.job_id for j in listed] == [job] and listed[0].kind == "Background"
        # The session takes other commands while the job runs.
        assert c.run(s, "echo meanwhile").stdout == b"meanwhile\n"
        stream = c.receive_job(s, job)
        events = list(stream)
        assert [(e.stream, e.data) for e in events if isinstance(e, Output)] == [("stdout", b"n=7\n"), ("stderr", b"oops\n")]
        assert stream.last_status == 4
        info = c.wait_job(s, job, timeout=10)
        assert (info.state, info.status) == ("Failed", 4)
        c.remove_job(s, job)
        assert c.jobs(s) == []
        # Without follow, a running job's output so far, at once; the rest stays for later.
        partial = c.start_job(s, "echo first; sleep 30; echo never")
        deadline = time.monotonic() + 10
        while c.job(s, partial).pending_output_bytes == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        got = b"".join(e.data for e in c.receive_job(s, partial, follow=False) if isinstance(e, Output))
        assert got == b"first\n"
        assert c.job(s, partial).has_more_data, "a running job may still produce more"
        c.stop_job(s, partial)
        c.wait_job(s, partial, timeout=15)
        c.remove_job(s, partial)
        # A Remote job holds the session's slot; stop it, then its record says Stopped.
        remote = c.start_job(s, "sleep 30")
        with pytest.raises(BusyError):
            c.remove_job(s, remote)
        before = c.stop_job(s, remote)
        assert before is not None and before.job_id == remote
        stopped = c.wait_job(s, remote, timeout=15)
        assert (stopped.kind, stopped.state, stopped.status) == ("Remote", "Stopped", 130)
        c.remove_job(s, remote)
        with pytest.raises(NotFoundError):
            c.stop_job(s, uuid.uuid4())


def test_server_errors_map_to_typed_exceptions(world, daemon):
    with client(world, daemon) as c:
        c.new_session("taken")
        with pytest.raises(ExistsError) as e:
            c.new_session("taken")
        assert e.value.kind == "exists" and "already exists" in str(e.value)
        with pytest.raises(InvalidRequestError):
            c.new_session("has space")
        with pytest.raises(InvalidRequestError) as e:
            c.new_session("short", idle_timeout=1)
        assert "60" in str(e.value) or "1m" in str(e.value)
        with pytest.raises(NotFoundError) as e:
            c.remove_session(uuid.uuid4())
        assert e.value.from_server and e.value.exit_code == 3
        with pytest.raises(NotFoundError):
            c.new_session("x", configuration="nonexistent")
        with pytest.raises(InvalidRequestError):
            c.run("taken", "echo \0")  # a NUL byte cannot reach bash
        # One command at a time: a second invoke with no wait is refused as busy.
        s = c.session("taken")
        stream = c.invoke(s, "sleep 1")
        with client(world, daemon) as c2:
            with pytest.raises(BusyError) as e:
                c2.run(s, "true", wait=0)
            assert e.value.exit_code == 4
        assert stream.result().status == 0


def test_client_identity_and_paths_follow_the_environment(world, monkeypatch):
    """Without explicit paths the client finds the daemon as the CLI does (XDG_RUNTIME_DIR)
    and, autostart on, starts one; its identity is kept in LINGER_HOME/client_id."""
    d = world.daemon("auto")
    env = d.env()
    for k in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "LINGER_HOME", "HOME", "LINGERD"):
        monkeypatch.setenv(k, env[k])
    with Client() as c:
        assert c.socket_path == d.socket
        s = c.new_session("auto")
        assert c.run(s, "echo up").stdout == b"up\n"
        first_id = c.client_id
    assert (world.path("homeA") / "client_id").read_text().strip() == str(first_id)
    assert (d.socket.parent / "lingerd.pid").exists()
    with Client() as again:
        assert again.client_id == first_id
        assert again.session("auto").attachment == "you"  # the same client, still attached


def test_clients_starting_at_once_on_a_fresh_home_share_one_identity(world):
    """Ansible forks a worker per host at once on a fresh controller: they must all be one
    client, or a session attached by one is held against the next task's worker."""
    import subprocess
    import sys

    from linger_client import ClientHome

    for round in range(5):
        home = world.path(f"race{round}")
        code = ("import sys, time; from linger_client import ClientHome; "
                "h = ClientHome.at(sys.argv[1]); time.sleep(max(0, float(sys.argv[2]) - time.time())); "
                "print(h.client_id())")
        start = time.time() + 0.5
        procs = [subprocess.Popen([sys.executable, "-c", code, str(home), str(start)],
                                  stdout=subprocess.PIPE, text=True) for _ in range(6)]
        ids = {p.communicate(timeout=60)[0].strip() for p in procs}
        assert len(ids) == 1, ids
        assert str(ClientHome.at(home).client_id()) in ids
        assert [f.name for f in home.iterdir()] == ["client_id"]  # no temporary file left


def test_an_untrusted_socket_directory_is_refused(world, daemon):
    os.chmod(daemon.socket.parent, 0o777)
    try:
        with pytest.raises(UnreachableError) as e:
            client(world, daemon).sessions()
        assert "mode 777" in str(e.value)
    finally:
        os.chmod(daemon.socket.parent, 0o700)


def test_no_daemon_without_autostart(world):
    sock = world.path("nowhere/lingerd.sock")
    with pytest.raises(UnreachableError) as e:
        Client("localhost", home=ClientHome.at(world.path("homeA")), socket_path=sock,
               autostart=False).sessions()
    assert "no daemon listens" in str(e.value)


def test_many_threads_share_one_client(world, daemon):
    with client(world, daemon) as c:
        sessions = [c.new_session(f"t{i}") for i in range(4)]
        results = {}

        def work(s):
            results[s.name] = [c.run(s, f"echo {s.name}-{k}").stdout for k in range(5)]

        threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for s in sessions:
            assert results[s.name] == [f"{s.name}-{k}\n".encode() for k in range(5)]


def test_heartbeats_keep_an_open_connection_attached(world):
    """With the daemon's heartbeat shortened, the client's Pings keep a quiet connection's
    attachment alive; once the client is gone the heartbeat timeout drops it (§11.5)."""
    d = world.daemon("hb")
    d.config_file.write_text('[server]\nheartbeat_interval = "300ms"\nheartbeat_timeout = "1s"\n')
    d.start()
    with client(world, d) as c:
        assert c.welcome.heartbeat_interval_ms == 300
        s = c.new_session("hb")
        # A command quiet for longer than the timeout, followed over the open connection.
        r = c.run(s, "sleep 2.5; echo done")
        assert (r.status, r.stdout) == (0, b"done\n")
        time.sleep(2)  # idle, connection open: still attached
        assert c.session(s).attachment == "you"
    with client(world, d, home="homeB") as other:
        eventually("the attachment to be dropped", lambda: other.session("hb").attachment == "none")


def ended_with_output(c, s):
    """The session holds output and runs nothing: a disconnected command has ended (right
    after it was started, the status may not show it running yet)."""
    info = c.session(s)
    return info.running_command is None and info.pending_output_bytes > 0


def test_an_invoke_first_delivers_what_nobody_received(world, daemon):
    with client(world, daemon) as c:
        s = c.new_session("early")
        first = c.invoke_disconnected(s, "echo early; exit 2")
        eventually("the disconnected command to end", lambda: ended_with_output(c, s))
        r = c.run(s, "echo now")
        assert (r.status, r.stdout) == (0, b"now\n")
        assert [(type(e).__name__, getattr(e, "data", None) or getattr(e, "status", None)) for e in r.earlier] == [
            ("Output", b"early\n"), ("Finished", 2)]
        assert all(e.command_id == first for e in r.earlier)


def test_drop_buffering_reports_what_was_discarded(world, daemon):
    with client(world, daemon) as c:
        s = c.new_session("lossy", buffering="drop")
        assert s.output_buffering_mode == "drop"
        c.invoke_disconnected(s, "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo end")
        eventually("the command to end", lambda: ended_with_output(c, s))
        r = c.receive(s).result()
        assert r.dropped_bytes > 0 and r.stdout.endswith(b"\nend\n")
        assert len(r.stdout) + r.dropped_bytes == 3000005
