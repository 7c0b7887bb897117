//! Errors as users see them: one line, `linger: error: WHAT (HINT)`, and the exit code of
//! its kind (SPEC §13). With `--json`, a final `{"error": …}` record instead.

use linger::Kind;

/// The library error inside `e`, if any, decides kind and hint.
fn classify(e: &anyhow::Error) -> (Kind, Option<String>) {
    for cause in e.chain() {
        if let Some(le) = cause.downcast_ref::<linger::Error>() {
            return (le.kind(), le.hint());
        }
        if let Some(u) = cause.downcast_ref::<Usage>() {
            return (Kind::Usage, u.hint.clone());
        }
        if let Some(f) = cause.downcast_ref::<SomeFailed>() {
            return (f.kind, None);
        }
    }
    (Kind::Other, None)
}

/// A mistake in how linger was called (exit 2).
#[derive(Debug)]
pub struct Usage {
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Usage {}

/// A fan-out in which some computers failed (each already reported on its own line); its
/// kind is the first failure's.
#[derive(Debug)]
pub struct SomeFailed {
    pub message: String,
    pub kind: Kind,
}

impl std::fmt::Display for SomeFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SomeFailed {}

/// The failures of a command run on several computers or sessions: each is reported on its
/// own line as it is recorded, and together they end the command with one error of the first
/// one's kind (`--json`: an error record, never a remote status). With one target, its error
/// itself.
pub struct Failures {
    total: usize,
    /// What the targets are, plural: "computers", "sessions".
    what: &'static str,
    failed: Vec<String>,
    first: Option<anyhow::Error>,
}

impl Failures {
    pub fn new(total: usize, what: &'static str) -> Failures {
        Failures {
            total,
            what,
            failed: Vec::new(),
            first: None,
        }
    }

    pub fn record(&mut self, label: &str, e: anyhow::Error) {
        if self.total > 1 {
            say(&format!(
                "linger: error: [{}] {}",
                printable(label),
                line(&e)
            ));
        }
        self.record_said(label, e);
    }

    /// A failure already reported when it happened ([`target_ended`]).
    pub fn record_said(&mut self, label: &str, e: anyhow::Error) {
        self.failed.push(label.to_string());
        self.first.get_or_insert(e);
    }

    /// Ok if nothing failed.
    pub fn finish(self) -> anyhow::Result<()> {
        let Some(first) = self.first else {
            return Ok(());
        };
        if self.total == 1 {
            return Err(first);
        }
        Err(anyhow::Error::new(SomeFailed {
            message: format!(
                "{} of {} {} failed: {}",
                self.failed.len(),
                self.total,
                self.what,
                self.failed.join(", ")
            ),
            kind: kind_of(&first),
        }))
    }
}

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage {
        message: message.into(),
        hint: None,
    })
}

pub fn usage_hint(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage {
        message: message.into(),
        hint: Some(hint.into()),
    })
}

/// One line for an error: the whole chain, newlines folded.
pub fn line(e: &anyhow::Error) -> String {
    let (_, hint) = classify(e);
    // A server's message may carry anything: it must not drive the terminal.
    let what = printable(&format!("{e:#}").replace('\n', " "));
    match hint {
        Some(h) => format!("{what} ({})", printable(&h)),
        None => what,
    }
}

/// `text` with control characters (ESC, BEL, carriage returns…) escaped, so that what a
/// server or a session sends cannot move the cursor, retitle the terminal or write the
/// clipboard when printed in a message or a table.
pub fn printable(text: &str) -> String {
    linger_proto::text::escape_controls(text)
}

/// Writes one line to standard error. Never panics: a closed or broken stderr only loses
/// the message (`eprintln!` would abort the CLI with exit 101).
pub fn say(text: &str) {
    use std::io::Write;
    crate::progress::above(|| {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    });
}

/// `say!("…", args)`: a line on standard error, as `eprintln!` but never panicking.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::report::say(&format!($($arg)*)) };
}

/// The `{"kind", "message", "hint", "exit_code"}` object that JSON output gives an error.
pub fn error_body(e: &anyhow::Error) -> serde_json::Value {
    let (kind, hint) = classify(e);
    serde_json::json!({
        "kind": kind.as_str(),
        "message": format!("{e:#}").replace('\n', " "),
        "hint": hint,
        "exit_code": kind.exit_code(),
    })
}

/// How one target of a fan-out ended, said as soon as it is known (SPEC §16): with `json`,
/// its record `{"computer_name", "exit_code"}` or `{"computer_name", "error"}`; otherwise,
/// for one of several targets that failed, its error line.
pub fn target_ended(label: &str, result: &anyhow::Result<i32>, json: bool, several: bool) {
    match (result, json) {
        (Ok(code), true) => out(&format!(
            "{}\n",
            serde_json::json!({ "computer_name": label, "exit_code": code })
        )),
        (Err(e), true) => out(&format!(
            "{}\n",
            serde_json::json!({ "computer_name": label, "error": error_body(e) })
        )),
        (Err(e), false) if several => say(&format!(
            "linger: error: [{}] {}",
            printable(label),
            line(e)
        )),
        _ => {}
    }
}

/// Prints the error and returns the exit code.
pub fn error(e: &anyhow::Error, json: bool) -> i32 {
    let (kind, _) = classify(e);
    if json {
        out(&format!(
            "{}\n",
            serde_json::json!({ "error": error_body(e) })
        ));
    } else {
        say(&format!("linger: error: {}", line(e)));
    }
    kind.exit_code()
}

pub fn kind_of(e: &anyhow::Error) -> Kind {
    classify(e).0
}

/// Writes `text` to standard output. A reader that went away (`linger get | head -1`) ends
/// the process quietly, as SIGPIPE would; SIGPIPE itself stays ignored, because a dead ssh
/// transport must be an error the client can recover from, not a signal that kills it.
pub fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        quit_on_closed_stdout(&e);
    }
}

/// Ends the process quietly if `e` says standard output's reader is gone.
pub fn quit_on_closed_stdout(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
}
