//! The `lingerd` binary on its own: single instance, configuration errors.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn lingerd(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lingerd"));
    c.env("XDG_RUNTIME_DIR", dir.join("run"))
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null());
    c
}

#[test]
fn a_second_daemon_refuses_cleanly() {
    let dir = tempfile::tempdir_in("/tmp").expect("tmp");
    let mut first = lingerd(dir.path()).spawn().expect("spawn");
    let sock = dir.path().join("run/linger/lingerd.sock");
    let start = Instant::now();
    while !sock.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = lingerd(dir.path()).output().expect("second");
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(
        second.status.code(),
        Some(linger_proto::local::EXIT_ALREADY_SERVING),
        "a starter that lost the race tells it by this status"
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.starts_with("lingerd: error: another lingerd (pid")
            && err.contains("is already serving"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    assert!(dir.path().join("state/linger/server/lingerd.log").exists());
}

#[test]
fn a_bad_config_names_file_line_and_field() {
    let dir = tempfile::tempdir_in("/tmp").expect("tmp");
    std::fs::create_dir_all(dir.path().join("config/linger")).expect("mkdir");
    std::fs::write(
        dir.path().join("config/linger/lingerd.toml"),
        "[server]\nmin_idle_timeout = \"1s\"\n[[configuration]]\nname = \"x\"\nshel = [\"sh\"]\n",
    )
    .expect("write");
    let o = lingerd(dir.path()).output().expect("run");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("lingerd.toml") && err.contains("line 5") && err.contains("shel"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}
