//! TLS to every dependency, against real TLS servers on this machine: a throwaway PostgreSQL
//! cluster of the test's own with `ssl=on`, `redis-server --tls-port`, and docnodes and
//! gateways speaking mutual TLS. Every certificate is made by the test (a CA, a server and
//! a client certificate, and a second CA nobody trusts), so each server is also shown to be
//! refused, with an error naming the cause, when its certificate does not verify.
//!
//! The OTLP collector is an in-process `TraceService` behind TLS.
//!
//! Nothing here skips: a missing `initdb`/`pg_ctl` or `redis-server` fails the test.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use codraft_docnode::store::{pg_tls::PgSecurity, postgres::PgStore};
use codraft_testkit::{
    client::{Client, Options},
    cluster::{Cluster, Setup},
    http::http_get,
    ports::free_port,
    standalone::Standalone,
    tempdir::TempDir,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;

/// A CA of the test's own with a server and a client certificate, and a second CA that
/// signed nothing here (the "wrong CA").
struct Pki {
    dir: TempDir,
    /// The CA itself, to issue more certificates (a rotation).
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA that signed the server and client certificates.
    ca: PathBuf,
    /// A CA nobody's certificate comes from.
    other_ca: PathBuf,
    /// Server certificate for 127.0.0.1 only (so `localhost` is a name mismatch).
    server_cert: PathBuf,
    server_key: PathBuf,
    /// Client certificate (for mutual TLS).
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A client certificate from the other CA.
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert")
}

fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("leaf params");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca).expect("leaf cert");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Self {
        let dir = TempDir::new("codraft-pki");
        let ca = new_ca("codraft test CA");
        let other = new_ca("codraft stranger CA");
        let (server_cert, server_key) =
            leaf(&ca, &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) =
            leaf(&ca, &["gateway"], ExtendedKeyUsagePurpose::ClientAuth);
        let (stranger_cert, stranger_key) =
            leaf(&other, &["gateway"], ExtendedKeyUsagePurpose::ClientAuth);
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            other_ca: write("other-ca.pem", &other.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            stranger_cert: write("stranger.pem", &stranger_cert),
            stranger_key: write("stranger.key", &stranger_key),
            dir,
            issuer: ca,
        }
    }

    /// A new server certificate for 127.0.0.1 from the same CA, with a new key.
    fn issue_server_certificate(&self) -> (String, String) {
        leaf(
            &self.issuer,
            &["127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }
}

/// Runs a command, failing the test with its output if it fails.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The directory of the installed PostgreSQL server binaries (the newest major version).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries are required (/usr/lib/postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin")
}

/// Runs a PostgreSQL binary as the `postgres` OS user (initdb refuses root).
fn as_postgres(bin: &Path, program: &str) -> Command {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--"])
        .arg(bin.join(program));
    command
}

/// A PostgreSQL cluster of the test's own on a free port: TLS only (`hostssl`), `postgres`
/// trusted, role `app` by password. The machine's main cluster is not touched.
struct TlsPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: TempDir,
}

impl TlsPostgres {
    fn start(pki: &Pki) -> Self {
        let bin = postgres_bin();
        let dir = TempDir::new("codraft-pg-tls");
        let data = dir.path().join("data");
        run(Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path()));
        run(as_postgres(&bin, "initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data));
        for (from, to) in [
            (&pki.server_cert, "server.crt"),
            (&pki.server_key, "server.key"),
        ] {
            std::fs::copy(from, data.join(to)).expect("copy server certificate");
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all app 127.0.0.1/32 scram-sha-256\n\
             hostssl all postgres 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&data));
        run(Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key")));
        let port = free_port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c fsync=off",
            dir.path().display()
        );
        run(as_postgres(&bin, "pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("postgres.log"))
            .args(["-o", &options, "start"]));
        let this = Self {
            bin,
            data,
            port,
            _dir: dir,
        };
        this.psql("CREATE ROLE app LOGIN PASSWORD 'from-a-file'");
        this.psql("CREATE DATABASE app OWNER app");
        this
    }

    /// Runs SQL through the cluster's Unix socket as `postgres`.
    fn psql(&self, sql: &str) {
        run(Command::new("psql")
            .arg("-h")
            .arg(self._dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql]));
    }

