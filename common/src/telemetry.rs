//! Logs and traces, set up the same way by every codraft binary.
//!
//! Logs go to standard error, human-readable by default and one JSON object per line with
//! `LOG_FORMAT=json` (what log shippers on Kubernetes want). `RUST_LOG` filters them as usual
//! and defaults to `info`. While traces are exported, a JSON line logged inside a traced span
//! carries that span's `trace_id` and `span_id` ([`TraceIds`]), so a log search leads to the
//! trace and a trace to its log lines.
//!
//! Traces are exported over OTLP/gRPC when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and are off otherwise, so a laptop run pays
//! nothing for them. Everything else the OpenTelemetry SDK reads from its own standard
//! variables: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, the sampler
//! (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`; parent-based always-on by default, so a
//! docnode keeps exactly the traces its gateway sampled) and the batch exporter
//! (`OTEL_BSP_SCHEDULE_DELAY` and friends). Spans are ordinary `tracing` spans; the bridge
//! exports those at `info` and above whatever `RUST_LOG` says, so quieting the logs never
//! silently drops traces.
//!
//! `https://` collectors are verified against the system roots, or against the CA file in
//! the standard `OTEL_EXPORTER_OTLP_CERTIFICATE` (`OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`),
//! with an optional client certificate (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and
//! `OTEL_EXPORTER_OTLP_CLIENT_KEY`) for collectors that require one. A batch the collector
//! refuses (or cannot be reached for) is logged as a warning: the SDK's own logs are off, and
//! a refused certificate would otherwise lose every trace without a line.
//!
//! A trace crosses the gateway→docnode hop inside the protobuf frames, not the gRPC metadata:
//! one stream carries many edits, each the root of its own trace. [`trace_context`] writes a
//! span's W3C `traceparent` into a frame's map and [`set_remote_parent`] reads it back.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
};

use clap::{Args, ValueEnum};
use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{SpanContext, TraceContextExt, TracerProvider as _},
    Key,
};
use opentelemetry_otlp::WithTonicConfig;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
    Resource,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tracing::{dispatcher::WeakDispatch, Dispatch};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    filter::{LevelFilter, Targets},
    fmt::{
        self,
        format::{FormatEvent, FormatFields, Writer},
        FmtContext,
    },
    prelude::*,
    registry::LookupSpan,
    EnvFilter,
};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line flags (and environment variables) for logging.
#[derive(Debug, Clone, Args)]
pub struct TelemetryConfig {
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Whether [`init`] turned trace export on (see [`traces_enabled`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported. Hot paths (a span per edit) check this and use
/// `Span::none()` otherwise: the log layer would still build and format every span, which
/// costs more than the edit itself when nobody looks at the spans.
pub fn traces_enabled() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (e.g. a malformed OTEL_EXPORTER_OTLP_ENDPOINT).
    #[error("cannot export traces (check OTEL_EXPORTER_OTLP_ENDPOINT): {0}")]
    Exporter(String),
}

/// Keeps trace export running; dropping it (or [`TelemetryGuard::shutdown`]) exports the
/// spans still queued, so the last seconds before a shutdown are not lost.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports what is queued and stops the exporter, off the async worker threads (the
    /// exporter's own thread needs the runtime to send its last batch).
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = tokio::task::spawn_blocking(move || stop(&provider)).await;
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // Dropped on an early return from `main`: flushing blocks, so let the runtime move
        // its other work off this thread first when it can.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| stop(&provider));
            }
            _ => stop(&provider),
        }
    }
}

fn stop(provider: &SdkTracerProvider) {
    if let Err(error) = provider.shutdown() {
        eprintln!("trace export did not shut down cleanly: {error}");
    }
}

/// Whether the standard variables ask for trace export.
fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
}

/// The resource the SDK reads from the environment, named `service` unless
/// `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names the service.
fn resource(service: &'static str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder().with_service_name(service).build()
    }
}

