//! Authentication of TLS clients (SPEC §1, §12): a signature by an SSH key listed in
//! `[server] authorized_keys` (a system daemon also reads the user's own
//! `~/.ssh/authorized_keys`), bound to the TLS connection. Failures are answered alike,
//! whatever went wrong, and each one from the same address waits longer than the last.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use linger_proto::auth::{signed_message, BINDING_LEN, MAX_AUTH_TRIES, SIGNATURE_NAMESPACE};
use linger_proto::client::{Authenticate, ClientMsg};
use linger_proto::frame::{FrameReader, FrameWriter};
use linger_proto::server::ServerMsg;
use linger_proto::types::{ErrorBody, ErrorKind};
use ssh_key::{HashAlg, PublicKey, SshSig};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::Peer;
use crate::Daemon;

/// What every failed attempt is told: nothing about why.
const FAILED: &str = "authentication failed";
/// The first failure from an address waits this long before it is answered; each further
/// one twice as long, up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// An address's failures are forgotten after this long without one.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// The most an address's failures with other keys add to an attempt's wait: someone
/// sharing a client's address (NAT) can slow its logins this much, not lock it out.
const MAX_ADDRESS_DELAY: Duration = Duration::from_secs(1);
/// Longest principal name accepted from a `principal="…"` option.
const MAX_PRINCIPAL_LEN: usize = 64;
/// How long one attempt's checks (a user lookup, key files) may take off the runtime: a
/// hung name service or file system fails the attempt instead of holding the connection.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS facts an authentication is bound to.
pub struct TlsPeer {
    pub addr: SocketAddr,
    pub channel_binding: [u8; BINDING_LEN],
    pub certificate_sha256: [u8; BINDING_LEN],
}

/// Failed attempts per source address and key, to slow down guessing: each (address, key)
/// waits longer with each failure, up to [`MAX_DELAY`]; an address's failures with any key
/// add at most [`MAX_ADDRESS_DELAY`].
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<Counted, (u32, Instant)>>,
}

/// What a failure count is kept for: an address with one key, or the address (`None`).
type Counted = (IpAddr, Option<String>);

/// Which key an attempt offered, for the throttle: its base64 part, bounded.
pub fn key_id(public_key: &str) -> String {
    public_key
        .split_whitespace()
        .nth(1)
        .unwrap_or(public_key)
        .chars()
        .take(128)
        .collect()
}

fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

impl Throttle {
    /// Records a failure from `ip` with key `key` and says how long to wait before
    /// answering it.
    pub fn failed(&self, ip: IpAddr, key: &str) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        let mut count = |k: Counted| {
            let entry = map.entry(k).or_insert((0, now));
            entry.0 = entry.0.saturating_add(1);
            entry.1 = now;
            entry.0
        };
        let with_key = count((ip, Some(key.to_string())));
        let from_address = count((ip, None));
        backoff(with_key).max(backoff(from_address).min(MAX_ADDRESS_DELAY))
    }

    pub fn succeeded(&self, ip: IpAddr, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&(ip, Some(key.to_string())));
        map.remove(&(ip, None));
    }
}

/// Why one attempt failed. For the server's log and audit only, never for the client.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the user name asked for is not a valid name")]
    BadUser,
    #[error("the public key does not parse: {0}")]
    BadKey(ssh_key::Error),
    #[error("the signature does not parse: {0}")]
    BadSignature(ssh_key::Error),
    #[error("key {0} is not authorized")]
    NotAuthorized(String),
    #[error("key {0} is listed but refused: {1}")]
    KeyOptions(String, String),
    #[error("account {0} may not log in: {1}")]
    Account(String, String),
    #[error("key {0}: the signature does not verify ({1})")]
    WrongSignature(String, ssh_key::Error),
    #[error("the checks took longer than {0:?}")]
    TimedOut(Duration),
}

