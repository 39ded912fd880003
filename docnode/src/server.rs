//! Wires a docnode together: store, group committer, document registry, gRPC service, admin
//! endpoints, and an orderly shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use codraft_proto::doc_node_server::DocNodeServer;
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint, Server};
use tracing::info;

use crate::{
    admin::{self, AdminState},
    commit::{CommitPolicy, Committer},
    config::DocnodeConfig,
    document::Deps,
    registry::Registry,
    service::DocNodeService,
    store::{sqlite::SqliteStore, Store, StoreError},
};

/// Largest gRPC message either side accepts: a join snapshot of the largest document fits.
pub const MAX_GRPC_MESSAGE: usize = 64 << 20;

/// Why a docnode could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The admin server failed.
    #[error("admin server failed: {0}")]
    Admin(std::io::Error),
}

/// A running docnode's parts.
pub struct Docnode {
    config: Arc<DocnodeConfig>,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    committer_task: tokio::task::JoinHandle<()>,
}

impl Docnode {
    /// Opens the store the configuration names (the embedded file store under DATA_DIR) and
    /// starts the committer.
    pub async fn open(config: DocnodeConfig) -> Result<Self, ServeError> {
        let dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        Ok(Self::with_store(config, Arc::new(store)))
    }

    /// A docnode over an already opened store.
    pub fn with_store(config: DocnodeConfig, store: Arc<dyn Store>) -> Self {
        let config = Arc::new(config);
        let policy = CommitPolicy {
            window: config.commit_window(),
            max_batch: config.commit_max_batch,
        };
        let (committer, committer_task) = Committer::start(Arc::clone(&store), policy);
        let registry = Registry::new(Deps {
            store: Arc::clone(&store),
            committer,
            config: Arc::clone(&config),
        });
        Self {
            config,
            store,
            registry,
            committer_task,
        }
    }

    /// The loaded documents.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The gRPC service, ready to add to a tonic server.
    pub fn grpc_service(&self) -> DocNodeServer<DocNodeService> {
        DocNodeServer::new(DocNodeService::new(
            Arc::clone(&self.registry),
            Arc::clone(&self.store),
        ))
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE)
    }

    /// The admin endpoints' state.
    pub fn admin_state(&self) -> AdminState {
        AdminState {
            registry: Arc::clone(&self.registry),
            store: Arc::clone(&self.store),
        }
    }

    /// Serves gRPC to gateways inside this process, over in-memory pipes: standalone mode
    /// uses the same contract and code path as a cluster, without a port.
    pub fn in_process_channel(&self) -> Channel {
        let (pipes_tx, pipes_rx) = tokio::sync::mpsc::channel::<tokio::io::DuplexStream>(16);
        let incoming =
            tokio_stream::wrappers::ReceiverStream::new(pipes_rx).map(Ok::<_, std::io::Error>);
        let service = self.grpc_service();
        tokio::spawn(async move {
            if let Err(error) = Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!(%error, "in-process gRPC server failed");
            }
        });
        Endpoint::from_static("http://in-process.codraft").connect_with_connector_lazy(
            tower::service_fn(move |_| {
                let pipes_tx = pipes_tx.clone();
                async move {
                    let (client, server) = tokio::io::duplex(256 * 1024);
                    pipes_tx
                        .send(server)
                        .await
                        .map_err(|_| std::io::Error::other("in-process docnode stopped"))?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
                }
            }),
        )
    }

    /// Serves gRPC on DOCNODE_ADDR and the admin endpoints on ADMIN_ADDR until `shutdown`
    /// resolves, then commits what is pending and stops.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let grpc_addr = self.config.docnode_addr;
        let listener = TcpListener::bind(grpc_addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: grpc_addr.to_string(),
                source,
            })?;
        let admin_addr = self.config.admin_addr;
        let admin_listener_check =
            TcpListener::bind(admin_addr)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: admin_addr.to_string(),
                    source,
                })?;
        drop(admin_listener_check);
        let (stop_tx, stop_rx) = watch::channel(false);
        let admin = tokio::spawn(admin::serve(
            admin_addr,
            self.admin_state(),
            wait_for(stop_rx.clone()),
        ));
        info!(grpc = %grpc_addr, admin = %admin_addr, node = %self.config.node_id(), "docnode serving");
        let grpc = Server::builder()
            .add_service(self.grpc_service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                shutdown.await;
                let _ = stop_tx.send(true);
            });
        // The gRPC server stops taking new streams on shutdown but waits for open ones, and
        // open ones end only when their documents close: so close the documents first.
        let registry = Arc::clone(&self.registry);
        let timeout = Duration::from_secs(self.config.shutdown_timeout_secs);
        let mut stopping = stop_rx;
        let closer = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            registry.shutdown(timeout).await;
        };
        let (served, ()) = tokio::join!(grpc, closer);
        served?;
        admin
            .await
            .map_err(|e| ServeError::Admin(std::io::Error::other(e)))?
            .map_err(ServeError::Admin)?;
        self.finish().await;
        Ok(())
    }

    /// Commits what is pending in every document, closes them, and stops the committer.
    pub async fn shutdown(self) {
        self.registry
            .shutdown(Duration::from_secs(self.config.shutdown_timeout_secs))
            .await;
        self.finish().await;
    }

    async fn finish(self) {
        let Self {
            registry,
            committer_task,
            ..
        } = self;
        // Every actor waited for its own commits before stopping, so the committer has nothing
        // left to do; it may still be referenced by an in-process server, so stop it here.
        drop(registry);
        committer_task.abort();
        info!("docnode stopped");
    }
}

async fn wait_for(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

use futures::StreamExt as _;
