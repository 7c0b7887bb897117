//! Benchmark of `linger copy` against scp, side by side in one run: a private sshd on
//! loopback (the tests' fixture, with Debian's sftp-server, so scp speaks its default SFTP
//! protocol), one `lingerd` with TLS on 127.0.0.1, the release binaries and the system's
//! `scp`. The floor is `cp` on the same disk. It only reports; nothing here fails on
//! wall-clock numbers.
//!
//! Run with `bash bench/run.sh`, or `cargo build --release --workspace` and then
//! `cargo bench -p linger-cli --bench copy_bench`. `LINGER_COPY_MIB` sets the big file's
//! size (default 1024 MiB).
//!
//! Measured, each as a whole process (connection and login included), median of a few:
//! - one big file up and down: `linger copy` over TLS, `scp`, and `linger copy` through the
//!   local socket (a session on this machine), against `cp`;
//! - a tree of many small files up (`-r`): `linger copy -r` against `scp -r` and `cp -r`.
//!
//! Everything runs in a fresh temporary directory with its own XDG directories, HOME and
//! LINGER_HOME. At the end the sessions made here are removed, and the daemon, any session
//! host still alive and sshd are killed by pid (also when a measurement fails).

mod common;
#[path = "../tests/it/common/sshd.rs"]
#[allow(dead_code)]
mod sshd;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    block_on, exit_code, gbps, learn_host_keys, make_private_dirs, ms, or_exit, print_table,
    progress, release_binaries, require_sshd, time_first_session, time_process, BenchEnv, BoxError,
    Samples, Ssh,
};
use linger::{Client, Entry, NewOptions};
use sshd::{ssh_command, user, Sshd};

const WARMUP: usize = 1;
const RUNS: usize = 3;
/// The small-file tree: this many files of `SMALL_BYTES`, in `TREE_DIRS` directories.
const TREE_FILES: usize = 2000;
const TREE_DIRS: usize = 20;
const SMALL_BYTES: usize = 4096;
/// linger copies at least as fast as scp.
const TARGET_VS_SCP: f64 = 1.0;
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

fn main() {
    common::stamp_progress();
    let bins = or_exit(release_binaries(), 2, "copy_bench");
    require_sshd("copy_bench", sshd::SSHD);
    if !Path::new(SFTP_SERVER).is_file() {
        eprintln!(
            "copy_bench: {SFTP_SERVER} is missing: install openssh-sftp-server (bench/run.sh does)"
        );
        std::process::exit(2);
    }
    let env = or_exit(
        prepare(bins),
        1,
        "copy_bench: cannot prepare the temporary directory",
    );
    progress!("starting sshd on 127.0.0.1 (with sftp-server)");
    let server = Sshd::start_with(
        env.dir.path(),
        "127.0.0.1",
        &format!("Subsystem sftp {SFTP_SERVER}\n"),
    );
    let ssh = Ssh::new(ssh_command(&server), server.port, user());
    let mut daemon = None;
    let code = match env.start_tls_daemon(&server.client_key, 1, &mut daemon) {
        Err(e) => {
            eprintln!("copy_bench: cannot start lingerd: {e}");
            env.print_tls_log_tail();
            1
        }
        Ok(port) => {
            let bench = Bench {
                env: &env,
                ssh,
                computer: format!("127.0.0.1:{port}"),
                work: env.dir.path().join("work"),
            };
            let result = block_on(
                env.measure_with_client(async |client, made| bench.measure(client, made).await),
            );
            exit_code("copy_bench", result, Report::print, || {
                env.print_tls_log_tail()
            })
        }
    };
    drop(daemon);
    drop(server);
    drop(env);
    std::process::exit(code);
}

fn prepare(bins: Binaries) -> std::io::Result<BenchEnv> {
    let env = BenchEnv::new("lgc", bins)?;
    make_private_dirs(&[
        &env.runtime,
        &env.state,
        &env.config.join("linger"),
        &env.home,
    ])?;
    env.export_vars();
    env.isolate_ssh();
    Ok(env)
}

use common::Binaries;

struct Bench<'a> {
    env: &'a BenchEnv,
    ssh: Ssh,
    /// lingerd's TLS address.
    computer: String,
    /// Where the sources and every copy go (one disk for all).
    work: PathBuf,
}

/// One measurement: the same copy by each tool.
struct Case {
    what: String,
    bytes: u64,
    linger_tls: Samples,
    linger_local: Option<Samples>,
    scp: Samples,
    cp: Samples,
}

