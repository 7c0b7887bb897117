//! `linger-tour`: a short guided tour of linger against a private, auto-started local
//! daemon. It runs the real `linger` binary (built beside this one) and shows each
//! command with its output. Everything lives in a temporary directory and every process
//! the tour started is ended before it exits.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

/// Writes a line to stdout; a closed stdout (the tour piped into `head`) ends the tour,
/// which still cleans up.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err(|_| anyhow::Error::new(StdoutClosed))?;
    }};
}

/// The tour's reader went away (`linger-tour | head`): the tour ends quietly.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// A short guided tour of linger: two pretend client machines share a private lingerd that
/// the tour starts on demand in a temporary directory and stops at the end.
#[derive(clap::Parser)]
#[command(name = "linger-tour", version)]
struct Args {}

struct Tour {
    dir: PathBuf,
    linger: PathBuf,
}

impl Tour {
    fn cmd(&self, client: &str, args: &[&str]) -> Command {
        let mut c = Command::new(&self.linger);
        c.args(args)
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .env("XDG_STATE_HOME", self.dir.join("state"))
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env("LINGER_HOME", self.dir.join(client))
            .stdin(Stdio::null());
        c
    }

    /// Shows and runs `linger ARGS` as `client`; returns its exit code.
    fn run(&self, client: &str, args: &[&str]) -> Result<i32> {
        check_interrupted()?;
        self.show(client, args)?;
        let status = self
            .cmd(client, args)
            .status()
            .with_context(|| format!("cannot run {}", self.linger.display()))?;
        let code = status.code().unwrap_or(1);
        if code != 0 {
            out!("(exit code {code})");
        }
        out!();
        Ok(code)
    }

    /// Like `run`, with `input` on the command's standard input (shown as a `printf` pipe).
    fn run_fed(&self, client: &str, input: &str, args: &[&str]) -> Result<i32> {
        use std::io::Write as _;
        check_interrupted()?;
        self.show_fed(client, Some(input), args)?;
        let mut child = self
            .cmd(client, args)
            .stdin(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.linger.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .context("cannot write the command's input")?;
        }
        let code = child.wait().context("the invoke")?.code().unwrap_or(1);
        if code != 0 {
            out!("(exit code {code})");
        }
        out!();
        Ok(code)
    }

    fn show(&self, client: &str, args: &[&str]) -> Result<()> {
        self.show_fed(client, None, args)
    }

    fn show_fed(&self, client: &str, input: Option<&str>, args: &[&str]) -> Result<()> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') || a.contains(';') || a.contains('$') {
                    format!("'{a}'")
                } else {
                    a.to_string()
                }
            })
            .collect();
        let pipe = input
            .map(|i| format!("printf '{}' | ", i.replace('\n', "\\n")))
            .unwrap_or_default();
        let line = format!("[{client}]$ {pipe}linger {}", shown.join(" "));
        if std::io::stdout().is_terminal() {
            out!("\x1b[1m{line}\x1b[0m");
        } else {
            out!("{line}");
        }
        Ok(())
    }

    /// Shows and starts `linger ARGS` as `client` in the background.
    fn start(&self, client: &str, args: &[&str]) -> Result<std::process::Child> {
        check_interrupted()?;
        self.show(client, args)?;
        self.cmd(client, args)
            .spawn()
            .with_context(|| format!("cannot run {}", self.linger.display()))
    }

    fn say(&self, text: &str) -> Result<()> {
        out!("# {text}");
        Ok(())
    }
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let p = exe.with_file_name(name);
    if !p.is_file() {
        bail!(
            "{} is missing: build the workspace first (`cargo build --release`)",
            p.display()
        );
    }
    Ok(p)
}

fn main() {
    // Only --help and --version: anything else is refused (exit 2) before the tour begins.
    let Args {} = <Args as clap::Parser>::parse();
    if let Err(e) = tour() {
        if e.downcast_ref::<StdoutClosed>().is_none() {
            eprintln!("linger-tour: error: {e:#}");
        }
        std::process::exit(1);
    }
}

/// Set by Ctrl-C: the tour stops at the next step and still cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: std::ffi::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Ends what the tour started when dropped, so that an early return, an error or a panic
/// (a closed pipe on stdout) never leaves a daemon running.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        cleanup(&self.0);
    }
}

fn tour() -> Result<()> {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::SigHandler::Handler(on_interrupt),
        );
    }
    let linger = sibling("linger")?;
    sibling("lingerd")?;
    let dir = std::env::temp_dir().join(format!("linger-tour-{}", std::process::id()));
    let _cleanup = Cleanup(dir.clone());
    for sub in ["run", "state", "config", "laptop", "desktop"] {
        std::fs::create_dir_all(dir.join(sub)).context("cannot create the tour directory")?;
    }
    let t = Tour { dir, linger };
    steps(&t)
}

