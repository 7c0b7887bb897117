//! `linger enter`: an interactive session. Each command typed runs in the session as one
//! invoke, so it shares the session's state with `linger invoke`; the prompt is
//! `[computer]: cwd$ `, with line editing and a per-session history kept on this client.
//!
//! On a terminal: a line bash would continue (an open quote, `if` without `fi`…) continues
//! under `> `; Ctrl-C at the prompt discards the line, and while a command runs it stops that
//! command (never the interactive session); Ctrl-D on an empty line and `exit` leave, the
//! session staying Opened (one made by `--computer` is removed); `~.` at the start of a line
//! detaches at once, a running command going on running, as ssh's escape does.
//!
//! With standard input not a terminal, lines are read from it and run in turn, without
//! prompts, and `enter` ends at the end of input with the last command's status.

mod syntax;
mod watch;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use linger::{
    Client, CommandStream, DisconnectOptions, Entry, Event, InvokeOptions, Kind, ReceiveOptions,
    SessionView, StreamKind,
};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{
    Cmd, ConditionalEventHandler, Config, EventContext, EventHandler, KeyEvent, RepeatCount,
};
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{watch as channel, Mutex};

use super::new_options;
use crate::cli::EnterArgs;
use crate::report::{self, usage, usage_hint};
use crate::sink::{Mode, Sink};
use syntax::Exit;
use watch::{Key, Tty, Typed, Watcher};

/// How long the prompt's question waits for the session to be free.
const CWD_WAIT: Duration = Duration::from_secs(2);
/// Asks the session for its working directory and home, for the prompt. It hands the
/// previous command's status on (`return`), so `$?` in the next line is that of the line
/// before, as at a prompt.
const CWD_SCRIPT: &str = r#"set -- "$?"; builtin printf '%s\0%s' "$PWD" "${HOME-}"; return "$1""#;

/// How many commands a session's history keeps.
const HISTORY_SIZE: usize = 1000;

type Editor = rustyline::Editor<(), DefaultHistory>;

pub async fn run(client: &Client, args: EnterArgs) -> Result<i32> {
    let (entry, temporary) = target(client, &args).await?;
    let result = enter(client, &entry, !args.no_tty).await;
    let detached = matches!(result, Ok(Leave::Detached { .. }));
    if temporary && !detached {
        remove_temporary(client, &entry).await;
    }
    match result? {
        Leave::Exit(code) => Ok(code),
        Leave::Detached { running } => {
            let name = &entry.name;
            let kept = if temporary {
                " (the temporary session is kept)"
            } else {
                ""
            };
            match running {
                Some(cmd) => crate::say!(
                    "linger: detached from {name}{kept}; `{cmd}` keeps running there: `linger receive {name}` gets its output, `linger enter {name}` goes back"
                ),
                None => crate::say!(
                    "linger: detached from {name}{kept}: `linger enter {name}` goes back, `linger receive {name}` gets what it runs meanwhile"
                ),
            }
            Ok(0)
        }
    }
}

/// How the interactive session ended.
enum Leave {
    /// `exit`, Ctrl-D, the end of input, or a signal: the session stays attached (a
    /// temporary one is removed).
    Exit(i32),
    /// `~.`: the session was disconnected.
    Detached { running: Option<String> },
}

/// The session to enter, and whether it is a temporary one made for this.
async fn target(client: &Client, args: &EnterArgs) -> Result<(Entry, bool)> {
    match (&args.selector, &args.computer) {
        (None, None) => Err(usage_hint(
            "say which session to enter",
            "`linger enter SEL` (Id, Name or InstanceId), or `linger enter --computer C` for a temporary session",
        )),
        (Some(_), Some(_)) => Err(usage("give either SEL or --computer, not both")),
        (Some(sel), None) => {
            let s = &args.session;
            if s.name.is_some()
                || s.configuration.is_some()
                || s.idle_timeout.is_some()
                || s.buffering.is_some()
            {
                return Err(usage(
                    "--name, --configuration, --idle-timeout and --buffering apply only when enter creates a session (--computer)",
                ));
            }
            let mut found = client.select(std::slice::from_ref(sel))?;
            if found.len() > 1 {
                return Err(usage_hint(
                    format!("'{sel}' matches {} sessions", found.len()),
                    "enter one session: name it by Id or InstanceId",
                ));
            }
            let entry = found.pop().ok_or_else(|| linger::Error::NoMatch(sel.clone()))?;
            Ok((entry, false))
        }
        (None, Some(computer)) => {
            let opts = new_options(client, &args.session)?;
            let view = client.new_session(computer, &opts).await?;
            Ok((view.entry, true))
        }
    }
}

