//! Benchmark of linger's TLS transport (`lingerd --listen`) against OpenSSH, side by side in
//! one run: one private sshd and one `lingerd` on loopback, the release binaries, the
//! system's `ssh` and `parallel-ssh`. It only reports; nothing here fails on wall-clock
//! numbers.
//!
//! Run with `bash bench/run.sh`, or `cargo build --release --workspace` and then
//! `cargo bench -p linger-cli --bench remote_bench`.
//!
//! Measured, linger against the best OpenSSH alternative for the same work:
//! - a `true` round trip: linger's library API over one open TLS connection, and a whole
//!   `linger invoke` process (a new TLS connection and login each time), against `ssh`
//!   through a ControlMaster and a cold `ssh … true`;
//! - session creation over an open TLS connection, against a cold ssh login;
//! - 1 GiB of stdout (`head -c`), read through the API and from `ssh`;
//! - a fan-out of `true` to 32 and to 100 hosts, 127.0.0.1 to 127.0.0.N (every address of
//!   127.0.0.0/8 is loopback): `parallel-ssh -p N` and N concurrent `ssh` processes (cold
//!   logins) and N ssh ControlMasters (open connections), against `linger invoke
//!   --computer …` (one process making N TLS connections, logins and temporary sessions)
//!   and the API invoking `true` in N sessions at once over N open connections.
//!
//! For context: the user's login shell running `true` as sshd starts it (its startup files
//! run before every remote command; linger's sessions skip them).
//!
//! One sshd serves every host address: it listens on 0.0.0.0, since a socket bound to
//! 127.0.0.1 does not answer on 127.0.0.2 and sshd binds at most 16 listen addresses. It
//! admits logins from loopback addresses only (`AllowUsers *@127.0.0.0/8`), and its
//! `MaxStartups`/`MaxSessions` are raised above their defaults (10 unauthenticated
//! connections; 10 sessions per connection) so that 100 concurrent logins go through. One
//! lingerd serves them too, with one `--listen 127.0.0.N:PORT` per address; it refuses
//! connections past `lingerd::MAX_HANDSHAKING` unfinished handshakes, so the CLI's
//! `--throttle` stays within that (a real fan-out reaches one daemon per host). Both log
//! in with the fixture's client key (lingerd's `[server] authorized_keys` holds it); every
//! host key is learnt (accept-new) before anything is timed.
//!
//! Everything runs in a fresh temporary directory with its own XDG directories, HOME and
//! LINGER_HOME. At the end every session made here is removed, the ControlMasters are
//! stopped, and the daemon, any session host still alive and sshd are killed by pid (also
//! when a measurement fails or panics).

mod common;
#[path = "../tests/it/common/sshd.rs"]
#[allow(dead_code)]
mod sshd;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{
    block_on, exit_code, gbps, learn_host_keys, make_private_dirs, ms, new_sessions_at_once,
    off_runtime, or_exit, print_stat, print_table, print_throughput, progress, release_binaries,
    require_sshd, throughput_row, time_api, time_api_all, time_concurrently, time_drain,
    time_first_session, time_login_shell, time_process, time_row, time_row_target,
    time_session_creation, BenchEnv, Binaries, BoxError, Master, Samples, Ssh, TABLE_HEADER,
};
use linger::{Client, Entry};
use sshd::{ssh_command, user, Sshd};

