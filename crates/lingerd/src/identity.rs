//! The server's TLS identity (SPEC §1): an Ed25519 key made at first start and kept in the
//! state directory. Clients pin the key, not the certificate, so the certificate is simply
//! made anew from the key at every start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the server identity {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the server identity {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the server identity {path} is not an Ed25519 key made by lingerd: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot prepare TLS: {0}")]
    Tls(String),
}

/// What the TLS listener presents, and what the authentication exchange binds to.
pub struct ServerIdentity {
    pub tls: Arc<rustls::ServerConfig>,
    /// SHA-256 of the certificate presented (part of every signed authentication message).
    pub certificate_sha256: [u8; 32],
    /// The key as ssh prints it: `SHA256:…`.
    pub fingerprint: String,
}

impl ServerIdentity {
    /// Loads `DIR/identity/host_ed25519.pem`, making it (and its `.pub`, in OpenSSH format)
    /// on first start.
    pub fn load_or_create(state_dir: &Path) -> Result<ServerIdentity, IdentityError> {
        let dir = state_dir.join("identity");
        let key_path = dir.join("host_ed25519.pem");
        let key = match std::fs::read_to_string(&key_path) {
            Ok(pem) => rcgen::KeyPair::from_pem(&pem).map_err(|e| IdentityError::Invalid {
                path: key_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(&dir, &key_path)?,
            Err(source) => {
                return Err(IdentityError::Read {
                    path: key_path,
                    source,
                })
            }
        };
        let public = ssh_public_key(&key).map_err(|reason| IdentityError::Invalid {
            path: key_path.clone(),
            reason,
        })?;
        let fingerprint = public.fingerprint(ssh_key::HashAlg::Sha256).to_string();
        let pub_path = dir.join("host_ed25519.pub");
        if !pub_path.exists() {
            if let Ok(line) = public.to_openssh() {
                let _ = std::fs::write(&pub_path, format!("{line}\n"));
            }
        }
        let params = rcgen::CertificateParams::new(vec!["lingerd".to_string()])
            .map_err(|e| IdentityError::Tls(e.to_string()))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| IdentityError::Tls(e.to_string()))?;
        let cert_der: CertificateDer<'static> = cert.der().clone();
        let certificate_sha256: [u8; 32] = Sha256::digest(cert_der.as_ref()).into();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| IdentityError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert_der],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(|e| IdentityError::Tls(e.to_string()))?;
        Ok(ServerIdentity {
            tls: Arc::new(tls),
            certificate_sha256,
            fingerprint,
        })
    }
}

fn create_key(dir: &Path, key_path: &Path) -> Result<rcgen::KeyPair, IdentityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write_err = |source| IdentityError::Write {
        path: key_path.to_path_buf(),
        source,
    };
    crate::paths::private_dir(dir).map_err(write_err)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| IdentityError::Tls(e.to_string()))?;
    // create_new: two daemons racing at first start must not overwrite each other's key
    // after one of them has been pinned (the instance lock makes this unlikely anyway).
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_path)
        .map_err(write_err)?;
    file.write_all(key.serialize_pem().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(write_err)?;
    tracing::info!(path = %key_path.display(), "made the server's TLS identity key");
    Ok(key)
}

/// The identity key as an OpenSSH public key (what clients pin in known_hosts).
fn ssh_public_key(key: &rcgen::KeyPair) -> Result<ssh_key::PublicKey, String> {
    if key.algorithm() != &rcgen::PKCS_ED25519 {
        return Err("not an Ed25519 key".into());
    }
    let raw: [u8; 32] = key
        .public_key_raw()
        .try_into()
        .map_err(|_| "an Ed25519 public key has 32 bytes".to_string())?;
    Ok(ssh_key::PublicKey::new(
        ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey(raw)),
        "lingerd",
    ))
}
