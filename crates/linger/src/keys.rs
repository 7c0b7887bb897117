//! The user's SSH keys, for the TLS transport (SPEC §1): `--identity FILE` (option
//! `identity_file`), else the keys in ssh-agent, then the default key files
//! `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`. Keys never leave this module; what comes out
//! is a signature.

use std::path::{Path, PathBuf};

use ssh_key::{HashAlg, PrivateKey, PublicKey, SshSig};

use crate::error::{Error, Result};

/// Default key files, in ssh's order of preference.
const DEFAULT_FILES: &[&str] = &["id_ed25519", "id_ecdsa", "id_rsa"];

/// One key the client can sign with.
pub enum Signer {
    /// A private key read from a file (unencrypted).
    File { path: PathBuf, key: Box<PrivateKey> },
    /// A key held by the ssh-agent listening on `socket`.
    Agent { socket: PathBuf, key: PublicKey },
}

impl Signer {
    pub fn public_key(&self) -> &PublicKey {
        match self {
            Signer::File { key, .. } => key.public_key(),
            Signer::Agent { key, .. } => key,
        }
    }

    /// Where the key comes from, for messages.
    pub fn describe(&self) -> String {
        match self {
            Signer::File { path, .. } => path.display().to_string(),
            Signer::Agent { key, .. } => {
                format!("ssh-agent key {}", key.fingerprint(HashAlg::Sha256))
            }
        }
    }

    /// An SshSig over `msg` in `namespace`, PEM-armoured. Blocking (agent I/O).
    pub fn sign(&self, namespace: &str, msg: &[u8]) -> Result<String> {
        let sig = match self {
            Signer::File { path, key } => {
                let failed = |e: &dyn std::fmt::Display| {
                    Error::Auth(format!("cannot sign with {}: {e}", path.display()))
                };
                match key.key_data().rsa() {
                    // ssh-key 0.6 rebuilds an RSA key with its first prime twice, which the
                    // rsa crate rightly refuses: sign RSA keys here, from their own parts.
                    Some(rsa_key) => {
                        let data = SshSig::signed_data(namespace, HashAlg::Sha512, msg)
                            .map_err(|e| failed(&e))?;
                        let signature = rsa_sign(rsa_key, &data).map_err(|e| failed(&e))?;
                        SshSig::new(
                            key.public_key().key_data().clone(),
                            namespace,
                            HashAlg::Sha512,
                            signature,
                        )
                        .map_err(|e| failed(&e))?
                    }
                    None => key
                        .sign(namespace, HashAlg::Sha512, msg)
                        .map_err(|e| failed(&e))?,
                }
            }
            Signer::Agent { socket, key } => {
                // The agent signs SshSig's "signed data" blob, as `ssh-keygen -Y sign` does
                // with an agent key.
                let data = SshSig::signed_data(namespace, HashAlg::Sha512, msg)
                    .map_err(|e| Error::Auth(format!("cannot prepare a signature: {e}")))?;
                let mut agent = ssh_agent_client_rs::Client::connect(socket)
                    .map_err(|e| Error::Auth(format!("cannot reach ssh-agent: {e}")))?;
                let signature = agent.sign(key.clone(), &data).map_err(|e| {
                    Error::Auth(format!(
                        "ssh-agent would not sign with {}: {e}",
                        self.describe()
                    ))
                })?;
                SshSig::new(
                    key.key_data().clone(),
                    namespace,
                    HashAlg::Sha512,
                    signature,
                )
                .map_err(|e| Error::Auth(format!("ssh-agent's signature is unusable: {e}")))?
            }
        };
        sig.to_pem(ssh_key::LineEnding::LF)
            .map_err(|e| Error::Auth(format!("cannot encode a signature: {e}")))
    }
}

