//! Session configurations (SPEC §10) and client options (SPEC §11), against a real daemon:
//! the config file and its drop-ins, `linger config list`, every configuration key, SIGHUP
//! reloads (good and bad), restricted sessions under hostile input, and the options'
//! precedence, `linger option show` and the timeouts and output limit they set.

use crate::common;

use std::io::{Read, Write};
use std::process::Output;

use common::{eventually, ok_as, run_as, stderr, stdout, World};
use nix::sys::signal::Signal;

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn session_json(w: &World, name: &str) -> serde_json::Value {
    let out = ok_as(w, "homeA", &["--json", "get", name]);
    json_lines(&out).into_iter().next().expect("a session")
}

fn refused(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn configurations_from_the_file_and_drop_ins_shape_sessions() {
    let mut w = World::new();
    let startup = w.path("startup.sh");
    std::fs::write(
        &startup,
        "greet() { echo \"hello from $1\"; }\nFROM_STARTUP=yes\necho startup-ran\n",
    )
    .expect("startup");
    std::fs::create_dir_all(w.path("work")).expect("work dir");
    w.write_config(&format!(
        r#"[server]
min_idle_timeout = "1s"

[[configuration]]
name = "ops"
shell = ["bash", "--noprofile", "--norc"]
startup = {startup:?}
environment = {{ STAGE = "prod" }}
working_directory = {work:?}
idle_timeout = "90m"
max_idle_timeout = "3h"
output_buffering = "drop"
output_buffer_size = "64KiB"
spool_limit = "1MiB"
"#,
        startup = startup.display().to_string(),
        work = w.path("work").display().to_string(),
    ));
    std::fs::create_dir_all(w.path("config/linger/lingerd.d")).expect("drop-ins");
    std::fs::write(
        w.path("config/linger/lingerd.d/50-sh.toml"),
        format!(
            "[[configuration]]\nname = \"plain-sh\"\nshell = [\"bash\", \"--noprofile\", \"--norc\", \"-O\", \"extglob\"]\nidle_timeout = \"5m\"\n[[configuration]]\nname = \"as-nobody\"\nrun_as = \"nobody\"\nallowed_principals = [{me:?}]\n",
            me = nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .expect("this test's user"),
        ),
    )
    .expect("drop-in");
    w.start_daemon();

    let table = ok_as(&w, "homeA", &["config", "list", "--computer", "localhost"]);
    let lines: Vec<&str> = table.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "Name",
            "IdleTimeout",
            "MaxIdleTimeout",
            "OutputBufferingMode",
            "Shell",
            "Restricted"
        ]
    );
    assert!(
        table.contains("default") && table.contains("plain-sh"),
        "{table}"
    );
    let ops = lines
        .iter()
        .find(|l| l.starts_with("ops"))
        .expect("ops row");
    assert_eq!(
        ops.split_whitespace().collect::<Vec<_>>(),
        [
            "ops",
            "1h",
            "30m",
            "3h",
            "drop",
            "bash",
            "--noprofile",
            "--norc",
            "False"
        ]
    );
    let list = json_lines(&ok_as(&w, "homeA", &["--json", "config", "list"]));
    let ops = list.iter().find(|c| c["name"] == "ops").expect("ops");
    assert_eq!(ops["idle_timeout_s"], 5400);
    assert_eq!(ops["output_buffer_size"], 65536);
    assert_eq!(ops["spool_limit"], 1 << 20);
    assert_eq!(ops["max_sessions_per_user"], 25);
    assert_eq!(ops["max_memory_per_session"], 1u64 << 30);
    assert!(list.last().expect("records")["exit_code"] == 0);

    // A session of "ops": its startup ran first, its environment, directory, timeout and
    // buffering are the configuration's.
    ok_as(
        &w,
        "homeA",
        &["new", "localhost", "--name", "o", "--configuration", "ops"],
    );
    assert_eq!(
        ok_as(
            &w,
            "homeA",
            &["invoke", "o", "--", "greet $STAGE; echo $FROM_STARTUP; pwd"]
        ),
        format!("hello from prod\nyes\n{}\n", w.path("work").display())
    );
    let s = session_json(&w, "o");
    assert_eq!(s["idle_timeout_s"], 5400);
    assert_eq!(s["output_buffering_mode"], "drop");
    assert_eq!(s["configuration_name"], "ops");
    // The startup's own output went to its log, not to a command.
    let logs: Vec<String> = std::fs::read_dir(w.state_dir().join("sessions"))
        .expect("sessions")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("startup.log")).ok())
        .collect();
    assert!(logs.iter().any(|l| l.contains("startup-ran")), "{logs:?}");

    // The drop-in's configuration, and the limits of the main file's.
    ok_as(
        &w,
        "homeA",
        &[
            "new",
            "localhost",
            "--name",
            "p",
            "--configuration",
            "plain-sh",
        ],
    );
    assert_eq!(
        ok_as(
            &w,
            "homeA",
            &["invoke", "p", "--", "shopt extglob | cut -f2"]
        )
        .trim(),
        "on"
    );
    let o = run_as(
        &w,
        "homeA",
        &[
            "new",
            "localhost",
            "--configuration",
            "ops",
            "--idle-timeout",
            "4h",
        ],
    );
    let err = refused(&o);
    assert!(
        err.contains("exceeds the maximum of 3h set by configuration 'ops'"),
        "{err}"
    );
    let o = run_as(
        &w,
        "homeA",
        &["new", "localhost", "--configuration", "as-nobody"],
    );
    let err = refused(&o);
    assert!(err.contains("only a system daemon"), "{err}");
    let o = run_as(
        &w,
        "homeA",
        &["new", "localhost", "--configuration", "nosuch"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("linger config list"), "{}", stderr(&o));
}

