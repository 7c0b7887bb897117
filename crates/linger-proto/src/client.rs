//! Messages a client sends to `lingerd`.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::copy::CopyItem;
use crate::types::BufferingMode;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First message on every connection.
    Hello(Hello),
    /// A request; the server answers with messages carrying the same `rid`.
    Request { rid: u64, request: Request },
    /// Output of request `rid` was received up to and including entry `seq`; the server may
    /// forget it.
    Ack { rid: u64, seq: u64 },
    /// Stop the command started by request `rid` (Ctrl-C).
    Cancel { rid: u64 },
    /// Standard input for `command_id`, which request `rid` follows: `data` is the input
    /// from byte `offset` on; `eof` says the input ends after it. Sent only within the
    /// window the last `StdinAck` opened (docs/PROTOCOL.md §12.1).
    Stdin {
        rid: u64,
        command_id: Uuid,
        offset: u64,
        data: Bytes,
        #[serde(default)]
        eof: bool,
    },
    /// The client's window changed: the terminal of `command_id` (running in session
    /// `instance_id`, attached to this client) takes the new size. Ignored otherwise.
    Resize {
        instance_id: Uuid,
        command_id: Uuid,
        rows: u16,
        cols: u16,
    },
    /// Liveness; answered with `Pong`.
    Ping { nonce: u64 },
    /// Withdraw Invoke `rid` if it still waits for a busy session (it is answered `Error
    /// busy` and never runs); one that has started keeps running. No reply.
    Withdraw { rid: u64 },
    /// Answer to `Challenge` (TLS only): prove possession of an SSH key.
    Authenticate(Authenticate),
    /// The next entry of the tree `PutFiles` request `rid` uploads (a file's bytes follow
    /// as `CopyData`).
    CopyItem { rid: u64, item: CopyItem },
    /// Bytes of the current file of upload `rid`: `offset` counts the upload's file bytes
    /// before these. A data frame; sent only within the window the last `CopyProgress`
    /// opened.
    CopyData { rid: u64, offset: u64, data: Bytes },
    /// Upload `rid` has sent its whole tree.
    CopyEnd { rid: u64 },
    /// Download `rid`: the client has taken `done` bytes of file content, so the server
    /// may send up to `done + COPY_WINDOW`.
    CopyProgress { rid: u64, done: u64 },
}