    fn url(&self, host: &str, user: &str, query: &str) -> String {
        format!("postgres://{user}@{host}:{}/{user}?{query}", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn pg_connect(
    url: &str,
    ca_file: Option<&Path>,
    password_file: Option<&Path>,
) -> Result<PgStore, String> {
    let security = PgSecurity {
        ca_file: ca_file.map(Path::to_owned),
        password_file: password_file.map(Path::to_owned),
    };
    PgStore::connect_secured(url, &security, "tls-test", 2)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sslmodes_against_a_tls_only_server() {
    let pki = Pki::new();
    let pg = TlsPostgres::start(&pki);
    let ca = pki.ca.display().to_string();

    // verify-full with sslrootcert in the URL: connects (and migrates) over TLS; the
    // server accepts nothing but TLS, so this is encrypted by construction.
    let url = pg.url(
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    pg_connect(&url, None, None)
        .await
        .expect("verify-full with the right CA connects");

    // The same through DATABASE_CA_FILE, and the password from DATABASE_PASSWORD_FILE.
    let password = pki.dir.path().join("password");
    std::fs::write(&password, "from-a-file\n").expect("password file");
    let url = pg.url("127.0.0.1", "app", "sslmode=verify-full");
    pg_connect(&url, Some(&pki.ca), Some(&password))
        .await
        .expect("verify-full with DATABASE_CA_FILE and DATABASE_PASSWORD_FILE connects");
    let wrong = pki.dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-it").expect("password file");
    let error = pg_connect(&url, Some(&pki.ca), Some(&wrong))
        .await
        .err()
        .expect("wrong password refused");
    assert!(error.contains("password authentication failed"), "{error}");

    // A CA that did not sign the server's certificate: refused, and the message says why
    // and which settings to look at.
    let error = pg_connect(&url, Some(&pki.other_ca), Some(&password))
        .await
        .err()
        .expect("a foreign CA is refused");
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(error.contains("DATABASE_CA_FILE"), "{error}");

    // By name: the certificate lists 127.0.0.1 only. verify-full to `localhost` is refused,
    // verify-ca (chain only) accepts it.
    let by_name = |mode: &str| {
        pg.url(
            "localhost",
            "postgres",
            &format!("sslmode={mode}&sslrootcert={ca}"),
        )
    };
    let error = pg_connect(&by_name("verify-full"), None, None)
        .await
        .err()
        .expect("verify-full refuses a certificate for another name");
    assert!(error.contains("not valid for name"), "{error}");
    pg_connect(&by_name("verify-ca"), None, None)
        .await
        .expect("verify-ca accepts a certificate for another name from the right CA");

    // require without a CA encrypts without verifying (libpq's meaning) ...
    let url = pg.url("127.0.0.1", "postgres", "sslmode=require");
    pg_connect(&url, None, None)
        .await
        .expect("require connects");
    // ... and disable is refused by this TLS-only server: the connections above used TLS.
    let url = pg.url("127.0.0.1", "postgres", "sslmode=disable");
    let error = pg_connect(&url, None, None)
        .await
        .err()
        .expect("plaintext refused");
    assert!(
        error.contains("no encryption") || error.contains("pg_hba.conf"),
        "{error}"
    );
}

/// `redis-server` with TLS only, on a free port, killed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    fn start(pki: &Pki) -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&pki.server_cert)
            .arg("--tls-key-file")
            .arg(&pki.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .args(["--tls-auth-clients", "no", "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is required (Debian's redis-server has TLS)");
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// Waits until the TLS port accepts (bounded: 10 s).
    async fn wait_listening(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server --tls-port {} did not listen in 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_carries_membership_and_a_foreign_ca_is_refused() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki);
    redis.wait_listening().await;

    // In process: the right CA answers PING, a foreign one is refused by name.
    let client =
        codraft_common::tls::redis_client(&redis.url(), Some(&pki.ca)).expect("TLS client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("rediss:// with the right CA connects");
    let pong: String = redis::cmd("PING")
        .query_async(&mut con)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
    let stranger =
        codraft_common::tls::redis_client(&redis.url(), Some(&pki.other_ca)).expect("TLS client");
    let error = stranger
        .get_multiplexed_async_connection()
        .await
        .expect_err("a foreign CA is refused")
        .to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");
    let error = codraft_common::tls::redis_client("redis://127.0.0.1:6379", Some(&pki.ca))
        .expect_err("a CA file with redis:// is refused")
        .to_string();
    assert!(error.contains("rediss://"), "{error}");

    // Real processes: a docnode registers and a gateway discovers it through TLS Redis,
    // then an edit travels and is read back.
    let env = |_: usize, _: &Setup| {
        vec![
            ("REDIS_URL".to_owned(), redis.url()),
            ("REDIS_CA_FILE".to_owned(), pki.ca.display().to_string()),
        ]
    };
    let cluster = Cluster::start_with(1, 1, env, env).await;
    cluster.wait_gateway_sees(0, 1).await;
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{}:docnodes", cluster.prefix))
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .expect("ZRANGE");
    assert_eq!(
        members.len(),
        1,
        "the docnode registered in the TLS Redis: {members:?}"
    );
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_reach_docnodes_over_mutual_tls_and_strangers_are_refused() {
    let pki = Pki::new();
    let path = |p: &PathBuf| p.display().to_string();
    let docnode_env = |_: usize, _: &Setup| {
        vec![
            ("GRPC_TLS_CERT_FILE".to_owned(), path(&pki.server_cert)),
            ("GRPC_TLS_KEY_FILE".to_owned(), path(&pki.server_key)),
            ("GRPC_TLS_CA_FILE".to_owned(), path(&pki.ca)),
        ]
    };
    // Gateway 0 presents the client certificate; 1 presents none; 2 presents one from a CA
    // the docnode does not trust; 3 has a client certificate but trusts another CA.
    let gateway_env = |i: usize, _: &Setup| {
        let (cert, key, ca) = match i {
            0 => (Some(&pki.client_cert), Some(&pki.client_key), &pki.ca),
            1 => (None, None, &pki.ca),
            2 => (Some(&pki.stranger_cert), Some(&pki.stranger_key), &pki.ca),
            _ => (Some(&pki.client_cert), Some(&pki.client_key), &pki.other_ca),
        };
        let mut env = vec![("GRPC_TLS_CA_FILE".to_owned(), path(ca))];
        if let (Some(cert), Some(key)) = (cert, key) {
            env.push(("GRPC_TLS_CERT_FILE".to_owned(), path(cert)));
            env.push(("GRPC_TLS_KEY_FILE".to_owned(), path(key)));
        }
        env
    };
    let cluster = Cluster::start_with(1, 4, docnode_env, gateway_env).await;
    let document = format!("tls{:x}", rand::random::<u32>());

    // The docnode advertises https:// and the gateway with a client certificate is served.
    let (status, body) = http_get(
        cluster.gateways[0].ready_port,
        &format!("/api/text/{document}"),
    )
    .await;
    assert_eq!(status, 200, "mutual TLS through gateway 0: {body}");

    // Rotation: a new certificate for the docnode, written over the old files, is served to
    // new connections without a restart, and the gateway keeps working through it.
    let (rotated_cert, rotated_key) = pki.issue_server_certificate();
    std::fs::write(&pki.server_key, &rotated_key).expect("rotate key");
    std::fs::write(&pki.server_cert, &rotated_cert).expect("rotate cert");
    let grpc_port: u16 = cluster.docnode_urls[0]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("docnode port");
    let rotated_der = rustls::pki_types::CertificateDer::from_pem_slice(rotated_cert.as_bytes())
        .expect("rotated certificate");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while served_certificate(&pki, grpc_port).await != rotated_der {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated certificate was not served within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = format!("{document}-after-rotation");
    let (status, body) = http_get(
        cluster.gateways[0].ready_port,
        &format!("/api/text/{fresh}"),
    )
    .await;
    assert_eq!(status, 200, "mutual TLS after the rotation: {body}");

    for (i, why) in [
        (1, "no client certificate"),
        (2, "a client certificate from an untrusted CA"),
        (3, "a docnode certificate the gateway cannot verify"),
    ] {
        let (status, body) = http_get(
            cluster.gateways[i].ready_port,
            &format!("/api/text/{document}"),
        )
        .await;
        assert_ne!(
            status, 200,
            "gateway {i} with {why} must be refused: {body}"
        );
        let log = cluster.gateways[i].log();
        assert!(
            log.contains("TLS handshake with docnode failed"),
            "gateway {i} ({why}) must log why: status {status} {body}\n{log}"
        );
    }
    let docnode_log = cluster.docnodes[0].log();
    assert!(
        docnode_log.contains("gRPC TLS handshake refused"),
        "the docnode says why it refused gateways:\n{docnode_log}"
    );
    cluster.assert_no_panic();
}

/// The leaf certificate the TLS server on `port` presents (as a client with the test's
/// client certificate, since the docnode requires one).
async fn served_certificate(pki: &Pki, port: u16) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("CA");
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&pki.client_cert)
        .expect("client cert")
        .map(|c| c.expect("client cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.client_key).expect("client key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the docnode");
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let stream = connector.connect(name, tcp).await.expect("TLS handshake");
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

/// An OTLP/gRPC trace receiver behind TLS (the test CA's server certificate), counting the
/// spans each service sends.
#[derive(Clone, Default)]
struct TlsCollector {
    services: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for TlsCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut services = self
            .services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            let spans: usize = resource_spans
                .scope_spans
                .iter()
                .map(|s| s.spans.len())
                .sum();
            services.extend(std::iter::repeat_n(service, spans));
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl TlsCollector {
    async fn start(pki: &Pki) -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        let identity = tonic::transport::Identity::from_pem(
            std::fs::read(&pki.server_cert).expect("server cert"),
            std::fs::read(&pki.server_key).expect("server key"),
        );
        let collector = Self::default();
        let server = tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .expect("collector TLS")
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        (collector, format!("https://{addr}"))
    }

    fn spans_from(&self, service: &str) -> usize {
        self.services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|s| s.contains(service))
            .count()
    }
}

/// Starts a standalone server exporting to `endpoint` with `ca` as the collector's CA, and
/// makes one edit so there are spans to export.
async fn traced_standalone(endpoint: &str, ca: &Path, service: &str) -> Standalone {
    let ca = ca.display().to_string();
    let server = Standalone::start_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
        ("OTEL_SERVICE_NAME", service),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
    ])
    .await;
    let document = format!("otlp{:x}", rand::random::<u32>());
    let mut client = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("client joins");
    client
        .insert(0, "traced over TLS")
        .await
        .expect("edit sent");
    client
        .settle(Duration::from_secs(20))
        .await
        .expect("edit acknowledged");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_an_https_collector_and_a_foreign_ca_is_logged() {
    let pki = Pki::new();
    let (collector, endpoint) = TlsCollector::start(&pki).await;

    let trusted = traced_standalone(&endpoint, &pki.ca, "codraft-tls-trusted").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while collector.spans_from("codraft-tls-trusted") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no span reached the TLS collector in 20 s; log:\n{}",
            trusted.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A CA that did not sign the collector's certificate: nothing arrives, and the log says
    // the export failed (the SDK's own logs are off; this line is ours).
    let stranger = traced_standalone(&endpoint, &pki.other_ca, "codraft-tls-stranger").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !stranger.log().contains("trace export failed") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a refused collector certificate left no line in 20 s; log:\n{}",
            stranger.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(collector.spans_from("codraft-tls-stranger"), 0);
    trusted.assert_no_panic();
    stranger.assert_no_panic();
}
