//! The TLS transport (SPEC §1): `host`, `host:port`, `[user@]host[:port]` or
//! `tls://[user@]host[:port]` — TCP, TLS 1.3, the server's identity checked against
//! known_hosts, then the SSH-key login bound to this TLS connection (docs/PROTOCOL.md §2.1).

use std::path::Path;
use std::sync::Arc;

use linger_proto::auth::{BINDING_LEN, CHANNEL_BINDING_LABEL, DEFAULT_TLS_PORT};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::known_hosts::{self, Checking};

/// Where a TLS computer points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsTarget {
    /// Who to log in as; the local user by default.
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
}

impl TlsTarget {
    /// Parses `[user@]host[:port]` (IPv6 addresses in brackets).
    pub fn parse(rest: &str, written: &str) -> Result<TlsTarget> {
        let bad = |why: &str| Error::Usage(format!("invalid computer '{written}': {why}"));
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some(_) => return Err(bad("the user before @ is empty")),
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ]"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(bad("expected [ADDR]:PORT")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(&format!("'{p}' is not a port number")))?,
            None => DEFAULT_TLS_PORT,
        };
        if host.is_empty()
            || host.starts_with('-')
            || host.chars().any(|c| c.is_whitespace() || c == '/')
        {
            return Err(bad("expected [tls://][user@]host[:port]"));
        }
        Ok(TlsTarget {
            user,
            host: host.to_string(),
            port,
        })
    }
}

/// A TLS connection whose server identity has been checked, with what the login signs.
pub struct Established {
    pub stream: tokio_rustls::client::TlsStream<TcpStream>,
    pub channel_binding: [u8; BINDING_LEN],
    pub certificate_sha256: [u8; BINDING_LEN],
    /// Whether the server's key was pinned just now (first use, `accept-new` or `ask`).
    pub verified: known_hosts::Verified,
}

/// Connects and checks the server's identity against `known_hosts`.
pub async fn connect(
    target: &TlsTarget,
    computer: &str,
    known_hosts: &Path,
    checking: Checking,
) -> Result<Established> {
    let unreachable = |reason: String| Error::Unreachable {
        computer: computer.to_string(),
        reason,
    };
    let addresses: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| Error::UnknownComputer {
                computer: computer.to_string(),
                reason: e.to_string(),
            })?
            .collect();
    let tcp = TcpStream::connect(&addresses[..])
        .await
        .map_err(|e| unreachable(format!("cannot connect to port {}: {e}", target.port)))?;
    let _ = tcp.set_nodelay(true);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| unreachable(format!("cannot prepare TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedLater { provider }))
        .with_no_client_auth();
    // Names are not checked (the key is pinned), but the handshake wants one.
    let name = ServerName::try_from(target.host.clone())
        .unwrap_or_else(|_| ServerName::try_from("lingerd").expect("a valid DNS name"));
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| unreachable(format!("TLS handshake failed: {e}")))?;
    let conn = stream.get_ref().1;
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| unreachable("the server presented no certificate".into()))?;
    let presented = identity_key(cert)
        .map_err(|why| unreachable(format!("its certificate is not a lingerd identity: {why}")))?;
    let certificate_sha256: [u8; BINDING_LEN] = Sha256::digest(cert.as_ref()).into();
    let mut channel_binding = [0u8; BINDING_LEN];
    conn.export_keying_material(&mut channel_binding, CHANNEL_BINDING_LABEL, None)
        .map_err(|e| unreachable(format!("no TLS channel binding: {e}")))?;
    let file = known_hosts.to_path_buf();
    let (host, port) = (target.host.clone(), target.port);
    let verified = tokio::task::spawn_blocking(move || {
        known_hosts::verify(&file, &host, port, &presented, checking)
    })
    .await
    .map_err(|e| Error::State(format!("host key check failed: {e}")))??;
    Ok(Established {
        stream,
        channel_binding,
        certificate_sha256,
        verified,
    })
}

/// The Ed25519 key a lingerd certificate carries, as an SSH public key.
fn identity_key(cert: &CertificateDer<'_>) -> std::result::Result<ssh_key::PublicKey, String> {
    /// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32 key bytes.
    const ED25519_SPKI: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
    let spki = parsed.subject_public_key_info();
    let raw = spki
        .as_ref()
        .strip_prefix(&ED25519_SPKI[..])
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or("its key is not Ed25519")?;
    Ok(ssh_key::PublicKey::new(
        ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey(raw)),
        "",
    ))
}

/// Accepts any certificate during the handshake but still checks the handshake signature
/// against it, so the server proves it holds the key; `connect` then checks that key
/// against known_hosts before anything is sent.
#[derive(Debug)]
struct PinnedLater {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedLater {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tls_computers() {
        let t = TlsTarget::parse("web01", "web01").expect("valid");
        assert_eq!((t.host.as_str(), t.port, t.user), ("web01", 5990, None));
        let t = TlsTarget::parse("ops@10.0.0.5:7000", "x").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", 7000));
        assert_eq!(t.user.as_deref(), Some("ops"));
        let t = TlsTarget::parse("[::1]:7000", "x").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("::1", 7000));
        assert!(TlsTarget::parse("web01:0", "x").is_err());
        assert!(TlsTarget::parse("web01:x", "x").is_err());
        assert!(TlsTarget::parse("-oops", "x").is_err());
        assert!(TlsTarget::parse("a b", "x").is_err());
    }
}
