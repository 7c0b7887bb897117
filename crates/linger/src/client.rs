//! The client: a home (identity and registry) plus connections to daemons, with the
//! operations the CLI offers. Everything the `linger` binary does goes through here.

use std::collections::HashMap;
use std::time::Duration;

use linger_proto::client::{Disconnect, Invoke, InvokeKind, NewSession, Receive};
use linger_proto::types::{
    Attachment, BufferingMode, ErrorKind, JobInfo, JobKind, JobState, SessionInfo,
};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::autostart;
use crate::connection::Login;
use crate::connection::{CommandStream, Connection, EnterGuard, Resume, Withdrawer};
use crate::error::{Error, Result};
use crate::home::ClientHome;
use crate::known_hosts;
use crate::options::Options;
use crate::registry::{EndState, Entry, JobEnd, JobEntry, Registry};
use crate::ssh::{self, SshTarget};
use crate::tls::{self, TlsTarget};
use linger_proto::types::{ConfigurationInfo, TerminalSpec};

/// Default time a synchronous invoke waits for a busy session (the seeds' four minutes).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(240);
/// Default time between Ctrl-C and killing what the command started.
pub const DEFAULT_CANCEL_TIMEOUT: Duration = Duration::from_secs(60);

/// A session's State, relative to this client (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Opened,
    Disconnected,
    Closed,
    Broken,
}

/// Whether this client can use the session now (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Available,
    Busy,
    None,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Opened => "Opened",
            State::Disconnected => "Disconnected",
            State::Closed => "Closed",
            State::Broken => "Broken",
        }
    }
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Available => "Available",
            Availability::Busy => "Busy",
            Availability::None => "None",
        }
    }
}

/// A session as this client shows it: its local record, its relative state, and the
/// server's record when the server could be asked.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub entry: Entry,
    pub state: State,
    pub availability: Availability,
    pub info: Option<SessionInfo>,
    /// Why the state is Broken or Closed, when known.
    pub reason: Option<String>,
}

impl SessionView {
    fn from_info(entry: Entry, info: SessionInfo) -> SessionView {
        let (state, availability) = match (&info.closed_reason, info.attachment) {
            (Some(_), _) => (State::Closed, Availability::None),
            (None, Attachment::You) if info.running_command.is_some() => {
                (State::Opened, Availability::Busy)
            }
            (None, Attachment::You) => (State::Opened, Availability::Available),
            (None, Attachment::Other) => (State::Disconnected, Availability::Busy),
            (None, Attachment::None) => (State::Disconnected, Availability::None),
        };
        SessionView {
            entry,
            state,
            availability,
            reason: info.closed_reason.clone(),
            info: Some(info),
        }
    }

    fn closed(entry: Entry) -> SessionView {
        SessionView {
            reason: entry.closed_reason.clone(),
            entry,
            state: State::Closed,
            availability: Availability::None,
            info: None,
        }
    }

    fn broken(entry: Entry, why: String) -> SessionView {
        SessionView {
            entry,
            state: State::Broken,
            availability: Availability::None,
            info: None,
            reason: Some(why),
        }
    }
}

/// A job's State as this client shows it (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobViewState {
    NotStarted,
    Running,
    Completed,
    Failed,
    Stopped,
    /// Running in a session that is not attached to this client.
    Disconnected,
}

impl JobViewState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobViewState::NotStarted => "NotStarted",
            JobViewState::Running => "Running",
            JobViewState::Completed => "Completed",
            JobViewState::Failed => "Failed",
            JobViewState::Stopped => "Stopped",
            JobViewState::Disconnected => "Disconnected",
        }
    }
}

/// A job as this client shows it: its table entry, its relative state, and the server's
/// record when the server could be asked.
#[derive(Debug, Clone)]
pub struct JobView {
    pub job: JobEntry,
    pub state: JobViewState,
    pub has_more_data: bool,
    pub info: Option<JobInfo>,
    /// Why it ended without a status, or why it cannot be seen.
    pub reason: Option<String>,
}

impl JobView {
    /// The exit status: the server's record's, else as this client last saw the job end.
    pub fn status(&self) -> Option<i32> {
        self.info
            .as_ref()
            .and_then(|i| i.status)
            .or(self.job.ended.and_then(|e| e.status))
    }

    fn new(job: JobEntry, info: Option<JobInfo>, session: Option<&SessionView>) -> JobView {
        let Some(info) = info else {
            // The server no longer has it: forgotten there, or its session restarted.
            return JobView {
                state: last_state(&job),
                job,
                has_more_data: false,
                info: None,
                reason: Some("its server no longer knows it".into()),
            };
        };
        let attached_here = session.is_some_and(|s| s.state == State::Opened);
        let state = match info.state {
            JobState::Running if !attached_here => JobViewState::Disconnected,
            JobState::Running => JobViewState::Running,
            JobState::Completed => JobViewState::Completed,
            JobState::Failed => JobViewState::Failed,
            JobState::Stopped => JobViewState::Stopped,
        };
        JobView {
            job,
            state,
            has_more_data: info.has_more_data,
            info: Some(info),
            reason: None,
        }
    }

    /// A job standing for a session's foreground output (`receive --out-target job`).
    fn of_session_output(job: JobEntry, session: &SessionView) -> JobView {
        let info = session.info.as_ref();
        let running = info.is_some_and(|i| i.running_command.is_some());
        let state = match (running, session.state) {
            (true, State::Opened) => JobViewState::Running,
            (true, _) => JobViewState::Disconnected,
            // Stopped by `job stop`, or as last seen.
            (false, _) if job.ended.is_some() => last_state(&job),
            (false, State::Closed) => JobViewState::Stopped,
            (false, _) => JobViewState::Completed,
        };
        JobView {
            job,
            state,
            has_more_data: info.is_some_and(|i| i.pending_output_bytes > 0),
            info: None,
            reason: session.reason.clone(),
        }
    }

    fn session_ended(job: JobEntry, why: String) -> JobView {
        JobView {
            state: last_state(&job),
            job,
            has_more_data: false,
            info: None,
            reason: Some(format!("its session ended: {why}")),
        }
    }