struct Report {
    cases: Vec<Case>,
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// `sh -c 'rm -rf DEST && exec CMD…'`: a tree copy starts from nothing every run (the
/// removal is timed with each tool alike).
fn fresh(dest: &Path, cmd: Command) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("rm -rf \"$0\" && exec \"$@\"")
        .arg(dest)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    sh
}

impl Bench<'_> {
    fn scp(&self, args: &[String]) -> Command {
        let mut cmd = Command::new("scp");
        cmd.args(&self.ssh.flags)
            .arg("-q")
            .arg("-P")
            .arg(self.ssh.port.to_string())
            .args(args);
        cmd
    }

    fn remote(&self, p: &Path) -> String {
        format!("{}@{}:{}", self.ssh.user, self.ssh.host, p.display())
    }

    async fn measure(&self, client: &Client, made: &mut Vec<Entry>) -> Result<Report, BoxError> {
        let env = self.env;
        env.print_paths();
        learn_host_keys(vec![self.ssh.clone()]).await?;
        let (tls, _) = time_first_session(client, &self.computer, made).await?;
        let local = client
            .new_session("localhost", &NewOptions::default())
            .await?;
        made.push(local.entry.clone());
        let local = local.entry;
        std::fs::create_dir_all(&self.work)?;
        let mib: u64 = std::env::var("LINGER_COPY_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024);
        let big = self.work.join("big.bin");
        progress!("writing a {mib} MiB source file and a tree of {TREE_FILES} small files");
        write_big(&big, mib)?;
        let tree = self.work.join("tree");
        write_tree(&tree)?;
        let bytes = mib << 20;
        let w = |name: &str| self.work.join(name);
        let mut cases = Vec::new();

        progress!("{mib} MiB up: cp, scp, linger copy (TLS), linger copy (local socket)");
        let cp = time_process(WARMUP, RUNS, || {
            let mut c = Command::new("cp");
            c.arg(&big).arg(w("cp-up.bin"));
            c
        })
        .await?;
        let scp = time_process(WARMUP, RUNS, || {
            self.scp(&[path_str(&big), self.remote(&w("scp-up.bin"))])
        })
        .await?;
        let linger_tls = time_process(WARMUP, RUNS, || {
            env.linger(&[
                "copy",
                &path_str(&big),
                &format!("{}:{}", tls.name, w("tls-up.bin").display()),
            ])
        })
        .await?;
        let linger_local = time_process(WARMUP, RUNS, || {
            env.linger(&[
                "copy",
                &path_str(&big),
                &format!("{}:{}", local.name, w("local-up.bin").display()),
            ])
        })
        .await?;
        same_files(&big, &[w("scp-up.bin"), w("tls-up.bin"), w("local-up.bin")])?;
        cases.push(Case {
            what: format!("{mib} MiB file up"),
            bytes,
            linger_tls,
            linger_local: Some(linger_local),
            scp,
            cp,
        });
        for f in ["cp-up.bin", "scp-up.bin", "local-up.bin"] {
            std::fs::remove_file(w(f))?;
        }

        progress!("{mib} MiB down: scp, linger copy (TLS), linger copy (local socket)");
        let src = w("tls-up.bin");
        let cp = time_process(WARMUP, RUNS, || {
            let mut c = Command::new("cp");
            c.arg(&src).arg(w("cp-down.bin"));
            c
        })
        .await?;
        let scp = time_process(WARMUP, RUNS, || {
            self.scp(&[self.remote(&src), path_str(&w("scp-down.bin"))])
        })
        .await?;
        let linger_tls = time_process(WARMUP, RUNS, || {
            env.linger(&[
                "copy",
                &format!("{}:{}", tls.name, src.display()),
                &path_str(&w("tls-down.bin")),
            ])
        })
        .await?;
        let linger_local = time_process(WARMUP, RUNS, || {
            env.linger(&[
                "copy",
                &format!("{}:{}", local.name, src.display()),
                &path_str(&w("local-down.bin")),
            ])
        })
        .await?;
        same_files(
            &big,
            &[w("scp-down.bin"), w("tls-down.bin"), w("local-down.bin")],
        )?;
        cases.push(Case {
            what: format!("{mib} MiB file down"),
            bytes,
            linger_tls,
            linger_local: Some(linger_local),
            scp,
            cp,
        });
        for f in [
            "cp-down.bin",
            "scp-down.bin",
            "tls-down.bin",
            "local-down.bin",
            "tls-up.bin",
        ] {
            std::fs::remove_file(w(f))?;
        }

        progress!("tree of {TREE_FILES} files up (-r): cp -r, scp -r, linger copy -r (TLS)");
        let cp = time_process(WARMUP, RUNS, || {
            let mut c = Command::new("cp");
            c.arg("-r").arg(&tree).arg(w("cp-tree"));
            fresh(&w("cp-tree"), c)
        })
        .await?;
        let scp = time_process(WARMUP, RUNS, || {
            fresh(
                &w("scp-tree"),
                self.scp(&["-r".into(), path_str(&tree), self.remote(&w("scp-tree"))]),
            )
        })
        .await?;
        let linger_tls = time_process(WARMUP, RUNS, || {
            let cmd = env.linger(&[
                "copy",
                "-r",
                &path_str(&tree),
                &format!("{}:{}", tls.name, w("tls-tree").display()),
            ]);
            fresh(&w("tls-tree"), cmd)
        })
        .await?;
        cases.push(Case {
            what: format!("{TREE_FILES} files of {} KiB up (-r)", SMALL_BYTES / 1024),
            bytes: (TREE_FILES * SMALL_BYTES) as u64,
            linger_tls,
            linger_local: None,
            scp,
            cp,
        });
        Ok(Report { cases })
    }
}

