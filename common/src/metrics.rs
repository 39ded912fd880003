//! Prometheus plumbing both services share: rendering a registry as the text format, a
//! counter read from an atomic at scrape time, and the series every codraft process exports
//! whatever its role ([`register_process`]: `process_*` and `codraft_build_info`).
//!
//! Each process has one [`prometheus::Registry`]; the gateway and the docnode register their
//! own series in it. Standalone mode hands the docnode's registry to the gateway, so its one
//! `/metrics` shows both and no series is registered twice. The series themselves live with
//! the code they measure (`gateway/src/metrics.rs`, `docnode/src/metrics.rs`) and are listed
//! in docs/operations.md.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, atomic::Ordering, Arc},
};

use prometheus::{
    core::{Collector, Desc},
    proto::{Counter, Metric, MetricFamily, MetricType},
    Encoder, Registry, TextEncoder,
};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every series of `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding into memory fails only on a malformed family, which the registry's own
    // checks at registration rule out; an empty page is the safe answer then.
    if TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .is_err()
    {
        out.clear();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The version every binary of this build reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit of this build (`unknown` outside a git checkout; see common/build.rs).
pub const COMMIT: &str = env!("CODRAFT_COMMIT");

/// Registers the series that describe the process rather than its work: `process_*` (CPU,
/// resident memory, open and maximum file descriptors, threads, start time; Linux only) and
/// `codraft_build_info{version,commit}` (always 1, to join on or to spot a mixed rollout).
/// Registering them twice in one registry (standalone mode, where the gateway and the docnode
/// share one) is not an error: the second call finds them there and leaves them.
pub fn register_process(registry: &Registry) -> prometheus::Result<()> {
    let build = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "codraft_build_info",
            "The running build: always 1, labelled with its version and git commit.",
        ),
        &["version", "commit"],
    )?;
    build.with_label_values(&[VERSION, COMMIT]).set(1);
    let collectors: Vec<Box<dyn Collector>> = vec![
        Box::new(build),
        #[cfg(target_os = "linux")]
        Box::new(prometheus::process_collector::ProcessCollector::for_self()),
    ];
    for collector in collectors {
        match registry.register(collector) {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A counter whose value is an [`AtomicU64`] kept by someone else (e.g. a store's own
/// counters), read at scrape time, so the hot path keeps a plain `fetch_add`.
#[derive(Clone)]
pub struct AtomicCounter {
    desc: Desc,
    value: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl AtomicCounter {
    /// A counter named `name` reading `value`.
    pub fn new(name: &str, help: &str, value: Arc<AtomicU64>) -> prometheus::Result<Self> {
        Self::from_fn(name, help, move || value.load(Ordering::Relaxed))
    }

    /// A counter named `name` whose value `read` returns (it must never decrease).
    pub fn from_fn(
        name: &str,
        help: &str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> prometheus::Result<Self> {
        Ok(Self {
            desc: Desc::new(name.into(), help.into(), Vec::new(), HashMap::new())?,
            value: Arc::new(read),
        })
    }
}

impl Collector for AtomicCounter {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut counter = Counter::default();
        counter.set_value((self.value)() as f64);
        let mut metric = Metric::default();
        metric.set_counter(counter);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::COUNTER);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_counter_renders_its_current_value() {
        let registry = Registry::new();
        let value = Arc::new(AtomicU64::new(3));
        let counter = AtomicCounter::new("codraft_test_total", "A test.", Arc::clone(&value))
            .expect("valid name");
        registry.register(Box::new(counter)).expect("registers");
        value.fetch_add(2, Ordering::Relaxed);
        let text = render(&registry);
        assert!(text.contains("# TYPE codraft_test_total counter"), "{text}");
        assert!(text.contains("codraft_test_total 5"), "{text}");
    }

    #[test]
    fn process_and_build_series_register_once_even_when_asked_twice() {
        let registry = Registry::new();
        register_process(&registry).expect("first registration");
        register_process(&registry).expect("a second registration is a no-op");
        let text = render(&registry);
        let build = format!("codraft_build_info{{commit=\"{COMMIT}\",version=\"{VERSION}\"}} 1");
        assert!(text.contains(&build), "{text}");
        assert_eq!(
            text.matches("# TYPE codraft_build_info gauge").count(),
            1,
            "{text}"
        );
        #[cfg(target_os = "linux")]
        for name in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_cpu_seconds_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name}")),
                "{name} missing: {text}"
            );
        }
    }
}