/// The first of the standard variables that is set and not blank.
fn first_var(names: &[&str]) -> Option<PathBuf> {
    names
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty())
        .map(PathBuf::from)
}

/// The exporter's TLS: used only for `https://` endpoints (tonic leaves `http://` plain).
fn otlp_tls() -> Result<ClientTlsConfig, TelemetryError> {
    crate::tls::install_crypto_provider();
    let tls_error = |e: crate::tls::TlsError| TelemetryError::Exporter(e.to_string());
    let mut config = ClientTlsConfig::new();
    config = match first_var(&[
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ]) {
        Some(path) => {
            crate::tls::read_certificates(&path).map_err(tls_error)?;
            config.ca_certificate(Certificate::from_pem(
                crate::tls::read_pem(&path).map_err(tls_error)?,
            ))
        }
        None => config.with_native_roots(),
    };
    let cert = first_var(&[
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    ]);
    let key = first_var(&[
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    ]);
    if let (Some(cert), Some(key)) = (cert, key) {
        crate::tls::read_private_key(&key).map_err(tls_error)?;
        config = config.identity(Identity::from_pem(
            crate::tls::read_pem(&cert).map_err(tls_error)?,
            crate::tls::read_pem(&key).map_err(tls_error)?,
        ));
    }
    Ok(config)
}

/// An exporter that says in the log when a batch does not reach the collector.
#[derive(Debug)]
struct Reporting<E>(E);

impl<E: SpanExporter> SpanExporter for Reporting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.0.export(batch).await;
        if let Err(error) = &result {
            tracing::warn!(%error, spans, "trace export failed (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_CERTIFICATE)");
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

fn tracer_provider(service: &'static str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_tls_config(otlp_tls()?)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(Reporting(exporter))
        .with_resource(resource(service))
        .build())
}

/// Installs the global subscriber: logs as configured and, when the OTLP variables are set,
/// trace export with `service` as the default service name. Call once, at the start of `main`,
/// inside the Tokio runtime (the exporter's gRPC channel lives on it), and keep the guard
/// until the end.
pub fn init(
    config: &TelemetryConfig,
    service: &'static str,
) -> Result<TelemetryGuard, TelemetryError> {
    let provider = if otlp_configured() {
        Some(tracer_provider(service)?)
    } else {
        None
    };
    let dispatch = dispatch(
        config.log_format,
        provider.as_ref().map(|p| p.tracer(service)),
        std::io::stderr,
    );
    // Also routes the `log` crate's records (from dependencies) into the subscriber.
    tracing_subscriber::util::SubscriberInitExt::init(dispatch);
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    Ok(TelemetryGuard { provider })
}

/// The subscriber [`init`] installs, writing log lines to `writer` and, given a tracer,
/// exporting spans through it. Public for tests, which install it for a scope only.
pub fn dispatch<W>(
    format: LogFormat,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    writer: W,
) -> Dispatch
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let me = Arc::new(OnceLock::new());
    let logs = match format {
        LogFormat::Text => fmt::layer().with_writer(writer).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .event_format(TraceIds {
                inner: fmt::format().json(),
                dispatch: Arc::clone(&me),
            })
            .with_writer(writer)
            .boxed(),
    };
    let traces = tracer.map(|tracer| {
        // The exporter's own transport must not trace itself into a feedback loop.
        let spans = Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target("h2", LevelFilter::OFF)
            .with_target("hyper", LevelFilter::OFF)
            .with_target("tonic", LevelFilter::OFF)
            .with_target("tower", LevelFilter::OFF)
            .with_target("opentelemetry", LevelFilter::OFF);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(spans)
    });
    let dispatch = Dispatch::new(
        tracing_subscriber::registry()
            .with(logs.with_filter(filter))
            .with(traces),
    );
    // The formatter asks the subscriber for span contexts; a weak reference, so the
    // subscriber does not keep itself alive.
    let _ = me.set(dispatch.downgrade());
    dispatch
}

