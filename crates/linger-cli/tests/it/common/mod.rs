//! Test harness: a private world of temporary XDG directories, the real `linger` and
//! `lingerd` binaries, and a teardown that ends every process the test started, by pid.

pub mod proxy;
pub mod sshd;
pub mod term;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct World {
    pub dir: tempfile::TempDir,
    /// A daemon this test started in the foreground, reaped at the end.
    daemon: Option<std::process::Child>,
}

pub fn linger_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_linger"))
}

/// `lingerd` is built beside `linger` (the lingerd package's own integration tests make
/// cargo build it for every workspace test run).
pub fn lingerd_bin() -> PathBuf {
    let p = linger_bin().with_file_name("lingerd");
    assert!(
        p.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::Builder::new()
            .prefix("lgt")
            .tempdir_in("/tmp")
            .expect("temp dir");
        for sub in ["run", "state", "config/linger", "homeA", "homeB"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        World { dir, daemon: None }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("run/linger/lingerd.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state/linger/server")
    }

    /// Writes the daemon's configuration file (read at its next start).
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path("config/linger/lingerd.toml"), text).expect("config");
    }

    fn env(&self, cmd: &mut Command, home: &str) {
        cmd.env_remove("LINGER_HOME")
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("LINGER_HOME", self.path(home))
            .env("LINGERD", lingerd_bin())
            .env("HOME", self.dir.path());
    }

    /// `linger ARGS` as client "homeA".
    pub fn linger(&self, args: &[&str]) -> Command {
        self.linger_as("homeA", args)
    }

    /// `linger ARGS` as another client (a second machine).
    pub fn linger_as(&self, home: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(linger_bin());
        cmd.args(args).stdin(Stdio::null());
        self.env(&mut cmd, home);
        cmd
    }

    pub fn lingerd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(lingerd_bin());
        cmd.args(args).stdin(Stdio::null());
        self.env(&mut cmd, "homeA");
        cmd
    }

    /// `linger invoke --computer localhost --in-disconnected-session --name NAME -- SCRIPT`.
    pub fn disconnected(&self, name: &str, script: &str) -> Command {
        self.linger(&[
            "invoke",
            "--computer",
            "localhost",
            "--in-disconnected-session",
            "--name",
            name,
            "--",
            script,
        ])
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.linger(args).output().expect("run linger")
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "linger {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.path("run/linger/lingerd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Session host pids, from the meta.json each host writes.
    pub fn host_pids(&self) -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir(self.state_dir().join("sessions")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("meta.json")).ok())
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter_map(|v| v["host_pid"].as_i64())
            .map(|p| p as i32)
            .collect()
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("lingerd.log")).unwrap_or_default()
    }
}

/// Every process whose Unix session is `sid` (a session host and all it started).
fn session_members(sid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split(' ').nth(3)?.parse::<i32>().ok()
                })
                == Some(sid)
        })
        .collect()
}

pub fn kill(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

impl Drop for World {
    fn drop(&mut self) {
        use nix::sys::signal::Signal;
        let hosts = self.host_pids();
        let daemon = self.daemon_pid();
        let sessions: Vec<String> = std::fs::read_dir(self.state_dir().join("sessions"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| uuid::Uuid::parse_str(e.file_name().to_str()?).ok())
                    .map(|id| id.simple().to_string())
                    .collect()
            })
            .unwrap_or_default();
        for h in &hosts {
            for p in session_members(*h) {
                kill(p, Signal::SIGKILL);
            }
        }
        if let Some(d) = daemon {
            kill(d, Signal::SIGTERM);
            let start = Instant::now();
            while alive(d) && start.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(10));
            }
            kill(d, Signal::SIGKILL);
        }
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The hosts were killed with their daemon: nobody else removes their control groups.
        for id in &sessions {
            linger_host::limits::kill_and_remove_for(id);
        }
        // LINGER_TEST_KEEP=1 keeps a failed test's directory (logs, audit, state) to read.
        if std::thread::panicking() && std::env::var_os("LINGER_TEST_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            eprintln!("kept the test's directory: {}", kept.keep().display());
        }
    }
}

