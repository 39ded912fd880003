//! Fuzz target `ot_algebra`: the laws of codraft-ot's edit algebra on arbitrary documents.
//!
//! The input is decoded (with `arbitrary`) into a document and a few edit recipes; each
//! recipe is clamped to the text it edits, so the operations built from it are valid by
//! construction. Invariants checked:
//! - applying a valid operation never fails, and `apply_str` and the rope `apply` agree;
//! - `transform(a, b)` of two edits of one document succeeds and converges:
//!   `apply(apply(S, a), b') == apply(apply(S, b), a')`;
//! - `compose(a, b')` and `compose(b, a')` apply like applying both edits in turn (and, the
//!   normal form being unique, are equal), and `compose(a, next)` like `a` then `next`;
//! - `transform_index` never panics, and moves a cursor inside the document to a position
//!   inside the edited document;
//! - every operation the crate hands out is normalised;
//! - arbitrary components (mostly invalid for the document: wrong lengths, counts past
//!   2^53, saturated builders) are refused with the right error, never a panic, and leave
//!   the rope untouched.

#![no_main]

use arbitrary::Arbitrary;
use codraft_fuzz::assert_normalised;
use codraft_ot::{Component, Operation, OtError, MAX_LENGTH};
use libfuzzer_sys::fuzz_target;
use ropey::Rope;

/// One fuzz case: a document, edits of it, and raw components.
#[derive(Debug, Arbitrary)]
struct Case {
    /// The document both concurrent edits start from.
    doc: String,
    /// Recipe of the first of two concurrent edits of `doc`.
    a: Vec<Step>,
    /// Recipe of the second concurrent edit of `doc`.
    b: Vec<Step>,
    /// Recipe of an edit of the text `a` produces, to compose after `a`.
    next: Vec<Step>,
    /// A cursor position to move through `a` (any value, not only inside the document).
    cursor: u64,
    /// Components taken as they come, mostly invalid for `doc`.
    raw: Vec<RawPart>,
}

/// One step of an edit recipe; counts are clamped to the text left to walk.
#[derive(Debug, Arbitrary)]
enum Step {
    Retain(u16),
    Delete(u16),
    Insert(String),
}

/// A component with no regard for any document.
#[derive(Debug, Arbitrary)]
enum RawPart {
    Retain(Count),
    Delete(Count),
    Insert(String),
}

/// A count from the ranges where things go wrong: small ones (near a document's length),
/// any `u64`, and those around the 2^53 limit.
#[derive(Debug, Arbitrary)]
enum Count {
    Small(u8),
    Any(u64),
    /// `MAX_LENGTH - 128 + n`: either side of the limit.
    NearLimit(u8),
}

impl Count {
    fn value(&self) -> u64 {
        match self {
            Count::Small(n) => u64::from(*n),
            Count::Any(n) => *n,
            Count::NearLimit(n) => MAX_LENGTH - 128 + u64::from(*n),
        }
    }
}

impl RawPart {
    fn component(&self) -> Component {
        match self {
            RawPart::Retain(n) => Component::Retain(n.value()),
            RawPart::Delete(n) => Component::Delete(n.value()),
            RawPart::Insert(s) => Component::Insert(s.clone()),
        }
    }
}

fuzz_target!(|case: Case| {
    let doc = case.doc.as_str();
    let len = char_len(doc);
    let a = build(&case.a, len);
    let b = build(&case.b, len);
    let after_a = apply_valid(&a, doc);
    let after_b = apply_valid(&b, doc);

    // Convergence of concurrent edits.
    let (a2, b2) = a
        .transform(&b)
        .unwrap_or_else(|e| panic!("transform of two edits of one document failed: {e}"));
    assert_normalised(&a2);
    assert_normalised(&b2);
    let via_a = apply_valid(&b2, &after_a);
    let via_b = apply_valid(&a2, &after_b);
    assert_eq!(via_a, via_b, "transform does not converge");

    // Composition.
    let ab2 = a.compose(&b2).expect("a then b' compose");
    let ba2 = b.compose(&a2).expect("b then a' compose");
    assert_normalised(&ab2);
    assert_normalised(&ba2);
    assert_eq!(
        apply_valid(&ab2, doc),
        via_a,
        "compose(a, b') differs from a then b'"
    );
    assert_eq!(
        apply_valid(&ba2, doc),
        via_a,
        "compose(b, a') differs from b then a'"
    );
    assert_eq!(ab2, ba2, "one edit in two normal forms");
    let next = build(&case.next, a.target_len());
    let a_next = a
        .compose(&next)
        .expect("a then an edit of its result compose");
    assert_normalised(&a_next);
    assert_eq!(
        apply_valid(&a_next, doc),
        apply_valid(&next, &after_a),
        "compose(a, next) differs from a then next"
    );

    // Cursors.
    a.transform_index(case.cursor);
    let inside = case.cursor.min(len);
    let moved = a.transform_index(inside);
    assert!(
        moved <= a.target_len(),
        "cursor {inside} moved to {moved}, past the end ({})",
        a.target_len()
    );

    check_raw(&case.raw, doc, &a);
});

/// Number of code points in `s`, the unit of every OT length.
fn char_len(s: &str) -> u64 {
    s.chars().count() as u64
}

