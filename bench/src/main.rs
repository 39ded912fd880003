//! `codraft-bench`: the load generator's command line. Parses the arguments, runs one
//! scenario from the library (bench/src/scenario/) — or, with `compare`, runs it against two
//! servers one after the other (bench/src/compare.rs) — prints its table or JSON and, with
//! `--svg`, writes its latency plot. Exit status: 0 when the run's checks passed, 1 when
//! they failed or the run could not finish, 2 for bad arguments.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use codraft_bench::{
    compare::{self, Comparison, Contender},
    plot, process,
    report::{self, Environment, Outcome},
    scenario::{
        failover, idle, join_storm, late_join, soak, typing, yjs_documents, yjs_typing, RunOptions,
        ScenarioError,
    },
};

/// Load generator for codraft (and any Rustpad-protocol server).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// WebSocket base URL of the server under test; for the yjs-* scenarios the rooms'
    /// prefix (codraft: ws://HOST:PORT/yjs; y-websocket's server: ws://HOST:PORT).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:3030")]
    url: String,
    /// Use codraft's exactly-once extension (client ids and sequence numbers); by default
    /// only the Rustpad-compatible protocol is spoken. With `compare`, for --url only.
    #[arg(long, global = true)]
    exactly_once: bool,
    /// The server at --url is Rustpad's own: it sends no History to a joiner of an empty
    /// document, so joins end at Identity (and --exactly-once is not available).
    #[arg(long, global = true, conflicts_with = "exactly_once")]
    rustpad: bool,
    /// Server process id, to report its CPU and memory from /proc.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Write a latency percentile plot (SVG) to this file.
    #[arg(long, global = true)]
    svg: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, global = true)]
    quiet: bool,
    /// The workload, or a comparison of two servers.
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Scenario(Scenario),
    /// Runs a scenario against --url, then against --against; prints both outcomes and the
    /// ratios of their headline figures (typing and idle only).
    Compare(CompareArgs),
}

#[derive(Subcommand)]
enum Scenario {
    /// Documents × clients typing at random positions; throughput, latency, convergence.
    Typing(typing::TypingConfig),
    /// Many idle connections; connect rate and server memory per connection.
    Idle(idle::IdleConfig),
    /// Many clients joining one document at once.
    JoinStorm(join_storm::JoinStormConfig),
    /// A document with a long history; how fast a newcomer gets its text.
    LateJoin(late_join::LateJoinConfig),
    /// Start a cluster, kill document owners under load, time the failover.
    Failover(failover::FailoverConfig),
    /// Many documents opened, edited and left; do they unload, is every text intact?
    Soak(soak::SoakConfig),
    /// Yjs documents × y-websocket providers inserting characters; updates/s, round trip.
    YjsTyping(yjs_typing::YjsTypingConfig),
    /// Many idle y-websocket providers (synced); server memory per connection.
    YjsIdle(idle::IdleConfig),
    /// Many Yjs documents loaded with a small text; server memory per document.
    YjsDocuments(yjs_documents::YjsDocumentsConfig),
}

impl Scenario {
    /// The scenario's name on the command line.
    fn name(&self) -> &'static str {
        match self {
            Scenario::Typing(_) => "typing",
            Scenario::Idle(_) => "idle",
            Scenario::JoinStorm(_) => "join-storm",
            Scenario::LateJoin(_) => "late-join",
            Scenario::Failover(_) => "failover",
            Scenario::Soak(_) => "soak",
            Scenario::YjsTyping(_) => "yjs-typing",
            Scenario::YjsIdle(_) => "yjs-idle",
            Scenario::YjsDocuments(_) => "yjs-documents",
        }
    }

    /// Whether `compare` can run it: it has headline figures and runs against a given URL.
    fn comparable(&self) -> bool {
        matches!(
            self,
            Scenario::Typing(_)
                | Scenario::Idle(_)
                | Scenario::YjsTyping(_)
                | Scenario::YjsIdle(_)
                | Scenario::YjsDocuments(_)
        )
    }
}

