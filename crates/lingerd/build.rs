//! `lingerd-host` links as a position-dependent executable: one runs per session, and a
//! position-independent one relocates its data at every start, leaving a private copy of
//! those pages (about 250 KiB) in each host. Linked at a fixed address they stay shared,
//! clean pages of the file. The host runs as its session's user and holds nothing that user
//! could not read, so the address randomisation given up for its own code costs little;
//! lingerd itself stays position-independent.

include!("../../build/commit.rs");

fn main() {
    emit_commit();
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=lingerd-host=-no-pie");
    }
}