/// Enters the session and works in it until leaving; the session is marked entered by this
/// process (so `linger disconnect` elsewhere is refused) until then.
async fn enter(client: &Client, entry: &Entry, terminals: bool) -> Result<Leave> {
    let (guard, view) = client.begin_enter(entry).await?;
    let opts = InvokeOptions {
        cancel_timeout: client.options().cancel_timeout,
        ..Default::default()
    };
    let leave = match Tty::stdin() {
        Some(tty) => {
            let mut repl = Repl::new(client, entry, opts, tty)?;
            repl.terminals = terminals && crate::terminal::is_interactive();
            let leave = repl.run(&view).await;
            repl.finish();
            leave
        }
        None => batch(client, entry, &opts).await,
    };
    drop(guard);
    leave
}

async fn remove_temporary(client: &Client, entry: &Entry) {
    if let Err(e) = super::remove_temporary(client, entry).await {
        crate::say!("linger: warning: could not forget the temporary session: {e}");
    }
    let _ = std::fs::remove_file(history_file(client, entry));
}

fn history_file(client: &Client, entry: &Entry) -> PathBuf {
    client
        .home()
        .state_dir
        .join("history")
        .join(entry.instance_id.to_string())
}

/// Lines typed ahead and not run yet when `~.` detached: the next `enter` of the session
/// (from this client home) runs them, as SPEC §5 keeps type-ahead across `~.`.
fn typeahead_file(client: &Client, entry: &Entry) -> PathBuf {
    client
        .home()
        .state_dir
        .join("history")
        .join(format!("{}.typeahead", entry.instance_id))
}

/// Whether an error ends the interactive session (else it is shown and the next command
/// is read).
fn fatal(e: &linger::Error) -> bool {
    matches!(
        e.kind(),
        Kind::NotFound | Kind::Connection | Kind::Auth | Kind::Disconnected
    )
}

/// Commands' output, as it comes: stdout to stdout, stderr to stderr.
struct Out {
    sink: Sink,
    /// The last byte shown ended a line.
    fresh: bool,
}

impl Out {
    fn new() -> Out {
        Out {
            sink: Sink::new(
                Mode::Raw,
                String::new(),
                Arc::new(Mutex::new(tokio::io::stdout())),
                Arc::new(Mutex::new(tokio::io::stderr())),
            ),
            fresh: true,
        }
    }

    async fn write(&mut self, stream: StreamKind, data: &[u8]) -> Result<()> {
        if let Some(&last) = data.last() {
            self.sink.write(stream, data).await?;
            self.fresh = last == b'\n';
        }
        Ok(())
    }

    /// Output and drop notices; a command's end is the caller's.
    async fn show(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Output { stream, data, .. } => self.write(stream, &data).await,
            Event::Dropped { bytes } => {
                self.fresh_line().await?;
                self.sink.dropped(bytes).await?;
                self.fresh = true;
                Ok(())
            }
            Event::Finished { .. } => Ok(()),
        }
    }

    /// Ends an incomplete last line, so that a prompt or a note starts a line of its own.
    async fn fresh_line(&mut self) -> Result<()> {
        if !self.fresh {
            self.write(StreamKind::Stdout, b"\n").await?;
        }
        Ok(())
    }

    async fn note(&mut self, text: &str) -> Result<()> {
        self.fresh_line().await?;
        self.write(StreamKind::Stderr, format!("{text}\n").as_bytes())
            .await
    }
}

