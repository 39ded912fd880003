//! Side by side: one scenario run against two servers, one after the other (codraft first,
//! then a peer such as Rustpad's in-memory server), and the ratios of their headline
//! figures. The machine's speed drifts from day to day, so the ratio of two runs made
//! minutes apart says more than either absolute figure.
//!
//! Each outcome names its headline figures ([`crate::report::Outcome::figures`]); this
//! module pairs them by name, divides the first server's by the second's and shows the
//! result as a table or as one JSON object holding both runs.

use comfy_table::{presets::ASCII_MARKDOWN, Table};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{
    report::{self, rate, Environment, Outcome},
    scenario::{RunOptions, ScenarioError},
};

/// Which way a figure improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// More is better (throughput).
    Higher,
    /// Less is better (latency, memory, CPU).
    Lower,
}

/// What a figure counts, which decides how it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// Events per second.
    #[serde(rename = "/s")]
    PerSecond,
    /// Milliseconds.
    #[serde(rename = "ms")]
    Milliseconds,
    /// Microseconds.
    #[serde(rename = "µs")]
    Microseconds,
    /// Kibibytes.
    #[serde(rename = "KiB")]
    KiB,
}

impl Unit {
    /// A value for a table cell: `12,345/s`, `0.92 ms`, `23.4 µs`, `11.0 KiB`; `—` if absent.
    pub fn format(self, value: Option<f64>) -> String {
        let Some(value) = value else {
            return "—".to_owned();
        };
        match self {
            Unit::PerSecond => rate(value),
            Unit::Milliseconds => format!("{value:.2} ms"),
            Unit::Microseconds => format!("{value:.1} µs"),
            Unit::KiB => format!("{value:.1} KiB"),
        }
    }
}

/// One headline figure of an outcome: what a comparison sets side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// What it is, e.g. `accepted edits`; the same name in both outcomes pairs them.
    pub name: &'static str,
    /// What it counts.
    pub unit: Unit,
    /// Which way it improves.
    pub better: Better,
    /// The value, if this run measured it (server figures need the server's pid).
    pub value: Option<f64>,
}

impl Figure {
    /// A figure that more of is better.
    pub fn higher(name: &'static str, unit: Unit, value: Option<f64>) -> Self {
        Self {
            name,
            unit,
            better: Better::Higher,
            value,
        }
    }

    /// A figure that less of is better.
    pub fn lower(name: &'static str, unit: Unit, value: Option<f64>) -> Self {
        Self {
            name,
            unit,
            better: Better::Lower,
            value,
        }
    }
}

/// One figure of both runs and their ratio.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// The figure's name.
    pub figure: &'static str,
    /// What it counts.
    pub unit: Unit,
    /// Which way it improves.
    pub better: Better,
    /// The first server's value.
    pub a: Option<f64>,
    /// The second server's value.
    pub b: Option<f64>,
    /// `a / b`: absent when either value is, or when `b` is 0.
    pub ratio: Option<f64>,
}

/// `a / b`, when both are known and the quotient is a finite number.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    let quotient = a / b;
    (b != 0.0 && quotient.is_finite()).then_some(quotient)
}

/// The ratio for a table cell, to about two significant digits: `0.30x`, `4.8x`, `120x`;
/// `—` when there is none.
pub fn format_ratio(ratio: Option<f64>) -> String {
    match ratio {
        None => "—".to_owned(),
        Some(r) if r >= 99.5 => format!("{r:.0}x"),
        Some(r) if r >= 9.95 => format!("{r:.1}x"),
        Some(r) => format!("{r:.2}x"),
    }
}

/// Pairs the figures of two runs by name, in the order of `a`'s: `a / b` for each.
pub fn ratios(a: &[Figure], b: &[Figure]) -> Vec<Ratio> {
    a.iter()
        .map(|figure| {
            let other = b
                .iter()
                .find(|other| other.name == figure.name)
                .and_then(|other| other.value);
            Ratio {
                figure: figure.name,
                unit: figure.unit,
                better: figure.better,
                a: figure.value,
                b: other,
                ratio: ratio(figure.value, other),
            }
        })
        .collect()
}

/// One of the two servers: what it is called and how to reach it.
#[derive(Debug, Clone)]
pub struct Contender {
    /// Its name in the tables, e.g. `codraft` or `rustpad`.
    pub label: String,
    /// Where it is and how the clients talk to it.
    pub run: RunOptions,
}

impl Contender {
    /// The server a comparison measures against: spoken to as Rustpad's own server (joins
    /// end at Identity, no exactly-once extension), whatever `--url`'s clients do.
    pub fn rustpad(label: impl Into<String>, url: &str, pid: Option<u32>, progress: bool) -> Self {
        Self {
            label: label.into(),
            run: RunOptions {
                url: url.trim_end_matches('/').to_owned(),
                exactly_once: false,
                rustpad: true,
                pid,
                progress,
            },
        }
    }
}

