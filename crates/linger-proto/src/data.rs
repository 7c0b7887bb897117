//! Data frames: command output and forwarded input travel outside MessagePack, as a fixed
//! 50-byte header and then the bytes (docs/PROTOCOL.md §3.1). A relay forwards one by
//! writing a new header before the payload it received, without decoding or copying it; the
//! message types keep their `Output` and `Stdin` variants, which are simply never encoded as
//! MessagePack.

use bytes::{Buf, BufMut, Bytes};
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

use crate::client::ClientMsg;
use crate::host::{DaemonToHost, HostToDaemon};
use crate::server::ServerMsg;
use crate::types::StreamKind;

/// Set in a frame's length word: the body is a data frame, not MessagePack.
pub const DATA_FLAG: u32 = 0x8000_0000;
/// Bytes of a data frame's header, before its payload.
pub const HEADER_LEN: usize = 50;

const KIND_OUTPUT: u8 = 1;
const KIND_INPUT: u8 = 2;
const KIND_FILE: u8 = 3;
/// Input's flags: the input ends after this chunk.
const FLAG_EOF: u8 = 1;

/// What a data frame's header says about its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataHeader {
    /// Command output: an entry of an output log.
    Output {
        stream: StreamKind,
        /// The request it answers (client protocol; 0 on the host protocol).
        rid: u64,
        /// The host's output log (host protocol; nil for the foreground log and on the client
        /// protocol).
        channel: Uuid,
        seq: u64,
        command_id: Uuid,
    },
    /// Forwarded standard input, from byte `offset` of the command's input.
    Input {
        eof: bool,
        /// The request that follows the command (client protocol; 0 on the host protocol).
        rid: u64,
        offset: u64,
        command_id: Uuid,
    },
    /// File content of a copy (`linger copy`), from byte `offset` of the copy's file bytes.
    File {
        /// The copy's request (client protocol; 0 on the host protocol).
        rid: u64,
        /// The copy (host protocol; nil on the client protocol).
        copy_id: Uuid,
        offset: u64,
    },
}

impl DataHeader {
    pub fn encode(&self, out: &mut impl BufMut) {
        let (kind, flags, rid, channel, position, command_id) = match *self {
            DataHeader::Output {
                stream,
                rid,
                channel,
                seq,
                command_id,
            } => {
                let stream = match stream {
                    StreamKind::Stdout => 0,
                    StreamKind::Stderr => 1,
                };
                (KIND_OUTPUT, stream, rid, channel, seq, command_id)
            }
            DataHeader::Input {
                eof,
                rid,
                offset,
                command_id,
            } => (
                KIND_INPUT,
                if eof { FLAG_EOF } else { 0 },
                rid,
                Uuid::nil(),
                offset,
                command_id,
            ),
            DataHeader::File {
                rid,
                copy_id,
                offset,
            } => (KIND_FILE, 0, rid, copy_id, offset, Uuid::nil()),
        };
        out.put_u8(kind);
        out.put_u8(flags);
        out.put_u64(rid);
        out.put_slice(channel.as_bytes());
        out.put_u64(position);
        out.put_slice(command_id.as_bytes());
    }

    /// The header at the start of a data frame's body; what is wrong with it otherwise.
    pub fn decode(mut body: &[u8]) -> Result<DataHeader, String> {
        if body.len() < HEADER_LEN {
            return Err(format!(
                "a data frame of {} bytes is shorter than its {HEADER_LEN}-byte header",
                body.len()
            ));
        }
        let kind = body.get_u8();
        let flags = body.get_u8();
        let rid = body.get_u64();
        let channel = uuid_from(&mut body);
        let position = body.get_u64();
        let command_id = uuid_from(&mut body);
        match (kind, flags) {
            (KIND_OUTPUT, 0 | 1) => Ok(DataHeader::Output {
                stream: if flags == 0 {
                    StreamKind::Stdout
                } else {
                    StreamKind::Stderr
                },
                rid,
                channel,
                seq: position,
                command_id,
            }),
            (KIND_INPUT, 0 | FLAG_EOF) if channel.is_nil() => Ok(DataHeader::Input {
                eof: flags == FLAG_EOF,
                rid,
                offset: position,
                command_id,
            }),
            (KIND_FILE, 0) if command_id.is_nil() => Ok(DataHeader::File {
                rid,
                copy_id: channel,
                offset: position,
            }),
            (KIND_OUTPUT | KIND_INPUT | KIND_FILE, _) => Err(format!(
                "a data frame of kind {kind} has invalid flags {flags:#x} or channel"
            )),
            _ => Err(format!("unknown data frame kind {kind}")),
        }
    }
}

fn uuid_from(body: &mut &[u8]) -> Uuid {
    let mut b = [0u8; 16];
    body.copy_to_slice(&mut b);
    Uuid::from_bytes(b)
}

