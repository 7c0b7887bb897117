//! A mutation fuzzer that runs on the stable toolchain (cargo-fuzz needs nightly): it takes
//! valid encodings of every kind of message, mutates them (bit flips, interesting bytes,
//! insertions, deletions, truncations, splices, length-prefix tampering) and feeds them to
//!
//! - `decode`: the frame reader and the MessagePack decoder, for each message type of the
//!   client, server and host protocols: nothing may panic, and reading must end;
//! - `handshake`: a real daemon's connection handler (in a temporary state directory), fed
//!   the bytes as a client would send them: the handler may refuse, never panic, and must
//!   end when the input does.
//!
//! It is not coverage-guided; it is deterministic for a seed, so a failure is replayed by
//! running it again with the seed it prints. Inputs that fail are also written to disk.

use std::sync::Arc;

use bytes::Bytes;
use linger_proto::client::{
    Authenticate, ClientMsg, Connect, Disconnect, Hello, Invoke, InvokeKind, ListSessions,
    NewSession, Receive, Request,
};
use linger_proto::frame::FrameReader;
use linger_proto::host::{DaemonToHost, HostToDaemon, RunKind};
use linger_proto::server::ServerMsg;
use linger_proto::types::{BufferingMode, StreamKind};
use linger_proto::PROTOCOL_VERSION;
use uuid::Uuid;

/// xorshift64*: small, fast and reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// One length-prefixed frame holding `msg`, as the wire carries it (a data frame for output
/// and input).
fn framed<T: linger_proto::data::Wire>(msg: &T) -> Vec<u8> {
    linger_proto::frame::to_wire(msg).unwrap_or_default()
}

/// A real key (made with `ssh-keygen -t ed25519`) and a real SshSig by it in the login
/// namespace, over another message: they parse, and the signature fails to verify.
const FUZZ_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF7ehLMKmiz5/TsrruUdLx3z/tL4ePKSaxIV9zumMCEl fuzz";
const FUZZ_SIGNATURE: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgXt6EswqaLPn9Oyuu5R0vHfP+0v
h48pJrEhX3O6YwISUAAAAObGluZ2VyLWF1dGhAdjEAAAAAAAAABnNoYTUxMgAAAFMAAAAL
c3NoLWVkMjU1MTkAAABApM7w4RSmX0KwQIklOsLHw44Pb3/B8D2tIoeKyXB3A0fhN17iQP
sCl8HkCgIIzr55ZdlcQfR2fHLLJUlnHsFRBw==
-----END SSH SIGNATURE-----
";

fn authenticate() -> ClientMsg {
    ClientMsg::Authenticate(Authenticate {
        user: "fuzz".into(),
        public_key: FUZZ_KEY.into(),
        signature: FUZZ_SIGNATURE.into(),
    })
}

fn hello() -> ClientMsg {
    ClientMsg::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_id: Uuid::from_u128(7),
        client_name: "fuzz".into(),
    })
}

