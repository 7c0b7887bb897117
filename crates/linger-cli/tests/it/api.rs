//! The public library API against a real `lingerd`.

use crate::common;

use common::{run_api as run, run_api_with as run_with, World};
use linger::{Event, InvokeOptions, NewOptions, StreamKind};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn random_binary_output_arrives_byte_for_byte() {
    let mut w = World::new();
    w.start_daemon();
    let client = w.client("homeA");
    let s = client
        .new_session("localhost", &NewOptions::default())
        .await
        .expect("new");
    let file = w.path("random.bin");
    let data = common::random_bytes(48 << 20);
    std::fs::write(&file, &data).expect("write");
    let (out, err, status) = run(&client, &s.entry, &format!("cat '{}'", file.display())).await;
    assert_eq!(status, 0);
    assert!(err.is_empty());
    assert_eq!(out.len(), data.len());
    assert_eq!(Sha256::digest(&out), Sha256::digest(&data), "bytes differ");
}

#[tokio::test]
async fn api_sessions_share_state_and_cancel() {
    let mut w = World::new();
    w.start_daemon();
    let client = w.client("homeA");
    let s = client
        .new_session(
            "localhost",
            &NewOptions {
                name: Some("api".into()),
                ..Default::default()
            },
        )
        .await
        .expect("new");
    assert_eq!(s.entry.name, "api");
    let (_, _, st) = run(
        &client,
        &s.entry,
        "counter=1; inc() { counter=$((counter+1)); }",
    )
    .await;
    assert_eq!(st, 0);
    run(&client, &s.entry, "inc; inc").await;
    let (out, _, _) = run(&client, &s.entry, "echo $counter").await;
    assert_eq!(out, b"3\n");

    let mut cmd = client
        .invoke(
            &s.entry,
            "echo go; sleep 300; echo never",
            &InvokeOptions::default(),
        )
        .await
        .expect("invoke");
    match cmd.next().await.expect("event") {
        Some(Event::Output { data, .. }) => assert_eq!(&data[..], b"go\n"),
        other => panic!("unexpected {other:?}"),
    }
    cmd.cancel().expect("cancel");
    let mut status = None;
    while let Some(ev) = cmd.next().await.expect("stream") {
        if let Event::Finished { status: s, .. } = ev {
            status = Some(s);
        }
    }
    assert_eq!(status, Some(130));
    let (out, _, _) = run(&client, &s.entry, "echo $counter").await;
    assert_eq!(out, b"3\n");

    // Another client machine sees the session attached elsewhere.
    let other = w.client("homeB");
    let views = other.get_remote("localhost").await.expect("get");
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].state, linger::State::Disconnected);
    assert_eq!(views[0].availability, linger::Availability::Busy);

    let removed = client.remove(&s.entry).await.expect("remove");
    assert_eq!(removed.state, linger::State::Closed);
    let err = client
        .invoke(&removed.entry, "true", &InvokeOptions::default())
        .await
        .err()
        .expect("closed");
    assert_eq!(err.kind(), linger::Kind::NotFound);
}

/// Reads frames until the daemon closes the connection; returns the Goodbye's text, if any.
async fn goodbye(stream: &mut tokio::net::UnixStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut all),
    )
    .await;
    assert!(read.is_ok(), "the daemon kept a bad connection open");
    let text = String::from_utf8_lossy(&all).into_owned();
    text.contains("Goodbye").then_some(text)
}