/// A message type of one direction of a protocol: which of its messages are data frames.
pub trait Wire: Serialize + DeserializeOwned {
    /// The message as a data frame (its header and payload), or None for a MessagePack one.
    fn as_data(&self) -> Option<(DataHeader, &Bytes)>;
    /// The message a data frame carries, or why this direction has no such frame.
    fn from_data(header: DataHeader, payload: Bytes) -> Result<Self, String>;
}

fn unexpected(what: &str, header: &DataHeader) -> String {
    let kind = match header {
        DataHeader::Output { .. } => "an output",
        DataHeader::Input { .. } => "an input",
        DataHeader::File { .. } => "a file",
    };
    format!("{kind} data frame is not a {what}")
}

impl Wire for ServerMsg {
    fn as_data(&self) -> Option<(DataHeader, &Bytes)> {
        match self {
            ServerMsg::Output {
                rid,
                seq,
                command_id,
                stream,
                data,
            } => Some((
                DataHeader::Output {
                    stream: *stream,
                    rid: *rid,
                    channel: Uuid::nil(),
                    seq: *seq,
                    command_id: *command_id,
                },
                data,
            )),
            ServerMsg::CopyData { rid, offset, data } => Some((
                DataHeader::File {
                    rid: *rid,
                    copy_id: Uuid::nil(),
                    offset: *offset,
                },
                data,
            )),
            _ => None,
        }
    }

    fn from_data(header: DataHeader, data: Bytes) -> Result<Self, String> {
        match header {
            DataHeader::File {
                rid,
                copy_id,
                offset,
            } if copy_id.is_nil() => Ok(ServerMsg::CopyData { rid, offset, data }),
            DataHeader::Output {
                stream,
                rid,
                channel,
                seq,
                command_id,
            } => {
                if !channel.is_nil() {
                    return Err(
                        "server output names a channel, which only the host protocol has".into(),
                    );
                }
                Ok(ServerMsg::Output {
                    rid,
                    seq,
                    command_id,
                    stream,
                    data,
                })
            }
            DataHeader::Input { .. } | DataHeader::File { .. } => {
                Err(unexpected("server message", &header))
            }
        }
    }
}

impl Wire for ClientMsg {
    fn as_data(&self) -> Option<(DataHeader, &Bytes)> {
        match self {
            ClientMsg::Stdin {
                rid,
                command_id,
                offset,
                data,
                eof,
            } => Some((
                DataHeader::Input {
                    eof: *eof,
                    rid: *rid,
                    offset: *offset,
                    command_id: *command_id,
                },
                data,
            )),
            ClientMsg::CopyData { rid, offset, data } => Some((
                DataHeader::File {
                    rid: *rid,
                    copy_id: Uuid::nil(),
                    offset: *offset,
                },
                data,
            )),
            _ => None,
        }
    }

    fn from_data(header: DataHeader, data: Bytes) -> Result<Self, String> {
        match header {
            DataHeader::File {
                rid,
                copy_id,
                offset,
            } if copy_id.is_nil() => Ok(ClientMsg::CopyData { rid, offset, data }),
            DataHeader::Input {
                eof,
                rid,
                offset,
                command_id,
            } => Ok(ClientMsg::Stdin {
                rid,
                command_id,
                offset,
                data,
                eof,
            }),
            DataHeader::Output { .. } | DataHeader::File { .. } => {
                Err(unexpected("client message", &header))
            }
        }
    }
}

impl Wire for HostToDaemon {
    fn as_data(&self) -> Option<(DataHeader, &Bytes)> {
        match self {
            HostToDaemon::Output {
                channel,
                seq,
                command_id,
                stream,
                data,
            } => Some((
                DataHeader::Output {
                    stream: *stream,
                    rid: 0,
                    channel: channel.unwrap_or_else(Uuid::nil),
                    seq: *seq,
                    command_id: *command_id,
                },
                data,
            )),
            HostToDaemon::CopyData {
                copy_id,
                offset,
                data,
            } => Some((
                DataHeader::File {
                    rid: 0,
                    copy_id: *copy_id,
                    offset: *offset,
                },
                data,
            )),
            _ => None,
        }
    }

    fn from_data(header: DataHeader, data: Bytes) -> Result<Self, String> {
        match header {
            DataHeader::File {
                copy_id, offset, ..
            } => Ok(HostToDaemon::CopyData {
                copy_id,
                offset,
                data,
            }),
            DataHeader::Output {
                stream,
                channel,
                seq,
                command_id,
                ..
            } => Ok(HostToDaemon::Output {
                channel: (!channel.is_nil()).then_some(channel),
                seq,
                command_id,
                stream,
                data,
            }),
            DataHeader::Input { .. } => Err(unexpected("host message", &header)),
        }
    }
}

