//! `linger copy` (SPEC §15): both directions, trees, modes and times, paths relative to the
//! session's current directory, a busy session, fan-out, and failures that leave nothing
//! under a destination name, including a hostile client on the wire.

use crate::common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{eventually, Running, World};

fn world() -> World {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "Work"]);
    w
}

/// A tree with what a copy must carry: binary content larger than a chunk, an empty file,
/// a symbolic link, a nested directory, a name that is not UTF-8, odd modes and an old
/// modification time.
fn sample_tree(root: &Path) -> PathBuf {
    let top = root.join("tree");
    fs::create_dir_all(top.join("sub/deeper")).unwrap();
    fs::write(top.join("sub/deeper/blob"), common::random_bytes(3 << 20)).unwrap();
    fs::write(top.join("empty"), b"").unwrap();
    fs::write(top.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(top.join("script.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(
        top.join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        b"latin-1 name",
    )
    .unwrap();
    std::os::unix::fs::symlink("script.sh", top.join("link")).unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::new(1_234_567_890, 500);
    fs::File::options()
        .write(true)
        .open(top.join("script.sh"))
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(old))
        .unwrap();
    top
}

/// Every entry under `root`: its relative path, kind, mode, and content or link target.
fn listing(root: &Path) -> Vec<(Vec<u8>, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(Vec<u8>, String)>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let what = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                format!("dir {:o}", m.mode() & 0o7777)
            } else {
                format!(
                    "file {:o} {}",
                    m.mode() & 0o7777,
                    common::sha256_line(&fs::read(&p).unwrap())
                )
            };
            out.push((rel, what));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with(".linger-copy-") {
            found.push(e.path());
        }
        if e.file_type().unwrap().is_dir() {
            found.extend(leftovers(&e.path()));
        }
    }
    found
}