    /// A parent job as its children make it (PowerShell's rules): running while any child
    /// runs, then failed if any failed, stopped if any stopped, else completed; it has more
    /// data while any child has.
    pub fn parent(job: JobEntry, children: &[JobView]) -> JobView {
        use JobViewState as S;
        let any = |s: S| children.iter().any(|c| c.state == s);
        let state = if children.is_empty() {
            S::Stopped
        } else if any(S::Running) {
            S::Running
        } else if any(S::Disconnected) {
            S::Disconnected
        } else if any(S::NotStarted) {
            S::NotStarted
        } else if any(S::Failed) {
            S::Failed
        } else if any(S::Stopped) {
            S::Stopped
        } else {
            S::Completed
        };
        JobView {
            job,
            state,
            has_more_data: children.iter().any(|c| c.has_more_data),
            info: None,
            reason: children
                .is_empty()
                .then(|| "its child jobs were removed".to_string()),
        }
    }

    fn unreachable(job: JobEntry, why: String) -> JobView {
        JobView {
            job,
            state: JobViewState::Disconnected,
            has_more_data: false,
            info: None,
            reason: Some(why),
        }
    }
}

/// A job whose server record is gone: as this client last saw it end, else Stopped.
fn last_state(job: &JobEntry) -> JobViewState {
    match job.ended.map(|e| e.state) {
        Some(EndState::Completed) => JobViewState::Completed,
        Some(EndState::Failed) => JobViewState::Failed,
        Some(EndState::Stopped) | None => JobViewState::Stopped,
    }
}

/// The end a server's record shows, if the job has ended.
fn end_of(info: &JobInfo) -> Option<JobEnd> {
    let state = match info.state {
        JobState::Running => return None,
        JobState::Completed => EndState::Completed,
        JobState::Failed => EndState::Failed,
        JobState::Stopped => EndState::Stopped,
    };
    Some(JobEnd {
        state,
        status: info.status,
    })
}

/// How to make a session.
#[derive(Debug, Clone, Default)]
pub struct NewOptions {
    pub name: Option<String>,
    pub configuration: Option<String>,
    pub idle_timeout: Option<Duration>,
    pub buffering: Option<BufferingMode>,
    /// Locale and terminal variables for the session's shell (only those the server takes,
    /// see [`linger_proto::environment`]); `None`: this process's own.
    pub environment: Option<std::collections::BTreeMap<String, String>>,
}

/// How long a command waits for a busy session before the user is told what runs there.
const BUSY_NOTICE_AFTER: Duration = Duration::from_secs(1);

/// Removals asked of servers at once by `remove_all`.
const REMOVE_IN_FLIGHT: usize = 32;

/// How to run a command.
#[derive(Debug, Clone)]
pub struct InvokeOptions {
    pub args: Vec<String>,
    pub wait: Duration,
    pub cancel_timeout: Duration,
    /// Start the command and detach the session at once (`--in-disconnected-session`); the
    /// stream then ends right away and `receive` gets the output later.
    pub disconnected: bool,
    /// Run it as a job (`--as-job`): fail at once on a busy session, return at once, and
    /// keep the output on the server for `job receive`. The job joins the job table.
    pub as_job: bool,
    /// Forward standard input: the stream's [`CommandStream::input`] feeds the command,
    /// which otherwise reads `/dev/null` (as always with `disconnected` or `as_job`).
    pub stdin: bool,
    /// Run the command on a terminal made for it on the server (`--tty`): its output is
    /// one merged stream, the input is what is typed, and [`CommandStream::resizer`]
    /// passes window changes on.
    pub terminal: Option<TerminalSpec>,
    /// Lets the caller withdraw the command while it waits for a busy session (one per
    /// invoke: it holds the invoke that waits).
    pub withdrawer: Withdrawer,
    /// Tell the user (through the client's notices) what a busy session runs while the
    /// command waits for it. Off where a notice would land inside what is drawn (a prompt
    /// being edited, a raw terminal).
    pub announce_busy: bool,
}

impl Default for InvokeOptions {
    fn default() -> Self {
        InvokeOptions {
            args: Vec::new(),
            wait: DEFAULT_WAIT,
            cancel_timeout: DEFAULT_CANCEL_TIMEOUT,
            disconnected: false,
            as_job: false,
            stdin: false,
            terminal: None,
            withdrawer: Withdrawer::default(),
            announce_busy: false,
        }
    }
}

/// How to disconnect a session.
#[derive(Debug, Clone, Default)]
pub struct DisconnectOptions {
    /// A new idle timeout, counted from now.
    pub idle_timeout: Option<Duration>,
    pub buffering: Option<BufferingMode>,
}

/// How to receive a session's output.
#[derive(Debug, Clone, Default)]
pub struct ReceiveOptions {
    /// Leave the delivered output on the server and do not follow the running command.
    pub keep: bool,
    pub buffering: Option<BufferingMode>,
}

/// A computer name as written by the user, resolved to a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Local,
    /// `ssh://[user@]host[:port]`.
    Ssh(SshTarget),
    /// `tls://[user@]host[:port]`, or just `[user@]host[:port]`.
    Tls(TlsTarget),
}

impl Target {
    pub fn parse(computer: &str) -> Result<Target> {
        match computer {
            "localhost" | "." => Ok(Target::Local),
            other => {
                if let Some(rest) = other.strip_prefix("ssh://") {
                    Ok(Target::Ssh(SshTarget::parse(rest, other)?))
                } else if let Some(rest) = other.strip_prefix("tls://") {
                    Ok(Target::Tls(TlsTarget::parse(rest, other)?))
                } else if other.contains("://") {
                    Err(Error::Usage(format!(
                        "invalid computer '{other}': the transports are tls:// and ssh://"
                    )))
                } else {
                    Ok(Target::Tls(TlsTarget::parse(other, other)?))
                }
            }
        }
    }
}

/// Opens connections to one computer: the transport, the handshake. Cheap to clone; a
/// command stream keeps one to resume after its connection broke.
#[derive(Debug, Clone)]
pub struct Dialer {
    computer: String,
    local_socket: Option<std::path::PathBuf>,
    options: Options,
    client_id: Uuid,
    known_hosts: std::path::PathBuf,
    notices: Notices,
}

/// Where the client tells its user what it did on their behalf (a server's key pinned);
/// without a sink, the `tracing` log.
#[derive(Clone, Default)]
pub struct Notices(Option<std::sync::Arc<NoticeFn>>);

type NoticeFn = dyn Fn(&str) + Send + Sync;

impl Notices {
    fn say(&self, text: &str) {
        match &self.0 {
            Some(f) => f(text),
            None => tracing::info!("{text}"),
        }
    }
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Notices(sink)"
        } else {
            "Notices(log)"
        })
    }
}