#[tokio::test]
async fn hostile_input_closes_only_that_connection() {
    use tokio::io::AsyncWriteExt;
    let mut w = World::new();
    w.start_daemon();
    let client = w.client("homeA");
    let s = client
        .new_session("localhost", &NewOptions::default())
        .await
        .expect("new");

    // Garbage that is not MessagePack.
    let mut bad = tokio::net::UnixStream::connect(w.socket())
        .await
        .expect("connect");
    bad.write_all(&[0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1])
        .await
        .expect("write");
    assert!(goodbye(&mut bad).await.is_some());

    // A frame announcing more than the maximum.
    let mut big = tokio::net::UnixStream::connect(w.socket())
        .await
        .expect("connect");
    big.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
    goodbye(&mut big).await;

    // A truncated frame, then the writer goes away (a half-open connection).
    let mut cut = tokio::net::UnixStream::connect(w.socket())
        .await
        .expect("connect");
    cut.write_all(&[0, 0, 1, 0, 0x81]).await.expect("write");
    cut.shutdown().await.expect("shutdown");
    goodbye(&mut cut).await;

    // An unknown protocol version is refused with a reason.
    let (r, wr) = tokio::net::UnixStream::connect(w.socket())
        .await
        .expect("connect")
        .into_split();
    let mut writer = linger_proto::frame::FrameWriter::new(wr);
    writer
        .write(&linger_proto::client::ClientMsg::Hello(
            linger_proto::client::Hello {
                protocol_version: 999,
                client_id: uuid::Uuid::new_v4(),
                client_name: "test".into(),
            },
        ))
        .await
        .expect("hello");
    let mut reader = linger_proto::frame::FrameReader::new(r);
    match reader.read::<linger_proto::server::ServerMsg>().await {
        Ok(Some(linger_proto::server::ServerMsg::Goodbye { error })) => {
            assert!(
                error.message.contains("protocol version 999"),
                "{}",
                error.message
            )
        }
        other => panic!("expected Goodbye, got {other:?}"),
    }

    // Garbage after a good handshake: a message that is not one, a data frame too short for
    // its header, an output frame (which only a server sends), input with a channel.
    let not_a_message = {
        let body = linger_proto::frame::encode(&"not a message").expect("encode");
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        f
    };
    let data_frame = |body: &[u8]| {
        let mut f = (linger_proto::data::DATA_FLAG | body.len() as u32)
            .to_be_bytes()
            .to_vec();
        f.extend_from_slice(body);
        f
    };
    let output = linger_proto::frame::to_wire(&linger_proto::server::ServerMsg::Output {
        rid: 1,
        seq: 1,
        command_id: uuid::Uuid::nil(),
        stream: linger_proto::types::StreamKind::Stdout,
        data: bytes::Bytes::from_static(b"forged"),
    })
    .expect("encode");
    let mut with_channel = linger_proto::frame::to_wire(&linger_proto::client::ClientMsg::Stdin {
        rid: 1,
        command_id: uuid::Uuid::nil(),
        offset: 0,
        data: bytes::Bytes::from_static(b"x"),
        eof: false,
    })
    .expect("encode");
    with_channel[4 + 10] = 1;
    for garbage in [not_a_message, data_frame(&[2, 0, 0]), output, with_channel] {
        let (r, mut wr) = tokio::net::UnixStream::connect(w.socket())
            .await
            .expect("connect")
            .into_split();
        let hello = linger_proto::frame::to_wire(&linger_proto::client::ClientMsg::Hello(
            linger_proto::client::Hello {
                protocol_version: linger_proto::PROTOCOL_VERSION,
                client_id: uuid::Uuid::new_v4(),
                client_name: "test".into(),
            },
        ))
        .expect("encode");
        wr.write_all(&hello).await.expect("hello");
        let mut reader = linger_proto::frame::FrameReader::new(r);
        assert!(matches!(
            reader.read::<linger_proto::server::ServerMsg>().await,
            Ok(Some(linger_proto::server::ServerMsg::Welcome(_)))
        ));
        wr.write_all(&garbage).await.expect("write");
        assert!(matches!(
            reader.read::<linger_proto::server::ServerMsg>().await,
            Ok(Some(linger_proto::server::ServerMsg::Goodbye { .. }))
        ));
        assert!(matches!(
            reader.read::<linger_proto::server::ServerMsg>().await,
            Ok(None)
        ));
    }

    // The daemon and the session carry on.
    let (out, _, status) = run(&client, &s.entry, "echo fine").await;
    assert_eq!((out.as_slice(), status), (&b"fine\n"[..], 0));
    let log = w.daemon_log();
    assert!(log.contains("refusing connection: bad handshake"), "{log}");
    assert!(log.contains("protocol version 999"), "{log}");
    assert!(
        log.contains("closing connection: malformed message"),
        "{log}"
    );
}

