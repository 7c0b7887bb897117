//! `linger receive`: what sessions produced while nobody was attached, then what their
//! running commands still produce, to the end.

use std::sync::Arc;

use anyhow::{Context, Result};
use linger::{Client, Entry, Event, JobKind, JobViewState, ReceiveOptions};
use tokio::sync::Mutex;

use super::{parse_buffering, refuse_idle_timeout, resolve};
use crate::cli::ReceiveArgs;
use crate::output::print_jobs;
use crate::report;
use crate::sink::{Mode, Sink};

pub async fn run(client: &Client, args: ReceiveArgs, json: bool) -> Result<i32> {
    refuse_idle_timeout(&args.idle_timeout, "receive")?;
    let opts = ReceiveOptions {
        keep: args.keep,
        buffering: parse_buffering(args.buffering.as_deref())?,
    };
    let entries = resolve(client, &args.targets, "receive").await?;
    if args.out_target.as_deref() == Some("job") {
        return as_jobs(client, &entries, json).await;
    }
    if args.out_target.is_none() && started_here_as_job(client, &entries).await? {
        // The seeds: a command started as a job is received as a job by default.
        return as_jobs(client, &entries, json).await;
    }
    let mode = Mode::pick(json, entries.len());
    let out = Arc::new(Mutex::new(tokio::io::stdout()));
    let err = Arc::new(Mutex::new(tokio::io::stderr()));
    let progress = crate::progress::Progress::new("receiving", entries.len());
    let runs = entries.iter().map(|entry| {
        let mut sink = Sink::new(mode, entry.computer_name.clone(), out.clone(), err.clone());
        let (opts, progress) = (&opts, &progress);
        async move {
            let result = receive_one(client, entry, opts, &mut sink).await;
            progress.done(matches!(result, Ok(0)));
            (entry, result)
        }
    });
    let results = futures_util::future::join_all(runs).await;
    progress.finish();
    if results.len() == 1 {
        let (_, result) = results.into_iter().next().context("nothing to receive")?;
        return result;
    }
    // Sessions that could not be received from make the command fail (with their kind);
    // otherwise the first non-zero status delivered is the exit code.
    let mut first: Option<i32> = None;
    let mut failures = report::Failures::new(results.len(), "sessions");
    for (entry, result) in results {
        match result {
            Ok(0) => {}
            Ok(status) => {
                first.get_or_insert(status);
            }
            Err(e) => failures.record(&entry.name, e),
        }
    }
    failures.finish()?;
    Ok(first.unwrap_or(0))
}

/// Whether every session runs a command this client started as a job.
async fn started_here_as_job(client: &Client, entries: &[Entry]) -> Result<bool> {
    let mine = client.registry().load()?.into_jobs();
    for entry in entries {
        let in_session: Vec<_> = mine
            .iter()
            .filter(|j| j.instance_id == entry.instance_id && j.kind == JobKind::Remote)
            .cloned()
            .collect();
        let running = client
            .refresh_jobs(in_session)
            .await?
            .iter()
            .any(|v| matches!(v.state, JobViewState::Running | JobViewState::Disconnected));
        if !running {
            return Ok(false);
        }
    }
    Ok(!entries.is_empty())
}

/// `--out-target job`: a job per session, shown in the job table.
async fn as_jobs(client: &Client, entries: &[Entry], json: bool) -> Result<i32> {
    let mut jobs = Vec::new();
    for entry in entries {
        let mine = client.registry().load()?.into_jobs();
        // A command this client started as a job is that job; otherwise a job stands for
        // the session's output.
        let existing = client
            .refresh_jobs(
                mine.into_iter()
                    .filter(|j| j.instance_id == entry.instance_id && j.kind == JobKind::Remote)
                    .collect(),
            )
            .await?
            .into_iter()
            .find(|v| matches!(v.state, JobViewState::Running | JobViewState::Disconnected))
            .map(|v| v.job);
        match existing {
            Some(job) => {
                client.connect_session(entry, None, false).await?;
                jobs.push(job);
            }
            None => jobs.push(client.receive_as_job(entry).await?),
        }
    }
    let views = client.refresh_jobs(jobs).await?;
    print_jobs(&views, json);
    Ok(0)
}

/// Streams one session's kept output; returns the status of the last command whose end
/// it delivered (0 when none ended).
async fn receive_one(
    client: &Client,
    entry: &Entry,
    opts: &ReceiveOptions,
    sink: &mut Sink,
) -> Result<i32> {
    let mut stream = client.receive(entry, opts).await?;
    stream.on_notice(|m| crate::say!("linger: {m}"));
    let mut last_status = 0;
    loop {
        let event = match client.note_closed(entry, stream.next().await) {
            Ok(e) => e,
            Err(e) => {
                sink.finish().await?;
                return Err(e.into());
            }
        };
        match event {
            Some(Event::Output { stream, data, .. }) => sink.write(stream, &data).await?,
            Some(Event::Dropped { bytes }) => sink.dropped(bytes).await?,
            Some(Event::Finished { status, .. }) => last_status = status,
            None => break,
        }
    }
    sink.finish().await?;
    if let Some(cmd) = stream.summary().and_then(|s| s.running_command.as_ref()) {
        if opts.keep {
            crate::say!(
                "linger: note: [{}] `{cmd}` is still running; what it wrote so far was shown and kept",
                entry.name
            );
        }
    }
    Ok(last_status)
}
