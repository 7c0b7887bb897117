//! Builds the session shell's command loop (src/shell/loop.c) as a bash loadable builtin.
//! The shared object is embedded in the host binary and handed to bash through a memfd, so
//! nothing has to be installed beside lingerd.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/shell/loop.c";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let so = out.join("linger_shell.so");
    let compiler = cc::Build::new().get_compiler();
    let status = Command::new(compiler.path())
        .args([
            "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
        ])
        .arg(&so)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {:?}: {e}", compiler.path()));
    assert!(status.success(), "compiling {src} failed");
}