/// Polls `f` until it returns true (tests never assert on wall-clock speed; this only
/// bounds how long a broken build takes to fail).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

impl World {
    /// Starts `lingerd` in the foreground (as systemd would) and waits for its socket.
    pub fn start_daemon(&mut self) {
        self.start_daemon_with(&[]);
    }

    /// Starts `lingerd` with extra flags and waits for its socket.
    pub fn start_daemon_with(&mut self, extra: &[&str]) {
        let socket = self.socket();
        let state = self.state_dir();
        let mut args = vec![
            "--socket",
            socket.to_str().expect("utf-8 path"),
            "--state-dir",
            state.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        self.start_daemon_from(self.lingerd(&args));
    }

    /// Starts `cmd` (a `lingerd` command line made by [`World::lingerd`], perhaps with
    /// limits of its own) as this world's daemon and waits for its socket.
    pub fn start_daemon_from(&mut self, mut cmd: Command) {
        let child = cmd.spawn().expect("start lingerd");
        self.daemon = Some(child);
        eventually("lingerd's socket", || self.socket().exists());
    }

    /// The `--socket` and `--state-dir` arguments of this world's daemon.
    pub fn daemon_args(&self) -> Vec<String> {
        vec![
            "--socket".into(),
            self.socket().display().to_string(),
            "--state-dir".into(),
            self.state_dir().display().to_string(),
        ]
    }

    /// Starts `lingerd` listening for TLS on a free loopback port as well; returns the
    /// computer name clients reach it by (`127.0.0.1:PORT`).
    pub fn start_tls_daemon(&mut self) -> String {
        let listening = self.state_dir().join("listening");
        let _ = std::fs::remove_file(&listening);
        self.start_daemon_with(&["--listen", "127.0.0.1:0"]);
        let mut address = String::new();
        eventually("lingerd's TLS listener", || {
            address = std::fs::read_to_string(&listening).unwrap_or_default();
            address.ends_with('\n')
        });
        address.lines().next().expect("an address").to_string()
    }

    /// Stops the daemon this test started in the foreground (its sessions keep running).
    /// Its `listening` file goes too, so a restart can be waited for.
    pub fn stop_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            kill(child.id() as i32, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.state_dir().join("listening"));
    }

    /// Waits until the daemon listens for TLS on `addr`.
    pub fn wait_listening(&self, addr: &str) {
        let listening = self.state_dir().join("listening");
        eventually("the TLS listener", || {
            std::fs::read_to_string(&listening).is_ok_and(|l| l.lines().any(|a| a == addr))
        });
    }

