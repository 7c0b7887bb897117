//! Benchmark of linger's ssh transport against OpenSSH itself, side by side in one run: a
//! private sshd on loopback (the tests' fixture), the release binaries, and the system's
//! `ssh`. It only reports; nothing here fails on wall-clock numbers.
//!
//! Run with `bash bench/run.sh`, or `cargo build --release --workspace` and then
//! `cargo bench -p linger-cli --bench ssh_bench`.
//!
//! Measured: a `true` round trip (a cold `ssh … true` process each time; `ssh` through a
//! ControlMaster; linger's library API over one open ssh connection; a whole `linger invoke`
//! process, which opens a new ssh connection), session creation, 1 GiB of stdout, and a
//! fan-out to 32 computers. The fixture's sshd listens on 127.0.0.1 only, so the 32
//! "computers" are 32 more instances of the fixture, each its own sshd on its own port of
//! 127.0.0.1 (one sshd would not do: its `MaxStartups` drops concurrent logins past 10),
//! all bridging to the one daemon. For context: a `bash -c true` process, the user's login
//! shell started as sshd starts it (its startup files run before every remote command),
//! a 1-byte round trip through an open ssh channel, and linger's API over the local socket.
//!
//! Everything runs in a fresh temporary directory: the sshd's keys and config, the client
//! home, and the XDG directories of the daemon that `lingerd --stdio` (the remote command,
//! given them explicitly since sshd cleans the environment) starts on first use. At the end
//! every session made here is removed, the ControlMaster is stopped, the daemon and any
//! session host still alive are killed by pid, and sshd is killed.

mod common;
#[path = "../tests/it/common/sshd.rs"]
#[allow(dead_code)]
mod sshd;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    block_on, exit_code, feed_stdin, gbps, keystroke_echo, learn_host_keys, make_private_dirs, ms,
    new_sessions_at_once, off_runtime, or_exit, print_stat, print_table, print_tail,
    print_throughput, release_binaries, require_sshd, throughput_row, time_api, time_api_all,
    time_concurrently, time_drain, time_first_session, time_login_shell, time_process, time_row,
    time_row_target, time_session_creation, BenchEnv, Binaries, BoxError, Samples, Ssh,
    TABLE_HEADER,
};
use linger::{Client, Entry, NewOptions};
use sshd::{ssh_command, user, Sshd};

const SPAWN_WARMUP: usize = 10;
const SPAWN_RUNS: usize = 200;
const SSH_COLD_WARMUP: usize = 5;
const SSH_COLD_RUNS: usize = 100;
const SSH_MUX_WARMUP: usize = 20;
const SSH_MUX_RUNS: usize = 500;
const PINGPONG_WARMUP: usize = 100;
const PINGPONG_RUNS: usize = 2000;
const ECHO_WARMUP: usize = 20;
const ECHO_RUNS: usize = 300;
const API_WARMUP: usize = 100;
const API_RUNS: usize = 2000;
const CLI_WARMUP: usize = 5;
const CLI_RUNS: usize = 100;
const CREATE_WARMUP: usize = 3;
const CREATE_RUNS: usize = 50;
const THROUGHPUT_BYTES: u64 = 1 << 30;
const FAN_OUT: usize = 32;
const FAN_SSH_WARMUP: usize = 2;
const FAN_SSH_RUNS: usize = 20;
const FAN_API_WARMUP: usize = 10;
const FAN_API_RUNS: usize = 100;
const FAN_CLI_WARMUP: usize = 2;
const FAN_CLI_RUNS: usize = 20;

/// Design target: linger's API over an open connection vs `ssh` through a ControlMaster.
const TARGET_SPEEDUP_VS_MUX: f64 = 12.0;
/// Design target: linger's throughput over ssh vs ssh's own.
const TARGET_THROUGHPUT_RATIO: f64 = 3.0;
/// Forwarded input through a whole CLI process over ssh, against ssh's own `cat`.
const TARGET_INPUT_RATIO: f64 = 0.9;