/// Valid inputs to start from: every client request after a Hello, and messages of the other
/// protocols.
pub fn corpus() -> Vec<Vec<u8>> {
    let id = Uuid::from_u128(42);
    let requests = vec![
        Request::NewSession(NewSession {
            name: "f".into(),
            configuration: None,
            idle_timeout_ms: Some(60_000),
            buffering: Some(BufferingMode::Drop),
            environment: [("LANG".to_string(), "C".to_string())].into(),
        }),
        Request::ListSessions(ListSessions::default()),
        Request::RemoveSession { instance_id: id },
        Request::Invoke(Invoke {
            instance_id: id,
            script: "echo hi".into(),
            args: vec!["a".into()],
            wait_ms: 0,
            cancel_timeout_ms: 1,
            disconnected: false,
            kind: InvokeKind::Job,
            stdin: true,
            terminal: Some(linger_proto::types::TerminalSpec {
                term: "xterm".into(),
                rows: 24,
                cols: 80,
            }),
        }),
        Request::Connect(Connect {
            instance_id: id,
            buffering: None,
            force: true,
        }),
        Request::Disconnect(Disconnect {
            instance_id: id,
            idle_timeout_ms: Some(1),
            buffering: Some(BufferingMode::Spool),
        }),
        Request::Receive(Receive {
            instance_id: id,
            keep: true,
            buffering: None,
            terminal: None,
        }),
        Request::Receive(Receive {
            instance_id: id,
            keep: false,
            buffering: None,
            terminal: Some(linger_proto::types::TerminalSpec {
                term: String::new(),
                rows: 0,
                cols: 0,
            }),
        }),
        Request::Enter { instance_id: id },
        Request::Watch { instance_id: id },
        Request::ListJobs { instance_id: id },
        Request::ReceiveJob {
            instance_id: id,
            job_id: id,
            keep: false,
            follow: false,
        },
        Request::StopJob {
            instance_id: id,
            job_id: id,
        },
        Request::RemoveJob {
            instance_id: id,
            job_id: id,
        },
    ];
    let mut out = Vec::new();
    // A TLS login: two attempts, then a request.
    let mut login = framed(&hello());
    login.extend(framed(&authenticate()));
    login.extend(framed(&authenticate()));
    login.extend(framed(&ClientMsg::Ping { nonce: 1 }));
    out.push(login);
    // Oversized and hostile login fields: a frame too large to precede a login, a user
    // name too long to be looked up, one with control characters.
    for user in [
        "u".repeat(20_000),
        "v".repeat(2_000),
        "bob\n\x1b[2Jforged".to_string(),
    ] {
        let mut attack = framed(&hello());
        attack.extend(framed(&ClientMsg::Authenticate(Authenticate {
            user,
            public_key: FUZZ_KEY.into(),
            signature: FUZZ_SIGNATURE.into(),
        })));
        out.push(attack);
    }
    for (rid, request) in requests.into_iter().enumerate() {
        let mut input = framed(&hello());
        input.extend(framed(&ClientMsg::Request {
            rid: rid as u64,
            request,
        }));
        input.extend(framed(&ClientMsg::Ack { rid: 1, seq: 9 }));
        input.extend(framed(&ClientMsg::Stdin {
            rid: rid as u64,
            command_id: id,
            offset: 0,
            data: Bytes::from_static(b"input"),
            eof: true,
        }));
        input.extend(framed(&ClientMsg::Cancel { rid: 1 }));
        input.extend(framed(&ClientMsg::Ping { nonce: 3 }));
        out.push(input);
    }
    out.push(framed(&ServerMsg::Output {
        rid: 1,
        seq: 2,
        command_id: id,
        stream: StreamKind::Stderr,
        data: Bytes::from_static(b"out\n"),
    }));
    out.push(framed(&DaemonToHost::Run {
        command_id: id,
        script: "x".into(),
        args: vec![],
        kind: RunKind::LaunchJob { job_id: id },
        stdin: false,
        terminal: None,
    }));
    out.push(framed(&DaemonToHost::Redraw {
        rows: u16::MAX,
        cols: 0,
        watcher: Some(u64::MAX),
    }));
    out.push(framed(&DaemonToHost::Watch { on: true }));
    out.push(framed(&DaemonToHost::Resize {
        command_id: id,
        rows: 0,
        cols: u16::MAX,
    }));
    out.push(framed(&DaemonToHost::Stdin {
        command_id: id,
        offset: 3,
        data: Bytes::from_static(b"in"),
        eof: false,
    }));
    out.push(framed(&ServerMsg::StdinAck {
        rid: 1,
        command_id: id,
        written: 7,
        closed: false,
    }));
    out.push(framed(&HostToDaemon::Dropped {
        channel: Some(id),
        seq: 4,
        from_total: 1,
        to_total: 9,
    }));
    out
}

const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0xff, 0xc0, 0xc1, 0xc4, 0xc5, 0xc6, 0xcc, 0xcd, 0xce, 0xcf, 0xd9, 0xda,
    0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0x90, 0x9f, 0xa0, 0xbf,
];

/// One mutation of `input` (sometimes several), using `other` for splices.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                for _ in 0..n {
                    out.insert(i, rng.next_u64() as u8);
                }
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                out.drain(i..i + n);
            }
            4 => out.truncate(rng.below(len + 1)),
            5 if !other.is_empty() => {
                let at = rng.below(len + 1);
                let from = rng.below(other.len());
                let n = 1 + rng.below(other.len() - from);
                out.splice(at..at, other[from..from + n].iter().copied());
            }
            6 if len >= 4 => {
                // Tamper with a length prefix: the first, or one at a random offset.
                let i = if rng.below(2) == 0 {
                    0
                } else {
                    rng.below(len - 3)
                };
                let v: u32 = match rng.below(4) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => (linger_proto::frame::MAX_FRAME_LEN + 1) as u32,
                    _ => rng.next_u64() as u32 % 256,
                };
                out[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            7 if len > 0 => {
                // Repeat a chunk (deeply nested or repeated structures).
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let chunk = out[i..i + n].to_vec();
                for _ in 0..=rng.below(8) {
                    out.splice(i..i, chunk.iter().copied());
                }
            }
            _ => {
                let i = rng.below(len + 1);
                out.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
            }
        }
    }
    out
}

/// Reads every frame of `input` as `T` until the end or the first error.
async fn read_all<T: linger_proto::data::Wire>(input: &[u8]) {
    let mut reader = FrameReader::new(input);
    while let Ok(Some(_)) = reader.read::<T>().await {}
}

/// The decode target: every message type of every protocol.
pub async fn decode_target(input: &[u8]) {
    read_all::<ClientMsg>(input).await;
    read_all::<ServerMsg>(input).await;
    read_all::<DaemonToHost>(input).await;
    read_all::<HostToDaemon>(input).await;
    let _ = linger_proto::frame::decode::<linger_proto::host::HostSpec>(input);
}

/// A real daemon in a temporary state directory, for the handshake target.
pub struct DaemonUnderTest {
    pub daemon: Arc<lingerd::Daemon>,
    _dir: tempfile::TempDir,
}