/// The lines of standard input, run in turn (no terminal: no prompt, no line editing).
async fn batch(client: &Client, entry: &Entry, opts: &InvokeOptions) -> Result<Leave> {
    let mut out = Out::new();
    // Ctrl-C stops the running command and then the whole input; a second one leaves at
    // once, the command running on (as `linger invoke` does).
    let (cancel_tx, cancel) = channel::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = cancel_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                crate::say!("linger: left the command running");
                std::process::exit(130);
            }
        }
    });
    let mut input = tokio::io::BufReader::new(tokio::io::stdin());
    let mut text = String::new();
    let mut last = 0;
    loop {
        let mut raw = Vec::new();
        let mut stop = cancel.clone();
        let n = tokio::select! {
            n = input.read_until(b'\n', &mut raw) => n.context("cannot read standard input")?,
            _ = stop.wait_for(|c| *c) => return Ok(Leave::Exit(130)),
        };
        let at_end = n == 0;
        if !at_end {
            if raw.last() == Some(&b'\n') {
                raw.pop();
            }
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&String::from_utf8_lossy(&raw));
            if text.trim().is_empty() {
                text.clear();
                continue;
            }
            if syntax::incomplete(&text).await {
                continue;
            }
        } else if text.trim().is_empty() {
            return Ok(Leave::Exit(last));
        }
        // At the end of input an incomplete command is sent anyway: the session reports it.
        let command = std::mem::take(&mut text);
        let exit = syntax::exit_command(&command);
        if exit == Some(Exit::Bare) {
            return Ok(Leave::Exit(last));
        }
        last = run_batch(client, entry, &command, opts, &mut out, cancel.clone()).await?;
        if exit.is_some() || at_end || *cancel.borrow() {
            return Ok(Leave::Exit(last));
        }
    }
}

async fn run_batch(
    client: &Client,
    entry: &Entry,
    script: &str,
    opts: &InvokeOptions,
    out: &mut Out,
    cancel: channel::Receiver<bool>,
) -> Result<i32> {
    let mut cmd = super::Interruptible::new(client.invoke(entry, script, opts).await?, cancel)?;
    loop {
        match cmd.next().await? {
            Some(Event::Finished { status, .. }) => {
                out.fresh_line().await?;
                return Ok(status);
            }
            Some(event) => out.show(event).await?,
            None => return Err(lost(entry)),
        }
    }
}

fn lost(entry: &Entry) -> anyhow::Error {
    linger::Error::ConnectionLost {
        computer: entry.computer_name.clone(),
    }
    .into()
}

/// What reading a command from the terminal gave.
enum Input {
    /// A complete command (possibly empty: nothing to run).
    Command(String),
    /// Ctrl-D on an empty line, or a signal: leave with this status.
    Leave(i32),
    /// `~.`
    Detach,
}

/// What reading one line gave.
enum Line {
    Text(String),
    /// Ctrl-C: the line is discarded.
    Interrupted,
    /// Ctrl-D on an empty line.
    Eof,
    /// `~.` at the start of the line.
    Escape,
    /// `~?` at the start of the line: list the escapes, then read the line again.
    Help,
    /// SIGTERM or SIGHUP: leave with this status.
    Signal(i32),
}

/// What waiting for a command to start came to.
enum Started {
    Running(Box<CommandStream>),
    /// Withdrawn, detached or signalled before it started.
    Not(Ran),
}

/// How running a command ended.
enum Ran {
    Status(i32),
    /// `~.` was typed meanwhile.
    Detach,
    /// SIGTERM or SIGHUP: leave with this status.
    Signal(i32),
}

/// `~.` (or `~?`) typed at the prompt: ends the line at once, as an interrupt marked as the
/// escape (or as a request for the list of escapes).
struct EscapeKey(Arc<AtomicBool>);

impl ConditionalEventHandler for EscapeKey {
    fn handle(
        &self,
        _evt: &rustyline::Event,
        _n: RepeatCount,
        _positive: bool,
        ctx: &EventContext<'_>,
    ) -> Option<Cmd> {
        if ctx.line() == "~" && ctx.pos() == 1 {
            self.0.store(true, Ordering::SeqCst);
            return Some(Cmd::Interrupt);
        }
        None
    }
}

/// SIGTERM and SIGHUP, which end the interactive session (the terminal put back first).
struct Ending {
    term: Signal,
    hup: Signal,
}

impl Ending {
    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => 128 + SignalKind::terminate().as_raw_value(),
            _ = self.hup.recv() => 128 + SignalKind::hangup().as_raw_value(),
        }
    }
}

