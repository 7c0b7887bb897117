//! `linger config list --computer C`: the server's session configurations (SPEC §10).

use anyhow::Result;
use linger::Client;

use crate::cli::ConfigCommand;
use crate::output;

pub async fn run(client: &Client, cmd: ConfigCommand, json: bool) -> Result<i32> {
    match cmd {
        ConfigCommand::List(args) => {
            let list = client.configurations(&args.computer).await?;
            output::print_configurations(&list, json);
            Ok(0)
        }
    }
}
