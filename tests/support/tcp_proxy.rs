//! A TCP forwarder a test can cut: the network path between a `berth` node
//! and its database, to make the database vanish for that node (and come
//! back) without stopping a server other tests share.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// Forwards every connection to `127.0.0.1:addr` on to the target until
/// [`TcpProxy::cut`]. Its accept thread lives as long as the process (tests
/// are short); each forwarded connection has two copy threads.
pub struct TcpProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Both ends of every forwarded connection, to shut down on a cut.
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1, forwarding to `target`.
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, open2) = (up.clone(), open.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::Acquire) {
                    continue; // dropped: the path is cut
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) {
                    open2
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend([c3, s3]);
                }
                thread::spawn(move || pipe(client, s2));
                thread::spawn(move || pipe(server, c2));
            }
        });
        TcpProxy { addr, up, open }
    }

    /// Breaks every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::Release);
        for s in self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::Release);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
