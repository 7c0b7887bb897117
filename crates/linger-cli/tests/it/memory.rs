//! Memory bounds, counted in bytes held (resident anonymous memory of the session host), not
//! timed: output kept for a disconnected client costs what it holds.

use crate::common;

use common::{eventually, sha256_line, stderr, World};

/// A size in `/proc/PID/status` (`field` is, say, `RssAnon`), in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        * 1024
}

/// Resident anonymous memory of process `pid`, in bytes.
fn rss_anon(pid: i32) -> u64 {
    status_bytes(pid as u32, "RssAnon")
}

/// Half a million two-byte writes nobody receives yet: the host holds them (1,000,000 bytes
/// under the default 1 MiB output buffer) in about that much memory, and gives them back
/// whole. Each write used to pin a 256 KiB read buffer, tens of megabytes in all.
#[test]
fn many_small_writes_cost_the_bytes_they_hold() {
    let mut w = World::new();
    w.start_daemon();
    w.ok(&["new", "localhost", "--name", "s"]);
    let hosts = w.host_pids();
    assert_eq!(hosts.len(), 1);
    let before = rss_anon(hosts[0]);
    let flag = w.path("written");
    let script = format!(
        "for i in $(seq 1 500000); do echo x; done; touch {}",
        flag.display()
    );
    w.ok(&["invoke", "s", "--as-job", "--", &script]);
    eventually("the writes to end", || flag.exists());
    // The job's end reaches the log after its last output.
    eventually("the job to complete", || {
        w.ok(&["job", "list", "--json"]).lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["state"] == "Completed")
        })
    });
    let grown = rss_anon(hosts[0]).saturating_sub(before);
    let slack = 2 << 20;
    assert!(
        grown <= (1 << 20) + slack,
        "the host grew by {grown} bytes holding 1,000,000"
    );
    let jobs = w.ok(&["job", "list"]);
    let id = jobs
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .next()
                .filter(|t| t.parse::<u32>().is_ok())
        })
        .expect("a job id");
    let got = w.run(&["job", "receive", id]);
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    assert_eq!(
        sha256_line(&got.stdout),
        sha256_line(&b"x\n".repeat(500_000)),
        "the output differs ({} bytes received)",
        got.stdout.len()
    );
}

/// Resident memory (all of it) of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS")
}

/// A receive whose consumer stops reading: the client holds about the output window, not
/// the 64 MiB the host spooled, and everything still arrives once the consumer reads. (The
/// client used to read the whole spool into its own memory.)
#[test]
fn a_stalled_consumer_keeps_the_client_small() {
    use std::io::Read;
    let mut w = World::new();
    w.write_config(
        "[[configuration]]\nname = \"default\"\noutput_buffering = \"spool\"\nspool_limit = \"1GiB\"\n",
    );
    w.start_daemon();
    let flag = w.path("written");
    let script = format!(
        "head -c 67108864 /dev/zero | tr '\\0' 'y'; touch {}",
        flag.display()
    );
    let out = w.disconnected("s", &script).output().expect("run linger");
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("the output to be spooled", || flag.exists());
    let mut receiver = w
        .linger(&["receive", "s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn receive");
    // Nobody reads its stdout: it fills the pipe, then waits. Its memory settles.
    let pid = receiver.id();
    let mut last = 0;
    let mut steady = 0;
    while steady < 5 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = rss(pid);
        assert!(now < 24 << 20, "the receiving client holds {now} bytes");
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
    }
    let mut got = Vec::new();
    receiver
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut got)
        .expect("read");
    let status = receiver.wait().expect("wait");
    assert!(status.success());
    assert_eq!(got.len(), 64 << 20);
    assert!(got.iter().all(|&b| b == b'y'), "the output differs");
}
