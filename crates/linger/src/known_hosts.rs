//! Pinning of TLS servers' identities (SPEC §1): `known_hosts` in the client's config
//! directory, in OpenSSH's format (`host ssh-ed25519 KEY`, or `[host]:port` for another
//! port than 5990), checked as option `host_key_checking` says: `ask`, `accept-new` or
//! `strict`. A changed identity is always refused, with both fingerprints.

use std::io::Write;
use std::path::{Path, PathBuf};

use linger_proto::auth::DEFAULT_TLS_PORT;
use ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use ssh_key::{HashAlg, PublicKey};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checking {
    /// Ask on the terminal about an unknown identity (the default on a terminal).
    Ask,
    /// Pin an unknown identity silently; refuse a changed one.
    AcceptNew,
    /// Refuse an unknown identity (the default without a terminal).
    Strict,
}

impl Checking {
    /// The option's value, or its default for this process.
    pub fn from_option(value: Option<&str>) -> Checking {
        match value {
            Some("accept-new") => Checking::AcceptNew,
            Some("strict") => Checking::Strict,
            Some(_) => Checking::Ask,
            None if on_terminal() => Checking::Ask,
            None => Checking::Strict,
        }
    }
}

fn on_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The name a host's key is filed under, as ssh writes it.
pub fn host_pattern(host: &str, port: u16) -> String {
    if port == DEFAULT_TLS_PORT {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// What the file says of a host.
enum Known {
    Same,
    Other {
        line: usize,
        key: PublicKey,
    },
    /// An `@revoked` line lists the presented key for this host.
    Revoked {
        line: usize,
    },
    Unknown,
}

/// Whether a known_hosts line's host field names `pattern` (`host` or `[host]:port`): a
/// hashed name (`|1|salt|hash`, HMAC-SHA1 as ssh writes it with HashKnownHosts), or a comma
/// list of patterns with `*`/`?` wildcards and `!` negations.
fn names(hosts: &HostPatterns, pattern: &str) -> bool {
    match hosts {
        HostPatterns::HashedName { salt, hash } => {
            use hmac::Mac;
            let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(pattern.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut named = false;
            for p in list {
                match p.strip_prefix('!') {
                    Some(negated) if linger_proto::text::wildcard(negated, pattern) => {
                        return false
                    }
                    Some(_) => {}
                    None => named |= linger_proto::text::wildcard(p, pattern),
                }
            }
            named
        }
    }
}

fn lookup(file: &Path, pattern: &str, presented: &PublicKey) -> Known {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Known::Unknown;
    };
    let mut other = None;
    let mut same = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Lines this parser does not read are skipped, as ssh skips them.
        let Ok(entry) = line.parse::<Entry>() else {
            continue;
        };
        if !names(entry.host_patterns(), pattern) {
            continue;
        }
        let matches = entry.public_key().key_data() == presented.key_data();
        match entry.marker() {
            // A revoked key is refused wherever else it is pinned.
            Some(Marker::Revoked) if matches => return Known::Revoked { line: n + 1 },
            Some(_) => {}
            None if matches => same = true,
            None => {
                other.get_or_insert(Known::Other {
                    line: n + 1,
                    key: entry.public_key().clone(),
                });
            }
        }
    }
    if same {
        return Known::Same;
    }
    other.unwrap_or(Known::Unknown)
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// The key was pinned already.
    Known,
    /// The key was new and is now pinned; `message` tells the user so, as ssh does.
    Pinned { message: String },
}

/// Checks `presented` against the pins in `file` for `host:port`, pinning it if `checking`
/// allows. Blocking (may ask on the terminal).
pub fn verify(
    file: &Path,
    host: &str,
    port: u16,
    presented: &PublicKey,
    checking: Checking,
) -> Result<Verified> {
    let pattern = host_pattern(host, port);
    let fingerprint = presented.fingerprint(HashAlg::Sha256);
    match lookup(file, &pattern, presented) {
        Known::Same => Ok(Verified::Known),
        Known::Revoked { line } => Err(Error::HostKey {
            message: format!(
                "the key {pattern} presents ({fingerprint}) is revoked ({}:{line} marks it @revoked)",
                file.display()
            ),
            hint: "do not use this server until its owner replaces its identity".into(),
        }),
        Known::Other { line, key } => Err(Error::HostKey {
            message: format!(
                "the identity of {pattern} has changed: {}:{line} pins {} but the server presents {fingerprint}",
                file.display(),
                key.fingerprint(HashAlg::Sha256)
            ),
            hint: format!(
                "someone may be intercepting the connection; if the server's key was replaced on purpose, delete line {line} of {}",
                file.display()
            ),
        }),
        Known::Unknown => {
            let accept = match checking {
                Checking::AcceptNew => true,
                Checking::Strict => false,
                Checking::Ask => ask(&pattern, &fingerprint.to_string())?,
            };
            if !accept {
                return Err(Error::HostKey {
                    message: format!(
                        "the identity of {pattern} is not known ({fingerprint}) and host_key_checking is {}",
                        if checking == Checking::Strict { "strict" } else { "ask" }
                    ),
                    hint: format!(
                        "compare the fingerprint with `ssh-keygen -lf STATE_DIR/identity/host_ed25519.pub` on the server, then add `{pattern} {}` to {} or connect once with host_key_checking = \"accept-new\"",
                        presented.to_openssh().unwrap_or_default(),
                        file.display()
                    ),
                });
            }
            pin(file, &pattern, presented)?;
            Ok(Verified::Pinned {
                message: format!(
                    "Permanently added '{pattern}' ({}, {fingerprint}) to the known hosts in {}",
                    presented.algorithm(),
                    file.display()
                ),
            })
        }
    }
}

/// Asks on the controlling terminal, as ssh does.
fn ask(pattern: &str, fingerprint: &str) -> Result<bool> {
    let tty = || -> std::io::Result<String> {
        let mut tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")?;
        write!(
            tty,
            "The authenticity of linger server '{pattern}' can't be established.\n\
             ED25519 key fingerprint is {fingerprint}.\n\
             Are you sure you want to continue connecting (yes/no)? "
        )?;
        let mut answer = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(tty), &mut answer)?;
        Ok(answer)
    };
    match tty() {
        Ok(answer) => Ok(answer.trim().eq_ignore_ascii_case("yes")),
        Err(e) => Err(Error::HostKey {
            message: format!("the identity of {pattern} is not known ({fingerprint}) and there is no terminal to ask ({e})"),
            hint: "set host_key_checking = \"accept-new\" in options.toml to pin it on first use".into(),
        }),
    }
}