    /// Makes an Ed25519 key pair with `ssh-keygen` (no passphrase); returns the private
    /// key's path and the public key's line.
    pub fn keygen(&self, name: &str) -> (PathBuf, String) {
        let key = self.path(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .output()
            .expect("run ssh-keygen (Debian's openssh-client)");
        assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
        (key, public.trim().to_string())
    }

    /// Client `home` logs in with `key` and pins new servers on first use.
    pub fn use_key(&self, home: &str, key: &Path) {
        std::fs::write(
            self.path(home).join("options.toml"),
            format!(
                "identity_file = {:?}\nhost_key_checking = \"accept-new\"\n",
                key.display().to_string()
            ),
        )
        .expect("options.toml");
    }

    /// A library client playing the client machine `home`.
    pub fn client(&self, home: &str) -> linger::Client {
        linger::Client::open(linger::ClientHome::at(&self.path(home)))
            .expect("client")
            .with_local_socket(self.socket())
    }
}

/// `len` pseudo-random bytes (xorshift64: fast, and every byte value appears, NULs and
/// marker bytes included).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// What `sha256sum` prints for `data` read from stdin.
pub fn sha256_line(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{hex}  -\n")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `linger ARGS` as client `home`, run to its end.
pub fn run_as(w: &World, home: &str, args: &[&str]) -> Output {
    w.linger_as(home, args).output().expect("run linger")
}

/// `linger ARGS` as client `home`, required to succeed; returns stdout.
pub fn ok_as(w: &World, home: &str, args: &[&str]) -> String {
    let o = run_as(w, home, args);
    assert!(
        o.status.success(),
        "[{home}] linger {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// A script printing three waves of 300 lines (`wN-I`), each once `$HOME/waveN` exists.
pub const WAVES: &str =
    "for wave in 1 2 3; do while [ ! -e \"$HOME/wave$wave\" ]; do sleep 0.01; done; \
                         for i in $(seq 1 300); do echo w$wave-$i; done; done";

/// What `WAVES` prints.
pub fn waves_expected() -> String {
    (1..=3)
        .flat_map(|wave| (1..=300).map(move |i| format!("w{wave}-{i}\n")))
        .collect()
}

/// A `linger` running in the background: its stdout read line by line while a thread
/// collects its stderr, so a test can wait for a notice (a reconnection) mid-stream.
pub struct Running {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts `cmd` with stdout and stderr piped.
    pub fn start(mut cmd: Command) -> Running {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start linger");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let pipe = child.stderr.take().expect("stderr");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let collected = stderr.clone();
        let reader = std::thread::spawn(move || {
            for l in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                collected.lock().expect("stderr").push_str(&(l + "\n"));
            }
        });
        Running {
            child,
            stdout,
            stderr,
            reader: Some(reader),
        }
    }

    /// Its stdin, if the command was made with `Stdio::piped()` for it.
    pub fn take_stdin(&mut self) -> std::process::ChildStdin {
        self.child.stdin.take().expect("stdin piped")
    }

    /// The next line of stdout, newline included; `None` at its end.
    pub fn line(&mut self) -> Option<String> {
        use std::io::BufRead;
        let mut line = String::new();
        (self.stdout.read_line(&mut line).expect("read stdout") > 0).then_some(line)
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        kill(self.child.id() as i32, sig);
    }

    /// Whether it has exited (without waiting).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_some()
    }

    /// Waits for its end: the exit code, the rest of stdout, and all of stderr.
    pub fn finish(mut self) -> (Option<i32>, String, String) {
        use std::io::Read;
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("read stdout");
        let code = self.child.wait().expect("linger ends").code();
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stderr reader");
        }
        (code, rest, self.stderr())
    }
}

/// Checks that `got` is exactly what `WAVES` prints; otherwise says which lines were lost
/// or repeated.
pub fn assert_waves(got: &str, stderr: &str) {
    let expected = waves_expected();
    if got == expected {
        return;
    }
    let mut seen = std::collections::HashMap::new();
    for l in got.lines() {
        *seen.entry(l).or_insert(0) += 1;
    }
    let lost: Vec<&str> = expected.lines().filter(|l| !seen.contains_key(l)).collect();
    let repeated: Vec<&str> = seen
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(l, _)| *l)
        .collect();
    panic!(
        "lines lost or repeated: {} lost (first {:?}), {} repeated (first {:?}), {} lines in all; stderr: {stderr}",
        lost.len(),
        lost.first(),
        repeated.len(),
        repeated.first(),
        got.lines().count()
    );
}

/// Drives `child` (a `linger` running `WAVES`, stdout and stderr piped): releases each wave,
/// reads it whole, and calls `between(wave, pid)` after waves 1 and 2 (to break the
/// connection under it). Returns stdout, stderr and the exit code.
pub fn stream_waves(
    w: &World,
    mut child: std::process::Child,
    mut between: impl FnMut(u32, u32),
) -> (String, String, Option<i32>) {
    use std::io::{BufRead, Read};
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut err_pipe = child.stderr.take().expect("stderr");
    let mut got = String::new();
    for wave in 1..=3u32 {
        std::fs::write(w.dir.path().join(format!("wave{wave}")), "").expect("wave file");
        let last = format!("w{wave}-300\n");
        while !got.ends_with(&last) {
            let mut line = String::new();
            if out.read_line(&mut line).expect("a line") == 0 {
                let mut err = String::new();
                let _ = err_pipe.read_to_string(&mut err);
                panic!(
                    "output ended after {} lines; stderr: {err}",
                    got.lines().count()
                );
            }
            got.push_str(&line);
        }
        if wave < 3 {
            between(wave, child.id());
        }
    }
    out.read_to_string(&mut got).expect("the rest of stdout");
    let mut err = String::new();
    err_pipe.read_to_string(&mut err).expect("stderr");
    let code = child.wait().expect("linger ends").code();
    (got, err, code)
}

