//! Scale: many idle sessions on one host, against the release binaries. It creates N
//! sessions (`LINGER_SCALE_SESSIONS`, default 2,000; the goal is stated for 10,000), then
//! reports what each costs created, idle, listed, re-adopted and removed:
//!
//! - creation time per session through the client library, early and at N, and at N through
//!   the protocol alone (the daemon's part, without the client's registry);
//! - proportional memory (PSS) of each session's host and shell, and kernel memory (slab,
//!   page tables, kernel stacks) per session, from /proc/meminfo before and after;
//! - CPU and wakeups (context switches) of all hosts and the daemon over 10 idle seconds;
//! - `linger get --computer localhost --json` listing all of them;
//! - re-adoption: a daemon restarted until it lists all N again;
//! - `linger remove 'sc*'` until the last host has exited, and the daemon's memory after.
//!
//! With `LINGER_SCALE_BASELINE=DIR` (a directory holding an earlier release's `linger` and
//! `lingerd`), the same run is made with those first and both columns are printed side by
//! side. It only reports; nothing here fails on wall-clock numbers.
//!
//! Run with `bash bench/run.sh --scale N`, or `cargo build --release --workspace` and then
//! `LINGER_SCALE_SESSIONS=N cargo bench -p linger-cli --bench scale_bench`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    block_on, make_private_dirs, or_exit, release_binaries, BenchEnv, Binaries, BoxError, Samples,
};
use linger::{Client, ClientHome, NewOptions};

const DEFAULT_SESSIONS: usize = 2000;
/// How long the sessions sit idle while their CPU and wakeups are counted.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
const LIST_RUNS: usize = 5;

/// One run's figures.
#[derive(Default, Clone)]
struct Figures {
    create_first_ms: f64,
    create_last_ms: f64,
    create_daemon_last_ms: f64,
    pss_kb: f64,
    kernel_kb: f64,
    idle_cpu_percent: f64,
    idle_wakeups_per_s: f64,
    daemon_idle_cpu_percent: f64,
    daemon_fds: usize,
    list_ms: f64,
    readopt_ms: f64,
    remove_s: f64,
    daemon_rss_before_mb: f64,
    daemon_rss_peak_mb: f64,
    daemon_rss_after_mb: f64,
}

fn main() {
    let n = std::env::var("LINGER_SCALE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SESSIONS);
    let bins = or_exit(release_binaries(), 2, "scale_bench");
    let mut runs: Vec<(String, Figures)> = Vec::new();
    if let Some(dir) = std::env::var_os("LINGER_SCALE_BASELINE") {
        let dir = PathBuf::from(dir);
        let old = Binaries {
            linger: dir.join("linger"),
            lingerd: dir.join("lingerd"),
        };
        eprintln!(
            "scale_bench: {n} sessions with the baseline in {}",
            dir.display()
        );
        let figures = or_exit(run(old, n), 1, "scale_bench (baseline)");
        runs.push(("baseline".into(), figures));
    }
    eprintln!("scale_bench: {n} sessions with this build");
    let figures = or_exit(run(bins, n), 1, "scale_bench");
    runs.push(("this build".into(), figures));
    print(n, &runs);
}

fn print(n: usize, runs: &[(String, Figures)]) {
    type Row = (&'static str, &'static str, fn(&Figures) -> f64);
    let rows: [Row; 15] = [
        ("create, first 100 (ms each)", "<= 10", |f| {
            f.create_first_ms
        }),
        ("create, 100 before N (ms each)", "<= 10", |f| {
            f.create_last_ms
        }),
        ("  the same at the daemon alone, at N", "", |f| {
            f.create_daemon_last_ms
        }),
        ("PSS per session (KB)", "<= 512", |f| f.pss_kb),
        ("kernel memory per session (KB)", "<= 100", |f| f.kernel_kb),
        ("idle CPU, all hosts (% of a core)", "0", |f| {
            f.idle_cpu_percent
        }),
        ("idle wakeups, all hosts (/s)", "0", |f| {
            f.idle_wakeups_per_s
        }),
        ("idle CPU, daemon (% of a core)", "", |f| {
            f.daemon_idle_cpu_percent
        }),
        ("daemon descriptors", "", |f| f.daemon_fds as f64),
        ("get --computer --json (ms)", "< 200", |f| f.list_ms),
        ("re-adoption after restart (ms)", "< 2000", |f| f.readopt_ms),
        ("remove all (s)", "< 30", |f| f.remove_s),
        ("daemon RSS before (MB)", "", |f| f.daemon_rss_before_mb),
        ("daemon RSS with N (MB)", "", |f| f.daemon_rss_peak_mb),
        ("daemon RSS after removal (MB)", "", |f| {
            f.daemon_rss_after_mb
        }),
    ];
    println!();
    println!("scale: {n} idle sessions");
    print!("{:<36} {:>8}", "", "target");
    for (name, _) in runs {
        print!(" {name:>12}");
    }
    println!();
    for (what, target, get) in rows {
        print!("{what:<36} {target:>8}");
        for (_, f) in runs {
            print!(" {:>12.2}", get(f));
        }
        println!();
    }
}

/// The world of one run: its directories, its daemon (a child of this process), and every
/// session host it made, all ended when dropped.
struct World {
    env: BenchEnv,
    daemon: Option<Child>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_daemon();
        common::kill_session_hosts(&self.env.sessions_dir());
    }
}

