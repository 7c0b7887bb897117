//! Types shared by several messages.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Which of the command's output streams a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// A terminal made on the server for one command (`invoke --tty`): the client's `$TERM` and
/// window size. Its output is one merged stream, sent as `Stdout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSpec {
    pub term: String,
    pub rows: u16,
    pub cols: u16,
}

/// What a session does with output when its buffer is full (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BufferingMode {
    #[default]
    Block,
    Drop,
    Spool,
}

impl BufferingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BufferingMode::Block => "block",
            BufferingMode::Drop => "drop",
            BufferingMode::Spool => "spool",
        }
    }
}

impl std::str::FromStr for BufferingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "block" => Ok(BufferingMode::Block),
            "drop" => Ok(BufferingMode::Drop),
            "spool" => Ok(BufferingMode::Spool),
            _ => Err(format!(
                "unknown buffering mode '{s}' (expected block, drop or spool)"
            )),
        }
    }
}

/// What started a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    /// A command started with `invoke --as-job`: it runs in the session's foreground.
    Remote,
    /// A background job inside the session (`job start`): it runs beside the session's
    /// commands, with its own output log.
    Background,
}

/// A job's state as the server knows it (the client adds Disconnected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Running,
    Completed,
    Failed,
    Stopped,
}

/// A named session configuration of the server (SPEC §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigurationInfo {
    pub name: String,
    pub shell: Vec<String>,
    pub startup: Option<String>,
    pub working_directory: Option<String>,
    pub idle_timeout_ms: u64,
    pub max_idle_timeout_ms: u64,
    pub output_buffering: BufferingMode,
    pub output_buffer_size: u64,
    pub spool_limit: u64,
    pub max_sessions_per_user: u32,
    pub max_memory_per_session: u64,
    pub max_processes_per_session: Option<u32>,
    pub run_as: Option<String>,
    /// The only programs its sessions run, if restricted.
    pub restricted: Option<Vec<String>>,
}

/// One job: a command run with `invoke --as-job`, or a background job in a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    pub job_id: Uuid,
    pub kind: JobKind,
    /// The script, as shown.
    pub command: String,
    pub state: JobState,
    /// The exit status, once ended.
    pub status: Option<i32>,
    /// Output of this job is kept, not yet received.
    pub has_more_data: bool,
    pub pending_output_bytes: u64,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
}

/// Whether a session is attached, seen from the client asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attachment {
    /// Attached to the asking client.
    You,
    /// Attached to another client.
    Other,
    /// Attached to no client.
    None,
}

/// The server's view of one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub instance_id: Uuid,
    pub name: String,
    pub configuration_name: String,
    /// The principal owning the session.
    pub owner: String,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
    pub attachment: Attachment,
    /// Set once the session has ended (removed, timed out, shell exited): why.
    pub closed_reason: Option<String>,
    /// The command currently running, as submitted (truncated by the server).
    pub running_command: Option<String>,
    pub idle_timeout_ms: u64,
    pub output_buffering_mode: BufferingMode,
    pub disconnected_at_ms: Option<i64>,
    pub expires_at_ms: Option<i64>,
    pub pending_output_bytes: u64,
    pub dropped_output_bytes: u64,
    pub jobs: u32,
    /// The running command is suspended for want of a reader: its output filled the
    /// session's buffer (`block` mode, or a full spool) and nobody receives it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
}

/// Why a request failed. Each kind maps to one CLI exit code (SPEC §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No such session for this principal (also for another principal's session).
    NotFound,
    /// The session is running another command, or attached elsewhere.
    Busy,
    /// The session has ended.
    Closed,
    /// The session was detached from this client while the request ran (a `disconnect`
    /// elsewhere, or no sign of life for the heartbeat timeout); its command keeps running.
    Detached,
    /// The request is malformed or a value is out of range.
    InvalidRequest,
    /// The name is taken by another live session of the principal (NewSession).
    Exists,
    /// A server limit refuses the request.
    Limit,
    /// Authentication failed or is required.
    Auth,
    /// Protocol version mismatch or unknown message.
    Protocol,
    /// The server failed internally.
    Internal,
    /// A copy could not read or write a file (`linger copy`): the message names it.
    File,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorBody {
    pub kind: ErrorKind,
    /// One line saying what went wrong.
    pub message: String,
    /// What to do about it, when the server knows.
    pub hint: Option<String>,
    /// For kind `closed`: why the session ended (its `SessionInfo.closed_reason`), which the
    /// message says in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_reason: Option<String>,
}

impl ErrorBody {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorBody {
            kind,
            message: message.into(),
            hint: None,
            closed_reason: None,
        }
    }

    /// A `closed` error for session `name`, which ended because `why`.
    pub fn closed(name: &str, why: &str) -> Self {
        ErrorBody::new(
            ErrorKind::Closed,
            format!("session {name} is closed: {why}"),
        )
        .with_closed_reason(why)
        .with_hint("create a new one with `linger new`")
    }

    pub fn with_closed_reason(mut self, why: impl Into<String>) -> Self {
        self.closed_reason = Some(why.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}
