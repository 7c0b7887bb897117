//! A system daemon (`lingerd --system`, run as root) serving two Unix users the test
//! creates: each session runs as its owner (uid, gid, supplementary groups, HOME, a clean
//! environment), whether the owner logged in over TLS (a key in [server] authorized_keys
//! with principal="USER", or in the user's own ~/.ssh/authorized_keys) or came through the
//! local socket; neither user sees the other's sessions; a restarted daemon re-adopts them.
//!
//! Needs root (CI runs as root); elsewhere it says so and does nothing.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::sync::LazyLock;

use common::{stderr, stdout, World};

// Unique to this run (and short: user names have at most 32 characters), so that a run
// never meets the accounts of another, even one killed before it could delete them.
static USER1: LazyLock<String> = LazyLock::new(|| unique("a"));
static USER2: LazyLock<String> = LazyLock::new(|| unique("b"));
/// The account a run_as configuration runs sessions as.
static SERVICE: LazyLock<String> = LazyLock::new(|| unique("c"));
static GROUP: LazyLock<String> = LazyLock::new(|| unique("g"));

fn unique(role: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("lgt{:x}{:x}{role}", std::process::id(), nanos % 0x10000)
}

/// Users (and a supplementary group) made for the test and deleted with it.
struct TestUsers;

impl TestUsers {
    fn create() -> TestUsers {
        let users = TestUsers;
        users.delete();
        sh(Command::new("groupadd").arg(&*GROUP));
        sh(Command::new("useradd").args(["-m", "-s", "/bin/bash", "-G", &*GROUP, &*USER1]));
        sh(Command::new("useradd").args(["-m", "-s", "/bin/bash", &*USER2]));
        sh(Command::new("useradd").args(["-m", "-s", "/bin/bash", &*SERVICE]));
        users
    }

    fn delete(&self) {
        for u in [&*USER1, &*USER2, &*SERVICE] {
            let _ = Command::new("pkill").args(["-KILL", "-u", u]).output();
            let _ = Command::new("userdel").args(["-r", "-f", u]).output();
        }
        let _ = Command::new("groupdel").arg(&*GROUP).output();
    }
}

impl Drop for TestUsers {
    fn drop(&mut self) {
        self.delete();
    }
}

fn sh(cmd: &mut Command) {
    let o = cmd.output().expect("run a system tool");
    assert!(o.status.success(), "{cmd:?}: {}", stderr(&o));
}

fn user(name: &str) -> nix::unistd::User {
    nix::unistd::User::from_name(name)
        .expect("passwd")
        .expect("the test user exists")
}

/// `linger ARGS` run as Unix user `name` with its own client home.
fn linger_as_user(w: &World, name: &str, args: &[&str]) -> Output {
    let u = user(name);
    let home = w.path(&format!("home-{name}"));
    std::fs::create_dir_all(&home).expect("home");
    std::os::unix::fs::chown(&home, Some(u.uid.as_raw()), Some(u.gid.as_raw())).expect("chown");
    let mut cmd = w.linger_as(&format!("home-{name}"), args);
    cmd.env("HOME", &u.dir)
        .uid(u.uid.as_raw())
        .gid(u.gid.as_raw());
    cmd.output().expect("linger as a test user")
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed with {:?}: {}",
        o.status.code(),
        stderr(&o)
    );
    stdout(&o)
}

