//! lingerd's integration tests, in one binary: the daemon binary on its own, and the TLS
//! login against a man in the middle.

mod daemon;
mod mitm;
