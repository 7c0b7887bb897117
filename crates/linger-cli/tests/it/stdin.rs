//! Standard input forwarded to commands (SPEC §4), against a real `lingerd` and bash:
//! text, EOF, binary data by SHA-256, a `tar` round trip, `/dev/null` where no input is
//! forwarded, several targets, a command that stops reading, and a daemon killed in the
//! middle of the input.

use crate::common;

use std::io::Write;
use std::process::Stdio;

use common::{alive, eventually, kill, ok_as, sha256_line, stderr, stdout, World};
use linger::{Event, InvokeOptions, NewOptions};
use nix::sys::signal::Signal;

/// Runs `linger ARGS` with `input` on its stdin; returns the output.
fn piped(w: &World, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = w
        .linger(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn linger");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // A thread: the command's output must be read while its input is written.
    let writer = std::thread::spawn(move || {
        // A command that does not read all of it closes the pipe early: not an error here.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("linger ends");
    writer.join().expect("writer");
    out
}

#[test]
fn text_reaches_the_command_and_its_end_is_eof() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "s"]);
    let o = piped(&w, &["invoke", "s", "--", "cat"], b"payload\n");
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "payload\n".into()));
    let o = piped(
        &w,
        &["invoke", "s", "--", "read -r x; echo \"got $x\""],
        b"hi\n",
    );
    assert_eq!(stdout(&o), "got hi\n", "{}", stderr(&o));
    // EOF arrives: commands that read to the end finish.
    let o = piped(&w, &["invoke", "s", "--", "wc -c; cat; echo end"], b"");
    assert_eq!(stdout(&o), "0\nend\n");
    let o = piped(
        &w,
        &[
            "invoke",
            "s",
            "--",
            "while read -r l; do echo \"[$l]\"; done",
        ],
        b"a\nb\nlast without newline",
    );
    assert_eq!(stdout(&o), "[a]\n[b]\n");
    // A script from a file reads the input too; the session's state is the shell's.
    let script = w.path("count.sh");
    std::fs::write(&script, "n=$(wc -l); echo \"$n lines\"\n").expect("script");
    let o = piped(
        &w,
        &["invoke", "s", "--file", script.to_str().expect("utf-8")],
        b"1\n2\n3\n",
    );
    assert_eq!(stdout(&o), "3 lines\n");
    assert_eq!(ok_as(&w, "homeA", &["invoke", "s", "--", "echo $n"]), "3\n");
    // A command that never reads its input still ends when it is done.
    let o = piped(
        &w,
        &["invoke", "s", "--", "echo quick"],
        &vec![b'y'; 8 << 20],
    );
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "quick\n".into()));
}

#[test]
fn one_hundred_megabytes_of_random_bytes_arrive_intact() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "s"]);
    let data = common::random_bytes(100 << 20);
    let o = piped(&w, &["invoke", "s", "--", "sha256sum"], &data);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), sha256_line(&data));
}

#[test]
fn a_tar_stream_round_trips() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "s"]);
    let src = w.path("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("a.bin"), common::random_bytes(3 << 20)).expect("a");
    std::fs::write(src.join("sub/b.txt"), "hello\n").expect("b");
    let tar = std::process::Command::new("tar")
        .args(["-C", src.to_str().expect("utf-8"), "-c", "."])
        .output()
        .expect("tar c");
    assert!(tar.status.success());
    let dst = w.path("dst");
    let script = format!("mkdir -p '{0}' && cd '{0}' && tar x", dst.display());
    let o = piped(&w, &["invoke", "s", "--", &script], &tar.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let diff = std::process::Command::new("diff")
        .args([
            "-r",
            src.to_str().expect("utf-8"),
            dst.to_str().expect("utf-8"),
        ])
        .output()
        .expect("diff");
    assert!(diff.status.success(), "{}", stdout(&diff));
    // The `cd` stayed: the command ran in the session's shell.
    assert_eq!(
        ok_as(&w, "homeA", &["invoke", "s", "--", "pwd"]),
        format!("{}\n", dst.display())
    );
}

#[test]
fn no_input_is_forwarded_where_the_command_gets_dev_null() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "s"]);
    let probe = "readlink /proc/self/fd/0; cat; echo end";
    for flag in ["-n", "--no-stdin"] {
        let o = piped(&w, &["invoke", "s", flag, "--", probe], b"not for you\n");
        assert_eq!(stdout(&o), "/dev/null\nend\n", "{flag}");
    }
    // Forwarded, the same probe sees a pipe.
    let o = piped(&w, &["invoke", "s", "--", "readlink /proc/self/fd/0"], b"");
    assert!(stdout(&o).starts_with("pipe:"), "{}", stdout(&o));
    // The script itself came from stdin.
    let o = piped(&w, &["invoke", "s"], probe.as_bytes());
    assert_eq!(stdout(&o), "/dev/null\nend\n");
    // Commands that outlive the CLI: a job, a disconnected session, a background job.
    let home = w.dir.path().display().to_string();
    let probe_to = |name: &str| format!("readlink /proc/self/fd/0 > '{home}/{name}'; cat");
    piped(
        &w,
        &["invoke", "s", "--as-job", "--", &probe_to("as-job")],
        b"x\n",
    );
    piped(
        &w,
        &[
            "invoke",
            "--computer",
            "localhost",
            "--in-disconnected-session",
            "--",
            &probe_to("disconnected"),
        ],
        b"x\n",
    );
    ok_as(&w, "homeA", &["job", "receive", "1"]);
    let o = piped(
        &w,
        &["job", "start", "s", "--", &probe_to("background")],
        b"x\n",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for name in ["as-job", "disconnected", "background"] {
        let file = w.path(name);
        eventually(&format!("the {name} probe"), || {
            std::fs::read_to_string(&file).is_ok_and(|t| t.ends_with('\n'))
        });
        assert_eq!(
            std::fs::read_to_string(&file).expect("probe"),
            "/dev/null\n",
            "{name}"
        );
    }
}