impl Dialer {
    pub fn computer(&self) -> String {
        display_computer(&self.computer)
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// A new connection (never a cached one), within option `open_timeout`.
    pub async fn dial(&self) -> Result<Connection> {
        let limit = self.options.open_timeout;
        let conn = tokio::time::timeout(limit, self.open())
            .await
            .map_err(|_| Error::TimedOut {
                what: format!("connecting to {}", self.computer()),
                option: "open_timeout",
                limit: humantime::format_duration(limit).to_string(),
            })??;
        conn.set_operation_timeout(self.options.operation_timeout);
        Ok(conn)
    }

    async fn open(&self) -> Result<Connection> {
        let key = display_computer(&self.computer);
        match Target::parse(&self.computer)? {
            Target::Local => {
                let socket = self
                    .local_socket
                    .clone()
                    .unwrap_or_else(linger_proto::local::default_socket);
                let stream = autostart::connect_or_start(&socket).await?;
                let (r, w) = stream.into_split();
                Connection::handshake(&key, r, w, self.client_id).await
            }
            Target::Ssh(target) => {
                let mut child = ssh::spawn(&target, &self.options, &key)?;
                let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
                    return Err(ssh::failure(child, &key, &self.options).await);
                };
                match Connection::handshake(&key, stdout, stdin, self.client_id).await {
                    Ok(conn) => {
                        // The connection lives as long as ssh does.
                        conn.hold_process(child);
                        Ok(conn)
                    }
                    Err(Error::ConnectionLost { .. }) => {
                        Err(ssh::failure(child, &key, &self.options).await)
                    }
                    Err(e) => Err(e),
                }
            }
            Target::Tls(target) => {
                let checking =
                    known_hosts::Checking::from_option(self.options.host_key_checking.as_deref());
                let tls = tls::connect(&target, &key, &self.known_hosts, checking).await?;
                if let known_hosts::Verified::Pinned { message } = &tls.verified {
                    self.notices.say(message);
                }
                let login = Login {
                    user: target.user.clone().unwrap_or_else(local_user),
                    channel_binding: tls.channel_binding,
                    certificate_sha256: tls.certificate_sha256,
                    identity_file: self.options.identity_file.clone(),
                };
                let (r, w) = tokio::io::split(tls.stream);
                Connection::handshake_with_login(&key, r, w, self.client_id, Some(login)).await
            }
        }
    }
}

/// The name of the user running this client (whom a TLS login asks to act as by default).
fn local_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "nobody".into())
}

/// The name a computer is shown and stored under.
pub fn display_computer(computer: &str) -> String {
    if computer == "." {
        "localhost".into()
    } else {
        computer.to_string()
    }
}

pub struct Client {
    home: ClientHome,
    id: Uuid,
    /// The local daemon's socket, when not the per-user default.
    local_socket: Option<std::path::PathBuf>,
    registry: Registry,
    options: Options,
    conns: Mutex<HashMap<String, Connection>>,
    notices: Notices,
}

impl Client {
    /// The client whose home the environment names (`LINGER_HOME`, else XDG).
    pub fn from_env() -> Result<Client> {
        Client::open(ClientHome::from_env())
    }

    pub fn open(home: ClientHome) -> Result<Client> {
        let id = home.client_id()?;
        let options = Options::load(&home.options_file())?;
        Ok(Client {
            registry: Registry::new(home.clone()),
            options,
            home,
            id,
            local_socket: None,
            conns: Mutex::new(HashMap::new()),
            notices: Notices::default(),
        })
    }

