//! The session's process tree, read from /proc. The host is a child subreaper, so
//! everything the shell starts (even what double-forks) stays below the host.

use std::fs;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    /// Start time in clock ticks after boot: with the pid, it names one process for good.
    pub start: u64,
    pub zombie: bool,
}

/// What /proc says of `pid`, if it exists.
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the name: state(0) ppid(1) … starttime is field 22 of the whole line, 19 here.
    Some(ProcStat {
        pid,
        zombie: fields.first() == Some(&"Z"),
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn all() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// Whether this process has a child left (running, or exited and not yet reaped).
pub fn has_children() -> bool {
    // SAFETY: waitid with WNOWAIT only inspects; the siginfo is ours to fill.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    !(r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

/// Every descendant of `root` (not `root` itself).
pub fn descendants(root: i32) -> Vec<(i32, u64)> {
    let procs = all();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(procs.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        i += 1;
    }
    procs
        .iter()
        .filter(|p| p.pid != root && found.contains(&p.pid))
        .map(|p| (p.pid, p.start))
        .collect()
}

/// Now, in the same unit as a process's start time in /proc.
pub fn now_ticks() -> Option<u64> {
    let uptime = fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some((secs * hz) as u64)
}

pub fn signal_all(pids: &[i32], sig: Signal) {
    for &pid in pids {
        // The process may be gone already; nothing to do then.
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text
            .rfind(')')
            .and_then(|i| text.get(i + 2..i + 3))
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}
