//! The command line, as SPEC.md fixes it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "linger",
    version,
    about = "Persistent, disconnectable shell sessions on Linux hosts",
    after_help = "Sessions are selected (SEL) by Id, Name (wildcards allowed) or InstanceId.\nExit codes: the remote status for a single invoke; else 0 ok, 2 usage, 3 not found, 4 busy, 5 auth, 6 connection, 7 timeout, 1 other."
)]
pub struct Cli {
    /// Print JSON lines instead of tables; the last line tells exit code and error apart.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create one session on each computer.
    New(NewArgs),
    /// Show sessions: this client's, or every one you own on --computer.
    Get(GetArgs),
    /// End sessions and every process in them.
    Remove(RemoveArgs),
    /// Run a script in sessions (or in temporary ones with --computer).
    Invoke(InvokeArgs),
    /// Detach sessions from this client; their commands keep running.
    Disconnect(DisconnectArgs),
    /// Attach sessions to this client, from this or any other machine.
    Connect(ConnectArgs),
    /// Get what sessions produced while nobody was attached, then follow their commands.
    Receive(ReceiveArgs),
}

/// Sessions named by SEL, or on --computer by --name, --id or --instance-id.
#[derive(Args, Clone, Default)]
pub struct Targets {
    /// Sessions (Id, Name or InstanceId).
    #[arg(value_name = "SEL")]
    pub selectors: Vec<String>,
    /// Find the session on this computer (with --name, --id or --instance-id), from any client.
    #[arg(long, value_name = "C", value_delimiter = ',')]
    pub computer: Vec<String>,
    #[command(flatten)]
    pub filter: SessionFilter,
}

#[derive(Args)]
pub struct DisconnectArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// How long the session may stay unattached before it is removed, from now.
    #[arg(long, value_name = "D")]
    pub idle_timeout: Option<String>,
    /// What happens when the output buffer is full: block, drop or spool.
    #[arg(long, value_name = "MODE")]
    pub buffering: Option<String>,
}

#[derive(Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// What happens when the output buffer is full: block, drop or spool.
    #[arg(long, value_name = "MODE")]
    pub buffering: Option<String>,
    /// Refused: the idle timeout is set at `new` and at `disconnect`.
    #[arg(long, value_name = "D", hide = true)]
    pub idle_timeout: Option<String>,
}

#[derive(Args)]
pub struct ReceiveArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// Leave the delivered output on the server, and do not follow running commands.
    #[arg(long)]
    pub keep: bool,
    /// What happens when the output buffer is full: block, drop or spool.
    #[arg(long, value_name = "MODE")]
    pub buffering: Option<String>,
    /// Refused: the idle timeout is set at `new` and at `disconnect`.
    #[arg(long, value_name = "D", hide = true)]
    pub idle_timeout: Option<String>,
}

/// Flags that shape a new session (`new`, and `invoke` when it creates sessions).
#[derive(Args, Clone, Default)]
pub struct SessionFlags {
    /// Session name (default Session<Id>); unique per owner and computer.
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// Session configuration on the server.
    #[arg(long, value_name = "C")]
    pub configuration: Option<String>,
    /// How long the session may stay unattached before it is removed (e.g. 30m, 2h).
    #[arg(long, value_name = "D")]
    pub idle_timeout: Option<String>,
    /// What happens when the output buffer is full: block, drop or spool.
    #[arg(long, value_name = "MODE")]
    pub buffering: Option<String>,
}

#[derive(Args)]
pub struct NewArgs {
    /// Computers to create sessions on (`localhost` or `.` for this machine).
    #[arg(required = true, value_name = "COMPUTER")]
    pub computers: Vec<String>,
    #[command(flatten)]
    pub session: SessionFlags,
}

#[derive(Args)]
pub struct GetArgs {
    /// Sessions to show (default: all of this client's).
    #[arg(value_name = "SEL")]
    pub selectors: Vec<String>,
    /// Ask these computers for every session you own there.
    #[arg(long, value_name = "C", value_delimiter = ',')]
    pub computer: Vec<String>,
    #[command(flatten)]
    pub filter: SessionFilter,
    /// Only sessions in this state (Opened, Disconnected, Closed, Broken).
    #[arg(long, value_name = "S")]
    pub state: Option<String>,
}

#[derive(Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub targets: Targets,
}

/// Picks sessions by property (`get`, and `remove --computer`).
#[derive(Args, Clone, Default)]
pub struct SessionFilter {
    /// Only sessions with this name (wildcards allowed).
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// Only the session with this Id.
    #[arg(long, value_name = "I")]
    pub id: Option<u32>,
    /// Only the session with this InstanceId.
    #[arg(long, value_name = "G")]
    pub instance_id: Option<String>,
}

#[derive(Args)]
pub struct InvokeArgs {
    /// Sessions to run in.
    #[arg(value_name = "SEL")]
    pub selectors: Vec<String>,
    /// Run in a temporary session on each computer (comma lists and @FILE accepted).
    #[arg(long, value_name = "C", value_delimiter = ',')]
    pub computer: Vec<String>,
    /// At most this many targets at once.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub throttle: usize,
    /// How long to wait for a busy session before failing (e.g. 30s, 4m).
    #[arg(long, value_name = "D", default_value = "4m")]
    pub wait: String,
    /// Read the script from this file.
    #[arg(long, value_name = "F")]
    pub file: Option<PathBuf>,
    /// A positional parameter for the script ($1, $2, …); repeatable.
    #[arg(long = "arg", value_name = "V")]
    pub args: Vec<String>,
    /// Keep the session (made with --computer): start the script, disconnect at once, and
    /// print the session table; `linger receive` gets the output later.
    #[arg(long)]
    pub in_disconnected_session: bool,
    #[command(flatten)]
    pub session: SessionFlags,
    /// The script (words are joined with spaces); read from stdin when absent.
    #[arg(last = true, value_name = "SCRIPT")]
    pub script: Vec<String>,
}
