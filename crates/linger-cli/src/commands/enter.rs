//! `linger enter`: an interactive session.

use anyhow::Result;
use linger::Client;

use crate::cli::EnterArgs;

pub async fn run(_client: &Client, _args: EnterArgs) -> Result<i32> {
    anyhow::bail!("linger enter is being built")
}
