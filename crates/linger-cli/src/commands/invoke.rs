//! `linger invoke`: one script on one or many targets, output streamed as it comes.

use std::sync::Arc;

use anyhow::{Context, Result};
use linger::{Client, Entry, Event, InvokeOptions, NewOptions, SessionView};
use tokio::io::AsyncReadExt;
use tokio::sync::{watch, Mutex, Semaphore};

use super::{expand_computers, new_options, parse_duration};
use crate::cli::InvokeArgs;
use crate::output::print_sessions;
use crate::progress::Progress;
use crate::report::{self, usage, usage_hint};
use crate::sink::{Mode, Sink};
use crate::stdin::Source;

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Where {
    Session(Entry),
    /// A temporary session on this computer, removed afterwards.
    AdHoc(String),
}

struct Target {
    label: String,
    place: Where,
}

pub async fn run(client: &Client, args: InvokeArgs, json: bool) -> Result<i32> {
    let script = read_script(&args).await?;
    // As ssh: the command reads this standard input, unless it held the script or the
    // command outlives this process.
    let forward = !args.no_stdin
        && (args.file.is_some() || !args.script.is_empty())
        && !args.as_job
        && !args.in_disconnected_session;
    let opts = InvokeOptions {
        args: args.args.clone(),
        wait: parse_duration("--wait", &args.wait)?,
        cancel_timeout: client.options().cancel_timeout,
        disconnected: args.in_disconnected_session,
        as_job: args.as_job,
        stdin: forward,
        // A terminal command's client owns the terminal (raw) while it waits.
        announce_busy: !args.tty,
        ..InvokeOptions::default()
    };
    if args.throttle == 0 {
        return Err(usage("--throttle must be at least 1"));
    }
    let targets = targets(client, &args)?;
    let new_opts = new_options(client, &args.session)?;
    if args.tty && on_terminal(&args, &targets, json)? {
        let target = targets.into_iter().next().context("no target")?;
        return run_on_terminal(client, target, &script, &opts, &new_opts).await;
    }
    if args.in_disconnected_session {
        return start_disconnected(client, targets, &script, &opts, &new_opts, json).await;
    }
    if args.as_job {
        return start_jobs(client, targets, &script, &opts, &new_opts, json).await;
    }
    let mode = Mode::pick(json, targets.len());
    let input = Arc::new(Source::new(targets.len()));

    let (cancel_tx, cancel_rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            crate::say!("linger: stopping the command (Ctrl-C again leaves it running)");
            let _ = cancel_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                crate::say!("linger: left the command running");
                std::process::exit(130);
            }
        }
    });

    let out = Arc::new(Mutex::new(tokio::io::stdout()));
    let err = Arc::new(Mutex::new(tokio::io::stderr()));
    let throttle = Arc::new(Semaphore::new(args.throttle));
    let progress = Progress::new("running", targets.len());
    let several = targets.len() > 1;
    let runs = targets.into_iter().map(|target| {
        let (script, opts, new_opts, progress) = (&script, &opts, &new_opts, &progress);
        let (out, err, throttle, cancel, input) = (
            out.clone(),
            err.clone(),
            throttle.clone(),
            cancel_rx.clone(),
            input.clone(),
        );
        async move {
            let _permit = throttle.acquire().await;
            let mut sink = Sink::new(mode, target.label.clone(), out, err);
            let run = Run {
                script,
                opts,
                new_opts,
                input,
            };
            let result = run_one(client, &target, &run, &mut sink, cancel).await;
            progress.done(matches!(result, Ok(0)));
            // Said now, not once every target is done: a dead computer shows at once.
            crate::report::target_ended(&target.label, &result, json, several);
            (target.label, result)
        }
    });
    let results = futures_util::future::join_all(runs).await;
    progress.finish();

    if results.len() == 1 {
        let (_, result) = results.into_iter().next().context("no target ran")?;
        return result;
    }
    // Computers that could not run the script make the command fail (with their kind);
    // otherwise the first non-zero remote status is the exit code.
    let mut first_status: Option<i32> = None;
    let mut statuses = Vec::new();
    let mut failures = report::Failures::new(results.len(), "targets");
    let total = results.len();
    for (label, result) in results {
        match result {
            Ok(0) => {}
            Ok(status) => {
                first_status.get_or_insert(status);
                statuses.push(format!("[{label}] {status}"));
            }
            Err(e) => failures.record_said(&label, e),
        }
    }
    if !statuses.is_empty() {
        crate::say!(
            "linger: {} of {total} targets exited non-zero: {}",
            statuses.len(),
            statuses.join(", ")
        );
    }
    failures.finish()?;
    Ok(first_status.unwrap_or(0))
}

