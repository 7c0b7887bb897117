//! Interactive sessions (SPEC §5; seeds 002 and 004): `linger enter` reading lines from a
//! pipe, and under a real pseudo-terminal (prompt, Ctrl-C, `exit`, the `~.` escape, history,
//! temporary sessions, and `disconnect` refused while entered).

use crate::common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::term::Term;
use common::World;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `linger enter ARGS` with `input` on a pipe.
fn enter_piped(w: &World, args: &[&str], input: &str) -> Output {
    let mut child = w
        .linger(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start linger enter");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write the input");
    child.wait_with_output().expect("wait for linger enter")
}

fn session_json(w: &World, sel: &str) -> serde_json::Value {
    let out = w.ok(&["get", sel, "--json"]);
    let first = out.lines().next().expect("a session line");
    serde_json::from_str(first).expect("JSON")
}

/// The seed's first example: lines from a pipe run in turn in the session, incomplete ones
/// joined; the state is the session's, shared with `invoke`.
#[test]
fn piped_lines_run_in_the_session() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Work"]);
    let o = enter_piped(
        &w,
        &["enter", "Work"],
        "x=5\ncd /tmp\nif true; then\necho \"$x in $(pwd)\"\nfi\n",
    );
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    assert_eq!(stdout(&o), "5 in /tmp\n", "stderr: {}", stderr(&o));
    assert_eq!(w.ok(&["invoke", "Work", "--", "echo $x; pwd"]), "5\n/tmp\n");

    // The exit code is the last command's status; stderr goes to stderr.
    let o = enter_piped(&w, &["enter", "Work"], "true\necho oops >&2; false\n");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stderr(&o), "oops\n");
    // `$?` is the line before's status, as at a prompt.
    let o = enter_piped(&w, &["enter", "Work"], "false\necho \"status $?\"\n");
    assert_eq!(stdout(&o), "status 1\n", "{}", stderr(&o));
    // `exit N` leaves with N; nothing after it runs.
    let o = enter_piped(&w, &["enter", "Work"], "y=1\nexit 7\ny=2\n");
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(w.ok(&["invoke", "Work", "--", "echo $y"]), "1\n");
    // A quote left open at the end of input is sent anyway: the session reports it.
    let o = enter_piped(&w, &["enter", "Work"], "echo 'unfinished\n");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unexpected EOF"), "{}", stderr(&o));
    // A plain syntax error is not continued: the next line runs on its own.
    let o = enter_piped(&w, &["enter", "Work"], "echo )\necho after\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "after\n");
    assert!(stderr(&o).contains("syntax error"), "{}", stderr(&o));

    let j = session_json(&w, "Work");
    assert_eq!(
        (j["state"].as_str(), j["availability"].as_str()),
        (Some("Opened"), Some("Available")),
        "{j}"
    );

    // Without SEL or --computer: a usage error.
    let o = enter_piped(&w, &["enter"], "");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = enter_piped(&w, &["enter", "Nope"], "");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

/// Under a terminal: the prompt shows the computer and the working directory; Ctrl-C stops
/// the running command and not the interactive session; a line bash would continue gets a
/// `> ` prompt; `exit` leaves with 0 and the session stays Opened.
#[test]
fn terminal_prompt_ctrl_c_continuation_and_exit() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Work"]);
    w.ok(&["invoke", "Work", "--", "cd /tmp; x=5"]);
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    t.expect("[localhost]: /tmp$ ");

    // Output computed by the shell, so that the echo of the typed line cannot match.
    t.send("echo \"$x-hi\"\r");
    t.expect("5-hi\r\n");
    t.expect("[localhost]: /tmp$ ");

    // Ctrl-C while a command runs stops it; a new prompt comes, the session lives on.
    t.send("echo $((6*7)); sleep 30; echo $((7*8))\r");
    t.expect("42\r\n");
    t.send("\x03");
    let from = t.seen;
    t.expect("[localhost]: /tmp$ ");
    assert!(!t.since(from).contains("56"), "{}", t.text());

    // Ctrl-C at the prompt discards the line.
    t.send("echo $((1+1))-discarded");
    t.send("\x03");
    t.expect("[localhost]: /tmp$ ");

    // Continuation lines until the command is complete; the cwd follows `cd`.
    t.send("if true; then\r");
    t.expect("> ");
    t.send("cd / && echo \"$x-inside\"\r");
    t.expect("> ");
    t.send("fi\r");
    t.expect("5-inside\r\n");
    t.expect("[localhost]: /$ ");
    t.send("cd /tmp\r");
    t.expect("[localhost]: /tmp$ ");

    t.send("exit\r");
    let status = t.wait();
    assert_eq!(status.code(), Some(0), "{}", t.text());
    assert!(!t.text().contains("2-discarded"), "{}", t.text());

    let j = session_json(&w, "Work");
    assert_eq!(
        (j["state"].as_str(), j["availability"].as_str()),
        (Some("Opened"), Some("Available")),
        "{j}"
    );
    assert_eq!(w.ok(&["invoke", "Work", "--", "echo $x; pwd"]), "5\n/tmp\n");

    // The history is kept per session on this client: Up brings back earlier commands, a
    // multi-line one whole.
    let history = w
        .path("homeA/history")
        .join(j["instance_id"].as_str().expect("instance_id"));
    let kept = std::fs::read_to_string(&history).expect("the history file");
    assert!(kept.contains("echo \"$x-hi\""), "{kept}");
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    t.expect("[localhost]: /tmp$ ");
    t.send("\x1b[A");
    t.expect("exit");
    t.send("\x1b[A");
    t.expect("cd /tmp");
    t.send("\x1b[A");
    t.expect("fi");
    t.send("\r");
    t.expect("5-inside\r\n");
    t.expect("[localhost]: /$ ");
    // Ctrl-D on an empty line leaves like exit.
    t.send("\x04");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
}

