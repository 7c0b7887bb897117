//! End-to-end benchmark of linger against the release binaries, each measurement beside a
//! floor (what the same work costs without linger). It only reports; nothing here fails on
//! wall-clock numbers.
//!
//! Run with `bash bench/run.sh`, or `cargo build --release --workspace` and then
//! `cargo bench -p linger-cli --bench linger_bench`.
//!
//! Everything runs in a fresh temporary directory (XDG_RUNTIME_DIR, XDG_STATE_HOME,
//! XDG_CONFIG_HOME and LINGER_HOME point inside it), with a daemon of its own started on
//! first use; at the end every session made here is removed and the daemon and any session
//! host still alive are killed. The daemon reads a `lingerd.toml` written here, which adds
//! one configuration (`big`, a 128 MiB output buffer) for the receive-after-reconnect
//! measurement and changes nothing else.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    block_on, drain, exit_code, fmt_ms, gbps, make_private_dirs, met, ms, or_exit, print_table,
    print_tail, read_counting, read_stdout, release_binaries, time_api, time_drain, time_feeds,
    time_process_blocking, time_session_creation, BenchEnv, Binaries, BoxError, DrainUntil,
    Drained, Samples,
};
use linger::{
    BufferingMode, Client, ClientHome, CommandStream, Entry, InvokeOptions, NewOptions,
    ReceiveOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const API_WARMUP: usize = 100;
const API_RUNS: usize = 2000;
const PINGPONG_WARMUP: usize = 100;
const PINGPONG_RUNS: usize = 2000;
const SPAWN_WARMUP: usize = 10;
const SPAWN_RUNS: usize = 200;
const CLI_WARMUP: usize = 10;
const CLI_RUNS: usize = 200;
const AD_HOC_RUNS: usize = 100;
const CREATE_RUNS: usize = 50;
const THROUGHPUT_BYTES: u64 = 1 << 30;
/// Forwarded input: 1 GiB through a whole `linger invoke` process, this many times.
const INPUT_RUNS: usize = 3;
/// Output produced while nobody is attached, then received by another client.
const RECONNECT_BYTES: u64 = 100_000_000;
const RECONNECT_RUNS: usize = 5;
/// How long the detached command may take to have all its output buffered.
const RECONNECT_PRODUCE_LIMIT: Duration = Duration::from_secs(120);
/// The configuration, written to lingerd.toml, that keeps 100 MB in memory.
const BIG_CONFIGURATION: &str = "big";
const LINGERD_TOML: &str =
    "# Written by linger_bench: the defaults, with room for the sessions made here, plus a\n\
    # configuration with an output buffer large enough for the receive-after-reconnect\n\
    # measurement to stay in memory.\n\
    [[configuration]]\n\
    name = \"default\"\n\
    max_sessions_per_user = 1000\n\
    [[configuration]]\n\
    name = \"big\"\n\
    output_buffer_size = \"128MiB\"\n";

/// A `linger invoke` process against a warm session, as a multiple of a `bash -c true` process.
const TARGET_CLI_RATIO: f64 = 1.3;
/// An ad hoc `linger invoke --computer localhost` (session made and removed), the same way.
const TARGET_AD_HOC_RATIO: f64 = 3.0;
const TARGET_API_MS: f64 = 0.15;
const TARGET_CREATE_MS: f64 = 20.0;
/// 1 GiB through a whole `linger invoke` process, as a fraction of `head | cat` into a pipe.
const TARGET_CLI_THROUGHPUT_FRACTION: f64 = 0.8;
const TARGET_RECONNECT_GBPS: f64 = 2.0;

fn main() {
    // `cargo bench` passes `--bench`; there are no options to read.
    let bins = or_exit(release_binaries(), 2, "linger_bench");
    let env = or_exit(
        prepare(bins),
        1,
        "linger_bench: cannot prepare the temporary directory",
    );
    let result =
        block_on(env.measure_with_client(async |client, made| measure(&env, client, made).await));
    let code = exit_code("linger_bench", result, Report::print, || {
        env.print_log_tail()
    });
    // Kills the daemon and any session host left, then deletes the directory (this also
    // happens if a measurement panics).
    drop(env);
    std::process::exit(code);
}

/// The temporary world the benchmark runs in, its daemon's configuration written.
fn prepare(bins: Binaries) -> std::io::Result<BenchEnv> {
    let env = BenchEnv::new("lgb", bins)?;
    make_private_dirs(&[&env.runtime, &env.state, &env.config, &env.home])?;
    // Read by the daemon when it starts (on the first session).
    let toml = env.config.join("linger/lingerd.toml");
    std::fs::create_dir_all(toml.parent().expect("has a parent"))?;
    std::fs::write(&toml, LINGERD_TOML)?;
    // This process is the client that autostarts the daemon, which inherits these.
    env.export_vars();
    Ok(env)
}

impl BenchEnv {
    /// A fresh, empty client home: another client machine.
    fn other_home(&self, name: &str) -> std::io::Result<PathBuf> {
        let dir = self.dir.path().join(name);
        make_private_dirs(&[&dir])?;
        Ok(dir)
    }

    fn print_log_tail(&self) {
        print_tail(&self.server_dir().join("lingerd.log"), 20);
    }
}

/// The client autostarted the daemon: nothing else stops it.
impl Drop for BenchEnv {
    fn drop(&mut self) {
        self.kill_daemon_and_hosts();
    }
}

/// One byte each way over a Unix socket pair, the far end echoing on another thread.
async fn socket_pingpong() -> Result<Samples, BoxError> {
    let (near, far) = std::os::unix::net::UnixStream::pair()?;
    near.set_nonblocking(true)?;
    far.set_nonblocking(true)?;
    let echo = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async move {
            let mut far = tokio::net::UnixStream::from_std(far).expect("register socket");
            let mut b = [0u8; 1];
            while let Ok(1) = far.read(&mut b).await {
                if far.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
    });
    let mut near = tokio::net::UnixStream::from_std(near)?;
    let mut times = Vec::with_capacity(PINGPONG_RUNS);
    let mut b = [0u8; 1];
    for i in 0..PINGPONG_WARMUP + PINGPONG_RUNS {
        let start = Instant::now();
        near.write_all(b"x").await?;
        near.read_exact(&mut b).await?;
        if i >= PINGPONG_WARMUP {
            times.push(start.elapsed());
        }
    }
    drop(near);
    let _ = echo.join();
    Ok(Samples::new(times))
}

/// Reads everything `bash -c SCRIPT` writes to its stdout, 256 KiB at a time.
fn pipe_throughput(script: &str) -> Result<(u64, Duration), BoxError> {
    let (total, elapsed, status) = read_stdout(Command::new("bash").arg("-c").arg(script))?;
    if !status.success() {
        return Err(format!("bash -c '{script}' exited with {status}").into());
    }
    Ok((total, elapsed))
}

/// Where a disconnected session keeps the output it holds for the next receiver.
#[derive(Clone, Copy)]
enum Keeping {
    /// `--buffering spool` with the default configuration: 1 MiB in memory, the rest in the
    /// spool file in the session's state directory.
    Spool,
    /// The `big` configuration: everything in the host's memory.
    Memory,
}

impl Keeping {
    fn tag(self) -> &'static str {
        match self {
            Keeping::Spool => "spool",
            Keeping::Memory => "memory",
        }
    }

    fn new_options(self, name: String) -> NewOptions {
        match self {
            Keeping::Spool => NewOptions {
                name: Some(name),
                buffering: Some(BufferingMode::Spool),
                ..Default::default()
            },
            Keeping::Memory => NewOptions {
                name: Some(name),
                configuration: Some(BIG_CONFIGURATION.into()),
                ..Default::default()
            },
        }
    }
}

