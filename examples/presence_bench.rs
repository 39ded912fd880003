//! Presence fan-out under cursor traffic: N clients on one document move their cursors at a
//! fixed rate while one more client edits, once with the cursors still and once moving.
//! Prints the UserCursor frames clients receive per second, the server's CPU (with --pid)
//! and the edit round-trip latency of both phases. Loopback only; bounded by --seconds.
//!
//! ```text
//! cargo build --release --bin codraft --example presence_bench
//! DATA_DIR=$(mktemp -d) PORT=3077 target/release/codraft &
//! target/release/examples/presence_bench --url ws://127.0.0.1:3077 --pid $!
//! ```

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use codraft_testkit::client::{Client, Event, Options};

struct Settings {
    url: String,
    clients: usize,
    hz: u64,
    seconds: u64,
    pid: Option<u32>,
}

fn settings() -> Result<Settings, String> {
    let mut s = Settings {
        url: "ws://127.0.0.1:3030".into(),
        clients: 64,
        hz: 30,
        seconds: 5,
        pid: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => s.url = value.clone(),
            "--clients" => s.clients = number()? as usize,
            "--hz" => s.hz = number()?.max(1),
            "--seconds" => s.seconds = number()?.clamp(1, 120),
            "--pid" => s.pid = Some(number()? as u32),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(s)
}

/// CPU seconds (user + system) of a process so far, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

struct Phase {
    cursor_frames_per_sec: f64,
    cursor_sends_per_sec: f64,
    cpu_percent: Option<f64>,
    p50: Duration,
    p99: Duration,
    max: Duration,
    edits: usize,
}

async fn phase(
    s: &Settings,
    movers: Vec<Client>,
    editor: &mut Client,
    moving: bool,
) -> (Vec<Client>, Phase) {
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs(s.seconds);
    let cpu_before = s.pid.and_then(cpu_seconds);
    let started = Instant::now();
    let tasks: Vec<_> = movers
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            let (received, sent) = (Arc::clone(&received), Arc::clone(&sent));
            let period = Duration::from_micros(1_000_000 / s.hz);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                let deadline = tokio::time::Instant::now() + duration;
                let mut position = i as u64;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = tick.tick(), if moving => {
                            position = (position + 7) % (client.len() + 1);
                            if client.set_cursor(&[position], &[]).await.is_ok() {
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        event = client.recv_event() => match event {
                            Ok(Event::UserCursor(..)) => { received.fetch_add(1, Ordering::Relaxed); }
                            Ok(_) => {}
                            Err(e) => { eprintln!("client {i}: {e}"); break; }
                        },
                    }
                }
                let _ = client.flush_pending().await;
                client
            })
        })
        .collect();
    let mut latencies = Vec::new();
    while started.elapsed() < duration {
        let t = Instant::now();
        let len = editor.len();
        if editor.insert(len, "x").await.is_err()
            || editor.settle(Duration::from_secs(10)).await.is_err()
        {
            eprintln!("editor failed");
            break;
        }
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut movers = Vec::new();
    for task in tasks {
        if let Ok(client) = task.await {
            movers.push(client);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_percent = match (cpu_before, s.pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(100.0 * (b - a) / elapsed),
        _ => None,
    };
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let result = Phase {
        cursor_frames_per_sec: received.load(Ordering::Relaxed) as f64 / elapsed,
        cursor_sends_per_sec: sent.load(Ordering::Relaxed) as f64 / elapsed,
        cpu_percent,
        p50: at(0.5),
        p99: at(0.99),
        max: latencies.last().copied().unwrap_or_default(),
        edits: latencies.len(),
    };
    (movers, result)
}

#[tokio::main]
async fn main() {
    let s = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("presence_bench: {e}\nflags: --url --clients --hz --seconds --pid");
            std::process::exit(2);
        }
    };
    let document = format!("presence-bench-{:x}", rand::random::<u32>());
    let mut movers = Vec::new();
    for i in 0..s.clients {
        match Client::connect(&s.url, &document, Options::default()).await {
            Ok(mut c) => {
                let _ = c.set_nodelay(true);
                let _ = c.set_info(&format!("user{i}"), (i * 5) as u32).await;
                movers.push(c);
            }
            Err(e) => {
                eprintln!("client {i} could not join: {e}");
                std::process::exit(1);
            }
        }
    }
    let mut editor = match Client::connect(&s.url, &document, Options::default()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("editor could not join: {e}");
            std::process::exit(1);
        }
    };
    let _ = editor.set_nodelay(true);
    let _ = editor.insert(0, "presence bench ").await;
    let _ = editor.settle(Duration::from_secs(10)).await;
    println!(
        "{} clients on one document, cursors at {} Hz, {} s per phase, url {}",
        s.clients, s.hz, s.seconds, s.url
    );
    let (movers, still) = phase(&s, movers, &mut editor, false).await;
    let (movers, moving) = phase(&s, movers, &mut editor, true).await;
    println!(
        "| phase | cursor updates sent/s | UserCursor frames received/s | server CPU | edits | edit RTT p50 | p99 | max |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, p) in [("cursors still", &still), ("cursors moving", &moving)] {
        println!(
            "| {name} | {:.0} | {:.0} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            p.cursor_sends_per_sec,
            p.cursor_frames_per_sec,
            p.cpu_percent
                .map_or("n/a".to_owned(), |c| format!("{c:.0}%")),
            p.edits,
            p.p50.as_secs_f64() * 1e3,
            p.p99.as_secs_f64() * 1e3,
            p.max.as_secs_f64() * 1e3,
        );
    }
    for c in movers {
        c.close().await;
    }
    editor.close().await;
}
