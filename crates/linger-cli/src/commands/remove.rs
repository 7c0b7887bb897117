use anyhow::Result;
use linger::{Client, Entry};

use super::resolve;
use crate::cli::RemoveArgs;
use crate::output::session_json;
use crate::report;

pub async fn run(client: &Client, args: RemoveArgs, json: bool) -> Result<i32> {
    let entries: Vec<Entry> = resolve(client, &args.targets, "remove").await?;
    let mut failures = report::Failures::new(entries.len(), "sessions");
    let results = client.remove_all(&entries).await?;
    for (entry, result) in entries.iter().zip(results) {
        match result {
            Ok(v) => {
                if json {
                    report::out(&format!("{}\n", session_json(&v)));
                }
            }
            Err(e) => failures.record(&entry.name, anyhow::Error::new(e)),
        }
    }
    failures.finish()?;
    Ok(0)
}
