//! `linger job …`: the client's job table (commands run with `invoke --as-job`) and the
//! background jobs inside sessions (`job start`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use linger::{Client, Event, InvokeOptions, JobEntry, JobView, JobViewState};
use tokio::sync::Mutex;

use super::parse_duration;
use crate::cli::{JobCommand, JobIdArgs, JobListArgs, JobReceiveArgs, JobStartArgs, JobWaitArgs};
use crate::output::print_jobs;
use crate::report::usage;
use crate::sink::{Mode, Sink};

/// How often `wait` and `stop` look at a job's state.
const POLL: Duration = Duration::from_millis(100);

pub async fn run(client: &Client, cmd: JobCommand, json: bool) -> Result<i32> {
    match cmd {
        JobCommand::List(args) => list(client, args, json).await,
        JobCommand::Receive(args) => receive(client, args, json).await,
        JobCommand::Wait(args) => wait(client, args, json).await,
        JobCommand::Stop(args) => stop(client, args, json).await,
        JobCommand::Remove(args) => remove(client, args).await,
        JobCommand::Start(args) => start(client, args, json).await,
    }
}

fn find(client: &Client, sel: &str) -> Result<JobEntry> {
    Ok(client.registry().load()?.select_job(sel)?)
}

async fn view(client: &Client, job: &JobEntry) -> Result<JobView> {
    let mut views = client.refresh_jobs(vec![job.clone()]).await?;
    views
        .pop()
        .ok_or_else(|| anyhow::anyhow!("job {} vanished from the job table", job.name))
}

async fn list(client: &Client, args: JobListArgs, json: bool) -> Result<i32> {
    let views = if args.selectors.is_empty() {
        let jobs = client.registry().load()?.into_jobs();
        client.refresh_jobs(jobs).await?
    } else {
        let entries = client.select(&args.selectors)?;
        client.session_job_views(&entries).await?
    };
    print_jobs(&views, json);
    Ok(0)
}

async fn receive(client: &Client, args: JobReceiveArgs, json: bool) -> Result<i32> {
    let job = find(client, &args.job)?;
    let mut stream = client.receive_job(&job, args.keep).await?;
    stream.on_notice(|m| crate::say!("linger: {m}"));
    let mut sink = Sink::new(
        Mode::pick(json, 1),
        job.computer_name.clone(),
        Arc::new(Mutex::new(tokio::io::stdout())),
        Arc::new(Mutex::new(tokio::io::stderr())),
    );
    let mut status = 0;
    while let Some(event) = stream.next().await? {
        match event {
            Event::Output { stream, data, .. } => sink.write(stream, &data).await?,
            Event::Dropped { bytes } => sink.dropped(bytes).await?,
            Event::Finished { status: s, .. } => status = s,
        }
    }
    sink.finish().await?;
    Ok(status)
}

async fn wait(client: &Client, args: JobWaitArgs, json: bool) -> Result<i32> {
    let job = find(client, &args.job)?;
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| parse_duration("--timeout", t))
        .transpose()?;
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        let v = view(client, &job).await?;
        let over = match v.state {
            JobViewState::Running | JobViewState::NotStarted => false,
            // The seeds' Wait-Job: a disconnected session ends the wait unless --force.
            JobViewState::Disconnected => !args.force,
            JobViewState::Completed | JobViewState::Failed | JobViewState::Stopped => true,
        };
        if over {
            print_jobs(&[v], json);
            return Ok(0);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Err(linger::Error::Timeout(format!(
                "job {} is still {} after {}",
                job.name,
                v.state.as_str(),
                args.timeout.unwrap_or_default()
            ))
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn stop(client: &Client, args: JobIdArgs, json: bool) -> Result<i32> {
    let job = find(client, &args.job)?;
    client.stop_job(&job).await?;
    // The stop takes a moment (SIGTERM, then SIGKILL): show the job once it has ended.
    let mut v = view(client, &job).await?;
    for _ in 0..100 {
        if !matches!(v.state, JobViewState::Running | JobViewState::Disconnected) {
            break;
        }
        tokio::time::sleep(POLL).await;
        v = view(client, &job).await?;
    }
    print_jobs(&[v], json);
    Ok(0)
}

async fn remove(client: &Client, args: JobIdArgs) -> Result<i32> {
    let job = find(client, &args.job)?;
    client.remove_job(&job).await?;
    Ok(0)
}

async fn start(client: &Client, args: JobStartArgs, json: bool) -> Result<i32> {
    let entries = client.select(std::slice::from_ref(&args.selector))?;
    let [entry] = entries.as_slice() else {
        return Err(usage(format!(
            "'{}' names {} sessions; a job starts in one",
            args.selector,
            entries.len()
        )));
    };
    let opts = InvokeOptions {
        args: args.args.clone(),
        cancel_timeout: client.options().cancel_timeout,
        ..InvokeOptions::default()
    };
    let (job, mut launch) = client
        .start_job(entry, &args.script.join(" "), &opts)
        .await?;
    // The launch itself prints nothing unless it failed.
    let mut status = 0;
    while let Some(event) = launch.next().await? {
        match event {
            Event::Output { data, .. } => {
                use std::io::Write;
                // The launch's own output, passed through as the command wrote it.
                let _ = std::io::stderr().write_all(&data);
            }
            Event::Finished { status: s, .. } => status = s,
            Event::Dropped { .. } => {}
        }
    }
    if status != 0 {
        anyhow::bail!("the background job could not be started (status {status})");
    }
    let v = view(client, &job).await?;
    print_jobs(&[v], json);
    Ok(0)
}