/// The interactive session on a terminal.
struct Repl<'a> {
    client: &'a Client,
    entry: &'a Entry,
    opts: InvokeOptions,
    tty: Tty,
    /// Out while a line is being read (it moves to the reading thread).
    editor: Option<Editor>,
    escape: Arc<AtomicBool>,
    /// `~?` was typed at the prompt.
    help: Arc<AtomicBool>,
    history: Option<PathBuf>,
    /// Lines typed ahead while a command ran, to run next.
    typed: VecDeque<String>,
    /// The start of a line typed ahead, to edit at the next prompt.
    partial: String,
    /// The session's working directory and home, as last asked.
    cwd: Option<(String, String)>,
    cwd_stale: bool,
    out: Out,
    ending: Ending,
    /// Each line runs on a terminal of its own (`enter` without `-T`).
    terminals: bool,
}

impl<'a> Repl<'a> {
    fn new(client: &'a Client, entry: &'a Entry, opts: InvokeOptions, tty: Tty) -> Result<Self> {
        // Ctrl-C never ends linger: the line editor reads it as a key at the prompt, and the
        // watcher while a command runs (where it stops the command).
        let ending = Ending {
            term: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("cannot catch SIGHUP")?,
        };
        let config = Config::builder()
            .max_history_size(HISTORY_SIZE)
            .context("history size")?
            .history_ignore_space(true)
            .auto_add_history(false)
            .build();
        let mut editor = Editor::with_config(config).context("cannot start the line editor")?;
        let escape = Arc::new(AtomicBool::new(false));
        editor.bind_sequence(
            KeyEvent::from('.'),
            EventHandler::Conditional(Box::new(EscapeKey(escape.clone()))),
        );
        let help = Arc::new(AtomicBool::new(false));
        editor.bind_sequence(
            KeyEvent::from('?'),
            EventHandler::Conditional(Box::new(EscapeKey(help.clone()))),
        );
        let path = history_file(client, entry);
        let history = match path.parent().map(std::fs::create_dir_all) {
            Some(Ok(())) => {
                let _ = editor.load_history(&path);
                Some(path)
            }
            _ => None,
        };
        Ok(Repl {
            client,
            entry,
            opts,
            tty,
            editor: Some(editor),
            escape,
            help,
            history,
            typed: VecDeque::new(),
            partial: String::new(),
            cwd: None,
            cwd_stale: true,
            out: Out::new(),
            ending,
            terminals: false,
        })
    }

    /// Saves what was typed ahead and not run, for the next `enter` (best effort: losing it
    /// loses typing, not output).
    fn keep_typeahead(&mut self) {
        if self.typed.is_empty() && self.partial.is_empty() {
            return;
        }
        let kept = serde_json::json!({
            "lines": self.typed.iter().collect::<Vec<_>>(),
            "partial": self.partial,
        });
        let path = typeahead_file(self.client, self.entry);
        if let Err(e) = std::fs::write(&path, kept.to_string()) {
            tracing::warn!(
                "cannot keep the lines typed ahead in {}: {e}",
                path.display()
            );
        }
    }

    /// Takes back what an earlier `enter` left typed ahead when it detached.
    fn take_kept_typeahead(&mut self) {
        let path = typeahead_file(self.client, self.entry);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let _ = std::fs::remove_file(&path);
        let Ok(kept) = serde_json::from_str::<serde_json::Value>(&text) else {
            return;
        };
        if let Some(lines) = kept["lines"].as_array() {
            self.typed
                .extend(lines.iter().filter_map(|l| l.as_str()).map(str::to_string));
        }
        if let Some(partial) = kept["partial"].as_str() {
            self.partial = partial.to_string();
        }
    }

    /// Puts the terminal back as it was found.
    fn finish(&mut self) {
        self.tty.restore();
    }

