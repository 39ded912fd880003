//! Traces and metrics, checked against real processes.
//!
//! - One edit through a real gateway and docnode yields one trace holding spans of both
//!   services, parent-linked across the gRPC hop. The spans go over OTLP/gRPC to a collector
//!   this test runs in-process (the OpenTelemetry collector's own `TraceService`).
//! - After some traffic (including a refused edit and a rate-limited client) both services'
//!   `/metrics` show the series docs/operations.md documents, with non-zero values, and every
//!   series they expose is documented there.
//! - Standalone mode's one `/metrics` shows the gateway's and the docnode's series, each once.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use codraft_testkit::{
    client::{Client, ClientError, Options},
    cluster::{Cluster, Setup},
    http::http_get,
    ports::free_port,
    process::{Binary, Process},
    standalone::Standalone,
    tempdir::TempDir,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    common::v1::any_value::Value as AnyValue,
    trace::v1::Span,
};
use tokio_stream::wrappers::TcpListenerStream;

const WAIT: Duration = Duration::from_secs(20);

fn doc(name: &str) -> String {
    format!("{name}-{}", rand::random::<u32>())
}

/// A span as the collector received it, with the service that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

/// An OTLP/gRPC trace receiver on a loopback port, keeping every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Starts the receiver; returns it and its endpoint URL.
    async fn start() -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        let collector = Self::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (collector, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Polls (bounded by [`WAIT`]) until `find` succeeds on the spans received so far.
    async fn wait_for<T>(&self, what: &str, find: impl Fn(&[Received]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let spans = self.spans();
            if let Some(found) = find(&spans) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} within {WAIT:?}; received: {:#?}",
                spans
                    .iter()
                    .map(|r| (&r.service, &r.span.name))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Environment that sends a process's spans to the collector quickly.
fn otel_env(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ("OTEL_TRACES_SAMPLER".into(), "parentbased_always_on".into()),
    ]
}

/// The string value of a span attribute.
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
}

/// Trace ids as the collector gets them (bytes) and as log lines carry them (hex).
fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn named<'a>(spans: &'a [Received], service: &str, name: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|r| r.service == service && r.span.name == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_edit_is_one_trace_across_gateway_and_docnode() {
    let (collector, endpoint) = Collector::start().await;
    let env = |_: usize, _: &Setup| {
        let mut env = otel_env(&endpoint);
        env.push(("LOG_FORMAT".into(), "json".into()));
        env
    };
    let cluster = Cluster::start_with(1, 1, env, env).await;
    let document = doc("traced");
    let mut client = Client::connect(&cluster.ws(0), &document, Options::default())
        .await
        .expect("client joins");
    client.insert(0, "hello, traces").await.expect("edit sent");
    client.settle(WAIT).await.expect("edit acknowledged");

    // The gateway's edit span is the root; the docnode's continues it across the gRPC hop.
    let (gateway_edit, docnode_edit) = collector
        .wait_for("edit span pair", |spans| {
            named(spans, "codraft-gateway", "gateway.edit")
                .into_iter()
                .find_map(|g| {
                    named(spans, "codraft-docnode", "docnode.edit")
                        .into_iter()
                        .find(|d| d.span.trace_id == g.span.trace_id)
                        .map(|d| (g.span.clone(), d.span.clone()))
                })
        })
        .await;
    assert!(
        gateway_edit.parent_span_id.is_empty(),
        "the gateway's edit span starts the trace"
    );
    assert_eq!(
        docnode_edit.parent_span_id, gateway_edit.span_id,
        "the docnode's edit span is a child of the gateway's"
    );

    // Inside the docnode: transform and fan-out are children of its edit span, and the group
    // commit that carried the edit links to it.
    let trace = gateway_edit.trace_id.clone();
    for name in ["transform", "fanout"] {
        let child = collector
            .wait_for(name, |spans| {
                named(spans, "codraft-docnode", name)
                    .into_iter()
                    .find(|r| r.span.trace_id == trace)
                    .map(|r| r.span.clone())
            })
            .await;
        assert_eq!(
            child.parent_span_id, docnode_edit.span_id,
            "{name} is a child of docnode.edit"
        );
    }
    collector
        .wait_for("group commit linked to the edit", |spans| {
            named(spans, "codraft-docnode", "group_commit")
                .into_iter()
                .find(|r| {
                    r.span
                        .links
                        .iter()
                        .any(|l| l.trace_id == trace && l.span_id == docnode_edit.span_id)
                })
                .map(|_| ())
        })
        .await;

    // Opening the session is a trace too: the docnode's join continues the gateway's open.
    let (open, join) = collector
        .wait_for("open/join pair", |spans| {
            named(spans, "codraft-gateway", "gateway.open")
                .into_iter()
                .find_map(|o| {
                    named(spans, "codraft-docnode", "docnode.join")
                        .into_iter()
                        .find(|j| j.span.trace_id == o.span.trace_id)
                        .map(|j| (o.span.clone(), j.span.clone()))
                })
        })
        .await;
    assert_eq!(join.parent_span_id, open.span_id);

    // The spans speak the OpenTelemetry semantic conventions.
    for (span, kind) in [(&open, "gateway.open"), (&join, "docnode.join")] {
        assert_eq!(
            attribute(span, "rpc.system").as_deref(),
            Some("grpc"),
            "{kind}"
        );
        assert_eq!(
            attribute(span, "rpc.method").as_deref(),
            Some("Session"),
            "{kind}"
        );
        assert_eq!(
            attribute(span, "rpc.service").as_deref(),
            Some("codraft.docnode.v1.DocNode"),
            "{kind}"
        );
    }
    assert_eq!(
        attribute(&open, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    let commit = collector
        .wait_for("store.commit", |spans| {
            named(spans, "codraft-docnode", "store.commit")
                .first()
                .map(|r| r.span.clone())
        })
        .await;
    assert_eq!(
        attribute(&commit, "db.system.name").as_deref(),
        Some("postgresql")
    );
    assert_eq!(
        attribute(&commit, "db.operation.name").as_deref(),
        Some("commit")
    );
    assert_eq!(
        attribute(&commit, "server.address").as_deref(),
        Some("127.0.0.1")
    );

    // JSON log lines written inside a traced span carry its ids: the docnode's "group
    // commit" line names the trace and span of a group_commit span the collector received.
    let logged = collector
        .wait_for("a group commit log line with trace ids", |spans| {
            let log = cluster.docnodes[0].log();
            log.lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|line| line["fields"]["message"] == "group commit")
                .find_map(|line| {
                    let (trace_id, span_id) =
                        (line["trace_id"].as_str()?, line["span_id"].as_str()?);
                    named(spans, "codraft-docnode", "group_commit")
                        .into_iter()
                        .find(|r| {
                            hex(&r.span.trace_id) == trace_id && hex(&r.span.span_id) == span_id
                        })
                        .map(|_| trace_id.to_owned())
                })
        })
        .await;
    assert_eq!(logged.len(), 32);

    // Every span of the edit's trace comes from one of the two services, and both are there.
    let services: HashSet<String> = collector
        .spans()
        .into_iter()
        .filter(|r| r.span.trace_id == trace)
        .map(|r| r.service)
        .collect();
    assert_eq!(
        services,
        HashSet::from(["codraft-gateway".to_owned(), "codraft-docnode".to_owned()])
    );
    client.close().await;
    cluster.assert_no_panic();
}

/// The samples of a Prometheus text page: series (with labels) → value.
fn samples(page: &str) -> HashMap<String, f64> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The metric families a page declares with `# TYPE`, each as often as it is declared.
fn families(page: &str) -> Vec<String> {
    page.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn assert_positive(page: &HashMap<String, f64>, service: &str, series: &[&str]) {
    for name in series {
        let value = page.get(*name).copied();
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{service} /metrics: {name} = {value:?}, expected > 0; page: {page:#?}"
        );
    }
}

/// Fails unless docs/operations.md names every family.
fn assert_documented(families: &[String]) {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md exists");
    for family in families {
        assert!(
            docs.contains(&format!("`{family}`")),
            "{family} is exposed but not documented in docs/operations.md"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_services_expose_the_documented_metrics_after_traffic() {
    let admin = format!("127.0.0.1:{}", free_port());
    // A tight edit budget, so one client can be rate-limited on purpose.
    let gateway_env = |_: usize, _: &Setup| {
        vec![
            ("EDITS_PER_SECOND".to_owned(), "1".to_owned()),
            ("EDIT_BURST".to_owned(), "1".to_owned()),
            ("ADMIN_ADDR".to_owned(), admin.clone()),
        ]
    };
    let cluster = Cluster::start_with(1, 1, |_, _| Vec::new(), gateway_env).await;
    let document = doc("metered");
    let mut writer = Client::connect(&cluster.ws(0), &document, Options::default())
        .await
        .expect("writer joins");
    writer.insert(0, "counted").await.expect("edit sent");
    writer.settle(WAIT).await.expect("edit acknowledged");

    // An edit that does not fit the document: refused with 4409.
    let mut bad = Client::connect(&cluster.ws(0), &document, Options::default())
        .await
        .expect("second client joins");
    bad.send_raw(r#"{"Edit":{"revision":1,"operation":[999]}}"#)
        .await
        .expect("send");
    assert_closed(&mut bad).await;

    // Two edits at once against a budget of one: closed with 4429.
    let mut flood = Client::connect(&cluster.ws(0), &document, Options::default())
        .await
        .expect("third client joins");
    for _ in 0..2 {
        flood
            .send_raw(r#"{"Edit":{"revision":0,"operation":["x"]}}"#)
            .await
            .expect("send");
    }
    assert_closed(&mut flood).await;

    // The writer is still connected while the pages are read.
    let gateway_page = http_get(cluster.gateways[0].health_port(), "/metrics")
        .await
        .1;
    let docnode_page = http_get(cluster.docnodes[0].ready_port, "/metrics").await.1;
    // With an admin port, the public port serves the editor and the API only.
    for path in ["/metrics", "/readyz", "/healthz"] {
        let (status, _) = http_get(cluster.gateways[0].ready_port, path).await;
        assert_eq!(status, 404, "public port serves {path}");
    }
    let gateway = samples(&gateway_page);
    let docnode = samples(&docnode_page);
    assert_positive(
        &gateway,
        "gateway",
        &[
            "codraft_connections",
            "codraft_gateway_docnodes",
            "codraft_gateway_edits_total",
            "codraft_edit_round_trip_seconds_count",
            "codraft_edit_round_trip_seconds_sum",
            r#"codraft_closes_total{code="4409"}"#,
            r#"codraft_closes_total{code="4429"}"#,
            r#"codraft_rate_limited_total{limit="edits"}"#,
        ],
    );
    assert_positive(
        &docnode,
        "docnode",
        &[
            "codraft_documents_loaded",
            "codraft_membership_size",
            "codraft_edits_received_total",
            "codraft_edits_committed_total",
            r#"codraft_edits_rejected_total{reason="4409"}"#,
            "codraft_commits_total",
            "codraft_ops_committed_total",
            "codraft_commit_batch_ops_count",
            "codraft_commit_batch_documents_count",
            "codraft_commit_duration_seconds_count",
            "codraft_document_load_duration_seconds_count",
            "codraft_db_pool_max_connections",
            "codraft_db_pool_connections",
        ],
    );
    // Both services describe their process and their build.
    for (service, page) in [("gateway", &gateway), ("docnode", &docnode)] {
        assert_positive(
            page,
            service,
            &[
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_max_fds",
                "process_start_time_seconds",
            ],
        );
        let build = page
            .keys()
            .find(|k| k.starts_with("codraft_build_info{"))
            .unwrap_or_else(|| panic!("{service} has no codraft_build_info"));
        assert!(
            build.contains("version=\"0.1.0\"") && build.contains("commit=\""),
            "{build}"
        );
        assert_eq!(page.get(build), Some(&1.0));
    }
    assert_eq!(docnode.get("codraft_db_pool_waiting"), Some(&0.0));
    // Present (and zero) while nothing went wrong.
    for series in [
        "codraft_membership_heartbeat_failures_total",
        r#"codraft_ownership_moves_total{reason="fenced"}"#,
    ] {
        assert_eq!(docnode.get(series), Some(&0.0), "docnode {series}");
    }
    assert_eq!(gateway.get("codraft_connections_refused_total"), Some(&0.0));
    assert_documented(&families(&gateway_page));
    assert_documented(&families(&docnode_page));
    writer.close().await;
    cluster.assert_no_panic();
}

/// Reads until the server closes the connection.
async fn assert_closed(client: &mut Client) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.next_event(Duration::from_millis(200)).await {
            Ok(_) | Err(ClientError::Timeout) => {}
            Err(_) => return,
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not close the connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standalone_metrics_show_gateway_and_docnode_series_once() {
    let admin = format!("127.0.0.1:{}", free_port());
    let server = Standalone::start_with(&[("ADMIN_ADDR", &admin)]).await;
    let document = doc("standalone-metrics");
    let mut client = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("client joins");
    client.insert(0, "one process").await.expect("edit sent");
    client.settle(WAIT).await.expect("edit acknowledged");
    assert_eq!(
        server.get("/metrics").await.0,
        404,
        "metrics on the public port"
    );
    let admin_port = server.process.health_port();
    let (status, page) = http_get(admin_port, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        http_get(admin_port, "/healthz").await,
        (200, "ok".to_owned())
    );
    let declared = families(&page);
    let unique: HashSet<&String> = declared.iter().collect();
    assert_eq!(unique.len(), declared.len(), "a family is declared twice");
    let values = samples(&page);
    assert_positive(
        &values,
        "standalone",
        &[
            "codraft_connections",
            "codraft_gateway_edits_total",
            "codraft_edit_round_trip_seconds_count",
            "codraft_documents_loaded",
            "codraft_edits_committed_total",
            "codraft_commit_duration_seconds_count",
            "process_resident_memory_bytes",
            "process_open_fds",
        ],
    );
    assert_documented(&declared);
    client.close().await;
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_an_admin_port_health_stays_public_and_metrics_are_not_served() {
    let server = Standalone::start().await;
    assert_eq!(server.get("/healthz").await, (200, "ok".to_owned()));
    let (status, body) = server.get("/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready: 1 docnodes"));
    assert_eq!(server.get("/metrics").await.0, 404);
    assert!(
        server.log().contains("ADMIN_ADDR is not set"),
        "the log does not say why /metrics is off:\n{}",
        server.log()
    );
    server.assert_no_panic();
}

/// A docnode that advertises a loopback address while DOCNODES names another host starts, but
/// says at once that gateways elsewhere cannot reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docnode_advertising_loopback_in_a_multi_host_cluster_warns_at_start() {
    let dir = TempDir::new("codraft-unroutable");
    let (grpc, admin) = (free_port(), free_port());
    let env = [
        ("NODE_ID", "dn0".to_owned()),
        ("DOCNODE_ADDR", format!("127.0.0.1:{grpc}")),
        ("ADMIN_ADDR", format!("127.0.0.1:{admin}")),
        ("DATA_DIR", dir.path().join("store").display().to_string()),
        (
            "DOCNODES",
            format!("dn0=http://127.0.0.1:{grpc},dn1=http://docnode-1.example:50051"),
        ),
    ];
    let env = env.map(|(k, v)| (k.to_owned(), v)).to_vec();
    let mut docnode = Process::new(
        "docnode dn0",
        Binary::Docnode.path(),
        env,
        dir.path(),
        admin,
    );
    docnode.start().await;
    let log = docnode.log();
    let warning = log
        .lines()
        .find(|line| line.contains("WARN") && line.contains("advertises"))
        .unwrap_or_else(|| panic!("no warning about the advertised address:\n{log}"));
    assert!(
        warning.contains(&format!("http://127.0.0.1:{grpc}"))
            && warning.contains("docnode-1.example")
            && warning.contains("ADVERTISE_ADDR"),
        "{warning}"
    );
    docnode.terminate().await;
}

/// A session the docnode refuses (here: it may load one document and a second is asked for)
/// is a failed trace on both sides: the spans carry the error status and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_session_marks_its_spans_as_errors() {
    let (collector, endpoint) = Collector::start().await;
    let docnode_env = |_: usize, _: &Setup| {
        let mut env = otel_env(&endpoint);
        env.push(("MAX_LOADED_DOCUMENTS".into(), "1".into()));
        env
    };
    let gateway_env = |_: usize, _: &Setup| otel_env(&endpoint);
    let cluster = Cluster::start_with(1, 1, docnode_env, gateway_env).await;
    let mut first = Client::connect(&cluster.ws(0), &doc("loaded"), Options::default())
        .await
        .expect("the first document loads");
    first.insert(0, "x").await.expect("edit sent");
    first.settle(WAIT).await.expect("edit acknowledged");
    // Refused by the docnode: the gateway closes the socket (4503) once it is open, or the
    // client sees the close while joining; either way no session exists.
    if let Ok(mut second) =
        Client::connect(&cluster.ws(0), &doc("refused"), Options::default()).await
    {
        assert_closed(&mut second).await;
    }
    const ERROR: i32 = 2; // opentelemetry.proto.trace.v1.Status.StatusCode.STATUS_CODE_ERROR
    let failed = |spans: &[Received], service: &str, name: &str| {
        named(spans, service, name).into_iter().find_map(|r| {
            let status = r.span.status.as_ref()?;
            (status.code == ERROR).then(|| status.message.clone())
        })
    };
    let open = collector
        .wait_for("a failed gateway.open", |spans| {
            failed(spans, "codraft-gateway", "gateway.open")
        })
        .await;
    let join = collector
        .wait_for("a failed docnode.join", |spans| {
            failed(spans, "codraft-docnode", "docnode.join")
        })
        .await;
    assert!(open.contains("ResourceExhausted"), "{open}");
    assert!(join.contains("ResourceExhausted"), "{join}");
    // The session that worked is not marked.
    let ok = collector.spans();
    let fine = named(&ok, "codraft-gateway", "gateway.open")
        .into_iter()
        .filter(|r| r.span.status.as_ref().is_none_or(|s| s.code != ERROR))
        .count();
    assert!(fine >= 1, "the successful open is marked as failed too");
    first.close().await;
    cluster.assert_no_panic();
}
