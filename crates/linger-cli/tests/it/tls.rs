//! The TLS transport against a real `lingerd --listen` on loopback: logins with SSH keys
//! (files and a real ssh-agent), principals and what they may see, the server identity
//! pinned in known_hosts, and how failures are reported and slowed down.

use crate::common;

use std::process::{Command, Stdio};

use common::proxy::FaultyProxy;
use common::{eventually, kill, run_as, stderr, stdout, World};

/// Writes `[server] authorized_keys` with these lines (and `extra` server settings).
fn authorize_with(w: &World, lines: &[String], extra: &str) {
    let file = w.path("authorized_keys");
    std::fs::write(&file, lines.join("\n") + "\n").expect("authorized_keys");
    w.write_config(&format!(
        "[server]\nauthorized_keys = {:?}\n{extra}",
        file.display().to_string()
    ));
}

fn authorize(w: &World, lines: &[String]) {
    authorize_with(w, lines, "");
}

fn audit(w: &World) -> Vec<serde_json::Value> {
    std::fs::read_to_string(w.state_dir().join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

#[test]
fn principals_share_a_daemon_and_see_only_their_own_sessions() {
    let mut w = World::new();
    let (alice, alice_pub) = w.keygen("alice");
    let (bob, bob_pub) = w.keygen("bob");
    authorize(
        &w,
        &[
            format!("principal=\"alice\" {alice_pub}"),
            format!("# a comment, and a line that does not parse\ngarbage\nprincipal=\"bob\",no-pty {bob_pub}"),
        ],
    );
    let computer = w.start_tls_daemon();
    w.use_key("homeA", &alice);
    w.use_key("homeB", &bob);

    let t = common::ok_as(&w, "homeA", &["new", &computer, "--name", "work"]);
    assert!(t.contains(&computer) && t.contains("Opened"), "{t}");
    common::ok_as(&w, "homeA", &["invoke", "work", "--", "x=kept; cd /tmp"]);
    assert_eq!(
        common::ok_as(&w, "homeA", &["invoke", "work", "--", "echo $x $(pwd)"]),
        "kept /tmp\n"
    );
    let json = common::ok_as(&w, "homeA", &["--json", "get", "work"]);
    let first: serde_json::Value =
        serde_json::from_str(json.lines().next().expect("a record")).expect("json");
    let instance_id = first["instance_id"]
        .as_str()
        .expect("instance_id")
        .to_string();

    // Bob reaches the same daemon and sees nothing of alice's.
    common::ok_as(&w, "homeB", &["new", &computer, "--name", "mine"]);
    let bobs = common::ok_as(&w, "homeB", &["get", "--computer", &computer]);
    assert!(bobs.contains("mine") && !bobs.contains("work"), "{bobs}");
    let alices = common::ok_as(&w, "homeA", &["get", "--computer", &computer]);
    assert!(
        alices.contains("work") && !alices.contains("mine"),
        "{alices}"
    );

    // Naming alice's session by InstanceId answers exactly as for one that does not exist.
    let theirs = run_as(
        &w,
        "homeB",
        &[
            "connect",
            "--computer",
            &computer,
            "--instance-id",
            &instance_id,
        ],
    );
    let nobodys_id = "0b5d3c1e-9a55-4e63-8d1c-5a0f0e8f1c2d";
    let nobodys = run_as(
        &w,
        "homeB",
        &[
            "connect",
            "--computer",
            &computer,
            "--instance-id",
            nobodys_id,
        ],
    );
    assert_eq!(theirs.status.code(), Some(3), "{}", stderr(&theirs));
    assert_eq!(nobodys.status.code(), Some(3), "{}", stderr(&nobodys));
    assert_eq!(
        stderr(&theirs).replace(&instance_id, "ID"),
        stderr(&nobodys).replace(nobodys_id, "ID")
    );

    // Who logged in, as whom, from where.
    let logins: Vec<_> = audit(&w)
        .into_iter()
        .filter(|r| r["action"] == "login")
        .collect();
    assert!(logins.iter().any(|r| r["principal"] == "alice"));
    assert!(logins.iter().any(|r| r["principal"] == "bob"));
    assert!(logins.iter().all(|r| r["from"]
        .as_str()
        .unwrap_or("")
        .starts_with("127.0.0.1 port ")));
    let starts: Vec<_> = audit(&w)
        .into_iter()
        .filter(|r| r["action"] == "session_start")
        .map(|r| (r["principal"].clone(), r["name"].clone()))
        .collect();
    assert!(
        starts.contains(&("alice".into(), "work".into())),
        "{starts:?}"
    );
    assert!(
        starts.contains(&("bob".into(), "mine".into())),
        "{starts:?}"
    );
}

#[test]
fn a_key_without_principal_acts_as_the_daemons_user() {
    let mut w = World::new();
    let (key, public) = w.keygen("plain");
    authorize(&w, &[public]);
    let computer = w.start_tls_daemon();
    w.use_key("homeA", &key);
    common::ok_as(&w, "homeA", &["new", &computer, "--name", "s"]);
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .expect("passwd")
        .expect("a user")
        .name;
    assert!(audit(&w)
        .iter()
        .any(|r| r["action"] == "login" && r["principal"] == me.as_str()));
    // The same daemon's local socket serves that user too: the session is theirs there.
    let local = common::ok_as(&w, "homeB", &["get", "--computer", "localhost"]);
    assert!(local.contains(" s "), "{local}");
    // As ssh, a private key others can read is refused, saying so.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = run_as(&w, "homeA", &["get", "--computer", &computer]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("has mode 644, open to others"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_server_identity_is_pinned_and_a_changed_one_refused() {
    let mut w = World::new();
    let (key, public) = w.keygen("k");
    authorize(&w, &[public]);
    let computer = w.start_tls_daemon();
    let port = computer.rsplit_once(':').expect("host:port").1.to_string();

    // Strict (the default without a terminal): an unknown server is refused, and the
    // message shows the fingerprint that `ssh-keygen -lf` shows on the server.
    let o = run_as(
        &w,
        "homeA",
        &[
            "--identity",
            key.to_str().expect("utf-8"),
            "get",
            "--computer",
            &computer,
        ],
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let pub_file = w.state_dir().join("identity/host_ed25519.pub");
    let lf = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&pub_file)
        .output()
        .expect("ssh-keygen -lf");
    let fingerprint = stdout(&lf)
        .split_whitespace()
        .nth(1)
        .expect("a fingerprint")
        .to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{}", stdout(&lf));
    let err = stderr(&o);
    assert!(
        err.contains("is not known") && err.contains(&fingerprint),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!w.path("homeA/known_hosts").exists());

    // A missing identity file is a usage error, said once.
    let o = common::run_as(
        &w,
        "homeA",
        &[
            "--identity",
            "/nonexistent/key",
            "--option",
            "host_key_checking=accept-new",
            "get",
            "--computer",
            &computer,
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("/nonexistent/key").count(), 1, "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
    let _ = std::fs::remove_file(w.path("homeA/known_hosts"));

    // accept-new pins it, in ssh's format, and says so as ssh does; strict then accepts it.
    w.use_key("homeA", &key);
    let o = common::run_as(&w, "homeA", &["get", "--computer", &computer]);
    assert!(o.status.success(), "{}", stderr(&o));
    let notice = format!("linger: Permanently added '[127.0.0.1]:{port}' (ssh-ed25519, {fingerprint}) to the known hosts in ");
    assert!(stderr(&o).starts_with(&notice), "{}", stderr(&o));
    let again = common::run_as(&w, "homeA", &["get", "--computer", &computer]);
    assert_eq!(stderr(&again), "", "a known server is not announced again");
    let pins = std::fs::read_to_string(w.path("homeA/known_hosts")).expect("known_hosts");
    let server_key = std::fs::read_to_string(&pub_file).expect("pub");
    let server_key: Vec<&str> = server_key.split_whitespace().take(2).collect();
    assert_eq!(
        pins.trim(),
        format!("[127.0.0.1]:{port} {} {}", server_key[0], server_key[1])
    );
    std::fs::write(
        w.path("homeA/options.toml"),
        format!(
            "identity_file = {:?}\nhost_key_checking = \"strict\"\n",
            key.display().to_string()
        ),
    )
    .expect("options");
    common::ok_as(&w, "homeA", &["get", "--computer", &computer]);

    // The identity survives a restart of the daemon.
    w.stop_daemon();
    let listen = format!("127.0.0.1:{port}");
    w.start_daemon_with(&["--listen", &listen]);
    w.wait_listening(&listen);
    common::ok_as(&w, "homeA", &["get", "--computer", &computer]);

    // Another key for that server in known_hosts: refused with both fingerprints.
    let (_, other) = w.keygen("impostor");
    let other_fp = {
        let o = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(w.path("impostor.pub"))
            .output()
            .expect("ssh-keygen -lf");
        stdout(&o)
            .split_whitespace()
            .nth(1)
            .expect("fp")
            .to_string()
    };
    let other: Vec<&str> = other.split_whitespace().take(2).collect();
    std::fs::write(
        w.path("homeA/known_hosts"),
        format!("[127.0.0.1]:{port} {} {}\n", other[0], other[1]),
    )
    .expect("known_hosts");
    w.use_key("homeA", &key);
    let o = run_as(&w, "homeA", &["get", "--computer", &computer]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("has changed"), "{err}");
    assert!(
        err.contains(&fingerprint) && err.contains(&other_fp),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn failed_logins_say_so_plainly_and_are_slowed_down() {
    let mut w = World::new();
    let (_, good_pub) = w.keygen("good");
    let (bad, _) = w.keygen("bad");
    authorize(&w, &[format!("principal=\"ops\" {good_pub}")]);
    let computer = w.start_tls_daemon();
    w.use_key("homeA", &bad);
    for attempt in 0..3 {
        let o = run_as(&w, "homeA", &["new", &computer, "--name", "x"]);
        assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
        let mut err = stderr(&o);
        if attempt == 0 {
            // As ssh, the server's key is pinned (and that said) before the login fails.
            let (notice, rest) = err.split_once('\n').expect("two lines");
            assert!(notice.starts_with("linger: Permanently added"), "{err}");
            err = rest.to_string();
        }
        assert!(err.starts_with("linger: error: authentication to"), "{err}");
        assert!(
            !err.contains("ops") && !err.contains("principal"),
            "reveals nothing: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let o = run_as(&w, "homeA", &["--json", "get", "--computer", &computer]);
    assert_eq!(o.status.code(), Some(5));
    assert!(stdout(&o).contains("\"kind\":\"auth\""), "{}", stdout(&o));
    // Each failure from the same address waited longer than the one before.
    let delays: Vec<u64> = audit(&w)
        .iter()
        .filter(|r| r["action"] == "login_failed")
        .map(|r| r["detail"]["delay_ms"].as_u64().expect("delay_ms"))
        .collect();
    assert_eq!(delays.len(), 4, "{delays:?}");
    assert!(delays.windows(2).all(|p| p[1] > p[0]), "{delays:?}");
    assert!(w.daemon_log().contains("is not authorized"));
}

/// A real ssh-agent, killed by pid at the end.
struct Agent {
    pid: i32,
    socket: std::path::PathBuf,
}

impl Agent {
    fn start(w: &World) -> Agent {
        let socket = w.path("agent.sock");
        let out = Command::new("ssh-agent")
            .arg("-a")
            .arg(&socket)
            .arg("-s")
            .stdin(Stdio::null())
            .output()
            .expect("run ssh-agent (Debian's openssh-client)");
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let pid = text
            .split("SSH_AGENT_PID=")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .and_then(|p| p.parse().ok())
            .expect("ssh-agent says its pid");
        Agent { pid, socket }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        kill(self.pid, nix::sys::signal::Signal::SIGTERM);
    }
}

#[test]
fn keys_in_ssh_agent_are_offered_in_turn() {
    let mut w = World::new();
    let (other, _) = w.keygen("other");
    let (good, good_pub) = w.keygen("good");
    authorize(&w, &[format!("principal=\"agent-user\" {good_pub}")]);
    let computer = w.start_tls_daemon();
    let agent = Agent::start(&w);
    for key in [&other, &good] {
        let o = Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .output()
            .expect("ssh-add");
        assert!(o.status.success(), "{}", stderr(&o));
        // The key files are gone: only the agent holds them now.
        std::fs::remove_file(key).expect("rm key");
    }
    std::fs::write(
        w.path("homeA/options.toml"),
        "host_key_checking = \"accept-new\"\n",
    )
    .expect("options");
    let o = w
        .linger(&["new", &computer, "--name", "via-agent"])
        .env("SSH_AUTH_SOCK", &agent.socket)
        .output()
        .expect("linger");
    assert!(o.status.success(), "{}", stderr(&o));
    let logins: Vec<_> = audit(&w)
        .into_iter()
        .filter(|r| r["action"] == "login" || r["action"] == "login_failed")
        .map(|r| (r["action"].clone(), r["principal"].clone()))
        .collect();
    assert_eq!(
        logins,
        vec![
            ("login_failed".into(), "".into()),
            ("login".into(), "agent-user".into())
        ]
    );
    // Without the agent and without key files, the client says it has nothing to offer.
    let o = w
        .linger(&["get", "--computer", &computer])
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("linger");
    assert_eq!(o.status.code(), Some(5));
    assert!(stderr(&o).contains("no SSH key"), "{}", stderr(&o));
}

/// A daemon with short heartbeats, reached through a fault-injecting proxy, and a session
/// "far" that client homeA made through it.
fn proxied_session(w: &mut World) -> FaultyProxy {
    let (key, public) = w.keygen("k");
    authorize_with(
        w,
        &[public],
        "heartbeat_interval = \"200ms\"\nheartbeat_timeout = \"1500ms\"\n",
    );
    let direct = w.start_tls_daemon();
    let proxy = FaultyProxy::start(direct.parse().expect("an address"));
    w.use_key("homeA", &key);
    common::ok_as(
        w,
        "homeA",
        &["new", &proxy.addr.to_string(), "--name", "far"],
    );
    proxy
}

/// Robust sessions over a bad network: during one large stream, a proxy between client and
/// server cuts the connection three times and blackholes it three times. The client notices
/// (a cut at once, a blackhole by the heartbeat timeout), dials again, logs in again, and
/// resumes from the last line it acknowledged: every line arrives once, in order.
#[test]
fn a_stream_survives_cuts_and_blackholes() {
    let mut w = World::new();
    let proxy = proxied_session(&mut w);

    const LINES: u64 = 3_000_000;
    /// Lines read between the client's recovery from one fault and the next fault.
    const GAP: u64 = 50_000;
    let mut run =
        common::Running::start(w.linger(&["invoke", "far", "--", &format!("seq 1 {LINES}")]));
    let recovered = |run: &common::Running| run.stderr().matches("reconnected").count();
    // Cut, blackhole, cut… Each fault waits until the client has resumed after the
    // previous one: lines already on their way (kernel buffers hold megabytes on loopback)
    // keep arriving from a dead connection for a while, and a fault during the client's
    // redial would be absorbed by the same reconnection.
    let faults = [true, false, true, false, true, false];
    let mut next = 0;
    let mut next_at = GAP;
    let mut expected = 1u64;
    while let Some(line) = run.line() {
        let n: u64 = line
            .trim_end()
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line:?}"));
        assert_eq!(n, expected, "a line was lost or repeated");
        expected += 1;
        if next < faults.len() && n >= next_at && recovered(&run) == next {
            if faults[next] {
                proxy.cut();
            } else {
                proxy.blackhole();
            }
            next += 1;
            next_at = n + GAP;
        }
    }
    let (code, _, err) = run.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(expected, LINES + 1, "the stream ended early; stderr: {err}");
    assert_eq!(next, faults.len());
    assert_eq!(err.matches("reconnected").count(), faults.len(), "{err}");
    assert!(
        proxy.accepted() > faults.len(),
        "every fault made the client dial again"
    );
}

/// Ctrl-C after the stream of an invoke resumed on a new connection still stops the command.
#[test]
fn ctrl_c_after_a_reconnect_stops_the_command() {
    let mut w = World::new();
    let proxy = proxied_session(&mut w);

    let mut run = common::Running::start(w.linger(&[
        "invoke",
        "far",
        "--",
        "echo started; sleep 60; echo never",
    ]));
    assert_eq!(run.line().as_deref(), Some("started\n"));
    proxy.cut();
    eventually("the client to reconnect", || {
        run.stderr().contains("reconnected")
    });
    run.signal(nix::sys::signal::Signal::SIGINT);
    let (code, rest, err) = run.finish();
    assert_eq!(code, Some(130), "{err}");
    assert!(!rest.contains("never"), "{rest}");
    // The session is free again: the command really ended.
    assert_eq!(
        common::ok_as(&w, "homeA", &["invoke", "far", "--", "echo free"]),
        "free\n"
    );
}

/// Forwarded input over a bad network: while a command reads 40 MiB of input, the proxy
/// cuts the connection twice and blackholes it once. After each fault the client resumes
/// and sends again what the host had not written: the command sees every byte once.
#[test]
fn input_survives_cuts_and_blackholes() {
    use std::io::Write;
    let mut w = World::new();
    let proxy = proxied_session(&mut w);
    let data = common::random_bytes(40 << 20);
    let mut cmd = w.linger(&["invoke", "far", "--", "sha256sum"]);
    cmd.stdin(Stdio::piped());
    let mut run = common::Running::start(cmd);
    let mut input = run.take_stdin();
    let faults = [true, false, true];
    let quarter = data.len() / 4;
    for (i, part) in data.chunks(quarter).enumerate() {
        input.write_all(part).expect("write input");
        if let Some(&cut) = faults.get(i) {
            if cut {
                proxy.cut();
            } else {
                proxy.blackhole();
            }
            eventually("the client to resume", || {
                run.stderr().matches("reconnected").count() == i + 1
            });
        }
    }
    drop(input);
    let (code, out, err) = run.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, common::sha256_line(&data), "{err}");
    assert_eq!(err.matches("reconnected").count(), faults.len(), "{err}");
}

/// A TCP connection to `to` from `from` (any 127.0.0.0/8 address works on loopback).
fn connect_from(from: std::net::Ipv4Addr, to: &str) -> std::net::TcpStream {
    let to: std::net::SocketAddr = to.parse().expect("an address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::from((from, 0)))
            .expect("bind");
        let stream = socket.connect(to).await.expect("connect");
        stream.into_std().expect("a std stream")
    })
}

/// Idle connections that never begin TLS: one address gets only its share of the
/// listener's handshake places, and a listener full of them locks out neither another
/// address nor the local socket (each has a budget of its own).
#[test]
fn idle_connections_lock_out_nobody_else() {
    let mut w = World::new();
    let (key, public) = w.keygen("k");
    authorize(&w, &[format!("principal=\"ops\" {public}")]);
    let computer = w.start_tls_daemon();
    w.use_key("homeA", &key);
    let per_address = lingerd::MAX_HANDSHAKING_PER_ADDRESS;
    let mut idle: Vec<std::net::TcpStream> = (0..per_address + 5)
        .map(|_| connect_from([127, 0, 0, 2].into(), &computer))
        .collect();
    eventually("the refusals to be logged", || {
        w.daemon_log()
            .contains(&format!("{per_address} others from the same source"))
    });
    // The clients here connect from 127.0.0.1: still served.
    ok_tls(&w, &computer);
    // Fill the listener from more addresses: the local socket is unaffected.
    for last in 3..=9u8 {
        idle.extend((0..per_address).map(|_| connect_from([127, 0, 0, last].into(), &computer)));
    }
    eventually("the listener to be full", || {
        w.daemon_log().contains(&format!(
            "{} others have not finished their handshake",
            lingerd::MAX_HANDSHAKING
        ))
    });
    let t = w.ok(&["new", "localhost", "--name", "local"]);
    assert!(t.contains("Opened"), "{t}");
    drop(idle);
}

fn ok_tls(w: &World, computer: &str) {
    let t = common::ok_as(w, "homeA", &["new", computer, "--name", "still-served"]);
    assert!(t.contains("Opened"), "{t}");
}

/// authorized_keys options are honoured as sshd does, or the key is refused: never ignored.
/// A forced command, an address outside `from=`, an `expiry-time` in the past and an option
/// linger does not know each refuse their key (the audit log says which); `from=` with
/// wildcards and a negation, and restrictions linger never lifts, admit theirs.
#[test]
fn key_options_are_honoured_or_the_key_refused() {
    let mut w = World::new();
    let cases = [
        (
            "forced",
            r#"command="/usr/bin/backup",principal="ops""#,
            false,
            "forced command",
        ),
        (
            "elsewhere",
            r#"from="10.9.9.9",principal="ops""#,
            false,
            "does not match",
        ),
        (
            "expired",
            r#"expiry-time="20200101",principal="ops""#,
            false,
            "expired",
        ),
        (
            "unknown",
            r#"frobnicate,principal="ops""#,
            false,
            "not supported",
        ),
        (
            "admitted",
            r#"from="10.*,127.0.0.*,!127.0.0.2",restrict,no-pty,principal="ops""#,
            true,
            "",
        ),
    ];
    let mut lines = Vec::new();
    let mut keys = Vec::new();
    for (name, opts, _, _) in &cases {
        let (key, public) = w.keygen(name);
        lines.push(format!("{opts} {public}"));
        keys.push(key);
    }
    authorize(&w, &lines);
    let computer = w.start_tls_daemon();
    for ((name, _, admitted, why), key) in cases.iter().zip(&keys) {
        let home = format!("home-{name}");
        std::fs::create_dir_all(w.path(&home)).expect("home");
        w.use_key(&home, key);
        let o = run_as(&w, &home, &["get", "--computer", &computer]);
        if *admitted {
            assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        } else {
            assert_eq!(o.status.code(), Some(5), "{name}: {}", stderr(&o));
            let refused = audit(&w)
                .into_iter()
                .filter(|r| r["action"] == "login_failed")
                .any(|r| {
                    r["detail"]["reason"]
                        .as_str()
                        .is_some_and(|s| s.contains(why))
                });
            assert!(refused, "{name}: the audit log does not say {why:?}");
        }
    }
}

/// RSA key files log in as Ed25519 ones do (rsa-sha2-512 signatures), not only through
/// ssh-agent.
#[test]
fn an_rsa_key_file_logs_in() {
    let mut w = World::new();
    let key = w.path("rsa");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "rsa", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "{}", stderr(&out));
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
    authorize(&w, &[format!("principal=\"ops\" {}", public.trim())]);
    let computer = w.start_tls_daemon();
    w.use_key("homeA", &key);
    let t = common::ok_as(&w, "homeA", &["new", &computer, "--name", "r"]);
    assert!(t.contains("Opened"), "{t}");
    assert_eq!(
        common::ok_as(&w, "homeA", &["invoke", "r", "--", "echo signed"]),
        "signed\n"
    );
}

/// Terminal commands over TLS (SPEC §4 `--tty`), and sshd's `no-pty` key option: a key
/// whose line says `no-pty` (or `restrict`) is refused a terminal, with a line saying why.
#[test]
fn a_terminal_over_tls_and_no_pty_refuses_one() {
    use common::term::Term;
    let mut w = World::new();
    let (alice, alice_pub) = w.keygen("alice");
    let (bob, bob_pub) = w.keygen("bob");
    authorize(
        &w,
        &[
            format!("principal=\"alice\" {alice_pub}"),
            format!("principal=\"bob\",restrict {bob_pub}"),
        ],
    );
    let computer = w.start_tls_daemon();
    w.use_key("homeA", &alice);
    w.use_key("homeB", &bob);
    common::ok_as(&w, "homeA", &["new", &computer, "--name", "work"]);
    common::ok_as(&w, "homeB", &["new", &computer, "--name", "work"]);

    let mut t = Term::spawn_cmd(w.linger_as(
        "homeA",
        &[
            "invoke",
            "work",
            "-t",
            "--",
            "tty; read -r -p 'say: ' x; echo \"heard $x\"",
        ],
    ));
    t.expect("/dev/pts/");
    t.expect("say: ");
    t.send("hello\r");
    t.expect("heard hello");
    assert_eq!(t.wait().code(), Some(0), "{}", t.text());
    t.assert_restored();

    let mut t = Term::spawn_cmd(w.linger_as("homeB", &["invoke", "work", "-t", "--", "tty"]));
    t.expect("may not run commands on a terminal");
    assert_eq!(t.wait().code(), Some(5), "{}", t.text());
    t.assert_restored();
    // Without a terminal the same key runs it.
    assert_eq!(
        common::ok_as(&w, "homeB", &["invoke", "work", "--", "tty || true"]),
        "not a tty\n"
    );
}

/// SPEC §3: a session remembers how it was reached. Made with `--identity K`, it is used
/// again with K by later commands that do not repeat it; one that gives another key wins.
#[test]
fn a_session_remembers_the_identity_it_was_made_with() {
    let mut w = World::new();
    let (key, key_pub) = w.keygen("k");
    let (_, other_pub) = w.keygen("unused");
    authorize(&w, &[key_pub, other_pub]);
    let computer = w.start_tls_daemon();
    std::fs::create_dir_all(w.path("plain")).expect("home");
    std::fs::write(
        w.path("plain").join("options.toml"),
        "host_key_checking = \"accept-new\"\n",
    )
    .expect("options.toml");
    let key_arg = key.display().to_string();
    common::ok_as(
        &w,
        "plain",
        &[
            "--identity",
            &key_arg,
            "new",
            &computer,
            "--name",
            "remembered",
        ],
    );
    assert_eq!(
        common::ok_as(&w, "plain", &["invoke", "remembered", "--", "echo hi"]),
        "hi\n"
    );
    // A command's own flag wins: a key the server does not know is refused.
    let (stranger, _) = w.keygen("stranger");
    let out = common::run_as(
        &w,
        "plain",
        &[
            "--identity",
            &stranger.display().to_string(),
            "invoke",
            "remembered",
            "--",
            "true",
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", common::stderr(&out));
}
