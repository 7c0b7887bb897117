//! Messages between `lingerd` and a session host, over the host's own Unix socket.
//!
//! A host serves one daemon connection at a time. Output is kept in the host's log until the
//! daemon acknowledges it, so a daemon that dies and comes back loses nothing: on `Hello` it
//! asks the host to replay from the oldest unacknowledged entry.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::copy::{CopyItem, CopySummary};
use crate::types::{BufferingMode, StreamKind};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DaemonToHost {
    Hello {
        protocol_version: u32,
    },
    /// Run a script in the shell. Refused (as `RunRefused`) while another runs.
    Run {
        command_id: Uuid,
        script: String,
        args: Vec<String>,
        /// What kind of command: a plain one, one run as a job (its record is kept for the
        /// job table), or the launch of a background job that runs `script` with the
        /// session's state while the shell goes on taking commands.
        #[serde(default)]
        kind: RunKind,
        /// The command reads forwarded input (`Stdin`) from a pipe; otherwise `/dev/null`.
        #[serde(default)]
        stdin: bool,
        /// Run it on a pseudo-terminal the host makes: output is read from its master,
        /// forwarded input is written to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        terminal: Option<crate::types::TerminalSpec>,
    },
    /// A client enters the running terminal command with a window of `rows`×`cols`: the
    /// terminal takes that size; answered with `Screen`, before anything sent after it.
    Redraw {
        rows: u16,
        cols: u16,
        /// For a watcher (the daemon's number for it), which never resizes: the size is
        /// then ignored, and `Screen` names the watcher.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        watcher: Option<u64>,
    },
    /// Whether anyone watches: while on, the host sends a copy of new output as `Tap`.
    Watch {
        on: bool,
    },
    /// The terminal of running command `command_id` takes a new size (SIGWINCH follows).
    Resize {
        command_id: Uuid,
        rows: u16,
        cols: u16,
    },
    /// Forwarded input of `command_id` from byte `offset` on (docs/PROTOCOL.md §12.1).
    Stdin {
        command_id: Uuid,
        offset: u64,
        data: Bytes,
        #[serde(default)]
        eof: bool,
    },
    /// Stop a background job: its processes get SIGTERM, then SIGKILL.
    StopJob {
        job_id: Uuid,
    },
    /// Forget an ended background job and the output it kept.
    ForgetJob {
        job_id: Uuid,
    },
    /// SIGINT the command's process group; kill what it started after `escalate_after_ms`.
    Interrupt {
        command_id: Uuid,
        escalate_after_ms: u64,
    },
    /// (Re)send a channel's log entries from the oldest unacknowledged one.
    Replay {
        #[serde(default)]
        channel: Channel,
    },
    /// Forget a channel's log entries up to and including `seq`. Implies `Credit`.
    Ack {
        #[serde(default)]
        channel: Channel,
        seq: u64,
    },
    /// The channel's reader has taken every entry up to `seq` but the host keeps them (a
    /// `--keep` receive). The host sends at most `OUTPUT_WINDOW` bytes of output beyond the
    /// highest `Ack` or `Credit` since the last `Replay`.
    Credit {
        #[serde(default)]
        channel: Channel,
        seq: u64,
    },
    /// The session's changeable settings; the host applies the buffering mode and keeps the
    /// rest for a restarted daemon.
    Settings(SessionSettings),
    /// End the shell and every process of the session, then exit.
    Terminate {
        reason: String,
    },
    /// Begin an upload (`PutFiles`): items and data follow, then `CopyEnd`.
    CopyIn {
        copy_id: Uuid,
        destination: Bytes,
        several: bool,
        preserve: bool,
    },
    /// Begin a download (`GetFiles`): the host sends `CopyTotal`, items and data, within
    /// the window the daemon's `CopyProgress` opens.
    CopyOut {
        copy_id: Uuid,
        sources: Vec<Bytes>,
        recursive: bool,
    },
    CopyItem {
        copy_id: Uuid,
        item: CopyItem,
    },
    /// A data frame, as the client's `CopyData`.
    CopyData {
        copy_id: Uuid,
        offset: u64,
        data: Bytes,
    },
    CopyEnd {
        copy_id: Uuid,
    },
    /// A download's reader has taken `done` bytes.
    CopyProgress {
        copy_id: Uuid,
        done: u64,
    },
    /// Give up a copy: nothing of it is left under a destination name.
    CopyAbort {
        copy_id: Uuid,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HostToDaemon {
    Hello {
        protocol_version: u32,
        meta: Box<HostMeta>,
        status: HostStatus,
        settings: SessionSettings,
    },
    Started {
        command_id: Uuid,
    },
    /// How much of `command_id`'s forwarded input has been written to it (or discarded
    /// once `closed`). Sent when a command with forwarded input starts, as writes progress,
    /// and after each `Replay` of the foreground log while such a command runs.
    StdinAck {
        command_id: Uuid,
        written: u64,
        closed: bool,
    },
    RunRefused {
        command_id: Uuid,
        reason: String,
    },
    Output {
        #[serde(default)]
        channel: Channel,
        seq: u64,
        command_id: Uuid,
        stream: StreamKind,
        data: Bytes,
    },
    Finished {
        #[serde(default)]
        channel: Channel,
        seq: u64,
        command_id: Uuid,
        status: i32,
        /// A terminal command's unread type-ahead (what was typed and never read).
        #[serde(default, skip_serializing_if = "Bytes::is_empty")]
        unread_input: Bytes,
        /// A terminal command's input offset at its end: input before it was read or is in
        /// `unread_input`; the sender still holds the rest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input_offset: Option<u64>,
    },
    /// Answers `Redraw`: the running terminal command's screen as of entry `seq` (`None`:
    /// no command runs on a terminal).
    Screen {
        command_id: Option<Uuid>,
        seq: u64,
        data: Bytes,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        watcher: Option<u64>,
    },
    /// A copy of output as the host read it, for watchers (never acknowledged, never
    /// replayed). `missed` bytes before it were not tapped (the daemon fell behind).
    Tap {
        command_id: Uuid,
        stream: StreamKind,
        data: Bytes,
        missed: u64,
    },
    /// The shell is gone; the host exits once its log has been acknowledged.
    ShellExited {
        reason: String,
    },
    Status(HostStatus),
    /// Answers `Replay`: the entries that follow start again at `from`. Entries between a
    /// `Replay` and its `Replaying` are stale and the daemon ignores them.
    Replaying {
        #[serde(default)]
        channel: Channel,
        from: u64,
        /// The newest entry at that moment (`from - 1` when none is kept).
        last: u64,
    },
    CopyTotal {
        copy_id: Uuid,
        bytes: u64,
        files: u64,
    },
    CopyItem {
        copy_id: Uuid,
        item: CopyItem,
    },
    /// A data frame, as the server's `CopyData`.
    CopyData {
        copy_id: Uuid,
        offset: u64,
        data: Bytes,
    },
    /// An upload's bytes written so far.
    CopyProgress {
        copy_id: Uuid,
        done: u64,
    },
    /// The copy is complete (an upload: every file renamed into place).
    CopyDone {
        copy_id: Uuid,
        summary: CopySummary,
    },
    /// The copy failed; what it had begun is removed.
    CopyFailed {
        copy_id: Uuid,
        error: String,
    },
    /// Output was discarded under `drop`; the entry covers the host's cumulative dropped
    /// counter range `(from_total, to_total]`, so a receiver that saw part of it can count
    /// only what is new to it.
    Dropped {
        #[serde(default)]
        channel: Channel,
        seq: u64,
        from_total: u64,
        to_total: u64,
    },
}

/// What a host was created with; also kept as `meta.json` beside the host so a restarted
/// daemon can find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMeta {
    pub instance_id: Uuid,
    pub name: String,
    pub owner: String,
    pub owner_uid: u32,
    pub configuration_name: String,
    pub created_at_ms: i64,
    pub idle_timeout_ms: u64,
    pub buffering: BufferingMode,
    pub output_buffer_size: u64,
    /// Most bytes `spool` keeps on disk.
    pub spool_limit: u64,
    pub host_pid: u32,
    pub shell_pid: u32,
    /// The configuration's limit when the session was made (a reload does not change it).
    #[serde(default)]
    pub max_idle_timeout_ms: Option<u64>,
    /// The programs a restricted session may run (its configuration's `restricted`, as
    /// absolute paths).
    #[serde(default)]
    pub restricted: Option<Vec<String>>,
    /// Argument patterns of restricted programs: (absolute path, regular expression).
    #[serde(default)]
    pub restricted_arguments: Vec<(String, String)>,
}

/// The host's state at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The command running in the shell, with its id.
    pub running: Option<(Uuid, String)>,
    pub pending_output_bytes: u64,
    pub dropped_output_bytes: u64,
    /// Set when the shell has exited.
    pub shell_exited: Option<String>,
    /// The newest log entry's seq (0 before the first).
    pub last_seq: u64,
    /// Commands run as jobs and background jobs, oldest first.
    #[serde(default)]
    pub jobs: Vec<JobStatus>,
    /// The foreground command is suspended in a write: its output fills the buffer
    /// (`block` mode, or a spool at its limit) and waits for a reader.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
}

