//! The local transport: the per-user daemon's Unix socket, reached (and its daemon started on
//! demand) as the socket's contract in `linger_proto::local` says.

use std::path::Path;

use linger_proto::local::StartError;
use tokio::net::UnixStream;

use crate::error::{Error, Result};

pub use linger_proto::local::daemon_program;

/// Connects to the daemon's socket, starting the daemon first if nothing listens
/// ([`linger_proto::local::connect_or_start`]).
pub async fn connect_or_start(socket: &Path) -> Result<UnixStream> {
    linger_proto::local::connect_or_start(socket)
        .await
        .map_err(|e| match e {
            StartError::Unreachable(reason) => Error::Unreachable {
                computer: "localhost".into(),
                reason,
            },
            StartError::Start(why) => Error::Autostart(why),
        })
}
