//! A fault-injecting TCP proxy on loopback: forwards every connection to a target and, on
//! command, cuts the connections it carries (both ends see a reset or end of stream) or
//! blackholes them (they stay open and every byte sent on them vanishes, as on a dead
//! route). New connections always go through, so a client that dials again gets in. Its
//! threads end when the proxy is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One proxied connection: both sockets, and whether it is blackholed.
struct Link {
    client: TcpStream,
    server: TcpStream,
    blackholed: Arc<AtomicBool>,
}

pub struct FaultyProxy {
    pub addr: SocketAddr,
    links: Arc<Mutex<Vec<Link>>>,
    stop: Arc<AtomicBool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
}

impl FaultyProxy {
    pub fn start(target: SocketAddr) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        listener.set_nonblocking(true).expect("nonblocking");
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (l2, s2, a2) = (links.clone(), stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => continue,
                };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                a2.fetch_add(1, Ordering::Relaxed);
                let blackholed = Arc::new(AtomicBool::new(false));
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let hole = blackholed.clone();
                    std::thread::spawn(move || pump(from, to, hole));
                }
                if let Ok(mut links) = l2.lock() {
                    links.push(Link {
                        client,
                        server,
                        blackholed,
                    });
                }
            }
        });
        FaultyProxy {
            addr,
            links,
            stop,
            accepted,
        }
    }

    /// Ends every connection carried so far, at both ends.
    pub fn cut(&self) {
        for link in self.links.lock().expect("links").drain(..) {
            let _ = link.client.shutdown(Shutdown::Both);
            let _ = link.server.shutdown(Shutdown::Both);
        }
    }

    /// Every connection carried so far goes silent: open, but nothing gets through.
    pub fn blackhole(&self) {
        for link in self.links.lock().expect("links").iter() {
            link.blackholed.store(true, Ordering::Relaxed);
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

/// Copies `from` to `to` until either ends; once blackholed, reads and discards.
fn pump(mut from: TcpStream, mut to: TcpStream, blackholed: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if blackholed.load(Ordering::Relaxed) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if !blackholed.load(Ordering::Relaxed) {
        let _ = to.shutdown(Shutdown::Write);
    }
}