const SHELL_WARMUP: usize = 3;
const SHELL_RUNS: usize = 50;
const SSH_COLD_WARMUP: usize = 3;
const SSH_COLD_RUNS: usize = 50;
const SSH_MUX_WARMUP: usize = 10;
const SSH_MUX_RUNS: usize = 200;
const API_WARMUP: usize = 100;
const API_RUNS: usize = 2000;
const CLI_WARMUP: usize = 5;
const CLI_RUNS: usize = 100;
const CREATE_WARMUP: usize = 3;
const CREATE_RUNS: usize = 50;
const THROUGHPUT_BYTES: u64 = 1 << 30;
/// Fan-out sizes; the largest is how many host addresses are served.
const FAN_SIZES: [usize; 2] = [32, 100];
const FAN_HOSTS: usize = 100;
const FAN_PSSH_WARMUP: usize = 1;
const FAN_PSSH_RUNS: usize = 8;
const FAN_SSH_WARMUP: usize = 1;
const FAN_SSH_RUNS: usize = 8;
const FAN_MUX_WARMUP: usize = 1;
const FAN_MUX_RUNS: usize = 10;
const FAN_CLI_WARMUP: usize = 1;
const FAN_CLI_RUNS: usize = 10;
const FAN_API_WARMUP: usize = 10;
const FAN_API_RUNS: usize = 100;

/// Design target: linger's API over an open connection vs `ssh` through a ControlMaster.
const TARGET_SPEEDUP_VS_MUX: f64 = 12.0;
/// Design target: linger's throughput over TLS vs ssh's own.
const TARGET_THROUGHPUT_RATIO: f64 = 3.0;
/// Design target: a fan-out through linger vs `parallel-ssh`.
const TARGET_FAN_OUT_VS_PSSH: f64 = 10.0;

/// sshd settings beyond the fixture's: every address, loopback clients only, and room for
/// 100 concurrent logins (and sessions per connection).
const SSHD_EXTRA: &str = "AllowUsers *@127.0.0.0/8\nMaxStartups 200:30:300\nMaxSessions 200\n";

fn main() {
    // `cargo bench` passes `--bench`; there are no options to read.
    common::stamp_progress();
    let bins = or_exit(release_binaries(), 2, "remote_bench");
    require_sshd("remote_bench", sshd::SSHD);
    let Some(pssh) = find_program(&["parallel-ssh", "pssh"]) else {
        eprintln!("remote_bench: parallel-ssh is missing: install pssh (bench/run.sh does)");
        std::process::exit(2);
    };
    let env = or_exit(
        prepare(bins),
        1,
        "remote_bench: cannot prepare the temporary directory",
    );
    progress!("starting sshd on 0.0.0.0 (loopback clients only)");
    let server = Sshd::start_with(env.dir.path(), "0.0.0.0", SSHD_EXTRA);
    let ssh = Ssh::new(ssh_command(&server), server.port, user());
    let mut daemon = None;
    let code = match env.start_tls_daemon(&server.client_key, FAN_HOSTS, &mut daemon) {
        Err(e) => {
            eprintln!("remote_bench: cannot start lingerd: {e}");
            env.print_tls_log_tail();
            1
        }
        Ok(port) => {
            let bench = Bench {
                env: &env,
                ssh,
                pssh,
                port,
            };
            let result = block_on(
                env.measure_with_client(async |client, made| bench.measure(client, made).await),
            );
            exit_code("remote_bench", result, Report::print, || {
                env.print_tls_log_tail()
            })
        }
    };
    // Kills the daemon and any session host left, then sshd, then deletes the directory
    // (this also happens if a measurement panics).
    drop(daemon);
    drop(server);
    drop(env);
    std::process::exit(code);
}

/// The first of `names` found in PATH.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The temporary world the benchmark runs in.
fn prepare(bins: Binaries) -> std::io::Result<BenchEnv> {
    let env = BenchEnv::new("lgr", bins)?;
    make_private_dirs(&[
        &env.runtime,
        &env.state,
        &env.config.join("linger"),
        &env.home,
        &env.dir.path().join("cm"),
    ])?;
    // Every process started here (ssh, parallel-ssh, linger, lingerd) inherits these:
    // nothing of the user's home, configuration or agent is used.
    env.export_vars();
    env.isolate_ssh();
    Ok(env)
}

struct Bench<'a> {
    env: &'a BenchEnv,
    /// `ssh` to 127.0.0.1 on the fixture's port.
    ssh: Ssh,
    pssh: PathBuf,
    /// lingerd's TLS port, on every host address.
    port: u16,
}

