//! Jobs (SPEC §7; seeds 000, 002, 004): `invoke --as-job`, the job commands, background jobs
//! inside a session, and jobs seen from another client after a reconnect.

use crate::common;

use common::{alive, eventually, ok_as, run_as, stderr, stdout, World};

/// The job table's rows: Id, Name, PSJobTypeName, State, HasMoreData, Location (Command is
/// left out: it has spaces).
fn job_rows(table: &str) -> Vec<[String; 6]> {
    let lines: Vec<&str> = table.lines().filter(|l| !l.trim().is_empty()).collect();
    let header: Vec<&str> = lines
        .first()
        .map_or(Vec::new(), |h| h.split_whitespace().collect());
    assert_eq!(
        header,
        [
            "Id",
            "Name",
            "PSJobTypeName",
            "State",
            "HasMoreData",
            "Location",
            "Command"
        ],
        "not a job table:\n{table}"
    );
    lines[2..]
        .iter()
        .map(|l| {
            let f: Vec<String> = l.split_whitespace().map(String::from).collect();
            [
                f[0].clone(),
                f[1].clone(),
                f[2].clone(),
                f[3].clone(),
                f[4].clone(),
                f[5].clone(),
            ]
        })
        .collect()
}

fn job_json(w: &World, home: &str, args: &[&str], name: &str) -> serde_json::Value {
    let mut all = vec!["job", "list", "--json"];
    all.extend_from_slice(args);
    ok_as(w, home, &all)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no job {name}"))
}

fn go(w: &World, name: &str) {
    std::fs::write(w.dir.path().join(name), "").expect("go file");
}

const WAIT_FOR_GO: &str = "while [ ! -e \"$HOME/go\" ]; do sleep 0.02; done";