/// A JSON event format that puts the W3C trace and span ids of the innermost traced span
/// first on the line (`{"trace_id":"…","span_id":"…",…}`), then whatever `inner` writes.
///
/// The ids come from the OpenTelemetry layer through the subscriber itself, which the
/// formatter reaches by a weak [`Dispatch`] set once the subscriber is built: inside an
/// event the "current dispatcher" is not reachable.
pub struct TraceIds<F> {
    inner: F,
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<F> TraceIds<F> {
    /// The ids of the innermost span of the event's scope that is traced, if any.
    fn ids<S, N>(&self, ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let scope = ctx.event_scope()?;
        for span in scope {
            let Some(context) = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)
            else {
                continue;
            };
            let span = context.span();
            let ids = span.span_context();
            if ids.is_valid() {
                return Some((ids.trace_id().to_string(), ids.span_id().to_string()));
            }
        }
        None
    }
}

impl<S, N, F> FormatEvent<S, N> for TraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = self.ids(ctx) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        // The JSON format writes one object per line: splice the ids in after its `{`.
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}

/// The W3C trace context (`traceparent`, `tracestate`) of `span`, for a frame bound for another
/// service. Empty when tracing is off or the span is not sampled-in at all.
pub fn trace_context(span: &tracing::Span) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
    }
    carrier
}

/// Makes `span` a child of the remote span whose trace context `carrier` holds (see
/// [`trace_context`]); a carrier without one leaves `span` as it was.
pub fn set_remote_parent(span: &tracing::Span, carrier: &HashMap<String, String>) {
    if carrier.is_empty() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(carrier);
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled, and then there is nothing to link.
        let _ = span.set_parent(parent);
    }
}

/// A reference to `span` that another span can link to (see [`add_links`]), if it is traced.
pub fn link_to(span: &tracing::Span) -> Option<SpanLink> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(SpanLink(span_context))
}

/// Links `span` to other spans: how one group commit points at every edit it carried.
pub fn add_links(span: &tracing::Span, links: impl IntoIterator<Item = SpanLink>) {
    for SpanLink(link) in links {
        span.add_link(link);
    }
}

/// A span another span can link to; opaque so callers need no OpenTelemetry types.
#[derive(Debug, Clone)]
pub struct SpanLink(SpanContext);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Log lines written into memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn json(&self) -> Vec<serde_json::Value> {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
                .collect()
        }
    }

    #[test]
    fn json_lines_inside_a_traced_span_carry_its_trace_and_span_ids() {
        let provider = SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let writer = lines.clone();
        let dispatch = dispatch(LogFormat::Json, Some(provider.tracer("test")), move || {
            writer.clone()
        });
        let (trace_id, span_id) = tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("outside any span");
            let span = tracing::info_span!("docnode.edit", document = "d");
            let _entered = span.enter();
            tracing::info!(revision = 3, "inside");
            let context = span.context();
            let ids = context.span().span_context().clone();
            (ids.trace_id().to_string(), ids.span_id().to_string())
        });
        let lines = lines.json();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].get("trace_id").is_none(), "{:?}", lines[0]);
        assert_eq!(lines[1]["trace_id"], trace_id.as_str(), "{:?}", lines[1]);
        assert_eq!(lines[1]["span_id"], span_id.as_str(), "{:?}", lines[1]);
        assert_eq!(trace_id.len(), 32);
        assert_eq!(lines[1]["fields"]["message"], "inside");
        assert_eq!(lines[1]["span"]["name"], "docnode.edit");
    }

    #[test]
    fn json_lines_without_trace_export_are_plain() {
        let lines = Lines::default();
        let writer = lines.clone();
        let dispatch = dispatch(LogFormat::Json, None, move || writer.clone());
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("gateway.open");
            let _entered = span.enter();
            tracing::info!("inside");
        });
        let lines = lines.json();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].get("trace_id").is_none(), "{:?}", lines[0]);
    }
}
