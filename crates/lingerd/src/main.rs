//! The `lingerd` binary: parses flags, takes the instance lock, logs to the state
//! directory and serves. `lingerd session-host` is the session host entry point (started
//! by the daemon itself, never by hand).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use lingerd::config::Config;
use lingerd::paths::{self, DaemonPaths};
use tokio::net::UnixListener;

#[derive(Parser)]
#[command(
    name = "lingerd",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LINGER_COMMIT"), ")"),
    about = "linger daemon: keeps persistent shell sessions"
)]
struct Args {
    /// Configuration file (default: $XDG_CONFIG_HOME/linger/lingerd.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Unix socket to serve (default: $XDG_RUNTIME_DIR/linger/lingerd.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// State directory (default: $XDG_STATE_HOME/linger/server).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Also listen for TLS clients on ADDR:PORT, or ADDR with port 5990 (repeatable). Port
    /// 0 picks a free port; the addresses bound are written to STATE_DIR/listening.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<String>,
    /// Bridge standard input and output to the user's daemon (for ssh).
    #[arg(long)]
    stdio: bool,
    /// Run as the host's system daemon (as root): serve every user, each session running as
    /// its owner. Defaults become /etc/linger/lingerd.toml, /run/linger/lingerd.sock and
    /// /var/lib/linger.
    #[arg(long, conflicts_with = "stdio")]
    system: bool,
    #[command(subcommand)]
    command: Option<Internal>,
}

#[derive(Subcommand)]
enum Internal {
    /// Internal: run one session host (started by lingerd).
    #[command(hide = true)]
    SessionHost,
    /// Internal: the daemon's spawner of session hosts (started by lingerd).
    #[command(hide = true)]
    Spawner,
}

fn main() {
    seal_inherited_fds();
    linger_host::logging::tune_allocator();
    let args = Args::parse();
    match args.command {
        Some(Internal::SessionHost) => linger_host::host_process(),
        Some(Internal::Spawner) => lingerd::spawner_main(),
        None => {}
    }
    if let Err(e) = run(args) {
        eprintln!("lingerd: error: {e:#}");
        // A starter that lost the race to start a daemon connects to the winner instead.
        let code = match e.downcast_ref::<lingerd::instance::InstanceError>() {
            Some(lingerd::instance::InstanceError::AlreadyRunning { .. }) => {
                linger_proto::local::EXIT_ALREADY_SERVING
            }
            _ => 1,
        };
        std::process::exit(code);
    }
}

/// Descriptors this process inherited beyond stdin, stdout and stderr (a test harness's, a
/// terminal's, whatever the starter left open) must not reach session hosts and every
/// user's shell: they become close-on-exec before anything else runs.
fn seal_inherited_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only change this process's descriptor flags; a descriptor
        // that closed meanwhile (the directory's own) just fails.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Once the daemon serves, its stderr (often a pipe to the client that started it, long
/// gone) is /dev/null, so nothing can fail writing there; a panic's message goes to the log.
fn quiet_stderr() {
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("panic: {info}");
    }));
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto fd 2, which this process owns.
        unsafe { libc::dup2(null.as_raw_fd(), 2) };
    }
}

fn run(args: Args) -> Result<()> {
    let listen = args
        .listen
        .iter()
        .map(|l| lingerd::tls::parse_listen(l).map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    if args.stdio {
        return stdio_bridge(args.socket);
    }
    let mode = if args.system {
        if !nix::unistd::geteuid().is_root() {
            anyhow::bail!("--system runs sessions as their owners, so it must run as root (a per-user daemon needs no flag)");
        }
        lingerd::Mode::System
    } else {
        lingerd::Mode::PerUser
    };
    let system = mode == lingerd::Mode::System;
    let config_path = args.config.unwrap_or_else(|| {
        if system {
            paths::system_config()
        } else {
            paths::default_config()
        }
    });
    let config = Config::load(&config_path)?;
    let paths = DaemonPaths {
        socket: args.socket.unwrap_or_else(|| {
            if system {
                paths::system_socket()
            } else {
                paths::default_socket()
            }
        }),
        state_dir: args.state_dir.unwrap_or_else(|| {
            if system {
                paths::system_state_dir()
            } else {
                paths::default_state_dir()
            }
        }),
    };
    if let Some(dir) = paths.socket.parent() {
        paths::private_dir(dir)
            .with_context(|| format!("cannot create the socket directory {}", dir.display()))?;
        if system {
            // Every user reaches a system daemon's socket; SO_PEERCRED says who they are.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot open up {}", dir.display()))?;
        }
        // A directory someone else made first (under /tmp) would hand them our sessions.
        linger_proto::local::check_dir(dir, nix::unistd::geteuid().as_raw())?;
    }
    paths::private_dir(&paths.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            paths.state_dir.display()
        )
    })?;
    // Its files (logs, identity key, sessions) are opened by name: nobody else may own or
    // write the directory (a system daemon's becomes 0711, root's).
    linger_proto::local::check_dir(&paths.state_dir, nix::unistd::geteuid().as_raw())?;
    let _lock = lingerd::instance::acquire(&paths)?;

    let log_path = paths.log_file();
    let log = lingerd::logfile::LogFile::open(&log_path, lingerd::logfile::DAEMON_LOG_LIMIT)
        .with_context(|| format!("cannot open the log {}", log_path.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(linger_host::logging::Sink::new(log))
        .log_internal_errors(false)
        .with_ansi(false)
        .init();
    match lingerd::raise_nofile() {
        Ok((before, now)) if before != now => {
            tracing::info!("raised the descriptor limit from {before} to {now}")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the descriptor limit: {e}"),
    }
    // Before the daemon holds a descriptor per session (see `spawn`).
    if let Err(e) = lingerd::start_spawner() {
        tracing::warn!("cannot start the spawner ({e}); session hosts are started by the daemon");
    }

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Taken before the socket exists: from then on logrotate or a reload may signal us,
        // and SIGHUP's and SIGUSR1's default action would end the daemon.
        let hup = signal(SignalKind::hangup());
        let usr1 = signal(SignalKind::user_defined1());
        // We hold the lock, so a socket file here is a dead daemon's.
        if paths.socket.exists() {
            std::fs::remove_file(&paths.socket).with_context(|| {
                format!("cannot remove the stale socket {}", paths.socket.display())
            })?;
        }
        let listener = UnixListener::bind(&paths.socket)
            .with_context(|| format!("cannot listen on {}", paths.socket.display()))?;
        if system {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o666))
                .with_context(|| format!("cannot open up {}", paths.socket.display()))?;
        }
        let daemon = lingerd::Daemon::start(config, paths.clone(), mode)
            .await
            .context("cannot prepare the state directory")?;
        start_tls(&daemon, &paths, &listen).await?;
        tokio::spawn(reload_on_hangup(hup, Arc::clone(&daemon), config_path.clone()));
        tokio::spawn(reopen_logs_on_usr1(usr1));
        tracing::info!(socket = %paths.socket.display(), pid = std::process::id(), "lingerd listening");
        quiet_stderr();
        lingerd::serve_unix(Arc::clone(&daemon), listener, shutdown_signal()).await;
        tracing::info!("lingerd stopping; sessions keep running and will be re-adopted");
        let _ = std::fs::remove_file(&paths.socket);
        Ok(())
    })
}

