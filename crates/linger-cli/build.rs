//! The commit `linger --version` prints.

include!("../../build/commit.rs");

fn main() {
    emit_commit();
}