impl Bench<'_> {
    /// The N-th host address (from 1).
    fn host(n: usize) -> String {
        format!("127.0.0.{n}")
    }

    /// The linger computer of the N-th host address.
    fn computer(&self, n: usize) -> String {
        format!("{}:{}", Bench::host(n), self.port)
    }

    /// `ssh` to the N-th host address.
    fn ssh_to(&self, n: usize) -> Ssh {
        self.ssh.at(&Bench::host(n))
    }

    /// `parallel-ssh -p N … true` on the first N host addresses, with the same ssh flags
    /// as every other ssh here (one `-X` each).
    fn pssh_command(&self, n: usize) -> Command {
        let hosts: Vec<String> = (1..=n)
            .map(|i| format!("{}:{}", Bench::host(i), self.ssh.port))
            .collect();
        let mut cmd = Command::new(&self.pssh);
        cmd.arg("-p").arg(n.to_string()).args([
            "-t",
            "120",
            "-l",
            &self.ssh.user,
            "-H",
            &hosts.join(" "),
        ]);
        for flag in &self.ssh.flags {
            cmd.arg("-X").arg(flag);
        }
        cmd.arg("true");
        cmd
    }

    /// `linger invoke --computer C1,…,CN --throttle T -- true`: N temporary sessions, at
    /// most T of them connecting at once. T is N, but no more than the connections one
    /// lingerd lets handshake at once (it refuses the others at accept): here one daemon
    /// plays every host, where each host would have its own.
    fn linger_fan_out(&self, n: usize) -> Command {
        let computers: Vec<String> = (1..=n).map(|i| self.computer(i)).collect();
        self.env.linger(&[
            "invoke",
            "--computer",
            &computers.join(","),
            "--throttle",
            &cli_throttle(n).to_string(),
            "--",
            "true",
        ])
    }

    async fn measure(&self, client: &Client, made: &mut Vec<Entry>) -> Result<Report, BoxError> {
        let env = self.env;
        let ssh = &self.ssh;
        env.print_paths();
        progress!(
            "ssh:       {} (sshd on port {})",
            ssh.command_line,
            ssh.port
        );
        progress!("pssh:      {}", self.pssh.display());
        progress!(
            "lingerd:   TLS on 127.0.0.1..127.0.0.{FAN_HOSTS} port {}",
            self.port
        );

        // Every host key, learnt one at a time before anything is timed (accept-new).
        progress!("learning the ssh host key of the {FAN_HOSTS} host addresses");
        learn_host_keys((1..=FAN_HOSTS).map(|n| self.ssh_to(n)).collect()).await?;

        let login_shell_true = time_login_shell(&ssh.user, SHELL_WARMUP, SHELL_RUNS).await?;
        let ssh_cold = ssh.time_cold(SSH_COLD_WARMUP, SSH_COLD_RUNS).await?;
        let ssh_mux = ssh
            .time_mux(
                env.dir.path().join("cm/main"),
                &env.dir.path().join("master.log"),
                SSH_MUX_WARMUP,
                SSH_MUX_RUNS,
            )
            .await?;

        let computer = self.computer(1);
        progress!("first session on {computer} (TLS connection, key pinned, login, new session)");
        let (entry, first_new) = time_first_session(client, &computer, made).await?;

        progress!("API over TLS: invoke `true` x{API_RUNS} (after {API_WARMUP} warm-up)");
        let api = time_api(client, &entry, API_WARMUP, API_RUNS).await?;

        progress!(
            "CLI over TLS: `linger invoke {} -- true` x{CLI_RUNS} (after {CLI_WARMUP} warm-up)",
            entry.name
        );
        let cli = env
            .time_cli_invoke(&entry.name, CLI_WARMUP, CLI_RUNS)
            .await?;

        progress!("session creation over the open TLS connection x{CREATE_RUNS}");
        let create =
            time_session_creation(client, &computer, CREATE_WARMUP, CREATE_RUNS, made).await?;

        let script = format!("head -c {THROUGHPUT_BYTES} /dev/zero");
        progress!("throughput: `{script}` through the API over TLS");
        let (bytes, api_bytes_time) = time_drain(client, &entry, &script).await?;
        if bytes != THROUGHPUT_BYTES {
            return Err(format!("linger delivered {bytes} bytes of {THROUGHPUT_BYTES}").into());
        }

        let (ssh_bytes, ssh_bytes_time) = ssh.time_output(&script).await?;
        if ssh_bytes != THROUGHPUT_BYTES {
            return Err(format!("ssh delivered {ssh_bytes} bytes of {THROUGHPUT_BYTES}").into());
        }

        let fan = self.fan_out(client, made).await?;

        Ok(Report {
            login_shell_true,
            ssh_cold,
            ssh_mux,
            first_new,
            api,
            cli,
            create,
            api_bytes_time,
            ssh_bytes_time,
            fan,
        })
    }

    async fn fan_out(
        &self,
        client: &Client,
        made: &mut Vec<Entry>,
    ) -> Result<Vec<FanOut>, BoxError> {
        let env = self.env;
        let mut fans: Vec<FanOut> = Vec::new();

        for n in FAN_SIZES {
            progress!("fan-out {n}: `parallel-ssh -p {n} … true` x{FAN_PSSH_RUNS}");
            let pssh =
                time_process(FAN_PSSH_WARMUP, FAN_PSSH_RUNS, || self.pssh_command(n)).await?;
            progress!("fan-out {n}: {n} concurrent `ssh … true` processes x{FAN_SSH_RUNS}");
            let hosts: Vec<Ssh> = (1..=n).map(|i| self.ssh_to(i)).collect();
            let ssh_cold = time_concurrently(FAN_SSH_WARMUP, FAN_SSH_RUNS, move || {
                hosts.iter().map(|h| h.command(&[], Some("true"))).collect()
            })
            .await?;
            fans.push(FanOut {
                n,
                pssh,
                ssh_cold,
                ssh_mux: Samples::one(Duration::ZERO),
                api_new: Samples::one(Duration::ZERO),
                api: Samples::one(Duration::ZERO),
                cli: Samples::one(Duration::ZERO),
            });
        }

        progress!("fan-out: starting {FAN_HOSTS} ssh ControlMasters, one per host address");
        {
            let mut masters = Vec::with_capacity(FAN_HOSTS);
            for n in 1..=FAN_HOSTS {
                let log = env.dir.path().join("cm/master.log");
                masters.push(Master::start(
                    &self.ssh_to(n),
                    env.dir.path().join(format!("cm/{n}")),
                    &log,
                )?);
            }
            let masters = std::sync::Arc::new(masters);
            for fan in fans.iter_mut() {
                let n = fan.n;
                progress!(
                    "fan-out {n}: `ssh -S SOCK … true` through {n} ControlMasters at once x{FAN_MUX_RUNS}"
                );
                let m = masters.clone();
                fan.ssh_mux = time_concurrently(FAN_MUX_WARMUP, FAN_MUX_RUNS, move || {
                    m[..n].iter().map(|m| m.client("true")).collect()
                })
                .await?;
            }
            progress!("fan-out: stopping the {FAN_HOSTS} ControlMasters");
            let masters = std::sync::Arc::into_inner(masters).expect("no other owner");
            off_runtime(move || {
                drop(masters);
                Ok(())
            })
            .await?;
        }

        progress!("fan-out: learning lingerd's key on the {FAN_HOSTS} host addresses");
        for n in 1..=FAN_HOSTS {
            // Opens the connection the API fan-out uses (and pins the key, accept-new).
            client.connect(&self.computer(n)).await?;
        }

        for fan in fans.iter_mut() {
            let n = fan.n;
            progress!(
                "fan-out {n}: `linger invoke --computer <{n} computers> --throttle {} -- true` x{FAN_CLI_RUNS}",
                cli_throttle(n)
            );
            fan.cli = time_process(FAN_CLI_WARMUP, FAN_CLI_RUNS, || self.linger_fan_out(n)).await?;
        }

        progress!("fan-out: {FAN_HOSTS} sessions at once through the API, one per open connection");
        let computers: Vec<String> = (1..=FAN_HOSTS).map(|n| self.computer(n)).collect();
        let (entries, api_new) =
            new_sessions_at_once(client, &computers, |i| format!("fan{:03}", i + 1), made).await?;

        for fan in fans.iter_mut() {
            let n = fan.n;
            progress!(
                "fan-out {n}: invoke `true` in {n} sessions at once through the API x{FAN_API_RUNS}"
            );
            fan.api = time_api_all(client, &entries[..n], FAN_API_WARMUP, FAN_API_RUNS).await?;
            if n == FAN_HOSTS {
                fan.api_new = Samples::one(api_new.median());
            }
        }
        Ok(fans)
    }
}

