//! Benchmark of linger's ssh transport against OpenSSH itself, side by side in one run: a
//! private sshd on loopback (the tests' fixture), the release binaries, and the system's
//! `ssh`. It only reports; nothing here fails on wall-clock numbers.
//!
//! Run with `bash bench/run.sh`, or `cargo build --release --workspace` and then
//! `cargo bench -p linger-cli --bench ssh_bench`.
//!
//! Measured: a `true` round trip (a cold `ssh … true` process each time; `ssh` through a
//! ControlMaster; linger's library API over one open ssh connection; a whole `linger invoke`
//! process, which opens a new ssh connection), session creation, 1 GiB of stdout, and a
//! fan-out to 32 computers. The fixture's sshd listens on 127.0.0.1 only, so the 32
//! "computers" are 32 more instances of the fixture, each its own sshd on its own port of
//! 127.0.0.1 (one sshd would not do: its `MaxStartups` drops concurrent logins past 10),
//! all bridging to the one daemon. For context: a `bash -c true` process, the user's login
//! shell started as sshd starts it (its startup files run before every remote command),
//! a 1-byte round trip through an open ssh channel, and linger's API over the local socket.
//!
//! Everything runs in a fresh temporary directory: the sshd's keys and config, the client
//! home, and the XDG directories of the daemon that `lingerd --stdio` (the remote command,
//! given them explicitly since sshd cleans the environment) starts on first use. At the end
//! every session made here is removed, the ControlMaster is stopped, the daemon and any
//! session host still alive are killed by pid, and sshd is killed.

#[path = "../tests/common/sshd.rs"]
mod sshd;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use linger::{Client, ClientHome, Entry, Event, InvokeOptions, NewOptions, StreamKind};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sshd::{ssh_command, user, Sshd};

const SPAWN_WARMUP: usize = 10;
const SPAWN_RUNS: usize = 200;
const SSH_COLD_WARMUP: usize = 5;
const SSH_COLD_RUNS: usize = 100;
const SSH_MUX_WARMUP: usize = 20;
const SSH_MUX_RUNS: usize = 500;
const PINGPONG_WARMUP: usize = 100;
const PINGPONG_RUNS: usize = 2000;
const API_WARMUP: usize = 100;
const API_RUNS: usize = 2000;
const CLI_WARMUP: usize = 5;
const CLI_RUNS: usize = 100;
const CREATE_WARMUP: usize = 3;
const CREATE_RUNS: usize = 50;
const THROUGHPUT_BYTES: u64 = 1 << 30;
const FAN_OUT: usize = 32;
const FAN_SSH_WARMUP: usize = 2;
const FAN_SSH_RUNS: usize = 20;
const FAN_API_WARMUP: usize = 10;
const FAN_API_RUNS: usize = 100;
const FAN_CLI_WARMUP: usize = 2;
const FAN_CLI_RUNS: usize = 20;

/// Design target: linger's API over an open connection vs `ssh` through a ControlMaster.
const TARGET_SPEEDUP_VS_MUX: f64 = 12.0;
/// Design target: linger's throughput over ssh vs ssh's own.
const TARGET_THROUGHPUT_RATIO: f64 = 3.0;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    // `cargo bench` passes `--bench`; there are no options to read.
    let bins = match release_binaries() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ssh_bench: {e}");
            std::process::exit(2);
        }
    };
    if !Path::new(sshd::SSHD).is_file() {
        eprintln!(
            "ssh_bench: {} is missing: install Debian's openssh-server (bench/run.sh does)",
            sshd::SSHD
        );
        std::process::exit(2);
    }
    let env = match BenchEnv::new(bins) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ssh_bench: cannot prepare the temporary directory: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("starting sshd on loopback");
    let server = Sshd::start(env.dir.path());
    let ssh = Ssh::new(&server);
    // The fan-out's hosts, killed when dropped (below).
    let mut fleet = Vec::with_capacity(FAN_OUT);
    eprintln!("starting {FAN_OUT} more sshd for the fan-out");
    let prepared = env
        .write_options(&ssh)
        .map_err(BoxError::from)
        .and_then(|()| start_fleet(&env, &server, &mut fleet));
    let hosts: Vec<Ssh> = fleet.iter().map(|s| ssh.on(s.port)).collect();
    let code = match prepared {
        Err(e) => {
            eprintln!("ssh_bench: cannot prepare: {e}");
            1
        }
        Ok(()) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let result = runtime.block_on(run(&env, &ssh, &hosts));
            // Connections (and the ssh processes they hold) go before the daemon does.
            drop(runtime);
            match result {
                Ok(report) => {
                    report.print();
                    0
                }
                Err(e) => {
                    eprintln!("ssh_bench: failed: {e}");
                    env.print_log_tail();
                    1
                }
            }
        }
    };
    // Kills the daemon and any session host left, then deletes the directory; then sshd
    // (this also happens if a measurement panics).
    drop(env);
    drop(fleet);
    drop(server);
    std::process::exit(code);
}