/// The keys to offer, in order. Blocking (reads files, asks the agent).
pub fn signers(identity_file: Option<&Path>) -> Result<Vec<Signer>> {
    if let Some(path) = identity_file.filter(|p| !p.exists()) {
        return Err(Error::Usage(format!(
            "--identity {}: no such file (name a private key made by ssh-keygen)",
            path.display()
        )));
    }
    let agent = agent_keys();
    if let Some(path) = identity_file {
        return Ok(vec![from_file(path, &agent)?.ok_or_else(|| {
            Error::Auth(format!(
                "{} is protected by a passphrase and ssh-agent does not hold it (add it with `ssh-add {}`)",
                path.display(),
                path.display()
            ))
        })?]);
    }
    let mut signers: Vec<Signer> = agent
        .as_ref()
        .map(|(socket, keys)| {
            keys.iter()
                .map(|k| Signer::Agent {
                    socket: socket.clone(),
                    key: k.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let ssh_dir = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".ssh");
    for name in DEFAULT_FILES {
        let path = ssh_dir.join(name);
        if !path.exists() {
            continue;
        }
        match from_file(&path, &agent) {
            Ok(Some(s)) => {
                let offered = signers
                    .iter()
                    .any(|o| o.public_key().key_data() == s.public_key().key_data());
                if !offered {
                    signers.push(s);
                }
            }
            // Encrypted and not in the agent, or unreadable: ssh skips it too.
            Ok(None) => tracing::debug!("skipping {}: it needs a passphrase", path.display()),
            Err(e) => tracing::debug!("skipping {}: {e}", path.display()),
        }
    }
    if signers.is_empty() {
        return Err(Error::Auth(
            "no SSH key to authenticate with: ssh-agent holds none and there is no usable ~/.ssh/id_ed25519, id_ecdsa or id_rsa".into(),
        ));
    }
    Ok(signers)
}

/// The agent's socket and keys, if an agent answers.
fn agent_keys() -> Option<(PathBuf, Vec<PublicKey>)> {
    let socket = PathBuf::from(std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty())?);
    let mut agent = ssh_agent_client_rs::Client::connect(&socket)
        .map_err(|e| tracing::debug!("ssh-agent at {}: {e}", socket.display()))
        .ok()?;
    // Certificates are not offered: the server checks plain keys only.
    let keys = agent
        .list_all_identities()
        .map_err(|e| tracing::debug!("ssh-agent would not list its keys: {e}"))
        .ok()?
        .into_iter()
        .filter_map(|i| match i {
            ssh_agent_client_rs::Identity::PublicKey(k) => Some(k.into_owned()),
            ssh_agent_client_rs::Identity::Certificate(_) => None,
        })
        .collect();
    Some((socket, keys))
}

/// A signer for the key in `path`: the file itself, or the agent when the file is
/// encrypted and the agent holds its key. `None`: encrypted, and not in the agent.
fn from_file(path: &Path, agent: &Option<(PathBuf, Vec<PublicKey>)>) -> Result<Option<Signer>> {
    use std::os::unix::fs::PermissionsExt;
    // As ssh: a private key others may read is not one to use.
    let mode = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("cannot read the key {}", path.display()), e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::Auth(format!(
            "the private key {} has mode {:o}, open to others; make it private (chmod 600)",
            path.display(),
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("cannot read the key {}", path.display()), e))?;
    let key = PrivateKey::from_openssh(&text).map_err(|e| {
        Error::Auth(format!(
            "{} is not an OpenSSH private key ({e}); keys from `ssh-keygen` are",
            path.display()
        ))
    })?;
    if !key.is_encrypted() {
        return Ok(Some(Signer::File {
            path: path.to_path_buf(),
            key: Box::new(key),
        }));
    }
    let held = agent.as_ref().and_then(|(socket, keys)| {
        keys.iter()
            .find(|k| k.key_data() == key.public_key().key_data())
            .map(|k| Signer::Agent {
                socket: socket.clone(),
                key: k.clone(),
            })
    });
    Ok(held)
}

/// An rsa-sha2-512 signature of `data` by `key`.
fn rsa_sign(
    key: &ssh_key::private::RsaKeypair,
    data: &[u8],
) -> std::result::Result<ssh_key::Signature, String> {
    use rsa::signature::{SignatureEncoding, Signer as _};
    let int = |m: &ssh_key::Mpint| {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .ok_or_else(|| "the key has a negative component".to_string())
    };
    let private = rsa::RsaPrivateKey::from_components(
        int(&key.public.n)?,
        int(&key.public.e)?,
        int(&key.private.d)?,
        vec![int(&key.private.p)?, int(&key.private.q)?],
    )
    .map_err(|e| e.to_string())?;
    let signed = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha512>::new(private)
        .try_sign(data)
        .map_err(|e| e.to_string())?;
    ssh_key::Signature::new(
        ssh_key::Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        signed.to_vec(),
    )
    .map_err(|e| e.to_string())
}
