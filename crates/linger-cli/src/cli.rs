//! The command line, as SPEC.md fixes it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCandidates;

#[derive(Parser)]
#[command(
    name = "linger",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LINGER_COMMIT"), ")"),
    about = "Persistent, disconnectable shell sessions on Linux hosts",
    after_help = "Sessions are selected (SEL) by Id, Name (wildcards allowed) or InstanceId.\nExit codes: the remote status for a single invoke; else 0 ok, 2 usage, 3 not found, 4 busy, 5 auth, 6 connection, 7 timeout, 1 other."
)]
pub struct Cli {
    /// Print JSON lines instead of tables; the last line tells exit code and error apart.
    #[arg(long, global = true)]
    pub json: bool,
    /// SSH private key to log in to TLS computers with (instead of ssh-agent's keys and
    /// ~/.ssh/id_*; option identity_file).
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Set a client option for this command (repeatable), over the options file; a
    /// command's own flags win over it. `linger option show` lists the keys.
    #[arg(long = "option", global = true, value_name = "KEY=VALUE")]
    pub options: Vec<String>,
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
    /// Watch a session read-only: what its commands print, live, while another client may
    /// stay attached (Ctrl-C stops watching).
    Watch(WatchArgs),
    /// Work interactively in a session: each line runs there.
    Enter(EnterArgs),
    /// Copy files into or out of sessions (SEL:PATH is a path in a session, relative to
    /// its current directory; anything else is local). Works while the session is busy.
    Copy(CopyArgs),
    /// Jobs: commands whose output waits on the server (list, receive, wait, stop, remove,
    /// start a background job in a session).
    #[command(subcommand)]
    Job(JobCommand),
    /// The server's session configurations.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// This client's options.
    #[command(subcommand)]
    Option(OptionCommand),
    /// Print a completion script: `source <(linger completions bash)` (session names come
    /// from this client's registry as you type).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the manual pages (linger.1 and one per subcommand) into DIR.
    Manpage {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Show the session configurations of a computer.
    List(ConfigListArgs),
}

#[derive(Args)]
pub struct ConfigListArgs {
    /// The computer to ask.
    #[arg(long, value_name = "C", default_value = "localhost")]
    pub computer: String,
}

#[derive(Subcommand)]
pub enum OptionCommand {
    /// Print each option's effective value and where it came from.
    Show,
}

#[derive(Args)]
pub struct EnterArgs {
    /// The session to enter (Id, Name or InstanceId).
    #[arg(value_name = "SEL", add = ArgValueCandidates::new(crate::complete::session_names), conflicts_with = "computer")]
    pub selector: Option<String>,
    /// Enter a temporary session on this computer, removed when you leave.
    #[arg(long, value_name = "C")]
    pub computer: Option<String>,
    /// Run each line on pipes instead of on a terminal of its own (full-screen programs
    /// then do not work; output keeps stdout and stderr apart).
    #[arg(short = 'T', long)]
    pub no_tty: bool,
    #[command(flatten)]
    pub session: SessionFlags,
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// Show jobs: this client's, or those in sessions SEL (background jobs included).
    List(JobListArgs),
    /// Get a job's output (delivered output is gone from the server unless --keep).
    Receive(JobReceiveArgs),
    /// Wait for a job to end (returns early if its session is disconnected, unless --force).
    Wait(JobWaitArgs),
    /// Stop a running job.
    Stop(JobIdArgs),
    /// Forget a job that has ended, with its kept output.
    Remove(JobIdArgs),
    /// Start a background job in a session: it shares the session's state while the session
    /// keeps taking commands.
    Start(JobStartArgs),
}

#[derive(Args)]
pub struct JobListArgs {
    /// Also the background jobs in these sessions.
    #[arg(value_name = "SEL", add = ArgValueCandidates::new(crate::complete::session_names))]
    pub selectors: Vec<String>,
}

#[derive(Args)]
pub struct JobIdArgs {
    /// Job Id or Name.
    #[arg(value_name = "ID")]
    pub job: String,
}

#[derive(Args)]
pub struct JobReceiveArgs {
    /// Job Ids or Names (wildcards allowed); a parent job stands for its child jobs, whose
    /// output is prefixed `[computer] `.
    #[arg(value_name = "ID", required = true)]
    pub jobs: Vec<String>,
    /// Leave the output on the server.
    #[arg(long)]
    pub keep: bool,
    /// Follow running jobs to their end; without it, what they have produced so far is
    /// received and the command returns (as PowerShell's Receive-Job).
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args)]
pub struct JobWaitArgs {
    #[arg(value_name = "ID")]
    pub job: String,
    /// Keep waiting while the job's session is disconnected, until the job ends.
    #[arg(long)]
    pub force: bool,
    /// Give up after this long (exit 7).
    #[arg(long, value_name = "D")]
    pub timeout: Option<String>,
}

