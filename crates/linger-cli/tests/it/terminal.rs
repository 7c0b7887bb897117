//! Terminal commands (SPEC §4 `-t`/`--tty`): `linger invoke -t` under a real pseudo-terminal
//! (the PTY harness), running real full-screen programs, REPLs and password prompts in the
//! session's own shell, with the local terminal restored after each.

use crate::common;

use common::term::Term;
use common::World;

/// A session named `Work`, and `linger invoke Work -t -- SCRIPT` on a terminal.
fn invoke_tty(w: &World, script: &str) -> Term {
    Term::spawn(w, &["invoke", "Work", "-t", "--", script])
}

fn world() -> World {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Work"]);
    w
}

#[test]
fn a_terminal_command_has_a_tty_the_clients_term_and_size_and_its_state_stays() {
    let w = world();
    let mut t = invoke_tty(
        &w,
        "tty; echo \"term=$TERM\"; stty size; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; \
         { : </dev/tty; } 2>/dev/null && echo has-a-controlling-terminal; \
         cd /tmp; export FROM_TTY=yes",
    );
    t.expect("/dev/pts/");
    t.expect("term=xterm");
    // The harness's window.
    t.expect("40 200");
    t.expect("all-tty");
    // What sudo, passwd and ssh-keygen open to prompt.
    t.expect("has-a-controlling-terminal");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    t.assert_restored();
    // The command ran in the session's shell: its `cd` and `export` stay.
    assert_eq!(
        w.ok(&["invoke", "Work", "--", "pwd; echo $FROM_TTY; tty || true"]),
        "/tmp\nyes\nnot a tty\n"
    );
}

#[test]
fn stdout_and_stderr_are_one_terminal_stream_and_the_status_is_the_exit_code() {
    let w = world();
    let mut t = invoke_tty(&w, "echo out; echo err >&2; exit 3");
    t.expect("out\r\nerr\r\n");
    assert_eq!(t.wait().code(), Some(3), "{}", t.text());
}

#[test]
fn a_resize_reaches_the_command() {
    let w = world();
    let mut t = invoke_tty(&w, "echo ready; while :; do stty size; sleep 0.1; done");
    t.expect("ready");
    t.expect("40 200");
    t.resize(30, 90);
    t.expect("30 90");
    t.send("\x03");
    assert_eq!(t.wait().code(), Some(130), "{}", t.text());
    t.assert_restored();
}

#[test]
fn ctrl_c_stops_the_program_and_the_session_stays() {
    let w = world();
    let mut t = invoke_tty(&w, "echo started; sleep 100; echo not-reached");
    t.expect("started");
    t.send("\x03");
    assert_eq!(t.wait().code(), Some(130), "{}", t.text());
    assert!(!t.text().contains("not-reached"), "{}", t.text());
    t.assert_restored();
    // Ctrl-Z and Ctrl-\ neither stop nor kill the shell.
    let mut t = invoke_tty(&w, "echo started; sleep 100");
    t.expect("started");
    t.send("\x1a");
    t.send("\x1c");
    assert_eq!(t.wait().code(), Some(131), "{}", t.text());
    assert_eq!(w.ok(&["invoke", "Work", "--", "echo alive"]), "alive\n");
}

#[test]
fn a_password_prompt_reads_what_is_typed_without_echoing_it() {
    let w = world();
    let mut t = invoke_tty(
        &w,
        "read -r -s -p 'Password: ' pw; echo; echo \"got=$pw\"; read -r -s -p 'Again: ' x; echo; sleep 100",
    );
    t.expect("Password: ");
    let from = t.seen;
    t.send("s3cret\r");
    t.expect("got=s3cret");
    assert!(
        !t.since(from)
            .split("got=")
            .next()
            .unwrap_or("")
            .contains("s3cret"),
        "the secret was echoed: {}",
        t.text()
    );
    // Ctrl-C at a silent read, and at the command after it, ends the command, not the shell.
    t.expect("Again: ");
    t.send("\x03");
    assert_eq!(t.wait().code(), Some(130), "{}", t.text());
    t.assert_restored();
    assert_eq!(w.ok(&["invoke", "Work", "--", "echo alive"]), "alive\n");
}

