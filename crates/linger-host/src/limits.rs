//! A session's resource limits (`max_memory_per_session`, `max_processes_per_session`),
//! applied to the shell and everything it starts, never to the host itself (so an
//! out-of-memory kill takes a command, and the host lives to report it).
//!
//! Where the host may make control groups (cgroup v2, or the v1 `memory` and `pids`
//! hierarchies; in practice when it runs as root), the session gets one of its own:
//! `memory.max` / `memory.limit_in_bytes` count the whole session's memory, `pids.max` its
//! processes. Otherwise it falls back to rlimits, which are weaker: `RLIMIT_DATA` limits
//! each process's heap and private mappings separately, and `RLIMIT_NPROC` counts every
//! process of the session's user (and binds nobody running as root).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use linger_proto::host::SessionLimits;

/// Limits ready to be entered by the shell between fork and exec.
#[derive(Default)]
pub struct Prepared {
    /// The session's control groups.
    pub cgroups: Vec<PathBuf>,
    /// Each group's `cgroup.procs`, opened beforehand: the child writes "0" (itself) there.
    join: Vec<OwnedFd>,
    /// rlimits for what no control group covers: (resource, value).
    rlimits: Vec<(libc::c_int, u64)>,
    /// How each limit is enforced, for the log.
    pub how: Vec<String>,
}