/// Runs the challenge exchange after `Hello` on a TLS connection. Returns who the client
/// is, or `None` once the connection has been refused (and told so).
pub async fn authenticate<R, W>(
    daemon: &std::sync::Arc<Daemon>,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    tls: &TlsPeer,
) -> Option<Peer>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut nonce = [0u8; BINDING_LEN];
    if rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut nonce)
        .is_err()
    {
        tracing::error!("no randomness for an authentication nonce");
        return None;
    }
    let challenge = ServerMsg::Challenge {
        nonce: Bytes::copy_from_slice(&nonce),
    };
    writer.write(&challenge).await.ok()?;
    let from = format!("{} port {}", tls.addr.ip(), tls.addr.port());
    for attempt in 1..=MAX_AUTH_TRIES {
        let auth = match reader.read::<ClientMsg>().await {
            Ok(Some(ClientMsg::Authenticate(a))) => a,
            Ok(None) => return None,
            Ok(Some(_)) => {
                goodbye(writer, ErrorKind::Protocol, "expected Authenticate").await;
                return None;
            }
            Err(e) => {
                let why = crate::untrusted::shown(&e.to_string());
                tracing::warn!(%from, "closing connection during authentication: {why}");
                goodbye(writer, ErrorKind::Protocol, &why).await;
                return None;
            }
        };
        let message = signed_message(
            &nonce,
            &tls.channel_binding,
            &tls.certificate_sha256,
            &auth.user,
        );
        // User lookups and key files may block (a name service, a slow disk, a planted
        // FIFO): never on the runtime, and never for long.
        let checked = {
            let (daemon, auth) = (daemon.clone(), auth.clone());
            let ip = tls.addr.ip();
            let work = tokio::task::spawn_blocking(move || check(&daemon, &auth, &message, ip));
            match tokio::time::timeout(CHECK_TIMEOUT, work).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) | Err(_) => Err(Refusal::TimedOut(CHECK_TIMEOUT)),
            }
        };
        match checked {
            Ok((login, fingerprint)) => {
                daemon
                    .auth_throttle
                    .succeeded(tls.addr.ip(), &key_id(&auth.public_key));
                let peer = Peer {
                    principal: login.principal,
                    from: format!("{from} (key {fingerprint})"),
                    no_pty: login.no_pty,
                };
                daemon.audit.record(
                    &peer,
                    "login",
                    uuid::Uuid::nil(),
                    "",
                    serde_json::json!({ "user": auth.user, "key": fingerprint }),
                );
                return Some(peer);
            }
            Err(why) => {
                let delay = daemon
                    .auth_throttle
                    .failed(tls.addr.ip(), &key_id(&auth.public_key));
                let user = crate::untrusted::shown(&auth.user);
                tracing::warn!(%from, %user, attempt, "authentication failed: {why}");
                daemon.audit.record_failure(
                    &from,
                    serde_json::json!({
                        "user": user,
                        "reason": why.to_string(),
                        "delay_ms": linger_proto::duration::millis(delay),
                    }),
                );
                tokio::time::sleep(delay).await;
                let tries_left = MAX_AUTH_TRIES - attempt;
                if tries_left == 0 {
                    break;
                }
                let msg = ServerMsg::AuthFailed {
                    message: FAILED.into(),
                    tries_left,
                };
                writer.write(&msg).await.ok()?;
            }
        }
    }
    goodbye(writer, ErrorKind::Auth, FAILED).await;
    None
}

async fn goodbye<W: AsyncWrite + Unpin>(writer: &mut FrameWriter<W>, kind: ErrorKind, msg: &str) {
    let _ = writer
        .write(&ServerMsg::Goodbye {
            error: ErrorBody::new(kind, msg),
        })
        .await;
}

/// Checks one attempt: the key is authorized (and as whom), the signature is the key's over
/// `message`. Returns the login (principal and what the key's options allow) and the key's
/// fingerprint.
fn check(
    daemon: &Daemon,
    auth: &Authenticate,
    message: &[u8],
    peer: IpAddr,
) -> Result<(Login, String), Refusal> {
    // Before anything is looked up with it.
    if !valid_user(&auth.user) {
        return Err(Refusal::BadUser);
    }
    let key = PublicKey::from_openssh(&auth.public_key).map_err(Refusal::BadKey)?;
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let signature = SshSig::from_pem(&auth.signature).map_err(Refusal::BadSignature)?;
    let login = authorized_as(daemon, &key, &auth.user, peer, &fingerprint)?;
    let principal = &login.principal;
    key.verify(SIGNATURE_NAMESPACE, message, &signature)
        .map_err(|e| Refusal::WrongSignature(fingerprint.clone(), e))?;
    if daemon.system {
        // The principal is a Unix user the session will run as: as sshd, not one that may
        // not log in.
        crate::account::usable(principal)
            .map_err(|why| Refusal::Account(principal.clone(), why))?;
    }
    Ok((login, fingerprint))
}

/// Whom an accepted key acts as, and whether its options deny commands a terminal.
struct Login {
    principal: String,
    no_pty: bool,
}