/// Settings of `compare`: the second server, and what to call both in the tables.
#[derive(Args)]
struct CompareArgs {
    /// WebSocket base URL of the server to compare with, e.g. Rustpad's server at
    /// ws://127.0.0.1:3031, spoken to as Rustpad's own (see --rustpad); for the yjs-*
    /// scenarios the rooms' prefix, e.g. y-websocket's server at ws://127.0.0.1:1234.
    #[arg(long)]
    against: String,
    /// That server's process id, to report its CPU and memory from /proc.
    #[arg(long)]
    against_pid: Option<u32>,
    /// Name of the server at --url in the tables (the ratios' numerator).
    #[arg(long, default_value = "codraft")]
    label_a: String,
    /// Name of the server at --against in the tables (the ratios' denominator).
    #[arg(long, default_value = "rustpad")]
    label_b: String,
    /// The workload to run against both (typing, idle or a yjs-* scenario), with its
    /// settings.
    #[command(subcommand)]
    scenario: Scenario,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Compare(args) = &cli.command {
        if !args.scenario.comparable() {
            eprintln!(
                "codraft-bench: {} cannot be compared; compare runs typing, idle and yjs-*",
                args.scenario.name()
            );
            return ExitCode::from(2);
        }
    }
    // Every client is an open file; the soft limit is often far below the hard one.
    process::raise_open_files_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = RunOptions {
        url: cli.url.trim_end_matches('/').to_owned(),
        exactly_once: cli.exactly_once,
        rustpad: cli.rustpad,
        pid: cli.pid,
        progress: !cli.quiet,
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Scenario(scenario) => run_scenario(&cli, &run, scenario).await,
            Command::Compare(args) => run_comparison(&cli, &run, args).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("codraft-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one scenario against --url; returns whether its checks passed.
async fn run_scenario(cli: &Cli, run: &RunOptions, scenario: &Scenario) -> Result<bool, String> {
    let mut environment = Environment::capture(&run.url, run.exactly_once);
    match scenario {
        Scenario::Typing(config) => finish(cli, &mut environment, typing::run(run, config).await),
        Scenario::Idle(config) => finish(cli, &mut environment, idle::run(run, config).await),
        Scenario::JoinStorm(config) => {
            finish(cli, &mut environment, join_storm::run(run, config).await)
        }
        Scenario::LateJoin(config) => {
            finish(cli, &mut environment, late_join::run(run, config).await)
        }
        Scenario::Soak(config) => finish(cli, &mut environment, soak::run(run, config).await),
        Scenario::YjsTyping(config) => {
            finish(cli, &mut environment, yjs_typing::run(run, config).await)
        }
        Scenario::YjsIdle(config) => {
            finish(cli, &mut environment, idle::run_yjs(run, config).await)
        }
        Scenario::YjsDocuments(config) => {
            finish(cli, &mut environment, yjs_documents::run(run, config).await)
        }
        Scenario::Failover(config) => match failover::run(config).await {
            Ok(outcome) => {
                if cli.json {
                    println!("{:#}", outcome.json());
                } else {
                    println!("{}", outcome.table(config));
                }
                Ok(outcome.converged)
            }
            Err(e) => Err(e.to_string()),
        },
    }
}

/// Runs one scenario against --url and then --against, and prints the comparison; returns
/// whether both runs' checks passed.
async fn run_comparison(cli: &Cli, run: &RunOptions, args: &CompareArgs) -> Result<bool, String> {
    let a = Contender {
        label: args.label_a.clone(),
        run: run.clone(),
    };
    let b = Contender::rustpad(&args.label_b, &args.against, args.against_pid, run.progress);
    match &args.scenario {
        Scenario::Typing(config) => {
            let compared = compare::run(&a, &b, async |run| typing::run(run, config).await).await;
            show_comparison(cli, compared.map_err(|e| e.to_string())?)
        }
        Scenario::Idle(config) => {
            let compared = compare::run(&a, &b, async |run| idle::run(run, config).await).await;
            show_comparison(cli, compared.map_err(|e| e.to_string())?)
        }
        Scenario::YjsTyping(config) => {
            let compared =
                compare::run(&a, &b, async |run| yjs_typing::run(run, config).await).await;
            show_comparison(cli, compared.map_err(|e| e.to_string())?)
        }
        Scenario::YjsIdle(config) => {
            let compared = compare::run(&a, &b, async |run| idle::run_yjs(run, config).await).await;
            show_comparison(cli, compared.map_err(|e| e.to_string())?)
        }
        Scenario::YjsDocuments(config) => {
            let compared =
                compare::run(&a, &b, async |run| yjs_documents::run(run, config).await).await;
            show_comparison(cli, compared.map_err(|e| e.to_string())?)
        }
        other => Err(format!(
            "{} cannot be compared; compare runs typing, idle and yjs-*",
            other.name()
        )),
    }
}

/// Prints a comparison and writes both runs' latencies into one plot; returns whether both
/// runs' checks passed.
fn show_comparison(cli: &Cli, comparison: Comparison<impl Outcome>) -> Result<bool, String> {
    if cli.json {
        println!("{:#}", comparison.json());
    } else {
        println!("{}", comparison.table());
    }
    if let Some(path) = &cli.svg {
        let mut labels = Vec::new();
        let mut histograms = Vec::new();
        for side in [&comparison.a, &comparison.b] {
            for (name, latency) in side.outcome.latencies() {
                labels.push(format!("{}: {name}", side.label));
                histograms.push(latency);
            }
        }
        let series: Vec<(&str, _)> = labels.iter().map(String::as_str).zip(histograms).collect();
        let title = format!(
            "{} and {}: {}",
            comparison.a.label,
            comparison.b.label,
            comparison.a.outcome.headline()
        );
        plot::latency_svg(path, &title, &series).map_err(|e| e.to_string())?;
        if !cli.json {
            println!("latency plot written to {}", path.display());
        }
    }
    Ok(comparison.passed())
}

/// Prints the outcome and writes the plot; returns whether the run's checks passed.
fn finish(
    cli: &Cli,
    environment: &mut Environment,
    outcome: Result<impl Outcome, ScenarioError>,
) -> Result<bool, String> {
    let outcome = outcome.map_err(|e| e.to_string())?;
    environment.finish();
    if cli.json {
        println!("{:#}", report::json(&outcome, environment));
    } else {
        println!("{}", report::table(&outcome, environment));
    }
    if let Some(path) = &cli.svg {
        let load = match (environment.load_before, environment.load_after) {
            (Some([before, ..]), Some([after, ..])) => {
                format!(" (load average {before:.1} → {after:.1})")
            }
            _ => String::new(),
        };
        let title = format!("codraft {}{load}", outcome.headline());
        plot::latency_svg(path, &title, &outcome.latencies()).map_err(|e| e.to_string())?;
        if !cli.json {
            println!("latency plot written to {}", path.display());
        }
    }
    Ok(outcome.passed())
}

#[cfg(test)]
mod tests {
    use clap::{error::ErrorKind, CommandFactory};

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("codraft-bench").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn compare_takes_a_scenario_with_its_own_settings() {
        let cli = parse(&[
            "--url",
            "ws://127.0.0.1:3030",
            "--pid",
            "11",
            "compare",
            "--against",
            "ws://127.0.0.1:3031/",
            "--against-pid",
            "22",
            "typing",
            "--docs",
            "100",
            "--rate",
            "0",
        ])
        .expect("parses");
        assert_eq!(cli.pid, Some(11));
        let Command::Compare(args) = cli.command else {
            panic!("not a comparison");
        };
        assert_eq!(args.against, "ws://127.0.0.1:3031/");
        assert_eq!(args.against_pid, Some(22));
        assert_eq!(
            (args.label_a.as_str(), args.label_b.as_str()),
            ("codraft", "rustpad")
        );
        let Scenario::Typing(config) = args.scenario else {
            panic!("not typing");
        };
        assert_eq!((config.docs, config.clients, config.rate), (100, 4, 0.0));
    }

    #[test]
    fn a_timeline_interval_is_between_a_millisecond_and_a_minute() {
        let timeline = |value: &str| {
            parse(&["typing", "--timeline", value]).map(|cli| match cli.command {
                Command::Scenario(Scenario::Typing(config)) => config.timeline,
                _ => None,
            })
        };
        assert_eq!(timeline("500").expect("parses"), Some(500));
        for bad in ["0", "60001", "half"] {
            let error = timeline(bad).expect_err(bad);
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{bad}: {error}");
        }
        let plain = parse(&["typing"]).expect("parses");
        assert!(
            matches!(plain.command, Command::Scenario(Scenario::Typing(ref c)) if c.timeline.is_none())
        );
    }

    #[test]
    fn global_flags_and_labels_go_anywhere_before_the_scenario() {
        let cli = parse(&[
            "compare",
            "--json",
            "--exactly-once",
            "--against",
            "ws://b",
            "--label-a",
            "cluster",
            "--label-b",
            "memory",
            "idle",
            "--connections",
            "5000",
            "--quiet",
        ])
        .expect("parses");
        assert!(cli.json && cli.exactly_once && cli.quiet);
        let Command::Compare(args) = cli.command else {
            panic!("not a comparison");
        };
        assert_eq!(
            (args.label_a.as_str(), args.label_b.as_str()),
            ("cluster", "memory")
        );
        assert!(matches!(args.scenario, Scenario::Idle(ref c) if c.connections == 5000));
    }

    #[test]
    fn compare_needs_the_other_server_and_a_scenario() {
        let missing = parse(&["compare", "typing"]).err().map(|e| e.kind());
        assert_eq!(missing, Some(ErrorKind::MissingRequiredArgument));
        let no_scenario = parse(&["compare", "--against", "ws://b"])
            .err()
            .map(|e| e.kind());
        assert_eq!(no_scenario, Some(ErrorKind::MissingSubcommand));
        let nested = parse(&["compare", "--against", "ws://b", "compare"]).err();
        assert_eq!(nested.map(|e| e.kind()), Some(ErrorKind::InvalidSubcommand));
    }

    #[test]
    fn only_typing_idle_and_yjs_can_be_compared() {
        for (scenario, comparable) in [
            ("typing", true),
            ("idle", true),
            ("yjs-typing", true),
            ("yjs-idle", true),
            ("yjs-documents", true),
            ("join-storm", false),
            ("late-join", false),
            ("soak", false),
        ] {
            let cli = parse(&["compare", "--against", "ws://b", scenario]).expect("parses");
            let Command::Compare(args) = cli.command else {
                panic!("not a comparison");
            };
            assert_eq!(args.scenario.name(), scenario);
            assert_eq!(args.scenario.comparable(), comparable, "{scenario}");
        }
    }

    #[test]
    fn single_runs_parse_as_before() {
        let cli = parse(&["--rustpad", "typing", "--seconds", "2"]).expect("parses");
        assert!(cli.rustpad);
        assert!(matches!(
            cli.command,
            Command::Scenario(Scenario::Typing(ref c)) if c.seconds == 2.0
        ));
        let both = parse(&["--rustpad", "--exactly-once", "typing"]).err();
        assert_eq!(both.map(|e| e.kind()), Some(ErrorKind::ArgumentConflict));
    }
}
