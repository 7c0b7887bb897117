//! The fault suite: real daemons under the faults a host meets — a state disk that fills,
//! session hosts killed from outside, descriptor limits — asserting that nothing is lost
//! and nothing is left behind.

use crate::common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use common::{alive, eventually, kill, sha256_line, stderr, stdout, World};
use nix::sys::signal::Signal;

/// A small tmpfs mounted over a directory of the test's world, detached at the end (lazily:
/// the daemon may still hold files there until the world ends it).
struct Disk {
    at: PathBuf,
}

impl Disk {
    /// Mounts `bytes` of tmpfs at `at`; `None` where this process may not mount.
    fn mount(at: &Path, bytes: u64) -> Option<Disk> {
        let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
        let target = c(at.to_str().expect("utf-8 path"));
        let options = c(&format!("size={bytes},mode=0700"));
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let r = unsafe {
            libc::mount(
                c("tmpfs").as_ptr(),
                target.as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if r != 0 {
            eprintln!(
                "skipped: cannot mount a tmpfs at {} ({}); this test needs root",
                at.display(),
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(Disk {
            at: at.to_path_buf(),
        })
    }

    fn free_bytes(&self) -> u64 {
        nix::sys::statvfs::statvfs(&self.at)
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0)
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.at.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0x55u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&block[..512]).is_ok() {}
        path
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.at.to_str().unwrap_or_default()) {
            // SAFETY: umount2(2) with a valid path.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A world whose state directory is on `disk`: fields drop in order, so the world's
/// processes end before the disk is detached.
struct OnDisk {
    w: World,
    disk: Disk,
}

/// Runs `cmd`, which must succeed.
fn started(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("run linger");
    assert!(out.status.success(), "{}", stderr(&out));
}

fn seq_output(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.extend_from_slice(format!("{i}\n").as_bytes());
    }
    out
}

/// A state disk that fills: first the command's own spool fills it (the spool then blocks
/// the command as `block` would, and its output arrives whole once someone receives it),
/// then another file fills it while commands run (they run and answer; the log lines that
/// could not be written are counted and said once space returns). The daemon is started
/// the way a user's first command starts it, with its stderr a pipe to a client long gone.
#[test]
fn a_full_state_disk_loses_no_output_and_stops_nothing() {
    let w = World::new();
    let Some(disk) = Disk::mount(&w.path("state"), 16 << 20) else {
        return;
    };
    // The world ends its processes (found through the state directory) before the disk goes.
    let on_disk = OnDisk { w, disk };
    let (w, disk) = (&on_disk.w, &on_disk.disk);
    w.write_config(
        "[[configuration]]\nname = \"default\"\noutput_buffering = \"spool\"\noutput_buffer_size = \"256KiB\"\nspool_limit = \"1GiB\"\n",
    );
    // 4,000,000 lines, 31 MB: twice what the disk holds.
    let n = 4_000_000u64;
    let script = format!("seq 1 {n}; echo done >&2");
    // Per-request log lines too, so that the full disk costs the log some.
    started(w.disconnected("s", &script).env("RUST_LOG", "debug"));
    eventually("the spool to fill the disk", || disk.free_bytes() < 1 << 20);
    // Let the host meet the full disk for a while (its own log is there too).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let got = w.run(&["receive", "s"]);
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    assert_eq!(stderr(&got), "done\n");
    assert_eq!(
        sha256_line(&got.stdout),
        sha256_line(&seq_output(n)),
        "the output differs ({} bytes received)",
        got.stdout.len()
    );

    let filler = disk.fill();
    for i in 0..20 {
        let out = w.run(&["invoke", "s", "--", &format!("echo run{i}")]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), format!("run{i}\n"));
    }
    std::fs::remove_file(&filler).expect("remove the filler");
    assert_eq!(w.ok(&["invoke", "s", "--", "echo back"]), "back\n");
    let daemon = w.daemon_pid().expect("the daemon's pid");
    assert!(alive(daemon));
    assert!(w.ok(&["get", "s"]).contains("Opened"));
    assert!(
        w.daemon_log().contains("log line(s) lost"),
        "the daemon's log does not say it lost lines"
    );
}

/// The session's control group, if it has one: from a process of the session.
fn cgroup_of(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        if !path.contains("/linger-") {
            return None;
        }
        let base = match ctrls {
            "" => PathBuf::from("/sys/fs/cgroup"),
            c => Path::new("/sys/fs/cgroup").join(c.split(',').next()?),
        };
        Some(base.join(path.trim_start_matches('/')))
    })
}

