//! `lingerd`: keeps the registry of sessions, starts and re-adopts their hosts, and serves
//! clients. It never runs a shell itself (that is `linger-host`'s job) and never formats
//! anything for people (that is the CLI's).

mod account;
mod audit;
mod auth;
mod budget;
pub mod config;
mod conn;
pub mod identity;
pub mod instance;
mod keyfile;
mod keyopts;
mod liveness;
pub mod logfile;
mod login_env;
pub mod paths;
#[cfg(test)]
mod protocol_limits;
mod registry;
mod remains;
mod restricted;
mod session;
mod spawn;
pub use spawn::{raise_nofile, spawner_main, start_spawner};
pub mod tls;
mod untrusted;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linger_proto::client::NewSession;
use linger_proto::host::{HostMeta, HostSpec, SessionSettings};
use linger_proto::types::{ErrorBody, ErrorKind};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use uuid::Uuid;

pub use auth::TlsPeer;
use config::Config;
pub use conn::Peer;
use paths::DaemonPaths;
use registry::Registry;
use session::Session;

/// Longest session name accepted.
const MAX_NAME_LEN: usize = 64;
/// Most connections that may be in their handshake at once on one listener (the local
/// socket, each TLS address); more are refused at accept.
pub const MAX_HANDSHAKING: usize = 64;
/// Of those, most from one TLS peer address (as sshd's PerSourceMaxStartups).
pub const MAX_HANDSHAKING_PER_ADDRESS: usize = 10;
/// Of the local socket's, most from one uid when a system daemon serves every user.
pub const MAX_HANDSHAKING_PER_USER: usize = 32;
/// Requests one connection may have in flight (each is a task until answered); more are
/// answered `limit` at once.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 1024;
/// The same over all connections.
pub const MAX_REQUESTS: usize = 16 * 1024;
/// Bytes of unfinished frames all client connections together may hold (each connection's
/// first 256 KiB apart): a client announcing big frames and sending them slowly, on many
/// connections, costs at most this.
pub const MAX_PARTIAL_FRAME_BYTES: usize = 256 << 20;
/// How often attachments and idle timeouts are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Sessions ended, then this long without another: the memory they held goes back to the
/// system.
const TRIM_AFTER: Duration = Duration::from_secs(1);
/// Session hosts a starting daemon takes over at once (each a connection and a handshake).
const ADOPT_IN_FLIGHT: usize = 256;
/// A sweep this late means the daemon itself was stalled.
const STALL_AFTER: Duration = Duration::from_secs(2);

pub struct Daemon {
    /// Replaced whole by a reload (SIGHUP); sessions keep what they were made with.
    config: std::sync::RwLock<Arc<Config>>,
    pub paths: DaemonPaths,
    pub computer_name: String,
    registry: Registry,
    closed_tx: mpsc::UnboundedSender<Arc<Session>>,
    conns: AtomicU64,
    audit: audit::AuditLog,
    /// Places for local connections still in their handshake, by uid.
    local_budget: Arc<budget::Budget<budget::Source>>,
    /// The same for connections handed over in-process (`serve_connection`,
    /// `serve_tls_connection`); each TLS listener has its own.
    direct_budget: Arc<budget::Budget<budget::Source>>,
    /// Requests in flight over all connections.
    requests: Arc<tokio::sync::Semaphore>,
    /// Unfinished frames of all welcomed client connections.
    frame_budget: Arc<linger_proto::frame::FrameBudget>,
    /// When each client last showed a sign of life, and the heartbeat rule (`liveness.rs`).
    liveness: Mutex<liveness::Liveness>,
    /// Failed TLS authentications per address.
    auth_throttle: auth::Throttle,
    /// A system daemon (run as root) runs each session as its principal's Unix user.
    pub system: bool,
    /// The user this daemon runs as: the principal of keys without `principal="…"`.
    own_user: String,
    /// Names of the local users seen, so a connection is named without reading the user
    /// database (which opens files, and fails at the descriptor limit).
    user_names: Mutex<HashMap<u32, String>>,
}

/// Who a new session runs as (see [`Daemon::session_owner`]).
struct Owner {
    uid: u32,
    /// Set when that is not the daemon's own user.
    run_as: Option<spawn::RunAs>,
    home: String,
    /// The shell's environment before linger's own variables: the account's login
    /// variables, then the client's and the configuration's (`login_env`).
    environment: Vec<(String, String)>,
}

/// Whom a daemon serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One user, whose daemon this is (and the principals its authorized keys name).
    PerUser,
    /// Every user of the host, each session running as its owner (`lingerd --system`).
    System,
}

