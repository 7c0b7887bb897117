//! The linger client library: create persistent shell sessions on linger daemons, run
//! commands in them that share state, and manage them, from Rust. The `linger` CLI is a thin
//! layer over this crate.
//!
//! ```no_run
//! # async fn demo() -> linger::Result<()> {
//! use linger::{Client, Event, InvokeOptions, NewOptions};
//! let client = Client::from_env()?;
//! let session = client.new_session("localhost", &NewOptions::default()).await?;
//! let mut out = client.invoke(&session.entry, "x=42; echo $x", &InvokeOptions::default()).await?;
//! while let Some(event) = out.next().await? {
//!     if let Event::Finished { status, .. } = event { assert_eq!(status, 0); }
//! }
//! client.remove(&session.entry).await?;
//! # Ok(()) }
//! ```

mod autostart;
mod client;
mod connection;
mod copy;
mod error;
mod home;
mod input;
mod keys;
pub mod known_hosts;
mod options;
mod registry;
mod ssh;
mod tls;

pub use autostart::{connect_or_start, daemon_program};
pub use bytes::Bytes;
pub use client::{
    display_computer, Availability, Client, Dialer, DisconnectOptions, InvokeOptions, JobView,
    JobViewState, NewOptions, ReceiveOptions, SessionView, State, Target, DEFAULT_CANCEL_TIMEOUT,
    DEFAULT_WAIT,
};
pub use connection::{
    Canceller, CommandStream, Connection, EnterGuard, Event, Resizer, Resume, Watch, WatchEvent,
    Withdrawer,
};
pub use copy::{CopyProgress, NoProgress};
pub use error::{Error, Kind, Result};
pub use home::ClientHome;
pub use input::Input;
pub use linger_files as files;
pub use linger_proto::copy::CopySummary;
pub use linger_proto::server::ReceiveSummary;
pub use linger_proto::types::{
    BufferingMode, ConfigurationInfo, JobInfo, JobKind, JobState, SessionInfo, StreamKind,
    TerminalSpec,
};
pub use options::{OptionSource, Options, KEYS as OPTION_KEYS};
pub use registry::{Entry, JobEntry, Registry, Sessions};
pub use ssh::SshTarget;
pub use tls::TlsTarget;