/// A SIGKILLed session host (as the OOM killer would) takes its session with it: the
/// daemon ends the shell, the running command and the background jobs at once, and removes
/// the session's directory, socket and control group.
#[test]
fn a_killed_host_leaves_no_process_and_no_file() {
    let w = host_death_leaves_nothing(Signal::SIGKILL);
    assert!(w.daemon_log().contains("the session host died"));
}

/// A session host sent SIGTERM (a shutdown, a `pkill`) ends its session in order: the same
/// nothing is left behind.
#[test]
fn a_terminated_host_leaves_no_process_and_no_file() {
    host_death_leaves_nothing(Signal::SIGTERM);
}

fn host_death_leaves_nothing(signal: Signal) -> World {
    let mut w = World::new();
    w.start_daemon();
    w.ok(&["new", "localhost", "--name", "s"]);
    let pids: Vec<i32> = w
        .ok(&[
            "invoke",
            "s",
            "--",
            "sleep 1001 & echo $!; (sleep 1002 & echo $!); echo $$",
        ])
        .lines()
        .map(|l| l.parse().expect("a pid"))
        .collect();
    // A command left running, whose client went away.
    w.ok(&[
        "invoke",
        "s",
        "--as-job",
        "--",
        "sh -c 'echo $$ > running.pid; exec sleep 1003'",
    ]);
    let home = w.dir.path().to_path_buf();
    let mut all = pids.clone();
    eventually("the running command's pid", || {
        std::fs::read_to_string(home.join("running.pid"))
            .is_ok_and(|t| t.trim().parse::<i32>().is_ok())
    });
    all.push(
        std::fs::read_to_string(home.join("running.pid"))
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid"),
    );
    let cgroup = cgroup_of(pids[0]);
    let hosts = w.host_pids();
    assert_eq!(hosts.len(), 1);
    let session_dirs = || {
        std::fs::read_dir(w.state_dir().join("sessions"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(session_dirs(), 1);
    for &p in &all {
        assert!(alive(p), "{p} is not running before the kill");
    }
    kill(hosts[0], signal);
    for &p in &all {
        eventually("the session's processes to end", || !alive(p));
    }
    eventually("the session's directory to go", || session_dirs() == 0);
    let sockets = std::fs::read_dir(w.state_dir().join("hosts"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(sockets, 0, "the host's socket was left behind");
    if let Some(dir) = cgroup {
        eventually("the session's control group to go", || !dir.exists());
    }
    let row = w.ok(&["get", "s"]);
    assert!(row.contains("Closed"), "{row}");
    w
}

/// `lingerd` started under `ulimit -n LIMIT` (soft and hard).
fn limited_daemon(w: &mut World, limit: u64) {
    let args = w.daemon_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = w.lingerd(&args);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, limit)
                .map_err(std::io::Error::from)
        });
    }
    w.start_daemon_from(cmd);
}

/// Under a low descriptor limit sessions still start (the shell's own descriptors move below
/// the limit) and keep the limit the daemon was given.
#[test]
fn sessions_work_under_a_low_descriptor_limit() {
    let mut w = World::new();
    limited_daemon(&mut w, 64);
    w.ok(&["new", "localhost", "--name", "s"]);
    assert_eq!(
        w.ok(&[
            "invoke",
            "s",
            "--",
            "x=$((6*7)); echo $x; ulimit -n; exec 9>&1; echo nine >&9"
        ]),
        "42\n64\nnine\n"
    );
}

/// At the descriptor limit: a new session is refused in one line naming the limit, the
/// sessions that exist still answer, and a connection the daemon cannot take is told why
/// instead of waiting for ever.
#[test]
fn at_the_descriptor_limit_errors_are_clear_and_sessions_answer() {
    let mut w = World::new();
    limited_daemon(&mut w, 40);
    let mut made = Vec::new();
    let mut refusal = None;
    for i in 0..40 {
        let name = format!("s{i}");
        let out = w.run(&["new", "localhost", "--name", &name]);
        if out.status.success() {
            made.push(name);
        } else {
            refusal = Some(stderr(&out));
            break;
        }
    }
    let refusal = refusal.expect("the descriptor limit was never reached");
    assert!(
        refusal.contains("too many open files") && refusal.contains("LimitNOFILE"),
        "{refusal}"
    );
    assert_eq!(refusal.trim().lines().count(), 1, "{refusal}");
    assert!(!made.is_empty(), "no session started: {refusal}");
    for name in &made {
        assert_eq!(w.ok(&["invoke", name, "--", "echo ok"]), "ok\n");
    }
    let listed = w.ok(&["get"]);
    for name in &made {
        assert!(
            listed.contains(name.as_str()),
            "{name} missing from\n{listed}"
        );
    }

    // Clients that introduce themselves and stay, until the daemon runs out.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (held, refused) = runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..64 {
            match welcomed(&w).await {
                Ok(conn) => held.push(conn),
                Err(why) => return (held, why),
            }
        }
        (held, "every connection was welcomed".to_string())
    });
    assert!(refused.contains("too many open files"), "{refused}");
    // The sessions cannot be asked now: they show Broken, and get says why.
    let out = w.run(&["get"]);
    assert!(stdout(&out).contains("Broken"), "{}", stdout(&out));
    let said = stderr(&out);
    assert!(
        said.contains("too many open files") && said.trim().lines().count() == 1,
        "{said}"
    );
    drop(held);
    drop(runtime);
    eventually("the daemon to serve again", || {
        !stdout(&w.run(&["get"])).contains("Broken")
    });
}

