//! What the benchmarks share: the release binaries and the temporary directory they run
//! in, how they run `ssh` (and ssh ControlMasters) against the tests' sshd fixture, timing
//! of processes and of library calls, the sessions they make and remove, killing what they
//! started by pid, progress lines, and the printed statistics and tables. Each benchmark
//! includes it with `mod common;`.

#![allow(dead_code)]

use std::fmt;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use linger::{
    Client, ClientHome, CommandStream, Entry, Event, InvokeOptions, NewOptions, StreamKind,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// lingerd.toml lines that lift the default configuration's limit on live sessions per
/// user (25), which a benchmark's session creation and fan-out runs pass.
pub const MANY_SESSIONS_TOML: &str =
    "[[configuration]]\nname = \"default\"\nmax_sessions_per_user = 1000\n";

/// A progress line on stderr, as `eprintln!` formats it (see `print_progress`).
macro_rules! progress {
    ($($arg:tt)*) => {
        $crate::common::print_progress(format_args!($($arg)*))
    };
}
// Like the items under `dead_code`: not every benchmark prints through it.
#[allow(unused_imports)]
pub(crate) use progress;

static PROGRESS_START: OnceLock<Instant> = OnceLock::new();

/// From now on, progress lines carry the seconds since this call: for a benchmark long
/// enough that one wants to see where its time goes.
pub fn stamp_progress() {
    PROGRESS_START.get_or_init(Instant::now);
}

/// Prints a progress line on stderr; stamped once `stamp_progress` was called. The shared
/// helpers print through it, so that their lines look like the rest of each benchmark's.
pub fn print_progress(line: fmt::Arguments<'_>) {
    match PROGRESS_START.get() {
        Some(start) => eprintln!("[{:>6.1}s] {line}", start.elapsed().as_secs_f64()),
        None => eprintln!("{line}"),
    }
}

/// The value, or the end of the benchmark: `CONTEXT: ERROR` on stderr and exit `code`.
pub fn or_exit<T>(result: Result<T, impl fmt::Display>, code: i32, context: &str) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("{context}: {e}");
        std::process::exit(code)
    })
}

/// Ends the benchmark (exit 2) unless the fixture's sshd, `sshd`, is installed.
pub fn require_sshd(bench: &str, sshd: &str) {
    if !Path::new(sshd).is_file() {
        eprintln!(
            "{bench}: {sshd} is missing: install Debian's openssh-server (bench/run.sh does)"
        );
        std::process::exit(2);
    }
}

/// Runs a benchmark's measurements on a runtime of their own, gone before this returns:
/// the connections and their tasks (and the ssh processes they hold) must go before the
/// daemon does.
pub fn block_on<T>(measurements: impl Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(measurements);
    drop(runtime);
    result
}

/// A benchmark's exit code: 0 once its report is printed, else 1 once its error, and the
/// logs that may explain it, are.
pub fn exit_code<R>(
    bench: &str,
    result: Result<R, BoxError>,
    print_report: impl FnOnce(&R),
    print_logs: impl FnOnce(),
) -> i32 {
    match result {
        Ok(report) => {
            print_report(&report);
            0
        }
        Err(e) => {
            eprintln!("{bench}: failed: {e}");
            print_logs();
            1
        }
    }
}

pub struct Binaries {
    pub linger: PathBuf,
    pub lingerd: PathBuf,
}

