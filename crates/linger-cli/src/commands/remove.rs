use anyhow::Result;
use linger::{Client, Entry};

use super::resolve;
use crate::cli::RemoveArgs;
use crate::output::session_json;
use crate::report;

pub async fn run(client: &Client, args: RemoveArgs, json: bool) -> Result<i32> {
    let entries: Vec<Entry> = resolve(client, &args.targets, "remove").await?;
    let mut first_error: Option<anyhow::Error> = None;
    for entry in &entries {
        match client.remove(entry).await {
            Ok(v) => {
                if json {
                    report::out(&format!("{}\n", session_json(&v)));
                }
            }
            Err(e) => {
                let e = anyhow::Error::new(e);
                if entries.len() > 1 {
                    eprintln!("linger: error: [{}] {}", entry.name, report::line(&e));
                }
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(0),
        Some(e) if entries.len() == 1 => Err(e),
        Some(e) => Ok(report::kind_of(&e).exit_code()),
    }
}