type Conn = (
    linger_proto::frame::FrameReader<tokio::net::unix::OwnedReadHalf>,
    linger_proto::frame::FrameWriter<tokio::net::unix::OwnedWriteHalf>,
);

/// A connection through its handshake, or what the daemon said instead.
async fn welcomed(w: &World) -> Result<Conn, String> {
    use linger_proto::client::{ClientMsg, Hello};
    use linger_proto::server::ServerMsg;
    let stream = tokio::net::UnixStream::connect(w.socket())
        .await
        .map_err(|e| e.to_string())?;
    let (r, wr) = stream.into_split();
    let mut rd = linger_proto::frame::FrameReader::new(r);
    let mut wr = linger_proto::frame::FrameWriter::new(wr);
    // The daemon may refuse before reading anything: what it says is read below.
    let _ = wr
        .write(&ClientMsg::Hello(Hello {
            protocol_version: linger_proto::PROTOCOL_VERSION,
            client_id: uuid::Uuid::new_v4(),
            client_name: "holder".into(),
        }))
        .await;
    match rd.read::<ServerMsg>().await {
        Ok(Some(ServerMsg::Welcome(_))) => Ok((rd, wr)),
        Ok(Some(ServerMsg::Goodbye { error })) => Err(error.message),
        other => Err(format!("{other:?}")),
    }
}

