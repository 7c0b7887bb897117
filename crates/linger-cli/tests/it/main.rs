//! linger-cli's integration tests, in one binary (as ripgrep's): each module drives real
//! `lingerd` daemons (in temporary XDG directories) through the library and the `linger`
//! binary, and `common` is the harness they share. One binary builds and links once, and
//! a helper no module uses is dead code the compiler reports.

mod common;

mod api;
mod cli;
mod configurations;
mod copy;
mod disconnected;
mod enter;
mod faithful;
mod faults;
mod jobs;
mod memory;
mod ssh;
mod stdin;
mod system;
mod terminal;
mod tls;
mod watch;