#[test]
fn a_tree_goes_in_relative_to_the_shells_directory_and_comes_back_the_same() {
    let w = world();
    let src = sample_tree(&w.path("local"));
    let remote = w.path("remote");
    fs::create_dir_all(&remote).unwrap();
    // A `cd` in the session decides where relative paths go.
    w.ok(&[
        "invoke",
        "Work",
        "--",
        &format!("cd '{}'", remote.display()),
    ]);
    let out = w.run(&["copy", "-r", "-p", src.to_str().unwrap(), "Work:"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out), "", "quiet like cp");
    assert_eq!(listing(&remote.join("tree")), listing(&src));
    let mtime = fs::metadata(remote.join("tree/script.sh")).unwrap().mtime();
    assert_eq!(mtime, 1_234_567_890, "-p keeps times");

    let back = w.path("back");
    fs::create_dir_all(&back).unwrap();
    let out = w.run(&[
        "--json",
        "copy",
        "-r",
        "-p",
        "Work:tree",
        back.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let record: serde_json::Value =
        serde_json::from_str(common::stdout(&out).lines().next().unwrap()).unwrap();
    assert_eq!(record["files"], 4);
    assert_eq!(record["directories"], 3);
    assert_eq!(record["symlinks"], 1);
    assert_eq!(record["bytes"], (3 << 20) + 18 + 12);
    assert_eq!(listing(&back.join("tree")), listing(&src));
    assert_eq!(
        fs::metadata(back.join("tree/script.sh")).unwrap().mtime(),
        1_234_567_890
    );
    assert!(leftovers(&remote).is_empty() && leftovers(&back).is_empty());

    // Single files, renamed on the way, `~` as the session's home.
    let one = w.path("one.txt");
    fs::write(&one, b"one\n").unwrap();
    w.ok(&["copy", one.to_str().unwrap(), "Work:renamed.txt"]);
    assert_eq!(fs::read(remote.join("renamed.txt")).unwrap(), b"one\n");
    let out = w.run(&[
        "copy",
        "Work:renamed.txt",
        back.join("again.txt").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(fs::read(back.join("again.txt")).unwrap(), b"one\n");
}

#[test]
fn without_preserve_new_files_follow_the_sessions_umask() {
    let w = world();
    let remote = w.path("remote");
    fs::create_dir_all(&remote).unwrap();
    w.ok(&[
        "invoke",
        "Work",
        "--",
        &format!("cd '{}'; umask 077", remote.display()),
    ]);
    let f = w.path("f");
    fs::write(&f, b"x").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
    w.ok(&["copy", f.to_str().unwrap(), "Work:"]);
    assert_eq!(
        fs::metadata(remote.join("f")).unwrap().mode() & 0o7777,
        0o700
    );
}

#[test]
fn a_busy_session_takes_and_gives_files_and_its_command_goes_on() {
    let w = world();
    let remote = w.path("remote");
    fs::create_dir_all(&remote).unwrap();
    w.ok(&[
        "invoke",
        "Work",
        "--",
        &format!("cd '{}'", remote.display()),
    ]);
    let mut busy =
        Running::start(w.linger(&["invoke", "Work", "--", "echo started; sleep 60; echo done"]));
    assert_eq!(busy.line().as_deref(), Some("started\n"));
    let data = common::random_bytes(1 << 20);
    let f = w.path("payload");
    fs::write(&f, &data).unwrap();
    let out = w.run(&["copy", f.to_str().unwrap(), "Work:"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(fs::read(remote.join("payload")).unwrap(), data);
    let got = w.path("got");
    let out = w.run(&["copy", "Work:payload", got.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(fs::read(&got).unwrap(), data);
    // The command was never disturbed: it still waits for its input.
    let table = w.ok(&["--json", "get", "Work"]);
    assert!(table.contains("sleep 60"), "{table}");
    busy.signal(nix::sys::signal::Signal::SIGINT);
    busy.finish();
}

#[test]
fn one_upload_reaches_every_session_a_pattern_names() {
    let w = World::new();
    for name in ["web1", "web2"] {
        w.ok(&["new", "localhost", "--name", name]);
        let dir = w.path(name);
        fs::create_dir_all(&dir).unwrap();
        w.ok(&["invoke", name, "--", &format!("cd '{}'", dir.display())]);
    }
    let f = w.path("app.conf");
    fs::write(&f, b"port=80\n").unwrap();
    let out = w.run(&["--json", "copy", f.to_str().unwrap(), "web*:"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(
        common::stdout(&out)
            .lines()
            .filter(|l| l.contains("\"files\":1"))
            .count(),
        2
    );
    for name in ["web1", "web2"] {
        assert_eq!(
            fs::read(w.path(name).join("app.conf")).unwrap(),
            b"port=80\n"
        );
    }
}

#[test]
fn mistakes_get_one_line_and_touch_nothing() {
    let w = world();
    let remote = w.path("remote");
    fs::create_dir_all(remote.join("adir")).unwrap();
    fs::write(remote.join("afile"), b"keep").unwrap();
    w.ok(&[
        "invoke",
        "Work",
        "--",
        &format!("cd '{}'", remote.display()),
    ]);
    let local = w.path("local");
    fs::create_dir_all(local.join("d")).unwrap();
    fs::write(local.join("x"), b"x").unwrap();
    let l = |p: &str| local.join(p).to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec![l("d"), "Work:".into()],
            1,
            "is a directory (copy directories with -r)",
        ),
        (
            vec![l("nope"), "Work:".into()],
            1,
            "nope: No such file or directory",
        ),
        (
            vec!["Work:nope".into(), l("")],
            1,
            "remote/nope: No such file or directory",
        ),
        (
            vec![l("x"), l("x"), "Work:afile".into()],
            1,
            "is not a directory, and copying several sources needs one",
        ),
        (
            vec![l("x"), "Work:adir/no/such/x".into()],
            1,
            "No such file or directory",
        ),
        (
            vec![l("x"), l("d")],
            2,
            "neither the sources nor the destination name a session",
        ),
        (
            vec![l("x"), "Nobody:x".into()],
            3,
            "no session matches 'Nobody'",
        ),
        (
            vec!["Work:afile".into(), "Work:x".into()],
            2,
            "from one session to another",
        ),
    ];
    for (args, code, message) in cases {
        let mut full = vec!["copy"];
        full.extend(args.iter().map(String::as_str));
        let out = w.run(&full);
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!err.contains("os error"), "{err}");
    }
    assert_eq!(fs::read(remote.join("afile")).unwrap(), b"keep");
    assert!(leftovers(&remote).is_empty() && leftovers(&local).is_empty());
}

#[test]
fn a_download_that_cannot_be_written_leaves_nothing_under_its_name() {
    let w = world();
    let remote = w.path("remote");
    fs::create_dir_all(remote.join("tree/sub")).unwrap();
    fs::write(remote.join("tree/a"), b"small").unwrap();
    fs::write(remote.join("tree/sub/big"), common::random_bytes(2 << 20)).unwrap();
    w.ok(&[
        "invoke",
        "Work",
        "--",
        &format!("cd '{}'", remote.display()),
    ]);
    let local = w.path("local");
    fs::create_dir_all(&local).unwrap();
    // Files may grow to 1 MiB here (SIGXFSZ ignored, so a write past it fails with EFBIG).
    let mut cmd = std::process::Command::new("bash");
    cmd.args([
        "-c",
        "trap '' XFSZ; ulimit -f 1024; exec \"$@\"",
        "bash",
        common::linger_bin().to_str().unwrap(),
        "copy",
        "-r",
        "Work:tree",
        local.to_str().unwrap(),
    ]);
    let base = w.linger(&[]);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert!(
        !local.join("tree").exists(),
        "no partial tree under its name"
    );
    assert!(leftovers(&local).is_empty());
}

#[test]
fn a_restricted_session_copies_nothing() {
    let mut w = World::new();
    w.write_config("[[configuration]]\nname = \"locked\"\nrestricted = [\"echo\"]\n");
    w.start_daemon();
    w.ok(&[
        "new",
        "localhost",
        "--name",
        "l",
        "--configuration",
        "locked",
    ]);
    let f = w.path("f");
    fs::write(&f, b"x").unwrap();
    for args in [
        vec!["copy", f.to_str().unwrap(), "l:/tmp/"],
        vec!["copy", "l:/etc/hostname", "."],
    ] {
        let out = w.run(&args);
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{err}");
        assert!(
            err.contains("restricted: its configuration copies no files"),
            "{err}"
        );
    }
}

/// A client on the wire that breaks the rules: its copy fails (beyond the window, a stream
/// out of order) or is abandoned (its connection closes mid-file), nothing partial is left,
/// and the session and the daemon go on.
#[tokio::test]
async fn a_hostile_copier_loses_its_copy_and_nothing_else() {
    use bytes::Bytes;
    use linger_proto::client::{ClientMsg, PutFiles, Request};
    use linger_proto::copy::{CopyItem, CopyKind, COPY_WINDOW};
    use linger_proto::server::ServerMsg;
    use linger_proto::types::ErrorKind;

    let mut w = World::new();
    w.start_daemon();
    let dest = w.path("dest");
    fs::create_dir_all(&dest).unwrap();
    let item = |path: &str, kind| CopyItem {
        path: Bytes::copy_from_slice(path.as_bytes()),
        kind,
        mode: 0o644,
        mtime_ns: 0,
        atime_ns: 0,
    };
    let put = |rid| ClientMsg::Request {
        rid,
        request: Request::PutFiles(PutFiles {
            instance_id: uuid::Uuid::nil(),
            destination: Bytes::copy_from_slice(dest.as_os_str().as_bytes()),
            several: true,
            preserve: false,
        }),
    };
    let (mut rd, mut wr, instance_id) = common::raw_session(&w, "hostile", "h").await;
    let with_id = |msg: ClientMsg| match msg {
        ClientMsg::Request {
            rid,
            request: Request::PutFiles(mut p),
        } => {
            p.instance_id = instance_id;
            ClientMsg::Request {
                rid,
                request: Request::PutFiles(p),
            }
        }
        other => other,
    };
    async fn answer(
        rd: &mut linger_proto::frame::FrameReader<tokio::net::unix::OwnedReadHalf>,
        rid: u64,
    ) -> ServerMsg {
        loop {
            match rd.read::<ServerMsg>().await {
                Ok(Some(ServerMsg::CopyProgress { rid: r, .. })) if r == rid => {}
                Ok(Some(m @ (ServerMsg::Reply { .. } | ServerMsg::Error { .. }))) => return m,
                Ok(Some(_)) => {}
                other => panic!("the connection ended: {other:?}"),
            }
        }
    }

    /// Waits until the host has opened copy `rid`'s destination (progress 0).
    async fn opened(
        rd: &mut linger_proto::frame::FrameReader<tokio::net::unix::OwnedReadHalf>,
        rid: u64,
    ) {
        loop {
            match rd.read::<ServerMsg>().await {
                Ok(Some(ServerMsg::CopyProgress { rid: r, done: 0 })) if r == rid => return,
                Ok(Some(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    // 1. Far beyond the window, without waiting for more progress than the first. The host
    // is stopped, so that it reports none: what the daemon would otherwise pile up for it.
    wr.write(&with_id(put(2))).await.unwrap();
    opened(&mut rd, 2).await;
    let host = w.host_pids()[0];
    common::kill(host, nix::sys::signal::Signal::SIGSTOP);
    wr.write(&ClientMsg::CopyItem {
        rid: 2,
        item: item("flood", CopyKind::File { size: 1 << 30 }),
    })
    .await
    .unwrap();
    let chunk = Bytes::from(vec![0u8; 256 * 1024]);
    let mut offset = 0;
    while offset < 2 * COPY_WINDOW {
        let data = ClientMsg::CopyData {
            rid: 2,
            offset,
            data: chunk.clone(),
        };
        if wr.write(&data).await.is_err() {
            break;
        }
        offset += chunk.len() as u64;
    }
    match answer(&mut rd, 2).await {
        ServerMsg::Error { error, .. } => {
            assert_eq!(error.kind, ErrorKind::File);
            assert!(error.message.contains("window"), "{error:?}");
        }
        other => panic!("{other:?}"),
    }
    common::kill(host, nix::sys::signal::Signal::SIGCONT);
    eventually("the failed copy to be removed", || {
        leftovers(&dest).is_empty()
    });

    // 2. An item outside the directory it claims.
    wr.write(&with_id(put(3))).await.unwrap();
    opened(&mut rd, 3).await;
    wr.write(&ClientMsg::CopyItem {
        rid: 3,
        item: item("../escape", CopyKind::File { size: 0 }),
    })
    .await
    .unwrap();
    wr.write(&ClientMsg::CopyEnd { rid: 3 }).await.unwrap();
    match answer(&mut rd, 3).await {
        ServerMsg::Error { error, .. } => assert!(error.message.contains("item path"), "{error:?}"),
        other => panic!("{other:?}"),
    }
    assert!(!w.path("escape").exists());

    // 3. Data for a copy that does not exist goes nowhere.
    wr.write(&ClientMsg::CopyData {
        rid: 99,
        offset: 0,
        data: chunk.clone(),
    })
    .await
    .unwrap();

    // 4. A tree half sent, then the connection closes.
    wr.write(&with_id(put(4))).await.unwrap();
    opened(&mut rd, 4).await;
    wr.write(&ClientMsg::CopyItem {
        rid: 4,
        item: item("half", CopyKind::Directory),
    })
    .await
    .unwrap();
    wr.write(&ClientMsg::CopyItem {
        rid: 4,
        item: item("half/f", CopyKind::File { size: 100 }),
    })
    .await
    .unwrap();
    wr.write(&ClientMsg::CopyData {
        rid: 4,
        offset: 0,
        data: Bytes::from_static(b"part"),
    })
    .await
    .unwrap();
    eventually("the half tree to be begun", || !leftovers(&dest).is_empty());
    drop(wr);
    drop(rd);
    eventually("the abandoned copy to be removed", || {
        leftovers(&dest).is_empty()
    });
    assert!(!dest.join("half").exists() && !dest.join("flood").exists());

    // The session and the daemon are fine.
    let listed = w.ok(&["get", "--computer", "localhost", "--name", "h"]);
    assert!(
        listed.contains(" h ") && !listed.contains("Broken"),
        "{listed}"
    );
}