fn main() {
    // `cargo bench` passes `--bench`; there are no options to read.
    let bins = or_exit(release_binaries(), 2, "ssh_bench");
    require_sshd("ssh_bench", sshd::SSHD);
    let env = or_exit(
        prepare(bins),
        1,
        "ssh_bench: cannot prepare the temporary directory",
    );
    eprintln!("starting sshd on loopback");
    let server = Sshd::start(env.dir.path());
    let ssh = Ssh::new(ssh_command(&server), server.port, user());
    // The fan-out's hosts, killed when dropped (below).
    let mut fleet = Vec::with_capacity(FAN_OUT);
    eprintln!("starting {FAN_OUT} more sshd for the fan-out");
    let prepared = env
        .write_options(&ssh)
        .map_err(BoxError::from)
        .and_then(|()| start_fleet(&env, &server, &mut fleet));
    let hosts: Vec<Ssh> = fleet.iter().map(|s| ssh.on(s.port)).collect();
    let code = match prepared {
        Err(e) => {
            eprintln!("ssh_bench: cannot prepare: {e}");
            1
        }
        Ok(()) => {
            let result = block_on(env.measure_with_client(async |client, made| {
                measure(&env, &ssh, &hosts, client, made).await
            }));
            exit_code("ssh_bench", result, Report::print, || env.print_log_tail())
        }
    };
    // Kills the daemon and any session host left, then deletes the directory; then sshd
    // (this also happens if a measurement panics).
    drop(env);
    drop(fleet);
    drop(server);
    std::process::exit(code);
}

/// The temporary world the benchmark runs in.
fn prepare(bins: Binaries) -> std::io::Result<BenchEnv> {
    let env = BenchEnv::new("lgs", bins)?;
    make_private_dirs(&[&env.runtime, &env.state, &env.config, &env.home])?;
    // The ssh processes (the client's and the benchmark's own) inherit these: nothing
    // of the user's home or agent is used, and `localhost` finds the same daemon that
    // the bridge starts.
    env.export_vars();
    env.isolate_ssh();
    Ok(env)
}

impl BenchEnv {
    /// The client's options: the fixture's ssh flags, and a remote command that bridges to
    /// this benchmark's daemon (sshd gives the remote command a clean environment). The
    /// daemon's lingerd.toml lets it keep every session made here.
    fn write_options(&self, ssh: &Ssh) -> std::io::Result<()> {
        std::fs::create_dir_all(self.config.join("linger"))?;
        std::fs::write(
            self.config.join("linger/lingerd.toml"),
            common::MANY_SESSIONS_TOML,
        )?;
        let lingerd = self.bins.lingerd.display();
        let remote = format!(
            "env XDG_RUNTIME_DIR={} XDG_STATE_HOME={} XDG_CONFIG_HOME={} HOME={} LINGERD={lingerd} {lingerd} --stdio",
            self.runtime.display(),
            self.state.display(),
            self.config.display(),
            self.dir.path().display(),
        );
        std::fs::write(
            self.home.join("options.toml"),
            format!(
                "ssh_command = {:?}\nssh_remote_command = {remote:?}\n",
                ssh.command_line
            ),
        )
    }

    fn print_log_tail(&self) {
        print_tail(&self.server_dir().join("lingerd.log"), 20);
        print_tail(&self.dir.path().join("sshd/sshd.log"), 10);
    }
}

/// The client's bridge autostarted the daemon: nothing else stops it.
impl Drop for BenchEnv {
    fn drop(&mut self) {
        self.kill_daemon_and_hosts();
    }
}

