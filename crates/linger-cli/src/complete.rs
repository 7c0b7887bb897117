//! Shell completion and manual pages (SPEC §17), both made from the one clap definition.
//!
//! Completion is dynamic: the script `linger completions SHELL` prints calls `linger` back on
//! every Tab (with `LINGER_COMPLETE` set), so subcommands and flags always match this binary
//! and session names come from the registry as it is at that moment.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::engine::CompletionCandidate;
use clap_complete::env::{CompleteEnv, Shells};

use crate::cli::{Cli, Shell};

const VAR: &str = "LINGER_COMPLETE";

/// Answers a completion request and exits, when the shell asked for one.
pub fn answer_if_asked() {
    CompleteEnv::with_factory(Cli::command).var(VAR).complete();
}

/// The script that registers completion for `linger` in `shell`.
pub fn registration(shell: Shell, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let name = match shell {
        Shell::Bash => "bash",
        Shell::Zsh => "zsh",
        Shell::Fish => "fish",
    };
    let shells = Shells::builtins();
    let completer = shells
        .completer(name)
        .ok_or_else(|| std::io::Error::other(format!("no completion for {name}")))?;
    // The path of this binary, so completion works however it was found; the shell runs it
    // for every Tab.
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .unwrap_or_else(|| "linger".to_string());
    completer.write_registration(VAR, "linger", "linger", &me, out)
}

/// The names (and Ids) of the sessions in this client's registry, for `SEL`. Reading it
/// must not create a client home or wait: without a registry there is nothing to offer.
pub fn session_names() -> Vec<CompletionCandidate> {
    let home = linger::ClientHome::from_env();
    if !home.registry_file().exists() && !home.registry_journal().exists() {
        return Vec::new();
    }
    let Ok(sessions) = linger::Registry::new(home).load() else {
        return Vec::new();
    };
    // One candidate per name: sessions on different computers may share one.
    let mut seen = std::collections::HashSet::new();
    sessions
        .entries()
        .iter()
        .filter(|e| seen.insert(e.name.as_str()))
        .map(|e| {
            CompletionCandidate::new(e.name.clone())
                .help(Some(format!("Id {} on {}", e.id, e.computer_name).into()))
        })
        .collect()
}

/// Writes `linger.1` and a page per subcommand (`linger-job-receive.1`, …) into `dir`.
pub fn write_manpages(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = Vec::new();
    write_page(&cmd, "linger", dir, &mut written)?;
    Ok(written)
}

fn write_page(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<std::path::PathBuf>,
) -> std::io::Result<()> {
    let page = cmd.clone().name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    std::fs::write(&path, buf)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_page(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