/// `~.` at the start of a line while a command runs detaches at once: the session is left
/// Disconnected with its command running, and entering it again follows that command.
#[test]
fn tilde_dot_detaches_leaving_the_command_running() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Work"]);
    let flag = w.path("go");
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    t.expect("$ ");
    t.send(&format!(
        "echo $((6*7)); while [ ! -e {} ]; do sleep 0.05; done; echo $((7*8))\r",
        flag.display()
    ));
    t.expect("42\r\n");
    t.send("~.");
    let status = t.wait();
    assert_eq!(status.code(), Some(0), "{}", t.text());
    // Written before linger exited, but the terminal's reader may not have collected it yet.
    t.expect("linger receive Work");

    let j = session_json(&w, "Work");
    assert_eq!(
        (j["state"].as_str(), j["availability"].as_str()),
        (Some("Disconnected"), Some("None")),
        "{j}"
    );
    assert!(j["running_command"].is_string(), "{j}");

    // Entering again follows the command to its end, then prompts.
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    t.expect("still running");
    std::fs::write(&flag, "").expect("flag");
    t.expect("56\r\n");
    t.expect("$ ");
    // And `~.` at the prompt detaches too, with nothing running.
    t.send("~.");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    let j = session_json(&w, "Work");
    assert_eq!(
        (j["state"].as_str(), j["availability"].as_str()),
        (Some("Disconnected"), Some("None")),
        "{j}"
    );
    assert!(j["running_command"].is_null(), "{j}");
}