/// The disconnected-session API: disconnect with new settings, a Busy refusal for another
/// client while attached, connect and receive from it, with every command end reported.
#[tokio::test]
async fn api_disconnect_connect_receive() {
    use linger::{DisconnectOptions, Kind, ReceiveOptions, State};
    let mut w = World::new();
    w.start_daemon();
    let a = w.client("homeA");
    let b = w.client("homeB");
    let s = a
        .new_session("localhost", &NewOptions::default())
        .await
        .expect("new");
    let disconnected = InvokeOptions {
        disconnected: true,
        ..InvokeOptions::default()
    };
    // A detached command's stream ends at once; the output waits on the server.
    let mut started = a
        .invoke(&s.entry, "echo one; echo two >&2; exit 2", &disconnected)
        .await
        .expect("detached invoke");
    assert!(started.next().await.expect("stream").is_none());
    let on_b = b.get_remote("localhost").await.expect("get on B");
    let entry_b = on_b[0].entry.clone();
    assert_eq!(on_b[0].state, State::Disconnected);
    let view = b
        .connect_session(&entry_b, None, false)
        .await
        .expect("connect");
    assert_eq!(view.state, State::Opened);
    // A is now the one refused.
    let err = a
        .connect_session(&s.entry, None, false)
        .await
        .expect_err("busy");
    assert_eq!(err.kind(), Kind::Busy);
    let mut stream = b
        .receive(&entry_b, &ReceiveOptions::default())
        .await
        .expect("receive");
    let mut events = Vec::new();
    while let Some(ev) = stream.next().await.expect("stream") {
        events.push(ev);
    }
    let outputs: Vec<(StreamKind, Vec<u8>)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Output { stream, data, .. } => Some((*stream, data.to_vec())),
            _ => None,
        })
        .collect();
    assert!(outputs.contains(&(StreamKind::Stdout, b"one\n".to_vec())));
    assert!(outputs.contains(&(StreamKind::Stderr, b"two\n".to_vec())));
    assert!(matches!(
        events.last(),
        Some(Event::Finished { status: 2, .. })
    ));
    let summary = stream.summary().expect("summary");
    assert_eq!(summary.commands_finished, 1);
    assert_eq!(summary.dropped_output_bytes, 0);
    // B disconnects with a new idle timeout; the server's record says so.
    let view = b
        .disconnect(
            &entry_b,
            &DisconnectOptions {
                idle_timeout: Some(std::time::Duration::from_secs(3600)),
                buffering: Some(linger::BufferingMode::Drop),
            },
        )
        .await
        .expect("disconnect");
    let info = view.info.expect("server record");
    assert_eq!(view.state, State::Disconnected);
    assert_eq!(info.idle_timeout_ms, 3_600_000);
    assert_eq!(info.output_buffering_mode, linger::BufferingMode::Drop);
    assert!(info.expires_at_ms.is_some());
}