/// Which output log an entry belongs to: the session's foreground commands (`None`) or one
/// background job's.
pub type Channel = Option<Uuid>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RunKind {
    #[default]
    Plain,
    /// `invoke --as-job`: the command's record stays in the job table.
    Job,
    /// `job start`: this command launches background job `job_id`.
    LaunchJob { job_id: Uuid },
}

pub use crate::types::JobInfo as JobStatus;

/// What the daemon may change about a session after creation. The host is its durable
/// keeper: it outlives the daemon and hands the settings back in `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSettings {
    pub buffering: BufferingMode,
    pub idle_timeout_ms: u64,
    /// The client the session is attached to.
    pub attached_to: Option<Uuid>,
    /// When it was last detached (Unix ms); the idle-timeout clock runs from here.
    pub disconnected_at_ms: Option<i64>,
}

/// How the daemon asks for a new session host: written as bare MessagePack (no length
/// prefix) on the host's stdin, which is then closed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostSpec {
    /// `host_pid` and `shell_pid` are filled in by the host.
    pub meta: HostMeta,
    /// The settings the session starts with.
    pub settings: SessionSettings,
    /// The shell's argv, as configured; the host adds nothing to it.
    pub shell: Vec<String>,
    /// The shell's whole environment.
    pub environment: Vec<(String, String)>,
    pub working_directory: String,
    /// Where the host listens for the daemon.
    pub socket_path: String,
    /// The session's directory in the daemon's state: `meta.json`, logs.
    pub session_dir: String,
    /// Resource limits on the shell and everything it starts.
    #[serde(default)]
    pub limits: SessionLimits,
    /// Control groups the daemon made for the session (a system daemon, as root, before
    /// the host runs as the session's user, who could not make them): the host moves the
    /// shell into them through the `cgroup.procs` descriptors it inherited, and does not
    /// remove them (the daemon does, when the session ends).
    #[serde(default)]
    pub cgroups: Option<PreparedCgroups>,
    /// Who the host becomes before anything else, when a system daemon (root) starts
    /// another user's session.
    #[serde(default)]
    pub run_as: Option<RunAsIds>,
    /// The descriptor limit (soft, hard) the host and its shell get: the one the daemon was
    /// started with, before it raised its own.
    #[serde(default)]
    pub nofile: Option<(u64, u64)>,
}

/// A Unix identity: uid, primary gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAsIds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// A session's resource limits (its configuration's `max_memory_per_session` and
/// `max_processes_per_session`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLimits {
    /// Bytes of memory.
    pub memory: Option<u64>,
    /// Processes (and threads) at once.
    pub processes: Option<u32>,
}

/// See [`HostSpec::cgroups`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedCgroups {
    /// The groups' directories.
    pub dirs: Vec<String>,
    /// For each, the host's descriptor of its `cgroup.procs`, opened by the daemon.
    pub procs_fds: Vec<i32>,
    /// How each limit is enforced, for the host's log.
    pub how: Vec<String>,
}
