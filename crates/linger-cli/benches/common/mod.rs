//! What the benchmarks that compare linger with OpenSSH share: the release binaries, how
//! they run `ssh` (and an ssh ControlMaster) against the tests' sshd fixture, timing of
//! processes and of library calls, killing what they started by pid, and the printed
//! statistics and ratio table. Each benchmark includes it with `mod common;`.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use linger::{Client, Entry, Event, InvokeOptions, StreamKind};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// lingerd.toml lines that lift the default configuration's limit on live sessions per
/// user (25), which a benchmark's session creation and fan-out runs pass.
pub const MANY_SESSIONS_TOML: &str =
    "[[configuration]]\nname = \"default\"\nmax_sessions_per_user = 1000\n";

/// Seconds since the first call (a benchmark makes it first thing, then stamps its
/// progress lines with it).
pub fn since_start() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
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

/// Times `runs` processes one after another, after `warmup` untimed ones.
pub async fn time_process(
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
    let mut make = make;
    off_runtime(move || {
        let mut times = Vec::with_capacity(runs);
        for i in 0..warmup + runs {
            let cmds = make();
            let start = Instant::now();
            run_concurrently(cmds)?;
            if i >= warmup {
                times.push(start.elapsed());
            }
        }
        Ok(Samples::new(times))
    })
    .await
}

/// Runs `script` in the session and waits for it to finish; returns the stdout byte count.
pub async fn invoke_drain(client: &Client, entry: &Entry, script: &str) -> Result<u64, BoxError> {
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
pub async fn invoke_all(client: &Client, entries: &[Entry]) -> Result<(), BoxError> {
    let runs = entries.iter().map(|e| invoke_drain(client, e, "true"));
    for r in futures_util::future::join_all(runs).await {
        r?;
    }
    Ok(())
}

/// `runs` invokes of `true` in one session, one after another, after `warmup` untimed ones.
pub async fn time_api(
    client: &Client,
    entry: &Entry,
    warmup: usize,
    runs: usize,
) -> Result<Samples, BoxError> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let start = Instant::now();
        invoke_drain(client, entry, "true").await?;
        if i >= warmup {
            times.push(start.elapsed());
        }
    }
    Ok(Samples::new(times))
}

/// `runs` rounds of `invoke_all` (`true` in every session at once), after `warmup`.
pub async fn time_api_all(
    client: &Client,
    entries: &[Entry],
    warmup: usize,
    runs: usize,
) -> Result<Samples, BoxError> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let start = Instant::now();
        invoke_all(client, entries).await?;
        if i >= warmup {
            times.push(start.elapsed());
        }
    }
    Ok(Samples::new(times))
}

/// Reads everything a process writes to its stdout, 256 KiB at a time; returns the byte
/// count and the time from spawn to its exit.
pub fn read_all(cmd: &mut Command) -> Result<(u64, Duration), BoxError> {
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