/// Connections that never introduce themselves are bounded in number: past the limit the
/// daemon closes new ones at once (and says so in its log); once they go, clients are served
/// again, and sessions were never touched.
#[tokio::test]
async fn silent_connections_are_bounded() {
    let mut w = World::new();
    w.start_daemon();
    let client = w.client("homeA");
    let s = client
        .new_session("localhost", &NewOptions::default())
        .await
        .expect("new");
    let mut silent = Vec::new();
    for _ in 0..lingerd::MAX_HANDSHAKING {
        silent.push(
            tokio::net::UnixStream::connect(w.socket())
                .await
                .expect("connect"),
        );
    }
    common::eventually("the refusal to be logged", || {
        // Each attempt past the limit is closed at once: reading sees the end.
        let mut extra = std::os::unix::net::UnixStream::connect(w.socket()).expect("connect");
        let mut b = [0u8; 1];
        std::io::Read::read(&mut extra, &mut b).ok() == Some(0)
            && w.daemon_log()
                .contains("others have not finished their handshake")
    });
    drop(silent);
    // Served again once the daemon has seen them go: a fresh client (its own connection)
    // runs a command in the old session.
    let mut served = None;
    for _ in 0..3000 {
        let again = w.client("homeA");
        if let Ok(stream) = again
            .invoke(&s.entry, "echo still-here", &InvokeOptions::default())
            .await
        {
            served = Some((again, stream));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (_again, mut stream) = served.expect("served again after the silent connections left");
    let mut out = Vec::new();
    while let Some(ev) = stream.next().await.expect("stream") {
        if let Event::Output { data, .. } = ev {
            out.extend_from_slice(&data);
        }
    }
    assert_eq!(out, b"still-here\n");
}

/// One client pipelining thousands of requests that all wait (invokes queued behind a busy
/// session) gets answers, not unbounded tasks: past the per-connection limit each is refused
/// at once with `limit`, and the daemon serves everyone else meanwhile.
#[tokio::test]
async fn pipelined_requests_are_bounded_per_connection() {
    use linger_proto::client::{ClientMsg, Invoke, InvokeKind, Request};
    use linger_proto::server::ServerMsg;
    use linger_proto::types::ErrorKind;

    let mut w = World::new();
    w.start_daemon();
    let (mut rd, mut wr, instance_id) = common::raw_session(&w, "flood", "busy").await;
    const FLOOD: u64 = 3000;
    let invoke = |rid: u64| ClientMsg::Request {
        rid,
        request: Request::Invoke(Invoke {
            instance_id,
            script: "sleep 600".into(),
            args: vec![],
            wait_ms: 600_000,
            cancel_timeout_ms: 1_000,
            disconnected: false,
            kind: InvokeKind::Plain,
            stdin: false,
            terminal: None,
        }),
    };
    // Read while writing: the daemon's answers must not fill the socket.
    let reading = tokio::spawn(async move {
        let mut refused = 0u64;
        while refused < FLOOD - lingerd::MAX_REQUESTS_PER_CONNECTION as u64 {
            match rd.read::<ServerMsg>().await {
                Ok(Some(ServerMsg::Error { error, .. })) => {
                    assert_eq!(error.kind, ErrorKind::Limit, "{error:?}");
                    refused += 1;
                }
                Ok(Some(_)) => {}
                other => panic!("the connection ended: {other:?}"),
            }
        }
        refused
    });
    for rid in 2..2 + FLOOD {
        wr.feed(&invoke(rid)).await.expect("feed");
    }
    wr.flush().await.expect("flush");
    let refused = reading.await.expect("reader");
    assert!(refused >= FLOOD - lingerd::MAX_REQUESTS_PER_CONNECTION as u64);
    // Everyone else is served meanwhile.
    let client = w.client("homeB");
    let s = client
        .new_session("localhost", &NewOptions::default())
        .await
        .expect("another client's session");
    let (out, _, status) = run(&client, &s.entry, "echo served").await;
    assert_eq!((out, status), (b"served\n".to_vec(), 0));
    drop(wr);
}

/// Durations from a client are used as sent, however large: an invoke that may wait
/// "forever" for a busy session, with a cancel timeout as long, neither overflows the
/// daemon's clock nor wraps round to a short wait.
#[tokio::test]
async fn the_longest_durations_a_client_can_send_are_taken_as_long() {
    let mut w = World::new();
    w.start_daemon();
    let client = w.client("homeA");
    let s = client
        .new_session("localhost", &NewOptions::default())
        .await
        .expect("new");
    let endless = InvokeOptions {
        wait: std::time::Duration::MAX,
        cancel_timeout: std::time::Duration::MAX,
        ..InvokeOptions::default()
    };
    let (out, _, st) = run_with(&client, &s.entry, "echo alive", &endless).await;
    assert_eq!((out.as_slice(), st), (&b"alive\n"[..], 0));
    // A huge idle timeout is refused as too long, not wrapped round to 1 h and accepted.
    let refused = client
        .disconnect(
            &s.entry,
            &linger::DisconnectOptions {
                idle_timeout: Some(std::time::Duration::from_secs(18_446_744_073_713_152)),
                buffering: None,
            },
        )
        .await
        .expect_err("an idle timeout beyond the configuration's maximum");
    assert_eq!(refused.kind(), linger::Kind::Usage, "{refused}");
    assert!(refused.to_string().contains("years"), "{refused}");
    // The daemon still answers.
    client
        .connect_session(&s.entry, None, false)
        .await
        .expect("connect");
    let (out, _, _) = run(&client, &s.entry, "echo still").await;
    assert_eq!(out, b"still\n");
}
