use anyhow::Result;
use linger::{Client, SessionView};

use super::{expand_computers, Filter};
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
    let filter = Filter::new(&args.filter)?;
    views.retain(|v| {
        filter.matches(&v.entry)
            && args
                .state
                .as_deref()
                .is_none_or(|s| v.state.as_str().eq_ignore_ascii_case(s))
    });
    print_sessions(&views, json);
    // Broken says only that a server could not be asked: say why, once per computer.
    let mut told = std::collections::BTreeSet::new();
    for v in views.iter().filter(|v| v.state == linger::State::Broken) {
        let why = v.reason.as_deref().unwrap_or("it cannot be reached");
        if told.insert((v.entry.computer_name.as_str(), why)) {
            crate::say!("linger: warning: {}: {why}", v.entry.computer_name);
        }
    }
    Ok(0)
}