impl Daemon {
    /// Prepares the daemon's directories and re-adopts the session hosts a previous
    /// daemon left running.
    pub async fn start(
        config: Config,
        paths: DaemonPaths,
        mode: Mode,
    ) -> std::io::Result<Arc<Daemon>> {
        paths::private_dir(&paths.state_dir)?;
        paths::private_dir(&paths.sessions_dir())?;
        paths::private_dir(&paths.hosts_dir())?;
        if mode == Mode::System {
            for dir in [&paths.state_dir, &paths.sessions_dir(), &paths.hosts_dir()] {
                paths::traversable(dir)?;
            }
        }
        let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
        let computer_name = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let audit = audit::AuditLog::open(&paths.audit_file());
        let daemon = Arc::new(Daemon {
            config: std::sync::RwLock::new(Arc::new(config)),
            paths,
            computer_name,
            registry: Registry::default(),
            closed_tx,
            conns: AtomicU64::new(0),
            audit,
            local_budget: budget::Budget::new(
                "the local socket",
                MAX_HANDSHAKING,
                match mode {
                    Mode::System => MAX_HANDSHAKING_PER_USER,
                    Mode::PerUser => MAX_HANDSHAKING,
                },
            ),
            direct_budget: budget::Budget::new(
                "in-process connections",
                MAX_HANDSHAKING,
                MAX_HANDSHAKING,
            ),
            requests: Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS)),
            frame_budget: linger_proto::frame::FrameBudget::new(MAX_PARTIAL_FRAME_BYTES),
            liveness: Mutex::new(liveness::Liveness::new(
                Instant::now(),
                SWEEP_EVERY,
                STALL_AFTER,
            )),
            auth_throttle: auth::Throttle::default(),
            system: mode == Mode::System,
            own_user: user_name(nix::unistd::geteuid().as_raw()),
            user_names: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&daemon);
        tokio::spawn(async move {
            let mut closed_since_trim = 0usize;
            loop {
                // The timer runs only while memory waits to be given back.
                let next = match closed_since_trim {
                    0 => Ok(closed_rx.recv().await),
                    _ => tokio::time::timeout(TRIM_AFTER, closed_rx.recv()).await,
                };
                let session = match next {
                    Ok(Some(session)) => session,
                    Ok(None) => return,
                    Err(_) => {
                        if closed_since_trim > 0 {
                            closed_since_trim = 0;
                            give_memory_back();
                        }
                        continue;
                    }
                };
                closed_since_trim += 1;
                let Some(d) = weak.upgrade() else { return };
                d.registry.retire(session.id());
                tokio::task::spawn_blocking(move || {
                    let cleared = session.remains.clear();
                    match cleared {
                        remains::Cleared::Ended => {
                            tracing::warn!(session = %session.id(), name = %session.meta.name, "the session host died: ended the session's processes and removed its files")
                        }
                        remains::Cleared::HostAlive => {
                            tracing::warn!(session = %session.id(), "lost the connection to a session host that still runs")
                        }
                        remains::Cleared::Finished => {}
                    }
                });
            }
        });
        daemon.adopt_existing().await;
        let weak = Arc::downgrade(&daemon);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(d) => d.sweep(),
                    None => return,
                }
            }
        });
        Ok(daemon)
    }

    /// Drops the attachments of silent clients and removes sessions idle for longer than
    /// their idle timeout.
    fn sweep(&self) {
        self.absorb_stall();
        let now = session::now_ms();
        // Each client is judged once per sweep, however many sessions it holds: thousands
        // of sessions would otherwise take the configuration and the table's lock each.
        let timeout = self.config().server.heartbeat_timeout;
        let sessions = self.registry.all();
        let attached: Vec<Option<Uuid>> = sessions.iter().map(|s| s.attached_to()).collect();
        let clients: HashSet<Uuid> = attached.iter().flatten().copied().collect();
        let lapsed: HashSet<Uuid> = {
            let live = self.live();
            let at = Instant::now();
            clients
                .into_iter()
                .filter(|&c| live.lapsed(c, at, timeout))
                .collect()
        };
        let why = lapse_reason(timeout);
        for (s, client) in sessions.into_iter().zip(attached) {
            if let Some(client) = client.filter(|c| lapsed.contains(c)) {
                s.client_lapsed(client, &why);
                self.audit.record_daemon(
                    "disconnect",
                    s.id(),
                    &s.meta.name,
                    serde_json::json!({ "reason": why, "client": client }),
                );
            }
            if s.expire_if_idle(now) {
                self.audit.record_daemon(
                    "remove",
                    s.id(),
                    &s.meta.name,
                    serde_json::json!({ "reason": "idle timeout", "idle_timeout_ms": s.info(Uuid::nil()).idle_timeout_ms }),
                );
            }
        }
    }

    /// The daemon looks at its clients' liveness (the sweep, or a message): a stall is said
    /// in the log, and its time is not held against them.
    fn absorb_stall(&self) {
        let stalled = self.live().look(Instant::now());
        if let Some(gap) = stalled {
            tracing::warn!(
                "the daemon did not run for {}; its clients' silence meanwhile does not count",
                humantime::format_duration(Duration::from_millis(linger_proto::duration::millis(
                    gap
                )))
            );
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, liveness::Liveness> {
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why `client`'s attachments should be dropped, if it has been silent too long.
    fn lapsed(&self, client: Uuid) -> Option<String> {
        let timeout = self.config().server.heartbeat_timeout;
        self.live()
            .lapsed(client, Instant::now(), timeout)
            .then(|| lapse_reason(timeout))
    }

    /// `client` connected, describing itself as `who` (its program and where from).
    fn introduce(&self, client: Uuid, who: String) {
        self.live().introduce(client, who);
    }

    /// The refusal of a session attached to `holder`: which client that is, when it was
    /// last heard from, and when the heartbeat timeout would release the session.
    fn held_elsewhere(&self, name: &str, holder: Uuid) -> linger_proto::types::ErrorBody {
        let timeout = self.config().server.heartbeat_timeout;
        let message = {
            let live = self.live();
            let (who, silent) = live.describe(holder, Instant::now());
            held_message(name, holder, who, silent, timeout)
        };
        linger_proto::types::ErrorBody::new(linger_proto::types::ErrorKind::Busy, message)
            .with_hint(format!(
                "`linger connect {name} --force` takes it over now, ending what that client receives and losing nothing; or disconnect it there"
            ))
    }

    /// `client` showed a sign of life. If it had been silent past the heartbeat timeout,
    /// its attachments are dropped first: the sweep may simply not have run yet.
    fn saw(&self, client: Uuid) {
        self.absorb_stall();
        if let Some(why) = self.lapsed(client) {
            for s in self.registry.all() {
                s.client_lapsed(client, &why);
            }
        }
        self.live().heard(client, Instant::now());
    }

    /// The configuration in force (a snapshot: a reload swaps in a new one).
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a freshly loaded configuration in force. Running sessions keep theirs.
    pub fn reload(&self, config: Config) {
        let names: Vec<String> = config.configurations.keys().cloned().collect();
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        tracing::info!(configurations = ?names, "configuration reloaded");
    }

    /// Checks an idle timeout against the server's minimum and `max` (the maximum of
    /// configuration `configuration`).
    fn check_idle_timeout(
        &self,
        configuration: &str,
        max: Duration,
        t: Duration,
    ) -> Result<(), ErrorBody> {
        let min = self.config().server.min_idle_timeout;
        if t < min {
            return Err(ErrorBody::new(
                ErrorKind::InvalidRequest,
                format!(
                    "idle timeout {} is below this server's minimum of {}",
                    humantime::format_duration(t),
                    humantime::format_duration(min)
                ),
            )
            .with_hint("the minimum is [server] min_idle_timeout in lingerd.toml"));
        }
        if t > max {
            return Err(ErrorBody::new(
                ErrorKind::InvalidRequest,
                format!(
                    "idle timeout {} exceeds the maximum of {} set by configuration '{configuration}'",
                    humantime::format_duration(t),
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(())
    }

    /// The largest idle timeout a session may be given: what its configuration allowed when
    /// it was made (older hosts: the configuration's now).
    fn max_idle_timeout_of(&self, meta: &HostMeta) -> Duration {
        match meta.max_idle_timeout_ms {
            Some(ms) => Duration::from_millis(ms),
            None => {
                let config = self.config();
                config
                    .configurations
                    .get(&meta.configuration_name)
                    .or_else(|| config.configurations.get("default"))
                    .map(|c| c.max_idle_timeout)
                    .unwrap_or(Duration::MAX)
            }
        }
    }

    fn next_conn(&self) -> u64 {
        self.conns.fetch_add(1, Ordering::Relaxed)
    }

    /// Where session `id`'s host listens: `hosts/ID.sock`, or `hosts/UID/ID.sock` for a
    /// host a system daemon runs as user UID (a directory that user owns, since the host
    /// makes its socket itself).
    /// Where session `id`'s host listens: the daemon's own `hosts/` for its own sessions,
    /// else `hosts/UID/` of the user its session directory was handed to. Decided from
    /// that directory (which only the daemon creates and hands over), never by searching
    /// directories users control: a socket another user plants under their own `hosts/UID/`
    /// with a victim's id is never looked at.
    fn host_socket(&self, id: Uuid) -> std::path::PathBuf {
        use std::os::unix::fs::MetadataExt;
        let name = format!("{}.sock", id.simple());
        let dir = self.paths.sessions_dir().join(id.to_string());
        match std::fs::symlink_metadata(&dir).map(|m| m.uid()) {
            Ok(uid) if uid != nix::unistd::geteuid().as_raw() => {
                self.paths.hosts_dir().join(uid.to_string()).join(name)
            }
            _ => self.paths.hosts_dir().join(name),
        }
    }

    /// The principal of a local connection from `uid`: its user's name (`uid<N>` for a uid
    /// with no name). An error only when the user database cannot be read.
    fn principal_of(&self, uid: u32) -> Result<String, ErrorBody> {
        if uid == nix::unistd::geteuid().as_raw() {
            return Ok(self.own_user.clone());
        }
        let mut names = self.user_names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(name) = names.get(&uid) {
            return Ok(name.clone());
        }
        let name = match nix::unistd::User::from_uid(uid.into()) {
            Ok(Some(u)) => u.name,
            Ok(None) => format!("uid{uid}"),
            Err(e) => {
                let why = linger_host::io_error_text(&std::io::Error::from(e));
                return Err(ErrorBody::new(
                    ErrorKind::Internal,
                    format!("cannot read the user database to name uid {uid}: {why}"),
                ));
            }
        };
        names.insert(uid, name.clone());
        Ok(name)
    }

    /// Whether a host running as `uid` may hold the session `meta` describes: this daemon's
    /// own hosts may; another user's host (a system daemon's) only a session that user owns,
    /// or one of a configuration that runs its sessions as that user. A host sits in a
    /// directory its user controls, so what it says of itself is checked against its uid.
    fn host_may_claim(&self, meta: &HostMeta, uid: u32) -> bool {
        if uid == nix::unistd::geteuid().as_raw() {
            return true;
        }
        if uid != meta.owner_uid {
            return false;
        }
        let name = user_name(uid);
        name == meta.owner
            || self
                .config()
                .configurations
                .get(&meta.configuration_name)
                .and_then(|c| c.run_as.as_ref())
                == Some(&name)
    }

    /// Whether `principal` may use configuration `c` (its `allowed_principals` and
    /// `allowed_groups`; groups are the principal's Unix groups, where it is a user).
    pub(crate) fn may_use(&self, c: &config::Configuration, principal: &str) -> bool {
        let groups = if c.allowed_groups.is_some() {
            unix_groups(principal)
        } else {
            Vec::new()
        };
        c.admits(principal, &groups)
    }

    /// Who a new session of `principal` in `config` runs as, with what login environment
    /// and where: the configuration's `run_as` user if it names one, else the principal's
    /// (for a per-user daemon, always the daemon's own user).
    fn session_owner(
        &self,
        principal: &str,
        config: &config::Configuration,
    ) -> Result<Owner, ErrorBody> {
        if let Some(run_as) = &config.run_as {
            let me = user_name(nix::unistd::geteuid().as_raw());
            if !self.system && *run_as != me {
                return Err(ErrorBody::new(
                    ErrorKind::InvalidRequest,
                    format!(
                        "configuration '{}' runs sessions as '{run_as}', which only a system daemon (lingerd --system) can do",
                        config.name
                    ),
                ));
            }
            if self.system {
                return self.unix_owner(run_as);
            }
        }
        if !self.system {
            return Ok(own_user_owner());
        }
        self.unix_owner(principal)
    }

    /// A session running as Unix user `name`, with a clean environment in its home.
    fn unix_owner(&self, name: &str) -> Result<Owner, ErrorBody> {
        let principal = name;
        let user = nix::unistd::User::from_name(principal)
            .ok()
            .flatten()
            .ok_or_else(|| {
                ErrorBody::new(
                    ErrorKind::Auth,
                    format!("'{principal}' has no Unix account on {}", self.computer_name),
                )
                .with_hint("a system daemon runs each session as its owner's Unix user: principal=\"NAME\" must name one")
            })?;
        let account = login_env::Account {
            name: user.name.clone(),
            home: user.dir.display().to_string(),
            shell: user.shell.display().to_string(),
            runtime_dir: runtime_dir(user.uid.as_raw()),
        };
        let run_as = (user.uid != nix::unistd::geteuid()).then(|| {
            let groups = std::ffi::CString::new(user.name.clone())
                .ok()
                .and_then(|name| nix::unistd::getgrouplist(&name, user.gid).ok())
                .unwrap_or_else(|| vec![user.gid]);
            spawn::RunAs {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
                groups: groups.into_iter().map(|g| g.as_raw()).collect(),
            }
        });
        Ok(Owner {
            uid: user.uid.as_raw(),
            run_as,
            home: account.home.clone(),
            environment: login_env::login(&account),
        })
    }

    /// Finds hosts from an earlier daemon in the state directory and takes them over, many
    /// at once (each is a connection and a handshake: thousands of them one after another
    /// would keep the daemon from serving for seconds).
    async fn adopt_existing(&self) {
        use futures_util::stream::{self, StreamExt};
        let Ok(dir) = std::fs::read_dir(self.paths.sessions_dir()) else {
            return;
        };
        let found: Vec<(Uuid, std::path::PathBuf)> = dir
            .flatten()
            .filter_map(|entry| {
                let id = Uuid::parse_str(entry.file_name().to_str()?).ok()?;
                Some((id, entry.path()))
            })
            .collect();
        stream::iter(found)
            .for_each_concurrent(ADOPT_IN_FLIGHT, |(id, path)| self.adopt_one(id, path))
            .await;
    }

    async fn adopt_one(&self, id: Uuid, path: std::path::PathBuf) {
        let socket = self.host_socket(id);
        match Session::adopt(&socket, path.clone(), self.closed_tx.clone(), &|m, uid| {
            self.host_may_claim(m, uid)
        })
        .await
        {
            Ok(session) => {
                tracing::info!(session = %id, name = %session.meta.name, "re-adopted session host");
                self.registry.insert(session);
            }
            Err(session::AdoptError::Io(e)) => {
                tracing::warn!(session = %id, "session host is gone ({e}); forgetting it");
                let _ = std::fs::remove_dir_all(&path);
                let _ = std::fs::remove_file(&socket);
                remove_cgroups_of(id, true);
            }
            // It answered: it lives, but cannot be driven by this daemon. Its files stay
            // so that a matching daemon can adopt it again.
            Err(e) => {
                tracing::error!(session = %id, "cannot adopt a running session host: {e}")
            }
        }
    }

    async fn create_session(
        &self,
        peer: &Peer,
        client: Uuid,
        req: NewSession,
    ) -> Result<Arc<Session>, ErrorBody> {
        validate_name(&req.name)?;
        let config_name = req.configuration.as_deref().unwrap_or("default");
        let all = self.config();
        // A configuration not open to this principal does not exist for it.
        let config = all
            .configurations
            .get(config_name)
            .filter(|c| self.may_use(c, &peer.principal));
        let config = config.ok_or_else(|| {
            ErrorBody::new(
                ErrorKind::NotFound,
                format!(
                    "no session configuration named '{config_name}' on {}",
                    self.computer_name
                ),
            )
            .with_hint("`linger config list --computer HOST` shows them")
        })?;
        let idle_timeout = match req.idle_timeout_ms {
            Some(ms) => Duration::from_millis(ms),
            None => config.idle_timeout,
        };
        self.check_idle_timeout(config_name, config.max_idle_timeout, idle_timeout)?;
        let from_client = linger_proto::environment::accepted(&req.environment).map_err(|e| {
            ErrorBody::new(ErrorKind::InvalidRequest, e.to_string()).with_hint(
                "send only locale and terminal variables (LANG, LC_*, TERM), short and on one line",
            )
        })?;
        let mut owner = self.session_owner(&peer.principal, config)?;
        owner.environment = login_env::compose(owner.environment, from_client, &config.environment);
        let reservation = self
            .registry
            .reserve(
                &peer.principal,
                &req.name,
                &config.name,
                config.max_sessions_per_user as usize,
                // A system daemon's principals never share a uid (run_as included): one
                // could reach the other's processes.
                self.system.then_some(owner.uid),
            )
            .map_err(|refusal| match refusal {
                registry::Refusal::NameTaken => ErrorBody::new(
                    ErrorKind::Exists,
                    format!(
                        "a session named '{}' already exists on {}",
                        req.name, self.computer_name
                    ),
                )
                .with_hint("choose another --name, or remove the old one"),
                registry::Refusal::UidInUse => ErrorBody::new(
                    ErrorKind::Busy,
                    format!(
                        "configuration '{config_name}' runs sessions as a user that another principal's session runs as on {}",
                        self.computer_name
                    ),
                )
                .with_hint("sessions of different principals never share a Unix user; try again once that session has ended"),
                registry::Refusal::Limit(live) => ErrorBody::new(
                    ErrorKind::Limit,
                    format!(
                        "you have {live} sessions of configuration '{config_name}' on {}, its limit (max_sessions_per_user)",
                        self.computer_name
                    ),
                )
                .with_hint("remove one (`linger get --computer HOST` lists them)"),
            })?;
        let session = self
            .spawn_session(peer, client, &req, config, owner, idle_timeout)
            .await?;
        reservation.fill(session.clone());
        tracing::info!(session = %session.id(), name = %req.name, principal = %peer.principal, from = %peer.from, configuration = %config_name, "session started");
        self.audit.record(
            peer,
            "session_start",
            session.id(),
            &req.name,
            serde_json::json!({ "configuration": config_name }),
        );
        Ok(session)
    }

    async fn spawn_session(
        &self,
        peer: &Peer,
        client: Uuid,
        req: &NewSession,
        config: &config::Configuration,
        owner: Owner,
        idle_timeout: Duration,
    ) -> Result<Arc<Session>, ErrorBody> {
        let id = Uuid::new_v4();
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!(session = %id, "{what}: {e}");
            ErrorBody::new(ErrorKind::Internal, format!("{what}: {e}"))
        };
        let session_dir = self.paths.sessions_dir().join(id.to_string());
        paths::private_dir(&session_dir).map_err(|e| {
            internal(
                "cannot create the session directory",
                &linger_host::io_error_text(&e),
            )
        })?;
        let mut socket = self.paths.hosts_dir().join(format!("{}.sock", id.simple()));
        if let Some(run_as) = &owner.run_as {
            // The host runs as the owner and writes its own files: hand it its directories.
            let hosts = self.paths.hosts_dir().join(run_as.uid.to_string());
            let handed = paths::private_dir(&hosts)
                .and_then(|()| paths::give(&hosts, run_as.uid, run_as.gid))
                .and_then(|()| paths::give(&session_dir, run_as.uid, run_as.gid));
            if let Err(e) = handed {
                let _ = std::fs::remove_dir_all(&session_dir);
                return Err(internal("cannot prepare the session's directories", &e));
            }
            socket = hosts.join(format!("{}.sock", id.simple()));
        }
        let cwd = config
            .working_directory
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or(owner.home.clone());
        let mut environment = owner.environment.clone();
        if let Some(startup) = &config.startup {
            // The shell's command loop runs it before the first command; what it prints goes to
            // startup.log in the session's directory.
            environment.push(("__LINGER_STARTUP".into(), startup.display().to_string()));
            environment.push((
                "__LINGER_STARTUP_LOG".into(),
                session_dir.join("startup.log").display().to_string(),
            ));
        }
        environment.push(("LINGER_SESSION_ID".into(), id.to_string()));
        environment.push(("LINGER_SESSION_NAME".into(), req.name.clone()));
        let created_at_ms = session::now_ms();
        let buffering = req.buffering.unwrap_or(config.output_buffering);
        let idle_timeout_ms = linger_proto::duration::millis(idle_timeout);
        let mut spec = HostSpec {
            meta: HostMeta {
                instance_id: id,
                name: req.name.clone(),
                owner: peer.principal.clone(),
                owner_uid: owner.uid,
                configuration_name: config.name.clone(),
                created_at_ms,
                idle_timeout_ms,
                buffering,
                output_buffer_size: config.output_buffer_size,
                spool_limit: config.spool_limit,
                host_pid: 0,
                shell_pid: 0,
                max_idle_timeout_ms: Some(linger_proto::duration::millis(config.max_idle_timeout)),
                restricted: config.restricted.clone(),
                restricted_arguments: config.arguments.clone(),
            },
            settings: SessionSettings {
                buffering,
                idle_timeout_ms,
                attached_to: Some(client),
                disconnected_at_ms: None,
            },
            shell: config.shell.clone(),
            environment,
            working_directory: cwd,
            socket_path: socket.display().to_string(),
            session_dir: session_dir.display().to_string(),
            limits: linger_proto::host::SessionLimits {
                memory: Some(config.max_memory_per_session),
                processes: config.max_processes_per_session,
            },
            cgroups: None,
            // Filled in by `spawn_host`.
            run_as: None,
            nofile: None,
        };
        // A host that will run as another user cannot make control groups: a system
        // daemon makes them now, as root, and hands over their `cgroup.procs`.
        let prepared = match &owner.run_as {
            Some(_) if self.system => {
                let (name, limits) = (id.simple().to_string(), spec.limits);
                tokio::task::spawn_blocking(move || {
                    linger_host::limits::make_cgroups(&name, &limits)
                })
                .await
                .ok()
            }
            _ => None,
        };
        let inherit = prepared.as_ref().map(|p| p.procs_fds()).unwrap_or_default();
        if let Some(p) = prepared.as_ref().filter(|p| !p.cgroups.is_empty()) {
            spec.cgroups = Some(linger_proto::host::PreparedCgroups {
                dirs: p.cgroups.iter().map(|d| d.display().to_string()).collect(),
                procs_fds: (3..3 + inherit.len() as i32).collect(),
                how: p.how.clone(),
            });
        }
        let cleanup = || {
            let _ = std::fs::remove_dir_all(&session_dir);
            let _ = std::fs::remove_file(&socket);
        };
        let host_log = session_dir.join("host.log");
        let spawned = spawn::spawn_host(&spec, &host_log, owner.run_as.as_ref(), &inherit).await;
        // The host holds its own copies now.
        drop(prepared);
        if let Err(e) = spawned {
            remove_cgroups_of(id, false);
            cleanup();
            return Err(internal("cannot start the session", &e));
        }
        match Session::adopt(
            &socket,
            session_dir.clone(),
            self.closed_tx.clone(),
            &|m, uid| self.host_may_claim(m, uid),
        )
        .await
        {
            Ok(s) => Ok(s),
            Err(e) => {
                remove_cgroups_of(id, true);
                cleanup();
                Err(internal("cannot reach the new session", &e))
            }
        }
    }
}

fn validate_name(name: &str) -> Result<(), ErrorBody> {
    let bad = |why: &str| {
        Err(ErrorBody::new(
            ErrorKind::InvalidRequest,
            format!("invalid session name '{name}': {why}"),
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.chars().count() > MAX_NAME_LEN {
        return bad("it is longer than 64 characters");
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "*?[]/,@".contains(c))
    {
        return bad("use letters, digits and . _ - only (no spaces, wildcards, / , or @)");
    }
    if name.parse::<u64>().is_ok() {
        return bad("a number would be mistaken for an Id");
    }
    if Uuid::parse_str(name).is_ok() {
        return bad("a UUID would be mistaken for an InstanceId");
    }
    Ok(())
}

impl Daemon {
    /// Serves one already-established connection whose peer the transport authenticated as
    /// `peer` (used by transports and by the fuzzer), if its handshake budget has room.
    pub async fn serve_connection<R, W>(self: &Arc<Self>, r: R, w: W, peer: Peer)
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let source = budget::Source::Principal(peer.principal.clone());
        let Some(slot) = admit(&self.direct_budget, source, &peer.from) else {
            return;
        };
        conn::serve(self.clone(), r, w, conn::Admission::Trusted(peer), slot).await;
    }

    /// Serves one connection whose TLS handshake is done: the client must log in first
    /// (used by the TLS listener and by the fuzzer).
    pub async fn serve_tls_connection<R, W>(self: &Arc<Self>, r: R, w: W, peer: TlsPeer)
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let from = peer.addr.to_string();
        let Some(slot) = admit(
            &self.direct_budget,
            budget::Source::Ip(peer.addr.ip()),
            &from,
        ) else {
            return;
        };
        conn::serve(self.clone(), r, w, conn::Admission::Challenge(peer), slot).await;
    }
}

/// A handshake place in `budget` for a connection from `source`, or `None` (and a log line
/// saying why) when there is none.
pub(crate) fn admit(
    budget: &Arc<budget::Budget<budget::Source>>,
    source: budget::Source,
    from: &str,
) -> Option<budget::Slot<budget::Source>> {
    match budget.try_admit(source) {
        Ok(slot) => Some(slot),
        Err(why) => {
            tracing::warn!(%from, "refusing a connection on {}: {why}", budget.name);
            None
        }
    }
}

/// Returns the heap's free memory to the system (the allocator keeps up to 32 MiB of it for
/// the output path's buffers): after sessions ended, nothing will reuse it soon.
fn give_memory_back() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Removes session `id`'s control groups (made by a system daemon for a host that could
/// not, or left by a host that failed), off the runtime; with `kill`, ending any process
/// still in them first.
fn remove_cgroups_of(id: Uuid, kill: bool) {
    let name = id.simple().to_string();
    tokio::task::spawn_blocking(move || match kill {
        true => linger_host::limits::kill_and_remove_for(&name),
        false => linger_host::limits::remove_for(&name),
    });
}

/// The names of the Unix groups user `name` belongs to (primary and supplementary); none if
/// it is no user.
fn unix_groups(name: &str) -> Vec<String> {
    let Some(user) = nix::unistd::User::from_name(name).ok().flatten() else {
        return Vec::new();
    };
    let Ok(cname) = std::ffi::CString::new(name) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&cname, user.gid)
        .unwrap_or_else(|_| vec![user.gid])
        .into_iter()
        .filter_map(|gid| nix::unistd::Group::from_gid(gid).ok().flatten())
        .map(|g| g.name)
        .collect()
}

/// The name of user `uid`, or `uid<N>` if it has no passwd entry.
/// The owner of a per-user daemon's sessions: the daemon's own user, in the daemon's `HOME`
/// (the user's, unless whoever started the daemon chose another), with a login environment
/// from its account rather than the daemon's environment.
fn own_user_owner() -> Owner {
    let uid = nix::unistd::geteuid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten();
    let home = std::env::var("HOME")
        .ok()
        .filter(|h| h.starts_with('/'))
        .or_else(|| user.as_ref().map(|u| u.dir.display().to_string()))
        .unwrap_or_else(|| "/".into());
    let account = login_env::Account {
        name: user_name(uid.as_raw()),
        home: home.clone(),
        shell: user
            .as_ref()
            .map(|u| u.shell.display().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/bin/sh".into()),
        runtime_dir: runtime_dir(uid.as_raw()),
    };
    Owner {
        uid: uid.as_raw(),
        run_as: None,
        home,
        environment: login_env::login(&account),
    }
}

/// `/run/user/UID` if systemd-logind made it for `uid` (what a login of the user would get).
fn runtime_dir(uid: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dir = format!("/run/user/{uid}");
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid).then_some(dir)
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid{uid}"))
}

/// Serves clients on the daemon's Unix socket until `shutdown` completes. A per-user daemon
/// serves only its own user; a system daemon every user, each as themselves (both checked
/// with SO_PEERCRED).
pub async fn serve_unix(
    daemon: Arc<Daemon>,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut spare = Spare::take();
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // As sshd's MaxStartups: connections that have not introduced themselves
                    // are bounded in number, per uid too (and, by the Hello timeout, in
                    // time).
                    let uid = match stream.peer_cred() {
                        Ok(c) => c.uid(),
                        Err(e) => {
                            tracing::warn!("cannot identify a local peer: {e}");
                            continue;
                        }
                    };
                    let from = format!("local uid {uid}");
                    let Some(slot) = admit(&daemon.local_budget, budget::Source::Uid(uid), &from)
                    else {
                        drop(stream);
                        continue;
                    };
                    let daemon = daemon.clone();
                    tokio::spawn(async move { serve_local(daemon, stream, uid, slot).await });
                }
                Err(e) if linger_host::out_of_descriptors(&e) && spare.0.is_some() => {
                    let why = linger_host::io_error_text(&e);
                    tracing::error!("cannot accept a local client: {why}");
                    spare.0 = None;
                    let pending = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
                    if let Ok(Ok((stream, _))) = pending {
                        let refusal = ErrorBody::new(ErrorKind::Limit, format!("lingerd cannot serve another connection: {why}"));
                        tokio::spawn(goodbye(stream, refusal));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    spare = Spare::take();
                }
                Err(e) => {
                    tracing::error!("accept failed: {}", linger_host::io_error_text(&e));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if spare.0.is_none() {
                        spare = Spare::take();
                    }
                }
            }
        }
    }
}

/// Refuses a local connection before its handshake, in one line.
async fn goodbye(stream: UnixStream, error: ErrorBody) {
    let (_, w) = stream.into_split();
    let mut writer = linger_proto::frame::FrameWriter::new(w);
    let _ = writer
        .write(&linger_proto::server::ServerMsg::Goodbye { error })
        .await;
}

/// A descriptor held in reserve for the descriptor limit: there accept fails and a client
/// would wait in the backlog for ever, so the daemon closes this one, accepts the client,
/// tells it why in one line, and takes the descriptor back.
pub(crate) struct Spare(pub(crate) Option<std::fs::File>);

impl Spare {
    pub(crate) fn take() -> Spare {
        Spare(std::fs::File::open("/dev/null").ok())
    }
}

async fn serve_local(
    daemon: Arc<Daemon>,
    stream: UnixStream,
    uid: u32,
    handshaking: budget::Slot<budget::Source>,
) {
    let me = nix::unistd::geteuid().as_raw();
    if uid != me && !daemon.system {
        tracing::warn!(uid, "refused a local connection from another user");
        goodbye(
            stream,
            ErrorBody::new(
                ErrorKind::Auth,
                "this daemon serves only its own user; start your own lingerd",
            ),
        )
        .await;
        return;
    }
    let principal = match daemon.principal_of(uid) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(uid, "cannot name a local user: {e}");
            goodbye(stream, e).await;
            return;
        }
    };
    // A connection bridged by `lingerd --stdio` came over ssh: say from where.
    let via_ssh = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .and_then(ssh_origin);
    let from = match via_ssh {
        // The peer's own environment says so: any local user could set it, so it is a
        // claim, and the record says whose.
        Some(origin) => format!("local uid {uid}, claiming ssh from {origin}"),
        None => format!("local uid {uid}"),
    };
    // A local user is the session's owner on this machine: nothing denies a terminal.
    let peer = Peer {
        principal,
        from,
        no_pty: false,
    };
    let (r, w) = stream.into_split();
    conn::serve(daemon, r, w, conn::Admission::Trusted(peer), handshaking).await;
}

/// The `SSH_CONNECTION` client address and port of a local peer process, if it runs under
/// sshd (the ssh transport's `lingerd --stdio`). Same user, so its environment is readable.
fn ssh_origin(pid: i32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let value = environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"SSH_CONNECTION="))?;
    let text = String::from_utf8_lossy(value);
    let mut fields = text.split_whitespace();
    Some(format!("{} port {}", fields.next()?, fields.next()?))
}

/// "session NAME is attached to another client …": who, last heard, released when.
fn held_message(
    name: &str,
    holder: Uuid,
    who: Option<&str>,
    silent: Duration,
    timeout: Duration,
) -> String {
    let round = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
    let mut id = holder.simple().to_string();
    id.truncate(8);
    let who = who.map(|w| format!(", {w}")).unwrap_or_default();
    format!(
        "session {name} is attached to another client ({id}{who}), last heard from {} ago; \
         it is released if that client stays silent for {} more",
        round(silent),
        round(timeout.saturating_sub(silent)),
    )
}

/// Why a silent client's attachments were dropped.
fn lapse_reason(timeout: Duration) -> String {
    format!(
        "its client showed no sign of life for {}",
        humantime::format_duration(timeout)
    )
}