#[test]
fn sighup_reloads_and_a_bad_reload_keeps_the_configuration_in_force() {
    let mut w = World::new();
    w.write_config(
        "[server]\nmin_idle_timeout = \"1s\"\n[[configuration]]\nname = \"a\"\nmax_idle_timeout = \"5h\"\n",
    );
    w.start_daemon();
    ok_as(
        &w,
        "homeA",
        &["new", "localhost", "--name", "old", "--configuration", "a"],
    );
    let daemon = w.daemon_pid().expect("daemon");

    // A good reload: "a" now allows at most 1h, and a drop-in adds "b".
    w.write_config(
        "[server]\nmin_idle_timeout = \"1s\"\n[[configuration]]\nname = \"a\"\nidle_timeout = \"30m\"\nmax_idle_timeout = \"1h\"\n",
    );
    std::fs::create_dir_all(w.path("config/linger/lingerd.d")).expect("dir");
    std::fs::write(
        w.path("config/linger/lingerd.d/b.toml"),
        "[[configuration]]\nname = \"b\"\n",
    )
    .expect("b");
    common::kill(daemon, Signal::SIGHUP);
    eventually("the reload", || {
        w.daemon_log().contains("configuration reloaded")
    });
    let t = ok_as(&w, "homeA", &["config", "list"]);
    assert!(t.contains("\nb "), "{t}");
    // The running session keeps what it was made with; new ones get the new limit.
    ok_as(&w, "homeA", &["disconnect", "old", "--idle-timeout", "3h"]);
    let o = run_as(
        &w,
        "homeA",
        &[
            "new",
            "localhost",
            "--configuration",
            "a",
            "--idle-timeout",
            "3h",
        ],
    );
    refused(&o);

    // A bad reload: logged with file, line and field; the configuration in force stays.
    std::fs::write(
        w.path("config/linger/lingerd.d/c.toml"),
        "[[configuration]]\nname = \"c\"\n\nspool_limit = \"lots\"\n",
    )
    .expect("c");
    common::kill(daemon, Signal::SIGHUP);
    eventually("the refused reload", || {
        w.daemon_log().contains("reload refused")
    });
    let log = w.daemon_log();
    let line = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .expect("the line");
    assert!(
        line.contains("c.toml") && line.contains("line 4") && line.contains("spool_limit"),
        "{line}"
    );
    let t = ok_as(&w, "homeA", &["config", "list"]);
    assert!(t.contains("\nb ") && !t.contains("\nc "), "{t}");
    assert!(common::alive(daemon));
}