impl World {
    fn start_daemon(&mut self) -> Result<(), BoxError> {
        let _ = std::fs::remove_file(self.env.socket());
        let mut cmd = Command::new(&self.env.bins.lingerd);
        cmd.envs(self.env.vars())
            .arg("--socket")
            .arg(self.env.socket())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.daemon = Some(cmd.spawn()?);
        let start = Instant::now();
        while !self.env.socket().exists() {
            if start.elapsed() > Duration::from_secs(60) {
                return Err("lingerd did not open its socket".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn stop_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            common::terminate(d.id() as i32, "lingerd");
            let _ = d.wait();
        }
    }

    fn daemon_pid(&self) -> Option<i32> {
        self.daemon.as_ref().map(|d| d.id() as i32)
    }

    /// (host, shell) pids of every session, from the meta.json each host writes.
    fn session_pids(&self) -> Vec<(i32, i32)> {
        let Ok(dir) = std::fs::read_dir(self.env.sessions_dir()) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("meta.json")).ok())
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter_map(|v| {
                Some((
                    v["host_pid"].as_i64()? as i32,
                    v["shell_pid"].as_i64()? as i32,
                ))
            })
            .collect()
    }
}

fn run(bins: Binaries, n: usize) -> Result<Figures, BoxError> {
    let env = BenchEnv::new("lsc", bins)?;
    make_private_dirs(&[&env.runtime, &env.state, &env.config, &env.home])?;
    make_private_dirs(&[&env.config.join("linger")])?;
    std::fs::write(
        env.config.join("linger/lingerd.toml"),
        format!(
            "# Written by scale_bench: the defaults, with room for its sessions.\n\
             [[configuration]]\nname = \"default\"\nmax_sessions_per_user = {}\n",
            n + 10
        ),
    )?;
    // The client library in this process finds the daemon through these.
    env.export_vars();
    let mut w = World { env, daemon: None };
    w.start_daemon()?;
    let mut f = Figures::default();
    let daemon = w.daemon_pid().ok_or("no daemon")?;
    f.daemon_rss_before_mb = rss_kb(daemon) as f64 / 1024.0;
    let kernel_before = kernel_kb();

    let client = Client::open(ClientHome::at(&w.env.home))?;
    let window = 100.min(n / 3).max(1);
    let times = block_on(async {
        let mut times = Vec::with_capacity(n);
        let conn = client.connect("localhost").await?;
        for i in 0..n {
            let start = Instant::now();
            if i >= n - window {
                // The last ones at the daemon alone (one protocol round trip, no client
                // registry), to tell the two costs apart; `get` below registers them.
                conn.new_session(linger_proto::client::NewSession {
                    name: format!("sc{i}"),
                    configuration: None,
                    idle_timeout_ms: None,
                    buffering: None,
                    ..Default::default()
                })
                .await?;
            } else {
                let opts = NewOptions {
                    name: Some(format!("sc{i}")),
                    ..NewOptions::default()
                };
                client.new_session("localhost", &opts).await?;
            }
            times.push(start.elapsed());
            if (i + 1) % 1000 == 0 {
                eprintln!("scale_bench: {} sessions", i + 1);
            }
        }
        Ok::<_, BoxError>(times)
    })?;
    drop(client);
    f.create_first_ms = median_ms(&times[..window]);
    f.create_last_ms = median_ms(&times[n - 2 * window..n - window]);
    f.create_daemon_last_ms = median_ms(&times[n - window..]);

    // Let the new sessions settle before they are weighed and watched.
    std::thread::sleep(Duration::from_secs(2));
    let pids = w.session_pids();
    if pids.len() != n {
        return Err(format!("{} session hosts for {n} sessions", pids.len()).into());
    }
    let every: Vec<i32> = pids.iter().flat_map(|&(h, s)| [h, s]).collect();
    f.pss_kb = every.iter().map(|&p| pss_kb(p)).sum::<u64>() as f64 / n as f64;
    f.kernel_kb = kernel_kb().saturating_sub(kernel_before) as f64 / n as f64;
    f.daemon_fds = std::fs::read_dir(format!("/proc/{daemon}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);

    let (cpu0, switches0) = cpu_and_switches(&every);
    let (dcpu0, _) = cpu_and_switches(&[daemon]);
    let started = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let secs = started.elapsed().as_secs_f64();
    let (cpu1, switches1) = cpu_and_switches(&every);
    let (dcpu1, _) = cpu_and_switches(&[daemon]);
    f.idle_cpu_percent = (cpu1 - cpu0) / secs * 100.0;
    f.idle_wakeups_per_s = switches1.saturating_sub(switches0) as f64 / secs;
    f.daemon_idle_cpu_percent = (dcpu1 - dcpu0) / secs * 100.0;
    f.daemon_rss_peak_mb = rss_kb(daemon) as f64 / 1024.0;

    let mut lists = Vec::new();
    for _ in 0..LIST_RUNS {
        let start = Instant::now();
        let out = w
            .env
            .linger(&["get", "--computer", "localhost", "--json"])
            .stdin(Stdio::null())
            .output()?;
        lists.push(start.elapsed());
        let listed = String::from_utf8_lossy(&out.stdout)
            .matches("\"instance_id\"")
            .count();
        if listed != n {
            return Err(format!("get listed {listed} of {n} sessions").into());
        }
    }
    f.list_ms = median_ms(&lists);

    w.stop_daemon();
    let start = Instant::now();
    w.start_daemon()?;
    let client = Client::open(ClientHome::at(&w.env.home))?;
    block_on(async {
        loop {
            let listed = client
                .get_remote("localhost")
                .await
                .map(|v| v.len())
                .unwrap_or(0);
            if listed == n {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(300) {
                return Err(format!(
                    "the restarted daemon lists {listed} of {n} sessions"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })?;
    f.readopt_ms = start.elapsed().as_secs_f64() * 1000.0;
    drop(client);
    let daemon = w.daemon_pid().ok_or("no daemon")?;

    let start = Instant::now();
    let out = w
        .env
        .linger(&["remove", "sc*"])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "remove failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    // A zombie's command line is empty: it counts as gone.
    while every.iter().any(|&p| common::alive(p, "")) {
        if start.elapsed() > Duration::from_secs(600) {
            return Err("session hosts outlived their removal".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f.remove_s = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    f.daemon_rss_after_mb = rss_kb(daemon) as f64 / 1024.0;
    Ok(f)
}

fn median_ms(times: &[Duration]) -> f64 {
    Samples::new(times.to_vec()).median().as_secs_f64() * 1000.0
}

/// A field of /proc/PID/status or /proc/PID/smaps_rollup, in kB.
fn proc_kb(path: &Path, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kb(pid: i32) -> u64 {
    proc_kb(Path::new(&format!("/proc/{pid}/status")), "VmRSS:")
}

fn pss_kb(pid: i32) -> u64 {
    proc_kb(Path::new(&format!("/proc/{pid}/smaps_rollup")), "Pss:")
}

/// Kernel memory that grows with processes: slab, page tables, kernel stacks.
fn kernel_kb() -> u64 {
    let meminfo = Path::new("/proc/meminfo");
    ["Slab:", "PageTables:", "KernelStack:"]
        .iter()
        .map(|f| proc_kb(meminfo, f))
        .sum()
}

/// CPU seconds (user + system) and context switches of `pids`, summed.
fn cpu_and_switches(pids: &[i32]) -> (f64, u64) {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let mut cpu = 0.0;
    let mut switches = 0;
    for &pid in pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) {
                let fields: Vec<&str> = rest.split(' ').collect();
                let ticks: f64 = [11, 12]
                    .iter()
                    .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
                    .sum();
                cpu += ticks / hz;
            }
        }
        let status = PathBuf::from(format!("/proc/{pid}/status"));
        switches += proc_kb(&status, "voluntary_ctxt_switches:")
            + proc_kb(&status, "nonvoluntary_ctxt_switches:");
    }
    (cpu, switches)
}
