//! `codraft-bench`: the load generator's command line. Parses the arguments, runs one
//! scenario from the library (bench/src/scenario/), prints its table or JSON and, with
//! `--svg`, writes its latency plot. Exit status: 0 when the run's checks passed, 1 when
//! they failed or the run could not finish, 2 for bad arguments (clap's).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use codraft_bench::{
    plot, process,
    report::{self, Environment, Outcome},
    scenario::{failover, idle, join_storm, late_join, soak, typing, RunOptions, ScenarioError},
};

/// Load generator for codraft (and any Rustpad-protocol server).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// WebSocket base URL of the server under test.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:3030")]
    url: String,
    /// Use codraft's exactly-once extension (client ids and sequence numbers); by default
    /// only the Rustpad-compatible protocol is spoken.
    #[arg(long, global = true)]
    exactly_once: bool,
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
    /// The workload.
    #[command(subcommand)]
    scenario: Scenario,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        pid: cli.pid,
        progress: !cli.quiet,
    };
    let mut environment = Environment::capture(&run.url, run.exactly_once);
    let result = runtime.block_on(async {
        match &cli.scenario {
            Scenario::Typing(config) => {
                finish(&cli, &mut environment, typing::run(&run, config).await)
            }
            Scenario::Idle(config) => finish(&cli, &mut environment, idle::run(&run, config).await),
            Scenario::JoinStorm(config) => {
                finish(&cli, &mut environment, join_storm::run(&run, config).await)
            }
            Scenario::LateJoin(config) => {
                finish(&cli, &mut environment, late_join::run(&run, config).await)
            }
            Scenario::Soak(config) => finish(&cli, &mut environment, soak::run(&run, config).await),
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