#[test]
fn restricted_sessions_run_only_listed_programs_and_no_shell_syntax() {
    let mut w = World::new();
    w.write_config(
        "[[configuration]]\nname = \"locked\"\nrestricted = [\"echo\", \"id\", \"printf\"]\n",
    );
    w.start_daemon();
    let t = ok_as(&w, "homeA", &["config", "list"]);
    let row = t.lines().find(|l| l.starts_with("locked")).expect("row");
    assert!(row.ends_with("True"), "{row}");
    let list = json_lines(&ok_as(&w, "homeA", &["--json", "config", "list"]));
    let locked = list.iter().find(|c| c["name"] == "locked").expect("locked");
    // Resolved at load to absolute paths, which is what the session runs.
    let programs: Vec<&str> = locked["restricted"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert_eq!(programs.len(), 3, "{programs:?}");
    for (path, name) in programs.iter().zip(["echo", "id", "printf"]) {
        assert!(
            path.starts_with('/') && path.ends_with(&format!("/{name}")),
            "{path}"
        );
    }
    let shown = programs.join(", ");

    ok_as(
        &w,
        "homeA",
        &[
            "new",
            "localhost",
            "--name",
            "r",
            "--configuration",
            "locked",
        ],
    );
    assert_eq!(
        ok_as(
            &w,
            "homeA",
            &["invoke", "r", "--", "echo hello 'big world' \"it's\""]
        ),
        "hello big world it's\n"
    );
    // Quoted shell characters are plain text; --arg values are more words.
    assert_eq!(
        ok_as(
            &w,
            "homeA",
            &["invoke", "r", "--arg", "$(id)", "--", "echo ';' '`id`'"]
        ),
        "; `id` $(id)\n"
    );
    let canary = w.path("pwned");
    let c = canary.display().to_string();
    let hostile = [
        format!("echo x; touch {c}"),
        format!("echo x && touch {c}"),
        format!("echo x | tee {c}"),
        format!("echo x > {c}"),
        format!("echo $(touch {c})"),
        format!("echo `touch {c}`"),
        format!("echo \"$(touch {c})\""),
        format!("echo x & touch {c}"),
        format!("echo x\ntouch {c}"),
        "echo $HOME".to_string(),
        "echo ~".to_string(),
        "echo *".to_string(),
        "echo x # comment".to_string(),
        "echo \\x".to_string(),
        "echo 'unclosed".to_string(),
        "(echo x)".to_string(),
        format!("touch {c}"),
        "bash -c id".to_string(),
        "exec id".to_string(),
        "X=1 echo x".to_string(),
        "/bin/echo x".to_string(),
        String::new(),
    ];
    for script in &hostile {
        let o = run_as(&w, "homeA", &["invoke", "r", "--", script]);
        let err = refused(&o);
        assert!(
            err.contains("restricted session (configuration 'locked')"),
            "{script:?}: {err}"
        );
        assert!(err.contains(&shown), "{err}");
        assert_eq!(stdout(&o), "", "{script:?} ran");
    }
    assert!(!canary.exists(), "a refused command ran");
    let o = run_as(&w, "homeA", &["invoke", "r", "--", "cat /etc/passwd"]);
    assert!(refused(&o).contains("'cat' is not an allowed program"));
    let o = run_as(&w, "homeA", &["invoke", "r", "--", "echo a | id"]);
    assert!(refused(&o).contains("'|' is shell syntax"));
    // Jobs go through the same gate.
    let o = run_as(
        &w,
        "homeA",
        &["job", "start", "r", "--", format!("touch {c}").as_str()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!canary.exists());
    // The refusals are in the audit log.
    let audit = std::fs::read_to_string(w.state_dir().join("audit.log")).expect("audit");
    assert!(audit.contains("\"command_refused\""));
    // The session is unharmed.
    assert_eq!(
        ok_as(&w, "homeA", &["invoke", "r", "--", "printf ok"]),
        "ok"
    );
    // An allowed builtin cannot reach the restricted shell: `printf -v PATH DIR` used to set
    // the shell's PATH, and the next `id` ran a program planted in DIR.
    let planted = w.path("planted");
    std::fs::create_dir_all(&planted).expect("mkdir");
    let fake = planted.join("id");
    std::fs::write(&fake, format!("#!/bin/sh\ntouch {c}\n")).expect("plant");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let _ = run_as(
        &w,
        "homeA",
        &[
            "invoke",
            "r",
            "--",
            &format!("printf -v PATH {}", planted.display()),
        ],
    );
    let o = run_as(&w, "homeA", &["invoke", "r", "--", "id -u"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!canary.exists(), "the planted program ran");
}

/// Restricted programs that launch others are refused at load unless accepted knowingly,
/// and a program's argument pattern (as JEA's ValidatePattern) admits only what it says.
#[test]
fn restricted_launchers_and_argument_patterns() {
    let mut w = World::new();
    w.write_config("[[configuration]]\nname = \"r\"\nrestricted = [\"id\", \"env\"]\n");
    let o = w
        .lingerd(&["--socket", w.socket().to_str().expect("utf-8")])
        .output()
        .expect("lingerd");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("'env' runs other programs"),
        "{}",
        stderr(&o)
    );
    w.write_config(
        "[[configuration]]\nname = \"r\"\nrestricted = [\"id\", \"echo\"]\narguments = { id = \"-[ug]\", echo = \"(hello|bye) world\" }\n",
    );
    w.start_daemon();
    ok_as(
        &w,
        "homeA",
        &["new", "localhost", "--name", "p", "--configuration", "r"],
    );
    assert_eq!(
        ok_as(&w, "homeA", &["invoke", "p", "--", "echo bye world"]),
        "bye world\n"
    );
    ok_as(&w, "homeA", &["invoke", "p", "--", "id -g"]);
    for refused_script in ["id", "id -un", "echo bye", "echo hello world again"] {
        let o = run_as(&w, "homeA", &["invoke", "p", "--", refused_script]);
        assert_eq!(o.status.code(), Some(2), "{refused_script}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("arguments are not among those allowed"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn limits_on_sessions_memory_and_processes() {
    let mut w = World::new();
    w.write_config(
        "[[configuration]]\nname = \"small\"\nmax_sessions_per_user = 2\nmax_memory_per_session = \"64MiB\"\nmax_processes_per_session = 16\n",
    );
    w.start_daemon();
    ok_as(
        &w,
        "homeA",
        &[
            "new",
            "localhost",
            "--name",
            "s1",
            "--configuration",
            "small",
        ],
    );
    ok_as(
        &w,
        "homeA",
        &[
            "new",
            "localhost",
            "--name",
            "s2",
            "--configuration",
            "small",
        ],
    );
    let o = run_as(
        &w,
        "homeA",
        &[
            "new",
            "localhost",
            "--name",
            "s3",
            "--configuration",
            "small",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("you have 2 sessions of configuration 'small'")
            && stderr(&o).contains("max_sessions_per_user"),
        "{}",
        stderr(&o)
    );
    // Other configurations are not counted against it; a removed session frees its place.
    ok_as(&w, "homeA", &["new", "localhost", "--name", "d"]);
    ok_as(&w, "homeA", &["remove", "s2"]);
    ok_as(
        &w,
        "homeA",
        &[
            "new",
            "localhost",
            "--name",
            "s3",
            "--configuration",
            "small",
        ],
    );

    // Memory: a command that needs more fails; one that needs less runs; the shell lives.
    let big = run_as(
        &w,
        "homeA",
        &[
            "invoke",
            "s1",
            "--",
            "python3 -c 'b = bytearray(256 << 20); b[::4096] = b\"x\" * len(b[::4096])'",
        ],
    );
    assert_ne!(big.status.code(), Some(0), "256 MiB fit in 64 MiB");
    ok_as(
        &w,
        "homeA",
        &[
            "invoke",
            "s1",
            "--",
            "python3 -c 'b = bytearray(8 << 20); b[::4096] = b\"x\" * len(b[::4096])'",
        ],
    );

    // Processes: forking stops at the limit.
    let forks = "python3 -c '
import os, time
n = 0
try:
    for _ in range(64):
        if os.fork() == 0:
            time.sleep(2)
            os._exit(0)
        n += 1
except OSError:
    pass
print(n)
'";
    let host_log = std::fs::read_dir(w.state_dir().join("sessions"))
        .expect("sessions")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("host.log")).ok())
        .collect::<Vec<_>>()
        .join("\n");
    let n: u32 = ok_as(&w, "homeA", &["invoke", "s1", "--", forks])
        .trim()
        .parse()
        .expect("a count");
    if host_log.contains("processes: cgroup") || !nix::unistd::geteuid().is_root() {
        assert!(n < 16, "{n} processes started under a limit of 16");
    } else {
        // RLIMIT_NPROC does not bind root: nothing to check without control groups.
        eprintln!("no control group for processes here; root ignores RLIMIT_NPROC");
    }
    assert_eq!(
        ok_as(&w, "homeA", &["invoke", "s1", "--", "echo alive"]),
        "alive\n"
    );
}

#[test]
fn options_precedence_show_and_unknown_keys() {
    let mut w = World::new();
    w.write_config("[server]\nmin_idle_timeout = \"1s\"\n");
    w.start_daemon();
    std::fs::write(
        w.path("homeA/options.toml"),
        "idle_timeout = \"2h\"\ncancel_timeout = \"5s\"\n",
    )
    .expect("options");
    // File < --option < flag.
    ok_as(&w, "homeA", &["new", "localhost", "--name", "f"]);
    assert_eq!(session_json(&w, "f")["idle_timeout_s"], 7200);
    ok_as(
        &w,
        "homeA",
        &[
            "--option",
            "idle_timeout=3h",
            "new",
            "localhost",
            "--name",
            "o",
        ],
    );
    assert_eq!(session_json(&w, "o")["idle_timeout_s"], 10800);
    ok_as(
        &w,
        "homeA",
        &[
            "--option",
            "idle_timeout=3h",
            "new",
            "localhost",
            "--name",
            "g",
            "--idle-timeout",
            "4h",
        ],
    );
    assert_eq!(session_json(&w, "g")["idle_timeout_s"], 14400);

    let shown = ok_as(
        &w,
        "homeA",
        &[
            "--option",
            "idle_timeout=3h",
            "--identity",
            "/k",
            "option",
            "show",
        ],
    );
    let row = |key: &str| -> Vec<String> {
        shown
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} in {shown}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("idle_timeout")[1..], ["3h", "--option"]);
    assert_eq!(row("cancel_timeout")[1], "5s");
    assert!(row("cancel_timeout")[2].ends_with("options.toml"));
    assert_eq!(row("open_timeout")[1..], ["3m", "default"]);
    assert_eq!(row("identity_file")[1..], ["/k", "flag"]);
    let json = json_lines(&ok_as(&w, "homeA", &["--json", "option", "show"]));
    assert_eq!(json.len(), linger::OPTION_KEYS.len() + 1);

    for bad in [
        vec!["--option", "idle_timout=1h", "get"],
        vec!["--option", "idle_timeout", "get"],
        vec!["--option", "output_buffering=sometimes", "get"],
    ] {
        let o = run_as(&w, "homeA", &bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1);
    }
    let o = run_as(&w, "homeA", &["--option", "idle_timout=1h", "get"]);
    assert!(
        stderr(&o).contains("unknown option 'idle_timout'"),
        "{}",
        stderr(&o)
    );
    std::fs::write(w.path("homeA/options.toml"), "colour = \"blue\"\n").expect("options");
    let o = run_as(&w, "homeA", &["get"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown option 'colour'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn max_received_data_stops_receiving_and_keeps_the_rest_on_the_server() {
    let mut w = World::new();
    w.start_daemon();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "m"]);
    // Output arrives in chunks (up to 256 KiB); the chunk that would cross the limit is not
    // delivered, so between 768 KiB and 1 MiB arrive here.
    let full: String = (1..=1_000_000).map(|i| format!("{i}\n")).collect();
    let o = run_as(
        &w,
        "homeA",
        &[
            "--option",
            "max_received_data_per_command=1MiB",
            "invoke",
            "m",
            "--",
            "seq 1 1000000",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("max_received_data_per_command (1048576 bytes)"),
        "{err}"
    );
    let first = stdout(&o);
    assert!(
        first.len() <= 1 << 20 && first.len() >= 768 << 10,
        "{}",
        first.len()
    );
    assert!(full.starts_with(&first));
    let s = session_json(&w, "m");
    assert_eq!(s["state"], "Disconnected", "{s}");
    // The rest, exactly, from the server.
    let rest = ok_as(&w, "homeA", &["receive", "m"]);
    assert_eq!(first.len() + rest.len(), full.len());
    assert!(format!("{first}{rest}") == full, "output lost or repeated");
}

/// A daemon that says Welcome and then never answers: `operation_timeout` ends the wait.
#[test]
fn open_and_operation_timeouts() {
    let w = World::new();
    // A TCP port that accepts and then says nothing: the TLS handshake never completes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let o = run_as(
        &w,
        "homeA",
        &["--option", "open_timeout=1s", "get", "--computer", &addr],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "connecting to {addr} took longer than open_timeout (1s)"
        )),
        "{}",
        stderr(&o)
    );
    drop(silent);

    let socket = w.socket();
    std::fs::create_dir_all(socket.parent().expect("dir")).expect("mkdir");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let mute = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).expect("hello length");
        let mut hello = vec![0u8; u32::from_be_bytes(len) as usize];
        conn.read_exact(&mut hello).expect("hello");
        let welcome = linger_proto::server::ServerMsg::Welcome(linger_proto::server::Welcome {
            protocol_version: linger_proto::PROTOCOL_VERSION,
            server_version: "mute".into(),
            computer_name: "mute".into(),
            principal: "me".into(),
            heartbeat_interval_ms: 60_000,
            heartbeat_timeout_ms: 120_000,
        });
        let body = linger_proto::frame::encode(&welcome).expect("encode");
        conn.write_all(&(body.len() as u32).to_be_bytes())
            .expect("write");
        conn.write_all(&body).expect("write");
        // Read (and ignore) until the client goes.
        let mut sink = Vec::new();
        let _ = conn.read_to_end(&mut sink);
    });
    let o = run_as(
        &w,
        "homeA",
        &[
            "--option",
            "operation_timeout=1s",
            "get",
            "--computer",
            "localhost",
        ],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("took longer than operation_timeout (1s)"),
        "{}",
        stderr(&o)
    );
    mute.join().expect("the mute daemon");
}