/// What a reader must know about how two servers were driven to read their ratios right.
pub fn notes(a: &Contender, b: &Contender) -> Vec<String> {
    let mut notes = Vec::new();
    for (one, other) in [(a, b), (b, a)] {
        if one.run.exactly_once && !other.run.exactly_once {
            notes.push(format!(
                "--exactly-once applied to {} only; {} ran with Rustpad-protocol clients",
                one.label, other.label
            ));
        }
    }
    if a.run.pid.is_none() || b.run.pid.is_none() {
        notes.push("server CPU and memory figures need both --pid and --against-pid".to_owned());
    }
    notes
}

/// One server's finished run.
#[derive(Debug)]
pub struct Side<O> {
    /// The server's name in the tables.
    pub label: String,
    /// The conditions the run was measured under.
    pub environment: Environment,
    /// What the run measured.
    pub outcome: O,
}

impl<O: Outcome> Side<O> {
    fn json(&self) -> Value {
        let mut value = report::json(&self.outcome, &self.environment);
        value["label"] = json!(self.label);
        value
    }
}

/// Both runs of one scenario and the ratios of their headline figures.
#[derive(Debug)]
pub struct Comparison<O> {
    /// The first server's run (the numerator).
    pub a: Side<O>,
    /// The second server's run (the denominator).
    pub b: Side<O>,
    /// `a / b` for each headline figure.
    pub ratios: Vec<Ratio>,
    /// What a reader must know to read the ratios right (e.g. protocols that differ).
    pub notes: Vec<String>,
}

/// Why a comparison could not finish: one server's run failed.
#[derive(Debug, thiserror::Error)]
#[error("{label} ({url}): {source}")]
pub struct CompareError {
    /// The server's name.
    pub label: String,
    /// Its URL.
    pub url: String,
    /// Why its run failed.
    pub source: ScenarioError,
}

/// Runs `scenario` against `a`, then against `b`, and compares the outcomes.
pub async fn run<O: Outcome>(
    a: &Contender,
    b: &Contender,
    scenario: impl AsyncFn(&RunOptions) -> Result<O, ScenarioError>,
) -> Result<Comparison<O>, CompareError> {
    let notes = notes(a, b);
    let a = run_one(a, &scenario).await?;
    let b = run_one(b, &scenario).await?;
    let mut comparison = Comparison::new(a, b);
    comparison.notes = notes;
    Ok(comparison)
}

async fn run_one<O: Outcome>(
    contender: &Contender,
    scenario: &impl AsyncFn(&RunOptions) -> Result<O, ScenarioError>,
) -> Result<Side<O>, CompareError> {
    if contender.run.progress {
        eprintln!("{} at {}:", contender.label, contender.run.url);
    }
    let mut environment = Environment::capture(&contender.run.url, contender.run.exactly_once);
    let outcome = scenario(&contender.run)
        .await
        .map_err(|source| CompareError {
            label: contender.label.clone(),
            url: contender.run.url.clone(),
            source,
        })?;
    environment.finish();
    Ok(Side {
        label: contender.label.clone(),
        environment,
        outcome,
    })
}

impl<O: Outcome> Comparison<O> {
    /// Pairs two finished runs.
    pub fn new(a: Side<O>, b: Side<O>) -> Self {
        let ratios = ratios(&a.outcome.figures(), &b.outcome.figures());
        Self {
            a,
            b,
            ratios,
            notes: Vec::new(),
        }
    }

    /// Whether both runs passed their checks.
    pub fn passed(&self) -> bool {
        self.a.outcome.passed() && self.b.outcome.passed()
    }

    /// Both runs' tables, then the ratio table and the notes.
    pub fn table(&self) -> String {
        let mut table = Table::new();
        table.load_preset(ASCII_MARKDOWN);
        let quotient = format!("{} / {}", self.a.label, self.b.label);
        table.set_header(vec![
            "figure",
            &self.a.label,
            &self.b.label,
            &quotient,
            "better",
        ]);
        for row in &self.ratios {
            table.add_row(vec![
                row.figure.to_owned(),
                row.unit.format(row.a),
                row.unit.format(row.b),
                format_ratio(row.ratio),
                match row.better {
                    Better::Higher => "higher",
                    Better::Lower => "lower",
                }
                .to_owned(),
            ]);
        }
        let mut out = format!(
            "{}\n{}\n{quotient}: {}\n\n{table}\n",
            report::table(&self.a.outcome, &self.a.environment),
            report::table(&self.b.outcome, &self.b.environment),
            self.a.outcome.headline(),
        );
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }

