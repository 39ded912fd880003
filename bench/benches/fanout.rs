//! What a gateway does with one commit's History frame for a document's four clients (the
//! 100 × 4 typing scenario): the author's copy carries its `seq`, the other three are the
//! same text.
//!
//! - `fanout/copy_each`: a copy of the entries for each client and a rendering each, as the
//!   gateway did before the fan-out was shared (docs/architecture.md, "One rendering per
//!   fan-out").
//! - `fanout/shared`: the entries shared, rendered once for the author and once for the
//!   other three.
//!
//! Run with `cargo bench -p codraft-bench --bench fanout`.

use std::hint::black_box;

use codraft_gateway::protocol::{render, render_shared};
use codraft_proto::{self as pb, component::Kind as Part, in_process::Fanout};
use criterion::{criterion_group, criterion_main, Criterion};

/// The clients of the document; the first typed the entry.
const CLIENTS: [&str; 4] = ["tab0", "tab1", "tab2", "tab3"];

/// One typed snippet in a document of about a thousand characters, by `CLIENTS[0]`.
fn entries() -> Vec<pb::HistoryEntry> {
    let part = |kind| pb::Component { kind: Some(kind) };
    vec![pb::HistoryEntry {
        user_id: 3,
        operation: Some(pb::Operation {
            components: vec![
                part(Part::Retain(412)),
                part(Part::Insert("let x = 1;".into())),
                part(Part::Retain(587)),
            ],
        }),
        client_id: Some(CLIENTS[0].into()),
        seq: Some(41),
    }]
}

fn fanout(c: &mut Criterion) {
    let entries = entries();
    let mut group = c.benchmark_group("fanout");
    group.bench_function("copy_each", |b| {
        b.iter(|| {
            let fanout = Fanout::new(black_box(entries.clone()));
            for client in CLIENTS {
                let frame = fanout.frame(1000);
                black_box(render(&frame, Some(client), false));
            }
        })
    });
    group.bench_function("shared", |b| {
        b.iter(|| {
            let fanout = Fanout::new(black_box(entries.clone()));
            for client in CLIENTS {
                black_box(render_shared(1000, &fanout, Some(client)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