/// A file of `mib` MiB: one random MiB repeated (nothing on the way compresses it).
fn write_big(path: &Path, mib: u64) -> std::io::Result<()> {
    use std::io::Write;
    let block = common::random_block(1 << 20);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for _ in 0..mib {
        f.write_all(&block)?;
    }
    f.flush()
}

fn write_tree(root: &Path) -> std::io::Result<()> {
    let block = common::random_block(SMALL_BYTES);
    for i in 0..TREE_FILES {
        let dir = root.join(format!("d{:02}", i % TREE_DIRS));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("f{i:05}")), &block)?;
    }
    Ok(())
}

/// Fails unless each of `copies` holds exactly `original`'s bytes.
fn same_files(original: &Path, copies: &[PathBuf]) -> Result<(), BoxError> {
    for c in copies {
        let status = Command::new("cmp")
            .arg("-s")
            .arg(original)
            .arg(c)
            .status()?;
        if !status.success() {
            return Err(format!("{} differs from {}", c.display(), original.display()).into());
        }
    }
    Ok(())
}

impl Report {
    fn print(&self) {
        println!();
        println!("linger copy vs scp (lingerd and sshd on loopback; whole processes, medians of {RUNS} after {WARMUP} warm-up)");
        println!();
        let rate = |bytes: u64, s: &Samples| gbps(bytes, s.median());
        let mut rows: Vec<[String; 6]> = Vec::new();
        for c in &self.cases {
            let tls = rate(c.bytes, &c.linger_tls);
            let scp = rate(c.bytes, &c.scp);
            let cp = rate(c.bytes, &c.cp);
            rows.push([
                format!("{}: linger over TLS (vs scp)", c.what),
                format!("{tls:.2} GB/s ({:.0} ms)", ms(c.linger_tls.median())),
                format!("{scp:.2} GB/s ({:.0} ms)", ms(c.scp.median())),
                format!("{:.2}x", tls / scp),
                format!(">= {TARGET_VS_SCP}x"),
                common::met(tls / scp >= TARGET_VS_SCP).into(),
            ]);
            rows.push([
                format!("{}: linger over TLS (vs the floor, cp)", c.what),
                format!("{tls:.2} GB/s"),
                format!("{cp:.2} GB/s ({:.0} ms)", ms(c.cp.median())),
                format!("{:.2}x", tls / cp),
                String::new(),
                String::new(),
            ]);
            if let Some(local) = &c.linger_local {
                let l = rate(c.bytes, local);
                rows.push([
                    format!("{}: linger, local socket (vs the floor, cp)", c.what),
                    format!("{l:.2} GB/s ({:.0} ms)", ms(local.median())),
                    format!("{cp:.2} GB/s"),
                    format!("{:.2}x", l / cp),
                    String::new(),
                    String::new(),
                ]);
            }
        }
        print_table(
            &[
                "measurement",
                "linger",
                "other",
                "ratio",
                "design target",
                "target met",
            ],
            &rows,
        );
        println!();
        println!(
            "ratio = linger's GB/s / the other's; below 1x linger is slower. GB/s = 10^9 bytes per
second of file content, each run a whole process (scp's includes its ssh login, linger's its
TLS connection and login). Every copy lands on the same disk as its source; the tree rows
start each run by removing the previous copy (timed alike for every tool). scp is OpenSSH's,
speaking SFTP to sftp-server, with the fixture's key; linger logs in with the same key."
        );
    }
}
