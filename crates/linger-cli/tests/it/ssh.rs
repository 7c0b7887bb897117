//! The ssh transport against a real OpenSSH server on loopback that the test starts and
//! stops itself: `ssh://user@127.0.0.1:PORT` runs `lingerd --stdio` there, which bridges to
//! the user's daemon (started on demand).

use crate::common;

use common::sshd::{ssh_command, user, Sshd};
use std::process::Stdio;

use common::{lingerd_bin, World};

/// Client options that reach the test's sshd with the test's key, and a remote command that
/// bridges to the test's daemon (sshd gives the remote command a clean environment).
fn write_options(w: &World, sshd: &Sshd, home: &str) {
    let ssh_command = ssh_command(sshd);
    let remote = format!(
        "env XDG_RUNTIME_DIR={} XDG_STATE_HOME={} XDG_CONFIG_HOME={} HOME={} LINGERD={} {} --stdio",
        w.path("run").display(),
        w.path("state").display(),
        w.path("config").display(),
        w.dir.path().display(),
        lingerd_bin().display(),
        lingerd_bin().display()
    );
    std::fs::write(
        w.path(home).join("options.toml"),
        format!("ssh_command = {ssh_command:?}\nssh_remote_command = {remote:?}\n"),
    )
    .expect("options.toml");
}

#[test]
fn sessions_over_ssh() {
    let w = World::new();
    // Short heartbeats, so that a silent connection is noticed quickly.
    w.write_config("[server]\nheartbeat_interval = \"200ms\"\nheartbeat_timeout = \"1500ms\"\n");
    let sshd = Sshd::start(w.dir.path());
    write_options(&w, &sshd, "homeA");
    write_options(&w, &sshd, "homeB");
    let computer = format!("ssh://{}@127.0.0.1:{}", user(), sshd.port);

    let t = w.ok(&["new", &computer, "--name", "far"]);
    assert!(t.contains(&computer) && t.contains("Opened"), "{t}");
    assert!(
        w.daemon_pid().is_some(),
        "lingerd --stdio started the daemon"
    );
    w.ok(&["invoke", "far", "--", "x=over-ssh; cd /tmp"]);
    assert_eq!(
        w.ok(&["invoke", "far", "--", "echo $x $(pwd); echo err >&2"]),
        "over-ssh /tmp\n"
    );
    let o = w.run(&["invoke", "far", "--", "exit 5"]);
    assert_eq!(o.status.code(), Some(5));
    // Standard input crosses the ssh transport too.
    let data = common::random_bytes(8 << 20);
    let mut child = w
        .linger(&["invoke", "far", "--", "sha256sum"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("invoke");
    let mut input = child.stdin.take().expect("stdin");
    let feed =
        std::thread::spawn(move || std::io::Write::write_all(&mut input, &data).map(|_| data));
    let o = child.wait_with_output().expect("invoke ends");
    let data = feed.join().expect("feeder").expect("input written");
    assert_eq!(common::stdout(&o), common::sha256_line(&data));

    // The same session from another client, over ssh too: disconnect, connect, receive.
    let t = w.ok(&["disconnect", "far"]);
    assert!(t.contains("Disconnected"), "{t}");
    let script = "echo while-nobody-watched; exit 3";
    let o = w
        .linger_as(
            "homeA",
            &[
                "invoke",
                "--computer",
                &computer,
                "--in-disconnected-session",
                "--name",
                "bg",
                "--",
                script,
            ],
        )
        .output()
        .expect("invoke");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = w
        .linger_as(
            "homeB",
            &["receive", "--computer", &computer, "--name", "bg"],
        )
        .output()
        .expect("receive");
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "while-nobody-watched\n");
    let listed = w
        .linger_as("homeB", &["get", "--computer", &computer])
        .output()
        .expect("get");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("far") && listed.contains("bg"), "{listed}");

    // The audit log says these came over ssh, and from where.
    let audit = std::fs::read_to_string(w.state_dir().join("audit.log")).expect("audit.log");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"command\"") && l.contains("claiming ssh from 127.0.0.1 port")),
        "{audit}"
    );

    // An ad hoc command over ssh, its temporary session removed afterwards.
    assert_eq!(
        w.ok(&["invoke", "--computer", &computer, "--", "echo ad-hoc"]),
        "ad-hoc\n"
    );

    // The ssh connection is cut (its client killed) twice during a stream: the CLI says so,
    // dials again through ssh, and resumes with nothing lost or repeated.
    let invoke = || {
        w.linger(&["invoke", "far", "--", common::WAVES])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("invoke over ssh")
    };
    let (got, err, code) = common::stream_waves(&w, invoke(), |_, pid| {
        let ssh = ssh_children(pid)
            .pop()
            .expect("the ssh client of the invoke");
        common::kill(ssh, nix::sys::signal::Signal::SIGKILL);
    });
    assert_eq!(code, Some(0), "{err}");
    common::assert_waves(&got, &err);
    assert_eq!(err.matches("reconnected").count(), 2, "{err}");

    // A connection that goes silent (its ssh client stopped, a blackhole): the client's
    // heartbeat notices within the server's heartbeat timeout, cuts it, and resumes.
    for wave in 1..=3 {
        let _ = std::fs::remove_file(w.dir.path().join(format!("wave{wave}")));
    }
    let mut stopped = Vec::new();
    let (got, err, code) = common::stream_waves(&w, invoke(), |wave, pid| {
        if wave == 1 {
            let ssh = ssh_children(pid)
                .pop()
                .expect("the ssh client of the invoke");
            common::kill(ssh, nix::sys::signal::Signal::SIGSTOP);
            stopped.push(ssh);
        }
    });
    assert_eq!(code, Some(0), "{err}");
    common::assert_waves(&got, &err);
    assert!(err.contains("reconnected"), "{err}");
    for pid in stopped {
        // The cut connection's ssh was killed by the client.
        common::eventually("the silent ssh to be gone", || !common::alive(pid));
    }

    // A port nobody serves: one clear line, exit 6.
    let dead = format!("ssh://{}@127.0.0.1:1", user());
    let o = w.run(&["new", &dead]);
    assert_eq!(o.status.code(), Some(6));
    let err = String::from_utf8_lossy(&o.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("linger:")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(ours[0].contains("ssh could not connect"), "{err}");
}

/// The `ssh` processes `pid` started, oldest first.
fn ssh_children(pid: u32) -> Vec<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
        .filter(|c| {
            std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "ssh")
        })
        .collect()
}
