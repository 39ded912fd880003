//! Wires a docnode together: store, group committer, document registry, gRPC service, admin
//! endpoints, and an orderly shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use codraft_common::membership::{MembershipConfig, Registration};
use codraft_proto::doc_node_server::DocNodeServer;
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tracing::{info, Instrument};

use crate::{
    admin::{self, AdminState},
    commit::{CommitPolicy, Committer},
    config::DocnodeConfig,
    document::Deps,
    metrics::DocnodeMetrics,
    presence::Presence,
    registry::Registry,
    service::DocNodeService,
    store::{metered::MeteredStore, postgres::PgStore, sqlite::SqliteStore, Store, StoreError},
    sweeper::{self, SweepPolicy},
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
    /// The gRPC TLS files (GRPC_TLS_*) are unusable.
    #[error("gRPC TLS: {0}")]
    Tls(#[from] codraft_common::tls::TlsError),
    /// Membership could not start (a bad REDIS_URL).
    #[error("membership: {0}")]
    Membership(String),
}

/// A running docnode's parts.
pub struct Docnode {
    config: Arc<DocnodeConfig>,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    metrics: Arc<DocnodeMetrics>,
    committer_task: tokio::task::JoinHandle<()>,
    /// Presence publishing, connected to Redis by [`Docnode::serve`] when REDIS_URL is set.
    presence: Presence,
    /// The compaction and expiry task, if sweeping is on.
    sweeper_task: Option<tokio::task::JoinHandle<()>>,
    /// Returns unloaded documents' memory to the operating system.
    trim_task: tokio::task::JoinHandle<()>,
}

impl Docnode {
    /// Opens the store the configuration names (Postgres at DATABASE_URL if set, else the
    /// embedded file store under DATA_DIR) and starts the committer; owns every document.
    pub async fn open(config: DocnodeConfig) -> Result<Self, ServeError> {
        let store = Self::open_store(&config).await?;
        Ok(Self::with_store(config, store))
    }

    /// Like [`Docnode::open`], owning the documents the membership `view` assigns it.
    pub async fn open_with_view(
        config: DocnodeConfig,
        view: tokio::sync::watch::Receiver<codraft_common::membership::View>,
    ) -> Result<Self, ServeError> {
        let store = Self::open_store(&config).await?;
        Ok(Self::with_store_and_view(config, store, view))
    }

    async fn open_store(config: &DocnodeConfig) -> Result<Arc<dyn Store>, ServeError> {
        // The lease owner names this node and its address, so a docnode that loses a lease
        // can send its clients to the winner even when its own view does not list it.
        let owner = format!("{}={}", config.node_id(), config.advertise_url());
        let store: Arc<dyn Store> = match &config.database_url {
            Some(url) => Arc::new(
                PgStore::connect_secured(
                    url,
                    &config.database_security(),
                    &owner,
                    config.database_pool_size,
                )
                .await?,
            ),
            None => {
                let dir = config.data_dir.clone();
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir))
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))??;
                Arc::new(store)
            }
        };
        Ok(store)
    }

    /// A docnode over an already opened store that owns every document (standalone).
    pub fn with_store(config: DocnodeConfig, store: Arc<dyn Store>) -> Self {
        let (_fixed, view) = codraft_common::membership::fixed_view(Vec::new());
        Self::with_store_and_view(config, store, view)
    }

    /// A docnode over an already opened store that owns the documents the membership `view`
    /// assigns it.
    pub fn with_store_and_view(
        config: DocnodeConfig,
        store: Arc<dyn Store>,
        view: tokio::sync::watch::Receiver<codraft_common::membership::View>,
    ) -> Self {
        let me = codraft_common::membership::Member {
            id: config.node_id(),
            url: config.advertise_url(),
        };
        let ownership = Arc::new(crate::ownership::Ownership::new(me, view));
        // A registry of its own: standalone mode hands it to the gateway, which adds its
        // series, so one `/metrics` shows both without registering anything twice.
        let metrics = Self::metrics(&prometheus::Registry::new(), &store, &ownership)
            .expect("the docnode's metric names are valid and unique");
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, Arc::clone(&metrics)));
        let config = Arc::new(config);
        let policy = CommitPolicy::new(&config, &*store);
        let (committer, committer_task) =
            Committer::start(Arc::clone(&store), policy, Arc::clone(&metrics));
        let sweeper_task = SweepPolicy::from_config(&config)
            .map(|policy| sweeper::start(Arc::clone(&store), policy));
        let presence = Presence::in_process(config.presence_ttl());
        if let Err(error) = presence.register(metrics.registry()) {
            tracing::warn!(%error, "presence series are not exported");
        }
        let registry = Registry::new(Deps {
            store: Arc::clone(&store),
            committer,
            config: Arc::clone(&config),
            ownership,
            metrics: Arc::clone(&metrics),
            presence: presence.clone(),
        });
        let trim_task = crate::memory::start(&registry);
        Self {
            config,
            store,
            registry,
            metrics,
            committer_task,
            presence,
            sweeper_task,
            trim_task,
        }
    }

    fn metrics(
        registry: &prometheus::Registry,
        store: &Arc<dyn Store>,
        ownership: &crate::ownership::Ownership,
    ) -> prometheus::Result<Arc<DocnodeMetrics>> {
        let metrics = DocnodeMetrics::register(registry)?;
        codraft_common::metrics::register_process(registry)?;
        metrics.register_store(store)?;
        metrics.register_membership(ownership.view())?;
        Ok(metrics)
    }

    /// The Prometheus registry holding this docnode's series.
    pub fn metrics_registry(&self) -> &prometheus::Registry {
        self.metrics.registry()
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
            registered: None,
            metrics: Arc::clone(&self.metrics),
        }
    }

    /// The docnode for a gateway inside this process (standalone mode): the same contract
    /// and the same service as over gRPC, called directly, without encoding, HTTP/2 or a
    /// socket (docs/architecture.md, "Standalone").
    pub fn in_process(&self) -> Arc<dyn codraft_proto::in_process::InProcess> {
        Arc::new(DocNodeService::new(
            Arc::clone(&self.registry),
            Arc::clone(&self.store),
        ))
    }

    /// Serves gRPC on DOCNODE_ADDR and the admin endpoints on ADMIN_ADDR until `shutdown`
    /// resolves, registered in the cluster's membership when `membership` names a Redis.
    ///
    /// Shutdown is a drain: leave the membership first (gateways stop routing here), then
    /// every document commits what is pending and closes its clients, who reconnect to the
    /// documents' new owners.
    pub async fn serve(
        self,
        membership: Option<MembershipConfig>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let grpc_addr = self.config.docnode_addr;
        let listener = TcpListener::bind(grpc_addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: grpc_addr.to_string(),
                source,
            })?;
        let admin_addr = self.config.admin_addr;
        let admin_listener =
            TcpListener::bind(admin_addr)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: admin_addr.to_string(),
                    source,
                })?;
        let me = self.registry.ownership().me().clone();
        if let Some(url) = membership.as_ref().and_then(|m| m.redis_url.as_deref()) {
            let prefix = membership
                .as_ref()
                .map_or("codraft", |m| m.redis_prefix.as_str());
            self.presence
                .connect(
                    url,
                    membership.as_ref().and_then(|m| m.redis_ca_file.as_deref()),
                    prefix,
                    &me.id,
                )
                .map_err(ServeError::Membership)?;
        }
        let registration = match &membership {
            Some(config) => Registration::start(config, me)
                .map_err(|e| ServeError::Membership(e.to_string()))?,
            None => None,
        };
        let mut admin_state = self.admin_state();
        admin_state.registered = registration.as_ref().map(Registration::health);
        if let Some(registration) = &registration {
            if let Err(error) = self
                .metrics
                .register_heartbeat_failures(registration.heartbeat_failures())
            {
                tracing::warn!(%error, "heartbeat failures are not counted");
            }
        }
        // Documents this node stops owning (a node joined, or this one is leaving) move.
        let mut view = self.registry.ownership().view();
        let mover_registry = Arc::clone(&self.registry);
        let mover = tokio::spawn(async move {
            while view.changed().await.is_ok() {
                let span = tracing::info_span!("release_unowned");
                let moved = mover_registry.release_unowned().instrument(span).await;
                if moved > 0 {
                    info!(moved, "releasing documents another docnode owns now");
                }
            }
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let admin = tokio::spawn(admin::serve(
            admin_listener,
            admin_state,
            wait_for(stop_rx.clone()),
        ));
        info!(grpc = %grpc_addr, admin = %admin_addr, node = %self.config.node_id(), "docnode serving");
        let stopped = async {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        // A gateway's sessions share one stream (`DocNode.Sessions`): room for all of them.
        let router = Server::builder()
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(2 << 20)
            .add_service(self.grpc_service());
        let grpc: std::pin::Pin<
            Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send + '_>,
        > = match self.config.grpc_tls.reloading_server()? {
            Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                crate::tls_listener::incoming(listener, tls),
                stopped,
            )),
            None => Box::pin(router.serve_with_incoming_shutdown(
                TcpListenerStream::new(listener).map(|accepted| {
                    // Small frames must not wait for Nagle's algorithm (40 ms with delayed ACKs).
                    if let Ok(stream) = &accepted {
                        let _ = stream.set_nodelay(true);
                    }
                    accepted
                }),
                stopped,
            )),
        };
        // The gRPC server stops taking new streams on shutdown but waits for open ones, and
        // open ones end only when their documents close: so close the documents first.
        let registry = Arc::clone(&self.registry);
        let timeout = Duration::from_secs(self.config.shutdown_timeout_secs);
        let mut stopping = stop_rx;
        let closer = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            if let Some(registration) = registration {
                registration.leave().await;
            }
            registry.shutdown(timeout).await;
        };
        let (served, ()) = tokio::join!(grpc, closer);
        mover.abort();
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
            sweeper_task,
            trim_task,
            ..
        } = self;
        if let Some(sweeper) = sweeper_task {
            sweeper.abort();
        }
        trim_task.abort();
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
