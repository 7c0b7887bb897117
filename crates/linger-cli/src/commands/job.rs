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
        // As Get-Job: a parent job's children are shown through it.
        let table = client.registry().load()?;
        let jobs: Vec<JobEntry> = table
            .jobs()
            .iter()
            .filter(|j| !table.has_parent(j))
            .cloned()
            .collect();
        client.refresh_jobs(jobs).await?
    } else {
        let entries = client.select(&args.selectors)?;
        client.session_job_views(&entries).await?
    };
    print_jobs(&views, json);
    Ok(0)
}

/// The jobs `sels` name, parents replaced by their children; and whether the output needs
/// `[computer] ` prefixes (several jobs, or a parent's).
fn expand(client: &Client, sels: &[String]) -> Result<(Vec<JobEntry>, bool)> {
    let named = client.registry().load()?.select_jobs(sels)?;
    let prefixed = named.len() > 1 || named.iter().any(JobEntry::is_parent);
    let mut jobs: Vec<JobEntry> = Vec::new();
    for job in &named {
        for child in client.expand_job(job)? {
            if !jobs.iter().any(|j| j.job_id == child.job_id) {
                jobs.push(child);
            }
        }
    }
    Ok((jobs, prefixed))
}

async fn receive(client: &Client, args: JobReceiveArgs, json: bool) -> Result<i32> {
    let (jobs, prefixed) = expand(client, &args.jobs)?;
    if !prefixed {
        if let [job] = jobs.as_slice() {
            return receive_one(client, job, &args, Mode::pick(json, 1), &Out::default()).await;
        }
    }
    // Each child's output as it comes, side by side, as a fan-out's.
    let mode = if json { Mode::Json } else { Mode::Prefixed };
    let mut failures = crate::report::Failures::new(jobs.len(), "jobs");
    let out = Out::default();
    let progress = crate::progress::Progress::new("receiving", jobs.len());
    let results = futures_util::future::join_all(jobs.iter().map(|job| async {
        let result = receive_one(client, job, &args, mode, &out).await;
        progress.done(matches!(result, Ok(0)));
        result
    }))
    .await;
    progress.finish();
    for (job, result) in jobs.iter().zip(results) {
        if let Err(e) = result {
            failures.record(&format!("{} ({})", job.name, job.computer_name), e);
        }
    }
    failures.finish()?;
    Ok(0)
}

/// This process's stdout and stderr, shared by the jobs received at once so that their
/// lines never interleave.
#[derive(Clone)]
struct Out {
    stdout: Arc<Mutex<tokio::io::Stdout>>,
    stderr: Arc<Mutex<tokio::io::Stderr>>,
}

impl Default for Out {
    fn default() -> Self {
        Out {
            stdout: Arc::new(Mutex::new(tokio::io::stdout())),
            stderr: Arc::new(Mutex::new(tokio::io::stderr())),
        }
    }
}

async fn receive_one(
    client: &Client,
    job: &JobEntry,
    args: &JobReceiveArgs,
    mode: Mode,
    out: &Out,
) -> Result<i32> {
    let mut stream = client.receive_job(job, args.keep, args.wait).await?;
    stream.on_notice(|m| crate::say!("linger: {m}"));
    let mut sink = Sink::new(
        mode,
        job.computer_name.clone(),
        out.stdout.clone(),
        out.stderr.clone(),
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
        // A parent's state is its children's (JobView::parent), so it ends when they all have.
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
    let children = client.expand_job(&job)?;
    let mut failures = crate::report::Failures::new(children.len(), "jobs");
    for child in &children {
        if let Err(e) = client.stop_job(child).await {
            failures.record(
                &format!("{} ({})", child.name, child.computer_name),
                e.into(),
            );
        }
    }
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
    failures.finish()?;
    Ok(0)
}

async fn remove(client: &Client, args: JobIdArgs) -> Result<i32> {
    let job = find(client, &args.job)?;
    if !job.is_parent() {
        client.remove_job(&job).await?;
        return Ok(0);
    }
    let children = client.expand_job(&job)?;
    let mut failures = crate::report::Failures::new(children.len(), "jobs");
    let mut left = Vec::new();
    for child in children {
        if let Err(e) = client.remove_job(&child).await {
            failures.record(
                &format!("{} ({})", child.name, child.computer_name),
                e.into(),
            );
            left.push(child);
        }
    }
    // The parent goes with its last child.
    client.adopt_children(&job, &left)?;
    failures.finish()?;
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