/// target/release/{linger,lingerd} of this workspace.
pub fn release_binaries() -> Result<Binaries, String> {
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

/// The temporary world a benchmark runs in: its daemon's XDG directories and the client's
/// home, in a fresh directory deleted when this is dropped. Each benchmark creates the
/// directories it uses, adds methods of its own (an `impl BenchEnv` in its file), and
/// decides whether dropping this stops its daemon (an `impl Drop`, where nothing else
/// does).
pub struct BenchEnv {
    pub dir: tempfile::TempDir,
    pub runtime: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    /// The linger client's home (LINGER_HOME), holding options.toml and known_hosts.
    pub home: PathBuf,
    pub bins: Binaries,
}

impl BenchEnv {
    /// `prefix` starts the directory's name: keep it short, since session hosts and ssh
    /// ControlMasters put Unix sockets in there, whose paths have a small limit.
    pub fn new(prefix: &str, bins: Binaries) -> std::io::Result<BenchEnv> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        Ok(BenchEnv {
            runtime: dir.path().join("run"),
            state: dir.path().join("state"),
            config: dir.path().join("config"),
            home: dir.path().join("home"),
            dir,
            bins,
        })
    }

    /// Where linger and lingerd look for their directories and for lingerd.
    pub fn vars(&self) -> Vec<(&'static str, &Path)> {
        vec![
            ("XDG_RUNTIME_DIR", &self.runtime),
            ("XDG_STATE_HOME", &self.state),
            ("XDG_CONFIG_HOME", &self.config),
            ("LINGER_HOME", &self.home),
            ("LINGERD", &self.bins.lingerd),
        ]
    }

    /// Puts `vars` in this process's environment, so that every process started from here
    /// inherits them (a daemon autostarted by the client among them).
    pub fn export_vars(&self) {
        for (k, v) in self.vars() {
            std::env::set_var(k, v);
        }
    }

    /// Keeps ssh away from the user's own keys, known_hosts, configuration and agent.
    pub fn isolate_ssh(&self) {
        std::env::set_var("HOME", self.dir.path());
        std::env::remove_var("SSH_AUTH_SOCK");
    }

    pub fn pid_file(&self) -> PathBuf {
        self.runtime.join("linger/lingerd.pid")
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime.join("linger/lingerd.sock")
    }

    pub fn server_dir(&self) -> PathBuf {
        self.state.join("linger/server")
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.server_dir().join("sessions")
    }

    /// A `linger` CLI process, its environment given explicitly so that it does not depend
    /// on what this process's holds.
    pub fn linger(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bins.linger);
        cmd.envs(self.vars()).args(args);
        cmd
    }

    /// Times `runs` `linger invoke NAME -- true` processes, after `warmup` untimed.
    pub async fn time_cli_invoke(
        &self,
        name: &str,
        warmup: usize,
        runs: usize,
    ) -> Result<Samples, BoxError> {
        time_process(warmup, runs, || {
            self.linger(&["invoke", name, "--", "true"])
        })
        .await
    }

    /// Prints the paths a reader of the numbers may want to check.
    pub fn print_paths(&self) {
        progress!("bench dir: {}", self.dir.path().display());
        progress!("lingerd:   {}", self.bins.lingerd.display());
        progress!("linger:    {}", self.bins.linger.display());
    }

    /// Kills the daemon (by its pid file) and every session host (by meta.json) still
    /// alive: a daemon the client autostarted is stopped by nothing else. Sessions should
    /// have been removed before.
    pub fn kill_daemon_and_hosts(&self) {
        if let Some(pid) = read_pid(&self.pid_file()) {
            terminate(pid, "lingerd");
        }
        kill_session_hosts(&self.sessions_dir());
    }

    /// Opens a client on the benchmark's home and runs `measure` with it, which records in
    /// its second argument every session it makes; then removes them all, also when
    /// `measure` failed, so that none outlives the benchmark. The error returned is
    /// `measure`'s, else the first removal's.
    pub async fn measure_with_client<R>(
        &self,
        measure: impl AsyncFnOnce(&Client, &mut Vec<Entry>) -> Result<R, BoxError>,
    ) -> Result<R, BoxError> {
        let client = Client::open(ClientHome::at(&self.home))?;
        let mut made: Vec<Entry> = Vec::new();
        let result = measure(&client, &mut made).await;
        progress!("removing {} sessions", made.len());
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
}

