//! One module per subcommand; each returns the process exit code.

mod attach;
mod config;
mod copy;
mod enter;
mod get;
mod invoke;
mod job;
mod new;
mod option;
mod receive;
mod remove;
mod watch;

use anyhow::{Context, Result};
use linger::{BufferingMode, Client, Entry, NewOptions};

use crate::cli::{Cli, Command, OptionCommand, SessionFilter, SessionFlags, Targets};
use crate::report::{usage, usage_hint};

pub async fn run(cli: Cli) -> Result<i32> {
    // These need no client home and no daemon.
    match &cli.command {
        Command::Completions { shell } => {
            crate::complete::registration(*shell, &mut std::io::stdout().lock())
                .context("cannot write the completion script")?;
            return Ok(0);
        }
        Command::Manpage { dir } => {
            let written = crate::complete::write_manpages(dir)
                .with_context(|| format!("cannot write manual pages into {}", dir.display()))?;
            if !cli.json {
                println!(
                    "wrote {} manual pages into {}",
                    written.len(),
                    dir.display()
                );
            }
            return Ok(0);
        }
        _ => {}
    }
    let mut client = Client::from_env()?;
    client.on_notice(|m| crate::say!("linger: {m}"));
    client.options_mut().apply_command_line(&cli.options)?;
    if let Some(file) = &cli.identity {
        let options = client.options_mut();
        // Absolute, because the session remembers it for commands run from elsewhere.
        options.identity_file = Some(std::path::absolute(file).unwrap_or_else(|_| file.clone()));
        options
            .sources
            .insert("identity_file".into(), linger::OptionSource::Flag);
    }
    match cli.command {
        Command::New(args) => new::run(&client, args, cli.json).await,
        Command::Get(args) => get::run(&client, args, cli.json).await,
        Command::Remove(args) => remove::run(&client, args, cli.json).await,
        Command::Invoke(args) => invoke::run(&client, args, cli.json).await,
        Command::Disconnect(args) => attach::disconnect(&client, args, cli.json).await,
        Command::Connect(args) => attach::connect(&client, args, cli.json).await,
        Command::Receive(args) => receive::run(&client, args, cli.json).await,
        Command::Watch(args) => watch::run(&client, args, cli.json).await,
        Command::Copy(args) => copy::run(&client, args, cli.json).await,
        Command::Enter(_) if cli.json => Err(usage_hint(
            "`enter` is interactive: --json does not apply to it",
            "for records, run the lines with `linger --json invoke SEL -- …`",
        )),
        Command::Enter(args) => enter::run(&client, args).await,
        Command::Job(cmd) => job::run(&client, cmd, cli.json).await,
        Command::Config(cmd) => config::run(&client, cmd, cli.json).await,
        Command::Option(OptionCommand::Show) => {
            option::show(&client, cli.json);
            Ok(0)
        }
        Command::Completions { .. } | Command::Manpage { .. } => Ok(0),
    }
}

pub fn parse_buffering(v: Option<&str>) -> Result<Option<BufferingMode>> {
    v.map(|v| {
        v.parse::<BufferingMode>()
            .map_err(|e| usage(format!("--buffering: {e}")))
    })
    .transpose()
}

/// Refuses `--idle-timeout` where the seeds do not allow changing it.
pub fn refuse_idle_timeout(given: &Option<String>, verb: &str) -> Result<()> {
    match given {
        None => Ok(()),
        Some(_) => Err(usage_hint(
            format!("--idle-timeout cannot be changed by `{verb}`"),
            "a session's idle timeout is set when it is created (`linger new --idle-timeout`) or disconnected (`linger disconnect --idle-timeout`)",
        )),
    }
}

/// The sessions a command acts on: SELs from this client's registry, or, with --computer,
/// the sessions there that --name, --id or --instance-id pick (new ones join the registry).
pub async fn resolve(client: &Client, t: &Targets, verb: &str) -> Result<Vec<Entry>> {
    if t.computer.is_empty() {
        if t.selectors.is_empty() {
            return Err(usage_hint(
                format!("name the sessions to {verb}"),
                format!("`linger {verb} SEL…`, or --computer C with --name, --id or --instance-id"),
            ));
        }
        return Ok(client.select(&t.selectors)?);
    }
    if !t.selectors.is_empty() {
        return Err(usage("give either SEL or --computer, not both"));
    }
    let filter = Filter::new(&t.filter)?;
    if filter.is_empty() {
        return Err(usage(
            "with --computer, say which session: --name, --id or --instance-id",
        ));
    }
    let mut found = Vec::new();
    for computer in expand_computers(&t.computer)? {
        for v in client.get_remote(&computer).await? {
            if filter.matches(&v.entry) {
                found.push(v.entry);
            }
        }
    }
    if found.is_empty() {
        let f = &t.filter;
        let what = f
            .name
            .clone()
            .or(f.instance_id.clone())
            .or(f.id.map(|i| i.to_string()));
        return Err(linger::Error::NoRemoteMatch {
            what: what.unwrap_or_default(),
            computers: t.computer.join(","),
        }
        .into());
    }
    Ok(found)
}

