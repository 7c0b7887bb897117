use anyhow::Result;
use linger::{Client, SessionView};

use super::expand_computers;
use crate::cli::GetArgs;
use crate::output::print_sessions;
use crate::report::usage;

pub async fn run(client: &Client, args: GetArgs, json: bool) -> Result<i32> {
    let mut views: Vec<SessionView> = Vec::new();
    if args.computer.is_empty() {
        let entries = client.select(&args.selectors)?;
        views = client.refresh(entries).await?;
    } else {
        if !args.selectors.is_empty() {
            return Err(usage("give either SEL or --computer, not both"));
        }
        for computer in expand_computers(&args.computer)? {
            views.extend(client.get_remote(&computer).await?);
        }
    }
    let name = args
        .name
        .as_deref()
        .map(glob::Pattern::new)
        .transpose()
        .map_err(|e| usage(format!("--name: {e}")))?;
    let instance = args
        .instance_id
        .as_deref()
        .map(uuid::Uuid::parse_str)
        .transpose()
        .map_err(|e| usage(format!("--instance-id: {e}")))?;
    views.retain(|v| {
        name.as_ref().is_none_or(|p| p.matches(&v.entry.name))
            && args.id.is_none_or(|i| v.entry.id == i)
            && instance.is_none_or(|g| v.entry.instance_id == g)
            && args
                .state
                .as_deref()
                .is_none_or(|s| v.state.as_str().eq_ignore_ascii_case(s))
    });
    print_sessions(&views, json);
    Ok(0)
}
