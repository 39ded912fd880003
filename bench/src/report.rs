//! How a scenario's outcome is shown: a Markdown-style table for people (it pastes straight
//! into BENCHMARKS.md), or JSON for tooling, always with the conditions it was measured
//! under (cores, load average before and after), because on a shared machine a figure
//! without its load average means little.

use comfy_table::{presets::ASCII_MARKDOWN, Table};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{compare::Figure, latency::Latency, process};

/// What every scenario's outcome offers the reports.
pub trait Outcome: Serialize {
    /// The scenario's name, as on the command line.
    fn scenario(&self) -> &'static str;
    /// One line naming the scenario and its main settings, for headings and plot titles.
    fn headline(&self) -> String {
        self.scenario().to_owned()
    }
    /// The figures as (name, value) rows, in reading order.
    fn rows(&self) -> Vec<(String, String)>;
    /// The headline figures that `compare` sets side by side (none by default: such a
    /// scenario cannot be compared).
    fn figures(&self) -> Vec<Figure> {
        Vec::new()
    }
    /// What the clients speak, for the table's heading, when it is not the Rustpad protocol
    /// (with or without codraft's exactly-once extension).
    fn clients(&self) -> Option<&'static str> {
        None
    }
    /// Latency distributions worth plotting, with their labels.
    fn latencies(&self) -> Vec<(&'static str, &Latency)>;
    /// Whether the run's correctness checks passed (convergence, everyone admitted…).
    /// Performance targets are not checks: a slow run still passes.
    fn passed(&self) -> bool;
}

/// The conditions a run was measured under.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// The WebSocket URL of the server under test.
    pub url: String,
    /// Whether clients used codraft's exactly-once extension.
    pub exactly_once: bool,
    /// Cores the load generator sees.
    pub cpus: usize,
    /// The CPU model.
    pub cpu_model: Option<String>,
    /// The machine's memory, MiB.
    pub memory_mib: Option<u64>,
    /// 1/5/15-minute load average when the run started.
    pub load_before: Option<[f64; 3]>,
    /// 1/5/15-minute load average when it ended.
    pub load_after: Option<[f64; 3]>,
    /// Seconds since the Unix epoch at the start.
    pub started_unix: u64,
}

impl Environment {
    /// Captures the machine's state before a run.
    pub fn capture(url: &str, exactly_once: bool) -> Self {
        Self {
            url: url.to_owned(),
            exactly_once,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: process::cpu_model(),
            memory_mib: process::memory_mib(),
            load_before: process::load_average(),
            load_after: None,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Records the load average at the end of the run.
    pub fn finish(&mut self) {
        self.load_after = process::load_average();
    }
}

fn load(values: Option<[f64; 3]>) -> String {
    values.map_or("unknown".into(), |[a, b, c]| {
        format!("{a:.2} {b:.2} {c:.2}")
    })
}

/// The outcome and its environment as a Markdown table with a heading line.
pub fn table(outcome: &impl Outcome, environment: &Environment) -> String {
    let mut table = Table::new();
    table.load_preset(ASCII_MARKDOWN);
    table.set_header(vec!["figure", "value"]);
    for (name, value) in outcome.rows() {
        table.add_row(vec![name, value]);
    }
    table.add_row(vec![
        "load average before / after (1, 5, 15 min)".to_owned(),
        format!(
            "{} / {}",
            load(environment.load_before),
            load(environment.load_after)
        ),
    ]);
    table.add_row(vec![
        "machine".to_owned(),
        format!(
            "{} cores, {} MiB, {}",
            environment.cpus,
            environment
                .memory_mib
                .map_or("?".to_owned(), |m| m.to_string()),
            environment.cpu_model.as_deref().unwrap_or("unknown CPU")
        ),
    ]);
    let verdict = if outcome.passed() {
        "checks passed"
    } else {
        "CHECKS FAILED"
    };
    format!(
        "{} against {} ({}{verdict})\n\n{table}\n",
        outcome.headline(),
        environment.url,
        match outcome.clients() {
            Some(clients) => format!("{clients}; "),
            None if environment.exactly_once => "exactly-once clients; ".to_owned(),
            None => "Rustpad-protocol clients; ".to_owned(),
        },
    )
}

/// The outcome and its environment as one JSON object.
pub fn json(outcome: &impl Outcome, environment: &Environment) -> Value {
    json!({
        "scenario": outcome.scenario(),
        "passed": outcome.passed(),
        "environment": environment,
        "result": outcome,
    })
}

/// A count per second, rounded for reading.
pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// A rate for a table cell: `12,345/s`.
pub fn rate(value: f64) -> String {
    format!("{}/s", thousands(value.round() as u64))
}

/// An integer with thousands separators: `280,000`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A byte count for people: `1.25 MiB`.
pub fn bytes(value: u64) -> String {
    const KIB: f64 = 1024.0;
    let v = value as f64;
    if v >= KIB * KIB {
        format!("{:.2} MiB", v / KIB / KIB)
    } else if v >= KIB {
        format!("{:.1} KiB", v / KIB)
    } else {
        format!("{value} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(280_000), "280,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(rate(20_000.4), "20,000/s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(bytes(3 << 20), "3.00 MiB");
        assert_eq!(per_second(10, 0.0), 0.0);
    }
}
