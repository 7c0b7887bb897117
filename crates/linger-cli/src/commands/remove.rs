use anyhow::Result;
use linger::{Client, Entry};

use super::{expand_computers, Filter};
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
        let filter = Filter::new(&args.filter)?;
        if filter.is_empty() {
            return Err(usage(
                "with --computer, say which session: --name, --id or --instance-id",
            ));
        }
        let mut found = Vec::new();
        for computer in expand_computers(&args.computer)? {
            for v in client.get_remote(&computer).await? {
                if filter.matches(&v.entry) {
                    found.push(v.entry);
                }
            }
        }
        if found.is_empty() {
            let f = args.filter;
            let what = f.name.or(f.instance_id).or(f.id.map(|i| i.to_string()));
            return Err(linger::Error::NoMatch(what.unwrap_or_default()).into());
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
