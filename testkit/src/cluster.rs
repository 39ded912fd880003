//! A cluster of docnode and gateway processes on loopback, over a database of its own and a
//! Redis key prefix of its own, so cluster tests run in parallel. Docnodes register in Redis;
//! gateways discover them there unless a test gives them a static DOCNODES list.

use std::time::Duration;

use crate::{
    database::TestDatabase,
    http::{text, HttpTarget},
    ports::free_port,
    process::{Binary, Process},
    redis::{require_redis, unique_prefix, REDIS},
    tempdir::TempDir,
};

/// What a cluster's environment hooks can use.
pub struct Setup {
    /// gRPC URL of each docnode, by index.
    pub urls: Vec<String>,
    /// The cluster's database.
    pub database_url: String,
}

/// A cluster of docnode and gateway processes over one database and one Redis prefix.
pub struct Cluster {
    /// Docnodes, `dn0`, `dn1`, ….
    pub docnodes: Vec<Process>,
    /// Gateways, `gw0`, `gw1`, ….
    pub gateways: Vec<Process>,
    /// gRPC URL of each docnode, by index.
    pub docnode_urls: Vec<String>,
    /// The Redis prefix of this cluster.
    pub prefix: String,
    /// The cluster's database; dropped after the processes (fields drop in order).
    database: TestDatabase,
    /// The processes' logs.
    _dir: TempDir,
}

impl Cluster {
    /// Starts `docnodes` docnodes and `gateways` gateways discovering them through Redis.
    pub async fn start(docnodes: usize, gateways: usize) -> Self {
        Self::start_with(docnodes, gateways, |_, _| Vec::new(), |_, _| Vec::new()).await
    }

    /// Like [`Cluster::start`]; `docnode_env(i, setup)` and `gateway_env(i, setup)` add (or
    /// override) environment variables of docnode or gateway `i`. A gateway given DOCNODES
    /// waits only until it sees those.
    pub async fn start_with(
        docnodes: usize,
        gateways: usize,
        docnode_env: impl Fn(usize, &Setup) -> Vec<(String, String)>,
        gateway_env: impl Fn(usize, &Setup) -> Vec<(String, String)>,
    ) -> Self {
        require_redis();
        let database = TestDatabase::require().await;
        let dir = TempDir::new("codraft-cluster");
        let prefix = unique_prefix();
        let common = |extra: &[(&str, String)]| -> Vec<(String, String)> {
            let mut env = vec![
                ("REDIS_URL".to_owned(), REDIS.to_owned()),
                ("REDIS_PREFIX".to_owned(), prefix.clone()),
                ("MEMBERSHIP_TTL_MS".to_owned(), "1200".to_owned()),
            ];
            env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            env
        };
        let ports: Vec<(u16, u16)> = (0..docnodes).map(|_| (free_port(), free_port())).collect();
        let urls: Vec<String> = ports
            .iter()
            .map(|(g, _)| format!("http://127.0.0.1:{g}"))
            .collect();
        let setup = Setup {
            urls: urls.clone(),
            database_url: database.url.clone(),
        };
        let docnode_binary = Binary::Docnode.path();
        let gateway_binary = Binary::Gateway.path();
        let mut nodes = Vec::new();
        for (i, &(grpc, admin)) in ports.iter().enumerate() {
            let mut env = common(&[
                ("NODE_ID", format!("dn{i}")),
                ("DOCNODE_ADDR", format!("127.0.0.1:{grpc}")),
                ("ADMIN_ADDR", format!("127.0.0.1:{admin}")),
                ("DATABASE_URL", database.url.clone()),
                ("SHUTDOWN_TIMEOUT_SECS", "5".to_owned()),
            ]);
            env.extend(docnode_env(i, &setup));
            nodes.push(Process::new(
                &format!("docnode dn{i}"),
                &docnode_binary,
                env,
                dir.path(),
                admin,
            ));
        }
        let mut gws = Vec::new();
        for i in 0..gateways {
            let port = free_port();
            let mut env = common(&[("PORT", port.to_string()), ("BIND", "127.0.0.1".to_owned())]);
            let extra = gateway_env(i, &setup);
            let sees = extra
                .iter()
                .find(|(k, _)| k == "DOCNODES")
                .map_or(docnodes, |(_, v)| v.split(',').count());
            env.extend(extra);
            gws.push(
                Process::new(
                    &format!("gateway gw{i}"),
                    &gateway_binary,
                    env,
                    dir.path(),
                    port,
                )
                .ready_when(format!("ready: {sees} docnodes")),
            );
        }
        let mut cluster = Self {
            docnodes: nodes,
            gateways: gws,
            docnode_urls: urls,
            prefix,
            database,
            _dir: dir,
        };
        for node in &mut cluster.docnodes {
            node.start().await;
        }
        for gateway in &mut cluster.gateways {
            gateway.start().await;
        }
        cluster
    }

    /// `ws://` base URL of gateway `i`.
    pub fn ws(&self, i: usize) -> String {
        format!("ws://127.0.0.1:{}", self.gateways[i].ready_port)
    }

    /// The committed text of a document, through gateway `i`.
    pub async fn text(&self, i: usize, document: &str) -> String {
        text(self.gateways[i].ready_port, document).await
    }

    /// The database URL.
    pub fn database_url(&self) -> String {
        self.database.url.clone()
    }

    /// Waits until gateway `i` sees `count` docnodes (membership has caught up).
    pub async fn wait_gateway_sees(&self, i: usize, count: usize) {
        let want = format!("ready: {count} docnodes");
        let http = HttpTarget::loopback(self.gateways[i].health_port());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, body)) = http.get("/readyz").await {
                if String::from_utf8_lossy(&body).contains(&want) {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway {i} never saw {count} docnodes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails the test if any process log shows a panic.
    pub fn assert_no_panic(&self) {
        for p in self.docnodes.iter().chain(&self.gateways) {
            p.assert_no_panic();
        }
    }
}