/// One authentication attempt (docs/PROTOCOL.md §2.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authenticate {
    /// Who the client asks to act as (the local user name by default). A key listed with
    /// `principal="NAME"` acts as NAME whatever is asked here.
    pub user: String,
    /// The public key, in OpenSSH's one-line format (`ssh-ed25519 AAAA… [comment]`).
    pub public_key: String,
    /// An SshSig (`-----BEGIN SSH SIGNATURE-----` armour, as `ssh-keygen -Y sign` writes) over
    /// [`crate::auth::signed_message`], namespace [`crate::auth::SIGNATURE_NAMESPACE`].
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    /// The client's identity (stable per client home): attachments belong to it.
    pub client_id: Uuid,
    /// Free text naming the client program, for logs.
    pub client_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    NewSession(NewSession),
    ListSessions(ListSessions),
    RemoveSession {
        instance_id: Uuid,
    },
    Invoke(Invoke),
    /// Attach the session to this client (SPEC §6 connect). Refused while it is attached to
    /// another client.
    Connect(Connect),
    /// Detach the session from this client; its commands keep running and its idle-timeout
    /// clock starts.
    Disconnect(Disconnect),
    /// Attach if needed, then deliver the output kept while nobody read it and follow the
    /// running command to its end.
    Receive(Receive),
    /// Attach the session and mark it entered (`linger enter`) until this request is
    /// cancelled or the connection closes: meanwhile a `Disconnect` from any other
    /// connection is refused. Answered with `Reply::Session` at once.
    Enter {
        instance_id: Uuid,
    },
    /// The jobs of a session (commands run as jobs, and background jobs).
    ListJobs {
        instance_id: Uuid,
    },
    /// Deliver a job's kept output (answered like `Receive`): with `follow`, then follow
    /// the job to its end; without, stop once what it kept is taken (partial output of a
    /// running job, as PowerShell's Receive-Job).
    ReceiveJob {
        instance_id: Uuid,
        job_id: Uuid,
        keep: bool,
        #[serde(default = "following")]
        follow: bool,
    },
    /// Stop a running job; answered with `Jobs` holding its record.
    StopJob {
        instance_id: Uuid,
        job_id: Uuid,
    },
    /// Forget an ended job and its kept output; answered with empty `Jobs`.
    RemoveJob {
        instance_id: Uuid,
        job_id: Uuid,
    },
    /// The server's session configurations (`linger config list`).
    ListConfigurations,
    /// Watch a session read-only (SPEC §14): answered with `Reply::Watching`, then
    /// `Watched` chunks (and a `Screen` first when a command runs on a terminal) until
    /// `Cancel {rid}`, or an `Error` when the session ends. Nothing is consumed.
    Watch {
        instance_id: Uuid,
    },
    /// Copy a tree into the session (SPEC §15), done by its host beside the shell: the
    /// client then sends `CopyItem`, `CopyData` and `CopyEnd`; answered `Reply::Copied`.
    PutFiles(PutFiles),
    /// Copy files out of the session: answered `CopyTotal`, then `CopyItem`/`CopyData`,
    /// then `Reply::Copied`.
    GetFiles(GetFiles),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutFiles {
    pub instance_id: Uuid,
    /// Where the tree goes: absolute, or relative to the shell's current directory; `~`
    /// and `~/…` are the session's home. Bytes, as Linux paths are.
    pub destination: Bytes,
    /// More than one top-level item comes, so the destination must be a directory.
    pub several: bool,
    /// Keep modes and times (`-p`); otherwise modes are filtered by the shell's umask.
    pub preserve: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetFiles {
    pub instance_id: Uuid,
    /// What to send, each as `PutFiles::destination` is read.
    pub sources: Vec<Bytes>,
    /// Directories are sent whole (`-r`); otherwise a directory source fails the copy.
    pub recursive: bool,
}

fn following() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connect {
    pub instance_id: Uuid,
    /// The buffering mode from now on (`None`: unchanged).
    pub buffering: Option<BufferingMode>,
    /// Take the session from the client holding it, at once (`tmux attach -d`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Disconnect {
    pub instance_id: Uuid,
    /// A new idle timeout (`None`: unchanged); checked against the server's limits.
    pub idle_timeout_ms: Option<u64>,
    pub buffering: Option<BufferingMode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receive {
    pub instance_id: Uuid,
    /// Deliver what is kept now without acknowledging it (it stays on the server) and do
    /// not follow the running command.
    pub keep: bool,
    pub buffering: Option<BufferingMode>,
    /// Enter the running terminal command from a window of this size (`linger enter` of a
    /// session whose command runs on a terminal): the first message is `Screen`, this
    /// request's `Stdin` and the client's `Resize` then feed the command. Not with `keep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<crate::types::TerminalSpec>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewSession {
    pub name: String,
    /// `None`: the configuration named `default`.
    pub configuration: Option<String>,
    /// `None`: the configuration's default.
    pub idle_timeout_ms: Option<u64>,
    pub buffering: Option<BufferingMode>,
    /// The client's locale and terminal type for the session's shell (see
    /// [`crate::environment`]: other names are ignored).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListSessions {
    /// Only these sessions (empty: all the caller's sessions). Unknown ids are answered
    /// as closed records when the server remembers them, and left out otherwise.
    pub instance_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invoke {
    pub instance_id: Uuid,
    pub script: String,
    /// Positional parameters `$1 $2 …`.
    pub args: Vec<String>,
    /// How long to wait for a running command to finish before answering busy.
    pub wait_ms: u64,
    /// After a cancel, how long until the command's processes are killed.
    pub cancel_timeout_ms: u64,
    /// Start the command and detach the session at once (`invoke --in-disconnected-session`):
    /// the answer is `Started` alone and the output waits for a `Receive`.
    #[serde(default)]
    pub disconnected: bool,
    #[serde(default)]
    pub kind: InvokeKind,
    /// The client forwards its standard input (`ClientMsg::Stdin`); otherwise the command
    /// reads `/dev/null`. Ignored for `disconnected` and for kinds other than `Plain`.
    #[serde(default)]
    pub stdin: bool,
    /// Run the command on a pseudo-terminal of its own (`--tty`); its output is one merged
    /// stream and forwarded input (`stdin` must be set) is what is typed. Only for `Plain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<crate::types::TerminalSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum InvokeKind {
    /// Output streams to the requester.
    #[default]
    Plain,
    /// `invoke --as-job`: never waits for a busy session; answered with `Started` alone, the
    /// output waits on the server for a `ReceiveJob`, and the command is listed as a job.
    Job,
    /// `job start`: the script becomes a background job in the session; this request's
    /// output and end are those of its launch, and `Started` names the job.
    BackgroundJob,
}