/// `cancel_timeout` from `--option`: Ctrl-C on a command that ignores SIGINT escalates to
/// killing what it started once the timeout has passed (the default would wait a minute).
#[test]
fn cancel_timeout_escalates_ctrl_c() {
    let mut w = World::new();
    w.start_daemon();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "c"]);
    let mut run = common::Running::start(w.linger(&[
        "--option",
        "cancel_timeout=1s",
        "invoke",
        "c",
        "--",
        "trap '' INT; echo started; sleep 300; echo after",
    ]));
    assert_eq!(run.line().as_deref(), Some("started\n"));
    run.signal(Signal::SIGINT);
    eventually("the command to be killed after cancel_timeout", || {
        run.exited()
    });
    let (_, rest, _) = run.finish();
    // The sleep was killed (long before its 300 s); the script, ignoring SIGINT, went on.
    assert_eq!(rest, "after\n");
    assert_eq!(
        ok_as(&w, "homeA", &["invoke", "c", "--", "echo free"]),
        "free\n"
    );
}

/// `max_sessions_per_user` holds when the requests race: twelve `new`s at once, on twelve
/// connections, against a limit of two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_limit_holds_under_concurrent_requests() {
    let mut w = World::new();
    w.write_config("[[configuration]]\nname = \"small\"\nmax_sessions_per_user = 2\n");
    w.start_daemon();
    let attempts = (0..12).map(|i| {
        // A client of its own each: twelve connections, as twelve CLI processes would be.
        let client = w.client(if i % 2 == 0 { "homeA" } else { "homeB" });
        async move {
            client
                .new_session(
                    "localhost",
                    &linger::NewOptions {
                        name: Some(format!("race{i}")),
                        configuration: Some("small".into()),
                        ..Default::default()
                    },
                )
                .await
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let made = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(made, 2, "{made} of 12 sessions made under a limit of 2");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(r.to_string().contains("max_sessions_per_user"), "{r}");
    }
    let listed = ok_as(&w, "homeA", &["get", "--computer", "localhost"]);
    assert_eq!(listed.matches("race").count(), 2, "{listed}");
}

/// A session starts from a login environment, as sshd's: nothing of the shell that started
/// the daemon (its SSH_AUTH_SOCK, XDG_*, TERM, LANG, anything else), the account's HOME USER
/// LOGNAME SHELL and a standard PATH, the client's locale and terminal type, and the
/// configuration's `environment` over all of it.
#[test]
fn sessions_start_from_a_clean_login_environment() {
    let mut w = World::new();
    w.write_config(
        "[[configuration]]\nname = \"tools\"\nenvironment = { PATH = \"/opt/tools/bin:/usr/bin:/bin\", LANG = \"C.UTF-8\", STAGE = \"test\" }\n",
    );
    let mut daemon = w.lingerd(
        &w.daemon_args()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    daemon
        .env("FOO_LEAK", "daemon")
        .env("SSH_AUTH_SOCK", "/tmp/daemon-agent.sock")
        .env("XDG_FOO", "daemon")
        .env("TERM", "dumb")
        .env("LANG", "fr_FR.UTF-8")
        .env(
            "PATH",
            format!("/daemon/bin:{}", std::env::var("PATH").unwrap_or_default()),
        );
    w.start_daemon_from(daemon);
    let client = |args: &[&str]| {
        let out = w
            .linger(args)
            .env("LANG", "de_DE.UTF-8")
            .env("LC_TIME", "C")
            .env("TERM", "xterm-256color")
            .env("BASH_ENV", "/tmp/client-bash-env")
            .env("FOO_CLIENT", "client")
            .output()
            .expect("run linger");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    client(&["new", "localhost", "--name", "plain"]);
    let env = client(&["invoke", "plain", "--", "env"]);
    let has = |line: &str| env.lines().any(|l| l == line);
    let named = |name: &str| env.lines().any(|l| l.starts_with(&format!("{name}=")));
    for leak in [
        "FOO_LEAK",
        "SSH_AUTH_SOCK",
        "XDG_FOO",
        "XDG_STATE_HOME",
        "LINGER_HOME",
        "BASH_ENV",
        "FOO_CLIENT",
    ] {
        assert!(!named(leak), "{leak} leaked into the session:\n{env}");
    }
    assert!(
        !env.contains("/daemon/bin"),
        "the daemon's PATH leaked:\n{env}"
    );
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .expect("getpwuid")
        .expect("an account");
    assert!(
        has(&format!(
            "HOME={}",
            w.path("").display().to_string().trim_end_matches('/')
        )),
        "{env}"
    );
    assert!(
        has(&format!("USER={}", me.name)) && has(&format!("LOGNAME={}", me.name)),
        "{env}"
    );
    assert!(has(&format!("SHELL={}", me.shell.display())), "{env}");
    assert!(
        has("PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"),
        "{env}"
    );
    // The client's locale and terminal type, not the daemon's.
    assert!(
        has("LANG=de_DE.UTF-8") && has("LC_TIME=C") && has("TERM=xterm-256color"),
        "{env}"
    );

    // The configuration's environment wins, PATH included.
    client(&[
        "new",
        "localhost",
        "--name",
        "tooled",
        "--configuration",
        "tools",
    ]);
    let env = client(&["invoke", "tooled", "--", "env"]);
    for line in [
        "PATH=/opt/tools/bin:/usr/bin:/bin",
        "LANG=C.UTF-8",
        "STAGE=test",
        "TERM=xterm-256color",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing:\n{env}");
    }
}

/// Whatever a client sends as NewSession.environment, the session takes only locale and
/// terminal variables: LD_PRELOAD, BASH_ENV, PATH and the like are dropped, and a value
/// smuggling a line break is refused with invalid_request (the connection stays usable).
#[tokio::test]
async fn a_hostile_new_session_environment_is_filtered_or_refused() {
    use linger_proto::client::{ClientMsg, Invoke, InvokeKind, NewSession, Request};
    use linger_proto::server::{Reply, ServerMsg};
    use linger_proto::types::ErrorKind;

    let mut w = World::new();
    w.start_daemon();
    let marker = w.path("bash-env-ran");
    let rc = w.path("evil-rc");
    std::fs::write(&rc, format!("touch {}\n", marker.display())).expect("rc");
    let (mut rd, mut wr) = common::raw_client(&w, "hostile").await;
    let new = |rid: u64, name: &str, env: &[(&str, &str)]| ClientMsg::Request {
        rid,
        request: Request::NewSession(NewSession {
            name: name.into(),
            environment: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
    };
    let rc_path = rc.display().to_string();
    wr.write(&new(1, "smuggle", &[("TERM", "xterm\nexport PWNED=1")]))
        .await
        .expect("send");
    match rd.read::<ServerMsg>().await {
        Ok(Some(ServerMsg::Error { rid: 1, error })) => {
            assert_eq!(error.kind, ErrorKind::InvalidRequest, "{error:?}");
            assert!(error.message.contains("TERM"), "{error:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    wr.write(&new(
        2,
        "filtered",
        &[
            ("LD_PRELOAD", "/nonexistent/evil.so"),
            ("BASH_ENV", &rc_path),
            ("ENV", &rc_path),
            ("PATH", "/evil"),
            ("LANG", "C.UTF-8"),
        ],
    ))
    .await
    .expect("send");
    let instance_id = match rd.read::<ServerMsg>().await {
        Ok(Some(ServerMsg::Reply {
            rid: 2,
            reply: Reply::Session(s),
        })) => s.instance_id,
        other => panic!("unexpected {other:?}"),
    };
    wr.write(&ClientMsg::Request {
        rid: 3,
        request: Request::Invoke(Invoke {
            instance_id,
            script: "env; bash -c true".into(),
            args: vec![],
            wait_ms: 60_000,
            cancel_timeout_ms: 1_000,
            disconnected: false,
            kind: InvokeKind::Plain,
            stdin: false,
            terminal: None,
        }),
    })
    .await
    .expect("invoke");
    let mut out = Vec::new();
    loop {
        match rd.read::<ServerMsg>().await {
            Ok(Some(ServerMsg::Output { rid: 3, data, .. })) => out.extend_from_slice(&data),
            Ok(Some(ServerMsg::Finished { rid: 3, status, .. })) => {
                assert_eq!(status, 0);
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("the connection ended: {other:?}"),
        }
    }
    let env = String::from_utf8_lossy(&out);
    assert!(env.lines().any(|l| l == "LANG=C.UTF-8"), "{env}");
    for name in ["LD_PRELOAD", "BASH_ENV", "ENV", "PWNED"] {
        assert!(
            !env.lines().any(|l| l.starts_with(&format!("{name}="))),
            "{name} got in:\n{env}"
        );
    }
    assert!(!env.contains("/evil"), "{env}");
    assert!(!marker.exists(), "BASH_ENV ran");
}

/// A block-mode command that filled the buffer with nobody reading is suspended: `get`
/// says so (the Command column, `blocked: true` in JSON) until a receive lets it go on.
#[test]
fn a_command_suspended_for_want_of_a_reader_shows_blocked() {
    let mut w = World::new();
    w.write_config(
        "[[configuration]]\nname = \"tight\"\noutput_buffering = \"block\"\noutput_buffer_size = \"64KiB\"\n",
    );
    w.start_daemon();
    w.ok(&[
        "invoke",
        "--computer",
        "localhost",
        "--name",
        "b",
        "--configuration",
        "tight",
        "--in-disconnected-session",
        "--",
        "head -c 4000000 /dev/zero | tr '\\0' x; echo; echo end",
    ]);
    let blocked = |w: &World| {
        let v = session_json(w, "b");
        v["blocked"].as_bool().expect("a blocked field")
    };
    eventually("the command to block", || blocked(&w));
    let table = w.ok(&["get", "b"]);
    assert!(
        table.contains("(Blocked: waits for `linger receive`)"),
        "{table}"
    );
    let out = w.ok(&["receive", "b"]);
    assert!(
        out.ends_with("\nend\n") && out.len() == 4_000_005,
        "{}",
        out.len()
    );
    assert!(!blocked(&w));
    assert!(!w.ok(&["get", "b"]).contains("Blocked"));
}