/// How many of an N-host fan-out the CLI runs at once (see `Bench::linger_fan_out`).
fn cli_throttle(n: usize) -> usize {
    n.min(lingerd::MAX_HANDSHAKING)
}

struct FanOut {
    n: usize,
    /// `parallel-ssh -p N … true`.
    pssh: Samples,
    /// N concurrent `ssh … true` processes.
    ssh_cold: Samples,
    /// N concurrent `ssh -S SOCK … true`, through N ControlMasters.
    ssh_mux: Samples,
    /// N `new_session` at once over open connections (measured once, for the largest N).
    api_new: Samples,
    /// `true` in N sessions at once through the API, over N open connections.
    api: Samples,
    /// `linger invoke --computer <N computers> -- true`.
    cli: Samples,
}

struct Report {
    login_shell_true: Samples,
    ssh_cold: Samples,
    ssh_mux: Samples,
    first_new: Samples,
    api: Samples,
    cli: Samples,
    create: Samples,
    api_bytes_time: Duration,
    ssh_bytes_time: Duration,
    fan: Vec<FanOut>,
}

impl Report {
    fn print(&self) {
        println!();
        println!(
            "linger over TLS vs OpenSSH (lingerd and sshd on loopback; medians unless noted; \
             ratio = how many times faster linger is)"
        );
        println!();
        print_stat(
            "login shell `-c true` as sshd runs it:",
            &self.login_shell_true,
        );
        print_stat("ssh cold `ssh … true`:", &self.ssh_cold);
        print_stat("ssh ControlMaster `ssh -S SOCK … true`:", &self.ssh_mux);
        print_stat("linger API invoke `true`, over TLS:", &self.api);
        print_stat("linger CLI `linger invoke NAME -- true`:", &self.cli);
        print_stat("linger new_session over open TLS conn:", &self.create);
        print_stat("linger first new_session (connect+login):", &self.first_new);
        for f in &self.fan {
            let n = f.n;
            print_stat(
                &format!("fan-out {n}: `parallel-ssh -p {n} … true`:"),
                &f.pssh,
            );
            print_stat(
                &format!("fan-out {n}: concurrent `ssh … true`:"),
                &f.ssh_cold,
            );
            print_stat(
                &format!("fan-out {n}: `ssh -S` via ControlMasters:"),
                &f.ssh_mux,
            );
            print_stat(&format!("fan-out {n}: CLI `invoke --computer …`:"), &f.cli);
            print_stat(&format!("fan-out {n}: API `true`, open conns:"), &f.api);
            if f.api_new.median() > Duration::ZERO {
                print_stat(
                    &format!("fan-out {n}: API new_session, open conns:"),
                    &f.api_new,
                );
            }
        }
        let api_gbps = gbps(THROUGHPUT_BYTES, self.api_bytes_time);
        let ssh_gbps = gbps(THROUGHPUT_BYTES, self.ssh_bytes_time);
        print_throughput(
            "1 GiB stdout, linger API over TLS:",
            THROUGHPUT_BYTES,
            self.api_bytes_time,
        );
        print_throughput(
            "1 GiB stdout, `ssh … head -c`:",
            THROUGHPUT_BYTES,
            self.ssh_bytes_time,
        );
        println!();

        let cold = ms(self.ssh_cold.median());
        let mux = ms(self.ssh_mux.median());
        let api = ms(self.api.median());
        let cli = ms(self.cli.median());
        let create = ms(self.create.median());
        let mut rows: Vec<[String; 6]> = vec![
            time_row_target(
                "`true` round trip: API over open TLS conn (vs ssh ControlMaster)",
                api,
                mux,
                TARGET_SPEEDUP_VS_MUX,
            ),
            time_row(
                "`true` round trip: API over open TLS conn (vs cold ssh)",
                api,
                cold,
            ),
            time_row(
                "`true` round trip: CLI process, new TLS conn (vs ssh ControlMaster)",
                cli,
                mux,
            ),
            time_row(
                "`true` round trip: CLI process, new TLS conn (vs cold ssh)",
                cli,
                cold,
            ),
            time_row(
                "session creation: new_session over open TLS conn (vs cold ssh login)",
                create,
                cold,
            ),
            throughput_row(
                "throughput, 1 GiB stdout: API over TLS (vs `ssh … head -c`)",
                api_gbps,
                ssh_gbps,
                TARGET_THROUGHPUT_RATIO,
            ),
        ];
        for f in &self.fan {
            let n = f.n;
            let pssh = ms(f.pssh.median());
            let fan_cli = ms(f.cli.median());
            let fan_api = ms(f.api.median());
            rows.push(time_row_target(
                &format!("fan-out {n} `true`: CLI, {n} new TLS logins (vs parallel-ssh)"),
                fan_cli,
                pssh,
                TARGET_FAN_OUT_VS_PSSH,
            ));
            rows.push(time_row_target(
                &format!("fan-out {n} `true`: API over {n} open conns (vs parallel-ssh)"),
                fan_api,
                pssh,
                TARGET_FAN_OUT_VS_PSSH,
            ));
            rows.push(time_row(
                &format!("fan-out {n} `true`: CLI, {n} new TLS logins (vs {n} concurrent ssh)"),
                fan_cli,
                ms(f.ssh_cold.median()),
            ));
            rows.push(time_row(
                &format!("fan-out {n} `true`: API over {n} open conns (vs {n} ControlMasters)"),
                fan_api,
                ms(f.ssh_mux.median()),
            ));
        }
        print_table(&TABLE_HEADER, &rows);
        println!();
        let notes = format!(
            "ratio = ssh's time / linger's (throughput: linger's GB/s / ssh's); below 1x linger is
slower. Every ssh process uses the same flags (the fixture's key and known_hosts), and
linger logs in with the same key. Cold ssh: a whole `ssh` process, login included, per
command; its session-creation column is the same samples. sshd runs every remote command
with the user's login shell, which reads its startup files first (bash: ~/.bashrc); `login
shell -c true as sshd runs it` is that cost, run locally. linger's sessions run bash
without startup files. GB/s = 10^9 bytes per second, one run each; the ssh run includes
its login, linger's uses the open connection.
Fan-out: the hosts are 127.0.0.1..127.0.0.N, all served by one sshd (on 0.0.0.0,
MaxStartups 200:30:300) and one lingerd (a listener per address). parallel-ssh is timed as
a whole process (-p N), and so is `linger invoke --computer … --throttle T` (N TLS
connections, logins and temporary sessions; T = N, at most {max}: one lingerd refuses
connections past {max} unfinished handshakes, where each real host would have its own
daemon). The API invokes in N sessions over N connections opened before; the
ControlMaster rows go through N masters opened before.",
            max = lingerd::MAX_HANDSHAKING
        );
        println!("{notes}");
    }
}