#[test]
fn a_python_repl_evaluates_what_is_typed() {
    let w = world();
    let mut t = invoke_tty(&w, "python3 -q");
    t.expect(">>> ");
    t.send("6*7\r");
    t.expect("42");
    // Ctrl-C reaches Python (KeyboardInterrupt), not the shell.
    t.send("\x03");
    t.expect("KeyboardInterrupt");
    t.send("\x04");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    t.assert_restored();
}

#[test]
fn top_shows_its_header_and_quits_on_q() {
    let w = world();
    let mut t = invoke_tty(&w, "top -d 0.5");
    t.expect("load average");
    t.expect("PID");
    t.send("q");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    t.assert_restored();
}

#[test]
fn vi_writes_a_file_and_the_screen_is_given_back() {
    let w = world();
    let file = w.path("edited.txt");
    let script = format!("vi -u NONE -N '{}'", file.display());
    let mut t = invoke_tty(&w, &script);
    // vi has drawn its screen (the empty buffer's tildes).
    t.expect("~");
    t.send("ihello from vi\x1b");
    t.send(":wq\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    assert_eq!(
        std::fs::read_to_string(&file).expect("the file vi wrote"),
        "hello from vi\n"
    );
    t.assert_restored();
}

#[test]
fn the_local_terminal_is_restored_when_the_program_leaves_it_in_a_mess() {
    let w = world();
    // Alternate screen, hidden cursor, application keypad and bracketed paste, then a
    // death that undoes none of them.
    let mut t = invoke_tty(
        &w,
        "(printf '\\033[?1049h\\033[?25l\\033=\\033[?2004h'; echo messy; kill -9 $BASHPID)",
    );
    t.expect("messy");
    assert_eq!(t.wait().code(), Some(137), "{}", t.text());
    t.assert_restored();
}

#[test]
fn tilde_dot_detaches_and_the_command_goes_on() {
    let w = world();
    let flag = w.path("flag");
    let script = format!(
        "echo started; while [ ! -e '{}' ]; do sleep 0.05; done; echo finished",
        flag.display()
    );
    let mut t = invoke_tty(&w, &script);
    t.expect("started");
    t.send("\r~.");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    t.assert_restored();
    t.expect("detached");
    std::fs::write(&flag, "").expect("flag");
    let got = w.ok(&["receive", "Work"]);
    assert!(got.contains("finished"), "{got}");
}

