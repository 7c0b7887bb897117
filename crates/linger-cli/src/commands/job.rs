//! `linger job …`: the client's job table and background jobs in sessions.

use anyhow::Result;
use linger::Client;

use crate::cli::JobCommand;

pub async fn run(_client: &Client, _cmd: JobCommand, _json: bool) -> Result<i32> {
    anyhow::bail!("linger job is being built")
}
