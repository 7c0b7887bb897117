//! The linger wire protocol: framing plus every message exchanged between the client and
//! `lingerd` (module [`client`]/[`server`]) and between `lingerd` and a session host
//! (module [`host`]).
//!
//! Every type that crosses a process boundary lives here: changing one is a protocol change
//! (see docs/PROTOCOL.md, which must change with it). The only other serializable types are
//! on-disk formats owned by one program (the client's registry, the daemon's config file).

pub mod auth;
pub mod client;
pub mod copy;
pub mod data;
pub mod duration;
pub mod environment;
pub mod frame;
pub mod host;
pub mod input;
pub mod local;
pub mod server;
pub mod text;
pub mod types;

pub use frame::{FrameError, FramedConn, MAX_FRAME_LEN};

/// Version of the client <-> daemon protocol. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 4;

/// Version of the daemon <-> session host protocol. A daemon does not adopt a host speaking
/// another version: it logs why and leaves the host (and its session) running untouched.
pub const HOST_PROTOCOL_VERSION: u32 = 4;
