//! linger-fuzz's integration tests, in one binary: what a peer may send before logging in,
//! and a fixed run of the fuzzer.

mod prelogin;
mod smoke;
