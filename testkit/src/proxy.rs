//! A TCP proxy on loopback that a test can cut and restore: the way to make PostgreSQL (or
//! Redis) unreachable for one process without stopping the server other tests share.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A running proxy to one upstream address.
pub struct Proxy {
    /// The address clients connect to.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    freeze: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding a new loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = watch::channel(0u64);
        let (freeze, freezes) = watch::channel(0u64);
        let accepting = Arc::clone(&up);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    // Down: refuse by closing at once.
                    drop(client);
                    continue;
                }
                let (mut cuts, mut freezes) = (cuts.clone(), freezes.clone());
                // Only cuts and freezes after this connection opened touch it.
                cuts.borrow_and_update();
                freezes.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    let frozen = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                        _ = cuts.changed() => false,
                        _ = freezes.changed() => true,
                    };
                    if frozen {
                        // Held open and silent until a cut or the proxy's end: to both ends,
                        // a peer that vanished without closing.
                        let _ = cuts.changed().await;
                    }
                });
            }
        });
        Self {
            addr,
            up,
            cut,
            freeze,
            task,
        }
    }

    /// Stops forwarding on every open connection without closing it (new connections are
    /// forwarded as before): what a host that vanished, or a dropped NAT entry, looks like.
    pub fn freeze(&self) {
        self.freeze.send_modify(|n| *n += 1);
    }

    /// Severs every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