/// Runs `script` in `entry` through the library API; its stdout, stderr and status. Panics,
/// naming the script, if the stream fails, ends without a status or drops output.
pub async fn run_api(
    client: &linger::Client,
    entry: &linger::Entry,
    script: &str,
) -> (Vec<u8>, Vec<u8>, i32) {
    run_api_with(client, entry, script, &linger::InvokeOptions::default()).await
}

pub async fn run_api_with(
    client: &linger::Client,
    entry: &linger::Entry,
    script: &str,
    opts: &linger::InvokeOptions,
) -> (Vec<u8>, Vec<u8>, i32) {
    use linger::{Event, StreamKind};
    let mut cmd = client
        .invoke(entry, script, opts)
        .await
        .unwrap_or_else(|e| panic!("invoke {script:?}: {e}"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match cmd.next().await {
            Ok(Some(Event::Output {
                stream: StreamKind::Stdout,
                data,
                ..
            })) => out.extend(data),
            Ok(Some(Event::Output {
                stream: StreamKind::Stderr,
                data,
                ..
            })) => err.extend(data),
            Ok(Some(Event::Finished { status, .. })) => return (out, err, status),
            Ok(Some(Event::Dropped { bytes })) => panic!("{script:?}: {bytes} bytes dropped"),
            Ok(None) => panic!("{script:?}: the stream ended without a status"),
            Err(e) => panic!("{script:?}: {e}"),
        }
    }
}

/// A client speaking the wire protocol by hand on `w`'s local socket, as a new client id:
/// Hello sent and answered with Welcome. Returns both halves.
pub async fn raw_client(
    w: &World,
    client_name: &str,
) -> (
    linger_proto::frame::FrameReader<tokio::net::unix::OwnedReadHalf>,
    linger_proto::frame::FrameWriter<tokio::net::unix::OwnedWriteHalf>,
) {
    use linger_proto::client::{ClientMsg, Hello};
    use linger_proto::server::ServerMsg;
    let stream = tokio::net::UnixStream::connect(w.socket())
        .await
        .expect("connect");
    let (r, wr) = stream.into_split();
    let mut rd = linger_proto::frame::FrameReader::new(r);
    let mut wr = linger_proto::frame::FrameWriter::new(wr);
    wr.write(&ClientMsg::Hello(Hello {
        protocol_version: linger_proto::PROTOCOL_VERSION,
        client_id: uuid::Uuid::new_v4(),
        client_name: client_name.into(),
    }))
    .await
    .expect("hello");
    assert!(matches!(
        rd.read::<ServerMsg>().await,
        Ok(Some(ServerMsg::Welcome(_)))
    ));
    (rd, wr)
}

/// [`raw_client`], then a new session `name` (request id 1). Returns both halves and its id.
pub async fn raw_session(
    w: &World,
    client_name: &str,
    name: &str,
) -> (
    linger_proto::frame::FrameReader<tokio::net::unix::OwnedReadHalf>,
    linger_proto::frame::FrameWriter<tokio::net::unix::OwnedWriteHalf>,
    uuid::Uuid,
) {
    use linger_proto::client::{ClientMsg, NewSession, Request};
    use linger_proto::server::{Reply, ServerMsg};
    let (mut rd, mut wr) = raw_client(w, client_name).await;
    wr.write(&ClientMsg::Request {
        rid: 1,
        request: Request::NewSession(NewSession {
            name: name.into(),
            configuration: None,
            idle_timeout_ms: None,
            buffering: None,
            ..Default::default()
        }),
    })
    .await
    .expect("new");
    let instance_id = match rd.read::<ServerMsg>().await {
        Ok(Some(ServerMsg::Reply {
            reply: Reply::Session(s),
            ..
        })) => s.instance_id,
        other => panic!("unexpected {other:?}"),
    };
    (rd, wr, instance_id)
}