/// Creates each directory (and its parents), then makes it private to the user.
pub fn make_private_dirs(dirs: &[&Path]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in dirs {
        std::fs::create_dir_all(d)?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// How a benchmark runs `ssh` against the fixture: the flags the transport uses (the
/// fixture's key and known_hosts, nothing of the user's), the host, the port and the user.
#[derive(Clone)]
pub struct Ssh {
    pub program: String,
    pub flags: Vec<String>,
    /// The whole `ssh_command` option, as the linger client gets it.
    pub command_line: String,
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl Ssh {
    /// `command_line` is the fixture's `ssh_command`: the program, then its flags.
    pub fn new(command_line: String, port: u16, user: String) -> Ssh {
        let mut words = command_line.split_whitespace().map(str::to_string);
        let program = words.next().expect("ssh_command names a program");
        Ssh {
            program,
            flags: words.collect(),
            command_line,
            host: "127.0.0.1".into(),
            port,
            user,
        }
    }

    /// The same, for the sshd on another port.
    pub fn on(&self, port: u16) -> Ssh {
        Ssh {
            port,
            ..self.clone()
        }
    }

    /// The same, reaching the sshd by another address.
    pub fn at(&self, host: &str) -> Ssh {
        Ssh {
            host: host.to_string(),
            ..self.clone()
        }
    }

    /// `ssh FLAGS -p PORT EXTRA -- USER@HOST [REMOTE]`.
    pub fn command(&self, extra: &[&str], remote: Option<&str>) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.flags)
            .arg("-p")
            .arg(self.port.to_string())
            .args(extra)
            .arg("--")
            .arg(format!("{}@{}", self.user, self.host));
        if let Some(r) = remote {
            cmd.arg(r);
        }
        cmd
    }

    /// The linger computer for this sshd.
    pub fn computer(&self) -> String {
        format!("ssh://{}@{}:{}", self.user, self.host, self.port)
    }

    /// Times `runs` cold `ssh … true` processes (a login each), after `warmup` untimed.
    pub async fn time_cold(&self, warmup: usize, runs: usize) -> Result<Samples, BoxError> {
        progress!("ssh cold: `ssh … true` x{runs} (after {warmup} warm-up)");
        time_process(warmup, runs, || self.command(&[], Some("true"))).await
    }

    /// Times `runs` `ssh -S SOCK … true` through a ControlMaster started for them on
    /// `socket` (and stopped after), after `warmup` untimed.
    pub async fn time_mux(
        &self,
        socket: PathBuf,
        log: &Path,
        warmup: usize,
        runs: usize,
    ) -> Result<Samples, BoxError> {
        progress!("ssh ControlMaster: `ssh -S SOCK … true` x{runs}");
        let master = Master::start(self, socket, log)?;
        let samples = time_process(warmup, runs, || master.client("true")).await?;
        progress!("stopping the ControlMaster (pid {:?})", master.pid);
        drop(master);
        Ok(samples)
    }

    /// Reads all that `ssh … SCRIPT` writes to its stdout: the byte count, and the time
    /// from spawn to exit (its login included).
    pub async fn time_output(&self, script: &str) -> Result<(u64, Duration), BoxError> {
        progress!("throughput: `ssh … '{script}'` read by the benchmark");
        let mut cmd = self.command(&[], Some(script));
        off_runtime(move || read_all(&mut cmd)).await
    }
}

/// `ssh … true` to each host, one at a time and untimed: every host key must be in
/// known_hosts before concurrent logins, which would all try to add theirs at once.
pub async fn learn_host_keys(hosts: Vec<Ssh>) -> Result<(), BoxError> {
    off_runtime(move || {
        for h in &hosts {
            run_process(&mut h.command(&[], Some("true")))?;
        }
        Ok(())
    })
    .await
}

/// An ssh ControlMaster (`ssh -M -S SOCK -o ControlPersist=yes -fN`), stopped with
/// `ssh -S SOCK -O exit` when dropped, and killed by pid if that did not end it.
pub struct Master {
    ssh: Ssh,
    socket: PathBuf,
    pub pid: Option<i32>,
}

impl Master {
    pub fn start(ssh: &Ssh, socket: PathBuf, log: &Path) -> Result<Master, BoxError> {
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

    /// `ssh -S SOCK … REMOTE`: a command through the master's connection.
    pub fn client(&self, remote: &str) -> Command {
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

pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is alive and its command line mentions `what` (guards against pid reuse).
pub fn alive(pid: i32, what: &str) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => !cmdline.is_empty() && String::from_utf8_lossy(&cmdline).contains(what),
        Err(_) => false,
    }
}

/// SIGTERM, then SIGKILL if still there after two seconds.
pub fn terminate(pid: i32, what: &str) {
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

/// Kills every session host (by the `host_pid` of its meta.json in `sessions_dir`) still
/// alive, then any shell (`shell_pid`) a host left behind. Meant for after the daemon is
/// gone; sessions should have been removed before.
pub fn kill_session_hosts(sessions_dir: &Path) {
    let mut shells = Vec::new();
    if let Ok(dirs) = std::fs::read_dir(sessions_dir) {
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

/// The current user's login shell and home directory, which sshd runs remote commands with.
pub fn login_shell() -> (String, String) {
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

/// Times the user's login shell running `true` as sshd runs a remote command: what its
/// startup files add to every ssh command (linger's sessions skip them).
pub async fn time_login_shell(user: &str, warmup: usize, runs: usize) -> Result<Samples, BoxError> {
    let (shell, shell_home) = login_shell();
    progress!(
        "context: `{shell} -c true` as sshd starts it (HOME={shell_home}, SSH_CLIENT set) x{runs}"
    );
    time_process(warmup, runs, || login_shell_command(user, "true")).await
}

/// `SHELL -c SCRIPT` run locally as sshd runs a remote command: the user's login shell
/// with sshd's environment (HOME, SSH_CLIENT: bash then reads ~/.bashrc).
pub fn login_shell_command(user: &str, script: &str) -> Command {
    let (shell, shell_home) = login_shell();
    let mut c = Command::new("env");
    c.args([
        "-i",
        &format!("HOME={shell_home}"),
        &format!("SHELL={shell}"),
    ])
    .arg(format!("USER={user}"))
    .arg(format!("LOGNAME={user}"))
    .args([
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "SSH_CLIENT=127.0.0.1 1 2",
        &shell,
        "-c",
        script,
    ]);
    c
}

/// Prints the last `n` lines of a log file, if it exists.
pub fn print_tail(path: &Path, n: usize) {
    if let Ok(text) = std::fs::read_to_string(path) {
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("last lines of {}:", path.display());
        for l in &lines[lines.len().saturating_sub(n)..] {
            eprintln!("  {l}");
        }
    }
}

/// Sorted samples.
pub struct Samples(pub Vec<Duration>);

impl Samples {
    pub fn new(mut v: Vec<Duration>) -> Samples {
        v.sort();
        Samples(v)
    }
    pub fn one(d: Duration) -> Samples {
        Samples(vec![d])
    }
    pub fn quantile(&self, q: f64) -> Duration {
        let n = self.0.len();
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        self.0[i]
    }
    pub fn median(&self) -> Duration {
        self.quantile(0.5)
    }
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
    pub fn min(&self) -> Duration {
        self.0[0]
    }
    pub fn max(&self) -> Duration {
        self.0[self.0.len() - 1]
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

/// Runs a process to completion, failing unless it exits 0.
pub fn run_process(cmd: &mut Command) -> Result<(), BoxError> {
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
pub async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BoxError> + Send + 'static,
) -> Result<T, BoxError> {
    tokio::task::spawn_blocking(work).await?
}

/// Times `runs` rounds of `run` on what `prepare` made for each (untimed), after `warmup`
/// untimed rounds.
fn time_rounds<T>(
    warmup: usize,
    runs: usize,
    mut prepare: impl FnMut() -> T,
    mut run: impl FnMut(T) -> Result<(), BoxError>,
) -> Result<Samples, BoxError> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let work = prepare();
        let start = Instant::now();
        run(work)?;
        if i >= warmup {
            times.push(start.elapsed());
        }
    }
    Ok(Samples::new(times))
}

/// Times `runs` processes one after another, after `warmup` untimed ones, on this thread:
/// the runtime serves nothing meanwhile (see `time_process`).
pub fn time_process_blocking(
    warmup: usize,
    runs: usize,
    make: impl FnMut() -> Command,
) -> Result<Samples, BoxError> {
    time_rounds(warmup, runs, make, |mut cmd| run_process(&mut cmd))
}

/// The same off the runtime (see `off_runtime`). The commands are all made here first,
/// since `make` may borrow what cannot go to another thread.
pub async fn time_process(
    warmup: usize,
    runs: usize,
    make: impl FnMut() -> Command,
) -> Result<Samples, BoxError> {
    let mut cmds = std::iter::repeat_with(make)
        .take(warmup + runs)
        .collect::<Vec<_>>()
        .into_iter();
    off_runtime(move || {
        time_process_blocking(warmup, runs, || {
            cmds.next().expect("a command made for every run")
        })
    })
    .await
}

/// All of `cmds` started at once, then waited for; fails unless each exits 0.
pub fn run_concurrently(cmds: Vec<Command>) -> Result<(), BoxError> {
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

/// Times `runs` rounds of `make()`'s processes run all at once (`run_concurrently`),
/// after `warmup` untimed rounds.
pub async fn time_concurrently(
    warmup: usize,
    runs: usize,
    make: impl FnMut() -> Vec<Command> + Send + 'static,
) -> Result<Samples, BoxError> {
    off_runtime(move || time_rounds(warmup, runs, make, run_concurrently)).await
}

/// How far `drain` reads a command stream.
pub enum DrainUntil {
    /// The first `Finished`: an invoke's, whose stream holds one command.
    FirstFinished,
    /// The stream's end: a receive's, which may hold several commands.
    End,
}

/// What `drain` read.
pub struct Drained {
    pub stdout: u64,
    pub stderr: u64,
    pub statuses: Vec<i32>,
    /// Set (and nothing read after it) if the stream reported output dropped.
    pub dropped: Option<u64>,
}

/// Reads a command stream, counting its output; its stderr goes on to ours, since it
/// explains a failure.
pub async fn drain(stream: &mut CommandStream, until: DrainUntil) -> Result<Drained, BoxError> {
    let mut drained = Drained {
        stdout: 0,
        stderr: 0,
        statuses: Vec::new(),
        dropped: None,
    };
    while let Some(event) = stream.next().await? {
        match event {
            Event::Output {
                stream: StreamKind::Stdout,
                data,
                ..
            } => drained.stdout += data.len() as u64,
            Event::Output {
                stream: StreamKind::Stderr,
                data,
                ..
            } => {
                drained.stderr += data.len() as u64;
                eprint!("{}", String::from_utf8_lossy(&data));
            }
            Event::Finished { status, .. } => {
                drained.statuses.push(status);
                if let DrainUntil::FirstFinished = until {
                    break;
                }
            }
            Event::Dropped { bytes } => {
                drained.dropped = Some(bytes);
                break;
            }
        }
    }
    Ok(drained)
}

/// Runs `script` in the session and waits for it to finish; returns the stdout byte count.
pub async fn invoke_drain(client: &Client, entry: &Entry, script: &str) -> Result<u64, BoxError> {
    let mut stream = client
        .invoke(entry, script, &InvokeOptions::default())
        .await?;
    let drained = drain(&mut stream, DrainUntil::FirstFinished).await?;
    if let Some(bytes) = drained.dropped {
        return Err(format!("`{script}`: {bytes} bytes dropped under block").into());
    }
    match drained.statuses[..] {
        [] => Err(format!("`{script}`: the stream ended without Finished").into()),
        [0] => Ok(drained.stdout),
        [status, ..] => Err(format!("`{script}` exited with status {status}").into()),
    }
}

/// `invoke_drain` of `true` in each session, all at once.
pub async fn invoke_all(client: &Client, entries: &[Entry]) -> Result<(), BoxError> {
    let runs = entries.iter().map(|e| invoke_drain(client, e, "true"));
    for r in futures_util::future::join_all(runs).await {
        r?;
    }
    Ok(())
}

/// Times `runs` awaits of `call()`, one after another, after `warmup` untimed ones.
pub async fn time_calls<F: Future<Output = Result<(), BoxError>>>(
    warmup: usize,
    runs: usize,
    mut call: impl FnMut() -> F,
) -> Result<Samples, BoxError> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let start = Instant::now();
        call().await?;
        if i >= warmup {
            times.push(start.elapsed());
        }
    }
    Ok(Samples::new(times))
}

/// `runs` invokes of `true` in one session, one after another, after `warmup` untimed ones.
pub async fn time_api(
    client: &Client,
    entry: &Entry,
    warmup: usize,
    runs: usize,
) -> Result<Samples, BoxError> {
    time_calls(warmup, runs, move || async move {
        invoke_drain(client, entry, "true").await?;
        Ok(())
    })
    .await
}

/// `runs` rounds of `invoke_all` (`true` in every session at once), after `warmup`.
pub async fn time_api_all(
    client: &Client,
    entries: &[Entry],
    warmup: usize,
    runs: usize,
) -> Result<Samples, BoxError> {
    time_calls(warmup, runs, || invoke_all(client, entries)).await
}

/// `invoke_drain` of `script`, timed from the call until its status came.
pub async fn time_drain(
    client: &Client,
    entry: &Entry,
    script: &str,
) -> Result<(u64, Duration), BoxError> {
    let start = Instant::now();
    let bytes = invoke_drain(client, entry, script).await?;
    Ok((bytes, start.elapsed()))
}

/// The session the measurements use, named `bench`, made on `computer` and recorded in
/// `made`; timed, since the first session on a computer includes reaching it.
pub async fn time_first_session(
    client: &Client,
    computer: &str,
    made: &mut Vec<Entry>,
) -> Result<(Entry, Samples), BoxError> {
    let start = Instant::now();
    let view = client
        .new_session(
            computer,
            &NewOptions {
                name: Some("bench".into()),
                ..NewOptions::default()
            },
        )
        .await?;
    let time = Samples::one(start.elapsed());
    made.push(view.entry.clone());
    Ok((view.entry, time))
}

/// Times `runs` sessions made on `computer` one after another, after `warmup` untimed
/// ones, recorded in `made` until removed: all are removed after, untimed, so that what is
/// measured next does not share the machine with them.
pub async fn time_session_creation(
    client: &Client,
    computer: &str,
    warmup: usize,
    runs: usize,
    made: &mut Vec<Entry>,
) -> Result<Samples, BoxError> {
    let mut times = Vec::with_capacity(runs);
    let mut created = Vec::new();
    for i in 0..warmup + runs {
        let start = Instant::now();
        let view = client.new_session(computer, &NewOptions::default()).await?;
        if i >= warmup {
            times.push(start.elapsed());
        }
        made.push(view.entry.clone());
        created.push(view.entry);
    }
    progress!("removing the {} created sessions", created.len());
    for e in &created {
        client.remove(e).await?;
    }
    made.retain(|m| !created.iter().any(|c| c.instance_id == m.instance_id));
    Ok(Samples::new(times))
}

/// One session on each of `computers`, all asked for at once, the i-th named `name(i)`;
/// returns them (also recorded in `made`) and the time until the last answered. Fails,
/// once all have answered, if any session was not made.
pub async fn new_sessions_at_once(
    client: &Client,
    computers: &[String],
    name: impl Fn(usize) -> String,
    made: &mut Vec<Entry>,
) -> Result<(Vec<Entry>, Samples), BoxError> {
    let name = &name;
    let start = Instant::now();
    let news = computers.iter().enumerate().map(|(i, c)| async move {
        let opts = NewOptions {
            name: Some(name(i)),
            ..NewOptions::default()
        };
        client.new_session(c, &opts).await
    });
    let results = futures_util::future::join_all(news).await;
    let time = Samples::one(start.elapsed());
    let mut entries = Vec::with_capacity(computers.len());
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
    Ok((entries, time))
}

/// Reads `from` to its end through `buf`; returns the byte count.
pub fn read_counting(from: &mut impl Read, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut total = 0u64;
    loop {
        match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads everything a process writes to its stdout, 256 KiB at a time; returns the byte
/// count, the time from spawn to its exit, and how it exited.
pub fn read_stdout(cmd: &mut Command) -> Result<(u64, Duration, ExitStatus), BoxError> {
    let start = Instant::now();
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn()?;
    let mut out = child.stdout.take().expect("piped stdout");
    let total = read_counting(&mut out, &mut vec![0u8; 256 * 1024])?;
    let status = child.wait()?;
    Ok((total, start.elapsed(), status))
}

/// Writes `bytes` zero bytes to the stdin of `cmd`, 256 KiB at a time: the time from spawn
/// to its exit, failing unless it exits 0. Its stdout is discarded.
pub fn feed_stdin(cmd: &mut Command, bytes: u64) -> Result<Duration, BoxError> {
    use std::io::Write;
    let start = Instant::now();
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).spawn()?;
    let mut input = child.stdin.take().expect("piped stdin");
    let chunk = vec![0u8; 256 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        input.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    drop(input);
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("{cmd:?} exited with {status}").into());
    }
    Ok(start.elapsed())
}

/// Feeds `bytes` to the commands `make` builds, `runs` times: the median of each.
pub fn time_feeds(
    runs: usize,
    bytes: u64,
    mut make: impl FnMut() -> Command,
) -> Result<Samples, BoxError> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        times.push(feed_stdin(&mut make(), bytes)?);
    }
    Ok(Samples::new(times))
}

/// `read_stdout`, failing unless the process exits 0.
pub fn read_all(cmd: &mut Command) -> Result<(u64, Duration), BoxError> {
    let (total, elapsed, status) = read_stdout(cmd)?;
    if !status.success() {
        return Err(format!("{cmd:?} exited with {status}").into());
    }
    Ok((total, elapsed))
}

pub fn fmt_ms(d: Duration) -> String {
    format!("{:.3} ms", ms(d))
}

/// One line of statistics: the median and p99 of `s`, or its one value.
pub fn print_stat(name: &str, s: &Samples) {
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
}

/// One line for a single timed transfer of `bytes`: its time and rate.
pub fn print_throughput(name: &str, bytes: u64, time: Duration) {
    println!(
        "  {name:<44}{}  = {:.2} GB/s  (n=1)",
        fmt_ms(time),
        gbps(bytes, time)
    );
}

/// The ratio table's columns.
pub const TABLE_HEADER: [&str; 6] = [
    "measurement",
    "linger",
    "ssh",
    "ratio",
    "design target",
    "target met",
];

pub fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// A row comparing two times (in ms): ratio = ssh's / linger's, no design target.
pub fn time_row(name: &str, linger: f64, ssh: f64) -> [String; 6] {
    [
        name.into(),
        format!("{linger:.3} ms"),
        format!("{ssh:.3} ms"),
        format!("{:.2}x", ssh / linger),
        String::new(),
        String::new(),
    ]
}

/// The same, with a design target for the ratio.
pub fn time_row_target(name: &str, linger: f64, ssh: f64, target: f64) -> [String; 6] {
    let mut row = time_row(name, linger, ssh);
    row[4] = format!(">= {target}x");
    row[5] = met(ssh / linger >= target).into();
    row
}

/// A row comparing two throughputs (GB/s): ratio = linger's / ssh's, against `target`.
pub fn throughput_row(name: &str, linger_gbps: f64, ssh_gbps: f64, target: f64) -> [String; 6] {
    [
        name.into(),
        format!("{linger_gbps:.2} GB/s"),
        format!("{ssh_gbps:.2} GB/s"),
        format!("{:.2}x", linger_gbps / ssh_gbps),
        format!(">= {target}x"),
        met(linger_gbps / ssh_gbps >= target).into(),
    ]
}

/// A Markdown-style table: the first column left-aligned, the others right-aligned.
pub fn print_table(header: &[&str], rows: &[[String; 6]]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
}

/// Keystroke echo on a terminal: `cmd` (a `linger invoke -t` or `ssh -tt` whose remote command
/// prints `READY` and then reads its terminal) runs on a pseudo-terminal of its own, as under
/// a user's terminal emulator; each sample is one byte typed until the remote terminal's echo
/// of it arrives. Ends the command with Ctrl-C.
pub fn keystroke_echo(mut cmd: Command, warmup: usize, runs: usize) -> Result<Samples, BoxError> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None)?;
    cmd.stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave));
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let result = (|| -> Result<Samples, BoxError> {
        while !seen.windows(5).any(|w| w == b"READY") {
            let n = master.read(&mut buf)?;
            if n == 0 {
                return Err("the command ended before it was ready".into());
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let mut times = Vec::with_capacity(runs);
        for i in 0..warmup + runs {
            let start = Instant::now();
            master.write_all(b"x")?;
            loop {
                let n = master.read(&mut buf)?;
                if n == 0 {
                    return Err("the command ended mid-measurement".into());
                }
                if buf[..n].contains(&b'x') {
                    break;
                }
            }
            if i >= warmup {
                times.push(start.elapsed());
            }
        }
        Ok(Samples::new(times))
    })();
    let _ = master.write_all(b"\x03");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    result
}

impl BenchEnv {
    /// Starts lingerd in the foreground on one free port of host addresses 127.0.0.1 to
    /// 127.0.0.HOSTS, accepting
    /// the fixture's client key, and points the linger client at that key; returns the
    /// port. The daemon is put in `slot` at once, so that it is killed even if it never
    /// gets ready.
    pub fn start_tls_daemon(
        &self,
        client_key: &Path,
        hosts: usize,
        slot: &mut Option<Daemon>,
    ) -> Result<u16, BoxError> {
        let public = std::fs::read_to_string(client_key.with_extension("pub"))?;
        let authorized = self.dir.path().join("linger_authorized_keys");
        std::fs::write(&authorized, public)?;
        let config = self.config.join("linger/lingerd.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nauthorized_keys = {:?}\n{}",
                authorized.display().to_string(),
                MANY_SESSIONS_TOML
            ),
        )?;
        std::fs::write(
            self.home.join("options.toml"),
            format!(
                "identity_file = {:?}\nhost_key_checking = \"accept-new\"\n",
                client_key.display().to_string()
            ),
        )?;
        // A port free on every address (bound on 0.0.0.0), then one listener per address.
        let port = std::net::TcpListener::bind("0.0.0.0:0")?
            .local_addr()?
            .port();
        let mut cmd = Command::new(&self.bins.lingerd);
        cmd.arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(self.runtime.join("linger/lingerd.sock"))
            .arg("--state-dir")
            .arg(self.server_dir());
        for n in 1..=hosts {
            cmd.arg("--listen").arg(format!("127.0.0.{n}:{port}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(
                self.dir.path().join("lingerd.stderr"),
            )?)
            .spawn()?;
        let daemon = slot.insert(Daemon {
            child,
            sessions_dir: self.sessions_dir(),
        });
        let listening = self.server_dir().join("listening");
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&listening).unwrap_or_default();
            if text.ends_with('\n') && text.lines().count() == hosts {
                return Ok(port);
            }
            if let Some(status) = daemon.child.try_wait()? {
                return Err(format!("lingerd exited with {status}").into());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("lingerd did not write {}", listening.display()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn print_tls_log_tail(&self) {
        print_tail(&self.dir.path().join("lingerd.stderr"), 10);
        print_tail(&self.server_dir().join("lingerd.log"), 20);
        print_tail(&self.dir.path().join("sshd/sshd.log"), 10);
    }
}

/// The lingerd this benchmark started: stopped (SIGTERM, then SIGKILL) when dropped, and
/// then every session host it left.
pub struct Daemon {
    child: Child,
    sessions_dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        terminate(self.child.id() as i32, "lingerd");
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_session_hosts(&self.sessions_dir);
    }
}

/// `len` bytes from the kernel's random source (panics if it cannot be read: nothing to
/// measure then).
pub fn random_block(len: usize) -> Vec<u8> {
    let mut block = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut block))
        .expect("/dev/urandom");
    block
}
