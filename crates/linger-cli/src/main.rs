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

fn main() {
    // A Tab in a shell that sourced `linger completions`: answered here, before anything
    // else writes to stdout.
    complete::answer_if_asked();
    let cli = cli::Cli::parse();
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
