//! The client library's errors. Each maps to one exit code of SPEC §13 through
//! [`Error::kind`].

use linger_proto::types::{ErrorBody, ErrorKind as ServerKind};

/// The error classes a script can tell apart (the `kind` of `--json` error records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Usage,
    NotFound,
    Busy,
    Auth,
    Connection,
    Timeout,
    /// The session was detached from this client while the request ran.
    Disconnected,
    Other,
}

impl Kind {
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Usage => 2,
            Kind::NotFound => 3,
            Kind::Busy => 4,
            Kind::Auth => 5,
            Kind::Connection => 6,
            Kind::Timeout => 7,
            Kind::Disconnected | Kind::Other => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Usage => "usage",
            Kind::NotFound => "not_found",
            Kind::Busy => "busy",
            Kind::Auth => "auth",
            Kind::Connection => "connection",
            Kind::Timeout => "timeout",
            Kind::Disconnected => "disconnected",
            Kind::Other => "other",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused or failed a request.
    #[error("{}", .0.message)]
    Server(ErrorBody),
    #[error("cannot reach lingerd on {computer}: {reason}")]
    Unreachable { computer: String, reason: String },
    /// The computer's name does not resolve: nothing to do with lingerd.
    #[error("cannot find computer {computer}: {reason}")]
    UnknownComputer { computer: String, reason: String },
    #[error("cannot start lingerd: {0}")]
    Autostart(String),
    #[error("the connection to {computer} was lost")]
    ConnectionLost { computer: String },
    #[error("the connection to {computer} was lost and could not be re-established ({reason})")]
    GaveUp { computer: String, reason: String },
    #[error("{computer} speaks an incompatible protocol: {reason}")]
    Protocol { computer: String, reason: String },
    #[error("no session matches '{0}' in this client")]
    NoMatch(String),
    /// `--computer C --name N` (or `--id`, `--instance-id`): none of the principal's
    /// sessions on those computers matches.
    #[error("no session of yours matching '{what}' on {computers}")]
    NoRemoteMatch { what: String, computers: String },
    #[error("no job '{0}' in this client's job table")]
    NoJob(String),
    #[error("session {name} is closed: {reason}")]
    Closed { name: String, reason: String },
    #[error("{0}")]
    Usage(String),
    /// The cause is part of the message, not a `source`: a report that prints the chain
    /// would say it twice.
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Timeout(String),
    /// The client cannot authenticate (no usable key, a key it cannot read).
    #[error("{0}")]
    Auth(String),
    /// The server refused every key offered.
    #[error("authentication to {computer} failed: the server accepted none of the keys offered ({offered})")]
    AuthRejected { computer: String, offered: String },
    /// An operation outlasted one of the client's timeout options.
    #[error("{what} took longer than {option} ({limit})")]
    TimedOut {
        what: String,
        option: &'static str,
        limit: String,
    },
    /// A command's output passed option `max_received_data_per_command`.
    #[error("the output passed max_received_data_per_command ({limit} bytes): receiving stopped there; the command goes on in its session, now Disconnected, which keeps the rest")]
    OutputLimit { limit: u64 },
    /// The server's identity is unknown (and may not be learnt) or has changed.
    #[error("{message}")]
    HostKey { message: String, hint: String },
    /// A local file of a copy could not be read or written.
    #[error("{0}")]
    Copy(#[from] linger_files::CopyError),
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            cause: source,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Error::Server(b) => match b.kind {
                ServerKind::NotFound | ServerKind::Closed => Kind::NotFound,
                ServerKind::Busy => Kind::Busy,
                ServerKind::Auth => Kind::Auth,
                ServerKind::InvalidRequest | ServerKind::Exists => Kind::Usage,
                ServerKind::Protocol => Kind::Connection,
                ServerKind::Detached => Kind::Disconnected,
                ServerKind::Limit | ServerKind::Internal | ServerKind::File => Kind::Other,
            },
            Error::Unreachable { .. }
            | Error::UnknownComputer { .. }
            | Error::Autostart(_)
            | Error::ConnectionLost { .. }
            | Error::GaveUp { .. }
            | Error::Protocol { .. } => Kind::Connection,
            Error::NoMatch(_)
            | Error::NoRemoteMatch { .. }
            | Error::NoJob(_)
            | Error::Closed { .. } => Kind::NotFound,
            Error::Usage(_) => Kind::Usage,
            Error::Io { .. } | Error::State(_) => Kind::Other,
            Error::Timeout(_) | Error::TimedOut { .. } => Kind::Timeout,
            Error::Auth(_) | Error::AuthRejected { .. } | Error::HostKey { .. } => Kind::Auth,
            Error::OutputLimit { .. } | Error::Copy(_) => Kind::Other,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Server(b) => b.hint.clone(),
            Error::Unreachable { .. } => {
                Some("is lingerd running there? `lingerd` starts it in the foreground".into())
            }
            Error::UnknownComputer { .. } => {
                Some("check the name (and DNS or /etc/hosts), or give its address".into())
            }
            Error::Autostart(_) => Some("run `lingerd` by hand to see why".into()),
            Error::ConnectionLost { .. } => {
                Some("a running command keeps running and its session is left Disconnected; `linger receive` gets its output".into())
            }
            Error::GaveUp { .. } => Some(
                "the session is left Disconnected with its command running; `linger receive` gets the rest once it is reachable".into(),
            ),
            Error::NoMatch(_) => Some("`linger get` lists this client's sessions".into()),
            Error::NoRemoteMatch { computers, .. } => Some(format!(
                "`linger get --computer {computers}` lists your sessions there"
            )),
            Error::NoJob(_) => Some(
                "`linger job list` shows this client's jobs; `linger job list SEL` a session's"
                    .into(),
            ),
            Error::Closed { .. } => Some("create a new one with `linger new`".into()),
            Error::Auth(_) => Some("`--identity FILE` names the key to use".into()),
            Error::AuthRejected { .. } => Some(
                "the server's [server] authorized_keys must list your public key; `--identity FILE` picks another key".into(),
            ),
            Error::HostKey { hint, .. } => Some(hint.clone()),
            Error::OutputLimit { .. } => Some(
                "`linger receive SEL` gets the rest (raise the limit with --option max_received_data_per_command=SIZE)".into(),
            ),
            Error::TimedOut { option, .. } => Some(format!(
                "raise it with --option {option}=DURATION or in options.toml"
            )),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
