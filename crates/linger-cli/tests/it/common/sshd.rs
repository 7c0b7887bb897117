//! A private OpenSSH server on a free loopback port, with its own host key and one
//! authorized client key, for the ssh transport's tests and benchmark; killed (by pid) when
//! dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

/// A private sshd on a free loopback port, with its own host key and one authorized client
/// key; killed (by pid) when dropped.
pub struct Sshd {
    child: Child,
    pub port: u16,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a helper program");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Sshd {
    pub fn start(dir: &Path) -> Sshd {
        Sshd::start_with(dir, "127.0.0.1", "")
    }

    /// Like `start`, but listening on `listen` (an IPv4 address: `0.0.0.0` makes every
    /// loopback address 127.0.0.N reach it) and with `extra` appended to its sshd_config
    /// (whole lines; sshd keeps the first value of a keyword, so these cannot change the
    /// fixture's own settings, only add to them).
    pub fn start_with(dir: &Path, listen: &str, extra: &str) -> Sshd {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} is missing: install Debian's openssh-server (.ci/run does)"
        );
        // Privilege separation wants this directory (it exists when sshd is installed as a
        // service; a container may lack it).
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir).expect("sshd dir");
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        for key in [&host_key, &client_key] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(key));
        }
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).expect("authorized_keys");
        let port = TcpListener::bind((listen, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress {listen}\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nUsePAM no\nStrictModes no\nPermitRootLogin yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n{extra}",
                host_key.display(),
                authorized.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .expect("sshd_config");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).expect("sshd log"))
            .spawn()
            .expect("start sshd");
        let reach = if listen == "0.0.0.0" {
            "127.0.0.1"
        } else {
            listen
        };
        let started = Instant::now();
        while std::net::TcpStream::connect((reach, port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "sshd did not listen; see {}",
                dir.join("sshd.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd {
            child,
            port,
            client_key,
            known_hosts: dir.join("known_hosts"),
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The current user's name (sshd logs in as them).
pub fn user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("the current user's name")
}

/// `ssh` with the flags that reach this server with its key and nothing else of the user's.
pub fn ssh_command(sshd: &Sshd) -> String {
    format!(
        "ssh -F /dev/null -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=accept-new -o BatchMode=yes -o LogLevel=ERROR",
        sshd.client_key.display(),
        sshd.known_hosts.display()
    )
}
