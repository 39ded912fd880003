//! Micro-benchmarks of the OT engine (codraft-ot): transform, apply and compose on a small
//! document and on a 1 MiB one.
//!
//! The figure the foundation issue asks for is `apply/rope_1MiB_small_edit_at_random_position`:
//! the document actor applies every committed edit to a rope, so its cost must not grow with
//! the document. `apply/string_1MiB_small_edit_at_random_position` is the same edit through
//! `apply_str` (what a String-based server like Rustpad does), for contrast.
//!
//! Run with `cargo bench -p codraft-bench --bench ot` (add `-- apply` to run one group).

use std::hint::black_box;
use std::time::Duration;

use codraft_ot::Operation;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rand::{rngs::StdRng, Rng, SeedableRng};
use ropey::Rope;

/// A document of at least `bytes` UTF-8 bytes: code-like lines with some non-ASCII text.
fn document(bytes: usize) -> String {
    let line = "let x = \"héllo, 世界 🎉\"; // lorem ipsum dolor sit amet\n";
    let mut text = String::with_capacity(bytes + line.len());
    while text.len() < bytes {
        text.push_str(line);
    }
    text
}

/// Inserts `s` at `at` in a document of `len` code points.
fn insert(len: u64, at: u64, s: &str) -> Operation {
    let mut op = Operation::new();
    op.retain(at).insert(s).retain(len - at);
    op
}

/// Deletes `n` code points at `at` in a document of `len` code points.
fn delete(len: u64, at: u64, n: u64) -> Operation {
    let mut op = Operation::new();
    op.retain(at).delete(n).retain(len - at - n);
    op
}

/// Typing-sized edits (an insert or a short delete) at random positions.
fn random_edits(len: u64, count: usize, seed: u64) -> Vec<Operation> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            if rng.random_bool(0.7) {
                insert(len, rng.random_range(0..=len), "é")
            } else {
                delete(len, rng.random_range(0..len - 2), 2)
            }
        })
        .collect()
}

fn transform(c: &mut Criterion) {
    let mut group = c.benchmark_group("transform");
    for (name, bytes) in [("small_doc", 100), ("1MiB_doc", 1 << 20)] {
        let len = document(bytes).chars().count() as u64;
        let a = random_edits(len, 256, 1);
        let b = random_edits(len, 256, 2);
        let mut i = 0;
        group.bench_function(format!("{name}_two_small_edits"), |bench| {
            bench.iter(|| {
                i = (i + 1) % a.len();
                black_box(&a[i]).transform(black_box(&b[i]))
            })
        });
    }
    group.finish();
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    for (name, bytes) in [("small", 100), ("1MiB", 1 << 20)] {
        let text = document(bytes);
        let rope = Rope::from_str(&text);
        let len = rope.len_chars() as u64;
        let edits = random_edits(len, 1024, 3);
        let mut i = 0;
        // Cloning a rope is O(1) (shared nodes); the edit then copies only the path it
        // touches, as the document actor's in-place edit does.
        group.bench_function(format!("rope_{name}_small_edit_at_random_position"), |b| {
            b.iter_batched_ref(
                || {
                    i = (i + 1) % edits.len();
                    (rope.clone(), &edits[i])
                },
                |(rope, edit)| edit.apply(rope),
                BatchSize::SmallInput,
            )
        });
        let mut j = 0;
        group.bench_function(
            format!("string_{name}_small_edit_at_random_position"),
            |b| {
                b.iter(|| {
                    j = (j + 1) % edits.len();
                    edits[j].apply_str(black_box(&text))
                })
            },
        );
    }
    group.finish();
}

fn compose(c: &mut Criterion) {
    let mut group = c.benchmark_group("compose");
    for (name, bytes) in [("small_doc", 100), ("1MiB_doc", 1 << 20)] {
        let len = document(bytes).chars().count() as u64;
        let mut rng = StdRng::seed_from_u64(4);
        // A keystroke followed by the next one: what the client's buffer composes.
        let pairs: Vec<(Operation, Operation)> = (0..256)
            .map(|_| {
                let first = insert(len, rng.random_range(0..=len), "a");
                let second = insert(len + 1, rng.random_range(0..=len + 1), "中");
                (first, second)
            })
            .collect();
        let mut i = 0;
        group.bench_function(format!("{name}_two_keystrokes"), |b| {
            b.iter(|| {
                i = (i + 1) % pairs.len();
                let (first, second) = &pairs[i];
                black_box(first).compose(black_box(second))
            })
        });
    }
    // A long run of typing composed into one edit (a client buffering behind a slow ack).
    let mut typed = Operation::new();
    let keystrokes: Vec<Operation> = (0..200u64).map(|n| insert(n, n, "x")).collect();
    group.bench_function("200_keystrokes_into_one_edit", |b| {
        b.iter(|| {
            typed = Operation::new();
            for keystroke in &keystrokes {
                typed = typed.compose(keystroke).unwrap_or_default();
            }
            black_box(&typed);
        })
    });
    group.finish();
}

criterion_group! {
    name = ot;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = transform, apply, compose
}
criterion_main!(ot);