    /// Uses this socket for `localhost` instead of the per-user default.
    pub fn with_local_socket(mut self, socket: impl Into<std::path::PathBuf>) -> Client {
        self.local_socket = Some(socket.into());
        self
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn home(&self) -> &ClientHome {
        &self.home
    }

    /// The defaults from this client's options file.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Changes this client's defaults (a command's flags override the options file).
    pub fn options_mut(&mut self) -> &mut Options {
        &mut self.options
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A connection to `computer`'s daemon, opened once per client and reused.
    pub async fn connect(&self, computer: &str) -> Result<Connection> {
        self.connect_with(self.dialer(computer)).await
    }

    /// A connection to `entry`'s computer, reached as `entry` was (SPEC §3).
    pub async fn connect_entry(&self, entry: &Entry) -> Result<Connection> {
        self.connect_with(self.dialer_for(entry)).await
    }

    async fn connect_with(&self, dialer: Dialer) -> Result<Connection> {
        let key = display_computer(&dialer.computer);
        if let Some(c) = self.conns.lock().await.get(&key).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        // Dialled without the map's lock, so that a fan-out opens its connections side by
        // side (an ssh login takes a while); two racing dials to one computer keep the first.
        let conn = dialer.dial().await?;
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(&key).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        conns.insert(key, conn.clone());
        Ok(conn)
    }

    /// What it takes to open a new connection to `computer` (again, after one broke).
    pub fn dialer(&self, computer: &str) -> Dialer {
        self.dialer_with(computer, self.options.clone())
    }

    /// How to reach `entry`'s computer: with the options it was reached with before, unless
    /// this command gives its own (SPEC §3).
    pub fn dialer_for(&self, entry: &Entry) -> Dialer {
        self.dialer_with(&entry.computer_name, self.options.reached(&entry.reach))
    }

    fn dialer_with(&self, computer: &str, options: Options) -> Dialer {
        Dialer {
            computer: computer.to_string(),
            local_socket: self.local_socket.clone(),
            options,
            client_id: self.id,
            known_hosts: known_hosts::file_in(&self.home.config_dir),
            notices: self.notices.clone(),
        }
    }

    /// Sends what the client tells its user (a server's key pinned on first use) to `f`.
    pub fn on_notice(&mut self, f: impl Fn(&str) + Send + Sync + 'static) {
        self.notices = Notices(Some(std::sync::Arc::new(f)));
    }

    /// Sessions of this client matching any of `selectors` (all of them if none).
    pub fn select(&self, selectors: &[String]) -> Result<Vec<Entry>> {
        let sessions = self.registry.load()?;
        if selectors.is_empty() {
            return Ok(sessions.into_entries());
        }
        let mut out: Vec<Entry> = Vec::new();
        for sel in selectors {
            for e in sessions.select(sel)? {
                if !out.iter().any(|o| o.instance_id == e.instance_id) {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Creates a session on `computer` and records it in the registry.
    pub async fn new_session(&self, computer: &str, opts: &NewOptions) -> Result<SessionView> {
        self.new_session_as(computer, opts, None).await
    }

    /// Takes `n` session Ids at once, in order: a fan-out gives them out in the order its
    /// rows print, whichever computer answers first.
    pub fn reserve_session_ids(&self, n: usize) -> Result<Vec<u32>> {
        self.registry
            .update(|s| Ok((0..n).map(|_| s.allocate_id()).collect()))
    }

    /// [`Client::new_session`] with an Id from [`Client::reserve_session_ids`].
    pub async fn new_session_as(
        &self,
        computer: &str,
        opts: &NewOptions,
        reserved: Option<u32>,
    ) -> Result<SessionView> {
        let conn = self.connect(computer).await?;
        let mut reserved = reserved;
        // A default name that another client already took on that server is skipped.
        for _ in 0..16 {
            // A default name needs its Id first; a given one gets its Id when remembered,
            // so that creating a session writes the registry once.
            let mut id = reserved.take().unwrap_or(0);
            if id == 0 && opts.name.is_none() {
                self.registry.update(|s| {
                    id = s.allocate_id();
                    Ok(())
                })?;
            }
            let name = opts.name.clone().unwrap_or_else(|| format!("Session{id}"));
            let req = NewSession {
                name: name.clone(),
                configuration: opts.configuration.clone(),
                idle_timeout_ms: opts.idle_timeout.map(linger_proto::duration::millis),
                buffering: opts.buffering,
                environment: opts
                    .environment
                    .clone()
                    .unwrap_or_else(|| linger_proto::environment::forwardable(std::env::vars())),
            };
            match conn.new_session(req).await {
                Ok(info) => {
                    let entry = Entry {
                        id,
                        instance_id: info.instance_id,
                        name: info.name.clone(),
                        computer_name: display_computer(computer),
                        configuration_name: info.configuration_name.clone(),
                        created_at_ms: info.created_at_ms,
                        closed_reason: None,
                        reach: self.options.reach(),
                    };
                    let mut stored = entry.clone();
                    self.registry.update(|s| {
                        stored = s.remember(entry);
                        Ok(())
                    })?;
                    return Ok(SessionView::from_info(stored, info));
                }
                Err(Error::Server(e)) if opts.name.is_none() && e.kind == ErrorKind::Exists => {
                    continue
                }
                // The server names itself by its host name; the user knows it as typed.
                Err(Error::Server(mut e)) if e.kind == ErrorKind::Exists => {
                    e.message = format!(
                        "a session named '{name}' already exists on {}",
                        display_computer(computer)
                    );
                    return Err(Error::Server(e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::State(
            "could not find a free default session name; pass --name".into(),
        ))
    }

    /// Current views of registry entries, asking each server once.
    pub async fn refresh(&self, entries: Vec<Entry>) -> Result<Vec<SessionView>> {
        let mut by_computer: Vec<(String, Vec<Entry>)> = Vec::new();
        for e in entries {
            match by_computer.iter_mut().find(|(c, _)| *c == e.computer_name) {
                Some((_, v)) => v.push(e),
                None => by_computer.push((e.computer_name.clone(), vec![e])),
            }
        }
        let mut views = Vec::new();
        let mut closed: Vec<(Uuid, String)> = Vec::new();
        for (computer, entries) in by_computer {
            let open: Vec<Uuid> = entries
                .iter()
                .filter(|e| e.closed_reason.is_none())
                .map(|e| e.instance_id)
                .collect();
            let infos = if open.is_empty() {
                Ok(Vec::new())
            } else {
                match self.connect(&computer).await {
                    Ok(c) => c.list_sessions(open).await,
                    Err(e) => Err(e),
                }
            };
            for entry in entries {
                if entry.closed_reason.is_some() {
                    views.push(SessionView::closed(entry));
                    continue;
                }
                match &infos {
                    Err(e) => views.push(SessionView::broken(entry, e.to_string())),
                    Ok(infos) => match infos.iter().find(|i| i.instance_id == entry.instance_id) {
                        Some(info) => {
                            if let Some(why) = &info.closed_reason {
                                closed.push((entry.instance_id, why.clone()));
                            }
                            views.push(SessionView::from_info(entry, info.clone()));
                        }
                        None => {
                            let why = "it no longer exists on its server".to_string();
                            closed.push((entry.instance_id, why.clone()));
                            let mut entry = entry;
                            entry.closed_reason = Some(why);
                            views.push(SessionView::closed(entry));
                        }
                    },
                }
            }
        }
        if !closed.is_empty() {
            self.registry.update(|s| {
                for (id, why) in &closed {
                    s.mark_closed(*id, why);
                }
                Ok(())
            })?;
        }
        views.sort_by_key(|v| v.entry.id);
        Ok(views)
    }

    /// The session configurations of `computer`'s daemon.
    pub async fn configurations(&self, computer: &str) -> Result<Vec<ConfigurationInfo>> {
        self.connect(computer).await?.list_configurations().await
    }

    /// Every session the caller owns on `computer`, from any client; new ones join the
    /// registry under new Ids.
    pub async fn get_remote(&self, computer: &str) -> Result<Vec<SessionView>> {
        let conn = self.connect(computer).await?;
        let infos = conn.list_sessions(Vec::new()).await?;
        let shown = display_computer(computer);
        let mut views = Vec::new();
        let mut by_instance: HashMap<Uuid, Entry> = self.registry.update(|s| {
            s.remember_all(
                infos
                    .iter()
                    .map(|info| Entry {
                        id: 0,
                        instance_id: info.instance_id,
                        name: info.name.clone(),
                        computer_name: shown.clone(),
                        configuration_name: info.configuration_name.clone(),
                        created_at_ms: info.created_at_ms,
                        closed_reason: None,
                        reach: self.options.reach(),
                    })
                    .collect(),
            );
            let listed: std::collections::HashSet<Uuid> =
                infos.iter().map(|i| i.instance_id).collect();
            Ok(s.entries()
                .iter()
                .filter(|e| listed.contains(&e.instance_id))
                .map(|e| (e.instance_id, e.clone()))
                .collect())
        })?;
        for info in infos {
            if let Some(entry) = by_instance.remove(&info.instance_id) {
                views.push(SessionView::from_info(entry, info));
            }
        }
        Ok(views)
    }

    /// [`Client::remove`] for many sessions: up to `REMOVE_IN_FLIGHT` asked of their servers
    /// at once, and the registry written once at the end rather than once per session.
    /// Answers in the order of `entries`.
    /// An outer error: the registry could not be written (the sessions were ended).
    pub async fn remove_all(&self, entries: &[Entry]) -> Result<Vec<Result<SessionView>>> {
        use futures_util::stream::{self, StreamExt};
        let asked: Vec<(usize, Result<SessionView>)> = stream::iter(entries.iter().enumerate())
            .map(|(i, entry)| async move { (i, self.end_on_server(entry).await) })
            .buffer_unordered(REMOVE_IN_FLIGHT)
            .collect()
            .await;
        let mut results: Vec<Option<Result<SessionView>>> = entries.iter().map(|_| None).collect();
        let mut forgotten = std::collections::HashSet::new();
        let mut closed_before = Vec::new();
        for (i, result) in asked {
            if result.is_ok() {
                match entries[i].closed_reason {
                    Some(_) => closed_before.push(entries[i].instance_id),
                    None => {
                        forgotten.insert(entries[i].instance_id);
                    }
                }
            }
            results[i] = Some(result);
        }
        self.registry.update(|s| {
            s.forget_sessions(&forgotten);
            for id in &closed_before {
                s.forget(*id);
            }
            Ok(())
        })?;
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::State("a removal was never answered".into()))))
            .collect())
    }

    /// Ends a session on its server (one already known to be closed is only forgotten);
    /// the registry is the caller's.
    async fn end_on_server(&self, entry: &Entry) -> Result<SessionView> {
        if entry.closed_reason.is_some() {
            return Ok(SessionView::closed(entry.clone()));
        }
        let conn = self.connect_entry(entry).await?;
        let reason = match conn.remove_session(entry.instance_id).await {
            Ok(info) => info.closed_reason.unwrap_or_else(|| "removed".into()),
            Err(Error::Server(e)) if e.kind == ErrorKind::NotFound => {
                "it no longer exists on its server".into()
            }
            Err(e) => return Err(e),
        };
        let mut closed = entry.clone();
        closed.closed_reason = Some(reason);
        Ok(SessionView::closed(closed))
    }

    /// Ends a session and forgets it (SPEC §3, as Remove-PSSession: a record kept as Closed
    /// would still match its name, and a new session of that name would become a second
    /// target). Removing a session already known to be closed only forgets it.
    pub async fn remove(&self, entry: &Entry) -> Result<SessionView> {
        self.remove_all(std::slice::from_ref(entry))
            .await?
            .pop()
            .unwrap_or_else(|| Err(Error::State("a removal was never answered".into())))
    }

    /// Attaches a session to this client (`connect`), from this or any other machine; with
    /// `force`, takes it from the client holding it (whose invoke or receive ends detached).
    pub async fn connect_session(
        &self,
        entry: &Entry,
        buffering: Option<BufferingMode>,
        force: bool,
    ) -> Result<SessionView> {
        let conn = self.open_session_conn(entry).await?;
        let result = conn
            .connect_session(entry.instance_id, buffering, force)
            .await;
        let info = self.note_closed(entry, result)?;
        // Connected with options of this command's own: later commands use them (SPEC §3).
        let reach = self.options.reach();
        let mut entry = entry.clone();
        if !reach.is_empty() && reach != entry.reach {
            entry.reach = reach;
            let remembered = entry.clone();
            self.registry.update(|s| {
                s.remember(remembered);
                Ok(())
            })?;
        }
        Ok(SessionView::from_info(entry, info))
    }

    /// Attaches a session and marks it entered by this client process (`linger enter`) until
    /// the guard is dropped: meanwhile `disconnect` from any other process is refused.
    pub async fn begin_enter(&self, entry: &Entry) -> Result<(EnterGuard, SessionView)> {
        let conn = self.open_session_conn(entry).await?;
        let result = conn.enter(entry.instance_id).await;
        let (guard, info) = self.note_closed(entry, result)?;
        Ok((guard, SessionView::from_info(entry.clone(), info)))
    }

    /// Detaches a session from this client; its commands keep running and its idle-timeout
    /// clock starts.
    pub async fn disconnect(&self, entry: &Entry, opts: &DisconnectOptions) -> Result<SessionView> {
        let conn = self.open_session_conn(entry).await?;
        let result = conn
            .disconnect_session(Disconnect {
                instance_id: entry.instance_id,
                idle_timeout_ms: opts.idle_timeout.map(linger_proto::duration::millis),
                buffering: opts.buffering,
            })
            .await;
        let info = self.note_closed(entry, result)?;
        Ok(SessionView::from_info(entry.clone(), info))
    }

    /// Connects if needed and streams what the session kept while nobody read it, then
    /// what its running command still produces, to the end.
    pub async fn receive(&self, entry: &Entry, opts: &ReceiveOptions) -> Result<CommandStream> {
        // Not `open_session_conn`: a session whose shell exited shows Closed yet may still
        // hold output to deliver; the server knows.
        let conn = self.connect_entry(entry).await?;
        let mut stream = conn.receive(Receive {
            instance_id: entry.instance_id,
            keep: opts.keep,
            buffering: opts.buffering,
            terminal: None,
        })?;
        stream.limit_output(
            self.options.max_received_data_per_command,
            entry.instance_id,
        );
        if !opts.keep {
            stream.resume_with(self.resume_for(entry, None));
        }
        Ok(stream)
    }

    /// Watches a session read-only (SPEC §14): what its commands print, live, from now on.
    pub async fn watch(&self, entry: &Entry) -> Result<crate::connection::Watch> {
        let conn = self.connect_entry(entry).await?;
        let watch = conn.watch(entry.instance_id);
        self.note_closed(entry, watch)
    }

    /// Copies `plan` into session `entry` at `destination` (SPEC §15), beside its shell:
    /// a busy session takes files too.
    pub async fn copy_to(
        &self,
        entry: &Entry,
        destination: &[u8],
        plan: linger_files::Plan,
        several: bool,
        preserve: bool,
        progress: &dyn crate::copy::CopyProgress,
    ) -> Result<linger_proto::copy::CopySummary> {
        let conn = self.connect_entry(entry).await?;
        let req = linger_proto::client::PutFiles {
            instance_id: entry.instance_id,
            destination: bytes::Bytes::copy_from_slice(destination),
            several,
            preserve,
        };
        let copied = conn.put_files(req, plan, progress).await;
        self.note_closed(entry, copied)
    }

    /// Copies `sources` out of session `entry` into `writer`.
    pub async fn copy_from(
        &self,
        entry: &Entry,
        sources: &[Vec<u8>],
        recursive: bool,
        writer: linger_files::TreeWriter,
        progress: &dyn crate::copy::CopyProgress,
    ) -> Result<linger_proto::copy::CopySummary> {
        let conn = self.connect_entry(entry).await?;
        let req = linger_proto::client::GetFiles {
            instance_id: entry.instance_id,
            sources: sources
                .iter()
                .map(|s| bytes::Bytes::copy_from_slice(s))
                .collect(),
            recursive,
        };
        let copied = conn.get_files(req, writer, progress).await;
        self.note_closed(entry, copied)
    }

    /// Enters the session's running terminal command from a window `spec`: the stream's
    /// [`CommandStream::screen`] draws it as it is, then its output follows live and its
    /// [`CommandStream::input`] types into it. The screen is `None` when the session runs
    /// no terminal command; the stream is then a plain receive.
    pub async fn receive_terminal(
        &self,
        entry: &Entry,
        spec: &TerminalSpec,
    ) -> Result<CommandStream> {
        let conn = self.connect_entry(entry).await?;
        let mut stream = conn.receive_terminal(Receive {
            instance_id: entry.instance_id,
            keep: false,
            buffering: None,
            terminal: Some(spec.clone()),
        })?;
        stream.resume_with(self.resume_for(entry, None));
        Ok(stream)
    }

    /// How a stream of `entry`'s output picks up after a broken connection.
    fn resume_for(&self, entry: &Entry, job: Option<Uuid>) -> Resume {
        Resume {
            dialer: self.dialer_for(entry),
            instance_id: entry.instance_id,
            job,
            follow: true,
            window: self.options.reconnect_window,
        }
    }

    /// Runs `script` in a session; output and the status arrive through the stream.
    pub async fn invoke(
        &self,
        entry: &Entry,
        script: &str,
        opts: &InvokeOptions,
    ) -> Result<CommandStream> {
        let conn = self.open_session_conn(entry).await?;
        let invoking = conn.invoke(invoke_request(entry, script, opts), &opts.withdrawer);
        let result = if opts.announce_busy {
            self.say_while_busy(&conn, entry, invoking).await
        } else {
            invoking.await
        };
        let mut stream = self.note_closed(entry, result)?;
        stream.limit_output(
            self.options.max_received_data_per_command,
            entry.instance_id,
        );
        if let Some(job_id) = stream.job_id() {
            self.remember_job(entry, job_id, JobKind::Remote, script)?;
        } else if !opts.disconnected {
            stream.resume_with(self.resume_for(entry, None));
        }
        Ok(stream)
    }

    /// Awaits `invoking`. The server answers only once the session is free, so when that
    /// takes more than a moment the user is told what the session is still running.
    async fn say_while_busy<T>(
        &self,
        conn: &Connection,
        entry: &Entry,
        invoking: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::pin!(invoking);
        tokio::select! {
            r = &mut invoking => return r,
            () = tokio::time::sleep(BUSY_NOTICE_AFTER) => {}
        }
        let probe = async {
            let running = conn
                .list_sessions(vec![entry.instance_id])
                .await
                .ok()
                .and_then(|infos| infos.into_iter().next())
                .and_then(|info| info.running_command);
            if let Some(command) = running {
                self.notices.say(&format!(
                    "waiting for session {}, running `{command}`",
                    entry.name
                ));
            }
        };
        tokio::select! {
            r = &mut invoking => return r,
            () = probe => {}
        }
        invoking.await
    }

    /// Starts a background job in a session (`job start`): SCRIPT runs with the session's
    /// state while the session goes on taking commands. The stream carries the launch (its
    /// end says whether the job started); the job joins the job table.
    pub async fn start_job(
        &self,
        entry: &Entry,
        script: &str,
        opts: &InvokeOptions,
    ) -> Result<(JobEntry, CommandStream)> {
        let conn = self.open_session_conn(entry).await?;
        let result = conn
            .invoke(
                Invoke {
                    disconnected: false,
                    kind: InvokeKind::BackgroundJob,
                    stdin: false,
                    terminal: None,
                    ..invoke_request(entry, script, opts)
                },
                &opts.withdrawer,
            )
            .await;
        let stream = self.note_closed(entry, result)?;
        let job_id = stream.job_id().ok_or_else(|| Error::Protocol {
            computer: entry.computer_name.clone(),
            reason: "the server did not name the job it started".into(),
        })?;
        let job = self.remember_job(entry, job_id, JobKind::Background, script)?;
        Ok((job, stream))
    }

    fn remember_job(
        &self,
        entry: &Entry,
        job_id: Uuid,
        kind: JobKind,
        script: &str,
    ) -> Result<JobEntry> {
        let mut stored = None;
        self.registry.update(|s| {
            stored = Some(s.remember_job(JobEntry {
                id: 0,
                name: String::new(),
                job_id,
                instance_id: entry.instance_id,
                session_name: entry.name.clone(),
                computer_name: entry.computer_name.clone(),
                kind,
                command: script.trim().to_string(),
                children: Vec::new(),
                ended: None,
            }));
            Ok(())
        })?;
        stored.ok_or_else(|| Error::State("the job table was not updated".into()))
    }

    /// A parent job for child jobs about to start on `computers` (`invoke --as-job` on
    /// several targets): it comes first in the job table, as PowerShell numbers them.
    pub fn remember_parent_job(&self, computers: &[String], script: &str) -> Result<JobEntry> {
        let mut stored = None;
        self.registry.update(|s| {
            stored = Some(s.remember_job(JobEntry {
                id: 0,
                name: String::new(),
                job_id: Uuid::new_v4(),
                instance_id: Uuid::nil(),
                session_name: String::new(),
                computer_name: computers.join(","),
                kind: JobKind::Remote,
                command: script.trim().to_string(),
                children: Vec::new(),
                ended: None,
            }));
            Ok(())
        })?;
        stored.ok_or_else(|| Error::State("the job table was not updated".into()))
    }

    /// Makes `children` the child jobs of `parent` and returns the parent as now recorded;
    /// a parent left without any is forgotten (`None`).
    pub fn adopt_children(
        &self,
        parent: &JobEntry,
        children: &[JobEntry],
    ) -> Result<Option<JobEntry>> {
        self.registry.update(|s| {
            if children.is_empty() {
                s.forget_job(parent.job_id);
            } else {
                s.set_children(parent.job_id, children.iter().map(|c| c.job_id).collect());
            }
            Ok(s.jobs().iter().find(|j| j.job_id == parent.job_id).cloned())
        })
    }

    /// The child jobs a parent stands for, or the job itself.
    pub fn expand_job(&self, job: &JobEntry) -> Result<Vec<JobEntry>> {
        if !job.is_parent() {
            return Ok(vec![job.clone()]);
        }
        Ok(self.registry.load()?.children_of(job))
    }

    /// Current views of jobs of this client's table, asking each session's server.
    pub async fn refresh_jobs(&self, jobs: Vec<JobEntry>) -> Result<Vec<JobView>> {
        let sessions = self.registry.load()?;
        let mut views = Vec::new();
        for job in jobs {
            if job.is_parent() {
                let children = sessions.children_of(&job);
                let child_views = Box::pin(self.refresh_jobs(children)).await?;
                views.push(JobView::parent(job, &child_views));
                continue;
            }
            let session = sessions.by_instance(job.instance_id).cloned();
            let view = match session {
                Some(entry) if entry.closed_reason.is_none() => {
                    match self.session_jobs(&entry).await {
                        Ok((_, session_view)) if job.job_id == job.instance_id => {
                            JobView::of_session_output(job, &session_view)
                        }
                        Ok((infos, session_view)) => {
                            let info = infos.into_iter().find(|i| i.job_id == job.job_id);
                            JobView::new(job, info, Some(&session_view))
                        }
                        Err(e) => JobView::unreachable(job, e.to_string()),
                    }
                }
                Some(entry) => JobView::session_ended(
                    job,
                    entry.closed_reason.unwrap_or_else(|| "it ended".into()),
                ),
                None => JobView::session_ended(job, "its session was forgotten".into()),
            };
            views.push(view);
        }
        self.record_ends(&views)?;
        Ok(views)
    }

    /// A session's jobs and the session itself, from its server.
    async fn session_jobs(&self, entry: &Entry) -> Result<(Vec<JobInfo>, SessionView)> {
        let conn = self.connect_entry(entry).await?;
        let infos = self.note_closed(entry, conn.list_jobs(entry.instance_id).await)?;
        let view = self
            .refresh(vec![entry.clone()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::State("the session vanished from the registry".into()))?;
        Ok((infos, view))
    }

    /// Every job of the sessions `entries` (background jobs included); new ones join the
    /// job table.
    pub async fn session_job_views(&self, entries: &[Entry]) -> Result<Vec<JobView>> {
        let mut views = Vec::new();
        for entry in entries {
            let (infos, session_view) = self.session_jobs(entry).await?;
            for info in infos {
                let job = self.remember_job(entry, info.job_id, info.kind, &info.command)?;
                views.push(JobView::new(job, Some(info), Some(&session_view)));
            }
        }
        self.record_ends(&views)?;
        Ok(views)
    }

    /// `receive --out-target job`: attaches the session and records a job standing for
    /// its foreground output (the running command's, or what is kept), to receive later.
    pub async fn receive_as_job(&self, entry: &Entry) -> Result<JobEntry> {
        let view = self.connect_session(entry, None, false).await?;
        let command = view
            .info
            .as_ref()
            .and_then(|i| i.running_command.clone())
            .unwrap_or_else(|| format!("output of session {}", entry.name));
        self.remember_job(entry, entry.instance_id, JobKind::Remote, &command)
    }

    /// A job's output: with `wait`, followed to the job's end; without, what it has kept
    /// so far (PowerShell's Receive-Job returns a running job's partial output).
    pub async fn receive_job(
        &self,
        job: &JobEntry,
        keep: bool,
        wait: bool,
    ) -> Result<CommandStream> {
        let entry = self.session_of(job)?;
        let conn = self.connect_entry(&entry).await?;
        let mut stream = conn.receive_job(entry.instance_id, job.job_id, keep, wait)?;
        if !keep {
            // Every job has its own channel but the one standing for the session's output
            // (`receive --out-target job`), whose id is the session's.
            let channel = (job.job_id != entry.instance_id).then_some(job.job_id);
            let mut resume = self.resume_for(&entry, channel);
            resume.follow = wait;
            stream.resume_with(resume);
        }
        Ok(stream)
    }

    pub async fn stop_job(&self, job: &JobEntry) -> Result<()> {
        let entry = self.session_of(job)?;
        let conn = self.open_session_conn(&entry).await?;
        let result = conn.stop_job(entry.instance_id, job.job_id).await;
        self.note_closed_session(&entry, result)?;
        if job.job_id == entry.instance_id {
            // The server keeps no record of a job standing for the session's output: its
            // end is this stop.
            let end = JobEnd {
                state: EndState::Stopped,
                status: None,
            };
            self.registry.update(|s| {
                s.record_job_end(job.job_id, end);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Keeps the ends the server's records show, for when those records are gone.
    fn record_ends(&self, views: &[JobView]) -> Result<()> {
        let ends: Vec<(Uuid, JobEnd)> = views
            .iter()
            .filter_map(|v| {
                let end = end_of(v.info.as_ref()?)?;
                (v.job.ended != Some(end)).then_some((v.job.job_id, end))
            })
            .collect();
        if ends.is_empty() {
            return Ok(());
        }
        self.registry.update(|s| {
            for (job_id, end) in ends {
                s.record_job_end(job_id, end);
            }
            Ok(())
        })
    }

    /// Like [`Client::note_closed`] for requests about a session's jobs, where "not found"
    /// may mean the job rather than the session: only a closed session is recorded.
    fn note_closed_session<T>(&self, entry: &Entry, result: Result<T>) -> Result<T> {
        match &result {
            Err(Error::Server(e)) if e.kind == ErrorKind::Closed => self.note_closed(entry, result),
            _ => result,
        }
    }

    /// Forgets an ended job, on the server and in the job table.
    pub async fn remove_job(&self, job: &JobEntry) -> Result<()> {
        if let Ok(entry) = self.session_of(job) {
            if entry.closed_reason.is_none() {
                let conn = self.connect_entry(&entry).await?;
                match conn.remove_job(entry.instance_id, job.job_id).await {
                    Ok(()) => {}
                    // Gone already (its session ended or forgot it): forget it here too.
                    Err(Error::Server(e))
                        if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Closed) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.registry.update(|s| {
            s.forget_job(job.job_id);
            Ok(())
        })?;
        Ok(())
    }

    fn session_of(&self, job: &JobEntry) -> Result<Entry> {
        self.registry
            .load()?
            .by_instance(job.instance_id)
            .cloned()
            .ok_or_else(|| Error::NoMatch(job.session_name.clone()))
    }

    /// The connection to a session's server, unless the registry knows it is closed.
    async fn open_session_conn(&self, entry: &Entry) -> Result<Connection> {
        if let Some(reason) = &entry.closed_reason {
            return Err(Error::Closed {
                name: entry.name.clone(),
                reason: reason.clone(),
            });
        }
        self.connect_entry(entry).await
    }

    /// Records in the registry a session the server says has ended.
    pub fn note_closed<T>(&self, entry: &Entry, result: Result<T>) -> Result<T> {
        if let Err(Error::Server(e)) = &result {
            if matches!(e.kind, ErrorKind::Closed | ErrorKind::NotFound) {
                let why = if e.kind == ErrorKind::Closed {
                    e.closed_reason.clone().unwrap_or_else(|| "it ended".into())
                } else {
                    "it no longer exists on its server".into()
                };
                self.registry.update(|s| {
                    s.mark_closed(entry.instance_id, &why);
                    Ok(())
                })?;
            }
        }
        result
    }
}

/// The `Invoke` request `opts` make for `script` in `entry`.
fn invoke_request(entry: &Entry, script: &str, opts: &InvokeOptions) -> Invoke {
    Invoke {
        instance_id: entry.instance_id,
        script: script.to_string(),
        args: opts.args.clone(),
        wait_ms: linger_proto::duration::millis(opts.wait),
        cancel_timeout_ms: linger_proto::duration::millis(opts.cancel_timeout),
        disconnected: opts.disconnected,
        kind: if opts.as_job {
            InvokeKind::Job
        } else {
            InvokeKind::Plain
        },
        stdin: opts.stdin,
        terminal: opts.terminal.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_view(state: JobViewState, has_more_data: bool) -> JobView {
        JobView {
            job: JobEntry {
                id: 2,
                name: "Job2".into(),
                job_id: Uuid::new_v4(),
                instance_id: Uuid::new_v4(),
                session_name: "s".into(),
                computer_name: "c".into(),
                kind: JobKind::Remote,
                command: "true".into(),
                children: Vec::new(),
                ended: None,
            },
            state,
            has_more_data,
            info: None,
            reason: None,
        }
    }

    /// PowerShell's parent jobs: running while any child runs, then Failed over Stopped over
    /// Completed; more data while any child has some.
    #[test]
    fn a_parent_job_is_what_its_children_make_it() {
        use JobViewState::*;
        let parent = job_view(Completed, false).job;
        let of = |children: &[(JobViewState, bool)]| {
            let views: Vec<JobView> = children.iter().map(|(s, m)| job_view(*s, *m)).collect();
            let v = JobView::parent(parent.clone(), &views);
            (v.state, v.has_more_data)
        };
        assert_eq!(of(&[(Running, false), (Failed, true)]), (Running, true));
        assert_eq!(
            of(&[(Completed, false), (Disconnected, false)]),
            (Disconnected, false)
        );
        assert_eq!(
            of(&[(Completed, true), (Failed, false), (Stopped, false)]),
            (Failed, true)
        );
        assert_eq!(
            of(&[(Completed, false), (Stopped, false)]),
            (Stopped, false)
        );
        assert_eq!(
            of(&[(Completed, false), (Completed, false)]),
            (Completed, false)
        );
        assert_eq!(of(&[]), (Stopped, false), "children all removed");
    }

    fn info(attachment: Attachment, running: bool, closed: bool) -> SessionInfo {
        SessionInfo {
            instance_id: Uuid::new_v4(),
            name: "s".into(),
            configuration_name: "default".into(),
            owner: "me".into(),
            created_at_ms: 0,
            attachment,
            closed_reason: closed.then(|| "removed".to_string()),
            running_command: running.then(|| "sleep 9".to_string()),
            idle_timeout_ms: 0,
            output_buffering_mode: BufferingMode::Block,
            disconnected_at_ms: None,
            expires_at_ms: None,
            pending_output_bytes: 0,
            dropped_output_bytes: 0,
            jobs: 0,
            blocked: false,
        }
    }

    fn entry() -> Entry {
        Entry {
            id: 1,
            instance_id: Uuid::new_v4(),
            name: "s".into(),
            computer_name: "localhost".into(),
            configuration_name: "default".into(),
            created_at_ms: 0,
            closed_reason: None,
            reach: Default::default(),
        }
    }

    /// SPEC §3's table of State and Availability, row by row, for every combination the
    /// server can report.
    #[test]
    fn state_and_availability_follow_the_spec_table() {
        use Attachment::{None as Nobody, Other, You};
        let rows = [
            // (attachment, running, closed) -> (State, Availability)
            (
                (You, false, false),
                (State::Opened, Availability::Available),
            ),
            ((You, true, false), (State::Opened, Availability::Busy)),
            (
                (Other, false, false),
                (State::Disconnected, Availability::Busy),
            ),
            (
                (Other, true, false),
                (State::Disconnected, Availability::Busy),
            ),
            (
                (Nobody, false, false),
                (State::Disconnected, Availability::None),
            ),
            (
                (Nobody, true, false),
                (State::Disconnected, Availability::None),
            ),
            ((You, true, true), (State::Closed, Availability::None)),
            ((Other, false, true), (State::Closed, Availability::None)),
            ((Nobody, false, true), (State::Closed, Availability::None)),
        ];
        for ((attachment, running, closed), expected) in rows {
            let view = SessionView::from_info(entry(), info(attachment, running, closed));
            assert_eq!(
                (view.state, view.availability),
                expected,
                "attached {attachment:?}, running {running}, closed {closed}"
            );
            assert_eq!(view.reason.is_some(), closed, "a closed session says why");
        }
        let unreachable = SessionView::broken(entry(), "connection refused".into());
        assert_eq!(
            (unreachable.state, unreachable.availability),
            (State::Broken, Availability::None)
        );
        let mut gone = entry();
        gone.closed_reason = Some("timed out".into());
        let known_closed = SessionView::closed(gone);
        assert_eq!(
            (known_closed.state, known_closed.availability),
            (State::Closed, Availability::None)
        );
        assert_eq!(known_closed.reason.as_deref(), Some("timed out"));
    }
}
