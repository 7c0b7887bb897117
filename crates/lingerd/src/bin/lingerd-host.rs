//! `lingerd-host`: one session's host process, started by lingerd (never by hand), which
//! sends it the session's specification on stdin. A binary of its own, far smaller than
//! lingerd, because every session runs one: each copy of an executable keeps its relocated
//! data privately, and that grows with the executable (hundreds of KiB for lingerd's TLS,
//! ssh-key and configuration code, which a host never runs). With `--spawner` it is the
//! daemon's spawner instead (`lingerd::spawn`), which starts the hosts.

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == "--spawner") {
        lingerd::spawner_main();
    }
    linger_host::logging::tune_allocator();
    linger_host::host_process()
}