/// Binds every `--listen` address and serves TLS on it. The addresses actually bound (port
/// 0 picks one) go to `STATE_DIR/listening`, one per line, for scripts and tests.
async fn start_tls(
    daemon: &Arc<lingerd::Daemon>,
    paths: &DaemonPaths,
    listen: &[std::net::SocketAddr],
) -> Result<()> {
    let listening = paths.state_dir.join("listening");
    let _ = std::fs::remove_file(&listening);
    if listen.is_empty() {
        return Ok(());
    }
    let identity = lingerd::identity::ServerIdentity::load_or_create(&paths.state_dir)?;
    tracing::info!(fingerprint = %identity.fingerprint, "server identity");
    let identity = Arc::new(identity);
    let mut bound = String::new();
    for addr in listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener
            .local_addr()
            .context("a bound listener has an address")?;
        tracing::info!(address = %local, "listening for TLS clients");
        bound.push_str(&format!("{local}\n"));
        tokio::spawn(lingerd::tls::serve_tls(
            daemon.clone(),
            listener,
            identity.clone(),
        ));
    }
    std::fs::write(&listening, bound)
        .with_context(|| format!("cannot write {}", listening.display()))?;
    Ok(())
}

/// `lingerd --stdio`, the far end of the ssh transport: bridges standard input and output
/// to this user's daemon (started on demand, as the CLI does), which sees the connection as
/// a local one of this user. Nothing else may write to stdout: it carries the protocol.
///
/// The copying runs on two plain threads with large buffers, reading and writing the file
/// descriptors directly: measured, tokio's stdio (a blocking-pool hop per 8 KiB write) made
/// this bridge the slowest link of a stream over ssh.
fn stdio_bridge(socket: Option<PathBuf>) -> Result<()> {
    use std::os::fd::AsFd;
    let socket = socket.unwrap_or_else(paths::default_socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stream = runtime
        .block_on(linger_proto::local::connect_or_start(&socket))
        .with_context(|| format!("cannot reach the daemon on {}", socket.display()))?
        .into_std()
        .context("cannot take over the daemon connection")?;
    drop(runtime);
    stream
        .set_nonblocking(false)
        .context("cannot make the daemon connection blocking")?;
    let to_daemon = stream
        .try_clone()
        .context("cannot duplicate the daemon connection")?;
    let stdin = std::fs::File::from(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("no standard input")?,
    );
    let stdout = std::fs::File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("no standard output")?,
    );
    std::thread::spawn(move || {
        let _ = pump(stdin, &to_daemon);
        // The client is gone: let the daemon see the end of the connection, then wait for
        // it to close its side (which ends the downstream copy below).
        let _ = to_daemon.shutdown(std::net::Shutdown::Write);
    });
    // The daemon closing ends the bridge.
    let _ = pump(&stream, stdout);
    // A blocked stdin reader must not keep the process.
    std::process::exit(0)
}

/// Copies until `from` ends or either side fails.
fn pump(mut from: impl std::io::Read, mut to: impl std::io::Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

/// SIGHUP reloads the configuration file and its drop-ins. A configuration with errors is
/// not taken: the one in force stays, and the log says why (file, line, field).
async fn reload_on_hangup(
    hup: std::io::Result<tokio::signal::unix::Signal>,
    daemon: Arc<lingerd::Daemon>,
    path: PathBuf,
) {
    let Ok(mut hup) = hup else {
        tracing::warn!("cannot listen for SIGHUP; the configuration cannot be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        match Config::load(&path) {
            Ok(config) => daemon.reload(config),
            Err(e) => tracing::error!("reload refused, the configuration in force stays: {e}"),
        }
    }
}

/// SIGUSR1: open the log files again (logrotate's convention, after moving them away).
async fn reopen_logs_on_usr1(usr1: std::io::Result<tokio::signal::unix::Signal>) {
    let Ok(mut usr1) = usr1 else {
        tracing::warn!("cannot listen for SIGUSR1; the logs cannot be reopened");
        return;
    };
    while usr1.recv().await.is_some() {
        lingerd::logfile::reopen_all();
        tracing::info!("log files reopened (SIGUSR1)");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