#[test]
fn every_target_gets_the_same_input() {
    let w = World::new();
    for name in ["a", "b", "c"] {
        ok_as(&w, "homeA", &["new", "localhost", "--name", name]);
    }
    let data = common::random_bytes(12 << 20);
    let expected = sha256_line(&data);
    // All at once, and one at a time: a target that starts after the others have read
    // everything still gets all of it.
    for throttle in ["32", "1"] {
        let o = piped(
            &w,
            &[
                "invoke",
                "a",
                "b",
                "c",
                "--throttle",
                throttle,
                "--",
                "sha256sum",
            ],
            &data,
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let mut lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
        lines.sort();
        assert_eq!(
            lines,
            vec![format!("[localhost] {}", expected.trim_end()); 3],
            "--throttle {throttle}"
        );
    }
}

/// A command that stops reading holds up its input: the bytes the client keeps stay within
/// the window, the writer waits, and nothing piles up anywhere. Counted, not timed.
#[tokio::test]
async fn a_command_that_stops_reading_applies_backpressure() {
    use linger_proto::input::STDIN_WINDOW;
    let mut w = World::new();
    w.start_daemon();
    let client = w.client("homeA");
    let s = client
        .new_session("localhost", &NewOptions::default())
        .await
        .expect("new");
    let opts = InvokeOptions {
        stdin: true,
        ..Default::default()
    };
    let mut cmd = client
        .invoke(
            &s.entry,
            "head -c 5; echo; echo reading no more; sleep 600",
            &opts,
        )
        .await
        .expect("invoke");
    let input = cmd.input().expect("forwarded input");
    const CHUNK: usize = 1 << 20;
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let feeder = {
        let (input, written) = (input.clone(), written.clone());
        tokio::spawn(async move {
            loop {
                input.write(linger::Bytes::from(vec![b'z'; CHUNK])).await;
                if input.is_closed() {
                    return;
                }
                written.fetch_add(CHUNK as u64, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let mut out = Vec::new();
    while !out.ends_with(b"reading no more\n") {
        match cmd.next().await.expect("stream") {
            Some(Event::Output { data, .. }) => out.extend(data),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(out, b"zzzzz\nreading no more\n");
    // What the command's pipe can take (1 MiB) is written; the rest waits in the window.
    let bound = STDIN_WINDOW + (2 << 20) + CHUNK as u64;
    let mut tries = 0;
    while input.held() + (CHUNK as u64) < STDIN_WINDOW && tries < 500 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        tries += 1;
    }
    for _ in 0..3 {
        let held = input.held();
        let total = written.load(std::sync::atomic::Ordering::Relaxed);
        assert!(held <= STDIN_WINDOW + CHUNK as u64, "held {held}");
        assert!(total <= bound, "{total} bytes taken from the writer");
        assert!(!feeder.is_finished());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Ctrl-C ends the command; the waiting writer is released, and the session goes on.
    cmd.cancel().expect("cancel");
    loop {
        match cmd.next().await.expect("stream") {
            Some(Event::Finished { status, .. }) => {
                assert_eq!(status, 130);
                break;
            }
            Some(_) => {}
            None => panic!("no end"),
        }
    }
    feeder.await.expect("feeder ends");
    let (got, _, _) = common::run_api(&client, &s.entry, "echo free").await;
    assert_eq!(got, b"free\n");
}

/// Robust sessions carry input too: the daemon is killed twice while a command reads its
/// input; the client reconnects to a new daemon each time and goes on from what the host
/// had written, so the command sees every byte once.
#[test]
fn input_survives_the_daemon_dying_in_the_middle() {
    let w = World::new();
    ok_as(&w, "homeA", &["new", "localhost", "--name", "rb"]);
    let data = common::random_bytes(48 << 20);
    let mut cmd = w.linger(&["invoke", "rb", "--", "sha256sum"]);
    cmd.stdin(Stdio::piped());
    let mut run = common::Running::start(cmd);
    let mut input = run.take_stdin();
    let third = data.len() / 3;
    for (i, part) in data.chunks(third).enumerate() {
        input.write_all(part).expect("write input");
        if i < 2 {
            let daemon = w.daemon_pid().expect("daemon");
            kill(daemon, Signal::SIGKILL);
            eventually("the daemon to die", || !alive(daemon));
            eventually("the client to reconnect", || {
                run.stderr().matches("reconnected").count() == i + 1
            });
        }
    }
    drop(input);
    let (code, out, err) = run.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, sha256_line(&data), "{err}");
    assert_eq!(err.matches("reconnected").count(), 2, "{err}");
}

/// A client speaking the wire protocol by hand, sending input outside the rules: for another
/// command, for a request it does not have, after a gap, beyond the window, repeated, and
/// after the end. None of it reaches the command or holds anything up: the command reads
/// exactly the honest stream, and the daemon serves on.
#[tokio::test]
async fn input_outside_the_rules_is_ignored() {
    use linger_proto::client::{ClientMsg, Invoke, InvokeKind, Request};
    use linger_proto::input::STDIN_WINDOW;
    use linger_proto::server::{Reply, ServerMsg};

    let mut w = World::new();
    w.start_daemon();
    let (mut rd, mut wr, instance_id) = common::raw_session(&w, "hostile", "h").await;
    let invoke = ClientMsg::Request {
        rid: 2,
        request: Request::Invoke(Invoke {
            instance_id,
            script: "sha256sum".into(),
            args: vec![],
            wait_ms: 10_000,
            cancel_timeout_ms: 1_000,
            disconnected: false,
            kind: InvokeKind::Plain,
            stdin: true,
            terminal: None,
        }),
    };
    wr.write(&invoke).await.expect("invoke");

    let honest = linger::Bytes::from(common::random_bytes(6 << 20));
    let stdin =
        |rid: u64, command_id, offset: u64, data: linger::Bytes, eof: bool| ClientMsg::Stdin {
            rid,
            command_id,
            offset,
            data,
            eof,
        };
    let mut command = None;
    let (mut sent_honest, mut sent_eof, mut output) = (0u64, false, Vec::new());
    loop {
        let msg = rd.read::<ServerMsg>().await.expect("read").expect("open");
        match msg {
            ServerMsg::Reply {
                reply: Reply::Started { command_id, .. },
                ..
            } => command = Some(command_id),
            ServerMsg::StdinAck {
                command_id,
                written,
                closed,
                ..
            } => {
                assert_eq!(Some(command_id), command);
                if written == 0 && sent_honest == 0 {
                    // The attack, before any honest byte.
                    let junk = linger::Bytes::from_static(b"JUNK");
                    for bad in [
                        stdin(2, uuid::Uuid::new_v4(), 0, junk.clone(), false),
                        stdin(99, command_id, 0, junk.clone(), false),
                        stdin(2, command_id, 10, junk.clone(), false),
                        // Beyond the window: only its first STDIN_WINDOW bytes count.
                        stdin(2, command_id, 0, honest.clone(), true),
                        stdin(2, command_id, 0, honest.slice(..1 << 20), false),
                    ] {
                        wr.write(&bad).await.expect("send");
                    }
                    sent_honest = STDIN_WINDOW;
                }
                // Then by the rules: from what was written, within the window.
                let limit = (written + STDIN_WINDOW).min(honest.len() as u64);
                if sent_honest < limit {
                    let part = honest.slice(sent_honest as usize..limit as usize);
                    wr.write(&stdin(2, command_id, sent_honest, part, false))
                        .await
                        .expect("send");
                    sent_honest = limit;
                }
                if sent_honest == honest.len() as u64 && !sent_eof {
                    sent_eof = true;
                    wr.write(&stdin(
                        2,
                        command_id,
                        sent_honest,
                        linger::Bytes::new(),
                        true,
                    ))
                    .await
                    .expect("send");
                    // After the end: ignored.
                    wr.write(&stdin(2, command_id, sent_honest, junk_tail(), false))
                        .await
                        .expect("send");
                }
                if closed {
                    assert_eq!(written, honest.len() as u64);
                }
            }
            ServerMsg::Output { data, .. } => output.extend_from_slice(&data),
            ServerMsg::Finished { seq, status, .. } => {
                assert_eq!(status, 0);
                wr.write(&ClientMsg::Ack { rid: 2, seq })
                    .await
                    .expect("ack");
                break;
            }
            ServerMsg::Pong { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(String::from_utf8_lossy(&output), sha256_line(&honest));
    // The daemon goes on serving, this connection and others.
    drop((rd, wr));
    let client = w.client("homeB");
    let s = client
        .new_session("localhost", &NewOptions::default())
        .await
        .expect("a new session after the attack");
    let (got, _, _) = common::run_api(&client, &s.entry, "echo fine").await;
    assert_eq!(got, b"fine\n");
}

fn junk_tail() -> linger::Bytes {
    linger::Bytes::from_static(b"AFTER THE END")
}