#[test]
fn a_system_daemon_runs_each_session_as_its_owner() {
    let user1 = &*USER1;
    let user2 = &*USER2;
    let service = &*SERVICE;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: a system daemon needs root");
        return;
    }
    let _users = TestUsers::create();
    let mut w = World::new();
    // The users' session hosts find their way to the state and socket directories.
    for dir in [w.dir.path().to_path_buf(), w.path("state/linger")] {
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    let (key1, pub1) = w.keygen("key1");
    let (key2, pub2) = w.keygen("key2");
    let authorized = w.path("authorized_keys");
    std::fs::write(&authorized, format!("principal=\"{user1}\" {pub1}\n")).expect("keys");
    // USER2's key is in USER2's own ~/.ssh/authorized_keys, as for sshd.
    let u2 = user(&USER2);
    let ssh_dir = u2.dir.join(".ssh");
    std::fs::create_dir_all(&ssh_dir).expect(".ssh");
    std::fs::write(ssh_dir.join("authorized_keys"), format!("{pub2}\n")).expect("keys");
    let config = w.path("system.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nauthorized_keys = {:?}\n[[configuration]]\nname = \"svc\"\nrun_as = \"{service}\"\nallowed_principals = [\"{user1}\"]\nallowed_groups = [\"{user2}\"]\n[[configuration]]\nname = \"mine\"\nallowed_principals = [\"{user1}\"]\n",
            authorized.display().to_string()
        ),
    )
    .expect("config");
    let listening = w.state_dir().join("listening");
    let config_arg = config.display().to_string();
    w.start_daemon_with(&[
        "--system",
        "--config",
        &config_arg,
        "--listen",
        "127.0.0.1:0",
    ]);
    common::eventually("the TLS listener", || listening.exists());
    let addr = std::fs::read_to_string(&listening).expect("listening");
    let addr = addr.lines().next().expect("an address").to_string();
    w.use_key("homeA", &key1);
    w.use_key("homeB", &key2);
    let as_user2 = format!("tls://{user2}@{addr}");

    // USER1 over TLS: the session runs as USER1, in USER1's home, with USER1's groups and
    // nothing of the daemon's environment.
    common::ok_as(&w, "homeA", &["new", &addr, "--name", "work"]);
    let u1 = user(&USER1);
    let report = common::ok_as(
        &w,
        "homeA",
        &[
            "invoke",
            "work",
            "--",
            "id -un; id -u; id -Gn; echo $HOME; pwd; env",
        ],
    );
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], &*USER1, "{report}");
    assert_eq!(lines[1], u1.uid.to_string(), "{report}");
    assert!(lines[2].split(' ').any(|g| g == *GROUP), "{report}");
    assert_eq!(lines[3], u1.dir.display().to_string(), "{report}");
    assert_eq!(lines[4], u1.dir.display().to_string(), "{report}");
    assert!(report.contains(&format!("\nUSER={user1}\n")), "{report}");
    assert!(
        !report.contains("XDG_RUNTIME_DIR") && !report.contains("LINGER_HOME"),
        "the daemon's environment leaked: {report}"
    );
    // The session has control groups of its own, made by the root daemon before the host
    // became USER1 (who could not have made them), with the configuration's memory limit.
    let cgroups = common::ok_as(
        &w,
        "homeA",
        &["invoke", "work", "--", "cat /proc/self/cgroup"],
    );
    let session_groups: Vec<std::path::PathBuf> = cgroups
        .lines()
        .filter(|l| l.contains("/linger-"))
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let base = std::path::Path::new("/sys/fs/cgroup");
            let dir = match controllers {
                "" => base.join(path.trim_start_matches('/')),
                c => base.join(c).join(path.trim_start_matches('/')),
            };
            Some(dir)
        })
        .collect();
    assert!(
        !session_groups.is_empty(),
        "no control group of its own: {cgroups}"
    );
    let limited = session_groups.iter().any(|d| {
        ["memory.max", "memory.limit_in_bytes"].iter().any(|f| {
            std::fs::read_to_string(d.join(f)).is_ok_and(|v| v.trim() == (1u64 << 30).to_string())
        })
    });
    assert!(limited, "no 1 GiB memory limit in {session_groups:?}");
    // The root-opened cgroup.procs descriptors the host got never reach the shell (they
    // would let the user move any process into its group).
    let fds = common::ok_as(&w, "homeA", &["invoke", "work", "--", "ls -l /proc/$$/fd"]);
    assert!(!fds.contains("cgroup"), "{fds}");
    // Its host process, not only its shell, is USER1's.
    for pid in w.host_pids() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let uid_line = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .expect("Uid line");
        assert!(
            uid_line
                .split_whitespace()
                .skip(1)
                .all(|u| u == u1.uid.to_string()),
            "{uid_line}"
        );
    }

    // USER2 by the key in their own authorized_keys, asking to be USER2.
    common::ok_as(&w, "homeB", &["new", &as_user2, "--name", "theirs"]);
    assert_eq!(
        common::ok_as(&w, "homeB", &["invoke", "theirs", "--", "id -un"]),
        format!("{user2}\n")
    );
    // ... but that key may not act as USER1.
    let o = common::run_as(
        &w,
        "homeB",
        &["new", &format!("tls://{user1}@{addr}"), "--name", "x"],
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));

    // Neither sees the other's sessions.
    let t = common::ok_as(&w, "homeA", &["get", "--computer", &addr]);
    assert!(t.contains("work") && !t.contains("theirs"), "{t}");
    let t = common::ok_as(&w, "homeB", &["get", "--computer", &as_user2]);
    assert!(t.contains("theirs") && !t.contains("work"), "{t}");

    // A configuration with run_as: USER1's session runs as the service account, yet stays
    // USER1's.
    let u3 = user(&SERVICE);
    common::ok_as(
        &w,
        "homeA",
        &["new", &addr, "--name", "svc", "--configuration", "svc"],
    );
    assert_eq!(
        common::ok_as(&w, "homeA", &["invoke", "svc", "--", "id -un; echo $HOME"]),
        format!("{service}\n{}\n", u3.dir.display())
    );
    let t = common::ok_as(&w, "homeB", &["get", "--computer", &as_user2]);
    assert!(!t.contains("svc"), "{t}");
    // USER2 may use it too (its own group is allowed), but not while another principal's
    // session runs as that account: two principals never share a uid.
    let o = common::run_as(
        &w,
        "homeB",
        &["new", &as_user2, "--name", "svc2", "--configuration", "svc"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("another principal's session"),
        "{}",
        stderr(&o)
    );
    common::ok_as(&w, "homeA", &["remove", "svc"]);
    common::ok_as(
        &w,
        "homeB",
        &["new", &as_user2, "--name", "svc2", "--configuration", "svc"],
    );
    common::ok_as(&w, "homeB", &["remove", "svc2"]);
    // A configuration open to USER1 alone does not exist for USER2.
    let listed = common::ok_as(&w, "homeB", &["config", "list", "--computer", &as_user2]);
    assert!(!listed.contains("mine"), "{listed}");
    let o = common::run_as(
        &w,
        "homeB",
        &["new", &as_user2, "--name", "m", "--configuration", "mine"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no session configuration named 'mine'"),
        "{}",
        stderr(&o)
    );
    common::ok_as(
        &w,
        "homeA",
        &["new", &addr, "--name", "m", "--configuration", "mine"],
    );
    common::ok_as(&w, "homeA", &["remove", "m"]);

    // USER1 through the local socket: the same principal, the same sessions.
    let t = ok(
        linger_as_user(&w, &USER1, &["new", "localhost", "--name", "local"]),
        "new as &*USER1",
    );
    assert!(t.contains("local"), "{t}");
    assert_eq!(
        ok(
            linger_as_user(&w, &USER1, &["invoke", "local", "--", "id -un"]),
            "invoke as &*USER1"
        ),
        format!("{user1}\n")
    );
    let t = ok(
        linger_as_user(&w, &USER1, &["get", "--computer", "localhost"]),
        "get as &*USER1",
    );
    assert!(
        t.contains("work") && t.contains("local") && !t.contains("theirs"),
        "{t}"
    );

    // The daemon's logs hold every user's scripts: only root reads them.
    for log in ["audit.log", "lingerd.log"] {
        let path = w.state_dir().join(log);
        let mode = std::fs::metadata(&path).expect(log).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{log}");
        let o = Command::new("cat")
            .arg(&path)
            .uid(u2.uid.as_raw())
            .gid(u2.gid.as_raw())
            .output()
            .expect("cat as &*USER2");
        assert!(!o.status.success(), "&*USER2 read {log}");
    }

    // As sshd: an account with a no-login shell, a locked password or an expired account
    // cannot log in, whatever its keys; restored, it can again.
    for (lock, unlock) in [
        (
            vec!["usermod", "-s", "/usr/sbin/nologin", &*USER2],
            vec!["usermod", "-s", "/bin/bash", &*USER2],
        ),
        (vec!["usermod", "-p", "$6$x$y", &*USER2], vec!["true"]),
        (
            vec!["usermod", "-L", &*USER2],
            vec!["usermod", "-U", &*USER2],
        ),
        (
            vec!["chage", "-E", "1", &*USER2],
            vec!["chage", "-E", "-1", &*USER2],
        ),
    ] {
        sh(Command::new(lock[0]).args(&lock[1..]));
        let o = common::run_as(&w, "homeB", &["get", "--computer", &as_user2]);
        let locked = lock[1..].join(" ") != format!("-p $6$x$y {user2}");
        if locked {
            assert_eq!(o.status.code(), Some(5), "{lock:?}: {}", stderr(&o));
        } else {
            assert_eq!(
                o.status.code(),
                Some(0),
                "a password alone locks nothing: {}",
                stderr(&o)
            );
        }
        sh(Command::new(unlock[0]).args(&unlock[1..]));
    }
    let reasons = std::fs::read_to_string(w.state_dir().join("audit.log")).expect("audit");
    for why in [
        "its shell is /usr/sbin/nologin",
        "password is locked",
        "has expired",
    ] {
        assert!(reasons.contains(why), "the audit log does not say {why:?}");
    }
    common::ok_as(&w, "homeB", &["get", "--computer", &as_user2]);

    // USER2 plants a FIFO, then /dev/zero, as its authorized_keys: its logins fail (nothing
    // is read from either), and the daemon goes on serving USER1 meanwhile.
    let keys2 = ssh_dir.join("authorized_keys");
    let saved = std::fs::read(&keys2).expect("&*USER2's keys");
    std::fs::remove_file(&keys2).expect("rm");
    nix::unistd::mkfifo(&keys2, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    std::os::unix::fs::chown(&keys2, Some(u2.uid.as_raw()), Some(u2.gid.as_raw())).expect("chown");
    for planted in ["a FIFO", "/dev/zero"] {
        if planted == "/dev/zero" {
            std::fs::remove_file(&keys2).expect("rm");
            std::os::unix::fs::symlink("/dev/zero", &keys2).expect("ln -s");
        }
        let o = common::run_as(&w, "homeB", &["get", "--computer", &as_user2]);
        assert_eq!(o.status.code(), Some(5), "{planted}: {}", stderr(&o));
        let t = common::ok_as(&w, "homeA", &["get", "--computer", &addr]);
        assert!(t.contains("work"), "{planted}: {t}");
    }
    assert!(w.daemon_log().contains("not reading authorized keys"));
    std::fs::remove_file(&keys2).expect("rm");
    std::fs::write(&keys2, saved).expect("restore &*USER2's keys");

    // Without XDG_RUNTIME_DIR the socket directory is /tmp/linger-UID: USER2 makes USER1's
    // first, open to all. USER1's client refuses it and starts no daemon there.
    let trap = std::path::PathBuf::from(format!("/tmp/linger-{}", u1.uid.as_raw()));
    let _ = std::fs::remove_dir_all(&trap);
    std::fs::create_dir(&trap).expect("mkdir");
    std::fs::set_permissions(&trap, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::os::unix::fs::chown(&trap, Some(u2.uid.as_raw()), Some(u2.gid.as_raw())).expect("chown");
    let o = {
        let mut cmd = w.linger_as(
            &format!("home-{user1}"),
            &["get", "--computer", "localhost"],
        );
        cmd.env_remove("XDG_RUNTIME_DIR")
            .env("HOME", &u1.dir)
            .uid(u1.uid.as_raw())
            .gid(u1.gid.as_raw());
        cmd.output().expect("linger as USER1")
    };
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains(&format!("belongs to uid {}", u2.uid)),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_dir(&trap).expect("the trap").count(), 0);
    std::fs::remove_dir_all(&trap).expect("rm the trap");

    // USER2 plants, in the hosts directory it controls, a dead socket named like USER1's
    // session: the restarted daemon must neither forget USER1's session nor delete it.
    let json = common::ok_as(&w, "homeA", &["--json", "get", "work"]);
    let record: serde_json::Value =
        serde_json::from_str(json.lines().next().expect("a record")).expect("json");
    let id = uuid::Uuid::parse_str(record["instance_id"].as_str().expect("id")).expect("uuid");
    let planted = w
        .path("run/linger/hosts")
        .join(u2.uid.to_string())
        .join(format!("{}.sock", id.simple()));
    drop(std::os::unix::net::UnixListener::bind(&planted).expect("plant a socket"));
    std::os::unix::fs::chown(&planted, Some(u2.uid.as_raw()), Some(u2.gid.as_raw()))
        .expect("chown");

    // A restarted daemon re-adopts hosts that run as their owners.
    w.stop_daemon();
    w.start_daemon_with(&["--system", "--config", &config_arg, "--listen", &addr]);
    w.wait_listening(&addr);
    assert_eq!(
        common::ok_as(&w, "homeA", &["invoke", "work", "--", "echo $HOME"]),
        format!("{}\n", u1.dir.display())
    );
    assert!(
        !w.daemon_log().contains("cannot adopt"),
        "{}",
        w.daemon_log()
    );
    common::ok_as(&w, "homeA", &["remove", "work"]);
    common::ok_as(&w, "homeB", &["remove", "theirs"]);
    // The daemon removed the control groups it made.
    common::eventually("the session's control groups to go", || {
        session_groups.iter().all(|d| !d.exists())
    });
}
