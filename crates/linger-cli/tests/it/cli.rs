//! The `linger` binary against a real, auto-started `lingerd`.

use crate::common;

use std::io::Write;
use std::process::Stdio;

use common::{eventually, World};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn new_get_remove_with_tables_and_json() {
    let w = World::new();
    let table = w.ok(&["new", "localhost"]);
    assert!(
        table.contains(" Id Name      ComputerName  State         ConfigurationName  Availability"),
        "{table}"
    );
    assert!(
        table.contains("  1 Session1  localhost     Opened        default               Available"),
        "{table}"
    );
    assert!(w.daemon_pid().is_some(), "the daemon was started on demand");
    assert!(w.daemon_log().contains("session started"));

    w.ok(&["new", ".", "--name", "web"]);
    let lines = json_lines(&w.ok(&["get", "--json"]));
    assert_eq!(lines.len(), 3, "two sessions and the exit record");
    let web = &lines[1];
    for field in [
        "id",
        "name",
        "instance_id",
        "computer_name",
        "configuration_name",
        "state",
        "availability",
        "owner",
        "created_at",
        "idle_timeout_s",
        "output_buffering_mode",
        "disconnected_at",
        "expires_at",
        "running_command",
        "pending_output_bytes",
        "dropped_output_bytes",
        "jobs",
    ] {
        assert!(web.get(field).is_some(), "missing {field} in {web}");
    }
    assert_eq!(web["name"], "web");
    assert_eq!(web["computer_name"], "localhost");
    assert_eq!(lines[2], serde_json::json!({"exit_code": 0}));

    // Selection by Id, Name wildcard and InstanceId.
    let instance = web["instance_id"].as_str().expect("uuid").to_string();
    assert!(w.ok(&["get", "2"]).contains("web"));
    assert!(w.ok(&["get", "w*"]).contains("web"));
    assert!(w.ok(&["get", &instance]).contains("web"));

    // Removed is forgotten (as Remove-PSSession): get no longer shows it, its name selects
    // nothing, and a new session may take the name without the old record joining in.
    w.ok(&["remove", "web"]);
    assert!(!w.ok(&["get"]).contains("web"));
    let o = w.run(&["invoke", "web", "--", "true"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).starts_with("linger: error: no session matches 'web'"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1);
    w.ok(&["new", "localhost", "--name", "web"]);
    assert_eq!(w.ok(&["invoke", "web", "--", "echo again"]), "again\n");
}

#[test]
fn commands_share_state() {
    let w = World::new();
    w.ok(&["new", "localhost"]);
    w.ok(&[
        "invoke",
        "1",
        "--",
        "x=42; f() { echo \"f:$1\"; }; alias hi='echo alias-ok'; cd /tmp; export EXP=yes",
    ]);
    let out = w.ok(&[
        "invoke",
        "1",
        "--",
        "echo $x; f a; hi; pwd; bash -c 'echo $EXP'",
    ]);
    assert_eq!(out, "42\nf:a\nalias-ok\n/tmp\nyes\n");
    // `$?` is the previous command's status, as at a prompt.
    let o = w.run(&["invoke", "1", "--", "false"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(w.ok(&["invoke", "1", "--", "echo $?"]), "1\n");
}

#[test]
fn streams_status_exit_args_stdin_and_file() {
    let w = World::new();
    w.ok(&["new", "localhost"]);
    let o = w.run(&[
        "invoke",
        "1",
        "--",
        "echo out; echo err >&2; exit 7; echo never",
    ]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
    // `exit` ended only the command: the session lives on, also after exit in a function.
    w.ok(&["invoke", "1", "--", "y=1"]);
    let o = w.run(&["invoke", "1", "--", "f() { exit 3; }; f; echo never"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        w.ok(&["invoke", "1", "--", "echo $y; (exit 9); echo sub=$?"]),
        "1\nsub=9\n"
    );

    assert_eq!(
        w.ok(&[
            "invoke",
            "1",
            "--arg",
            "a b",
            "--arg",
            "c",
            "--",
            "echo \"$#|$1|$2\""
        ]),
        "2|a b|c\n"
    );

    let mut child = w
        .linger(&["invoke", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"echo from-stdin\nexit 5\n")
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(stdout(&o), "from-stdin\n");

    let script = w.path("script.sh");
    std::fs::write(&script, "for i in 1 2 3; do echo $i; done\n").expect("write");
    assert_eq!(
        w.ok(&["invoke", "1", "--file", script.to_str().expect("utf-8")]),
        "1\n2\n3\n"
    );
}

#[test]
fn awkward_commands_end_correctly() {
    let w = World::new();
    w.ok(&["new", "localhost"]);
    assert_eq!(
        w.ok(&["invoke", "1", "--", "printf no-newline"]),
        "no-newline"
    );
    let o = w.run(&["invoke", "1", "--", "printf '\\x00\\x01\\xff\\x00'"]);
    assert_eq!(o.stdout, vec![0u8, 1, 0xff, 0]);
    // A background process keeps the output pipe open; the command still ends.
    let o = w.run(&["invoke", "1", "--", "sleep 300 & echo started"]);
    assert_eq!(stdout(&o), "started\n");
    let o = w.run(&["invoke", "1", "--", "echo 'unclosed"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unexpected EOF"), "{}", stderr(&o));
    // Output that looks like an end marker with a wrong nonce is just output.
    let o = w.run(&[
        "invoke",
        "1",
        "--",
        "printf '\\x00\\x01LINGER:forged:0\\x01\\x00'; echo after",
    ]);
    assert_eq!(o.stdout, b"\x00\x01LINGER:forged:0\x01\x00after\n".to_vec());
    assert_eq!(
        w.ok(&["invoke", "1", "--", "echo still-alive"]),
        "still-alive\n"
    );
}

#[test]
fn a_gigabyte_of_output_arrives_whole() {
    let w = World::new();
    w.ok(&["new", "localhost"]);
    let o = w
        .linger(&[
            "invoke",
            "1",
            "--",
            "head -c 1073741824 /dev/zero; echo done >&2",
        ])
        .stdout(Stdio::piped())
        .output()
        .expect("run");
    assert!(o.status.success());
    assert_eq!(o.stdout.len(), 1 << 30);
    assert!(o.stdout.iter().all(|&b| b == 0));
    assert_eq!(stderr(&o), "done\n");
}

#[test]
fn second_invoke_waits_then_fails_busy() {
    let w = World::new();
    w.ok(&["new", "localhost"]);
    let first = w
        .linger(&["invoke", "1", "--", "touch started; sleep 3; echo first"])
        .current_dir(w.dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    eventually("the first command to run", || {
        w.ok(&["get", "1", "--json"])
            .contains("\"availability\":\"Busy\"")
    });
    let o = w.run(&["invoke", "1", "--wait", "1s", "--", "echo second"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("session busy"), "{}", stderr(&o));
    // A waiting invoke runs once the first is done, and each gets only its own output.
    let waiting = w.run(&["invoke", "1", "--wait", "1m", "--", "echo third"]);
    assert_eq!(stdout(&waiting), "third\n");
    let o = first.wait_with_output().expect("first");
    assert_eq!(stdout(&o), "first\n");
}

#[test]
fn ctrl_c_stops_the_command_and_keeps_the_session() {
    let w = World::new();
    w.ok(&["new", "localhost"]);
    w.ok(&["invoke", "1", "--", "kept=yes"]);
    let child = w
        .linger(&["invoke", "1", "--", "sleep 300; echo not-reached"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    eventually("the command to run", || {
        w.ok(&["get", "1", "--json"]).contains("sleep 300")
    });
    common::kill(child.id() as i32, nix::sys::signal::Signal::SIGINT);
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(!stdout(&o).contains("not-reached"));
    assert_eq!(w.ok(&["invoke", "1", "--", "echo $kept"]), "yes\n");
}

#[test]
fn ad_hoc_and_several_sessions() {
    let w = World::new();
    let o = w.run(&[
        "invoke",
        "--computer",
        "localhost",
        "--",
        "echo adhoc; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stdout(&o), "adhoc\n");
    // The temporary session is gone, on the server and in the registry.
    assert_eq!(w.ok(&["get", "--computer", "localhost"]), "");
    assert_eq!(w.ok(&["get"]), "");

    w.ok(&["new", "localhost", "--name", "a"]);
    w.ok(&["new", "localhost", "--name", "b"]);
    let o = w.run(&[
        "invoke",
        "a",
        "b",
        "--",
        "echo $LINGER_SESSION_NAME; printf partial; [ $LINGER_SESSION_NAME = b ] && exit 4; true",
    ]);
    assert_eq!(o.status.code(), Some(4));
    let mut lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "[localhost] a",
            "[localhost] b",
            "[localhost] partial",
            "[localhost] partial"
        ]
    );
    assert!(
        stderr(&o).contains("1 of 2 targets exited non-zero: [localhost] 4"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn errors_are_one_line_with_their_exit_code() {
    let w = World::new();
    let o = w.run(&["get", "nosuch"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).starts_with("linger: error: no session matches 'nosuch'"));
    assert_eq!(stderr(&o).lines().count(), 1);

    let o = w.run(&["new", "localhost", "--idle-timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    let o = w.run(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));

    let o = w.run(&["--json", "get", "nosuch"]);
    let last = json_lines(&stdout(&o)).pop().expect("a record");
    assert_eq!(last["error"]["kind"], "not_found");
    assert_eq!(last["error"]["exit_code"], 3);

    // The idle timeout must respect the server's limits, named in the error.
    let o = w.run(&["new", "localhost", "--idle-timeout", "5s"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("minimum of 1m"), "{}", stderr(&o));

    // A daemon that cannot be started: exit 6, one line.
    let o = w
        .linger(&["new", "localhost"])
        .env("LINGERD", "/nonexistent/lingerd")
        .output()
        .expect("run");
    // The daemon from the earlier calls is still up, so stop it first for this check.
    if w.daemon_pid().is_some() {
        assert!(o.status.success());
    }
    let w2 = World::new();
    let o = w2
        .linger(&["get", "--computer", "localhost"])
        .env("LINGERD", "/nonexistent/lingerd")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("linger: error: cannot start lingerd"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1);

    let o = w.run(&["get", "--computer", "web01.example"]);
    assert_eq!(o.status.code(), Some(6));

    // --computer looks on the server, and the message says so, not "in this client".
    let o = w.run(&["connect", "--computer", "localhost", "--name", "nosuch"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .starts_with("linger: error: no session of yours matching 'nosuch' on localhost ("),
        "{}",
        stderr(&o)
    );
    // A name in use is reported on the computer as typed, not the server's host name.
    w.ok(&["new", "localhost", "--name", "dup"]);
    let o = w.run(&["new", "localhost", "--name", "dup"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .starts_with("linger: error: a session named 'dup' already exists on localhost ("),
        "{}",
        stderr(&o)
    );
}

/// SIGKILLs the session host of the session whose `get --json` instance_id is `id`.
fn kill_host(w: &World, id: &serde_json::Value) {
    let meta = std::fs::read_to_string(
        w.state_dir()
            .join("sessions")
            .join(id.as_str().expect("id"))
            .join("meta.json"),
    )
    .expect("meta");
    let host: serde_json::Value = serde_json::from_str(&meta).expect("json");
    common::kill(
        host["host_pid"].as_i64().expect("pid") as i32,
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn a_killed_session_host_shows_closed() {
    let w = World::new();
    w.ok(&["new", "localhost"]);
    w.ok(&["new", "localhost", "--name", "other"]);
    let pids = w.host_pids();
    assert_eq!(pids.len(), 2);
    let first = json_lines(&w.ok(&["get", "1", "--json"]))[0]["instance_id"].clone();
    kill_host(&w, &first);
    eventually("the session to close", || {
        w.ok(&["get", "1"]).contains("Closed")
    });
    assert!(w
        .ok(&["get", "1", "--json"])
        .contains("exited unexpectedly"));
    // Refused with the reason, said once (from the server, then from the registry).
    for _ in 0..2 {
        let o = w.run(&["invoke", "1", "--", "true"]);
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.matches("is closed").count(), 1, "{err}");
        assert!(err.contains("exited unexpectedly"), "{err}");
    }
    assert_eq!(w.ok(&["invoke", "other", "--", "echo fine"]), "fine\n");

    // Found closed by a command (not by `get`): the registry keeps the server's reason, not
    // its whole sentence, so the next refusal does not say it twice.
    let other = json_lines(&w.ok(&["get", "other", "--json"]))[0]["instance_id"].clone();
    kill_host(&w, &other);
    eventually("invoke to find the session closed", || {
        w.run(&["invoke", "other", "--", "true"]).status.code() == Some(3)
    });
    let err = stderr(&w.run(&["invoke", "other", "--", "true"]));
    assert_eq!(err.matches("is closed").count(), 1, "{err}");
    assert!(err.contains("exited unexpectedly"), "{err}");
}

#[test]
fn a_corrupt_registry_is_one_clear_error() {
    let w = World::new();
    std::fs::write(w.path("homeA/sessions.json"), b"{not json").expect("write");
    let o = w.run(&["get"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("linger: error: ") && err.contains("sessions.json is corrupt"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

/// `new` on several computers (a comma list and @FILE): one computer's failure is reported
/// on its own line without stopping the others, then a summary; the exit code is the
/// failure's.
#[test]
fn new_on_several_computers_reports_each_failure() {
    let w = World::new();
    let list = w.path("computers.txt");
    std::fs::write(&list, "# a comment\nlocalhost\n\nnosuch.invalid\n").expect("list");
    let o = w.run(&[
        "new",
        "localhost,.",
        &format!("@{}", list.display()),
        "--throttle",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    let table = stdout(&o);
    let err = stderr(&o);
    assert_eq!(table.matches("localhost").count(), 3, "{table}\n{err}");
    assert!(err.contains("[nosuch.invalid]"), "{err}");
    assert!(
        err.contains("1 of 4 computers failed: nosuch.invalid"),
        "{err}"
    );
    // With --json the last record is the error, not a remote status.
    let o = w.run(&["--json", "new", "localhost,nosuch.invalid"]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    let out = stdout(&o);
    let last: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("records")).expect("json");
    assert_eq!(last["error"]["kind"], "connection", "{out}");
    let o = w.run(&[
        "--json",
        "invoke",
        "--computer",
        "localhost,nosuch.invalid",
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    let out = stdout(&o);
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let last = records.last().expect("records");
    assert_eq!(last["error"]["kind"], "connection", "{out}");
    // SPEC §16: each target's own record comes before the final one.
    let of = |computer: &str| {
        records[..records.len() - 1]
            .iter()
            .find(|r| {
                r["computer_name"] == computer
                    && (r.get("exit_code").is_some() || r.get("error").is_some())
            })
            .unwrap_or_else(|| panic!("no record for {computer}: {out}"))
            .clone()
    };
    assert_eq!(of("localhost")["exit_code"], 0, "{out}");
    assert_eq!(of("nosuch.invalid")["error"]["kind"], "connection", "{out}");
    let o = w.run(&["new", "localhost", "--throttle", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// A socket directory others can write (made first by someone else, or opened up) is
/// refused by the client and by the daemon alike, before anything is sent or bound there.
#[test]
fn an_open_socket_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let dir = w.path("run/linger");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let o = w.run(&["new", "localhost"]);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.contains("has mode 777") && err.lines().count() <= 2,
        "{err}"
    );
    let o = w
        .lingerd(&["--socket", w.socket().to_str().expect("utf-8")])
        .output()
        .expect("lingerd");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("has mode 777"), "{}", stderr(&o));
    assert!(!w.socket().exists(), "nothing was bound there");
}

/// A descriptor the daemon's starter left open does not reach sessions' shells; a closed
/// stderr does not make the CLI panic (exit 101) on its error message.
#[test]
fn inherited_descriptors_stay_out_of_sessions_and_a_closed_stderr_is_no_panic() {
    use std::os::unix::process::CommandExt;
    let w = World::new();
    let leaked = std::fs::File::create(w.path("leaked")).expect("file");
    let raw = std::os::fd::AsRawFd::as_raw_fd(&leaked);
    let mut daemon = w.lingerd(&["--socket", w.socket().to_str().expect("utf-8")]);
    // SAFETY: dup2 is async-signal-safe; fd 9 is left open across exec on purpose.
    unsafe {
        daemon.pre_exec(move || {
            if libc::dup2(raw, 9) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut daemon = daemon.spawn().expect("lingerd");
    eventually("the socket", || w.socket().exists());
    w.ok(&["new", "localhost", "--name", "fds"]);
    let fds = w.ok(&["invoke", "fds", "--", "ls /proc/$$/fd"]);
    let _ = daemon.kill();
    let _ = daemon.wait();
    let fds: Vec<&str> = fds.split_whitespace().collect();
    assert!(
        !fds.contains(&"9"),
        "fd 9 reached the session's shell: {fds:?}"
    );

    let (r, wr) = nix::unistd::pipe().expect("pipe");
    drop(r);
    let o = w
        .linger(&["invoke", "no-such-session", "--", "true"])
        .stderr(std::process::Stdio::from(wr))
        .output()
        .expect("linger");
    assert_eq!(o.status.code(), Some(3), "a panic exits 101");
}

/// The client's own files say where its sessions are and let it claim them: its user's only.
#[test]
fn the_clients_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "mine"]);
    for file in ["client_id", "sessions.json", "sessions.journal"] {
        let mode = std::fs::metadata(w.path("homeA").join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}

/// logrotate's convention: after the log is moved away, SIGUSR1 makes the daemon write a new
/// one at the same path.
#[test]
fn sigusr1_reopens_the_daemons_log() {
    let mut w = World::new();
    w.start_daemon();
    let log = w.state_dir().join("lingerd.log");
    eventually("the first log line", || log.exists());
    std::fs::rename(&log, w.state_dir().join("lingerd.log.1")).expect("move the log away");
    common::kill(
        w.daemon_pid().expect("daemon"),
        nix::sys::signal::Signal::SIGUSR1,
    );
    eventually("a new log", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("log files reopened"))
    });
    w.ok(&["new", "localhost", "--name", "after"]);
    assert!(std::fs::read_to_string(&log)
        .expect("log")
        .contains("session started"));
}

/// SPEC §16: a computer that cannot be reached is reported as soon as that is known, while
/// the other targets still run.
#[test]
fn an_unreachable_computer_is_reported_while_the_others_run() {
    let w = World::new();
    let flag = w.path("go");
    let mut r = common::Running::start(w.linger(&[
        "invoke",
        "--computer",
        "localhost,nosuch.invalid",
        "--",
        &format!(
            "while [ ! -e '{}' ]; do sleep 0.05; done; echo done",
            flag.display()
        ),
    ]));
    common::eventually("the unreachable computer's error", || {
        r.stderr().contains("[nosuch.invalid]")
    });
    assert!(!r.exited(), "it was reported only at the end");
    std::fs::write(&flag, "").expect("flag");
    let (code, out, err) = r.finish();
    assert_eq!(code, Some(6), "{err}");
    assert!(out.contains("done"), "{out}");
    assert_eq!(
        err.matches("[nosuch.invalid]").count(),
        1,
        "said once: {err}"
    );
}

/// SPEC §17: `linger --version` and `lingerd --version` print the version and the commit.
#[test]
fn version_names_the_commit() {
    let w = World::new();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    for (name, out) in [
        ("linger", w.run(&["--version"])),
        (
            "lingerd",
            w.lingerd(&["--version"]).output().expect("lingerd"),
        ),
    ] {
        let text = stdout(&out);
        let line = text.trim();
        let commit = line
            .strip_prefix(&format!("{name} {} (commit ", env!("CARGO_PKG_VERSION")))
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{name} --version printed {line:?}"));
        match &head {
            Some(head) => assert!(
                head.starts_with(commit) && commit.len() == 12,
                "{line} vs {head}"
            ),
            None => assert_eq!(commit, "unknown", "{line}"),
        }
    }
}

/// SPEC §17: `linger completions bash` completes subcommands, flags and, from the registry,
/// session names. Driven through bash itself: the script is sourced and its completion
/// function called as bash calls it on Tab.
#[test]
fn bash_completion_offers_subcommands_flags_and_session_names() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Webfarm"]);
    w.ok(&["new", "localhost", "--name", "Backup"]);
    let complete = |words: &[&str]| -> Vec<String> {
        let cword = words.len() - 1;
        let quoted = |w: &str| format!("'{w}'");
        let script = format!(
            "source <(\"$LINGER\" completions bash) || exit 9\n\
             COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_TYPE=9\n\
             _clap_complete_linger linger {cur} {prev}\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            words = words
                .iter()
                .map(|w| quoted(w))
                .collect::<Vec<_>>()
                .join(" "),
            cur = quoted(words[cword]),
            prev = quoted(words[cword - 1]),
        );
        // The world's environment (its client home), with bash in place of linger.
        let like = w.linger(&[]);
        let mut bash = std::process::Command::new("bash");
        bash.arg("-c")
            .arg(&script)
            .env("LINGER", like.get_program());
        for (k, v) in like.get_envs() {
            match v {
                Some(v) => bash.env(k, v),
                None => bash.env_remove(k),
            };
        }
        let out = bash.output().expect("bash");
        assert!(out.status.success(), "bash: {}", stderr(&out));
        stdout(&out).lines().map(str::to_string).collect()
    };
    assert_eq!(complete(&["linger", "inv"]), ["invoke"]);
    assert_eq!(
        complete(&["linger", "invoke", "--in-dis"]),
        ["--in-disconnected-session"]
    );
    assert_eq!(complete(&["linger", "remove", "Web"]), ["Webfarm"]);
    let mut all = complete(&["linger", "receive", ""])
        .into_iter()
        .filter(|c| !c.starts_with('-'))
        .collect::<Vec<_>>();
    all.sort();
    assert_eq!(all, ["Backup", "Webfarm"]);
    // Without a registry there is nothing to offer, and nothing is created.
    let fresh = World::new();
    let out = fresh
        .linger(&["completions", "zsh"])
        .output()
        .expect("linger completions zsh");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("LINGER_COMPLETE"), "{}", stdout(&out));
    let out = fresh
        .linger(&["completions", "fish"])
        .output()
        .expect("fish");
    assert!(stdout(&out).contains("complete"), "{}", stdout(&out));
    let out = fresh
        .linger(&["--", "linger", "remove", ""])
        .env("LINGER_COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", "2")
        .output()
        .expect("complete in a fresh home");
    assert!(out.status.success(), "{}", stderr(&out));
    let home = std::fs::read_dir(fresh.path("homeA"))
        .expect("home")
        .count();
    assert_eq!(home, 0, "completion created files in the client home");
}

/// SPEC §17: `linger manpage DIR` writes linger.1 and a page per subcommand, in roff.
#[test]
fn manpage_writes_a_page_per_subcommand() {
    let w = World::new();
    let dir = w.path("man");
    w.ok(&["manpage", dir.to_str().expect("utf-8 path")]);
    for page in ["linger.1", "linger-invoke.1", "linger-job-receive.1"] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    let invoke = std::fs::read_to_string(dir.join("linger-invoke.1")).expect("invoke page");
    assert!(invoke.contains("in\\-disconnected\\-session"), "{invoke}");
    let top = std::fs::read_to_string(dir.join("linger.1")).expect("top page");
    assert!(top.contains("linger\\-invoke(1)"), "{top}");
}

/// A duration too long to mean anything is a usage error (it once wrapped round to 1 h).
#[test]
fn a_duration_beyond_a_century_is_refused() {
    let w = World::new();
    let o = w.run(&[
        "new",
        "localhost",
        "--name",
        "x",
        "--idle-timeout",
        "18446744073713152s",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("too long"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

/// Issue 17: a script given without `--` is read as sessions or as invoke's own flags; both
/// say to put `--` before the script, with the command line that works (exit 2).
#[test]
fn a_script_without_dashes_gets_the_command_that_works() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "s"]);
    let o = w.run(&["invoke", "s", "echo", "hi"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("put `--` before the script: `linger invoke s -- echo hi`"),
        "{}",
        stderr(&o)
    );
    let o = w.run(&["invoke", "s", "ls", "-la"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("put `--` before the script: `linger invoke s -- ls -la`"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    // And the line it suggests works.
    assert_eq!(w.ok(&["invoke", "s", "--", "echo", "hi"]), "hi\n");
}

/// Issue 17: the running command is in the `get` table (a Command column, shown when any
/// session runs one), not only in JSON.
#[test]
fn get_shows_the_running_command() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "idle"]);
    let table = w.ok(&["get"]);
    assert!(!table.contains("Command"), "{table}");
    let out = w
        .disconnected("busy", "sleep 300 # the long one")
        .output()
        .expect("start");
    assert!(out.status.success(), "{}", stderr(&out));
    let table = w.ok(&["get"]);
    let header = table
        .lines()
        .find(|l| l.contains("Availability"))
        .expect("header");
    assert!(header.trim_end().ends_with("Command"), "{table}");
    let busy = table
        .lines()
        .find(|l| l.contains("busy"))
        .expect("busy row");
    assert!(
        busy.trim_end().ends_with("sleep 300 # the long one"),
        "{table}"
    );
    w.ok(&["remove", "busy"]);
}

/// Issue 17 (SPEC §3): a removed session leaves `get`; one that ended otherwise stays,
/// Closed, with its reason in the table until it is removed.
#[test]
fn a_removed_session_leaves_get_and_an_ended_one_shows_why() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "gone"]);
    w.ok(&["new", "localhost", "--name", "killed"]);
    w.ok(&["new", "localhost", "--name", "fine"]);
    w.ok(&["remove", "gone"]);
    let killed = w
        .host_pids()
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("session killed"))
        })
        .expect("the host of 'killed'");
    common::kill(killed, nix::sys::signal::Signal::SIGKILL);
    common::eventually("the killed session to be seen closed", || {
        w.ok(&["get"]).contains("Closed")
    });
    let table = w.ok(&["get"]);
    assert!(!table.contains("gone"), "{table}");
    let header = table
        .lines()
        .find(|l| l.contains("Availability"))
        .expect("header");
    assert!(header.trim_end().ends_with("Reason"), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains("killed"))
        .expect("killed row");
    assert!(
        row.contains("Closed") && row.contains("exited unexpectedly"),
        "{table}"
    );
    let fine = table
        .lines()
        .find(|l| l.contains("fine"))
        .expect("fine row");
    assert!(fine.contains("Opened"), "{table}");
    w.ok(&["remove", "killed"]);
    assert!(!w.ok(&["get"]).contains("Reason"));
}

/// Issue 17: `linger-tour --help` explains the tour instead of running it, and `enter
/// --json` is refused rather than mixing raw output into records.
#[test]
fn tour_help_and_enter_json_say_what_they_are() {
    let tour = env!("CARGO_BIN_EXE_linger-tour");
    let out = std::process::Command::new(tour)
        .arg("--help")
        .output()
        .expect("tour");
    assert!(out.status.success(), "{:?} {}", out.status, stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("guided tour") && text.contains("Usage: linger-tour"),
        "{text}"
    );
    assert!(!text.contains("[laptop]"), "the tour did not run: {text}");
    let out = std::process::Command::new(tour)
        .arg("--bogus")
        .output()
        .expect("tour");
    assert_eq!(out.status.code(), Some(2));
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "e"]);
    let out = w.run(&["--json", "enter", "e"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // With --json the error is a record, as every command's.
    let record = stdout(&out);
    assert!(
        record.contains("--json does not apply") && record.contains("\"usage\""),
        "{record}"
    );
}

/// A fan-out's Ids follow the order its rows print (the computers as given), not the order
/// the computers answered in.
#[test]
fn fan_out_ids_follow_the_printed_order() {
    let w = World::new();
    let out = w
        .linger(&[
            "new",
            "localhost,nosuch.invalid,localhost,localhost",
            "--json",
        ])
        .output()
        .expect("linger");
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A name that does not resolve is not a daemon that is down.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot find computer nosuch.invalid"), "{err}");
    assert!(!err.contains("is lingerd running"), "{err}");
    let ids: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_u64())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "{ids:?}");
    let table = w.ok(&["get"]);
    let listed: Vec<&str> = table
        .lines()
        .skip(3)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let names: Vec<String> = ids.iter().map(|id| format!("Session{id}")).collect();
    assert_eq!(listed, names, "{table}");
}

/// A command that waits for a busy session says what it waits for, as it starts waiting,
/// instead of printing nothing until the session is free.
#[test]
fn a_busy_wait_says_what_runs_in_the_session() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "busy"]);
    let fifo = w.path("gate");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let holder = common::Running::start(w.linger(&[
        "invoke",
        "busy",
        "--",
        &format!("read line < {}; echo \"got $line\"", fifo.display()),
    ]));
    eventually("the first command to run", || {
        w.ok(&["get", "busy", "--json"])
            .contains("\"running_command\":\"read line")
    });
    let waiter = common::Running::start(w.linger(&["invoke", "busy", "--", "echo second"]));
    eventually("the waiting notice", || {
        waiter
            .stderr()
            .contains("linger: waiting for session busy, running `read line <")
    });
    std::fs::write(&fifo, "go\n").expect("open the gate");
    let (code, out, _) = holder.finish();
    assert_eq!((code, out.as_str()), (Some(0), "got go\n"));
    let (code, out, err) = waiter.finish();
    assert_eq!((code, out.as_str()), (Some(0), "second\n"), "{err}");
    assert_eq!(err.lines().count(), 1, "one notice: {err}");
}
