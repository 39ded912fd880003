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

/// How long a refused connection is read from, so that the client gets the alert.
const LINGER: Duration = Duration::from_secs(1);

/// Closes a connection whose handshake was refused (its alert already written) so that the
/// client reads the alert. Under TLS 1.3 a client's handshake is done before the server has
/// checked the client's certificate, so the client has already sent its first HTTP/2 bytes:
/// closing a socket with unread bytes sends a reset, which can discard the alert on the
/// client's side before it is read, and the gateway then logged only a broken pipe. Sending
/// our end's FIN and reading until the client closes (for at most LINGER) avoids the reset.
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(tcp.read(&mut discard).await, Ok(n) if n > 0) {}
    })
    .await;
}

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
                let handshake = acceptor.accept(tcp).into_fallible();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    // A gateway without an acceptable client certificate ends here: say so
                    // here, and let the alert reach the gateway so that it can say so too.
                    Ok(Err((error, tcp))) => {
                        warn!(%peer, %error, "gRPC TLS handshake refused");
                        linger(tcp).await;
                    }
                    Err(_) => debug!(%peer, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