#[test]
fn without_a_local_terminal_tty_is_left_out_with_a_notice() {
    let w = world();
    let out = w
        .linger(&["invoke", "Work", "-t", "--", "tty || echo none"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run linger");
    assert_eq!(common::stdout(&out), "not a tty\nnone\n");
    assert!(
        common::stderr(&out).contains("no terminal for the command"),
        "{}",
        common::stderr(&out)
    );
    let out = w.run(&["invoke", "Work", "--as-job", "-t", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
}

/// SPEC §5: a terminal command left running by `~.` is entered again from another client:
/// its screen is drawn as it was (from the session host's terminal emulator, since the first
/// client had already taken that output), and the keyboard is the command's again.
#[test]
fn a_detached_terminal_command_is_redrawn_for_another_client_and_takes_its_keys() {
    let w = world();
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    t.expect("$ ");
    t.send(
        // (`%s`: the line's echo must not pass for its output.)
        "printf '\\033[2J\\033[HSCREEN%s at the top' -MARK; read -r -n1 k; echo; echo \"key=$k\"\r",
    );
    t.expect("SCREEN-MARK at the top");
    t.send("~.");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    t.assert_restored();

    common::ok_as(
        &w,
        "second",
        &["connect", "--computer", "localhost", "--name", "Work"],
    );
    let mut t = Term::spawn_cmd(w.linger_as("second", &["enter", "Work"]));
    t.expect("still running");
    t.expect("SCREEN-MARK at the top");
    assert!(
        t.screen()
            .screen()
            .contents()
            .contains("SCREEN-MARK at the top"),
        "{}",
        t.text()
    );
    t.send("x");
    t.expect("key=x");
    t.expect("$ ");
    t.send("exit\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    t.assert_restored();
}

/// `top` detached and entered again from a second client: still running, its screen drawn,
/// and `q` from the new client ends it.
#[test]
fn top_detached_and_entered_again_from_another_client_quits_on_q() {
    let w = world();
    let mut t = Term::spawn(&w, &["enter", "Work"]);
    t.expect("$ ");
    t.send("top -d 0.5\r");
    t.expect("load average");
    t.send("~.");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    t.assert_restored();
    common::ok_as(
        &w,
        "second",
        &["connect", "--computer", "localhost", "--name", "Work"],
    );
    let mut t = Term::spawn_cmd(w.linger_as("second", &["enter", "Work"]));
    t.expect("on a terminal");
    t.expect("PID");
    t.send("q");
    t.expect("$ ");
    t.send("exit\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    t.assert_restored();
}

/// The trial's `ssh-keygen`, which without a terminal made an unencrypted key: on one, its
/// passphrase prompts read what is typed, and the key is encrypted with it.
#[test]
fn ssh_keygen_reads_its_passphrase_from_the_terminal() {
    let w = world();
    let key = w.path("id_test");
    let script = format!("ssh-keygen -q -t ed25519 -C test -f '{}'", key.display());
    let mut t = invoke_tty(&w, &script);
    t.expect("passphrase");
    t.send("s3cret-pass\r");
    t.expect("again");
    t.send("s3cret-pass\r");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    assert!(!t.text().contains("s3cret-pass"), "echoed: {}", t.text());
    let with = |pass: &str| {
        std::process::Command::new("ssh-keygen")
            .args(["-y", "-P", pass, "-f"])
            .arg(&key)
            .output()
            .expect("ssh-keygen -y")
            .status
            .success()
    };
    assert!(
        with("s3cret-pass"),
        "the typed passphrase does not open the key"
    );
    assert!(!with(""), "the key is not encrypted");
}

/// Issue 17 §12: a fan-out that lasts shows a progress bar on the terminal's stderr, and
/// the targets' output goes above it, whole lines, with the bar gone at the end. The same
/// fan-out into pipes, started first and so lasting longer, shows nothing of it.
#[test]
fn a_lasting_fan_out_shows_a_progress_bar_above_which_output_goes() {
    let w = World::new();
    for name in ["One", "Two", "Three", "Four"] {
        w.ok(&["new", "localhost", "--name", name]);
    }
    let flag = w.path("go");
    let script = format!(
        "echo start-x; while [ ! -e '{}' ]; do sleep 0.05; done; echo end",
        flag.display()
    );
    let piped = w
        .linger(&["invoke", "Three", "Four", "--", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("piped fan-out");
    common::eventually("the piped fan-out to run on both", || {
        ["Three", "Four"].iter().all(|n| {
            let out = w.ok(&["get", n, "--json"]);
            let v: serde_json::Value =
                serde_json::from_str(out.lines().next().unwrap_or("")).expect("a session in JSON");
            v["running_command"].is_string()
        })
    });
    let mut t = Term::spawn(&w, &["invoke", "One", "Two", "--", &script]);
    t.expect("running [");
    t.expect("0/2");
    std::fs::write(&flag, "").expect("flag");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    let screen = t.screen();
    let text = screen.screen().contents();
    assert_eq!(text.matches("[localhost] start-x").count(), 2, "{text}");
    assert_eq!(text.matches("[localhost] end").count(), 2, "{text}");
    assert!(!text.contains("running ["), "the bar stayed: {text}");
    let out = piped.wait_with_output().expect("piped fan-out");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("running"), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).matches("end").count(),
        2
    );
}
