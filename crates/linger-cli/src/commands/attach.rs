//! `linger disconnect` and `linger connect`: attachment, with the session table as answer.

use anyhow::Result;
use linger::{Client, DisconnectOptions, Entry, SessionView};

use super::{parse_buffering, parse_duration, refuse_idle_timeout, resolve};
use crate::cli::{ConnectArgs, DisconnectArgs};
use crate::output::print_sessions;
use crate::report;

pub async fn disconnect(client: &Client, args: DisconnectArgs, json: bool) -> Result<i32> {
    let opts = DisconnectOptions {
        idle_timeout: args
            .idle_timeout
            .as_deref()
            .map(|v| parse_duration("--idle-timeout", v))
            .transpose()?,
        buffering: parse_buffering(args.buffering.as_deref())?,
    };
    let entries = resolve(client, &args.targets, "disconnect").await?;
    each(&entries, json, |e| client.disconnect(e, &opts)).await
}

pub async fn connect(client: &Client, args: ConnectArgs, json: bool) -> Result<i32> {
    refuse_idle_timeout(&args.idle_timeout, "connect")?;
    let buffering = parse_buffering(args.buffering.as_deref())?;
    let entries = resolve(client, &args.targets, "connect").await?;
    each(&entries, json, |e| {
        client.connect_session(e, buffering, args.force)
    })
    .await
}

/// Applies `op` to every session, prints the table of those it succeeded on, and reports
/// failures one line each.
async fn each<'a, F, Fut>(entries: &'a [Entry], json: bool, op: F) -> Result<i32>
where
    F: Fn(&'a Entry) -> Fut,
    Fut: std::future::Future<Output = linger::Result<SessionView>>,
{
    let mut views = Vec::new();
    let mut failures = report::Failures::new(entries.len(), "sessions");
    for entry in entries {
        match op(entry).await {
            Ok(v) => views.push(v),
            Err(e) => failures.record(&entry.name, anyhow::Error::new(e)),
        }
    }
    print_sessions(&views, json);
    failures.finish()?;
    Ok(0)
}
