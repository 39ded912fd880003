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
    standalone::Standalone,
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

fn named<'a>(spans: &'a [Received], service: &str, name: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|r| r.service == service && r.span.name == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_edit_is_one_trace_across_gateway_and_docnode() {
    let (collector, endpoint) = Collector::start().await;
    let env = |_: usize, _: &Setup| otel_env(&endpoint);
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
    // A tight edit budget, so one client can be rate-limited on purpose.
    let gateway_env = |_: usize, _: &Setup| {
        vec![
            ("EDITS_PER_SECOND".to_owned(), "1".to_owned()),
            ("EDIT_BURST".to_owned(), "1".to_owned()),
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
    let gateway_page = http_get(cluster.gateways[0].ready_port, "/metrics").await.1;
    let docnode_page = http_get(cluster.docnodes[0].ready_port, "/metrics").await.1;
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
        ],
    );
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
    let server = Standalone::start().await;
    let document = doc("standalone-metrics");
    let mut client = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("client joins");
    client.insert(0, "one process").await.expect("edit sent");
    client.settle(WAIT).await.expect("edit acknowledged");
    let (status, page) = server.get("/metrics").await;
    assert_eq!(status, 200);
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
        ],
    );
    assert_documented(&declared);
    client.close().await;
    server.assert_no_panic();
}