struct Binaries {
    linger: PathBuf,
    lingerd: PathBuf,
}

/// target/release/{linger,lingerd} of this workspace.
fn release_binaries() -> Result<Binaries, String> {
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release");
    let release = release.canonicalize().unwrap_or(release);
    let bins = Binaries {
        linger: release.join("linger"),
        lingerd: release.join("lingerd"),
    };
    for b in [&bins.linger, &bins.lingerd] {
        if !b.is_file() {
            return Err(format!(
                "{} is missing: run `cargo build --release --workspace` first (or use bench/run.sh)",
                b.display()
            ));
        }
    }
    Ok(bins)
}

/// How this benchmark runs `ssh` against the fixture: the flags the transport uses (the
/// fixture's key and known_hosts, nothing of the user's), the port and the user.
#[derive(Clone)]
struct Ssh {
    program: String,
    flags: Vec<String>,
    /// The whole `ssh_command` option, as the linger client gets it.
    command_line: String,
    port: u16,
    user: String,
}

impl Ssh {
    fn new(server: &Sshd) -> Ssh {
        let command_line = ssh_command(server);
        let mut words = command_line.split_whitespace().map(str::to_string);
        let program = words.next().expect("ssh_command names a program");
        Ssh {
            program,
            flags: words.collect(),
            command_line,
            port: server.port,
            user: user(),
        }
    }

    /// The same, for the sshd on another port.
    fn on(&self, port: u16) -> Ssh {
        Ssh {
            port,
            ..self.clone()
        }
    }

    /// `ssh FLAGS -p PORT EXTRA -- USER@127.0.0.1 [REMOTE]`.
    fn command(&self, extra: &[&str], remote: Option<&str>) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.flags)
            .arg("-p")
            .arg(self.port.to_string())
            .args(extra)
            .arg("--")
            .arg(format!("{}@127.0.0.1", self.user));
        if let Some(r) = remote {
            cmd.arg(r);
        }
        cmd
    }

    /// The linger computer for this sshd.
    fn computer(&self) -> String {
        format!("ssh://{}@127.0.0.1:{}", self.user, self.port)
    }
}

/// The temporary world the benchmark runs in.
struct BenchEnv {
    dir: tempfile::TempDir,
    runtime: PathBuf,
    state: PathBuf,
    config: PathBuf,
    /// The linger client's home (LINGER_HOME), holding options.toml.
    home: PathBuf,
    bins: Binaries,
}

impl BenchEnv {
    fn new(bins: Binaries) -> std::io::Result<BenchEnv> {
        // Short paths: session hosts and the ControlMaster put Unix sockets in here.
        let dir = tempfile::Builder::new().prefix("lgs").tempdir()?;
        let env = BenchEnv {
            runtime: dir.path().join("run"),
            state: dir.path().join("state"),
            config: dir.path().join("config"),
            home: dir.path().join("home"),
            dir,
            bins,
        };
        for d in [&env.runtime, &env.state, &env.config, &env.home] {
            std::fs::create_dir_all(d)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
        }
        // The ssh processes (the client's and the benchmark's own) inherit these: nothing
        // of the user's home or agent is used, and `localhost` finds the same daemon that
        // the bridge starts.
        for (k, v) in env.vars() {
            std::env::set_var(k, v);
        }
        std::env::remove_var("SSH_AUTH_SOCK");
        Ok(env)
    }

    /// The environment of a CLI process, as the tests' `World` sets it.
    fn vars(&self) -> Vec<(&'static str, &Path)> {
        vec![
            ("XDG_RUNTIME_DIR", &self.runtime),
            ("XDG_STATE_HOME", &self.state),
            ("XDG_CONFIG_HOME", &self.config),
            ("LINGER_HOME", &self.home),
            ("LINGERD", &self.bins.lingerd),
            ("HOME", self.dir.path()),
        ]
    }

    /// The client's options: the fixture's ssh flags, and a remote command that bridges to
    /// this benchmark's daemon (sshd gives the remote command a clean environment).
    fn write_options(&self, ssh: &Ssh) -> std::io::Result<()> {
        let lingerd = self.bins.lingerd.display();
        let remote = format!(
            "env XDG_RUNTIME_DIR={} XDG_STATE_HOME={} XDG_CONFIG_HOME={} HOME={} LINGERD={lingerd} {lingerd} --stdio",
            self.runtime.display(),
            self.state.display(),
            self.config.display(),
            self.dir.path().display(),
        );
        std::fs::write(
            self.home.join("options.toml"),
            format!(
                "ssh_command = {:?}\nssh_remote_command = {remote:?}\n",
                ssh.command_line
            ),
        )
    }

