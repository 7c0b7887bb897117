//! What a peer may send before it has logged in over TLS (SPEC §12): a huge user name, a
//! frame header announcing megabytes, control characters meant to forge log lines. Each is
//! refused at a small, fixed cost, and what reaches the audit log is bounded and escaped.

use linger_proto::client::{Authenticate, ClientMsg, Hello};
use linger_proto::frame::FrameReader;
use linger_proto::server::ServerMsg;
use linger_proto::types::{ErrorBody, ErrorKind};
use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

fn hello() -> ClientMsg {
    ClientMsg::Hello(Hello {
        protocol_version: linger_proto::PROTOCOL_VERSION,
        client_id: uuid::Uuid::new_v4(),
        client_name: "attacker\n\x1b[2J".into(),
    })
}

fn attempt(user: String) -> ClientMsg {
    ClientMsg::Authenticate(Authenticate {
        user,
        public_key:
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF7ehLMKmiz5/TsrruUdLx3z/tL4ePKSaxIV9zumMCEl x"
                .into(),
        signature: "not a signature".into(),
    })
}

fn frame(msg: &ClientMsg) -> Vec<u8> {
    let body = linger_proto::frame::encode(msg).expect("encode");
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

struct Conn {
    rd: FrameReader<ReadHalf<DuplexStream>>,
    wr: WriteHalf<DuplexStream>,
    served: tokio::task::JoinHandle<()>,
}

/// A "TLS" connection (its TLS facts made up) to the daemon under test, from `ip`.
fn connect(d: &linger_fuzz::DaemonUnderTest, ip: u32) -> Conn {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (sr, sw) = tokio::io::split(server);
    let daemon = d.daemon.clone();
    let peer = lingerd::TlsPeer {
        addr: std::net::SocketAddr::from((std::net::Ipv4Addr::from(ip), 5990)),
        channel_binding: [1; 32],
        certificate_sha256: [2; 32],
    };
    let served = tokio::spawn(async move { daemon.serve_tls_connection(sr, sw, peer).await });
    let (cr, wr) = tokio::io::split(client);
    Conn {
        rd: FrameReader::new(cr),
        wr,
        served,
    }
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.expect("send");
    }

    /// Reads until the daemon's `Goodbye` (answering `AuthFailed`s with nothing).
    async fn goodbye(&mut self) -> ErrorBody {
        loop {
            match self.rd.read::<ServerMsg>().await {
                Ok(Some(ServerMsg::Goodbye { error })) => return error,
                Ok(Some(_)) => {}
                other => panic!("no Goodbye: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_huge_frame_before_login_is_refused_without_being_read() {
    let d = linger_fuzz::DaemonUnderTest::start().await.expect("daemon");
    let mut c = connect(&d, 0x0a00_0101);
    c.send(&frame(&hello())).await;
    // A 2.5 MB user name in one frame: only its header and a first slice are sent, and this
    // end stays open. The daemon must refuse on the header alone.
    let huge = frame(&attempt("u".repeat(2_500_000)));
    c.send(&huge[..8192]).await;
    let error = c.goodbye().await;
    assert_eq!(error.kind, ErrorKind::Protocol, "{error:?}");
    assert!(error.message.contains("frame"), "{error:?}");
    assert!(error.message.len() < 300, "{}", error.message.len());
    c.served.await.expect("the handler ends without panicking");

    // Even a header alone, announcing the most any frame may hold.
    let mut c = connect(&d, 0x0a00_0102);
    c.send(&(linger_proto::MAX_FRAME_LEN as u32).to_be_bytes())
        .await;
    assert_eq!(c.goodbye().await.kind, ErrorKind::Protocol);
    c.served.await.expect("the handler ends");
}

#[tokio::test]
async fn user_names_are_bounded_and_escaped_before_they_are_logged() {
    let d = linger_fuzz::DaemonUnderTest::start().await.expect("daemon");
    let mut c = connect(&d, 0x0a00_0201);
    c.send(&frame(&hello())).await;
    // Fits in a login frame, but is no user name: refused without a lookup, and logged
    // cut short and escaped. Then one that tries to forge a line of the audit log.
    c.send(&frame(&attempt("v".repeat(12_000)))).await;
    c.send(&frame(&attempt(
        "bob\n{\"action\":\"login\",\"principal\":\"root\"}\x1b[2J".into(),
    )))
    .await;
    c.wr.shutdown().await.expect("end of input");
    let _ = c.served.await;
    let audit = d.audit_log();
    let lines: Vec<&str> = audit.lines().collect();
    assert_eq!(lines.len(), 2, "{audit}");
    for line in &lines {
        let record: serde_json::Value = serde_json::from_str(line).expect("one JSON record");
        assert_eq!(record["action"], "login_failed");
        assert!(line.len() < 1024, "{} bytes", line.len());
    }
    let second: serde_json::Value = serde_json::from_str(lines[1]).expect("JSON");
    let user = second["detail"]["user"].as_str().expect("user");
    assert!(
        user.starts_with("bob\\n{") && user.contains("\\u{1b}"),
        "{user}"
    );
    assert!(!audit.contains("\"principal\":\"root\""), "{audit}");
}

/// A login that never completes is ended at the grace time as a login failure that says why
/// (a client slowed down by others' failures must not read it as a protocol error).
#[tokio::test(start_paused = true)]
async fn a_login_past_its_grace_time_is_an_auth_failure_that_says_why() {
    let d = linger_fuzz::DaemonUnderTest::start().await.expect("daemon");
    let mut c = connect(&d, 0x0a00_0301);
    c.send(&frame(&hello())).await;
    // Nothing more: the paused clock runs ahead to the grace time.
    let error = c.goodbye().await;
    assert_eq!(error.kind, ErrorKind::Auth, "{error:?}");
    assert!(
        error.message.contains("no successful login within 30 s"),
        "{error:?}"
    );
}