/// `invoke --as-job` returns at once with the job table; a busy session refuses another at
/// once (exit 4); wait, receive (stdout and stderr apart, the job's status), remove.
#[test]
fn invoke_as_job_and_the_job_commands() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "s"]);
    let script = format!("echo out; echo err >&2; {WAIT_FOR_GO}; exit 3");
    let t = ok_as(&w, "homeA", &["invoke", "s", "--as-job", "--", &script]);
    let rows = job_rows(&t);
    assert_eq!(rows.len(), 1, "{t}");
    assert_eq!(
        rows[0][..4],
        ["1", "Job1", "RemoteJob", "Running"].map(String::from),
        "{t}"
    );
    assert_eq!(rows[0][5], "localhost");
    // Another job on the busy session fails at once.
    let o = run_as(&w, "homeA", &["invoke", "s", "--as-job", "--", "true"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("busy"), "{}", stderr(&o));
    // The session is this client's, Busy while the job runs.
    let get = ok_as(&w, "homeA", &["get", "s"]);
    assert!(get.contains("Opened") && get.contains("Busy"), "{get}");
    eventually("the job's output to be kept", || {
        job_json(&w, "homeA", &[], "Job1")["has_more_data"] == true
    });
    go(&w, "go");
    let t = ok_as(&w, "homeA", &["job", "wait", "Job1"]);
    assert_eq!(job_rows(&t)[0][3], "Failed", "{t}");
    assert_eq!(job_rows(&t)[0][4], "True", "{t}");
    let o = run_as(&w, "homeA", &["job", "receive", "1"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
    let j = job_json(&w, "homeA", &[], "Job1");
    assert_eq!(j["has_more_data"], false, "{j}");
    assert_eq!(j["status"], 3);
    assert_eq!(j["ps_job_type_name"], "RemoteJob");
    ok_as(&w, "homeA", &["job", "remove", "1"]);
    assert_eq!(ok_as(&w, "homeA", &["job", "list"]), "");
    let o = run_as(&w, "homeA", &["job", "receive", "1"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

/// Seed 000: a job left running in a disconnected session is listed and received from
/// another machine; `receive --out-target job` returns a job.
#[test]
fn a_job_is_received_on_another_client_after_a_reconnect() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "dc"]);
    let script = format!("echo from-the-job; {WAIT_FOR_GO}; echo end");
    ok_as(&w, "homeA", &["invoke", "dc", "--as-job", "--", &script]);
    ok_as(&w, "homeA", &["disconnect", "dc"]);
    // Its starter sees it Disconnected, and `job wait` returns at once for that.
    let t = ok_as(&w, "homeA", &["job", "wait", "1"]);
    assert_eq!(job_rows(&t)[0][3], "Disconnected", "{t}");
    // --force waits through the disconnection; bounded here by --timeout (exit 7).
    let o = run_as(
        &w,
        "homeA",
        &["job", "wait", "1", "--force", "--timeout", "300ms"],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    // Another machine connects and finds the job in the session.
    ok_as(
        &w,
        "homeB",
        &["connect", "--computer", "localhost", "--name", "dc"],
    );
    let t = ok_as(&w, "homeB", &["job", "list", "dc"]);
    let rows = job_rows(&t);
    assert_eq!(
        rows[0][2..4],
        ["RemoteJob", "Running"].map(String::from),
        "{t}"
    );
    // --force waits through the disconnection until the job ends.
    let forced = w
        .linger_as("homeA", &["job", "wait", "1", "--force"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("job wait --force");
    go(&w, "go");
    let forced = forced.wait_with_output().expect("wait --force ends");
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(
        job_rows(&stdout(&forced))[0][3],
        "Completed",
        "{}",
        stdout(&forced)
    );
    let t = ok_as(&w, "homeB", &["job", "wait", &rows[0][0]]);
    assert_eq!(job_rows(&t)[0][3], "Completed", "{t}");
    let o = run_as(&w, "homeB", &["job", "receive", &rows[0][0]]);
    assert_eq!(stdout(&o), "from-the-job\nend\n", "{}", stderr(&o));

    // receive --out-target job: a job stands for the session's output.
    ok_as(
        &w,
        "homeA",
        &[
            "invoke",
            "--computer",
            "localhost",
            "--in-disconnected-session",
            "--name",
            "ot",
            "--",
            "echo kept-for-later",
        ],
    );
    let t = ok_as(
        &w,
        "homeB",
        &[
            "receive",
            "--computer",
            "localhost",
            "--name",
            "ot",
            "--out-target",
            "job",
        ],
    );
    let row = job_rows(&t).pop().expect("a job row");
    assert_eq!(row[2], "RemoteJob", "{t}");
    eventually("the output job to complete", || {
        job_json(&w, "homeB", &[], &row[1])["state"] == "Completed"
    });
    let o = run_as(&w, "homeB", &["job", "receive", &row[1]]);
    assert_eq!(stdout(&o), "kept-for-later\n", "{}", stderr(&o));
}

/// Background jobs inherit the session's state and run while the session takes commands;
/// after a reconnect from another client they are listed, received and stopped there.
#[test]
fn background_jobs_in_a_session() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "bg"]);
    ok_as(
        &w,
        "homeA",
        &["invoke", "bg", "--", "x=41; f() { echo \"f$1\"; }; cd /tmp"],
    );
    let script = format!("echo \"$x $(pwd) $(f 1)\"; {WAIT_FOR_GO}; echo done >&2; exit 2");
    let t = ok_as(&w, "homeA", &["job", "start", "bg", "--", &script]);
    assert_eq!(
        job_rows(&t)[0][2..4],
        ["BackgroundJob", "Running"].map(String::from),
        "{t}"
    );
    // The session keeps taking commands meanwhile.
    assert_eq!(
        ok_as(&w, "homeA", &["invoke", "bg", "--", "echo fg $x"]),
        "fg 41\n"
    );
    ok_as(&w, "homeA", &["disconnect", "bg"]);
    ok_as(
        &w,
        "homeB",
        &["connect", "--computer", "localhost", "--name", "bg"],
    );
    eventually("the job's first line to be kept", || {
        let t = ok_as(&w, "homeB", &["job", "list", "bg"]);
        job_rows(&t)
            .iter()
            .any(|r| r[2] == "BackgroundJob" && r[3] == "Running" && r[4] == "True")
    });
    // A sees it from afar: Disconnected (its session is attached elsewhere).
    assert_eq!(job_json(&w, "homeA", &[], "Job1")["state"], "Disconnected");
    go(&w, "go");
    let id = job_rows(&ok_as(&w, "homeB", &["job", "list", "bg"]))
        .into_iter()
        .find(|r| r[2] == "BackgroundJob")
        .expect("the background job")[0]
        .clone();
    let t = ok_as(&w, "homeB", &["job", "wait", &id]);
    assert_eq!(job_rows(&t)[0][3], "Failed", "{t}");
    let o = run_as(&w, "homeB", &["job", "receive", &id]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stdout(&o), "41 /tmp f1\n");
    assert_eq!(stderr(&o), "done\n");

    // Stop: the job and what it started end.
    let pidfile = w.dir.path().join("sleeper");
    let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
    let t = ok_as(&w, "homeB", &["job", "start", "bg", "--", &script]);
    let stop_id = job_rows(&t)[0][0].clone();
    // The file exists before the shell has written the pid into it: wait for a number.
    eventually("the sleeper to start", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|t| t.trim().parse::<i32>().is_ok())
    });
    let sleeper: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    let t = ok_as(&w, "homeB", &["job", "stop", &stop_id]);
    assert_eq!(job_rows(&t)[0][3], "Stopped", "{t}");
    eventually("the stopped job's process to end", || !alive(sleeper));
    // A running job cannot be removed; a stopped one can.
    ok_as(&w, "homeB", &["job", "remove", &stop_id]);

    // When the session ends, its jobs end with it and say so.
    let t = ok_as(&w, "homeB", &["job", "start", "bg", "--", "sleep 600"]);
    let last = job_rows(&t)[0][1].clone();
    let o = run_as(&w, "homeB", &["job", "remove", &last]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("still running"), "{}", stderr(&o));
    ok_as(&w, "homeB", &["remove", "bg"]);
    let j = job_json(&w, "homeB", &[], &last);
    assert_eq!(j["state"], "Stopped", "{j}");
    assert!(
        j["reason"]
            .as_str()
            .is_some_and(|r| r.contains("its session ended")),
        "{j}"
    );
}

