//! Starting a session host: `lingerd session-host` re-executed in its own Unix session
//! (setsid), so it outlives the daemon; the spec goes in on stdin and one status line
//! comes back on stdout.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use linger_proto::host::HostSpec;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// How long a host may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start a session host: {0}")]
    Io(#[from] std::io::Error),
    #[error("the session host failed: {0}")]
    Host(String),
}

/// Starts the host and waits for it to be ready to accept the daemon.
pub async fn spawn_host(spec: &HostSpec, log: &Path) -> Result<(), SpawnError> {
    let exe = std::env::current_exe()?;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = Command::new(exe);
    cmd.arg("session-host")
        .arg0(format!("lingerd: session {}", spec.meta.name))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let frame = linger_proto::frame::encode(spec).map_err(|e| SpawnError::Host(e.to_string()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| SpawnError::Host("no stdin".into()))?;
    stdin.write_all(&frame).await?;
    drop(stdin);
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| SpawnError::Host("no stdout".into()))?;
    let mut line = String::new();
    let read = tokio::time::timeout(READY_TIMEOUT, BufReader::new(stdout).read_line(&mut line))
        .await
        .map_err(|_| SpawnError::Host("it did not report ready in time".into()))?;
    read?;
    // Reap the host whenever it exits, for as long as this daemon lives.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let line = line.trim();
    if line.starts_with("READY") {
        Ok(())
    } else if let Some(why) = line.strip_prefix("ERROR ") {
        Err(SpawnError::Host(why.to_string()))
    } else {
        Err(SpawnError::Host(format!(
            "it exited without reporting ready (see {})",
            log.display()
        )))
    }
}