/// Turns a recipe into an operation valid on a text of `len` code points, by both the
/// builders and `from_components`, which must agree.
fn build(steps: &[Step], len: u64) -> Operation {
    let mut op = Operation::new();
    let mut parts = Vec::with_capacity(steps.len() + 1);
    let mut left = len;
    for step in steps {
        match step {
            Step::Retain(n) => {
                let n = u64::from(*n).min(left);
                left -= n;
                op.retain(n);
                parts.push(Component::Retain(n));
            }
            Step::Delete(n) => {
                let n = u64::from(*n).min(left);
                left -= n;
                op.delete(n);
                parts.push(Component::Delete(n));
            }
            Step::Insert(s) => {
                op.insert(s);
                parts.push(Component::Insert(s.clone()));
            }
        }
    }
    op.retain(left);
    parts.push(Component::Retain(left));
    assert_normalised(&op);
    assert_eq!(op.base_len(), len);
    let checked = Operation::from_components(parts).expect("a valid recipe builds");
    assert_eq!(checked, op, "builders and from_components disagree");
    op
}

/// Applies an operation that must be valid on `text`, to a string and to a rope.
fn apply_valid(op: &Operation, text: &str) -> String {
    let out = op
        .apply_str(text)
        .unwrap_or_else(|e| panic!("valid {op:?} did not apply to {text:?}: {e}"));
    let mut rope = Rope::from_str(text);
    op.apply(&mut rope)
        .unwrap_or_else(|e| panic!("valid {op:?} did not apply to the rope of {text:?}: {e}"));
    assert_eq!(rope, out.as_str(), "apply_str and the rope apply disagree");
    assert_eq!(char_len(&out), op.target_len());
    out
}

/// Builds an operation from raw components, checked and unchecked, and throws it at `doc`
/// and at `valid` (an edit of `doc`): every refusal must be the documented error.
fn check_raw(raw: &[RawPart], doc: &str, valid: &Operation) {
    let parts: Vec<Component> = raw.iter().map(RawPart::component).collect();
    // The builders saturate instead of failing; what they build is refused when used.
    let mut op = Operation::new();
    for part in &parts {
        match part {
            Component::Retain(n) => op.retain(*n),
            Component::Delete(n) => op.delete(*n),
            Component::Insert(s) => op.insert(s),
        };
    }
    let fits = op.base_len() <= MAX_LENGTH && op.target_len() <= MAX_LENGTH;
    match Operation::from_components(parts) {
        Ok(checked) => {
            assert_normalised(&checked);
            assert_eq!(checked, op, "from_components and the builders disagree");
        }
        Err(e) => assert_eq!(e, OtError::TooLong),
    }

    let len = char_len(doc);
    let mut rope = Rope::from_str(doc);
    let (as_str, on_rope) = (op.apply_str(doc), op.apply(&mut rope));
    assert_eq!(as_str.as_ref().err(), on_rope.as_ref().err());
    match as_str {
        Ok(out) => {
            assert!(fits && op.base_len() == len, "{op:?} applied to {doc:?}");
            assert_eq!(rope, out.as_str(), "apply_str and the rope apply disagree");
        }
        Err(e) => {
            let expected = if fits {
                OtError::BaseLengthMismatch {
                    expected: op.base_len(),
                    actual: len,
                }
            } else {
                OtError::TooLong
            };
            assert_eq!(e, expected);
            assert_eq!(rope, doc, "a refused operation changed the rope");
        }
    }

    // `valid` is small and starts from `len`, so `fits` and the lengths decide every result.
    let refusal = |lines_up: bool| match (fits, lines_up) {
        (false, _) => Err(OtError::TooLong),
        (true, false) => Err(OtError::IncompatibleOperations),
        (true, true) => Ok(()),
    };
    let same_base = op.base_len() == len;
    for (result, swapped) in [(op.transform(valid), false), (valid.transform(&op), true)] {
        match (result, refusal(same_base)) {
            (Ok((x, y)), Ok(())) => {
                assert_normalised(&x);
                assert_normalised(&y);
                let (op2, valid2) = if swapped { (y, x) } else { (x, y) };
                assert_eq!(
                    apply_valid(&valid2, &apply_valid(&op, doc)),
                    apply_valid(&op2, &apply_valid(valid, doc)),
                    "transform does not converge"
                );
            }
            (Err(e), Err(expected)) => assert_eq!(e, expected),
            (got, expected) => panic!("transform gave {got:?}, expected {expected:?}"),
        }
    }
    match (op.compose(valid), refusal(op.target_len() == len)) {
        (Ok(both), Ok(())) => {
            assert_normalised(&both);
            if same_base {
                assert_eq!(
                    apply_valid(&both, doc),
                    apply_valid(valid, &apply_valid(&op, doc))
                );
            }
        }
        (Err(e), Err(expected)) => assert_eq!(e, expected),
        (got, expected) => panic!("compose(raw, valid) gave {got:?}, expected {expected:?}"),
    }
    match (
        valid.compose(&op),
        refusal(op.base_len() == valid.target_len()),
    ) {
        (Ok(both), Ok(())) => {
            assert_normalised(&both);
            let after = apply_valid(valid, doc);
            assert_eq!(apply_valid(&both, doc), apply_valid(&op, &after));
        }
        (Err(e), Err(expected)) => assert_eq!(e, expected),
        (got, expected) => panic!("compose(valid, raw) gave {got:?}, expected {expected:?}"),
    }

    for position in [0, len, op.base_len(), u64::MAX] {
        op.transform_index(position);
    }
}