    /// Both runs and the ratios as one JSON object.
    pub fn json(&self) -> Value {
        json!({
            "scenario": self.a.outcome.scenario(),
            "passed": self.passed(),
            "a": self.a.json(),
            "b": self.b.json(),
            "ratios": self.ratios,
            "notes": self.notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divides_the_first_by_the_second() {
        assert_eq!(
            ratio(Some(15_988.0), Some(53_973.0)).map(|r| (r * 100.0).round()),
            Some(30.0)
        );
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(Some(0.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(0.0), Some(2.0)), Some(0.0));
    }

    #[test]
    fn formats_ratios_to_two_significant_digits() {
        assert_eq!(format_ratio(Some(15_988.0 / 53_973.0)), "0.30x");
        assert_eq!(format_ratio(Some(52.7 / 11.0)), "4.79x");
        assert_eq!(format_ratio(Some(9.96)), "10.0x");
        assert_eq!(format_ratio(Some(12.34)), "12.3x");
        assert_eq!(format_ratio(Some(123.4)), "123x");
        assert_eq!(format_ratio(None), "—");
    }

    #[test]
    fn formats_values_by_unit() {
        assert_eq!(Unit::PerSecond.format(Some(53_973.4)), "53,973/s");
        assert_eq!(Unit::Milliseconds.format(Some(0.0712)), "0.07 ms");
        assert_eq!(Unit::Microseconds.format(Some(23.44)), "23.4 µs");
        assert_eq!(Unit::KiB.format(Some(11.04)), "11.0 KiB");
        assert_eq!(Unit::KiB.format(None), "—");
    }

    #[test]
    fn pairs_figures_by_name_in_the_first_runs_order() {
        let a = [
            Figure::higher("accepted edits", Unit::PerSecond, Some(16_000.0)),
            Figure::lower("edit round trip p99", Unit::Milliseconds, Some(44.0)),
            Figure::lower(
                "server CPU per accepted edit",
                Unit::Microseconds,
                Some(50.0),
            ),
        ];
        let b = [
            Figure::lower("edit round trip p99", Unit::Milliseconds, Some(22.0)),
            Figure::higher("accepted edits", Unit::PerSecond, Some(64_000.0)),
            Figure::lower("server CPU per accepted edit", Unit::Microseconds, None),
        ];
        let rows = ratios(&a, &b);
        let names: Vec<_> = rows.iter().map(|r| r.figure).collect();
        assert_eq!(
            names,
            [
                "accepted edits",
                "edit round trip p99",
                "server CPU per accepted edit"
            ]
        );
        assert_eq!(rows[0].ratio, Some(0.25));
        assert_eq!(rows[0].better, Better::Higher);
        assert_eq!(
            (rows[1].a, rows[1].b, rows[1].ratio),
            (Some(44.0), Some(22.0), Some(2.0))
        );
        assert_eq!(rows[2].ratio, None, "a figure one run lacks has no ratio");
        assert!(ratios(&a, &[])
            .iter()
            .all(|r| r.b.is_none() && r.ratio.is_none()));
    }

    #[test]
    fn the_other_server_is_driven_as_rustpad_and_the_notes_say_what_differs() {
        let codraft = Contender {
            label: "codraft".into(),
            run: RunOptions {
                exactly_once: true,
                pid: Some(1),
                ..RunOptions::new("ws://127.0.0.1:3030")
            },
        };
        let rustpad = Contender::rustpad("rustpad", "ws://127.0.0.1:3031/", Some(2), false);
        assert_eq!(rustpad.run.url, "ws://127.0.0.1:3031");
        assert!(rustpad.run.rustpad && !rustpad.run.exactly_once);
        assert_eq!(
            notes(&codraft, &rustpad),
            ["--exactly-once applied to codraft only; rustpad ran with Rustpad-protocol clients"]
        );
        let plain = Contender {
            run: RunOptions::new("ws://127.0.0.1:3030"),
            ..codraft
        };
        assert_eq!(
            notes(&plain, &rustpad),
            ["server CPU and memory figures need both --pid and --against-pid"]
        );
    }

    #[test]
    fn ratio_rows_serialise_with_readable_units() {
        let rows = ratios(
            &[Figure::lower(
                "server RSS per idle connection",
                Unit::KiB,
                Some(52.7),
            )],
            &[Figure::lower(
                "server RSS per idle connection",
                Unit::KiB,
                Some(11.0),
            )],
        );
        let value = serde_json::to_value(&rows).expect("serialises");
        assert_eq!(value[0]["unit"], "KiB");
        assert_eq!(value[0]["better"], "lower");
        assert_eq!(value[0]["a"], 52.7);
        let quotient = value[0]["ratio"].as_f64().expect("a number");
        assert!((quotient - 52.7 / 11.0).abs() < 1e-9, "{quotient}");
    }
}
