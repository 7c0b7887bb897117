use anyhow::Result;
use linger::Client;

use super::{expand_computers, new_options};
use crate::cli::NewArgs;
use crate::output::print_sessions;
use crate::report;

pub async fn run(client: &Client, args: NewArgs, json: bool) -> Result<i32> {
    let opts = new_options(client, &args.session)?;
    let computers = expand_computers(&args.computers)?;
    let mut views = Vec::new();
    let mut first_error: Option<anyhow::Error> = None;
    for computer in &computers {
        match client.new_session(computer, &opts).await {
            Ok(v) => views.push(v),
            Err(e) => {
                let e = anyhow::Error::new(e);
                if computers.len() > 1 {
                    eprintln!("linger: error: [{computer}] {}", report::line(&e));
                }
                first_error.get_or_insert(e);
            }
        }
    }
    print_sessions(&views, json);
    match first_error {
        None => Ok(0),
        Some(e) if computers.len() == 1 => Err(e),
        Some(e) => Ok(report::kind_of(&e).exit_code()),
    }
}