/// One byte each way through `ssh … cat`: the round trip of an open ssh channel, under any
/// protocol carried over it.
fn ssh_pingpong(ssh: &Ssh) -> Result<Samples, BoxError> {
    let mut child = ssh
        .command(&[], Some("cat"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to = child.stdin.take().expect("piped stdin");
    let mut from = child.stdout.take().expect("piped stdout");
    let mut times = Vec::with_capacity(PINGPONG_RUNS);
    let mut b = [0u8; 1];
    let result = (|| -> std::io::Result<()> {
        for i in 0..PINGPONG_WARMUP + PINGPONG_RUNS {
            let start = Instant::now();
            to.write_all(b"x")?;
            to.flush()?;
            from.read_exact(&mut b)?;
            if i >= PINGPONG_WARMUP {
                times.push(start.elapsed());
            }
        }
        Ok(())
    })();
    drop(to);
    let status = child.wait()?;
    result?;
    if !status.success() {
        return Err(format!("ssh … cat exited with {status}").into());
    }
    Ok(Samples::new(times))
}

/// The fan-out's hosts: one more fixture sshd each (its own port, host key and process, all
/// on 127.0.0.1, bridging to the one daemon), each also authorizing the main fixture's
/// client key so that one `ssh_command` reaches them all. Killed when dropped.
fn start_fleet(env: &BenchEnv, main: &Sshd, fleet: &mut Vec<Sshd>) -> Result<(), BoxError> {
    let key = std::fs::read(main.client_key.with_extension("pub"))?;
    for i in 0..FAN_OUT {
        let host = Sshd::start(&env.dir.path().join(format!("h{i:02}")));
        let authorized = host
            .client_key
            .parent()
            .expect("the fixture's key is in its directory")
            .join("authorized_keys");
        let result = std::fs::OpenOptions::new()
            .append(true)
            .open(&authorized)
            .and_then(|mut f| f.write_all(&key));
        fleet.push(host);
        result?;
    }
    Ok(())
}

struct FanOut {
    ssh_cold: Samples,
    new_sessions: Samples,
    api: Samples,
    cli: Samples,
}

struct Report {
    spawn_true: Samples,
    login_shell_true: Samples,
    ssh_cold: Samples,
    ssh_mux: Samples,
    ssh_pingpong: Samples,
    /// A byte typed at a terminal command until its echo comes back.
    echo_linger: Samples,
    echo_ssh: Samples,
    first_new: Samples,
    api: Samples,
    local_api: Samples,
    cli: Samples,
    create: Samples,
    api_bytes_time: Duration,
    local_bytes_time: Duration,
    ssh_bytes_time: Duration,
    /// 1 GiB into `linger invoke`'s stdin over ssh, and into `ssh … cat`'s.
    input_cli: Duration,
    input_ssh: Duration,
    fan: FanOut,
}

async fn measure(
    env: &BenchEnv,
    ssh: &Ssh,
    hosts: &[Ssh],
    client: &Client,
    made: &mut Vec<Entry>,
) -> Result<Report, BoxError> {
    env.print_paths();
    eprintln!(
        "ssh:       {} (sshd on 127.0.0.1:{})",
        ssh.command_line, ssh.port
    );

    eprintln!("floor: `bash -c true` x{SPAWN_RUNS}");
    let spawn_true = time_process(SPAWN_WARMUP, SPAWN_RUNS, || {
        let mut c = Command::new("bash");
        c.args(["-c", "true"]);
        c
    })
    .await?;

    let login_shell_true = time_login_shell(&ssh.user, SPAWN_WARMUP, SPAWN_RUNS).await?;
    let ssh_cold = ssh.time_cold(SSH_COLD_WARMUP, SSH_COLD_RUNS).await?;
    let ssh_mux = ssh
        .time_mux(
            env.dir.path().join("cm"),
            &env.dir.path().join("master.log"),
            SSH_MUX_WARMUP,
            SSH_MUX_RUNS,
        )
        .await?;

    eprintln!("ssh channel: 1-byte ping-pong through `ssh … cat` x{PINGPONG_RUNS}");
    let ssh_pingpong = {
        let ssh = ssh.clone();
        off_runtime(move || ssh_pingpong(&ssh)).await?
    };

    let computer = ssh.computer();
    eprintln!("first session on {computer} (ssh login, bridge, daemon start, handshake)");
    let (entry, first_new) = time_first_session(client, &computer, made).await?;

    eprintln!("API over ssh: invoke `true` x{API_RUNS} (after {API_WARMUP} warm-up)");
    let api = time_api(client, &entry, API_WARMUP, API_RUNS).await?;

    eprintln!("API, local socket to the same daemon: invoke `true` x{API_RUNS}");
    let view = client
        .new_session("localhost", &NewOptions::default())
        .await?;
    let local_entry = view.entry.clone();
    made.push(view.entry);
    let local_api = time_api(client, &local_entry, API_WARMUP, API_RUNS).await?;

    eprintln!(
        "CLI over ssh: `linger invoke {} -- true` x{CLI_RUNS} (after {CLI_WARMUP} warm-up)",
        entry.name
    );
    let cli = env
        .time_cli_invoke(&entry.name, CLI_WARMUP, CLI_RUNS)
        .await?;

    eprintln!("session creation over the open ssh connection x{CREATE_RUNS}");
    let create = time_session_creation(client, &computer, CREATE_WARMUP, CREATE_RUNS, made).await?;

    let script = format!("head -c {THROUGHPUT_BYTES} /dev/zero");
    eprintln!("throughput: `{script}` through the API over ssh");
    let (bytes, api_bytes_time) = time_drain(client, &entry, &script).await?;
    assert_eq!(bytes, THROUGHPUT_BYTES, "bytes received through linger");

    eprintln!("throughput: `{script}` through the API, local socket to the same daemon");
    let (bytes, local_bytes_time) = time_drain(client, &local_entry, &script).await?;
    assert_eq!(
        bytes, THROUGHPUT_BYTES,
        "bytes received through linger locally"
    );

    let (ssh_bytes, ssh_bytes_time) = ssh.time_output(&script).await?;
    assert_eq!(ssh_bytes, THROUGHPUT_BYTES, "bytes read from ssh");

    eprintln!("input: 1 GiB into `linger invoke {} -- 'cat >/dev/null'` (over ssh) and into `ssh … 'cat >/dev/null'`", entry.name);
    let input_cli = {
        let cmd = env.linger(&["invoke", &entry.name, "--", "cat >/dev/null"]);
        off_runtime(move || feed_stdin(&mut { cmd }, THROUGHPUT_BYTES)).await?
    };
    let input_ssh = {
        let cmd = ssh.command(&[], Some("cat >/dev/null"));
        off_runtime(move || feed_stdin(&mut { cmd }, THROUGHPUT_BYTES)).await?
    };

    let remote = "echo READY; cat >/dev/null";
    eprintln!(
        "keystroke echo: a byte typed into `linger invoke {} -t -- '{remote}'` (over ssh) and into `ssh -tt … '{remote}'`, x{ECHO_RUNS}",
        entry.name
    );
    let echo_linger = {
        let cmd = env.linger(&["invoke", &entry.name, "-t", "--", remote]);
        off_runtime(move || keystroke_echo(cmd, ECHO_WARMUP, ECHO_RUNS)).await?
    };
    let echo_ssh = {
        let cmd = ssh.command(&["-tt"], Some(remote));
        off_runtime(move || keystroke_echo(cmd, ECHO_WARMUP, ECHO_RUNS)).await?
    };

    let fan = fan_out(env, hosts, client, made).await?;

    Ok(Report {
        spawn_true,
        login_shell_true,
        ssh_cold,
        ssh_mux,
        ssh_pingpong,
        first_new,
        api,
        local_api,
        cli,
        create,
        api_bytes_time,
        local_bytes_time,
        ssh_bytes_time,
        input_cli,
        input_ssh,
        echo_linger,
        echo_ssh,
        fan,
    })
}

async fn fan_out(
    env: &BenchEnv,
    hosts: &[Ssh],
    client: &Client,
    made: &mut Vec<Entry>,
) -> Result<FanOut, BoxError> {
    eprintln!("fan-out: learning the {FAN_OUT} host keys");
    learn_host_keys(hosts.to_vec()).await?;

    eprintln!("fan-out: {FAN_OUT} concurrent `ssh … true` processes x{FAN_SSH_RUNS}");
    let fleet = hosts.to_vec();
    let ssh_cold = time_concurrently(FAN_SSH_WARMUP, FAN_SSH_RUNS, move || {
        fleet.iter().map(|h| h.command(&[], Some("true"))).collect()
    })
    .await?;

    eprintln!("fan-out: {FAN_OUT} sessions at once through the API, each a new ssh connection");
    let computers: Vec<String> = hosts.iter().map(Ssh::computer).collect();
    let (entries, new_sessions) =
        new_sessions_at_once(client, &computers, |i| format!("fan{i:02}"), made).await?;

    eprintln!(
        "fan-out: invoke `true` in the {FAN_OUT} sessions at once through the API x{FAN_API_RUNS}"
    );
    let api = time_api_all(client, &entries, FAN_API_WARMUP, FAN_API_RUNS).await?;

    eprintln!("fan-out: `linger invoke 'fan*' -- true` x{FAN_CLI_RUNS}");
    let cli = env
        .time_cli_invoke("fan*", FAN_CLI_WARMUP, FAN_CLI_RUNS)
        .await?;

    Ok(FanOut {
        ssh_cold,
        new_sessions,
        api,
        cli,
    })
}

impl Report {
    fn print(&self) {
        let stat = print_stat;
        println!();
        println!(
            "linger over ssh vs OpenSSH (sshd on loopback; medians unless noted; \
             ratio = how many times faster linger is)"
        );
        println!();
        stat("floor `bash -c true` process:", &self.spawn_true);
        stat(
            "login shell `-c true` as sshd runs it:",
            &self.login_shell_true,
        );
        stat("ssh cold `ssh … true`:", &self.ssh_cold);
        stat("ssh ControlMaster `ssh -S SOCK … true`:", &self.ssh_mux);
        stat(
            "ssh channel 1-byte ping-pong (`ssh … cat`):",
            &self.ssh_pingpong,
        );
        stat(
            "keystroke echo, `linger invoke -t` over ssh:",
            &self.echo_linger,
        );
        stat("keystroke echo, `ssh -tt`:", &self.echo_ssh);
        stat("linger API invoke `true`, over ssh:", &self.api);
        stat("linger API invoke `true`, local socket:", &self.local_api);
        stat("linger CLI `linger invoke NAME -- true`:", &self.cli);
        stat("linger new_session over open ssh conn:", &self.create);
        stat(
            "linger first new_session (connect+daemon):",
            &self.first_new,
        );
        stat(
            &format!("fan-out {FAN_OUT}: concurrent `ssh … true`:"),
            &self.fan.ssh_cold,
        );
        stat(
            &format!("fan-out {FAN_OUT}: API new_session (new conns):"),
            &self.fan.new_sessions,
        );
        stat(
            &format!("fan-out {FAN_OUT}: API invoke `true` (open):"),
            &self.fan.api,
        );
        stat(
            &format!("fan-out {FAN_OUT}: CLI `linger invoke 'fan*'`:"),
            &self.fan.cli,
        );
        let api_gbps = gbps(THROUGHPUT_BYTES, self.api_bytes_time);
        let ssh_gbps = gbps(THROUGHPUT_BYTES, self.ssh_bytes_time);
        let input_gbps = gbps(THROUGHPUT_BYTES, self.input_cli);
        let input_ssh_gbps = gbps(THROUGHPUT_BYTES, self.input_ssh);
        print_throughput(
            "1 GiB stdout, linger API over ssh:",
            THROUGHPUT_BYTES,
            self.api_bytes_time,
        );
        print_throughput(
            "1 GiB stdout, `ssh … head -c`:",
            THROUGHPUT_BYTES,
            self.ssh_bytes_time,
        );
        print_throughput(
            "1 GiB stdout, linger API local socket:",
            THROUGHPUT_BYTES,
            self.local_bytes_time,
        );
        let api = ms(self.api.median());
        let local = ms(self.local_api.median());
        let channel = ms(self.ssh_pingpong.median());
        println!(
            "  where an API round trip over ssh goes: {local:.3} ms as over the local socket, \
             {:.3} ms more for the ssh path (an ssh channel round trip alone: {channel:.3} ms)",
            api - local
        );
        println!();

        let cold = ms(self.ssh_cold.median());
        let mux = ms(self.ssh_mux.median());
        let cli = ms(self.cli.median());
        let create = ms(self.create.median());
        let fan_ssh = ms(self.fan.ssh_cold.median());
        let fan_api = ms(self.fan.api.median());
        let fan_cli = ms(self.fan.cli.median());
        let rows: Vec<[String; 6]> = vec![
            time_row_target(
                "`true` round trip: API over open ssh conn (vs ssh ControlMaster)",
                api,
                mux,
                TARGET_SPEEDUP_VS_MUX,
            ),
            time_row(
                "keystroke echo on a terminal: `invoke -t` over ssh (vs `ssh -tt`)",
                ms(self.echo_linger.median()),
                ms(self.echo_ssh.median()),
            ),
            time_row(
                "`true` round trip: API over open ssh conn (vs cold ssh)",
                api,
                cold,
            ),
            time_row(
                "`true` round trip: CLI process, new ssh conn (vs cold ssh)",
                cli,
                cold,
            ),
            time_row(
                "`true` round trip: CLI process, new ssh conn (vs ssh ControlMaster)",
                cli,
                mux,
            ),
            time_row(
                "session creation: new_session over open conn (vs cold ssh login)",
                create,
                cold,
            ),
            throughput_row(
                "throughput, 1 GiB stdout: API over ssh (vs `ssh … head -c`)",
                api_gbps,
                ssh_gbps,
                TARGET_THROUGHPUT_RATIO,
            ),
            throughput_row(
                "input, 1 GiB stdin: CLI process over ssh (vs `ssh … cat`)",
                input_gbps,
                input_ssh_gbps,
                TARGET_INPUT_RATIO,
            ),
            time_row(
                &format!("fan-out {FAN_OUT} `true`: API over open conns (vs concurrent cold ssh)"),
                fan_api,
                fan_ssh,
            ),
            time_row(
                &format!("fan-out {FAN_OUT} `true`: CLI process (vs concurrent cold ssh)"),
                fan_cli,
                fan_ssh,
            ),
        ];
        print_table(&TABLE_HEADER, &rows);
        println!();
        println!(
            "ratio = ssh's time / linger's (throughput: linger's GB/s / ssh's); below 1x linger is"
        );
        println!(
            "slower. Every ssh process uses the client's own flags (the fixture's key, cipher and"
        );
        println!("known_hosts). Cold ssh: a whole `ssh` process, login included, per command; its");
        println!(
            "session-creation column is the same samples. GB/s = 10^9 bytes per second, one run"
        );
        println!("each; the ssh run includes its login, linger's uses the open connection.");
        println!(
            "sshd runs every remote command (ssh's `true`, and the `lingerd --stdio` that each"
        );
        println!(
            "linger ssh connection starts) with the user's login shell, which reads its startup"
        );
        println!(
            "files (bash: ~/.bashrc); `login shell -c true as sshd runs it` is that cost, run"
        );
        println!("locally with sshd's environment (HOME, SSH_CLIENT).");
        println!(
            "Fan-out: the fixture's sshd listens on 127.0.0.1 only, so the {FAN_OUT} computers are"
        );
        println!(
            "{FAN_OUT} more fixture sshds on {FAN_OUT} ports of 127.0.0.1, bridging to one daemon."
        );
    }
}