/// Background jobs per session are capped: the one past the limit is refused, saying why,
/// and the session goes on running commands.
#[test]
fn background_jobs_per_session_are_capped() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "many"]);
    for _ in 0..linger_host::MAX_RUNNING_JOBS {
        ok_as(&w, "homeA", &["job", "start", "many", "--", "sleep 600"]);
    }
    let o = run_as(&w, "homeA", &["job", "start", "many", "--", "sleep 600"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("background jobs, its limit"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        ok_as(&w, "homeA", &["invoke", "many", "--", "echo still"]),
        "still\n"
    );
}

/// SPEC §16: `invoke --as-job` on several sessions makes one parent job (numbered first)
/// with a child job per target; `job list` shows the parent, whose state is its children's;
/// `job receive` of the parent gets every child's output with `[computer] ` prefixes, and
/// takes several ids and wildcards; `wait`, `stop` and `remove` of the parent act on every
/// child.
#[test]
fn as_job_on_several_targets_makes_a_parent_job_with_a_child_per_target() {
    let w = World::new();
    for name in ["a", "b"] {
        ok_as(&w, "homeA", &["new", "localhost", "--name", name]);
    }
    let script = format!("echo \"from-$((6*7))\"; {WAIT_FOR_GO}; echo done");
    let t = ok_as(
        &w,
        "homeA",
        &["invoke", "a", "b", "--as-job", "--", &script],
    );
    let rows = job_rows(&t);
    assert_eq!(rows.len(), 1, "one parent row:\n{t}");
    assert_eq!(rows[0][0], "1", "the parent comes first:\n{t}");
    assert_eq!(rows[0][3], "Running", "{t}");
    assert_eq!(rows[0][5], "localhost,localhost", "{t}");
    let parent = job_json(&w, "homeA", &[], "Job1");
    assert_eq!(
        parent["child_jobs"].as_array().map(Vec::len),
        Some(2),
        "{parent}"
    );
    assert!(parent["instance_id"].is_null(), "{parent}");
    // The children are jobs 2 and 3, in the order of the targets, listed through their
    // parent only.
    let listed = ok_as(&w, "homeA", &["job", "list"]);
    assert_eq!(job_rows(&listed).len(), 1, "{listed}");
    go(&w, "go");
    let waited = ok_as(&w, "homeA", &["job", "wait", "1", "--timeout", "60s"]);
    assert_eq!(job_rows(&waited)[0][3], "Completed", "{waited}");
    let got = ok_as(&w, "homeA", &["job", "receive", "1", "--keep"]);
    let line = "[localhost] from-42";
    assert_eq!(got.lines().filter(|l| *l == line).count(), 2, "{got}");
    assert_eq!(
        got.lines().filter(|l| *l == "[localhost] done").count(),
        2,
        "{got}"
    );
    // Several ids, and wildcards; each child's output once.
    let got = ok_as(&w, "homeA", &["job", "receive", "2", "Job*"]);
    assert_eq!(got.lines().filter(|l| *l == line).count(), 2, "{got}");
    let o = run_as(&w, "homeA", &["job", "receive", "NoSuchJob*"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // Stop and remove reach every child.
    let t = ok_as(
        &w,
        "homeA",
        &["invoke", "a", "b", "--as-job", "--", "sleep 300"],
    );
    let id = job_rows(&t)[0][0].clone();
    let stopped = ok_as(&w, "homeA", &["job", "stop", &id]);
    assert_eq!(job_rows(&stopped)[0][3], "Stopped", "{stopped}");
    for sel in ["a", "b"] {
        assert_eq!(
            ok_as(&w, "homeA", &["invoke", sel, "--", "echo free"]),
            "free\n"
        );
    }
    ok_as(&w, "homeA", &["job", "remove", &id]);
    ok_as(&w, "homeA", &["job", "remove", "1"]);
    let left = ok_as(&w, "homeA", &["job", "list", "--json"]);
    assert_eq!(
        left.trim(),
        "{\"exit_code\":0}",
        "every job is gone: {left}"
    );
}

/// Issue 17, items 1 and 3 (PowerShell's job tests): `job receive` of a running job returns
/// at once with what it has produced so far, and takes it; `--wait` follows it to the end.
/// HasMoreData is true while the job runs, whether or not output is kept.
#[test]
fn receiving_a_running_job_returns_its_partial_output_at_once() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "s"]);
    let script = format!("echo first; {WAIT_FOR_GO}; echo second");
    ok_as(&w, "homeA", &["invoke", "s", "--as-job", "--", &script]);
    eventually("the first line to be kept", || {
        job_json(&w, "homeA", &[], "Job1")["pending_output_bytes"] != 0
    });
    assert_eq!(ok_as(&w, "homeA", &["job", "receive", "1"]), "first\n");
    let j = job_json(&w, "homeA", &[], "Job1");
    assert_eq!(j["state"], "Running", "{j}");
    assert_eq!(j["has_more_data"], true, "running: more may come ({j})");
    // Taken: a second receive returns at once with nothing.
    assert_eq!(ok_as(&w, "homeA", &["job", "receive", "1"]), "");
    let mut waiting = common::Running::start(w.linger(&["job", "receive", "1", "--wait"]));
    go(&w, "go");
    assert_eq!(waiting.line().as_deref(), Some("second\n"));
    assert_eq!(waiting.finish().0, Some(0));
    let j = job_json(&w, "homeA", &[], "Job1");
    assert_eq!(
        (j["state"].as_str(), j["has_more_data"].as_bool()),
        (Some("Completed"), Some(false)),
        "{j}"
    );
}