fn steps(t: &Tour) -> Result<()> {
    t.say("Two client machines, 'laptop' and 'desktop', share one host: this one.")?;
    t.say("The first command starts lingerd on demand and creates a session holding a bash.")?;
    t.run("laptop", &["new", "localhost", "--name", "build"])?;
    t.say("Commands in a session share variables, functions, the working directory.")?;
    t.run(
        "laptop",
        &[
            "invoke",
            "build",
            "--",
            "cd /tmp; greeting=hello; shout() { echo \"$1!\"; }",
        ],
    )?;
    t.run(
        "laptop",
        &["invoke", "build", "--", "shout $greeting from $(pwd)"],
    )?;
    t.say("stdout and stderr stay apart; the remote status is the exit code; the session survives `exit`.")?;
    t.run(
        "laptop",
        &[
            "invoke",
            "build",
            "--",
            "echo to-stdout; echo to-stderr >&2; exit 3",
        ],
    )?;
    t.run(
        "laptop",
        &[
            "invoke",
            "build",
            "--arg",
            "world",
            "--",
            "echo \"$greeting, $1\"",
        ],
    )?;
    t.say("Standard input reaches the command, as with ssh (binary-safe; `-n` gives /dev/null).")?;
    t.run_fed(
        "laptop",
        "pear\napple\nfig\n",
        &["invoke", "build", "--", "sort | nl"],
    )?;
    t.say("The session lives in the daemon, not in this client: the desktop sees it, attached elsewhere.")?;
    t.run("desktop", &["get", "--computer", "localhost"])?;
    t.say("A long command starts on the laptop, which disconnects while it runs.")?;
    let long =
        "for i in 1 2 3 4; do echo \"step $i in $(pwd)\"; sleep 0.5; done; echo done; exit 3";
    let mut running = t.start("laptop", &["invoke", "build", "--", long])?;
    std::thread::sleep(std::time::Duration::from_millis(700));
    t.run("laptop", &["disconnect", "build"])?;
    let code = running
        .wait()
        .context("the long invoke")?
        .code()
        .unwrap_or(1);
    out!("(the laptop's invoke ended with exit code {code}; the command kept running)\n");
    t.say("The desktop finds it Disconnected and available, connects, and receives what ran meanwhile.")?;
    t.run(
        "desktop",
        &["get", "--computer", "localhost", "--name", "build"],
    )?;
    t.run(
        "desktop",
        &["connect", "--computer", "localhost", "--name", "build"],
    )?;
    t.run("desktop", &["receive", "build"])?;
    t.say("Same shell, same state, now from the desktop; the laptop sees it Busy elsewhere.")?;
    t.run(
        "desktop",
        &["invoke", "build", "--", "shout $greeting from $(pwd)"],
    )?;
    t.run("laptop", &["get"])?;
    t.say("A job returns at once; its output waits on the server until it is received.")?;
    t.run(
        "desktop",
        &[
            "invoke",
            "build",
            "--as-job",
            "--",
            "sleep 1; echo built in $(pwd)",
        ],
    )?;
    t.run("desktop", &["job", "wait", "1"])?;
    t.run("desktop", &["job", "receive", "1"])?;
    t.say("A command can start in a session that is disconnected from the outset; anyone receives it later.")?;
    t.run(
        "desktop",
        &[
            "invoke",
            "--computer",
            "localhost",
            "--in-disconnected-session",
            "--name",
            "nightly",
            "--",
            "sleep 1; echo report ready",
        ],
    )?;
    t.run(
        "laptop",
        &["receive", "--computer", "localhost", "--name", "nightly"],
    )?;
    t.say("An ad hoc command runs in a temporary session that is removed afterwards.")?;
    t.run(
        "desktop",
        &[
            "invoke",
            "--computer",
            "localhost",
            "--",
            "echo \"ad hoc in $LINGER_SESSION_NAME\"",
        ],
    )?;
    t.say("Removing a session ends its processes; its record shows Closed.")?;
    t.run("desktop", &["remove", "build"])?;
    t.run("laptop", &["remove", "nightly"])?;
    t.run("desktop", &["get"])?;
    t.run("desktop", &["invoke", "build", "--", "true"])?;
    t.say("That was the tour. `linger --help` lists every command.")?;
    Ok(())
}

/// Ends the daemon and every session host the tour started, by pid, then deletes the
/// tour's directory.
fn cleanup(dir: &Path) {
    let pid_file = dir.join("run/linger/lingerd.pid");
    if let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if let Ok(sessions) = std::fs::read_dir(dir.join("state/linger/server/sessions")) {
        for s in sessions.flatten() {
            let meta = std::fs::read_to_string(s.path().join("meta.json")).unwrap_or_default();
            if let Some(pid) = serde_json::from_str::<serde_json::Value>(&meta)
                .ok()
                .and_then(|v| v["host_pid"].as_i64())
            {
                // The host's Unix session holds the shell and all it started.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(dir);
}