/// Receive after reconnect, one way of keeping the output.
struct Reconnect {
    /// From the second client's `receive` call to the end of its stream.
    receive: Samples,
    /// The second client's first `get_remote` (connecting and handshaking included).
    find: Samples,
    /// From the detached invoke until the host reported all output buffered (polled).
    produce: Samples,
}

/// Waits until the detached command in `entry` has ended with all of its output kept.
async fn wait_buffered(client: &Client, entry: &Entry) -> Result<(), BoxError> {
    let deadline = Instant::now() + RECONNECT_PRODUCE_LIMIT;
    loop {
        let views = client.refresh(vec![entry.clone()]).await?;
        let view = views.first().ok_or("refresh returned no view")?;
        let info = view.info.as_ref().ok_or_else(|| {
            format!(
                "session {} is {:?}: {:?}",
                entry.name, view.state, view.reason
            )
        })?;
        if let Some(why) = &info.closed_reason {
            return Err(format!("session {} closed: {why}", entry.name).into());
        }
        if info.dropped_output_bytes > 0 {
            return Err(format!(
                "session {} dropped {} bytes while disconnected",
                entry.name, info.dropped_output_bytes
            )
            .into());
        }
        if info.running_command.is_none() && info.pending_output_bytes == RECONNECT_BYTES {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "session {}: after {RECONNECT_PRODUCE_LIMIT:?}, running {:?} with {} bytes kept",
                entry.name, info.running_command, info.pending_output_bytes
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Drains a receive to its end; fails unless it holds exactly one command's
/// `RECONNECT_BYTES` of stdout, ending with status 0, and nothing dropped.
async fn drain_receive(stream: &mut CommandStream) -> Result<(), BoxError> {
    let Drained {
        stdout,
        stderr,
        statuses,
        dropped,
    } = drain(stream, DrainUntil::End).await?;
    if let Some(bytes) = dropped {
        return Err(format!("receive: {bytes} bytes reported dropped").into());
    }
    if stdout != RECONNECT_BYTES || stderr != 0 || statuses != [0] {
        return Err(format!(
            "receive got {stdout} bytes of stdout, {stderr} of stderr and statuses {statuses:?}; \
             expected {RECONNECT_BYTES}, 0 and [0]"
        )
        .into());
    }
    Ok(())
}

/// Receive after reconnect: a detached command leaves `RECONNECT_BYTES` in a fresh session,
/// then another client (its own home: another machine) finds the session and receives it.
/// Fresh session each run, removed afterwards.
async fn receive_after_reconnect(
    env: &BenchEnv,
    client: &Client,
    keeping: Keeping,
    made: &mut Vec<Entry>,
) -> Result<Reconnect, BoxError> {
    let script = format!("head -c {RECONNECT_BYTES} /dev/zero");
    let (mut receive, mut find, mut produce) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=RECONNECT_RUNS {
        let name = format!("reconnect-{}-{run}", keeping.tag());
        let view = client
            .new_session("localhost", &keeping.new_options(name))
            .await?;
        let entry = view.entry.clone();
        made.push(entry.clone());

        let start = Instant::now();
        let opts = InvokeOptions {
            disconnected: true,
            ..Default::default()
        };
        // The stream ends at once: nobody is attached while the command runs.
        drop(client.invoke(&entry, &script, &opts).await?);
        wait_buffered(client, &entry).await?;
        produce.push(start.elapsed());

        let home = env.other_home(&format!("home-{}-{run}", keeping.tag()))?;
        let other = Client::open(ClientHome::at(&home))?.with_local_socket(env.socket());
        let start = Instant::now();
        let views = other.get_remote("localhost").await?;
        let found = views
            .into_iter()
            .find(|v| v.entry.instance_id == entry.instance_id)
            .ok_or_else(|| format!("the second client does not see session {}", entry.name))?;
        find.push(start.elapsed());

        let start = Instant::now();
        let mut stream = other
            .receive(&found.entry, &ReceiveOptions::default())
            .await?;
        drain_receive(&mut stream).await?;
        receive.push(start.elapsed());
        drop(stream);

        other.remove(&found.entry).await?;
        made.retain(|e| e.instance_id != entry.instance_id);
        eprintln!(
            "  run {run}: buffered in {:.0} ms, found in {:.1} ms, received in {:.1} ms ({:.2} GB/s)",
            ms(produce[run - 1]),
            ms(find[run - 1]),
            ms(receive[run - 1]),
            gbps(RECONNECT_BYTES, receive[run - 1])
        );
    }
    Ok(Reconnect {
        receive: Samples::new(receive),
        find: Samples::new(find),
        produce: Samples::new(produce),
    })
}

/// Floor: `cat` of a file in the page cache, read through a pipe.
fn cached_file_floor(path: &Path) -> Result<Samples, BoxError> {
    let script = format!("cat '{}'", path.display());
    // Untimed once: the file was just written, but make sure it is all cached.
    pipe_throughput(&script)?;
    let mut times = Vec::with_capacity(RECONNECT_RUNS);
    for _ in 0..RECONNECT_RUNS {
        let (bytes, elapsed) = pipe_throughput(&script)?;
        assert_eq!(bytes, RECONNECT_BYTES, "bytes read from `cat`");
        times.push(elapsed);
    }
    Ok(Samples::new(times))
}

/// Floor: another thread writes `RECONNECT_BYTES` from memory into a Unix stream socket,
/// 256 KiB per write; this one reads it all, 256 KiB at a time.
fn socket_floor() -> Result<Samples, BoxError> {
    use std::io::Write;
    let data = std::sync::Arc::new(vec![0u8; RECONNECT_BYTES as usize]);
    let mut times = Vec::with_capacity(RECONNECT_RUNS);
    let mut buf = vec![0u8; 256 * 1024];
    for i in 0..=RECONNECT_RUNS {
        let (mut near, mut far) = std::os::unix::net::UnixStream::pair()?;
        let data = data.clone();
        let start = Instant::now();
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            for chunk in data.chunks(256 * 1024) {
                far.write_all(chunk)?;
            }
            Ok(())
        });
        let total = read_counting(&mut near, &mut buf)?;
        let elapsed = start.elapsed();
        writer.join().map_err(|_| "socket writer panicked")??;
        assert_eq!(total, RECONNECT_BYTES, "bytes read from the socket");
        // The first run warms up.
        if i > 0 {
            times.push(elapsed);
        }
    }
    Ok(Samples::new(times))
}

struct Report {
    api: Samples,
    cli: Samples,
    create: Samples,
    spawn_true: Samples,
    spawn_bare: Samples,
    pingpong: Samples,
    api_bytes_time: Duration,
    floor_bytes_time: Duration,
    /// 1 GiB out of a whole `linger invoke` process, and out of `head | cat`.
    cli_bytes_time: Duration,
    pipeline_time: Duration,
    ad_hoc: Samples,
    /// 1 GiB into `linger invoke`'s stdin, and into a plain pipe.
    input_cli: Samples,
    input_floor: Samples,
    reconnect_spool: Reconnect,
    reconnect_memory: Reconnect,
    floor_cat: Samples,
    floor_socket: Samples,
}

async fn measure(
    env: &BenchEnv,
    client: &Client,
    made: &mut Vec<Entry>,
) -> Result<Report, BoxError> {
    env.print_paths();

    // Floors that need no daemon.
    eprintln!("floor: `bash -c true` x{SPAWN_RUNS}");
    let spawn_true = time_process_blocking(SPAWN_WARMUP, SPAWN_RUNS, || {
        let mut c = Command::new("bash");
        c.args(["-c", "true"]);
        c
    })?;
    eprintln!("floor: `bash --noprofile --norc -c true` x{SPAWN_RUNS}");
    let spawn_bare = time_process_blocking(SPAWN_WARMUP, SPAWN_RUNS, || {
        let mut c = Command::new("bash");
        c.args(["--noprofile", "--norc", "-c", "true"]);
        c
    })?;
    eprintln!("floor: unix socket pair ping-pong x{PINGPONG_RUNS}");
    let pingpong = socket_pingpong().await?;

    // The first session starts the daemon.
    eprintln!("starting the daemon and the benchmark session");
    let view = client
        .new_session("localhost", &NewOptions::default())
        .await?;
    let entry = view.entry.clone();
    made.push(entry.clone());

    eprintln!("API round trip: invoke `true` x{API_RUNS} (after {API_WARMUP} warm-up)");
    let api = time_api(client, &entry, API_WARMUP, API_RUNS).await?;

    eprintln!(
        "CLI round trip: `linger invoke {} -- true` x{CLI_RUNS}",
        entry.id
    );
    let id = entry.id.to_string();
    let cli = time_process_blocking(CLI_WARMUP, CLI_RUNS, || {
        env.linger(&["invoke", &id, "--", "true"])
    })?;

    eprintln!("ad hoc: `linger invoke --computer localhost -- true` x{AD_HOC_RUNS}");
    let ad_hoc = time_process_blocking(CLI_WARMUP, AD_HOC_RUNS, || {
        env.linger(&["invoke", "--computer", "localhost", "--", "true"])
    })?;

    eprintln!("session creation x{CREATE_RUNS}");
    let create = time_session_creation(client, "localhost", 0, CREATE_RUNS, made).await?;

    let script = format!("head -c {THROUGHPUT_BYTES} /dev/zero");
    eprintln!("throughput: `{script}` through the API");
    let (bytes, api_bytes_time) = time_drain(client, &entry, &script).await?;
    assert_eq!(bytes, THROUGHPUT_BYTES, "bytes received through linger");

    eprintln!("floor: `bash -c '{script}'` read through a pipe");
    let (floor_bytes, floor_bytes_time) = pipe_throughput(&script)?;
    assert_eq!(floor_bytes, THROUGHPUT_BYTES, "bytes read from the pipe");

    eprintln!("throughput: `linger invoke {id} -- '{script}'` read through a pipe");
    let (cli_bytes, cli_bytes_time, status) =
        read_stdout(&mut env.linger(&["invoke", &id, "--", &script]))?;
    if !status.success() || cli_bytes != THROUGHPUT_BYTES {
        return Err(format!("`linger invoke` of {script} gave {cli_bytes} bytes, {status}").into());
    }
    let pipeline = format!("{script} | cat");
    eprintln!("floor: `bash -c '{pipeline}'` read through a pipe");
    let (pipeline_bytes, pipeline_time) = pipe_throughput(&pipeline)?;
    assert_eq!(
        pipeline_bytes, THROUGHPUT_BYTES,
        "bytes read from the pipeline"
    );

    eprintln!(
        "input: 1 GiB into `linger invoke {id} -- 'cat >/dev/null'` x{INPUT_RUNS}, and into \
         `cat >/dev/null` through a plain pipe"
    );
    let input_cli = time_feeds(INPUT_RUNS, THROUGHPUT_BYTES, || {
        env.linger(&["invoke", &id, "--", "cat >/dev/null"])
    })?;
    let input_floor = time_feeds(INPUT_RUNS, THROUGHPUT_BYTES, || {
        let mut c = Command::new("bash");
        c.args(["-c", "cat >/dev/null"]);
        c
    })?;

    eprintln!(
        "receive after reconnect: {RECONNECT_BYTES} bytes kept by a disconnected session \
         (spool), received by a second client, x{RECONNECT_RUNS}"
    );
    let reconnect_spool = receive_after_reconnect(env, client, Keeping::Spool, made).await?;
    eprintln!(
        "receive after reconnect: the same, kept in memory (configuration `{BIG_CONFIGURATION}`), \
         x{RECONNECT_RUNS}"
    );
    let reconnect_memory = receive_after_reconnect(env, client, Keeping::Memory, made).await?;

    let file = env.dir.path().join("cached-100MB");
    std::fs::write(&file, vec![0u8; RECONNECT_BYTES as usize])?;
    eprintln!(
        "floor: `cat` of a cached {RECONNECT_BYTES}-byte file through a pipe x{RECONNECT_RUNS}"
    );
    let floor_cat = cached_file_floor(&file);
    let _ = std::fs::remove_file(&file);
    let floor_cat = floor_cat?;
    eprintln!("floor: {RECONNECT_BYTES} bytes from memory through a unix socket x{RECONNECT_RUNS}");
    let floor_socket = socket_floor()?;

    Ok(Report {
        api,
        cli,
        create,
        spawn_true,
        spawn_bare,
        pingpong,
        api_bytes_time,
        floor_bytes_time,
        cli_bytes_time,
        pipeline_time,
        ad_hoc,
        input_cli,
        input_floor,
        reconnect_spool,
        reconnect_memory,
        floor_cat,
        floor_socket,
    })
}

impl Report {
    fn print(&self) {
        println!();
        println!(
            "linger benchmark (medians unless noted; ratio = how many times slower than the floor)"
        );
        println!();
        println!(
            "  API invoke `true`:       median {}  p99 {}  (n={})",
            fmt_ms(self.api.median()),
            fmt_ms(self.api.p99()),
            self.api.0.len()
        );
        println!(
            "  CLI `linger invoke`:     median {}  p99 {}  (n={})",
            fmt_ms(self.cli.median()),
            fmt_ms(self.cli.p99()),
            self.cli.0.len()
        );
        println!(
            "  ad hoc `invoke --computer`: median {}  p99 {}  (n={})",
            fmt_ms(self.ad_hoc.median()),
            fmt_ms(self.ad_hoc.p99()),
            self.ad_hoc.0.len()
        );
        println!(
            "  session creation:        median {}  p99 {}  (n={})",
            fmt_ms(self.create.median()),
            fmt_ms(self.create.p99()),
            self.create.0.len()
        );
        println!(
            "  floor `bash -c true`:    median {}  p99 {}  (n={})",
            fmt_ms(self.spawn_true.median()),
            fmt_ms(self.spawn_true.p99()),
            self.spawn_true.0.len()
        );
        println!(
            "  floor bare bash spawn:   median {}  p99 {}  (n={})",
            fmt_ms(self.spawn_bare.median()),
            fmt_ms(self.spawn_bare.p99()),
            self.spawn_bare.0.len()
        );
        println!(
            "  floor socket ping-pong:  median {}  p99 {}  (n={})",
            fmt_ms(self.pingpong.median()),
            fmt_ms(self.pingpong.p99()),
            self.pingpong.0.len()
        );
        let fmt_rate = |name: &str, s: &Samples| {
            println!(
                "  {name:<25}median {}  max {}  (n={})  = {:.2} GB/s",
                fmt_ms(s.median()),
                fmt_ms(s.max()),
                s.0.len(),
                gbps(RECONNECT_BYTES, s.median())
            )
        };
        fmt_rate("reconnect recv, spool:", &self.reconnect_spool.receive);
        fmt_rate("reconnect recv, memory:", &self.reconnect_memory.receive);
        fmt_rate("floor `cat` 100 MB file:", &self.floor_cat);
        fmt_rate("floor socket 100 MB:", &self.floor_socket);
        for (name, r) in [
            ("spool", &self.reconnect_spool),
            ("memory", &self.reconnect_memory),
        ] {
            println!(
                "  {:<25}median {}  max {}  (n={})",
                format!("get_remote, {name}:"),
                fmt_ms(r.find.median()),
                fmt_ms(r.find.max()),
                r.find.0.len()
            );
        }
        for (name, r) in [
            ("spool", &self.reconnect_spool),
            ("memory", &self.reconnect_memory),
        ] {
            println!(
                "  {:<25}median {}  min {}  (n={}, polled every 10 ms)",
                format!("detached run, {name}:"),
                fmt_ms(r.produce.median()),
                fmt_ms(r.produce.min()),
                r.produce.0.len()
            );
        }
        println!();

        let api = ms(self.api.median());
        let cli = ms(self.cli.median());
        let create = ms(self.create.median());
        let api_gbps = gbps(THROUGHPUT_BYTES, self.api_bytes_time);
        let floor_gbps = gbps(THROUGHPUT_BYTES, self.floor_bytes_time);
        let cli_gbps = gbps(THROUGHPUT_BYTES, self.cli_bytes_time);
        let pipeline_gbps = gbps(THROUGHPUT_BYTES, self.pipeline_time);
        let ad_hoc = ms(self.ad_hoc.median());
        let spool_gbps = gbps(RECONNECT_BYTES, self.reconnect_spool.receive.median());
        let memory_gbps = gbps(RECONNECT_BYTES, self.reconnect_memory.receive.median());
        let cat_gbps = gbps(RECONNECT_BYTES, self.floor_cat.median());
        let socket_gbps = gbps(RECONNECT_BYTES, self.floor_socket.median());
        let input_gbps = gbps(THROUGHPUT_BYTES, self.input_cli.median());
        let input_floor_gbps = gbps(THROUGHPUT_BYTES, self.input_floor.median());
        let rows: Vec<[String; 6]> = vec![
            [
                "API round trip (vs `bash -c true` process)".into(),
                format!("{api:.3} ms"),
                format!("{:.3} ms", ms(self.spawn_true.median())),
                format!("{:.2}x", api / ms(self.spawn_true.median())),
                format!("<= {TARGET_API_MS} ms"),
                met(api <= TARGET_API_MS).into(),
            ],
            [
                "API round trip (vs unix socket ping-pong)".into(),
                format!("{api:.3} ms"),
                format!("{:.3} ms", ms(self.pingpong.median())),
                format!("{:.1}x", api / ms(self.pingpong.median())),
                String::new(),
                String::new(),
            ],
            [
                "CLI round trip (vs `bash -c true` process)".into(),
                format!("{cli:.3} ms"),
                format!("{:.3} ms", ms(self.spawn_true.median())),
                format!("{:.2}x", cli / ms(self.spawn_true.median())),
                format!("<= {TARGET_CLI_RATIO}x"),
                met(cli / ms(self.spawn_true.median()) <= TARGET_CLI_RATIO).into(),
            ],
            [
                "ad hoc `invoke --computer localhost` (vs `bash -c true`)".into(),
                format!("{ad_hoc:.3} ms"),
                format!("{:.3} ms", ms(self.spawn_true.median())),
                format!("{:.2}x", ad_hoc / ms(self.spawn_true.median())),
                format!("<= {TARGET_AD_HOC_RATIO}x"),
                met(ad_hoc / ms(self.spawn_true.median()) <= TARGET_AD_HOC_RATIO).into(),
            ],
            [
                "session creation (vs bare bash spawn)".into(),
                format!("{create:.3} ms"),
                format!("{:.3} ms", ms(self.spawn_bare.median())),
                format!("{:.2}x", create / ms(self.spawn_bare.median())),
                format!("<= {TARGET_CREATE_MS} ms"),
                met(create <= TARGET_CREATE_MS).into(),
            ],
            [
                "throughput, 1 GiB stdout (vs pipe read)".into(),
                format!("{api_gbps:.2} GB/s"),
                format!("{floor_gbps:.2} GB/s"),
                format!("{:.2}x", floor_gbps / api_gbps),
                String::new(),
                String::new(),
            ],
            [
                "throughput, 1 GiB out of `linger invoke` (vs `head | cat`)".into(),
                format!("{cli_gbps:.2} GB/s"),
                format!("{pipeline_gbps:.2} GB/s"),
                format!("{:.2}x", pipeline_gbps / cli_gbps),
                format!(">= {TARGET_CLI_THROUGHPUT_FRACTION} of floor"),
                met(cli_gbps >= TARGET_CLI_THROUGHPUT_FRACTION * pipeline_gbps).into(),
            ],
            [
                "input, 1 GiB into a `linger invoke` process (vs a plain pipe)".into(),
                format!("{input_gbps:.2} GB/s"),
                format!("{input_floor_gbps:.2} GB/s"),
                format!("{:.2}x", input_floor_gbps / input_gbps),
                String::new(),
                String::new(),
            ],
            [
                "receive after reconnect, 100 MB spooled (vs `cat` of cached file)".into(),
                format!("{spool_gbps:.2} GB/s"),
                format!("{cat_gbps:.2} GB/s"),
                format!("{:.2}x", cat_gbps / spool_gbps),
                format!(">= {TARGET_RECONNECT_GBPS} GB/s"),
                met(spool_gbps >= TARGET_RECONNECT_GBPS).into(),
            ],
            [
                "receive after reconnect, 100 MB in memory (vs `cat` of cached file)".into(),
                format!("{memory_gbps:.2} GB/s"),
                format!("{cat_gbps:.2} GB/s"),
                format!("{:.2}x", cat_gbps / memory_gbps),
                format!(">= {TARGET_RECONNECT_GBPS} GB/s"),
                met(memory_gbps >= TARGET_RECONNECT_GBPS).into(),
            ],
            [
                "receive after reconnect, 100 MB in memory (vs unix socket read)".into(),
                format!("{memory_gbps:.2} GB/s"),
                format!("{socket_gbps:.2} GB/s"),
                format!("{:.2}x", socket_gbps / memory_gbps),
                String::new(),
                String::new(),
            ],
        ];
        let header = [
            "measurement",
            "linger",
            "floor",
            "ratio",
            "target",
            "target met",
        ];
        print_table(&header, &rows);
        println!();
        println!("GB/s = 10^9 bytes per second. Throughput: one run each, wall time from invoke");
        println!(
            "(or spawn) to the last byte and the exit status. Receive after reconnect: median of"
        );
        println!("{RECONNECT_RUNS} runs, each a fresh session whose detached command left {RECONNECT_BYTES} bytes;");
        println!(
            "wall time from a second client's receive call to the end of its stream (every byte"
        );
        println!("counted, nothing dropped). Its floors: median of {RECONNECT_RUNS} reads of the same size.");
        println!(
            "Input: median of {INPUT_RUNS} runs, from spawn to exit of the process whose stdin"
        );
        println!("the benchmark fills (the whole `linger invoke` CLI, or bash running `cat`).");
        println!("get_remote: the second client's first call (connect and handshake included);");
        println!(
            "detached run: from the detached invoke until the session reported all output kept."
        );
    }
}