impl Wire for DaemonToHost {
    fn as_data(&self) -> Option<(DataHeader, &Bytes)> {
        match self {
            DaemonToHost::Stdin {
                command_id,
                offset,
                data,
                eof,
            } => Some((
                DataHeader::Input {
                    eof: *eof,
                    rid: 0,
                    offset: *offset,
                    command_id: *command_id,
                },
                data,
            )),
            DaemonToHost::CopyData {
                copy_id,
                offset,
                data,
            } => Some((
                DataHeader::File {
                    rid: 0,
                    copy_id: *copy_id,
                    offset: *offset,
                },
                data,
            )),
            _ => None,
        }
    }

    fn from_data(header: DataHeader, data: Bytes) -> Result<Self, String> {
        match header {
            DataHeader::File {
                copy_id, offset, ..
            } => Ok(DaemonToHost::CopyData {
                copy_id,
                offset,
                data,
            }),
            DataHeader::Input {
                eof,
                offset,
                command_id,
                ..
            } => Ok(DaemonToHost::Stdin {
                command_id,
                offset,
                data,
                eof,
            }),
            DataHeader::Output { .. } => Err(unexpected("daemon message", &header)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_back_as_written_and_bad_ones_are_named() {
        let headers = [
            DataHeader::Output {
                stream: StreamKind::Stderr,
                rid: 7,
                channel: Uuid::from_u128(5),
                seq: 9,
                command_id: Uuid::from_u128(3),
            },
            DataHeader::Input {
                eof: true,
                rid: 1,
                offset: 1 << 40,
                command_id: Uuid::from_u128(4),
            },
            DataHeader::File {
                rid: 3,
                copy_id: Uuid::from_u128(6),
                offset: 1 << 33,
            },
        ];
        for h in headers {
            let mut b = Vec::new();
            h.encode(&mut b);
            assert_eq!(b.len(), HEADER_LEN);
            assert_eq!(DataHeader::decode(&b), Ok(h));
            assert!(DataHeader::decode(&b[..HEADER_LEN - 1]).is_err());
            let mut bad = b.clone();
            bad[1] = 0x80;
            assert!(DataHeader::decode(&bad).is_err(), "flags");
            bad = b;
            bad[0] = 9;
            assert!(DataHeader::decode(&bad).is_err(), "kind");
        }
    }

    #[test]
    fn each_direction_takes_only_its_own_data_frames() {
        let output = DataHeader::Output {
            stream: StreamKind::Stdout,
            rid: 1,
            channel: Uuid::nil(),
            seq: 1,
            command_id: Uuid::nil(),
        };
        let input = DataHeader::Input {
            eof: false,
            rid: 1,
            offset: 0,
            command_id: Uuid::nil(),
        };
        assert!(ServerMsg::from_data(output, Bytes::new()).is_ok());
        assert!(ServerMsg::from_data(input, Bytes::new()).is_err());
        assert!(ClientMsg::from_data(input, Bytes::new()).is_ok());
        assert!(ClientMsg::from_data(output, Bytes::new()).is_err());
        assert!(HostToDaemon::from_data(output, Bytes::new()).is_ok());
        assert!(DaemonToHost::from_data(input, Bytes::new()).is_ok());
        let on_a_channel = DataHeader::Output {
            stream: StreamKind::Stdout,
            rid: 0,
            channel: Uuid::from_u128(1),
            seq: 1,
            command_id: Uuid::nil(),
        };
        assert!(
            ServerMsg::from_data(on_a_channel, Bytes::new()).is_err(),
            "the client protocol has no channels"
        );
        assert!(matches!(
            HostToDaemon::from_data(on_a_channel, Bytes::new()),
            Ok(HostToDaemon::Output {
                channel: Some(_),
                ..
            })
        ));
        // File content goes both ways; a copy id belongs to the host protocol only.
        let file = DataHeader::File {
            rid: 1,
            copy_id: Uuid::nil(),
            offset: 0,
        };
        assert!(ServerMsg::from_data(file, Bytes::new()).is_ok());
        assert!(ClientMsg::from_data(file, Bytes::new()).is_ok());
        let of_a_copy = DataHeader::File {
            rid: 0,
            copy_id: Uuid::from_u128(2),
            offset: 0,
        };
        assert!(ServerMsg::from_data(of_a_copy, Bytes::new()).is_err());
        assert!(ClientMsg::from_data(of_a_copy, Bytes::new()).is_err());
        assert!(matches!(
            DaemonToHost::from_data(of_a_copy, Bytes::new()),
            Ok(DaemonToHost::CopyData { .. })
        ));
        assert!(matches!(
            HostToDaemon::from_data(of_a_copy, Bytes::new()),
            Ok(HostToDaemon::CopyData { .. })
        ));
    }
}