    async fn run(&mut self, view: &SessionView) -> Result<Leave> {
        self.take_kept_typeahead();
        if let Some(info) = &view.info {
            if info.running_command.is_some() || info.pending_output_bytes > 0 {
                if let Some(leave) = self.catch_up(info.running_command.as_deref()).await? {
                    return Ok(leave);
                }
            }
        }
        loop {
            let prompt = self.prompt().await?;
            let text = match self.read_command(&prompt).await? {
                Input::Command(text) => text,
                Input::Leave(code) => return Ok(Leave::Exit(code)),
                Input::Detach => return self.detach().await,
            };
            if text.trim().is_empty() {
                continue;
            }
            self.remember(&text);
            let exit = syntax::exit_command(&text);
            if exit == Some(Exit::Bare) {
                return Ok(Leave::Exit(0));
            }
            self.cwd_stale = true;
            match self.run_command(&text).await {
                Ok(Ran::Status(status)) if exit.is_some() => return Ok(Leave::Exit(status)),
                Ok(Ran::Status(_)) => {}
                Ok(Ran::Detach) => return self.detach().await,
                Ok(Ran::Signal(code)) => return Ok(Leave::Exit(code)),
                Err(e) => self.failed(e).await?,
            }
        }
    }

    /// Shows an error that leaves the session usable; returns the others.
    async fn failed(&mut self, e: anyhow::Error) -> Result<()> {
        let keep_going = e
            .downcast_ref::<linger::Error>()
            .is_some_and(|le| !fatal(le));
        if !keep_going {
            return Err(e);
        }
        self.out
            .note(&format!("linger: error: {}", report::line(&e)))
            .await
    }

    /// Adds a command to the session's history, on disk at once.
    fn remember(&mut self, text: &str) {
        let Some(editor) = self.editor.as_mut() else {
            return;
        };
        if editor.add_history_entry(text).unwrap_or(false) {
            if let Some(path) = &self.history {
                let _ = editor.append_history(path);
            }
        }
    }

    /// `[computer]: cwd$ `, asking the session where it is after each command.
    async fn prompt(&mut self) -> Result<String> {
        if self.cwd_stale || self.cwd.is_none() {
            if let Some(cwd) = self.ask_cwd().await? {
                self.cwd = Some(cwd);
                self.cwd_stale = false;
            }
        }
        let (cwd, home) = self
            .cwd
            .clone()
            .unwrap_or_else(|| ("?".into(), String::new()));
        Ok(syntax::prompt(&self.entry.computer_name, &cwd, &home))
    }

    /// The session's `$PWD` and `$HOME`; `None` when the session stays busy with another
    /// client's command (the prompt keeps the last one).
    async fn ask_cwd(&mut self) -> Result<Option<(String, String)>> {
        let opts = InvokeOptions {
            // Our own last command may not have let go of the session yet (its final
            // acknowledgement in flight): wait a little for that, not for another client.
            wait: CWD_WAIT,
            ..self.opts.clone()
        };
        let mut cmd = match self.client.invoke(self.entry, CWD_SCRIPT, &opts).await {
            Ok(cmd) => cmd,
            Err(e) if e.kind() == Kind::Busy => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mine = cmd.command_id();
        let mut answer = Vec::new();
        loop {
            match cmd.next().await? {
                Some(Event::Output {
                    stream,
                    data,
                    command_id,
                }) if command_id == mine => {
                    // stderr (`set -x` traces) is not shown.
                    if stream == StreamKind::Stdout {
                        answer.extend_from_slice(&data);
                    }
                }
                Some(Event::Finished { .. }) => break,
                // Late output of an earlier command's background processes.
                Some(event) => self.out.show(event).await?,
                None => return Err(lost(self.entry)),
            }
        }
        let answer = String::from_utf8_lossy(&answer);
        let (cwd, home) = answer.split_once('\0').unwrap_or((&answer, ""));
        Ok(Some((cwd.to_string(), home.to_string())))
    }

    /// Reads lines until they make a complete command.
    async fn read_command(&mut self, prompt: &str) -> Result<Input> {
        let mut text = String::new();
        loop {
            let shown = if text.is_empty() { prompt } else { "> " };
            let line = match self.read_line(shown).await? {
                Line::Text(line) => line,
                Line::Interrupted => return Ok(Input::Command(String::new())),
                Line::Eof if text.is_empty() => return Ok(Input::Leave(0)),
                // Ctrl-D inside an incomplete command: the session says what is missing.
                Line::Eof => return Ok(Input::Command(text)),
                Line::Escape => return Ok(Input::Detach),
                Line::Help => {
                    let help = crate::terminal::ESCAPE_HELP.replace("\r\n", "\n");
                    self.out.write(StreamKind::Stderr, help.as_bytes()).await?;
                    continue;
                }
                Line::Signal(code) => return Ok(Input::Leave(code)),
            };
            if line == "~." {
                return Ok(Input::Detach);
            }
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&line);
            if text.trim().is_empty() || !syntax::incomplete(&text).await {
                return Ok(Input::Command(text));
            }
        }
    }