/// A receiving client SIGKILLed while its stdout is slow: the next receive repeats at most
/// what the killed one had not written yet (a part of the entry it was writing), not what it
/// had read ahead. The output is made of small entries, as a command printing now and then
/// makes them.
#[test]
fn a_killed_slow_receiver_leaves_little_to_repeat() {
    use std::io::Read;
    let w = World::new();
    w.write_config("[[configuration]]\nname = \"default\"\noutput_buffering = \"spool\"\n");
    let script = "for i in $(seq 1 3000); do seq $((i*100)) $((i*100+99)); done";
    started(&mut w.disconnected("s", script));
    let mut expected = Vec::new();
    for i in 1..=3000u64 {
        for j in i * 100..=i * 100 + 99 {
            expected.extend_from_slice(format!("{j}\n").as_bytes());
        }
    }
    // Everything is produced before the first receive starts.
    eventually("the command to finish", || {
        !w.ok(&["get", "s", "--json"])
            .contains("\"running_command\":\"")
    });
    let mut first = w
        .linger(&["receive", "s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("receive");
    let mut pipe = first.stdout.take().expect("stdout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 300_000 {
        let n = pipe.read(&mut buf).expect("read");
        assert!(n > 0, "the first receive ended early");
        got.extend_from_slice(&buf[..n]);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    kill(first.id() as i32, Signal::SIGKILL);
    let _ = first.wait();
    // What it wrote before it died is the reader's.
    pipe.read_to_end(&mut got).expect("drain");
    let second = w.run(&["receive", "s"]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let total = got.len() + second.stdout.len();
    assert!(
        total >= expected.len(),
        "output was lost: {total} of {} bytes",
        expected.len()
    );
    let repeated = total - expected.len();
    // The second picks up where the first stopped, repeating at most the tail it cut.
    assert!(
        expected.starts_with(&got),
        "the first receive's output is not a prefix"
    );
    assert!(
        expected.ends_with(&second.stdout),
        "the second receive's output is not the rest"
    );
    assert!(
        repeated <= 16 << 10,
        "{repeated} bytes came twice (first {}, second {})",
        got.len(),
        second.stdout.len()
    );
}

/// A daemon stopped (SIGSTOP, a suspended VM, a swap storm) for longer than the heartbeat
/// timeout does not hold its own silence against its clients: a client attached before the
/// stall, and heard from just before it, is still attached after it.
#[test]
fn a_stalled_daemon_keeps_its_clients_attached() {
    let mut w = World::new();
    w.write_config("[server]\nheartbeat_interval = \"500ms\"\nheartbeat_timeout = \"2s\"\n");
    w.start_daemon();
    w.ok(&["new", "localhost", "--name", "s"]);
    let attached = |w: &World| {
        let row = w.ok(&["get", "s"]);
        row.lines()
            .any(|l| l.contains(" s ") && l.contains("Opened"))
    };
    assert!(attached(&w));
    let daemon = w.daemon_pid().expect("the daemon's pid");
    kill(daemon, Signal::SIGSTOP);
    std::thread::sleep(std::time::Duration::from_secs(4));
    kill(daemon, Signal::SIGCONT);
    assert!(attached(&w), "the stall detached the session");
    assert!(w.daemon_log().contains("the daemon did not run for"));
    // Silence of the client's own still counts. Seen from another client (whose asking is
    // no sign of life from the first), a session attached elsewhere is Disconnected and
    // Busy; once detached, Disconnected and None.
    eventually("the silent client to be detached", || {
        let listed = common::ok_as(&w, "observer", &["get", "--computer", "localhost"]);
        listed.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1) == Some(&"s")
                && cols.get(3) == Some(&"Disconnected")
                && cols.get(5) == Some(&"None")
        })
    });
}

/// The spawner (the small process that starts session hosts for the daemon, so that a daemon
/// holding thousands of descriptors does not pay for them at every exec) holds none of the
/// daemon's descriptors; killed, it is missed by no one: the daemon starts hosts itself.
#[test]
fn a_killed_spawner_leaves_the_daemon_starting_sessions() {
    let mut w = World::new();
    w.start_daemon();
    let daemon = w.daemon_pid().expect("the daemon's pid");
    let spawner = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(daemon) && cmdline.starts_with(b"lingerd: spawner")
        })
        .expect("the daemon's spawner");
    let fds = std::fs::read_dir(format!("/proc/{spawner}/fd"))
        .expect("its descriptors")
        .count();
    assert_eq!(fds, 4, "the spawner holds its socket and stdio only");
    w.ok(&["new", "localhost", "--name", "by-spawner"]);
    assert_eq!(w.ok(&["invoke", "by-spawner", "--", "echo one"]), "one\n");
    kill(spawner, Signal::SIGKILL);
    eventually("the spawner to be gone", || !alive(spawner));
    w.ok(&["new", "localhost", "--name", "by-daemon"]);
    assert_eq!(w.ok(&["invoke", "by-daemon", "--", "echo two"]), "two\n");
    eventually("the daemon to say so", || {
        w.daemon_log().contains("the spawner exited")
    });
}

/// A client that starts a daemon while another one still holds the socket's lock (a daemon
/// on its way out: its main thread is gone, its files not yet) waits for that one, and
/// starts its own once the lock is free, instead of waiting for a socket that never comes.
#[test]
fn a_daemon_on_its_way_out_does_not_stop_the_next_one_starting() {
    use nix::fcntl::{Flock, FlockArg};
    let w = World::new();
    let run = w.path("run/linger");
    std::fs::create_dir_all(&run).expect("runtime dir");
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("0700");
    let lock = std::fs::File::create(run.join("lingerd.lock")).expect("lock file");
    let held = Flock::lock(lock, FlockArg::LockExclusive).expect("hold the lock");
    // The lock file's opens and closes from now on are the daemon's: the event to wait for.
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).expect("inotify");
    watch
        .add_watch(&run.join("lingerd.lock"), AddWatchFlags::IN_CLOSE_WRITE)
        .expect("watch the lock file");
    let client = w
        .linger(&["new", "localhost", "--name", "s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("linger new");
    // The client's first daemon found the lock taken and closed the file on its way out.
    eventually("the first daemon to meet the held lock", || {
        watch.read_events().is_ok_and(|events| !events.is_empty())
    });
    drop(held);
    let out = client.wait_with_output().expect("linger new");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(w.daemon_pid().is_some_and(alive), "a daemon serves now");
    assert_eq!(w.ok(&["invoke", "s", "--", "echo up"]), "up\n");
}
