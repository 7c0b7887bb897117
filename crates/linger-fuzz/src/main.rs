//! `linger-fuzz [--seconds N] [--seed S]`: fuzzes the frame decoder and the daemon's
//! handshake for N seconds (default 60), prints what it ran and found, and saves failing
//! inputs under `fuzz-crashes/`. Exit code 1 if anything failed.

use std::time::{Duration, Instant};

fn main() {
    let mut seconds = 60u64;
    let mut seed = 0x5eed_u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), value) {
            ("--seconds", Some(v)) => seconds = v,
            ("--seed", Some(v)) => seed = v,
            _ => {
                eprintln!("linger-fuzz: error: usage: linger-fuzz [--seconds N] [--seed S]");
                std::process::exit(2);
            }
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("linger-fuzz: error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        let daemon = match linger_fuzz::DaemonUnderTest::start().await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("linger-fuzz: error: cannot start a daemon to fuzz: {e}");
                return 1;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let (mut decode, mut handshake, mut crashes) = (0u64, 0u64, Vec::new());
        let mut round = 0u64;
        while Instant::now() < deadline {
            let found = linger_fuzz::run(seed.wrapping_add(round), 10_000, 50, &daemon).await;
            decode += found.decode_runs;
            handshake += found.handshake_runs;
            crashes.extend(found.crashes);
            round += 1;
        }
        println!(
            "linger-fuzz: {seconds} s, seed {seed}: {decode} decode inputs, {handshake} handshakes, {} failures",
            crashes.len()
        );
        for (target, input) in &crashes {
            match linger_fuzz::save(std::path::Path::new("fuzz-crashes"), target, input) {
                Ok(p) => println!("  {target}: saved {}", p.display()),
                Err(e) => println!("  {target}: could not save the input: {e}"),
            }
        }
        i32::from(!crashes.is_empty())
    });
    std::process::exit(code);
}