    async fn read_line(&mut self, prompt: &str) -> Result<Line> {
        self.out.fresh_line().await?;
        if let Some(line) = self.typed.pop_front() {
            // Typed ahead while a command ran: shown as if typed at this prompt.
            self.out
                .write(StreamKind::Stdout, format!("{prompt}{line}\n").as_bytes())
                .await?;
            return Ok(Line::Text(line));
        }
        let initial = std::mem::take(&mut self.partial);
        let mut editor = self.editor.take().context("the line editor is gone")?;
        self.escape.store(false, Ordering::SeqCst);
        let prompt = prompt.to_string();
        let reading = tokio::task::spawn_blocking(move || {
            let line = if initial.is_empty() {
                editor.readline(&prompt)
            } else {
                editor.readline_with_initial(&prompt, (&initial, ""))
            };
            (editor, line)
        });
        let (editor, line) = tokio::select! {
            done = reading => done.context("the line editor failed")?,
            code = self.ending.recv() => {
                // The editor's thread is left blocked; the process is about to end.
                self.tty.restore();
                self.out.write(StreamKind::Stdout, b"\x1b[?2004l\n").await?;
                return Ok(Line::Signal(code));
            }
        };
        self.editor = Some(editor);
        self.out.fresh = true;
        match line {
            Ok(line) => Ok(Line::Text(line)),
            Err(ReadlineError::Interrupted) if self.escape.load(Ordering::SeqCst) => {
                Ok(Line::Escape)
            }
            Err(ReadlineError::Interrupted) if self.help.swap(false, Ordering::SeqCst) => {
                Ok(Line::Help)
            }
            Err(ReadlineError::Interrupted) => Ok(Line::Interrupted),
            Err(ReadlineError::Eof) => Ok(Line::Eof),
            Err(e) => Err(anyhow!("cannot read the terminal: {e}")),
        }
    }

    /// Runs one command, its output shown as it comes, the keyboard watched meanwhile.
    async fn run_command(&mut self, text: &str) -> Result<Ran> {
        if self.terminals {
            return self.run_on_terminal(text).await;
        }
        let mut watcher = self.tty.watch().ok();
        let ran = self.drive(text, watcher.as_mut()).await;
        if let Some(w) = watcher {
            let typed = w.stop();
            self.type_ahead(typed);
        }
        ran
    }

    async fn drive(&mut self, text: &str, mut watcher: Option<&mut Watcher>) -> Result<Ran> {
        let opts = self.opts.clone();
        let mut cmd = match self.start(text, &opts, &mut watcher).await? {
            Started::Running(cmd) => *cmd,
            Started::Not(ran) => return Ok(ran),
        };
        let entry = self.entry;
        let mut interrupted = false;
        let canceller = cmd.canceller();
        loop {
            tokio::select! {
                event = cmd.next() => match event? {
                    Some(Event::Finished { status, .. }) => return Ok(Ran::Status(status)),
                    Some(event) => self.out.show(event).await?,
                    None => return Err(lost(entry)),
                },
                key = next_key(&mut watcher) => match key {
                    Key::Interrupt => {
                        canceller.cancel()?;
                        if interrupted {
                            self.out.note("linger: still stopping the command; ~. at the start of a line detaches and leaves it running").await?;
                        }
                        interrupted = true;
                        self.interrupted().await?;
                    }
                    Key::Detach => return Ok(Ran::Detach),
                },
                code = self.ending.recv() => return Ok(Ran::Signal(code)),
            }
        }
    }

