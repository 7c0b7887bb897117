//! The TLS login is bound to its TLS connection: a man in the middle who terminates the
//! client's TLS with its own identity (which a careless client accepted as new) and relays
//! every byte to the real server over a second TLS connection gets the client's signature
//! refused there, because the two connections' channel bindings differ.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The daemon under test, killed by pid when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygen(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let key = dir.join("id");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen (Debian's openssh-client)");
    assert!(out.status.success());
    let public = std::fs::read_to_string(dir.join("id.pub")).expect("pub");
    (key, public.trim().to_string())
}

fn start_daemon(dir: &std::path::Path, authorized: &str) -> (Daemon, String) {
    std::fs::create_dir_all(dir.join("config/linger")).expect("mkdir");
    std::fs::write(
        dir.join("authorized_keys"),
        format!("principal=\"ops\" {authorized}\n"),
    )
    .expect("authorized_keys");
    std::fs::write(
        dir.join("config/linger/lingerd.toml"),
        format!(
            "[server]\nauthorized_keys = {:?}\n",
            dir.join("authorized_keys").display().to_string()
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_lingerd"))
        .args(["--listen", "127.0.0.1:0"])
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .spawn()
        .expect("lingerd");
    let daemon = Daemon(child);
    let listening = dir.join("state/linger/server/listening");
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&listening) {
            if let Some(addr) = text.lines().next() {
                return (daemon, addr.to_string());
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "lingerd did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Accepts whatever the real server presents (the attacker does not care).
#[derive(Debug)]
struct Anything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Anything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A relaying man in the middle in front of `real`; returns its address.
async fn start_mitm(real: String) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["lingerd".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    let client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Anything(provider)))
        .with_no_client_auth();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, connector, real) = (acceptor.clone(), connector.clone(), real.clone());
            tokio::spawn(async move {
                let Ok(mut victim) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(upstream) = tokio::net::TcpStream::connect(&real).await else {
                    return;
                };
                let name = ServerName::try_from("lingerd").expect("name");
                let Ok(mut upstream) = connector.connect(name, upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut victim, &mut upstream).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_relayed_login_is_refused_by_the_real_server() {
    let dir = tempfile::tempdir_in("/tmp").expect("tmp");
    let (key, public) = keygen(dir.path());
    let (_daemon, real) = start_daemon(dir.path(), &public);
    let mitm = start_mitm(real.clone()).await;
    let home = dir.path().join("client");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::write(
        home.join("options.toml"),
        format!(
            "identity_file = {:?}\nhost_key_checking = \"accept-new\"\n",
            key.display().to_string()
        ),
    )
    .expect("options");
    let client = linger::Client::open(linger::ClientHome::at(&home)).expect("client");

    let relayed = client
        .connect(&mitm)
        .await
        .err()
        .expect("the relayed login fails");
    assert_eq!(relayed.kind(), linger::Kind::Auth, "{relayed}");

    // The same key, directly: welcomed as its principal.
    let direct = client.connect(&real).await.expect("direct login");
    assert_eq!(direct.welcome.principal, "ops");

    let audit = std::fs::read_to_string(dir.path().join("state/linger/server/audit.log"))
        .expect("audit log");
    let failure = audit
        .lines()
        .find(|l| l.contains("\"login_failed\""))
        .expect("the relayed attempt is audited");
    assert!(failure.contains("does not verify"), "{failure}");
}