/// Whom `key` may act as, given that the client asked to be `user`.
///
/// `[server] authorized_keys`: a line with `principal="NAME"` acts as NAME. Without one, a
/// per-user daemon takes it as its own user; a system daemon ignores it (it would be root).
/// A system daemon also accepts keys from `user`'s own `~/.ssh/authorized_keys`, as `user`.
fn authorized_as(
    daemon: &Daemon,
    key: &PublicKey,
    user: &str,
    peer: IpAddr,
    fingerprint: &str,
) -> Result<Login, Refusal> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(linger_proto::duration::secs_i64)
        .unwrap_or(0);
    // As sshd: a line whose options refuse this login does not end the search; the reason
    // of the last one is what the log gets if no line admits it.
    let mut refused: Option<String> = None;
    let judge = |opts: &str, refused: &mut Option<String>| match crate::keyopts::judge(
        opts,
        peer,
        now,
        &crate::keyopts::local_offset,
    ) {
        Ok(granted) => Some(granted),
        Err(why) => {
            *refused = Some(why);
            None
        }
    };
    if let Some(path) = &daemon.config().server.authorized_keys {
        // The administrator's file: the daemon's user's (or root's) alone.
        let own = nix::unistd::geteuid().as_raw();
        for (opts, _) in matching_entries(path, key, own, None) {
            let Some(granted) = judge(&opts, &mut refused) else {
                continue;
            };
            let no_pty = granted.no_pty;
            match granted.principal {
                Some(name) if valid_principal(&name) => {
                    return Ok(Login {
                        principal: name,
                        no_pty,
                    })
                }
                Some(bad) => {
                    tracing::warn!(path = %path.display(), "ignoring a key with an invalid principal {bad:?}")
                }
                None if daemon.system => tracing::warn!(
                    path = %path.display(),
                    "a system daemon ignores keys without principal=\"NAME\" in [server] authorized_keys"
                ),
                None => {
                    return Ok(Login {
                        principal: daemon.own_user.clone(),
                        no_pty,
                    })
                }
            }
        }
    }
    if daemon.system {
        if let Some(account) = nix::unistd::User::from_name(user).ok().flatten() {
            let path = account.dir.join(".ssh/authorized_keys");
            let uid = account.uid.as_raw();
            for (opts, _) in matching_entries(&path, key, uid, Some(&account.dir)) {
                match judge(&opts, &mut refused) {
                    // A user's own file cannot make the key act as someone else.
                    Some(g) if g.principal.as_ref().is_some_and(|p| p != user) => {
                        refused = Some("principal= in a user's own file".into())
                    }
                    Some(g) => {
                        return Ok(Login {
                            principal: user.to_string(),
                            no_pty: g.no_pty,
                        })
                    }
                    None => {}
                }
            }
        }
    }
    Err(match refused {
        Some(why) => Refusal::KeyOptions(fingerprint.to_string(), why),
        None => Refusal::NotAuthorized(fingerprint.to_string()),
    })
}

/// The entries of an authorized_keys file holding `key`, with their options. Lines that do
/// not parse are skipped (and logged), as sshd does.
fn matching_entries<'k>(
    path: &Path,
    key: &'k PublicKey,
    uid: u32,
    home: Option<&Path>,
) -> impl Iterator<Item = (String, PathBuf)> + 'k {
    let text = match crate::keyfile::read(path, uid, home) {
        Ok(t) => t,
        Err(e) => {
            if !e.is_missing() {
                tracing::warn!(path = %path.display(), "not reading authorized keys: {e}");
            }
            String::new()
        }
    };
    let path = path.to_path_buf();
    let found: Vec<(String, PathBuf)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        })
        .filter_map(|(n, line)| match line.trim().parse::<ssh_key::authorized_keys::Entry>() {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::warn!(path = %path.display(), line = n + 1, "skipping an authorized key that does not parse: {e}");
                None
            }
        })
        .filter(|entry| entry.public_key().key_data() == key.key_data())
        .map(|entry| (entry.config_opts().to_string(), path.clone()))
        .collect();
    found.into_iter()
}

/// A name a client may ask to act as: what a principal may be called (a Unix user name,
/// or a principal of `principal="…"`), at most `MAX_USER_LEN` bytes.
fn valid_user(name: &str) -> bool {
    valid_principal(name) && name.len() <= linger_proto::auth::MAX_USER_LEN
}

fn valid_principal(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PRINCIPAL_LEN
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_of_bounded_length_are_looked_up() {
        assert!(valid_user("alice"));
        assert!(valid_user("ops.team-1@example"));
        for bad in [
            "", "-oops", "a b", "a
b", "../x", "é",
        ] {
            assert!(!valid_user(bad), "{bad:?}");
        }
        assert!(!valid_user(&"u".repeat(2_500_000)));
        assert!(!valid_user(
            &"u".repeat(linger_proto::auth::MAX_USER_LEN + 1)
        ));
    }

    #[test]
    fn failures_wait_longer_each_time_up_to_a_ceiling() {
        let t = Throttle::default();
        let ip: IpAddr = [192, 0, 2, 1].into();
        let delays: Vec<Duration> = (0..10).map(|_| t.failed(ip, "k")).collect();
        assert_eq!(delays[0], FIRST_DELAY);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(delays[9], MAX_DELAY);
        t.succeeded(ip, "k");
        assert_eq!(t.failed(ip, "k"), FIRST_DELAY);
        assert_eq!(t.failed([192, 0, 2, 2].into(), "k"), FIRST_DELAY);
    }

    #[test]
    fn someone_sharing_the_address_cannot_lock_out_another_key() {
        let t = Throttle::default();
        let ip: IpAddr = [192, 0, 2, 9].into();
        for _ in 0..30 {
            t.failed(ip, "attacker");
        }
        assert_eq!(t.failed(ip, "attacker"), MAX_DELAY);
        // The victim's keys, one after another: each waits at most the address's share.
        let waits: Vec<Duration> = (0..6)
            .map(|i| t.failed(ip, &format!("victim{i}")))
            .collect();
        assert!(waits.iter().all(|&w| w <= MAX_ADDRESS_DELAY), "{waits:?}");
        assert_eq!(key_id("ssh-ed25519 AAAAblob comment"), "AAAAblob");
    }
}