/// `--in-disconnected-session`: on each computer, a session that keeps running the script
/// with nobody attached; the table shows them Disconnected.
async fn start_disconnected(
    client: &Client,
    targets: Vec<Target>,
    script: &str,
    opts: &InvokeOptions,
    new_opts: &NewOptions,
    json: bool,
) -> Result<i32> {
    let mut entries = Vec::new();
    let mut failures = report::Failures::new(targets.len(), "computers");
    for target in &targets {
        let Where::AdHoc(computer) = &target.place else {
            continue;
        };
        let started = async {
            let entry = client.new_session(computer, new_opts).await?.entry;
            // The stream ends at once: the command's output waits on the server.
            client.invoke(&entry, script, opts).await?;
            Ok::<_, linger::Error>(entry)
        };
        match started.await {
            Ok(entry) => entries.push(entry),
            Err(e) => failures.record(&target.label, anyhow::Error::new(e)),
        }
    }
    let views: Vec<SessionView> = client.refresh(entries).await?;
    print_sessions(&views, json);
    failures.finish()?;
    Ok(0)
}

/// `--as-job`: the command starts in each session and the CLI returns at once with the job
/// table; the output waits on the server for `linger job receive`.
async fn start_jobs(
    client: &Client,
    targets: Vec<Target>,
    script: &str,
    opts: &InvokeOptions,
    new_opts: &NewOptions,
    json: bool,
) -> Result<i32> {
    // Several targets make one parent job with a child job per target (PowerShell's
    // shape); the parent is numbered first, then the children in the order started.
    let parent = match targets.len() {
        1 => None,
        _ => {
            let computers: Vec<String> = targets.iter().map(|t| t.label.clone()).collect();
            Some(client.remember_parent_job(&computers, script)?)
        }
    };
    let mut jobs = Vec::new();
    let mut failures = report::Failures::new(targets.len(), "targets");
    for target in &targets {
        let started = async {
            let entry = match &target.place {
                Where::Session(e) => e.clone(),
                // The job's session is kept: the job lives in it.
                Where::AdHoc(computer) => client.new_session(computer, new_opts).await?.entry,
            };
            client.invoke(&entry, script, opts).await?;
            Ok::<_, linger::Error>(entry)
        };
        match started.await {
            Ok(entry) => jobs.extend(
                client
                    .registry()
                    .load()?
                    .into_jobs()
                    .into_iter()
                    .rev()
                    .find(|j| j.instance_id == entry.instance_id),
            ),
            Err(e) => failures.record(&target.label, anyhow::Error::new(e)),
        }
    }
    let shown = match &parent {
        Some(parent) => client.adopt_children(parent, &jobs)?.into_iter().collect(),
        None => jobs,
    };
    let views = client.refresh_jobs(shown).await?;
    crate::output::print_jobs(&views, json);
    failures.finish()?;
    Ok(0)
}

/// Whether `--tty` gets a terminal: refused where it cannot mean anything, and (as `ssh -t`)
/// left out with a notice when this process has no terminal to lend it.
fn on_terminal(args: &InvokeArgs, targets: &[Target], json: bool) -> Result<bool> {
    if args.as_job || args.in_disconnected_session {
        return Err(usage(
            "--tty is for a command someone types into: not with --as-job or --in-disconnected-session",
        ));
    }
    if targets.len() != 1 {
        return Err(usage_hint(
            "--tty runs a command on one target",
            "to run it on several, leave out --tty (their outputs are prefixed [computer])",
        ));
    }
    if args.script.is_empty() && args.file.is_none() {
        return Err(usage(
            "--tty needs the script after -- or with --file (standard input is the keyboard)",
        ));
    }
    if json || !crate::terminal::is_interactive() {
        crate::say!(
            "linger: no terminal for the command: this one's standard input and output are not both a terminal{}",
            if json { " (or --json was given)" } else { "" }
        );
        return Ok(false);
    }
    Ok(true)
}

/// `--tty`: one command on a terminal of its own, this terminal raw meanwhile.
async fn run_on_terminal(
    client: &Client,
    target: Target,
    script: &str,
    opts: &InvokeOptions,
    new_opts: &NewOptions,
) -> Result<i32> {
    use crate::terminal::Ended;
    let (entry, temporary) = match target.place {
        Where::Session(e) => (e, false),
        Where::AdHoc(computer) => (client.new_session(&computer, new_opts).await?.entry, true),
    };
    let ended = crate::terminal::run(client, &entry, script, opts).await;
    let keep = !matches!(ended, Ok(Ended::Finished(_)) | Err(_));
    if temporary && !keep {
        super::remove_temporary(client, &entry).await?;
    }
    match ended? {
        Ended::Finished(status) => Ok(status),
        Ended::Detached => {
            crate::say!(
                "linger: detached; the command goes on running in session {} (`linger receive {}` gets its output)",
                entry.name,
                entry.name
            );
            Ok(0)
        }
        Ended::Signalled(code) => Ok(code),
    }
}

