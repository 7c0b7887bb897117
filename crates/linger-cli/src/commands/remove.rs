use anyhow::Result;
use linger::{Client, Entry};

use super::expand_computers;
use crate::cli::RemoveArgs;
use crate::output::session_json;
use crate::report::{self, usage, usage_hint};

pub async fn run(client: &Client, args: RemoveArgs, json: bool) -> Result<i32> {
    let entries: Vec<Entry> = if args.computer.is_empty() {
        if args.selectors.is_empty() {
            return Err(usage_hint(
                "name the sessions to remove",
                "`linger remove SEL…`, or --computer C with --name, --id or --instance-id",
            ));
        }
        client.select(&args.selectors)?
    } else {
        if args.name.is_none() && args.id.is_none() && args.instance_id.is_none() {
            return Err(usage(
                "with --computer, say which session: --name, --id or --instance-id",
            ));
        }
        let name = args
            .name
            .as_deref()
            .map(glob::Pattern::new)
            .transpose()
            .map_err(|e| usage(format!("--name: {e}")))?;
        let mut found = Vec::new();
        for computer in expand_computers(&args.computer)? {
            for v in client.get_remote(&computer).await? {
                let e = v.entry;
                if name.as_ref().is_none_or(|p| p.matches(&e.name))
                    && args.id.is_none_or(|i| e.id == i)
                    && args
                        .instance_id
                        .as_deref()
                        .is_none_or(|g| e.instance_id.to_string() == g.to_ascii_lowercase())
                {
                    found.push(e);
                }
            }
        }
        if found.is_empty() {
            return Err(linger::Error::NoMatch(
                args.name
                    .or(args.instance_id)
                    .or(args.id.map(|i| i.to_string()))
                    .unwrap_or_default(),
            )
            .into());
        }
        found
    };
    let mut first_error: Option<anyhow::Error> = None;
    for entry in &entries {
        match client.remove(entry).await {
            Ok(v) => {
                if json {
                    println!("{}", session_json(&v));
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