    /// Starts `text`, waiting while the session is busy with another command. Ctrl-C
    /// meanwhile withdraws it (dropping the waiting invoke tells the daemon), so it never
    /// runs later. `~.` withdraws it too, unless it has just started: then it runs on, as
    /// `~.` leaves any running command; a line withdrawn so is kept for the next `enter`.
    async fn start(
        &mut self,
        text: &str,
        opts: &InvokeOptions,
        watcher: &mut Option<&mut Watcher>,
    ) -> Result<Started> {
        let opts = InvokeOptions {
            withdrawer: linger::Withdrawer::default(),
            // Said on its own line while the keyboard is watched (no prompt is drawn then).
            announce_busy: true,
            ..opts.clone()
        };
        let mut start = Box::pin(self.client.invoke(self.entry, text, &opts));
        let started = tokio::select! {
            started = &mut start => started,
            key = next_key(watcher) => match key {
                Key::Interrupt => {
                    // Dropped first: the daemon hears of it before anything else happens.
                    drop(start);
                    self.interrupted().await?;
                    self.out.note("linger: withdrawn: the session was busy and the command never started").await?;
                    return Ok(Started::Not(Ran::Status(130)));
                }
                Key::Detach => {
                    // Not asked yet (still connecting), or answered already: dropping the
                    // invoke sends nothing, and a command that started runs on.
                    if !opts.withdrawer.withdraw() || start.await.is_err() {
                        self.typed.push_front(text.to_string());
                    }
                    return Ok(Started::Not(Ran::Detach));
                }
            },
            code = self.ending.recv() => return Ok(Started::Not(Ran::Signal(code))),
        };
        let mut cmd = started?;
        // On a raw terminal a line needs its carriage return.
        cmd.on_notice(|m| {
            use std::io::Write;
            let _ = write!(std::io::stderr(), "linger: {m}\r\n");
        });
        Ok(Started::Running(Box::new(cmd)))
    }

    /// One line on a terminal of its own: the keyboard is the command's (its terminal
    /// echoes, edits and signals), and `~.` at the start of a line detaches.
    async fn run_on_terminal(&mut self, text: &str) -> Result<Ran> {
        use crate::terminal::{self, Ended, RawTerminal};
        let spec = terminal::spec();
        let opts = InvokeOptions {
            stdin: true,
            terminal: Some(spec.clone()),
            ..self.opts.clone()
        };
        let mut watcher = self.tty.watch().ok();
        let started = self.start(text, &opts, &mut watcher.as_mut()).await;
        let early = watcher.map(|w| w.stop());
        let mut cmd = match started? {
            Started::Running(cmd) => *cmd,
            Started::Not(ran) => {
                // What was typed after a Ctrl-C that withdrew it are the next lines.
                if let Some(typed) = early {
                    self.type_ahead(typed);
                }
                return Ok(ran);
            }
        };
        // Keys typed while it was starting are the command's: its terminal has them next.
        if let (Some(typed), Some(input)) = (early, cmd.input()) {
            let mut keys = String::new();
            for line in typed.lines {
                keys.push_str(&line);
                keys.push('\r');
            }
            keys.push_str(&typed.partial);
            if !keys.is_empty() {
                input.write(linger::Bytes::from(keys)).await;
            }
        }
        let raw = RawTerminal::enter(spec.rows, spec.cols)?;
        Ok(match terminal::drive(&mut cmd, raw).await? {
            Ended::Finished(status) => {
                // What was typed at it and never read is the next input, as at a shell.
                let typed = watch::unread(&cmd.take_unread_input());
                self.type_ahead(typed);
                Ran::Status(status)
            }
            Ended::Detached => Ran::Detach,
            Ended::Signalled(code) => Ran::Signal(code),
        })
    }

    /// Ctrl-C: what was typed ahead is dropped, as a terminal flushes its input.
    async fn interrupted(&mut self) -> Result<()> {
        self.typed.clear();
        self.partial.clear();
        self.out.write(StreamKind::Stderr, b"^C").await
    }

    fn type_ahead(&mut self, typed: Typed) {
        let mut partial = std::mem::take(&mut self.partial);
        for line in typed.lines {
            partial.push_str(&line);
            self.typed.push_back(std::mem::take(&mut partial));
        }
        partial.push_str(&typed.partial);
        self.partial = partial;
    }

    /// Entering a session that is still running a command (or holds output nobody read):
    /// shows what it kept and follows the command to its end. Ctrl-C stops the command, as
    /// in the `enter` that started it; `~.` detaches again.
    async fn catch_up(&mut self, running: Option<&str>) -> Result<Option<Leave>> {
        if let (true, Some(cmd)) = (self.terminals, running) {
            return self.reenter_terminal(cmd).await;
        }
        let mut stream = self
            .client
            .receive(self.entry, &ReceiveOptions::default())
            .await?;
        self.follow_to_the_end(&mut stream, running).await
    }