/// Removes a temporary session (`--computer` without a session) and forgets it. A failed
/// removal is a warning (the session ends with its idle timeout anyway); a registry that
/// cannot be written is the error.
pub async fn remove_temporary(client: &Client, entry: &Entry) -> Result<()> {
    if let Err(e) = client.remove(entry).await {
        crate::say!(
            "linger: warning: could not remove the temporary session {}: {e}",
            entry.name
        );
    }
    let forget = entry.instance_id;
    client.registry().update(|s| {
        s.forget(forget);
        Ok(())
    })?;
    Ok(())
}

pub fn parse_duration(flag: &str, v: &str) -> Result<std::time::Duration> {
    linger_proto::text::parse_duration(v).map_err(|e| usage(format!("{flag}: {e}")))
}

/// The options a session is created with: the flags, else the client's options file,
/// else (left unset) the server's session configuration.
pub fn new_options(client: &Client, flags: &SessionFlags) -> Result<NewOptions> {
    let defaults = client.options();
    Ok(NewOptions {
        name: flags.name.clone(),
        configuration: flags.configuration.clone(),
        idle_timeout: flags
            .idle_timeout
            .as_deref()
            .map(|v| parse_duration("--idle-timeout", v))
            .transpose()?
            .or(defaults.idle_timeout),
        buffering: parse_buffering(flags.buffering.as_deref())?.or(defaults.output_buffering),
        // This shell's locale and terminal type, as ssh's SendEnv.
        environment: None,
    })
}

/// Computer lists: comma-separated (clap splits those) and `@FILE` with one per line.
pub fn expand_computers(list: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for item in list {
        let item = item.trim();
        if let Some(path) = item.strip_prefix('@') {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("cannot read the computer list {path}: {e}")))?;
            out.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        } else if !item.is_empty() {
            out.push(item.to_string());
        }
    }
    Ok(out)
}

/// A [`SessionFilter`] with its pattern and id parsed.
pub struct Filter {
    name: Option<glob::Pattern>,
    id: Option<u32>,
    instance_id: Option<uuid::Uuid>,
}

impl Filter {
    pub fn new(f: &SessionFilter) -> Result<Filter> {
        Ok(Filter {
            name: f
                .name
                .as_deref()
                .map(glob::Pattern::new)
                .transpose()
                .map_err(|e| usage(format!("--name: {e}")))?,
            id: f.id,
            instance_id: f
                .instance_id
                .as_deref()
                .map(uuid::Uuid::parse_str)
                .transpose()
                .map_err(|e| usage(format!("--instance-id: {e}")))?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.id.is_none() && self.instance_id.is_none()
    }

    pub fn matches(&self, e: &Entry) -> bool {
        self.name.as_ref().is_none_or(|p| p.matches(&e.name))
            && self.id.is_none_or(|i| e.id == i)
            && self.instance_id.is_none_or(|g| e.instance_id == g)
    }
}

/// A command's stream followed while Ctrl-C may come: Ctrl-C (the watched flag turning
/// true, also before the command started) cancels the command once, and the stream goes on
/// to the command's end. Connection notices go to stderr.
pub struct Interruptible {
    cmd: linger::CommandStream,
    cancel: tokio::sync::watch::Receiver<bool>,
    cancelled: bool,
}

impl Interruptible {
    pub fn new(
        mut cmd: linger::CommandStream,
        cancel: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Interruptible> {
        cmd.on_notice(|m| crate::say!("linger: {m}"));
        let cancelled = *cancel.borrow();
        if cancelled {
            cmd.cancel()?;
        }
        Ok(Interruptible {
            cmd,
            cancel,
            cancelled,
        })
    }

    pub async fn next(&mut self) -> Result<Option<linger::Event>> {
        loop {
            tokio::select! {
                event = self.cmd.next() => return Ok(event?),
                changed = self.cancel.changed(), if !self.cancelled => {
                    if changed.is_ok() && *self.cancel.borrow() {
                        self.cancelled = true;
                        self.cmd.cancel()?;
                    }
                }
            }
        }
    }
}