/// Issue 17, items 2 and 4: each `--as-job` job keeps its own output (never the session's
/// foreground output, never another job's), and a job runs to its end with nobody reading
/// even where the session's buffering is `block` and its output passes the buffer.
#[test]
fn each_job_keeps_its_own_output_and_runs_to_its_end_unread() {
    let w = World::new();
    ok_as(
        &w,
        "homeA",
        &["new", "localhost", "--name", "s", "--buffering", "block"],
    );
    // Three times the session's 1 MiB output buffer, with nobody reading.
    ok_as(
        &w,
        "homeA",
        &[
            "invoke",
            "s",
            "--as-job",
            "--",
            "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo one",
        ],
    );
    let t = ok_as(&w, "homeA", &["job", "wait", "Job1"]);
    assert_eq!(job_rows(&t)[0][3], "Completed", "{t}");
    ok_as(&w, "homeA", &["invoke", "s", "--as-job", "--", "echo two"]);
    ok_as(&w, "homeA", &["job", "wait", "Job2"]);
    assert_eq!(ok_as(&w, "homeA", &["job", "receive", "Job2"]), "two\n");
    let first = ok_as(&w, "homeA", &["job", "receive", "Job1", "--keep"]);
    assert_eq!(first.len(), 3_000_000 + "\none\n".len());
    assert!(first.ends_with("aaa\none\n"));
    // Nothing of either job reaches the next foreground command.
    assert_eq!(
        ok_as(&w, "homeA", &["invoke", "s", "--", "echo fg"]),
        "fg\n"
    );
    assert_eq!(
        ok_as(&w, "homeA", &["job", "receive", "Job1"]).len(),
        first.len(),
        "kept"
    );
    // A background job, too, runs past the buffer unread.
    ok_as(
        &w,
        "homeA",
        &[
            "job",
            "start",
            "s",
            "--",
            "head -c 3000000 /dev/zero; echo bg",
        ],
    );
    let t = ok_as(&w, "homeA", &["job", "wait", "Job3"]);
    assert_eq!(job_rows(&t)[0][3], "Completed", "{t}");
    assert_eq!(
        ok_as(&w, "homeA", &["job", "receive", "Job3"]).len(),
        3_000_000 + 3
    );
}

