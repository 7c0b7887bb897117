//! The hex dumps in docs/PROTOCOL.md §4 (and the data frames of §3.1) are real encoder output: each message below, framed,
//! must appear there as one block of hex lines. A client written from the document alone
//! relies on them.

use bytes::Bytes;
use linger_proto::client::{ClientMsg, Hello, Invoke, InvokeKind, Receive, Request};
use linger_proto::host::DaemonToHost;
use linger_proto::server::{ReceiveSummary, Reply, ServerMsg};
use linger_proto::types::{ErrorBody, ErrorKind, JobInfo, JobKind, JobState, StreamKind};
use uuid::Uuid;

const DOC: &str = include_str!("../../../docs/PROTOCOL.md");

const CLIENT: Uuid = Uuid::from_u128(0x00112233_4455_6677_8899_aabbccddeeff);
const INSTANCE: Uuid = Uuid::from_u128(0x0f0e0d0c_0b0a_0908_0706_050403020100);
const COMMAND: Uuid = Uuid::from_u128(0xa0a1a2a3_a4a5_a6a7_a8a9_aaabacadaeaf);
const JOB: Uuid = Uuid::from_u128(0xb0b1b2b3_b4b5_b6b7_b8b9_babbbcbdbebf);

fn framed<T: linger_proto::data::Wire>(msg: &T) -> String {
    let all = linger_proto::frame::to_wire(msg).expect("encode");
    all.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs of consecutive lines made only of hex byte pairs, each run joined into one string.
fn documented_blocks() -> Vec<String> {
    let is_hex_line = |l: &str| {
        let l = l.trim();
        !l.is_empty()
            && l.split_whitespace()
                .all(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
    };
    let mut blocks = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in DOC.lines() {
        if is_hex_line(line) {
            current.extend(line.split_whitespace());
        } else if !current.is_empty() {
            blocks.push(current.join(" "));
            current.clear();
        }
    }
    blocks
}

#[test]
fn every_documented_example_is_what_the_encoder_writes() {
    let examples: Vec<(&str, String)> = vec![
        ("Ping", framed(&ClientMsg::Ping { nonce: 7 })),
        (
            "Hello",
            framed(&ClientMsg::Hello(Hello {
                protocol_version: linger_proto::PROTOCOL_VERSION,
                client_id: CLIENT,
                client_name: "x".into(),
            })),
        ),
        (
            "Invoke",
            framed(&ClientMsg::Request {
                rid: 3,
                request: Request::Invoke(Invoke {
                    instance_id: INSTANCE,
                    script: "echo hi".into(),
                    args: vec![],
                    wait_ms: 240_000,
                    cancel_timeout_ms: 60_000,
                    disconnected: false,
                    kind: InvokeKind::Plain,
                    stdin: true,
                    terminal: None,
                }),
            }),
        ),
        (
            "Started",
            framed(&ServerMsg::Reply {
                rid: 3,
                reply: Reply::Started {
                    command_id: COMMAND,
                    job_id: None,
                },
            }),
        ),
        (
            "StdinAck",
            framed(&ServerMsg::StdinAck {
                rid: 3,
                command_id: COMMAND,
                written: 0,
                closed: false,
            }),
        ),
        (
            "Stdin",
            framed(&ClientMsg::Stdin {
                rid: 3,
                command_id: COMMAND,
                offset: 0,
                data: Bytes::from_static(b"in\n"),
                eof: true,
            }),
        ),
        (
            "Output",
            framed(&ServerMsg::Output {
                rid: 3,
                seq: 1,
                command_id: COMMAND,
                stream: StreamKind::Stdout,
                data: Bytes::from_static(b"hi\n"),
            }),
        ),
        (
            "Finished",
            framed(&ServerMsg::Finished {
                rid: 3,
                seq: 2,
                command_id: COMMAND,
                status: 0,
                unread_input: Default::default(),
                input_offset: None,
            }),
        ),
        (
            "Receive",
            framed(&ClientMsg::Request {
                rid: 4,
                request: Request::Receive(Receive {
                    instance_id: INSTANCE,
                    keep: false,
                    buffering: None,
                    terminal: None,
                }),
            }),
        ),
        (
            "Dropped",
            framed(&ServerMsg::Dropped {
                rid: 4,
                seq: 9,
                bytes: 4096,
            }),
        ),
        (
            "Received",
            framed(&ServerMsg::Reply {
                rid: 4,
                reply: Reply::Received(ReceiveSummary {
                    commands_finished: 1,
                    dropped_output_bytes: 4096,
                    running_command: None,
                }),
            }),
        ),
        (
            "Goodbye",
            framed(&ServerMsg::Goodbye {
                error: ErrorBody::new(ErrorKind::Protocol, "bye"),
            }),
        ),
        (
            "ReceiveJob",
            framed(&ClientMsg::Request {
                rid: 6,
                request: Request::ReceiveJob {
                    instance_id: INSTANCE,
                    job_id: JOB,
                    keep: false,
                    follow: true,
                },
            }),
        ),
        (
            "Jobs",
            framed(&ServerMsg::Reply {
                rid: 7,
                reply: Reply::Jobs(vec![JobInfo {
                    job_id: JOB,
                    kind: JobKind::Background,
                    command: "make".into(),
                    state: JobState::Running,
                    status: None,
                    has_more_data: true,
                    pending_output_bytes: 6,
                    started_at_ms: 1_795_437_803_656,
                    ended_at_ms: None,
                }]),
            }),
        ),
        (
            "host Replay",
            framed(&DaemonToHost::Replay { channel: None }),
        ),
    ];
    let blocks = documented_blocks();
    let missing: Vec<String> = examples
        .iter()
        .filter(|(_, hex)| !blocks.contains(hex))
        .map(|(name, hex)| format!("{name}:\n  {hex}"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/PROTOCOL.md §4 lacks these frames (or shows them differently):\n{}",
        missing.join("\n")
    );
    assert_eq!(
        blocks.len(),
        examples.len(),
        "§4 shows a frame this test does not check"
    );
}
