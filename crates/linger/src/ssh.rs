//! The ssh transport: `ssh://[user@]host[:port]` runs the system's OpenSSH client with the
//! remote command `lingerd --stdio` (options `ssh_command` and `ssh_remote_command`), which
//! bridges to that user's daemon on the host. Authentication is whatever ssh does.

use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::error::{Error, Result};
use crate::options::Options;

/// Where an `ssh://` computer points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl SshTarget {
    /// Parses what follows `ssh://`.
    pub fn parse(rest: &str, written: &str) -> Result<SshTarget> {
        let bad = |why: &str| Error::Usage(format!("invalid computer '{written}': {why}"));
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some(_) => return Err(bad("the user before @ is empty")),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| bad(&format!("'{p}' is not a port number")))?,
                ),
            ),
            None => (hostport, None),
        };
        if host.is_empty() || host.contains('/') || host.starts_with('-') {
            return Err(bad("expected ssh://[user@]host[:port]"));
        }
        Ok(SshTarget {
            user,
            host: host.to_string(),
            port,
        })
    }

    fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

/// Starts `ssh … lingerd --stdio`; its stdin and stdout carry the protocol, its stderr is
/// the user's (so ssh can ask for a passphrase and say what went wrong).
pub fn spawn(target: &SshTarget, options: &Options, computer: &str) -> Result<Child> {
    let words: Vec<&str> = options.ssh_command.split_whitespace().collect();
    let Some((program, flags)) = words.split_first() else {
        return Err(Error::Usage("option ssh_command is empty".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(flags);
    if let Some(port) = target.port {
        cmd.arg("-p").arg(port.to_string());
    }
    cmd.arg("--")
        .arg(target.destination())
        .arg(&options.ssh_remote_command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Dropped with its connection, ssh must still pass on what was written to it: it
        // ends by itself at the end of its input (tokio reaps it).
        .kill_on_drop(false);
    cmd.spawn().map_err(|e| Error::Unreachable {
        computer: computer.to_string(),
        reason: format!("cannot run `{program}`: {e}"),
    })
}

/// Why an ssh transport ended before the handshake: ssh's own exit status says more than a
/// closed pipe does.
pub async fn failure(mut child: Child, computer: &str, options: &Options) -> Error {
    let status = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
    let how = match status {
        Ok(Ok(s)) => match s.code() {
            Some(255) => "ssh could not connect or log in (exit status 255; its message is above)"
                .to_string(),
            Some(127) => format!(
                "the remote command `{}` was not found there (exit status 127)",
                options.ssh_remote_command
            ),
            Some(c) => format!("ssh exited with status {c}"),
            None => "ssh was killed".to_string(),
        },
        _ => "the ssh connection ended before the daemon answered".to_string(),
    };
    Error::Unreachable {
        computer: computer.to_string(),
        reason: how,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_host_and_port() {
        let t = SshTarget::parse("ops@web01:2222", "ssh://ops@web01:2222").expect("valid");
        assert_eq!(t.user.as_deref(), Some("ops"));
        assert_eq!((t.host.as_str(), t.port), ("web01", Some(2222)));
        let t = SshTarget::parse("web01", "ssh://web01").expect("valid");
        assert_eq!((t.user, t.port), (None, None));
        assert!(SshTarget::parse("web01:x", "ssh://web01:x").is_err());
        assert!(SshTarget::parse("-oProxyCommand=x", "ssh://-oProxyCommand=x").is_err());
        assert!(SshTarget::parse("@web01", "ssh://@web01").is_err());
    }
}
