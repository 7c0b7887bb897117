//! `linger`: the command-line client. A thin layer over the `linger` library: it parses
//! flags, calls the library, and prints tables, JSON lines and one-line errors.

mod cli;
mod commands;
mod complete;
mod output;
mod progress;
mod report;
mod sink;
mod stdin;
mod terminal;

use clap::Parser;

/// `linger invoke s ls -la`: a flag of the script taken for one of invoke's. clap's own tip
/// (`-- -l`) would run the wrong script.
fn script_flag_hint(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invoke = args.iter().position(|a| a == "invoke")?;
    if args.iter().any(|a| a == "--") {
        return None;
    }
    let Some(ContextValue::String(flag)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let rest = &args[invoke + 1..];
    // (`-l` of `-la`: clap names the first letter of a cluster.)
    let at = rest
        .iter()
        .position(|a| a == flag || a.starts_with(flag.as_str()))?;
    let script_at = at.saturating_sub(1);
    Some(format!(
        "linger: error: '{flag}' is not a flag of invoke (if it belongs to the script, put `--` before the script: `linger invoke {} -- {}`)",
        rest[..script_at].join(" "),
        rest[script_at..].join(" ")
    ))
}

fn main() {
    // A Tab in a shell that sourced `linger completions`: answered here, before anything
    // else writes to stdout.
    complete::answer_if_asked();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(line) = script_flag_hint(&e) {
                crate::say!("{line}");
                std::process::exit(2);
            }
            e.exit()
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::say!("linger: error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let json = cli.json;
    let code = runtime.block_on(async move {
        match commands::run(cli).await {
            Ok(code) => {
                if json {
                    report::out(&format!("{}\n", serde_json::json!({ "exit_code": code })));
                }
                code
            }
            Err(e) => report::error(&e, json),
        }
    });
    // The runtime may hold a blocked stdin reader; do not wait for it.
    std::process::exit(code);
}