fn pin(file: &Path, pattern: &str, key: &PublicKey) -> Result<()> {
    let line = key
        .to_openssh()
        .map_err(|e| Error::State(format!("cannot encode a host key: {e}")))?;
    let io = |e| {
        Error::io(
            format!("cannot record the server's identity in {}", file.display()),
            e,
        )
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(file)
            .map_err(io)?
    };
    // One write: concurrent first connections to several hosts append whole lines.
    f.write_all(format!("{pattern} {line}\n").as_bytes())
        .map_err(io)?;
    tracing::info!("pinned the identity of {pattern} in {}", file.display());
    Ok(())
}

/// The known_hosts file of a client whose config directory is `config_dir`.
pub fn file_in(config_dir: &Path) -> PathBuf {
    config_dir.join("known_hosts")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> PublicKey {
        PublicKey::new(
            ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey([byte; 32])),
            "",
        )
    }

    #[test]
    fn pins_then_accepts_then_refuses_a_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("known_hosts");
        let err = verify(&file, "web", 5990, &key(1), Checking::Strict).expect_err("unknown");
        assert!(err.to_string().contains("is not known"), "{err}");
        verify(&file, "web", 5990, &key(1), Checking::AcceptNew).expect("pinned");
        verify(&file, "web", 7000, &key(2), Checking::AcceptNew).expect("other port");
        verify(&file, "web", 5990, &key(1), Checking::Strict).expect("known");
        let err = verify(&file, "web", 5990, &key(2), Checking::AcceptNew).expect_err("changed");
        let text = err.to_string();
        assert!(text.contains("has changed"), "{text}");
        assert!(text.contains(&key(1).fingerprint(HashAlg::Sha256).to_string()));
        assert!(text.contains(&key(2).fingerprint(HashAlg::Sha256).to_string()));
        let pins = std::fs::read_to_string(&file).expect("file");
        assert!(pins.starts_with("web ssh-ed25519 "), "{pins}");
        assert!(pins.contains("\n[web]:7000 ssh-ed25519 "), "{pins}");
    }

    fn line(hosts: &str, marker: &str, k: &PublicKey) -> String {
        format!("{marker}{hosts} {}\n", k.to_openssh().expect("openssh"))
    }

    #[test]
    fn revoked_hashed_and_wildcard_lines_are_read_as_ssh_reads_them() {
        use hmac::Mac;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("known_hosts");
        // A hashed name, as `ssh-keygen -H` writes it.
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).expect("hmac");
        mac.update(b"[db]:7000");
        let hash: [u8; 20] = mac.finalize().into_bytes().into();
        let hashed = HostPatterns::HashedName {
            salt: salt.to_vec(),
            hash,
        }
        .to_string();
        let text = [
            line(&hashed, "", &key(3)),
            line("*.example,!bad.example", "", &key(4)),
            line("*", "@revoked ", &key(5)),
            line("old.example", "", &key(5)),
        ]
        .concat();
        std::fs::write(&file, text).expect("write");
        verify(&file, "db", 7000, &key(3), Checking::Strict).expect("the hashed pin");
        assert!(verify(&file, "db", 7000, &key(6), Checking::Strict)
            .expect_err("another key for a hashed pin")
            .to_string()
            .contains("has changed"));
        verify(&file, "web.example", 5990, &key(4), Checking::Strict).expect("wildcard");
        assert!(verify(&file, "bad.example", 5990, &key(4), Checking::Strict).is_err());
        let err = verify(&file, "old.example", 5990, &key(5), Checking::AcceptNew)
            .expect_err("revoked, though pinned");
        assert!(err.to_string().contains("is revoked"), "{err}");
    }
}