    /// Follows a command entered again (saying so when one runs), the keyboard watched:
    /// what was typed meanwhile is kept for the prompt.
    async fn follow_to_the_end(
        &mut self,
        stream: &mut CommandStream,
        running: Option<&str>,
    ) -> Result<Option<Leave>> {
        if let Some(cmd) = running {
            self.out
                .note(&format!(
                    "linger: {} is still running `{cmd}`; following it (Ctrl-C stops it, ~. detaches)",
                    self.entry.name
                ))
                .await?;
        }
        let mut watcher = self.tty.watch().ok();
        let followed = self.follow(stream, watcher.as_mut()).await;
        if let Some(w) = watcher {
            let typed = w.stop();
            self.type_ahead(typed);
        }
        match followed? {
            Ran::Status(_) => Ok(None),
            Ran::Detach => self.detach().await.map(Some),
            Ran::Signal(code) => Ok(Some(Leave::Exit(code))),
        }
    }

    /// Entering a session whose command runs on a terminal (or might): its screen is drawn
    /// as it is and the keyboard is the command's again, as `tmux attach` does. A command
    /// on pipes is followed instead.
    async fn reenter_terminal(&mut self, cmd: &str) -> Result<Option<Leave>> {
        use crate::terminal::{self, Ended, RawTerminal};
        use std::io::Write;
        let spec = terminal::spec();
        let mut stream = self.client.receive_terminal(self.entry, &spec).await?;
        let Some(screen) = stream.screen().await? else {
            return self.follow_to_the_end(&mut stream, Some(cmd)).await;
        };
        self.out
            .note(&format!(
                "linger: {} is still running `{cmd}` on a terminal; here it is again (~. detaches)",
                self.entry.name
            ))
            .await?;
        let mut raw = RawTerminal::enter(spec.rows, spec.cols)?;
        raw.saw(&screen);
        {
            let mut stdout = std::io::stdout();
            stdout.write_all(&screen)?;
            stdout.flush()?;
        }
        match terminal::drive(&mut stream, raw).await? {
            Ended::Finished(_) => {
                let typed = watch::unread(&stream.take_unread_input());
                self.type_ahead(typed);
                // The receive ends once all the command's output is delivered.
                while self
                    .client
                    .note_closed(self.entry, stream.next().await)?
                    .is_some()
                {}
                Ok(None)
            }
            Ended::Detached => self.detach().await.map(Some),
            Ended::Signalled(code) => Ok(Some(Leave::Exit(code))),
        }
    }

    async fn follow(
        &mut self,
        stream: &mut CommandStream,
        mut watcher: Option<&mut Watcher>,
    ) -> Result<Ran> {
        let mut interrupted = false;
        loop {
            tokio::select! {
                event = stream.next() => match self.client.note_closed(self.entry, event)? {
                    Some(event) => self.out.show(event).await?,
                    None => return Ok(Ran::Status(0)),
                },
                key = next_key(&mut watcher) => match key {
                    // As in the `enter` that started it: Ctrl-C stops the command, and the
                    // prompt comes back once it has ended.
                    Key::Interrupt => {
                        stream.stopper(self.entry.instance_id).cancel()?;
                        if interrupted {
                            self.out.note("linger: still stopping the command; ~. at the start of a line detaches and leaves it running").await?;
                        }
                        interrupted = true;
                        self.interrupted().await?;
                    }
                    Key::Detach => return Ok(Ran::Detach),
                },
                code = self.ending.recv() => return Ok(Ran::Signal(code)),
            }
        }
    }

    /// `~.`: disconnects the session; a running command keeps running.
    async fn detach(&mut self) -> Result<Leave> {
        self.tty.restore();
        self.out.fresh_line().await?;
        self.keep_typeahead();
        let view = self
            .client
            .disconnect(self.entry, &DisconnectOptions::default())
            .await?;
        let running = view.info.and_then(|i| i.running_command);
        Ok(Leave::Detached { running })
    }
}

/// The next Ctrl-C or `~.` typed while a command runs (never without a terminal).
async fn next_key(watcher: &mut Option<&mut Watcher>) -> Key {
    match watcher {
        Some(w) => w.key().await,
        None => std::future::pending().await,
    }
}