async fn read_script(args: &InvokeArgs) -> Result<String> {
    match (&args.file, args.script.is_empty()) {
        (Some(_), false) => Err(usage("give the script after -- or with --file, not both")),
        (Some(path), true) => std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read the script {}: {e}", path.display()))),
        (None, false) => Ok(args.script.join(" ")),
        (None, true) => {
            let mut text = String::new();
            tokio::io::stdin()
                .read_to_string(&mut text)
                .await
                .map_err(|e| usage(format!("cannot read the script from standard input: {e}")))?;
            Ok(text)
        }
    }
}

fn targets(client: &Client, args: &InvokeArgs) -> Result<Vec<Target>> {
    match (args.selectors.is_empty(), args.computer.is_empty()) {
        (true, true) => Err(usage_hint(
            "say where to run the script",
            "name sessions (Id, Name or InstanceId), or use --computer for a temporary session",
        )),
        (false, false) => Err(usage("give either sessions (SEL) or --computer, not both")),
        (_, _) if args.as_job && args.in_disconnected_session => Err(usage(
            "--as-job and --in-disconnected-session do not go together",
        )),
        (false, true) if args.in_disconnected_session => Err(usage_hint(
            "--in-disconnected-session creates its sessions: use it with --computer",
            "to leave an existing session running a command, invoke it and then `linger disconnect` it",
        )),
        (false, true) => {
            let s = &args.session;
            if s.name.is_some()
                || s.configuration.is_some()
                || s.idle_timeout.is_some()
                || s.buffering.is_some()
            {
                return Err(usage(
                    "--name, --configuration, --idle-timeout and --buffering apply only when invoke creates sessions (--computer)",
                ));
            }
            let selected = client.select(&args.selectors).map_err(|e| {
                // `invoke s echo hi`: the script was read as more sessions.
                match (&e, args.script.is_empty() && args.file.is_none()) {
                    (linger::Error::NoMatch(sel), true)
                        if args.selectors.first() != Some(sel) =>
                    {
                        missing_dashes(&args.selectors, sel)
                    }
                    _ => anyhow::Error::new(e),
                }
            })?;
            Ok(selected
                .into_iter()
                .map(|e| Target {
                    label: e.computer_name.clone(),
                    place: Where::Session(e),
                })
                .collect())
        }
        (true, false) => Ok(expand_computers(&args.computer)?
            .into_iter()
            .map(|c| Target {
                label: linger::display_computer(&c),
                place: Where::AdHoc(c),
            })
            .collect()),
    }
}

/// `invoke s echo hi`: what looks like the script was taken for sessions.
fn missing_dashes(selectors: &[String], unmatched: &str) -> anyhow::Error {
    let at = selectors
        .iter()
        .position(|s| s == unmatched)
        .unwrap_or(selectors.len());
    let (sessions, script) = selectors.split_at(at);
    usage_hint(
        format!("no session matches '{unmatched}'"),
        format!(
            "put `--` before the script: `linger invoke {} -- {}`",
            sessions.join(" "),
            script.join(" ")
        ),
    )
}

/// What every target of one streaming invoke runs.
struct Run<'a> {
    script: &'a str,
    opts: &'a InvokeOptions,
    new_opts: &'a NewOptions,
    input: Arc<Source>,
}

async fn run_one(
    client: &Client,
    target: &Target,
    run: &Run<'_>,
    sink: &mut Sink,
    cancel: watch::Receiver<bool>,
) -> Result<i32> {
    let (entry, temporary) = match &target.place {
        Where::Session(e) => (e.clone(), false),
        Where::AdHoc(computer) => (
            client.new_session(computer, run.new_opts).await?.entry,
            true,
        ),
    };
    let result = stream(client, &entry, run, sink, cancel).await;
    if temporary {
        super::remove_temporary(client, &entry).await?;
    }
    result
}

async fn stream(
    client: &Client,
    entry: &Entry,
    run: &Run<'_>,
    sink: &mut Sink,
    cancel: watch::Receiver<bool>,
) -> Result<i32> {
    let started = client.invoke(entry, run.script, run.opts).await?;
    // Ends with the command: its input closes then, and so does the feed.
    let _feed = started.input().map(|input| {
        let source = run.input.clone();
        AbortOnDrop(tokio::spawn(async move { source.feed(input).await }))
    });
    let mut cmd = super::Interruptible::new(started, cancel)?;
    loop {
        match cmd.next().await? {
            Some(Event::Output { stream, data, .. }) => sink.write(stream, &data).await?,
            Some(Event::Dropped { bytes }) => sink.dropped(bytes).await?,
            Some(Event::Finished { status, .. }) => {
                sink.finish().await?;
                return Ok(status);
            }
            None => {
                sink.finish().await?;
                anyhow::bail!(linger::Error::ConnectionLost {
                    computer: entry.computer_name.clone()
                });
            }
        }
    }
}
