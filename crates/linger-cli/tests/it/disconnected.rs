//! Disconnected sessions (SPEC §3, §6, §8, §9; seed 004): attachment across clients,
//! disconnect / connect / receive, the three buffering policies, idle timeout, heartbeat
//! timeout, and survival of daemon restarts. Two client homes play two machines.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{alive, eventually, kill, ok_as, run_as, stderr, stdout, World};
use nix::sys::signal::Signal;

/// The table's data rows, each split into its columns.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// (Id, State, Availability) of the one row named `name`.
fn row(table: &str, name: &str) -> (String, String, String) {
    let r = rows(table)
        .into_iter()
        .find(|r| r.get(1).map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{table}"));
    (r[0].clone(), r[3].clone(), r[5].clone())
}

fn session_json(w: &World, home: &str, sel: &str) -> serde_json::Value {
    let out = ok_as(w, home, &["get", sel, "--json"]);
    let first = out.lines().next().expect("a session line");
    serde_json::from_str(first).expect("JSON")
}

/// The seed's two-window example ("State and Availability properties"), step by step.
#[test]
fn seed_004_two_windows_state_and_availability() {
    let w = World::new();
    // Session 1
    let t = ok_as(&w, "homeA", &["new", "localhost", "--name", "Test"]);
    assert_eq!(
        row(&t, "Test"),
        ("1".into(), "Opened".into(), "Available".into()),
        "{t}"
    );
    // Session 2
    let t = ok_as(
        &w,
        "homeB",
        &["get", "--computer", "localhost", "--name", "Test"],
    );
    assert_eq!(
        row(&t, "Test"),
        ("1".into(), "Disconnected".into(), "Busy".into()),
        "{t}"
    );
    // A Busy session cannot be connected: the reason is named.
    let o = run_as(
        &w,
        "homeB",
        &["connect", "--computer", "localhost", "--name", "Test"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("attached to another client"),
        "{}",
        stderr(&o)
    );
    // Session 1
    let t = ok_as(&w, "homeA", &["disconnect", "Test"]);
    assert_eq!(
        row(&t, "Test"),
        ("1".into(), "Disconnected".into(), "None".into()),
        "{t}"
    );
    // Session 2
    let t = ok_as(&w, "homeB", &["get", "--computer", "localhost"]);
    assert_eq!(
        row(&t, "Test"),
        ("1".into(), "Disconnected".into(), "None".into()),
        "{t}"
    );
    // --idle-timeout is refused at connect, with the reason.
    let o = run_as(&w, "homeB", &["connect", "Test", "--idle-timeout", "1h"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--idle-timeout cannot be changed"),
        "{}",
        stderr(&o)
    );
    // Session 2
    let t = ok_as(
        &w,
        "homeB",
        &["connect", "--computer", "localhost", "--name", "Test"],
    );
    assert_eq!(
        row(&t, "Test"),
        ("1".into(), "Opened".into(), "Available".into()),
        "{t}"
    );
    // Session 1
    let t = ok_as(&w, "homeA", &["get", "--computer", "localhost"]);
    assert_eq!(
        row(&t, "Test"),
        ("1".into(), "Disconnected".into(), "Busy".into()),
        "{t}"
    );
    // And the JSON says the same, with the disconnect times cleared while attached.
    let j = session_json(&w, "homeB", "Test");
    assert_eq!(j["state"], "Opened");
    assert!(
        j["disconnected_at"].is_null() && j["expires_at"].is_null(),
        "{j}"
    );
    // Session 1 cannot run commands in it, and is told why.
    let o = run_as(
        &w,
        "homeA",
        &["invoke", "Test", "--wait", "1s", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("attached to another client"),
        "{}",
        stderr(&o)
    );
    // Session 2 can, sharing the state session 1 left.
    ok_as(&w, "homeB", &["invoke", "Test", "--", "cd /tmp"]);
    assert_eq!(
        ok_as(&w, "homeB", &["invoke", "Test", "--", "pwd"]),
        "/tmp\n"
    );
}

/// `invoke --in-disconnected-session` returns at once; another client receives everything,
/// stdout and stderr apart, with the command's status, exactly once.
#[test]
fn in_disconnected_session_then_receive_elsewhere() {
    let w = World::new();
    let script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; sleep 0.05; done; exit 7";
    let t = ok_as(
        &w,
        "homeA",
        &[
            "invoke",
            "--computer",
            "localhost",
            "--in-disconnected-session",
            "--name",
            "bg",
            "--",
            script,
        ],
    );
    assert_eq!(row(&t, "bg").1, "Disconnected", "{t}");
    assert_eq!(row(&t, "bg").2, "None", "{t}");

    let o = run_as(
        &w,
        "homeB",
        &["receive", "--computer", "localhost", "--name", "bg"],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(stdout(&o), "out1\nout2\nout3\nout4\nout5\n");
    assert_eq!(stderr(&o), "err1\nerr2\nerr3\nerr4\nerr5\n");
    // Delivered output is gone from the server.
    let again = run_as(&w, "homeB", &["receive", "bg"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(stdout(&again), "");
    // receive connected B; A sees it Busy.
    assert_eq!(row(&ok_as(&w, "homeB", &["get", "bg"]), "bg").1, "Opened");
    assert_eq!(
        row(&ok_as(&w, "homeA", &["get", "bg"]), "bg"),
        ("1".into(), "Disconnected".into(), "Busy".into())
    );
    // The ad hoc session was kept, and --in-disconnected-session needs --computer.
    let o = run_as(
        &w,
        "homeB",
        &["invoke", "bg", "--in-disconnected-session", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `receive --keep` leaves the output on the server; the next receive gets it again.
#[test]
fn receive_keep_leaves_the_output() {
    let w = World::new();
    ok_as(
        &w,
        "homeA",
        &[
            "invoke",
            "--computer",
            "localhost",
            "--in-disconnected-session",
            "--name",
            "k",
            "--",
            "echo one; echo two",
        ],
    );
    eventually("the command to end", || {
        session_json(&w, "homeA", "k")["running_command"].is_null()
    });
    let first = run_as(&w, "homeA", &["receive", "k", "--keep"]);
    assert_eq!(stdout(&first), "one\ntwo\n", "{}", stderr(&first));
    let second = run_as(&w, "homeA", &["receive", "k"]);
    assert_eq!(stdout(&second), "one\ntwo\n", "{}", stderr(&second));
    let third = run_as(&w, "homeA", &["receive", "k"]);
    assert_eq!(stdout(&third), "");
}

/// `disconnect` from another process of the same client while a command streams: the
/// streaming invoke says so and ends; the command keeps running; another client receives
/// the rest, and nothing is delivered twice.
#[test]
fn disconnect_while_a_command_runs() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "long"]);
    let script = "echo first; while [ ! -e \"$HOME/go\" ]; do sleep 0.02; done; for i in 1 2 3; do echo line$i; done; exit 4";
    let mut child = w
        .linger_as("homeA", &["invoke", "long", "--", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn invoke");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    assert_eq!(line, "first\n");
    let t = ok_as(&w, "homeA", &["disconnect", "long"]);
    assert_eq!(row(&t, "long").1, "Disconnected", "{t}");
    let status = child.wait().expect("invoke ends");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("was disconnected") && err.contains("linger receive"),
        "{err}"
    );
    // The command is still running, unattached.
    let j = session_json(&w, "homeA", "long");
    assert_eq!(j["availability"], "None");
    assert!(j["running_command"].is_string(), "{j}");
    std::fs::write(w.dir.path().join("go"), "").expect("go file");
    let o = run_as(
        &w,
        "homeB",
        &["receive", "--computer", "localhost", "--name", "long"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "line1\nline2\nline3\n",
        "`first` was delivered once, to A"
    );
}

/// A client killed during a command leaves it running and the session Disconnected.
#[test]
fn a_client_that_dies_leaves_the_session_disconnected() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "d"]);
    let script =
        "echo started; while [ ! -e \"$HOME/go\" ]; do sleep 0.02; done; echo after; exit 5";
    let mut child = w
        .linger_as("homeA", &["invoke", "d", "--", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn invoke");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    assert_eq!(line, "started\n");
    kill(child.id() as i32, Signal::SIGKILL);
    let _ = child.wait();
    eventually("the session to be left Disconnected", || {
        let j = session_json(&w, "homeA", "d");
        j["state"] == "Disconnected" && j["availability"] == "None"
    });
    assert!(session_json(&w, "homeA", "d")["running_command"].is_string());
    std::fs::write(w.dir.path().join("go"), "").expect("go file");
    let o = run_as(&w, "homeA", &["receive", "d"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stdout(&o).ends_with("after\n"), "{}", stdout(&o));
    assert!(w.daemon_log().contains("went away"), "the daemon logs why");
}

const SMALL_BUFFER: &str = "[server]\nmin_idle_timeout = \"1s\"\n[[configuration]]\nname = \"default\"\noutput_buffer_size = \"64KiB\"\nspool_limit = \"64MiB\"\n";

/// Bytes `seq 1 N` prints.
fn seq_bytes(n: u64) -> u64 {
    (1..=n).map(|i| i.to_string().len() as u64 + 1).sum()
}

fn expected_seq(n: u64) -> String {
    let mut s = String::with_capacity(seq_bytes(n) as usize);
    for i in 1..=n {
        s.push_str(&i.to_string());
        s.push('\n');
    }
    s
}

const LINES: u64 = 2_000_000;

fn start_flood(w: &World, name: &str, mode: &str) {
    let script = format!("seq 1 {LINES}");
    ok_as(
        w,
        "homeA",
        &[
            "invoke",
            "--computer",
            "localhost",
            "--in-disconnected-session",
            "--name",
            name,
            "--buffering",
            mode,
            "--",
            &script,
        ],
    );
}

/// block: the command is suspended while the buffer is full and resumes when read;
/// nothing is lost.
#[test]
fn buffering_block_suspends_and_loses_nothing() {
    let w = World::new();
    w.write_config(SMALL_BUFFER);
    start_flood(&w, "blk", "block");
    eventually("the buffer to fill", || {
        session_json(&w, "homeA", "blk")["pending_output_bytes"].as_u64() >= Some(60 * 1024)
    });
    let j = session_json(&w, "homeA", "blk");
    assert!(
        j["running_command"].is_string(),
        "suspended, not finished: {j}"
    );
    assert!(
        j["pending_output_bytes"].as_u64() <= Some(64 * 1024 + 256 * 1024),
        "{j}"
    );
    assert_eq!(j["output_buffering_mode"], "block");
    let o = run_as(
        &w,
        "homeB",
        &["receive", "--computer", "localhost", "--name", "blk"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o) == expected_seq(LINES),
        "{} bytes received",
        o.stdout.len()
    );
}

/// drop: the command runs to its end; the oldest output is discarded and the receiver is
/// told exactly how much.
#[test]
fn buffering_drop_keeps_running_and_counts_what_it_lost() {
    let w = World::new();
    w.write_config(SMALL_BUFFER);
    start_flood(&w, "drp", "drop");
    eventually("the command to finish while disconnected", || {
        session_json(&w, "homeA", "drp")["running_command"].is_null()
    });
    let j = session_json(&w, "homeA", "drp");
    assert!(j["pending_output_bytes"].as_u64() <= Some(64 * 1024), "{j}");
    let dropped_before = j["dropped_output_bytes"].as_u64().expect("dropped bytes");
    assert!(dropped_before > 0, "{j}");
    let o = run_as(&w, "homeA", &["receive", "drp", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut dropped = 0;
    let mut data = String::new();
    for line in stdout(&o).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        if let Some(d) = v["dropped_bytes"].as_u64() {
            dropped += d;
        } else if let Some(s) = v["data"].as_str() {
            data.push_str(s);
        }
    }
    assert_eq!(dropped, dropped_before);
    assert_eq!(
        dropped + data.len() as u64,
        seq_bytes(LINES),
        "kept + dropped = written"
    );
    assert!(
        expected_seq(LINES).ends_with(&data),
        "what is kept is the newest output, in order"
    );
    // Without --json the receiver is told on stderr.
    start_flood(&w, "drp2", "drop");
    eventually("the second flood to finish", || {
        session_json(&w, "homeA", "drp2")["running_command"].is_null()
    });
    let o = run_as(&w, "homeA", &["receive", "drp2"]);
    assert!(
        stderr(&o).contains("bytes of output were dropped"),
        "{}",
        stderr(&o)
    );
}

/// spool: the buffer overflows to a file in the server's state directory; the command
/// runs to its end and nothing is lost.
#[test]
fn buffering_spool_overflows_to_disk_and_loses_nothing() {
    let w = World::new();
    w.write_config(SMALL_BUFFER);
    start_flood(&w, "spl", "spool");
    eventually("the command to finish while disconnected", || {
        session_json(&w, "homeA", "spl")["running_command"].is_null()
    });
    let j = session_json(&w, "homeA", "spl");
    assert_eq!(
        j["pending_output_bytes"].as_u64(),
        Some(seq_bytes(LINES)),
        "{j}"
    );
    let id = j["instance_id"].as_str().expect("id").to_string();
    let spool = w.state_dir().join("sessions").join(&id).join("spool");
    assert!(spool.is_file(), "{} holds the overflow", spool.display());
    let o = run_as(
        &w,
        "homeB",
        &["receive", "--computer", "localhost", "--name", "spl"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o) == expected_seq(LINES),
        "{} bytes received",
        o.stdout.len()
    );
    let j = session_json(&w, "homeB", "spl");
    assert_eq!(j["pending_output_bytes"].as_u64(), Some(0), "{j}");
}

/// The idle timeout removes a session left unattached, even with a command running; its
/// processes end and the daemon's log says so. Limits are enforced with the limit named.
#[test]
fn idle_timeout_reclaims_unattached_sessions() {
    let w = World::new();
    w.write_config("[server]\nmin_idle_timeout = \"1s\"\n");
    // Limits, at new and at disconnect.
    let o = run_as(
        &w,
        "homeA",
        &["new", "localhost", "--idle-timeout", "500ms"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("minimum of 1s"), "{}", stderr(&o));
    ok_as(
        &w,
        "homeA",
        &["new", "localhost", "--name", "kept", "--idle-timeout", "2s"],
    );
    let o = run_as(
        &w,
        "homeA",
        &["disconnect", "kept", "--idle-timeout", "13h"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("maximum of 12h"), "{}", stderr(&o));
    let o = run_as(
        &w,
        "homeA",
        &["disconnect", "kept", "--idle-timeout", "100ms"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("minimum"), "{}", stderr(&o));
    assert_eq!(
        row(&ok_as(&w, "homeA", &["get", "kept"]), "kept").1,
        "Opened",
        "refused means unchanged"
    );

    let pidfile = w.dir.path().join("sleeper.pid");
    let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
    ok_as(
        &w,
        "homeA",
        &[
            "invoke",
            "--computer",
            "localhost",
            "--in-disconnected-session",
            "--name",
            "idle",
            "--idle-timeout",
            "2s",
            "--",
            &script,
        ],
    );
    let j = session_json(&w, "homeA", "idle");
    assert!(
        j["expires_at"].is_string() && j["disconnected_at"].is_string(),
        "{j}"
    );
    assert_eq!(j["idle_timeout_s"], 2);
    // The file exists before the shell has written the pid into it: wait for a number.
    eventually("the sleeper to start", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|t| t.trim().parse::<i32>().is_ok())
    });
    let sleeper: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    eventually("the idle session to be removed", || {
        session_json(&w, "homeA", "idle")["state"] == "Closed"
    });
    let j = session_json(&w, "homeA", "idle");
    assert!(
        j["reason"]
            .as_str()
            .is_some_and(|r| r.contains("idle timeout of 2s expired")),
        "{j}"
    );
    eventually("its processes to end", || !alive(sleeper));
    assert!(
        w.daemon_log().contains("idle timeout of 2s expired"),
        "{}",
        w.daemon_log()
    );
    let o = run_as(&w, "homeA", &["receive", "idle"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // The attached session is not idle: it is still there.
    assert_eq!(
        row(&ok_as(&w, "homeA", &["get", "kept"]), "kept").1,
        "Opened"
    );
}

/// A client silent for the heartbeat timeout loses its attachment; an open connection's
/// heartbeats keep it through a long quiet command.
#[test]
fn heartbeat_timeout_drops_the_attachment() {
    let w = World::new();
    w.write_config("[server]\nheartbeat_interval = \"200ms\"\nheartbeat_timeout = \"1500ms\"\n");
    ok_as(&w, "homeA", &["new", "localhost", "--name", "hb"]);
    // A command quieter than the timeout: the invoke's heartbeats keep the attachment.
    assert_eq!(
        ok_as(&w, "homeA", &["invoke", "hb", "--", "sleep 2.5; echo done"]),
        "done\n"
    );
    assert_eq!(row(&ok_as(&w, "homeA", &["get", "hb"]), "hb").1, "Opened");
    // Nothing is heard from the client now: once the timeout passes it is detached. Seen
    // from another client (whose asking is no sign of life from the first), a session
    // attached elsewhere is Disconnected and Busy; a detached one, Disconnected and None.
    eventually("the silent client to be detached", || {
        let t = ok_as(&w, "homeB", &["get", "--computer", "localhost"]);
        let (_, state, availability) = row(&t, "hb");
        (state.as_str(), availability.as_str()) == ("Disconnected", "None")
    });
    let t = ok_as(&w, "homeA", &["get", "hb"]);
    assert_eq!(row(&t, "hb").1, "Disconnected", "{t}");
    assert_eq!(row(&t, "hb").2, "None", "{t}");
    assert!(
        w.daemon_log().contains("no sign of life"),
        "{}",
        w.daemon_log()
    );
    // Anyone may now connect; the first client can too (invoke attaches an unattached
    // session).
    assert_eq!(
        ok_as(&w, "homeA", &["invoke", "hb", "--", "echo back"]),
        "back\n"
    );
    assert_eq!(row(&ok_as(&w, "homeA", &["get", "hb"]), "hb").1, "Opened");
}

/// The daemon stopped (SIGTERM, then SIGKILL) and started again re-adopts its session
/// hosts: shell state, a running command, attachment and buffered output all survive.
#[test]
fn sessions_survive_daemon_restarts() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "state"]);
    ok_as(&w, "homeA", &["invoke", "state", "--", "v=kept; cd /tmp"]);
    for (round, sig) in [Signal::SIGTERM, Signal::SIGKILL].into_iter().enumerate() {
        let name = format!("run{round}");
        let script =
            "echo before; while [ ! -e \"$HOME/go$R\" ]; do sleep 0.02; done; echo after; exit 9"
                .replace("$R", &round.to_string());
        ok_as(
            &w,
            "homeA",
            &[
                "invoke",
                "--computer",
                "localhost",
                "--in-disconnected-session",
                "--name",
                &name,
                "--",
                &script,
            ],
        );
        eventually("the first line to be buffered", || {
            session_json(&w, "homeA", &name)["pending_output_bytes"].as_u64() > Some(0)
        });
        let daemon = w.daemon_pid().expect("daemon pid");
        let hosts = w.host_pids();
        kill(daemon, sig);
        eventually("the daemon to exit", || !alive(daemon));
        assert!(
            hosts.iter().all(|&h| alive(h)),
            "session hosts outlive the daemon"
        );
        // The next command starts a new daemon, which re-adopts them.
        let t = ok_as(&w, "homeA", &["get"]);
        assert_ne!(w.daemon_pid(), Some(daemon));
        assert_eq!(row(&t, "state").1, "Opened", "attachment survives: {t}");
        assert_eq!(row(&t, &name).1, "Disconnected", "{t}");
        assert_eq!(row(&t, &name).2, "None", "{t}");
        assert_eq!(
            ok_as(&w, "homeA", &["invoke", "state", "--", "echo $v; pwd"]),
            "kept\n/tmp\n"
        );
        std::fs::write(w.dir.path().join(format!("go{round}")), "").expect("go file");
        let o = run_as(
            &w,
            "homeB",
            &["receive", "--computer", "localhost", "--name", &name],
        );
        assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
        assert_eq!(stdout(&o), "before\nafter\n");
    }
    assert!(w.daemon_log().contains("re-adopted session host"));
}

/// The client's options file gives `new` its idle timeout and buffering mode; flags win;
/// the server's configuration fills in the rest. `connect` may change the buffering mode.
#[test]
fn options_file_defaults_and_flag_precedence() {
    let w = World::new();
    w.write_config("[server]\nmin_idle_timeout = \"1s\"\n");
    std::fs::write(
        w.path("homeA/options.toml"),
        "idle_timeout = \"90m\"\noutput_buffering = \"spool\"\n",
    )
    .expect("options file");
    ok_as(&w, "homeA", &["new", "localhost", "--name", "opt"]);
    let j = session_json(&w, "homeA", "opt");
    assert_eq!(j["idle_timeout_s"], 90 * 60);
    assert_eq!(j["output_buffering_mode"], "spool");
    ok_as(
        &w,
        "homeA",
        &[
            "new",
            "localhost",
            "--name",
            "flag",
            "--idle-timeout",
            "5m",
            "--buffering",
            "drop",
        ],
    );
    let j = session_json(&w, "homeA", "flag");
    assert_eq!(j["idle_timeout_s"], 300);
    assert_eq!(j["output_buffering_mode"], "drop");
    // Client B has no options file: the configuration's defaults.
    ok_as(&w, "homeB", &["new", "localhost", "--name", "plain"]);
    let j = session_json(&w, "homeB", "plain");
    assert_eq!(j["idle_timeout_s"], 2 * 3600);
    assert_eq!(j["output_buffering_mode"], "block");
    // The buffering mode changes at disconnect and at connect.
    ok_as(
        &w,
        "homeB",
        &[
            "disconnect",
            "plain",
            "--buffering",
            "drop",
            "--idle-timeout",
            "30m",
        ],
    );
    let j = session_json(&w, "homeB", "plain");
    assert_eq!(j["output_buffering_mode"], "drop");
    assert_eq!(j["idle_timeout_s"], 30 * 60);
    ok_as(&w, "homeB", &["connect", "plain", "--buffering", "spool"]);
    assert_eq!(
        session_json(&w, "homeB", "plain")["output_buffering_mode"],
        "spool"
    );
    // A mistake in the options file is one clear usage error naming file and key.
    std::fs::write(w.path("homeB/options.toml"), "idle_timout = \"1h\"\n").expect("options");
    let o = run_as(&w, "homeB", &["get"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("options.toml") && err.contains("unknown option 'idle_timout'"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A shell that dies while nobody is attached shows its session Closed with the reason,
/// but what it wrote is still delivered to the next receiver; then the session is gone.
#[test]
fn output_of_a_dead_shell_is_still_received() {
    let w = World::new();
    ok_as(
        &w,
        "homeA",
        &[
            "invoke",
            "--computer",
            "localhost",
            "--in-disconnected-session",
            "--name",
            "dead",
            "--",
            "echo last words; kill -9 $$",
        ],
    );
    eventually("the shell to die", || {
        session_json(&w, "homeA", "dead")["state"] == "Closed"
    });
    let j = session_json(&w, "homeA", "dead");
    assert!(
        j["reason"].as_str().is_some_and(|r| r.contains("SIGKILL")),
        "{j}"
    );
    let o = run_as(
        &w,
        "homeB",
        &["receive", "--computer", "localhost", "--name", "dead"],
    );
    assert_eq!(stdout(&o), "last words\n", "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    eventually("the host to exit once its output was delivered", || {
        w.host_pids().is_empty()
    });
    let o = run_as(&w, "homeB", &["receive", "dead"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

/// An invoke waiting for a busy session whose client dies is withdrawn: its command never
/// runs. A shell killed during an invoke leaves the session Closed with that reason.
#[test]
fn a_waiting_invoke_of_a_dead_client_never_runs() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "q"]);
    let mut first = w
        .linger_as(
            "homeA",
            &[
                "invoke",
                "q",
                "--",
                "while [ ! -e \"$HOME/go\" ]; do sleep 0.02; done",
            ],
        )
        .spawn()
        .expect("first invoke");
    eventually("the first command to run", || {
        session_json(&w, "homeA", "q")["running_command"].is_string()
    });
    let mut waiting = w
        .linger_as("homeA", &["invoke", "q", "--", "touch \"$HOME/ran\""])
        .spawn()
        .expect("second invoke");
    eventually("the second invoke to queue", || {
        w.daemon_log()
            .contains("command queued: the session is busy")
    });
    kill(waiting.id() as i32, Signal::SIGKILL);
    let _ = waiting.wait();
    eventually("the withdrawal to be logged", || {
        w.daemon_log().contains("a waiting command was withdrawn")
    });
    std::fs::write(w.dir.path().join("go"), "").expect("go file");
    assert!(first.wait().expect("first invoke").success());
    // Anything queued would have run before this.
    assert_eq!(
        ok_as(&w, "homeA", &["invoke", "q", "--", "echo next"]),
        "next\n"
    );
    assert!(
        !w.dir.path().join("ran").exists(),
        "the withdrawn command ran"
    );

    let o = run_as(&w, "homeA", &["invoke", "q", "--", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let j = session_json(&w, "homeA", "q");
    assert_eq!(j["state"], "Closed");
    assert!(
        j["reason"]
            .as_str()
            .is_some_and(|r| r.contains("killed by SIGKILL")),
        "{j}"
    );
}

/// `receive` started while the command still runs delivers what was kept, then follows the
/// command to its end; `--idle-timeout` is refused there too.
#[test]
fn receive_follows_a_running_command_to_its_end() {
    let w = World::new();
    let script = "echo early; echo early-err >&2; while [ ! -e \"$HOME/go\" ]; do sleep 0.02; done; echo late; exit 6";
    ok_as(
        &w,
        "homeA",
        &[
            "invoke",
            "--computer",
            "localhost",
            "--in-disconnected-session",
            "--name",
            "f",
            "--",
            script,
        ],
    );
    let o = run_as(
        &w,
        "homeB",
        &[
            "receive",
            "--computer",
            "localhost",
            "--name",
            "f",
            "--idle-timeout",
            "1h",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--idle-timeout cannot be changed by `receive`"),
        "{}",
        stderr(&o)
    );
    let mut child = w
        .linger_as(
            "homeB",
            &["receive", "--computer", "localhost", "--name", "f"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("receive");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    assert_eq!(line, "early\n");
    assert!(
        session_json(&w, "homeB", "f")["running_command"].is_string(),
        "still running"
    );
    std::fs::write(w.dir.path().join("go"), "").expect("go file");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("rest");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert_eq!(child.wait().expect("receive ends").code(), Some(6), "{err}");
    assert_eq!(rest, "late\n");
    assert_eq!(err, "early-err\n");
}

/// A client that cannot reach the session's server shows it Broken / None; once the
/// server is back, the session is as it was.
#[test]
fn an_unreachable_server_shows_broken() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "b"]);
    let daemon = w.daemon_pid().expect("daemon");
    kill(daemon, Signal::SIGKILL);
    eventually("the daemon to exit", || !alive(daemon));
    let o = w
        .linger_as("homeA", &["get", "b"])
        .env("LINGERD", "/nonexistent/lingerd")
        .output()
        .expect("get");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        row(&stdout(&o), "b"),
        ("1".into(), "Broken".into(), "None".into())
    );
    assert_eq!(row(&ok_as(&w, "homeA", &["get", "b"]), "b").1, "Opened");
}

/// The audit log says who did what to which session, from where, for every start, command,
/// disconnect, connect, receive and removal, including what the daemon did by itself.
#[test]
fn the_audit_log_records_who_did_what() {
    let w = World::new();
    w.write_config("[server]\nmin_idle_timeout = \"1s\"\n");
    ok_as(&w, "homeA", &["new", "localhost", "--name", "aud"]);
    ok_as(
        &w,
        "homeA",
        &["invoke", "aud", "--arg", "v", "--", "echo audited $1"],
    );
    ok_as(&w, "homeA", &["disconnect", "aud"]);
    ok_as(
        &w,
        "homeB",
        &["connect", "--computer", "localhost", "--name", "aud"],
    );
    ok_as(&w, "homeB", &["receive", "aud"]);
    ok_as(&w, "homeB", &["remove", "aud"]);
    ok_as(
        &w,
        "homeA",
        &[
            "invoke",
            "--computer",
            "localhost",
            "--in-disconnected-session",
            "--name",
            "gone",
            "--idle-timeout",
            "1s",
            "--",
            "true",
        ],
    );
    let audit = || std::fs::read_to_string(w.state_dir().join("audit.log")).unwrap_or_default();
    eventually("the idle timeout to be audited", || {
        audit()
            .lines()
            .any(|l| l.contains("\"remove\"") && l.contains("\"gone\""))
    });
    let records: Vec<serde_json::Value> = audit()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for expected in [
        ("session_start", "aud"),
        ("command", "aud"),
        ("disconnect", "aud"),
        ("connect", "aud"),
        ("receive", "aud"),
        ("remove", "aud"),
        ("session_start", "gone"),
        ("command", "gone"),
        ("remove", "gone"),
    ] {
        assert!(
            actions.contains(&expected),
            "{expected:?} missing from {actions:?}"
        );
    }
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("user name");
    let command = records
        .iter()
        .find(|r| r["action"] == "command" && r["name"] == "aud")
        .expect("the command record");
    assert_eq!(command["principal"], me.as_str());
    assert!(
        command["from"]
            .as_str()
            .is_some_and(|f| f.starts_with("local uid")),
        "{command}"
    );
    assert_eq!(command["detail"]["script"], "echo audited $1");
    assert_eq!(command["detail"]["args"][0], "v");
    assert!(command["time"].is_string());
    let expiry = records
        .iter()
        .find(|r| r["action"] == "remove" && r["name"] == "gone")
        .expect("the expiry record");
    assert_eq!(expiry["principal"], "lingerd");
    assert_eq!(expiry["detail"]["reason"], "idle timeout");
}

/// Robust sessions: the daemon dies under a streaming command; the client says so, dials
/// again (a new daemon starts and re-adopts the host) and resumes from the last output it
/// acknowledged: every line arrives once, in order, with the command's status.
#[test]
fn a_stream_survives_its_connection_breaking() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "rb"]);
    let script = format!("{}; exit 4", common::WAVES);
    let child = w
        .linger_as("homeA", &["invoke", "rb", "--", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("invoke");
    let (got, err, code) = common::stream_waves(&w, child, |_, _| {
        let daemon = w.daemon_pid().expect("daemon");
        kill(daemon, Signal::SIGKILL);
        eventually("the daemon to die", || !alive(daemon));
    });
    assert_eq!(code, Some(4), "{err}");
    common::assert_waves(&got, &err);
    assert_eq!(err.matches("reconnecting").count(), 2, "{err}");
    assert_eq!(err.matches("reconnected").count(), 2, "{err}");
    // The session is still this client's, and idle.
    let j = session_json(&w, "homeA", "rb");
    assert_eq!(
        (j["state"].as_str(), j["availability"].as_str()),
        (Some("Opened"), Some("Available")),
        "{j}"
    );
}

/// A Busy session's refusal names the client holding it, when it was last heard from and
/// when the heartbeat timeout would release it; `connect --force` takes it over at once:
/// the holder's invoke ends ("taken over"), the command runs on, and nothing is lost.
#[test]
fn connect_names_the_holder_and_force_takes_the_session_over() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "held"]);
    let flag = w.path("go");
    let script = format!(
        "echo first; while [ ! -e '{}' ]; do sleep 0.02; done; echo second",
        flag.display()
    );
    let mut holder = common::Running::start(w.linger(&["invoke", "held", "--", &script]));
    assert_eq!(holder.line().as_deref(), Some("first\n"));

    let o = run_as(
        &w,
        "homeB",
        &["connect", "--computer", "localhost", "--name", "held"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line, its hint included: {err}");
    for said in [
        "session held is attached to another client (",
        " from local uid ",
        "last heard from ",
        "released if that client stays silent for ",
        "--force",
    ] {
        assert!(err.contains(said), "{said:?} in {err}");
    }

    let t = ok_as(
        &w,
        "homeB",
        &[
            "connect",
            "--computer",
            "localhost",
            "--name",
            "held",
            "--force",
        ],
    );
    // Its command still runs, now on this client's watch.
    assert_eq!(
        row(&t, "held"),
        ("1".into(), "Opened".into(), "Busy".into()),
        "{t}"
    );
    let (code, out, err) = holder.finish();
    assert_eq!(out, "", "nothing past what it had when taken over");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("taken over by another client"), "{err}");
    std::fs::write(&flag, "").expect("go file");
    // The new holder gets the rest, exactly once.
    assert_eq!(ok_as(&w, "homeB", &["receive", "held"]), "second\n");
}
