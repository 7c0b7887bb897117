//! Messages `lingerd` sends to a client.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::copy::{CopyItem, CopySummary};
use crate::types::{ConfigurationInfo, ErrorBody, JobInfo, SessionInfo, StreamKind};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ServerMsg {
    /// Answer to `Hello`.
    Welcome(Welcome),
    /// The final or first answer to request `rid`.
    Reply {
        rid: u64,
        reply: Reply,
    },
    /// Request `rid` failed; nothing more comes for it.
    Error {
        rid: u64,
        error: ErrorBody,
    },
    /// A chunk of command output for request `rid`; `seq` increases by one per entry.
    Output {
        rid: u64,
        seq: u64,
        command_id: Uuid,
        stream: StreamKind,
        data: Bytes,
    },
    /// A command ended. For an `Invoke`, the one with its `command_id` ends the request.
    Finished {
        rid: u64,
        seq: u64,
        command_id: Uuid,
        status: i32,
        /// What was typed at a terminal command (`--tty`) and never read by it: the
        /// client's type-ahead for whatever comes next. Absent when empty.
        #[serde(default, skip_serializing_if = "bytes::Bytes::is_empty")]
        unread_input: bytes::Bytes,
        /// A terminal command's input offset at its end: every byte of its input before it
        /// was read by the command or is in `unread_input`; the client that sent the input
        /// appends what it sent from there. Absent for other commands.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input_offset: Option<u64>,
    },
    /// First answer to a `Receive` with `terminal`: the running terminal command's screen
    /// (`command_id`; absent when no command runs on a terminal) as escape sequences that
    /// draw it on a blank terminal. Entries up to `seq` are in it: the client skips (and
    /// acknowledges) them.
    Screen {
        rid: u64,
        command_id: Option<Uuid>,
        seq: u64,
        data: bytes::Bytes,
    },
    /// What the watched session's command just printed. `missed` bytes before it were not
    /// shown to this watcher (it fell behind; the command never waits for a watcher).
    Watched {
        rid: u64,
        command_id: Uuid,
        stream: crate::types::StreamKind,
        data: bytes::Bytes,
        missed: u64,
    },
    /// Under `drop`, `bytes` of output were discarded at this point of the stream.
    Dropped {
        rid: u64,
        seq: u64,
        bytes: u64,
    },
    Pong {
        nonce: u64,
    },
    /// The session host has written (or, once `closed`, discarded) `written` bytes of
    /// `command_id`'s forwarded input, which request `rid` follows: the sender may forget
    /// them and send up to `written + STDIN_WINDOW`. `closed`: the command's input is
    /// closed (end of input written, or nobody reads it any more); send nothing more.
    StdinAck {
        rid: u64,
        command_id: Uuid,
        written: u64,
        closed: bool,
    },
    /// TLS only, instead of `Welcome`: authenticate first. `nonce` has 32 bytes.
    Challenge {
        nonce: Bytes,
    },
    /// An `Authenticate` was refused; the client may try another key while `tries_left > 0`.
    /// The message never says why (which key, which user).
    AuthFailed {
        message: String,
        tries_left: u32,
    },
    /// The connection is being closed for this reason (sent at most once, last).
    Goodbye {
        error: ErrorBody,
    },
    /// First answer to `GetFiles`: how much its tree holds.
    CopyTotal {
        rid: u64,
        bytes: u64,
        files: u64,
    },
    /// The next entry of download `rid`.
    CopyItem {
        rid: u64,
        item: CopyItem,
    },
    /// Bytes of download `rid`'s current file, from `offset` of its file bytes (a data
    /// frame).
    CopyData {
        rid: u64,
        offset: u64,
        data: Bytes,
    },
    /// Upload `rid`: `done` bytes of file content are written, so the client may send up
    /// to `done + COPY_WINDOW`.
    CopyProgress {
        rid: u64,
        done: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u32,
    pub server_version: String,
    /// The server's host name.
    pub computer_name: String,
    /// Who the server authenticated the client as.
    pub principal: String,
    /// How often the client should show a sign of life while the connection is open.
    pub heartbeat_interval_ms: u64,
    /// After this long without a sign of life the server drops the client's attachments.
    pub heartbeat_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Session(SessionInfo),
    Sessions(Vec<SessionInfo>),
    /// The command of an `Invoke` started; output and `Finished` follow.
    Started {
        command_id: Uuid,
        /// For `InvokeKind::BackgroundJob`: the job it launches.
        #[serde(default)]
        job_id: Option<Uuid>,
    },
    Jobs(Vec<JobInfo>),
    /// Answers `ListConfigurations`, by name.
    Configurations(Vec<ConfigurationInfo>),
    /// A `Receive` has delivered everything; nothing more comes for it.
    Received(ReceiveSummary),
    /// A `Watch` is registered: `Watched` chunks follow.
    Watching,
    /// A `PutFiles` or `GetFiles` is complete: every file is in place under its name.
    Copied(CopySummary),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveSummary {
    /// Commands whose end was delivered.
    pub commands_finished: u32,
    /// Output bytes lost under `drop` that this delivery reported.
    pub dropped_output_bytes: u64,
    /// A command still running (only when `keep` stopped early).
    pub running_command: Option<String>,
}
