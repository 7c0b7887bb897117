//! Watching a session (SPEC §14): read-only viewers, any number, from any client of the
//! owner, while another client stays attached; they consume nothing, and a stopped one
//! slows nobody (it is told what it missed).

use crate::common;

use common::term::Term;
use common::{eventually, Running, World};
use nix::sys::signal::Signal;

fn world() -> World {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Work"]);
    w
}

/// A `linger watch` whose "watching" notice has appeared (it is registered by then).
fn watcher(w: &World, home: Option<&str>) -> Running {
    let cmd = match home {
        Some(home) => w.linger_as(
            home,
            &["watch", "--computer", "localhost", "--name", "Work"],
        ),
        None => w.linger(&["watch", "Work"]),
    };
    let r = Running::start(cmd);
    eventually("the watcher to start", || {
        r.stderr().contains("watching Work")
    });
    r
}

fn lines_until(r: &mut Running, last: &str) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(line) = r.line() {
        let done = line.trim_end() == last;
        got.push(line.trim_end().to_string());
        if done {
            break;
        }
    }
    got
}

#[test]
fn two_watchers_see_what_the_attached_client_gets_once() {
    let w = world();
    let mut here = watcher(&w, None);
    let mut other = watcher(&w, Some("elsewhere"));
    let script = "for i in $(seq 1 50); do echo out$i; echo err$i >&2; done; echo last";
    let out = w.run(&["invoke", "Work", "--", script]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let expected: Vec<String> = (1..=50)
        .map(|i| format!("out{i}"))
        .chain(["last".to_string()])
        .collect();
    // The attached client got every line once, in order: watchers took nothing from it.
    assert_eq!(common::stdout(&out).lines().collect::<Vec<_>>(), expected);
    for r in [&mut here, &mut other] {
        assert_eq!(lines_until(r, "last"), expected);
    }
    eventually("the watchers' stderr", || {
        here.stderr().contains("err50") && other.stderr().contains("err50")
    });
    // Nothing was consumed: the session has nothing pending, and a receive gets nothing.
    assert_eq!(w.ok(&["receive", "Work"]), "");
    here.signal(Signal::SIGINT);
    other.signal(Signal::SIGINT);
    assert_eq!(here.finish().0, Some(0));
    assert_eq!(other.finish().0, Some(0));
}

#[test]
fn a_stopped_watcher_slows_nobody_and_is_told_what_it_missed() {
    let w = world();
    // Its output goes nowhere (read as fast as it comes); its notices to a file.
    let notes = w.path("watcher.err");
    let mut child = Reaped(
        w.linger(&["watch", "Work"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&notes).expect("notes file"))
            .spawn()
            .expect("start the watcher"),
    );
    let pid = child.0.id() as i32;
    let said = || std::fs::read_to_string(&notes).unwrap_or_default();
    eventually("the watcher to start", || said().contains("watching Work"));
    common::kill(pid, Signal::SIGSTOP);
    let bytes = 40_000_000u64;
    let out = w
        .linger(&[
            "invoke",
            "Work",
            "--",
            &format!("head -c {bytes} /dev/zero | tr '\\0' x; echo"),
        ])
        .output()
        .expect("invoke");
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(out.stdout.len() as u64, bytes + 1);
    common::kill(pid, Signal::SIGCONT);
    // The next output that reaches it (once it has caught up) comes with the count of
    // what went by unseen.
    eventually("the missed notice", || {
        w.ok(&["invoke", "Work", "--", "echo after"]);
        said().contains("went by unseen")
    });
    common::kill(pid, Signal::SIGINT);
    assert_eq!(child.0.wait().expect("the watcher ends").code(), Some(0));
}

/// A child that is killed and reaped however the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_watcher_of_a_terminal_command_sees_its_screen_and_never_resizes_it() {
    let w = world();
    let mut t = Term::spawn(
        &w,
        &[
            "invoke",
            "Work",
            "-t",
            "--",
            "printf 'DRAWN-BEFORE\\n'; read -r x; stty size; read -r y",
        ],
    );
    t.expect("DRAWN-BEFORE");
    let mut v = Running::start(w.linger(&["watch", "Work"]));
    // The screen as it was, drawn for the watcher first.
    let mut seen = String::new();
    while !seen.contains("DRAWN-BEFORE") {
        seen.push_str(&v.line().expect("the watcher's output"));
    }
    t.send("go\r");
    // The terminal kept the attached client's size.
    t.expect("40 200");
    let mut seen = String::new();
    while !seen.contains("40 200") {
        seen.push_str(&v.line().expect("the watcher's output"));
    }
    t.send("done\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    v.signal(Signal::SIGINT);
    assert_eq!(v.finish().0, Some(0));
}

#[test]
fn watch_json_prints_records_and_the_end_of_the_session_ends_it() {
    let w = world();
    let mut r = Running::start(w.linger(&["--json", "watch", "Work"]));
    eventually("the watcher to start", || {
        r.stderr().contains("watching Work")
    });
    w.ok(&["invoke", "Work", "--", "echo hello"]);
    let record: serde_json::Value =
        serde_json::from_str(r.line().expect("a record").trim()).expect("JSON");
    assert_eq!(record["computer_name"], "localhost", "{record}");
    assert!(record.to_string().contains("hello"), "{record}");
    w.ok(&["remove", "Work"]);
    // The end is the last record, as for every command with --json.
    let (code, rest, stderr) = r.finish();
    assert_ne!(code, Some(0), "{stderr}");
    let last: serde_json::Value =
        serde_json::from_str(rest.lines().last().expect("a last record")).expect("JSON");
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("has ended")),
        "{last}"
    );
}