impl Prepared {
    /// The `cgroup.procs` descriptors, in the order of `cgroups`.
    pub fn procs_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.join.iter().map(|fd| fd.as_raw_fd()).collect()
    }

    /// Runs in the child before exec: only system calls on prepared data.
    pub fn enter(&self) -> std::io::Result<()> {
        for fd in &self.join {
            // SAFETY: write(2) on an fd we own, from a static buffer.
            if unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        for &(resource, value) in &self.rlimits {
            let lim = libc::rlimit {
                rlim_cur: value as libc::rlim_t,
                rlim_max: value as libc::rlim_t,
            };
            // SAFETY: setrlimit(2) with a valid struct.
            if unsafe { libc::setrlimit(resource as _, &lim) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The control groups this host made (one session per host process).
static CGROUPS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();

/// Removes the control groups this host made, once the session's processes are gone.
pub fn remove_cgroups() {
    remove_dirs(CGROUPS.get().map(Vec::as_slice).unwrap_or_default());
}

/// Decides how to enforce `limits` for session `id`, making its control groups where this
/// process may (the host's own, which it removes at the end).
pub fn prepare(id: &str, limits: &SessionLimits) -> Prepared {
    let p = make_cgroups(id, limits);
    let _ = CGROUPS.set(p.cgroups.clone());
    with_rlimits(p, limits)
}

/// Makes session `id`'s control groups, if this process may, with their limits written and
/// their `cgroup.procs` opened. A system daemon calls this as root for a host that will run
/// as another user, and hands it the descriptors (`HostSpec.cgroups`).
pub fn make_cgroups(id: &str, limits: &SessionLimits) -> Prepared {
    let mut p = Prepared::default();
    if limits.memory.is_none() && limits.processes.is_none() {
        return p;
    }
    let name = format!("linger-{id}");
    if !v2(&name, limits, &mut p) {
        v1(&name, limits, &mut p);
    }
    p
}

/// Control groups the daemon made and handed over: descriptors inherited at `procs_fds`.
pub fn inherited(given: &linger_proto::host::PreparedCgroups, limits: &SessionLimits) -> Prepared {
    use std::os::fd::FromRawFd;
    let p = Prepared {
        cgroups: given.dirs.iter().map(PathBuf::from).collect(),
        // SAFETY: the daemon put these descriptors there for us, and nothing else owns them.
        // Close-on-exec: opened by root, they must never reach the shell, which could move
        // any process into its group with them.
        join: given
            .procs_fds
            .iter()
            .map(|&fd| unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                OwnedFd::from_raw_fd(fd)
            })
            .collect(),
        rlimits: Vec::new(),
        how: given.how.clone(),
    };
    with_rlimits(p, limits)
}

/// Removes session `id`'s control groups (made by [`make_cgroups`] in this process's own
/// group), once their processes are gone. For the daemon, at a session's end.
pub fn remove_for(id: &str) {
    remove_dirs(&dirs_for(id));
}

/// Ends every process left in session `id`'s control groups, then removes them: for the
/// daemon, when a host died without ending its session. Blocking.
pub fn kill_and_remove_for(id: &str) {
    let dirs = dirs_for(id);
    for dir in &dirs {
        kill_members(dir);
    }
    remove_dirs(&dirs);
}

/// Where session `id`'s control groups are, if it has any: below this process's own group
/// in each hierarchy (a host's group is its daemon's).
fn dirs_for(id: &str) -> Vec<PathBuf> {
    let name = format!("linger-{id}");
    let mut dirs = Vec::new();
    if let Some(own) = own_cgroup("") {
        dirs.push(
            Path::new("/sys/fs/cgroup")
                .join(own.trim_start_matches('/'))
                .join(&name),
        );
    }
    for controller in ["memory", "pids"] {
        if let Some(own) = own_cgroup(controller) {
            dirs.push(
                Path::new("/sys/fs/cgroup")
                    .join(controller)
                    .join(own.trim_start_matches('/'))
                    .join(&name),
            );
        }
    }
    dirs.retain(|d| d.exists());
    dirs
}

/// SIGKILL to every process in the group at `dir`, until none is left.
fn kill_members(dir: &Path) {
    // cgroup v2 (Linux 5.14 on) ends them all at once, forks included.
    if write(&dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for _ in 0..100 {
        let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
            return;
        };
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() {
            return;
        }
        // A fork racing the read is listed at the next one.
        crate::procs::signal_all(&pids, nix::sys::signal::Signal::SIGKILL);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn remove_dirs(dirs: &[PathBuf]) {
    for dir in dirs {
        // The group empties as the kernel reaps its last processes, which can take a while
        // on a loaded machine.
        for _ in 0..250 {
            if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// rlimits for what no control group covers.
fn with_rlimits(mut p: Prepared, limits: &SessionLimits) -> Prepared {
    let memory_done = p.how.iter().any(|h| h.starts_with("memory"));
    let procs_done = p.how.iter().any(|h| h.starts_with("processes"));
    if let (Some(bytes), false) = (limits.memory, memory_done) {
        p.rlimits.push((libc::RLIMIT_DATA as libc::c_int, bytes));
        p.how
            .push(format!("memory: RLIMIT_DATA {bytes} per process"));
    }
    if let (Some(n), false) = (limits.processes, procs_done) {
        p.rlimits
            .push((libc::RLIMIT_NPROC as libc::c_int, n as u64));
        p.how
            .push(format!("processes: RLIMIT_NPROC {n} for the user"));
    }
    p
}

/// This process's control group in hierarchy `controller` ("" for v2), from /proc.
fn own_cgroup(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        matches.then(|| path.to_string())
    })
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

fn open_procs(dir: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    Ok(std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join("cgroup.procs"))?
        .into())
}

/// A unified (v2) hierarchy with the controllers delegated to us.
fn v2(name: &str, limits: &SessionLimits, p: &mut Prepared) -> bool {
    let root = Path::new("/sys/fs/cgroup");
    if !root.join("cgroup.controllers").exists() {
        return false;
    }
    let Some(own) = own_cgroup("") else {
        return false;
    };
    let parent = root.join(own.trim_start_matches('/'));
    let _ = write(&parent.join("cgroup.subtree_control"), "+memory +pids");
    let dir = parent.join(name);
    if std::fs::create_dir(&dir).is_err() {
        return false;
    }
    let ok = (|| -> std::io::Result<()> {
        if let Some(bytes) = limits.memory {
            write(&dir.join("memory.max"), &bytes.to_string())?;
            let _ = write(&dir.join("memory.swap.max"), "0");
        }
        if let Some(n) = limits.processes {
            write(&dir.join("pids.max"), &n.to_string())?;
        }
        p.join.push(open_procs(&dir)?);
        Ok(())
    })();
    if ok.is_err() {
        let _ = std::fs::remove_dir(&dir);
        return false;
    }
    if let Some(bytes) = limits.memory {
        p.how.push(format!("memory: cgroup v2 memory.max {bytes}"));
    }
    if let Some(n) = limits.processes {
        p.how.push(format!("processes: cgroup v2 pids.max {n}"));
    }
    p.cgroups.push(dir);
    true
}

/// The v1 `memory` and `pids` hierarchies, each on its own.
fn v1(name: &str, limits: &SessionLimits, p: &mut Prepared) {
    let mut one = |controller: &str, file: &str, value: String, what: &str| {
        let Some(own) = own_cgroup(controller) else {
            return;
        };
        let dir = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(own.trim_start_matches('/'))
            .join(name);
        if std::fs::create_dir(&dir).is_err() {
            return;
        }
        let joined = write(&dir.join(file), &value).and_then(|()| open_procs(&dir));
        match joined {
            Ok(fd) => {
                p.join.push(fd);
                p.cgroups.push(dir);
                p.how.push(format!("{what}: cgroup v1 {file} {value}"));
            }
            Err(_) => {
                let _ = std::fs::remove_dir(&dir);
            }
        }
    };
    if let Some(bytes) = limits.memory {
        one(
            "memory",
            "memory.limit_in_bytes",
            bytes.to_string(),
            "memory",
        );
    }
    if let Some(n) = limits.processes {
        one("pids", "pids.max", n.to_string(), "processes");
    }
}