#[derive(Args)]
pub struct JobStartArgs {
    /// The session to run the job in.
    #[arg(value_name = "SEL", add = ArgValueCandidates::new(crate::complete::session_names))]
    pub selector: String,
    /// A positional parameter for the script ($1, $2, …); repeatable.
    #[arg(long = "arg", value_name = "V")]
    pub args: Vec<String>,
    /// The script (words are joined with spaces).
    #[arg(last = true, value_name = "SCRIPT", required = true)]
    pub script: Vec<String>,
}

/// Sessions named by SEL, or on --computer by --name, --id or --instance-id.
#[derive(Args, Clone, Default)]
pub struct Targets {
    /// Sessions (Id, Name or InstanceId).
    #[arg(value_name = "SEL", add = ArgValueCandidates::new(crate::complete::session_names))]
    pub selectors: Vec<String>,
    /// Find the session on this computer (with --name, --id or --instance-id), from any client.
    #[arg(long, value_name = "C", value_delimiter = ',')]
    pub computer: Vec<String>,
    #[command(flatten)]
    pub filter: SessionFilter,
}

#[derive(Args)]
pub struct CopyArgs {
    /// Copy directories and everything in them.
    #[arg(short, long)]
    pub recursive: bool,
    /// Keep modes and modification and access times.
    #[arg(short, long)]
    pub preserve: bool,
    /// What to copy, then where: `SRC... DEST`. Either the sources or the destination are
    /// SEL:PATH (a local path holding a colon is written ./like:this).
    #[arg(value_name = "PATH", required = true, num_args = 2..)]
    pub paths: Vec<std::path::PathBuf>,
}

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub targets: Targets,
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
    /// Take the session over at once from the client holding it (as `tmux attach -d`):
    /// what that client is receiving ends, and nothing is lost.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct ReceiveArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// Leave the delivered output on the server, and do not follow running commands.
    #[arg(long)]
    pub keep: bool,
    /// `host` delivers the output here; `job` returns a job instead, to receive later
    /// (the default when the running command was started here as a job).
    #[arg(long, value_name = "host|job", value_parser = ["host", "job"])]
    pub out_target: Option<String>,
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
    /// Computers to create sessions on (`localhost` or `.`, `ssh://[user@]host[:port]`;
    /// comma lists and @FILE accepted).
    #[arg(required = true, value_name = "COMPUTER", value_delimiter = ',')]
    pub computers: Vec<String>,
    /// At most this many computers at once.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub throttle: usize,
    #[command(flatten)]
    pub session: SessionFlags,
}

#[derive(Args)]
pub struct GetArgs {
    /// Sessions to show (default: all of this client's).
    #[arg(value_name = "SEL", add = ArgValueCandidates::new(crate::complete::session_names))]
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
    #[arg(value_name = "SEL", add = ArgValueCandidates::new(crate::complete::session_names))]
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
    /// Run as a job: return at once with the job table (fails at once on a busy session);
    /// `linger job receive` gets the output.
    #[arg(long)]
    pub as_job: bool,
    /// Keep the session (made with --computer): start the script, disconnect at once, and
    /// print the session table; `linger receive` gets the output later.
    #[arg(long)]
    pub in_disconnected_session: bool,
    /// Give the command /dev/null as its standard input instead of forwarding this one's
    /// (as `ssh -n`).
    #[arg(short = 'n', long)]
    pub no_stdin: bool,
    /// Run the command on a terminal made for it on the server (as `ssh -t`): full-screen
    /// programs, REPLs and password prompts work; `~.` at the start of a line detaches.
    #[arg(short = 't', long)]
    pub tty: bool,
    #[command(flatten)]
    pub session: SessionFlags,
    /// The script (words are joined with spaces); read from stdin when absent.
    #[arg(last = true, value_name = "SCRIPT")]
    pub script: Vec<String>,
}
