//! The TLS transport (SPEC §1): TCP listeners, the TLS 1.3 handshake with the server's
//! identity, and the channel binding the authentication exchange signs. Everything after
//! the handshake is the same protocol as on the local socket (`conn.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use linger_proto::auth::{BINDING_LEN, CHANNEL_BINDING_LABEL, DEFAULT_TLS_PORT};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::auth::TlsPeer;
use crate::budget::{Budget, Slot, Source};
use crate::conn::Admission;
use crate::identity::ServerIdentity;
use crate::{Daemon, MAX_HANDSHAKING, MAX_HANDSHAKING_PER_ADDRESS};

/// A TLS handshake must complete within this time.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses a `--listen` value: `ADDR:PORT`, `[V6]:PORT`, or a bare address (port 5990).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let host = text.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, DEFAULT_TLS_PORT))
        .map_err(|_| {
            format!("--listen {text}: expected ADDR:PORT or ADDR (an IP address; port {DEFAULT_TLS_PORT} by default)")
        })
}

/// Accepts TLS clients on `listener` for as long as the task runs.
pub async fn serve_tls(daemon: Arc<Daemon>, listener: TcpListener, identity: Arc<ServerIdentity>) {
    let acceptor = TlsAcceptor::from(identity.tls.clone());
    let name = match listener.local_addr() {
        Ok(a) => format!("TLS on {a}"),
        Err(_) => "a TLS listener".to_string(),
    };
    // This listener's own: connections here never use up another's places.
    let budget = Budget::new(name, MAX_HANDSHAKING, MAX_HANDSHAKING_PER_ADDRESS);
    let mut spare = crate::Spare::take();
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("TLS accept failed: {}", linger_host::io_error_text(&e));
                if linger_host::out_of_descriptors(&e) && spare.0.is_some() {
                    // At the descriptor limit: close the waiting client (it sees the
                    // connection refused at once, rather than hang in the backlog).
                    spare.0 = None;
                    let pending =
                        tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
                    drop(pending);
                }
                // Back off rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if spare.0.is_none() {
                    spare = crate::Spare::take();
                }
                continue;
            }
        };
        let Some(permit) = crate::admit(&budget, Source::Ip(addr.ip()), &addr.to_string()) else {
            continue;
        };
        let daemon = daemon.clone();
        let acceptor = acceptor.clone();
        let identity = identity.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%addr, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let mut channel_binding = [0u8; BINDING_LEN];
            if let Err(e) = tls.get_ref().1.export_keying_material(
                &mut channel_binding,
                CHANNEL_BINDING_LABEL,
                None,
            ) {
                tracing::warn!(%addr, "no TLS channel binding: {e}");
                return;
            }
            serve(daemon, tls, addr, channel_binding, identity, permit).await;
        });
    }
}

async fn serve(
    daemon: Arc<Daemon>,
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    addr: SocketAddr,
    channel_binding: [u8; BINDING_LEN],
    identity: Arc<ServerIdentity>,
    permit: Slot<Source>,
) {
    let peer = TlsPeer {
        addr,
        channel_binding,
        certificate_sha256: identity.certificate_sha256,
    };
    let (r, w) = tokio::io::split(tls);
    crate::conn::serve(daemon, r, w, Admission::Challenge(peer), permit).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        assert_eq!(
            parse_listen("127.0.0.1:7000"),
            Ok("127.0.0.1:7000".parse().unwrap())
        );
        assert_eq!(parse_listen("0.0.0.0"), Ok("0.0.0.0:5990".parse().unwrap()));
        assert_eq!(parse_listen("[::1]"), Ok("[::1]:5990".parse().unwrap()));
        assert_eq!(parse_listen("[::1]:1"), Ok("[::1]:1".parse().unwrap()));
        assert!(parse_listen("example.org:5990").is_err());
    }
}
