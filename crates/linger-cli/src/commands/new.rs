//! `linger new`: one session per computer, up to `--throttle` at once; a failure on one
//! computer is reported without stopping the others.

use std::sync::Arc;

use anyhow::Result;
use linger::Client;
use tokio::sync::Semaphore;

use super::{expand_computers, new_options};
use crate::cli::NewArgs;
use crate::output::print_sessions;
use crate::progress::Progress;
use crate::report::{self, usage};

pub async fn run(client: &Client, args: NewArgs, json: bool) -> Result<i32> {
    let opts = new_options(client, &args.session)?;
    if args.throttle == 0 {
        return Err(usage("--throttle must be at least 1"));
    }
    let computers = expand_computers(&args.computers)?;
    let throttle = Arc::new(Semaphore::new(args.throttle));
    let progress = Progress::new("creating sessions", computers.len());
    let ids = client.reserve_session_ids(computers.len())?;
    let runs = computers.iter().zip(ids).map(|(computer, id)| {
        let (throttle, opts, progress) = (throttle.clone(), &opts, &progress);
        async move {
            let _permit = throttle.acquire().await;
            let result = client.new_session_as(computer, opts, Some(id)).await;
            progress.done(result.is_ok());
            (computer, result)
        }
    });
    let results = futures_util::future::join_all(runs).await;
    progress.finish();
    let mut views = Vec::new();
    let mut failures = report::Failures::new(computers.len(), "computers");
    for (computer, result) in results {
        match result {
            Ok(v) => views.push(v),
            Err(e) => failures.record(computer, anyhow::Error::new(e)),
        }
    }
    print_sessions(&views, json);
    failures.finish()?;
    Ok(0)
}
