//! The audit log (`audit.log` in the state directory): one JSON object per line for every
//! login (and failed login), session start, command, connect, disconnect, receive, enter, job action and removal —
//! who, from where, when, and what. Kept apart from `lingerd.log`, whose level and wording
//! are for debugging; this file's fields are stable for tools.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::conn::Peer;
use crate::logfile::LogFile;

pub struct AuditLog {
    file: Mutex<Option<LogFile>>,
}

impl AuditLog {
    /// Opens (appending) `path`. A log that cannot be opened is reported once and audit
    /// records go to the daemon's log instead.
    pub fn open(path: &Path) -> AuditLog {
        let file = LogFile::open(path, crate::logfile::AUDIT_LOG_LIMIT);
        let file = match file {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!("cannot open the audit log {}: {e}", path.display());
                None
            }
        };
        AuditLog {
            file: Mutex::new(file),
        }
    }

    /// Records that `peer` did `action` on session `session` (named `name`), with details.
    pub fn record(&self, peer: &Peer, action: &str, session: Uuid, name: &str, detail: Value) {
        let when = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let line = json!({
            "time": when,
            "principal": peer.principal,
            "from": peer.from,
            "action": action,
            "session": session,
            "name": name,
            "detail": detail,
        });
        let mut g = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let written = g
            .as_mut()
            .map(|f| writeln!(f, "{line}").and_then(|()| f.flush()));
        match written {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::error!("cannot write the audit log: {e}; record: {line}"),
            None => tracing::info!(target: "audit", "{line}"),
        }
    }

    /// A record without a client: the daemon itself acted (idle timeout, heartbeat lapse).
    pub fn record_daemon(&self, action: &str, session: Uuid, name: &str, detail: Value) {
        let peer = Peer {
            principal: "lingerd".into(),
            from: "the daemon".into(),
            no_pty: true,
        };
        self.record(&peer, action, session, name, detail);
    }

    /// A failed authentication from `from` (no principal: nobody was authenticated).
    pub fn record_failure(&self, from: &str, detail: Value) {
        let peer = Peer {
            principal: String::new(),
            from: from.to_string(),
            no_pty: true,
        };
        self.record(&peer, "login_failed", Uuid::nil(), "", detail);
    }
}