impl DaemonUnderTest {
    pub async fn start() -> std::io::Result<DaemonUnderTest> {
        let dir = tempfile::tempdir()?;
        let paths = lingerd::paths::DaemonPaths {
            socket: dir.path().join("lingerd.sock"),
            state_dir: dir.path().join("state"),
        };
        let keys = dir.path().join("authorized_keys");
        std::fs::write(&keys, format!("principal=\"fuzz\" {FUZZ_KEY}\n"))?;
        let mut config = lingerd::config::Config::default();
        config.server.authorized_keys = Some(keys);
        let daemon = lingerd::Daemon::start(config, paths, lingerd::Mode::PerUser).await?;
        Ok(DaemonUnderTest { daemon, _dir: dir })
    }

    /// The daemon's audit log so far.
    pub fn audit_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("state/audit.log")).unwrap_or_default()
    }

    /// Feeds `input` to a connection handler as a client would, then ends the input; the
    /// handler must end. `tls_from` set: as a TLS connection from that address, which must
    /// log in first (each from a new address, so failures are not slowed down). Returns
    /// false if it panicked.
    pub async fn handshake_target(&self, input: Vec<u8>, tls_from: Option<u32>) -> bool {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (sr, sw) = tokio::io::split(server);
        let daemon = self.daemon.clone();
        let served = tokio::spawn(async move {
            match tls_from {
                Some(ip) => {
                    let peer = lingerd::TlsPeer {
                        addr: std::net::SocketAddr::from((std::net::Ipv4Addr::from(ip), 5990)),
                        channel_binding: [1; 32],
                        certificate_sha256: [2; 32],
                    };
                    daemon.serve_tls_connection(sr, sw, peer).await
                }
                None => {
                    let peer = lingerd::Peer {
                        principal: "fuzz".into(),
                        from: "the fuzzer".into(),
                        no_pty: false,
                    };
                    daemon.serve_connection(sr, sw, peer).await
                }
            }
        });
        let (mut cr, cw) = tokio::io::split(client);
        let writing = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut cw = cw;
            let _ = cw.write_all(&input).await;
            let _ = cw.shutdown().await;
        });
        // Drain what the daemon answers so it never blocks on a full pipe.
        let draining = tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut cr, &mut sink).await;
        });
        let ok = served.await.is_ok();
        let _ = writing.await;
        let _ = draining.await;
        ok
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Findings {
    pub decode_runs: u64,
    pub handshake_runs: u64,
    /// Inputs that made a target panic.
    pub crashes: Vec<(String, Vec<u8>)>,
}

/// Runs both targets: `decode_runs` decode inputs, and a handshake input every
/// `handshake_every` of them.
pub async fn run(
    seed: u64,
    decode_runs: u64,
    handshake_every: u64,
    daemon: &DaemonUnderTest,
) -> Findings {
    let corpus = corpus();
    let mut rng = Rng::new(seed);
    let mut found = Findings::default();
    for i in 0..decode_runs {
        let a = &corpus[rng.below(corpus.len())];
        let b = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, a, b);
        let decoded = {
            let input = input.clone();
            // On a task of its own, so that a panic is caught (as a failed join).
            tokio::spawn(async move { decode_target(&input).await })
                .await
                .is_ok()
        };
        found.decode_runs += 1;
        if !decoded {
            found.crashes.push(("decode".into(), input.clone()));
        }
        if handshake_every > 0 && i % handshake_every == 0 {
            found.handshake_runs += 1;
            // Every fourth handshake is a TLS one, from an address of its own.
            let tls_from = (found.handshake_runs % 4 == 0).then(|| rng.next_u64() as u32);
            if !daemon.handshake_target(input.clone(), tls_from).await {
                found.crashes.push(("handshake".into(), input));
            }
        }
    }
    found
}

/// Used by tests and by the binary alike: a corpus entry must decode before mutation.
pub fn corpus_decodes() -> bool {
    use linger_proto::frame::{message, Frame};
    corpus().iter().all(|input| {
        let mut rest = &input[..];
        while rest.len() >= 4 {
            let word = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let n = (word & !linger_proto::data::DATA_FLAG) as usize;
            let frame = || Frame {
                data: word & linger_proto::data::DATA_FLAG != 0,
                body: bytes::BytesMut::from(&rest[4..4 + n]),
            };
            let any = message::<ClientMsg>(frame()).is_ok()
                || message::<ServerMsg>(frame()).is_ok()
                || message::<DaemonToHost>(frame()).is_ok()
                || message::<HostToDaemon>(frame()).is_ok();
            if !any {
                return false;
            }
            rest = &rest[4 + n..];
        }
        true
    })
}

/// Writes a failing input where the binary's user can find it.
pub fn save(
    dir: &std::path::Path,
    target: &str,
    input: &[u8],
) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{target}-{:016x}.bin", fnv(input)));
    std::fs::write(&path, input)?;
    Ok(path)
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