/// A job's state is right in every case: one standing for a session's output that `job
/// stop` ends shows Stopped, and a job that completed stays Completed once its session is
/// removed (as PowerShell's jobs keep their state).
#[test]
fn a_job_keeps_the_state_it_ended_in() {
    let w = World::new();
    ok_as(
        &w,
        "homeA",
        &[
            "invoke",
            "--computer",
            "localhost",
            "--in-disconnected-session",
            "--name",
            "ot",
            "--",
            "sleep 60",
        ],
    );
    let t = ok_as(&w, "homeA", &["receive", "ot", "--out-target", "job"]);
    let row = job_rows(&t).pop().expect("a job row");
    assert_eq!(row[3], "Running", "{t}");
    ok_as(&w, "homeA", &["job", "stop", &row[1]]);
    let t = ok_as(&w, "homeA", &["job", "wait", &row[1]]);
    assert_eq!(job_rows(&t)[0][3], "Stopped", "{t}");

    ok_as(&w, "homeA", &["new", "localhost", "--name", "done"]);
    let t = ok_as(&w, "homeA", &["invoke", "done", "--as-job", "--", "true"]);
    let id = job_rows(&t)[0][1].clone();
    let t = ok_as(&w, "homeA", &["job", "wait", &id]);
    assert_eq!(job_rows(&t)[0][3], "Completed", "{t}");
    ok_as(&w, "homeA", &["remove", "done"]);
    let j = job_json(&w, "homeA", &[], &id);
    assert_eq!(j["state"], "Completed", "{j}");
    assert_eq!(j["status"], 0, "{j}");
}
