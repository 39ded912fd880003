//! The gRPC port under TLS: accepts TCP connections and runs each handshake in a task of its
//! own (a slow or hostile client cannot hold up the others), handing the finished streams
//! to tonic. Done here rather than by tonic's own TLS so the server certificate can be
//! rotated without a restart (see `codraft_common::tls::ReloadingCertificate`).

use std::{sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for tonic to take them.
const QUEUE: usize = 64;

/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// TLS connections accepted on `listener` with `config`, for `serve_with_incoming`. The
/// accepting task ends when the stream is dropped (the server stopped).
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let acceptor = TlsAcceptor::from(config);
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    warn!(%error, "gRPC accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            // Small frames must not wait for Nagle's algorithm (40 ms with delayed ACKs).
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    // A gateway without an acceptable client certificate ends here: say so,
                    // since the gateway only sees a closed connection.
                    Ok(Err(error)) => warn!(%peer, %error, "gRPC TLS handshake refused"),
                    Err(_) => debug!(%peer, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