    fn linger(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bins.linger);
        cmd.env_remove("LINGER_HOME").envs(self.vars()).args(args);
        cmd
    }

    fn pid_file(&self) -> PathBuf {
        self.runtime.join("linger/lingerd.pid")
    }

    fn sessions_dir(&self) -> PathBuf {
        self.state.join("linger/server/sessions")
    }

    fn print_log_tail(&self) {
        let log = self.state.join("linger/server/lingerd.log");
        if let Ok(text) = std::fs::read_to_string(&log) {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("last lines of {}:", log.display());
            for l in &lines[lines.len().saturating_sub(20)..] {
                eprintln!("  {l}");
            }
        }
        let sshd_log = self.dir.path().join("sshd/sshd.log");
        if let Ok(text) = std::fs::read_to_string(&sshd_log) {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("last lines of {}:", sshd_log.display());
            for l in &lines[lines.len().saturating_sub(10)..] {
                eprintln!("  {l}");
            }
        }
    }

    /// Kills the daemon (by its pid file) and every session host (by meta.json) still
    /// alive. Sessions should have been removed before.
    fn cleanup(&self) {
        if let Some(pid) = read_pid(&self.pid_file()) {
            terminate(pid, "lingerd");
        }
        let mut shells = Vec::new();
        if let Ok(dirs) = std::fs::read_dir(self.sessions_dir()) {
            for d in dirs.flatten() {
                let Ok(text) = std::fs::read_to_string(d.path().join("meta.json")) else {
                    continue;
                };
                let Ok(meta) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                let pid = |k: &str| meta.get(k).and_then(|v| v.as_i64()).filter(|p| *p > 0);
                if let Some(host) = pid("host_pid") {
                    terminate(host as i32, "lingerd");
                }
                if let Some(shell) = pid("shell_pid") {
                    shells.push(shell as i32);
                }
            }
        }
        // A host takes its shell with it; anything left behind goes too.
        for shell in shells {
            if alive(shell, "bash") {
                let _ = kill(Pid::from_raw(shell), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for BenchEnv {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is alive and its command line mentions `what` (guards against pid reuse).
fn alive(pid: i32, what: &str) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => !cmdline.is_empty() && String::from_utf8_lossy(&cmdline).contains(what),
        Err(_) => false,
    }
}

/// SIGTERM, then SIGKILL if still there after two seconds.
fn terminate(pid: i32, what: &str) {
    if !alive(pid, what) {
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if !alive(pid, what) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// An ssh ControlMaster (`ssh -M -S SOCK -o ControlPersist=yes -fN`), stopped with
/// `ssh -S SOCK -O exit` when dropped, and killed by pid if that did not end it.
struct Master {
    ssh: Ssh,
    socket: PathBuf,
    pid: Option<i32>,
}

impl Master {
    fn start(ssh: &Ssh, socket: PathBuf, log: &Path) -> Result<Master, BoxError> {
        let sock = socket.to_string_lossy().into_owned();
        // The backgrounded master keeps the descriptors it was given: nothing piped here.
        let status = ssh
            .command(
                &["-M", "-S", &sock, "-o", "ControlPersist=yes", "-f", "-N"],
                None,
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .status()?;
        let mut master = Master {
            ssh: ssh.clone(),
            socket,
            pid: None,
        };
        if !status.success() {
            return Err(format!(
                "the ControlMaster did not start ({status}); see {}",
                log.display()
            )
            .into());
        }
        // `-O check` says `Master running (pid=N)`.
        let out = master
            .control("check")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        let text = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!("ssh -O check: {}", text.trim()).into());
        }
        master.pid = text
            .split("pid=")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|p| p.trim().parse().ok());
        Ok(master)
    }

    fn control(&self, op: &str) -> Command {
        let sock = self.socket.to_string_lossy().into_owned();
        let mut cmd = self.ssh.command(&["-S", &sock, "-O", op], None);
        cmd.stdin(Stdio::null());
        cmd
    }

    fn client(&self, remote: &str) -> Command {
        let sock = self.socket.to_string_lossy().into_owned();
        self.ssh.command(&["-S", &sock], Some(remote))
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self
            .control("exit")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(pid) = self.pid {
            let deadline = Instant::now() + Duration::from_secs(2);
            while alive(pid, "ssh") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            terminate(pid, "ssh");
        }
    }
}

/// Sorted samples.
struct Samples(Vec<Duration>);

impl Samples {
    fn new(mut v: Vec<Duration>) -> Samples {
        v.sort();
        Samples(v)
    }
    fn one(d: Duration) -> Samples {
        Samples(vec![d])
    }
    fn quantile(&self, q: f64) -> Duration {
        let n = self.0.len();
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        self.0[i]
    }
    fn median(&self) -> Duration {
        self.quantile(0.5)
    }
    fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

/// Runs a process to completion, failing unless it exits 0.
fn run_process(cmd: &mut Command) -> Result<(), BoxError> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(format!(
            "{:?} exited with {}: {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// Runs blocking work (processes, pipes) on another thread, so that the runtime goes on
/// serving the open connections meanwhile (their heartbeats: a runtime blocked for
/// minutes makes the client cut a connection as silent).
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BoxError> + Send + 'static,
) -> Result<T, BoxError> {
    tokio::task::spawn_blocking(work).await?
}

/// Times `runs` processes one after another, after `warmup` untimed ones.
async fn time_process(
    warmup: usize,
    runs: usize,
    make: impl FnMut() -> Command,
) -> Result<Samples, BoxError> {
    let cmds: Vec<Command> = std::iter::repeat_with(make).take(warmup + runs).collect();
    off_runtime(move || time_commands(warmup, cmds)).await
}

fn time_commands(warmup: usize, cmds: Vec<Command>) -> Result<Samples, BoxError> {
    let mut times = Vec::with_capacity(cmds.len().saturating_sub(warmup));
    for (i, mut cmd) in cmds.into_iter().enumerate() {
        let start = Instant::now();
        run_process(&mut cmd)?;
        if i >= warmup {
            times.push(start.elapsed());
        }
    }
    Ok(Samples::new(times))
}

/// Runs `script` in the session and waits for it to finish; returns the stdout byte count.
async fn invoke_drain(client: &Client, entry: &Entry, script: &str) -> Result<u64, BoxError> {
    let mut stream = client
        .invoke(entry, script, &InvokeOptions::default())
        .await?;
    let mut stdout = 0u64;
    while let Some(event) = stream.next().await? {
        match event {
            Event::Output {
                stream: StreamKind::Stdout,
                data,
                ..
            } => stdout += data.len() as u64,
            Event::Output {
                stream: StreamKind::Stderr,
                data,
                ..
            } => eprint!("{}", String::from_utf8_lossy(&data)),
            Event::Finished { status, .. } => {
                if status != 0 {
                    return Err(format!("`{script}` exited with status {status}").into());
                }
                return Ok(stdout);
            }
            Event::Dropped { bytes } => {
                return Err(format!("`{script}`: {bytes} bytes dropped under block").into())
            }
        }
    }
    Err(format!("`{script}`: the stream ended without Finished").into())
}

/// `invoke_drain` of `true` in each session, all at once.
async fn invoke_all(client: &Client, entries: &[Entry]) -> Result<(), BoxError> {
    let runs = entries.iter().map(|e| invoke_drain(client, e, "true"));
    for r in futures_util::future::join_all(runs).await {
        r?;
    }
    Ok(())
}

/// `API_RUNS` invokes of `true`, after `API_WARMUP`.
async fn time_api(client: &Client, entry: &Entry) -> Result<Samples, BoxError> {
    let mut times = Vec::with_capacity(API_RUNS);
    for i in 0..API_WARMUP + API_RUNS {
        let start = Instant::now();
        invoke_drain(client, entry, "true").await?;
        if i >= API_WARMUP {
            times.push(start.elapsed());
        }
    }
    Ok(Samples::new(times))
}

/// One byte each way through `ssh … cat`: the round trip of an open ssh channel, under any
/// protocol carried over it.
fn ssh_pingpong(ssh: &Ssh) -> Result<Samples, BoxError> {
    let mut child = ssh
        .command(&[], Some("cat"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to = child.stdin.take().expect("piped stdin");
    let mut from = child.stdout.take().expect("piped stdout");
    let mut times = Vec::with_capacity(PINGPONG_RUNS);
    let mut b = [0u8; 1];
    let result = (|| -> std::io::Result<()> {
        for i in 0..PINGPONG_WARMUP + PINGPONG_RUNS {
            let start = Instant::now();
            to.write_all(b"x")?;
            to.flush()?;
            from.read_exact(&mut b)?;
            if i >= PINGPONG_WARMUP {
                times.push(start.elapsed());
            }
        }
        Ok(())
    })();
    drop(to);
    let status = child.wait()?;
    result?;
    if !status.success() {
        return Err(format!("ssh … cat exited with {status}").into());
    }
    Ok(Samples::new(times))
}

/// Reads everything a process writes to its stdout, 256 KiB at a time; returns the byte
/// count and the time from spawn to its exit.
fn read_all(cmd: &mut Command) -> Result<(u64, Duration), BoxError> {
    let start = Instant::now();
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn()?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let status = child.wait()?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(format!("{cmd:?} exited with {status}").into());
    }
    Ok((total, elapsed))
}

/// The current user's login shell and home directory, which sshd runs remote commands with.
fn login_shell() -> (String, String) {
    let u = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten();
    match u {
        Some(u) => (
            u.shell.to_string_lossy().into_owned(),
            u.dir.to_string_lossy().into_owned(),
        ),
        None => ("/bin/sh".into(), "/".into()),
    }
}

/// The fan-out's hosts: one more fixture sshd each (its own port, host key and process, all
/// on 127.0.0.1, bridging to the one daemon), each also authorizing the main fixture's
/// client key so that one `ssh_command` reaches them all. Killed when dropped.
fn start_fleet(env: &BenchEnv, main: &Sshd, fleet: &mut Vec<Sshd>) -> Result<(), BoxError> {
    let key = std::fs::read(main.client_key.with_extension("pub"))?;
    for i in 0..FAN_OUT {
        let host = Sshd::start(&env.dir.path().join(format!("h{i:02}")));
        let authorized = host
            .client_key
            .parent()
            .expect("the fixture's key is in its directory")
            .join("authorized_keys");
        let result = std::fs::OpenOptions::new()
            .append(true)
            .open(&authorized)
            .and_then(|mut f| f.write_all(&key));
        fleet.push(host);
        result?;
    }
    Ok(())
}

/// All of `cmds` started at once, then waited for; fails unless each exits 0.
fn run_concurrently(cmds: Vec<Command>) -> Result<(), BoxError> {
    let mut children: Vec<(String, Child)> = Vec::with_capacity(cmds.len());
    for mut cmd in cmds {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        children.push((format!("{cmd:?}"), child));
    }
    let mut first_error = None;
    for (what, child) in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            first_error.get_or_insert(format!(
                "{what} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

struct FanOut {
    ssh_cold: Samples,
    new_sessions: Samples,
    api: Samples,
    cli: Samples,
}

struct Report {
    spawn_true: Samples,
    login_shell_true: Samples,
    ssh_cold: Samples,
    ssh_mux: Samples,
    ssh_pingpong: Samples,
    first_new: Samples,
    api: Samples,
    local_api: Samples,
    cli: Samples,
    create: Samples,
    api_bytes_time: Duration,
    local_bytes_time: Duration,
    ssh_bytes_time: Duration,
    fan: FanOut,
}

async fn run(env: &BenchEnv, ssh: &Ssh, hosts: &[Ssh]) -> Result<Report, BoxError> {
    let client = Client::open(ClientHome::at(&env.home))?;
    let mut made: Vec<Entry> = Vec::new();
    let result = measure(env, ssh, hosts, &client, &mut made).await;
    eprintln!("removing {} sessions", made.len());
    let mut removal_error = None;
    for entry in &made {
        if let Err(e) = client.remove(entry).await {
            removal_error.get_or_insert(e);
        }
    }
    let report = result?;
    if let Some(e) = removal_error {
        return Err(format!("removing a session failed: {e}").into());
    }
    Ok(report)
}

async fn measure(
    env: &BenchEnv,
    ssh: &Ssh,
    hosts: &[Ssh],
    client: &Client,
    made: &mut Vec<Entry>,
) -> Result<Report, BoxError> {
    eprintln!("bench dir: {}", env.dir.path().display());
    eprintln!("lingerd:   {}", env.bins.lingerd.display());
    eprintln!("linger:    {}", env.bins.linger.display());
    eprintln!(
        "ssh:       {} (sshd on 127.0.0.1:{})",
        ssh.command_line, ssh.port
    );

    eprintln!("floor: `bash -c true` x{SPAWN_RUNS}");
    let spawn_true = time_process(SPAWN_WARMUP, SPAWN_RUNS, || {
        let mut c = Command::new("bash");
        c.args(["-c", "true"]);
        c
    })
    .await?;

    let (shell, shell_home) = login_shell();
    eprintln!(
        "context: `{shell} -c true` as sshd starts it (HOME={shell_home}, SSH_CLIENT set) x{SPAWN_RUNS}"
    );
    let login_shell_true = time_process(SPAWN_WARMUP, SPAWN_RUNS, || {
        let mut c = Command::new("env");
        c.args([
            "-i",
            &format!("HOME={shell_home}"),
            &format!("SHELL={shell}"),
        ])
        .arg(format!("USER={}", ssh.user))
        .arg(format!("LOGNAME={}", ssh.user))
        .args([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "SSH_CLIENT=127.0.0.1 1 2",
            &shell,
            "-c",
            "true",
        ]);
        c
    })
    .await?;

    eprintln!("ssh cold: `ssh … true` x{SSH_COLD_RUNS} (after {SSH_COLD_WARMUP} warm-up)");
    let ssh_cold = time_process(SSH_COLD_WARMUP, SSH_COLD_RUNS, || {
        ssh.command(&[], Some("true"))
    })
    .await?;

    eprintln!("ssh ControlMaster: `ssh -S SOCK … true` x{SSH_MUX_RUNS}");
    let ssh_mux = {
        let master = Master::start(
            ssh,
            env.dir.path().join("cm"),
            &env.dir.path().join("master.log"),
        )?;
        let samples = time_process(SSH_MUX_WARMUP, SSH_MUX_RUNS, || master.client("true")).await?;
        eprintln!("stopping the ControlMaster (pid {:?})", master.pid);
        drop(master);
        samples
    };

    eprintln!("ssh channel: 1-byte ping-pong through `ssh … cat` x{PINGPONG_RUNS}");
    let ssh_pingpong = {
        let ssh = ssh.clone();
        off_runtime(move || ssh_pingpong(&ssh)).await?
    };

    let computer = ssh.computer();
    eprintln!("first session on {computer} (ssh login, bridge, daemon start, handshake)");
    let start = Instant::now();
    let view = client
        .new_session(
            &computer,
            &NewOptions {
                name: Some("bench".into()),
                ..NewOptions::default()
            },
        )
        .await?;
    let first_new = Samples::one(start.elapsed());
    let entry = view.entry.clone();
    made.push(entry.clone());

    eprintln!("API over ssh: invoke `true` x{API_RUNS} (after {API_WARMUP} warm-up)");
    let api = time_api(client, &entry).await?;

    eprintln!("API, local socket to the same daemon: invoke `true` x{API_RUNS}");
    let view = client
        .new_session("localhost", &NewOptions::default())
        .await?;
    let local_entry = view.entry.clone();
    made.push(view.entry);
    let local_api = time_api(client, &local_entry).await?;

    eprintln!(
        "CLI over ssh: `linger invoke {} -- true` x{CLI_RUNS} (after {CLI_WARMUP} warm-up)",
        entry.name
    );
    let cli = time_process(CLI_WARMUP, CLI_RUNS, || {
        env.linger(&["invoke", &entry.name, "--", "true"])
    })
    .await?;

    eprintln!("session creation over the open ssh connection x{CREATE_RUNS}");
    let mut times = Vec::with_capacity(CREATE_RUNS);
    let mut created = Vec::new();
    for i in 0..CREATE_WARMUP + CREATE_RUNS {
        let start = Instant::now();
        let view = client
            .new_session(&computer, &NewOptions::default())
            .await?;
        if i >= CREATE_WARMUP {
            times.push(start.elapsed());
        }
        made.push(view.entry.clone());
        created.push(view.entry);
    }
    let create = Samples::new(times);
    // Removed now (untimed) so the throughput run does not share the machine with them.
    eprintln!("removing the {} created sessions", created.len());
    for e in &created {
        client.remove(e).await?;
    }
    made.retain(|m| !created.iter().any(|c| c.instance_id == m.instance_id));

    let script = format!("head -c {THROUGHPUT_BYTES} /dev/zero");
    eprintln!("throughput: `{script}` through the API over ssh");
    let start = Instant::now();
    let bytes = invoke_drain(client, &entry, &script).await?;
    let api_bytes_time = start.elapsed();
    assert_eq!(bytes, THROUGHPUT_BYTES, "bytes received through linger");

    eprintln!("throughput: `{script}` through the API, local socket to the same daemon");
    let start = Instant::now();
    let bytes = invoke_drain(client, &local_entry, &script).await?;
    let local_bytes_time = start.elapsed();
    assert_eq!(
        bytes, THROUGHPUT_BYTES,
        "bytes received through linger locally"
    );

    eprintln!("throughput: `ssh … '{script}'` read by the benchmark");
    let mut cmd = ssh.command(&[], Some(&script));
    let (ssh_bytes, ssh_bytes_time) = off_runtime(move || read_all(&mut cmd)).await?;
    assert_eq!(ssh_bytes, THROUGHPUT_BYTES, "bytes read from ssh");

    let fan = fan_out(env, hosts, client, made).await?;

    Ok(Report {
        spawn_true,
        login_shell_true,
        ssh_cold,
        ssh_mux,
        ssh_pingpong,
        first_new,
        api,
        local_api,
        cli,
        create,
        api_bytes_time,
        local_bytes_time,
        ssh_bytes_time,
        fan,
    })
}

async fn fan_out(
    env: &BenchEnv,
    hosts: &[Ssh],
    client: &Client,
    made: &mut Vec<Entry>,
) -> Result<FanOut, BoxError> {
    // One at a time, untimed: each host's key goes into the shared known_hosts before any
    // concurrent run.
    eprintln!("fan-out: learning the {FAN_OUT} host keys");
    let fleet = hosts.to_vec();
    off_runtime(move || {
        for h in &fleet {
            run_process(&mut h.command(&[], Some("true")))?;
        }
        Ok(())
    })
    .await?;

    eprintln!("fan-out: {FAN_OUT} concurrent `ssh … true` processes x{FAN_SSH_RUNS}");
    let fleet = hosts.to_vec();
    let ssh_cold = off_runtime(move || {
        let mut times = Vec::with_capacity(FAN_SSH_RUNS);
        for i in 0..FAN_SSH_WARMUP + FAN_SSH_RUNS {
            let cmds = fleet.iter().map(|h| h.command(&[], Some("true"))).collect();
            let start = Instant::now();
            run_concurrently(cmds)?;
            if i >= FAN_SSH_WARMUP {
                times.push(start.elapsed());
            }
        }
        Ok(Samples::new(times))
    })
    .await?;

    eprintln!("fan-out: {FAN_OUT} sessions at once through the API, each a new ssh connection");
    let computers: Vec<String> = hosts.iter().map(Ssh::computer).collect();
    let start = Instant::now();
    let news = computers.iter().enumerate().map(|(i, c)| async move {
        let opts = NewOptions {
            name: Some(format!("fan{i:02}")),
            ..NewOptions::default()
        };
        client.new_session(c, &opts).await
    });
    let results = futures_util::future::join_all(news).await;
    let new_sessions = Samples::one(start.elapsed());
    let mut entries = Vec::with_capacity(FAN_OUT);
    let mut first_error = None;
    for r in results {
        match r {
            Ok(view) => {
                made.push(view.entry.clone());
                entries.push(view.entry);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(format!("fan-out session creation: {e}").into());
    }

    eprintln!(
        "fan-out: invoke `true` in the {FAN_OUT} sessions at once through the API x{FAN_API_RUNS}"
    );
    let mut times = Vec::with_capacity(FAN_API_RUNS);
    for i in 0..FAN_API_WARMUP + FAN_API_RUNS {
        let start = Instant::now();
        invoke_all(client, &entries).await?;
        if i >= FAN_API_WARMUP {
            times.push(start.elapsed());
        }
    }
    let api = Samples::new(times);

    eprintln!("fan-out: `linger invoke 'fan*' -- true` x{FAN_CLI_RUNS}");
    let cli = time_process(FAN_CLI_WARMUP, FAN_CLI_RUNS, || {
        env.linger(&["invoke", "fan*", "--", "true"])
    })
    .await?;

    Ok(FanOut {
        ssh_cold,
        new_sessions,
        api,
        cli,
    })
}

impl Report {
    fn print(&self) {
        let fmt_ms = |d: Duration| format!("{:.3} ms", ms(d));
        let stat = |name: &str, s: &Samples| {
            if s.0.len() == 1 {
                println!("  {name:<44}{}  (n=1)", fmt_ms(s.median()));
            } else {
                println!(
                    "  {name:<44}median {}  p99 {}  (n={})",
                    fmt_ms(s.median()),
                    fmt_ms(s.p99()),
                    s.0.len()
                );
            }
        };
        println!();
        println!(
            "linger over ssh vs OpenSSH (sshd on loopback; medians unless noted; \
             ratio = how many times faster linger is)"
        );
        println!();
        stat("floor `bash -c true` process:", &self.spawn_true);
        stat(
            "login shell `-c true` as sshd runs it:",
            &self.login_shell_true,
        );
        stat("ssh cold `ssh … true`:", &self.ssh_cold);
        stat("ssh ControlMaster `ssh -S SOCK … true`:", &self.ssh_mux);
        stat(
            "ssh channel 1-byte ping-pong (`ssh … cat`):",
            &self.ssh_pingpong,
        );
        stat("linger API invoke `true`, over ssh:", &self.api);
        stat("linger API invoke `true`, local socket:", &self.local_api);
        stat("linger CLI `linger invoke NAME -- true`:", &self.cli);
        stat("linger new_session over open ssh conn:", &self.create);
        stat(
            "linger first new_session (connect+daemon):",
            &self.first_new,
        );
        stat(
            &format!("fan-out {FAN_OUT}: concurrent `ssh … true`:"),
            &self.fan.ssh_cold,
        );
        stat(
            &format!("fan-out {FAN_OUT}: API new_session (new conns):"),
            &self.fan.new_sessions,
        );
        stat(
            &format!("fan-out {FAN_OUT}: API invoke `true` (open):"),
            &self.fan.api,
        );
        stat(
            &format!("fan-out {FAN_OUT}: CLI `linger invoke 'fan*'`:"),
            &self.fan.cli,
        );
        let api_gbps = gbps(THROUGHPUT_BYTES, self.api_bytes_time);
        let ssh_gbps = gbps(THROUGHPUT_BYTES, self.ssh_bytes_time);
        println!(
            "  {:<44}{}  = {api_gbps:.2} GB/s  (n=1)",
            "1 GiB stdout, linger API over ssh:",
            fmt_ms(self.api_bytes_time)
        );
        println!(
            "  {:<44}{}  = {ssh_gbps:.2} GB/s  (n=1)",
            "1 GiB stdout, `ssh … head -c`:",
            fmt_ms(self.ssh_bytes_time)
        );
        println!(
            "  {:<44}{}  = {:.2} GB/s  (n=1)",
            "1 GiB stdout, linger API local socket:",
            fmt_ms(self.local_bytes_time),
            gbps(THROUGHPUT_BYTES, self.local_bytes_time)
        );
        let api = ms(self.api.median());
        let local = ms(self.local_api.median());
        let channel = ms(self.ssh_pingpong.median());
        println!(
            "  where an API round trip over ssh goes: {local:.3} ms as over the local socket, \
             {:.3} ms more for the ssh path (an ssh channel round trip alone: {channel:.3} ms)",
            api - local
        );
        println!();

        let cold = ms(self.ssh_cold.median());
        let mux = ms(self.ssh_mux.median());
        let cli = ms(self.cli.median());
        let create = ms(self.create.median());
        let fan_ssh = ms(self.fan.ssh_cold.median());
        let fan_api = ms(self.fan.api.median());
        let fan_cli = ms(self.fan.cli.median());
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        let time_row = |name: &str, linger: f64, ssh: f64| -> [String; 6] {
            [
                name.into(),
                format!("{linger:.3} ms"),
                format!("{ssh:.3} ms"),
                format!("{:.2}x", ssh / linger),
                String::new(),
                String::new(),
            ]
        };
        let mut speedup_mux = time_row(
            "`true` round trip: API over open ssh conn (vs ssh ControlMaster)",
            api,
            mux,
        );
        speedup_mux[4] = format!(">= {TARGET_SPEEDUP_VS_MUX}x");
        speedup_mux[5] = met(mux / api >= TARGET_SPEEDUP_VS_MUX).into();
        let rows: Vec<[String; 6]> = vec![
            speedup_mux,
            time_row(
                "`true` round trip: API over open ssh conn (vs cold ssh)",
                api,
                cold,
            ),
            time_row(
                "`true` round trip: CLI process, new ssh conn (vs cold ssh)",
                cli,
                cold,
            ),
            time_row(
                "`true` round trip: CLI process, new ssh conn (vs ssh ControlMaster)",
                cli,
                mux,
            ),
            time_row(
                "session creation: new_session over open conn (vs cold ssh login)",
                create,
                cold,
            ),
            [
                "throughput, 1 GiB stdout: API over ssh (vs `ssh … head -c`)".into(),
                format!("{api_gbps:.2} GB/s"),
                format!("{ssh_gbps:.2} GB/s"),
                format!("{:.2}x", api_gbps / ssh_gbps),
                format!(">= {TARGET_THROUGHPUT_RATIO}x"),
                met(api_gbps / ssh_gbps >= TARGET_THROUGHPUT_RATIO).into(),
            ],
            time_row(
                &format!("fan-out {FAN_OUT} `true`: API over open conns (vs concurrent cold ssh)"),
                fan_api,
                fan_ssh,
            ),
            time_row(
                &format!("fan-out {FAN_OUT} `true`: CLI process (vs concurrent cold ssh)"),
                fan_cli,
                fan_ssh,
            ),
        ];
        let header = [
            "measurement",
            "linger",
            "ssh",
            "ratio",
            "design target",
            "target met",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: &[&str]| {
            let parts: Vec<String> = cells
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 0 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            println!("| {} |", parts.join(" | "));
        };
        line(&header);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        println!("|-{}-|", rule.join("-|-"));
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            line(&cells);
        }
        println!();
        println!(
            "ratio = ssh's time / linger's (throughput: linger's GB/s / ssh's); below 1x linger is"
        );
        println!(
            "slower. Every ssh process uses the client's own flags (the fixture's key, cipher and"
        );
        println!("known_hosts). Cold ssh: a whole `ssh` process, login included, per command; its");
        println!(
            "session-creation column is the same samples. GB/s = 10^9 bytes per second, one run"
        );
        println!("each; the ssh run includes its login, linger's uses the open connection.");
        println!(
            "sshd runs every remote command (ssh's `true`, and the `lingerd --stdio` that each"
        );
        println!(
            "linger ssh connection starts) with the user's login shell, which reads its startup"
        );
        println!(
            "files (bash: ~/.bashrc); `login shell -c true as sshd runs it` is that cost, run"
        );
        println!("locally with sshd's environment (HOME, SSH_CLIENT).");
        println!(
            "Fan-out: the fixture's sshd listens on 127.0.0.1 only, so the {FAN_OUT} computers are"
        );
        println!(
            "{FAN_OUT} more fixture sshds on {FAN_OUT} ports of 127.0.0.1, bridging to one daemon."
        );
    }
}