/// Lines typed while a command runs are kept and run after it, in order, as a shell's
/// type-ahead; a partial line waits at the next prompt; Ctrl-C drops what was typed ahead.
#[test]
fn typed_ahead_lines_run_after_the_command() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Work"]);
    let flag = w.path("go");
    let wait = format!("while [ ! -e {} ]; do sleep 0.05; done", flag.display());
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    t.expect("$ ");
    t.send(&format!("echo $((6*7)); {wait}\r"));
    t.expect("42\r\n");
    t.send("echo $((8*8))-ahead\recho $((9*9))");
    std::fs::write(&flag, "").expect("flag");
    t.expect("64-ahead\r\n");
    // The partial line is at the prompt, to finish.
    t.send("-partial\r");
    t.expect("81-partial\r\n");

    std::fs::remove_file(&flag).expect("flag");
    t.send(&format!("echo $((6*7)); {wait}\r"));
    t.expect("42\r\n");
    t.send("echo $((5*5))-dropped\r");
    t.send("\x03");
    let from = t.seen;
    t.expect("$ ");
    t.send("echo $((4*4))-next\r");
    t.expect("16-next\r\n");
    assert!(!t.since(from).contains("25-dropped"), "{}", t.text());
    t.send("exit\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
}

/// `enter --computer` works in a temporary session, removed on `exit`.
#[test]
fn computer_makes_a_temporary_session_removed_on_exit() {
    let w = World::new();
    let mut t = Term::spawn(&w, &["enter", "--computer", "localhost", "--name", "Tmp"]);
    t.expect("[localhost]: ");
    t.send("echo $((2+3))-tmp\r");
    t.expect("5-tmp\r\n");
    t.send("exit\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    // `--json` ends with its exit-code record; no session line comes before it.
    let sessions = |args: &[&str]| -> Vec<String> {
        w.ok(args)
            .lines()
            .filter(|l| l.contains("instance_id"))
            .map(String::from)
            .collect()
    };
    assert_eq!(
        sessions(&["get", "--json"]),
        Vec::<String>::new(),
        "the registry forgot it"
    );
    assert_eq!(
        sessions(&["get", "--computer", "localhost", "--json"]),
        Vec::<String>::new(),
        "the server removed it"
    );
}

/// While a session is entered, `linger disconnect` from another process of the same client
/// is refused (seed 004), and works again once the interactive session is left.
#[test]
fn disconnect_is_refused_while_entered() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Work"]);
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    t.expect("$ ");
    let o = w.run(&["disconnect", "Work"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("linger enter"), "{}", stderr(&o));
    // The interactive session is unharmed.
    t.send("echo $((3*4))-still\r");
    t.expect("12-still\r\n");
    t.send("exit\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    w.ok(&["disconnect", "Work"]);
}

/// Issue: re-entering a session whose pipe command still runs follows it, Ctrl-C then stops
/// that command (as in the `enter` that started it), and the lines typed next run.
#[test]
fn ctrl_c_stops_a_followed_command_and_the_next_lines_run() {
    let w = World::new();
    // Started without a terminal, so it runs on pipes.
    let out = w
        .disconnected("Work", "echo started; sleep 300; echo not-reached")
        .output()
        .expect("start the command");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    t.expect("still running");
    t.expect("started");
    t.send("\x03");
    t.expect("$ ");
    t.send("echo $((6*7))-next\r");
    t.expect("42-next");
    t.send("exit\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    // (The notice quotes the script; the echo itself never ran.)
    assert!(!t.text().contains("\nnot-reached"), "{}", t.text());
}

/// Another command of this client holds session `name` until `flag` exists; returns once
/// the session shows it running.
fn hold_busy(w: &World, name: &str, flag: &std::path::Path) -> std::process::Child {
    let busy = w
        .linger(&[
            "invoke",
            name,
            "--",
            &format!("while [ ! -e '{}' ]; do sleep 0.05; done", flag.display()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the busy command");
    common::eventually("the session to be busy", || {
        session_json(w, name)["running_command"].is_string()
    });
    busy
}

/// How many invokes the daemon has queued behind a busy session so far: its log says so
/// when one starts waiting (the event a test waits for instead of a pause).
fn queued(w: &World) -> usize {
    w.daemon_log()
        .matches("command queued: the session is busy")
        .count()
}

/// Types `line` at a prompt while the session is busy, and waits until the daemon has it
/// waiting there.
fn type_while_busy(w: &World, t: &mut Term, line: &str) {
    let before = queued(w);
    t.send(line);
    common::eventually("the line to wait for the busy session", || {
        queued(w) > before
    });
}

/// Issue: a line cancelled (Ctrl-C) while it waits for a busy session never runs.
#[test]
fn a_line_cancelled_while_the_session_is_busy_never_runs() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Work"]);
    let flag = w.path("go");
    let mark = w.path("withdrawn-ran");
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    t.expect("$ ");
    let busy = hold_busy(&w, "Work", &flag);
    type_while_busy(&w, &mut t, &format!("touch '{}'\r", mark.display()));
    // Issue 17 §8: a wait for a busy session says what the session runs.
    t.expect("waiting for session Work, running `while [ ! -e");
    t.send("\x03");
    t.expect("linger: withdrawn: ");
    std::fs::write(&flag, "").expect("flag");
    let out = busy.wait_with_output().expect("the busy command");
    assert!(out.status.success(), "the busy command: {}", stderr(&out));
    t.send("echo $((6*7))-next\r");
    t.expect("42-next\r\n");
    assert!(!mark.exists(), "the withdrawn line ran: {}", t.text());
    t.send("exit\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
}

/// `~.` while a line waits for a busy session withdraws it (it never runs behind the
/// user's back) and keeps it, as typed-ahead lines are kept: the next `enter` runs it.
#[test]
fn a_line_waiting_for_a_busy_session_is_withdrawn_by_tilde_dot_and_kept() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Work"]);
    let flag = w.path("go");
    let mark = w.path("kept-ran");
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    t.expect("$ ");
    let mut busy = hold_busy(&w, "Work", &flag);
    type_while_busy(&w, &mut t, &format!("touch '{}'\r", mark.display()));
    t.send("~.");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    t.assert_restored();
    // `~.` detached the session from this client, so the busy command's own invoke lost
    // it too; the command runs on until the flag ends it.
    std::fs::write(&flag, "").expect("flag");
    busy.wait().expect("the busy command");
    common::eventually("the busy command to end", || {
        session_json(&w, "Work")["running_command"].is_null()
    });
    assert!(!mark.exists(), "the withdrawn line ran: {}", t.text());
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    common::eventually("the kept line to run", || mark.exists());
    t.expect("$ ");
    t.send("exit\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
}

/// `~?` lists the escapes, at the prompt and while a terminal command runs (as ssh's).
#[test]
fn tilde_question_mark_lists_the_escapes() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Work"]);
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    t.expect("$ ");
    t.send("~?");
    t.expect("escape sequences");
    t.expect("$ ");
    t.send("echo ready; read -r x; echo \"got $x\"\r");
    // Its output comes through the relay that reads the keyboard for it.
    t.expect("ready\r\n");
    t.send("~?");
    t.expect("~.   detach");
    t.send("fine\r");
    t.expect("got fine");
    t.send("exit\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
}

/// SPEC §5: lines typed ahead while a command runs are kept across `~.`: the next `enter`
/// runs them once the command it finds running has ended.
#[test]
fn lines_typed_ahead_are_kept_across_tilde_dot() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Work"]);
    let flag = w.path("go");
    let mut t = Term::spawn(&w, &["enter", "-T", "Work"]);
    t.expect("$ ");
    t.send(&format!(
        "echo started; while [ ! -e '{}' ]; do sleep 0.05; done\r",
        flag.display()
    ));
    t.expect("started\r\n");
    t.send("echo $((3*3))-kept\r~.");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    let mut t = Term::spawn(&w, &["enter", "-T", "Work"]);
    t.expect("still running");
    std::fs::write(&flag, "").expect("flag");
    t.expect("9-kept\r\n");
    t.send("exit\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
}
