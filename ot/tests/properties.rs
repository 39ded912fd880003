//! Property tests for the operation algebra: convergence of transform (TP1), compose
//! agreeing with sequential application, rope and string application agreeing, lengths,
//! normal form, the JSON round trip, and the cursor transform against Rustpad's own code.

use codraft_ot::{Component, Operation};
use proptest::prelude::*;
use ropey::Rope;

/// Characters mixing ASCII, newlines, two- and three-byte text, astral-plane emoji and the
/// zero-width joiner of family emoji, so any byte/char/UTF-16 confusion shows.
fn any_char() -> impl Strategy<Value = char> {
    prop::sample::select(vec![
        'a', 'b', 'c', 'x', ' ', '\n', '"', '\\', '\u{1}', 'é', '中', '🎉', '👨', '\u{200d}', '👦',
    ])
}

fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any_char(), 0..max).prop_map(|chars| chars.into_iter().collect())
}

/// One builder step: a kind (0 retain, 1 delete, else insert), a count and a text.
type Step = (u8, u64, String);

fn any_steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((0u8..3, 0u64..6, any_text(4)), 0..10)
}

/// Turns builder steps into an operation valid on a document of `len` characters: counts
/// are clipped to what is left, and whatever is left at the end is retained.
fn make_op(len: u64, steps: &[Step]) -> Operation {
    let mut op = Operation::new();
    let mut left = len;
    for (kind, n, text) in steps {
        let n = (*n).min(left);
        match kind {
            0 => {
                op.retain(n);
                left -= n;
            }
            1 => {
                op.delete(n);
                left -= n;
            }
            _ => {
                op.insert(text);
            }
        }
    }
    op.retain(left);
    op
}

/// Raw, unnormalised components valid on a document of `len` characters (zero counts,
/// empty strings and inserts after deletes included).
fn make_raw(len: u64, steps: &[Step]) -> Vec<Component> {
    let mut parts = Vec::new();
    let mut left = len;
    for (kind, n, text) in steps {
        let n = (*n).min(left);
        match kind {
            0 => {
                parts.push(Component::Retain(n));
                left -= n;
            }
            1 => {
                parts.push(Component::Delete(n));
                left -= n;
            }
            _ => parts.push(Component::Insert(text.clone())),
        }
    }
    parts.push(Component::Retain(left));
    parts
}

/// Applies raw components naively, one char at a time: the meaning normalisation must keep.
fn apply_raw(text: &str, parts: &[Component]) -> String {
    let mut chars = text.chars();
    let mut out = String::new();
    for part in parts {
        match part {
            Component::Retain(n) => out.extend(chars.by_ref().take(*n as usize)),
            Component::Delete(n) => chars.by_ref().take(*n as usize).for_each(drop),
            Component::Insert(s) => out.push_str(s),
        }
    }
    out
}

fn len(text: &str) -> u64 {
    text.chars().count() as u64
}

/// Rustpad's `transform_index`, copied as it is (u32/i32).
fn rustpad_transform_index(operation: &Operation, position: u32) -> u32 {
    let mut index = position as i32;
    let mut new_index = index;
    for op in operation.components() {
        match op {
            Component::Retain(n) => index -= *n as i32,
            Component::Insert(s) => new_index += s.chars().count() as i32,
            Component::Delete(n) => {
                new_index -= std::cmp::min(index, *n as i32);
                index -= *n as i32;
            }
        }
        if index < 0 {
            break;
        }
    }
    new_index as u32
}

/// True if `op` is in the one normal form.
fn is_normalised(op: &Operation) -> bool {
    let parts = op.components();
    let no_empty = parts.iter().all(|part| match part {
        Component::Retain(n) | Component::Delete(n) => *n > 0,
        Component::Insert(s) => !s.is_empty(),
    });
    let neighbours_ok = parts.windows(2).all(|pair| {
        !matches!(
            pair,
            [Component::Retain(_), Component::Retain(_)]
                | [Component::Delete(_), Component::Delete(_)]
                | [Component::Insert(_), Component::Insert(_)]
                | [Component::Delete(_), Component::Insert(_)]
        )
    });
    no_empty && neighbours_ok
}

fn apply_rope(op: &Operation, text: &str) -> String {
    let mut rope = Rope::from_str(text);
    op.apply(&mut rope).expect("op is valid on text");
    rope.to_string()
}

proptest! {
    #[test]
    fn transform_converges(doc in any_text(30), a in any_steps(), b in any_steps()) {
        let a = make_op(len(&doc), &a);
        let b = make_op(len(&doc), &b);
        let (a2, b2) = a.transform(&b).unwrap();
        let left = b2.apply_str(&a.apply_str(&doc).unwrap()).unwrap();
        let right = a2.apply_str(&b.apply_str(&doc).unwrap()).unwrap();
        prop_assert_eq!(&left, &right);
        prop_assert_eq!(apply_rope(&b2, &apply_rope(&a, &doc)), left);
        prop_assert!(is_normalised(&a2) && is_normalised(&b2));
        // Both paths compose to the same single operation.
        prop_assert_eq!(a.compose(&b2).unwrap(), b.compose(&a2).unwrap());
    }

    #[test]
    fn compose_agrees_with_sequential_apply(doc in any_text(30), a in any_steps(), b in any_steps()) {
        let a = make_op(len(&doc), &a);
        let middle = a.apply_str(&doc).unwrap();
        let b = make_op(len(&middle), &b);
        let ab = a.compose(&b).unwrap();
        let expected = b.apply_str(&middle).unwrap();
        prop_assert_eq!(ab.apply_str(&doc).unwrap(), expected.clone());
        prop_assert_eq!(apply_rope(&ab, &doc), expected);
        prop_assert_eq!(ab.base_len(), a.base_len());
        prop_assert_eq!(ab.target_len(), b.target_len());
        prop_assert!(is_normalised(&ab));
    }

    #[test]
    fn compose_is_associative(doc in any_text(20), a in any_steps(), b in any_steps(), c in any_steps()) {
        let a = make_op(len(&doc), &a);
        let b = make_op(a.target_len(), &b);
        let c = make_op(b.target_len(), &c);
        let left = a.compose(&b).unwrap().compose(&c).unwrap();
        let right = a.compose(&b.compose(&c).unwrap()).unwrap();
        prop_assert_eq!(left, right);
    }

    #[test]
    fn rope_and_string_apply_agree_with_lengths(doc in any_text(40), a in any_steps()) {
        let op = make_op(len(&doc), &a);
        prop_assert_eq!(op.base_len(), len(&doc));
        let by_str = op.apply_str(&doc).unwrap();
        prop_assert_eq!(op.target_len(), len(&by_str));
        let mut rope = Rope::from_str(&doc);
        op.apply(&mut rope).unwrap();
        prop_assert_eq!(rope.to_string(), by_str);
        prop_assert!(is_normalised(&op));
    }

    #[test]
    fn wrong_base_length_is_refused_and_changes_nothing(doc in any_text(20), a in any_steps(), extra in 1u64..3) {
        let op = make_op(len(&doc) + extra, &a);
        prop_assert!(op.apply_str(&doc).is_err());
        let mut rope = Rope::from_str(&doc);
        prop_assert!(op.apply(&mut rope).is_err());
        prop_assert_eq!(rope.to_string(), doc);
    }

    #[test]
    fn normalisation_keeps_meaning(doc in any_text(30), steps in any_steps()) {
        let raw = make_raw(len(&doc), &steps);
        let op = Operation::from_components(raw.clone()).unwrap();
        prop_assert!(is_normalised(&op));
        prop_assert_eq!(op.apply_str(&doc).unwrap(), apply_raw(&doc, &raw));
        // Normalising is idempotent.
        prop_assert_eq!(Operation::from_components(op.components().to_vec()).unwrap(), op);
    }

    #[test]
    fn json_round_trips(doc in any_text(30), steps in any_steps()) {
        let op = make_op(len(&doc), &steps);
        let json = op.to_json();
        prop_assert_eq!(&json, &serde_json::to_string(&op).unwrap());
        prop_assert_eq!(Operation::from_json(&json).unwrap(), op.clone());
        // Unnormalised JSON parses to the normalised operation.
        let raw = make_raw(len(&doc), &steps);
        let raw_json = serde_json::Value::Array(
            raw.iter()
                .map(|part| match part {
                    Component::Retain(n) => serde_json::Value::from(*n),
                    Component::Delete(n) => serde_json::Value::from(-(*n as i64)),
                    Component::Insert(s) => serde_json::Value::from(s.clone()),
                })
                .collect(),
        )
        .to_string();
        prop_assert_eq!(
            Operation::from_json(&raw_json).unwrap(),
            Operation::from_components(raw).unwrap()
        );
    }

    #[test]
    fn json_parsing_never_panics(input in "[\\[\\]\\-0-9,.e\" a{}:nul]{0,24}") {
        // Only absence of panics matters; the result may be either.
        let _ = Operation::from_json(&input);
    }

    #[test]
    fn transform_index_matches_rustpad(doc in any_text(30), steps in any_steps(), position in 0u32..40) {
        let op = make_op(len(&doc), &steps);
        prop_assert_eq!(
            op.transform_index(u64::from(position)),
            u64::from(rustpad_transform_index(&op, position))
        );
    }

    #[test]
    fn transform_index_follows_the_text(doc in any_text(30), steps in any_steps(), marker in 0u64..31) {
        // A cursor in front of a character the operation keeps is still in front of that
        // same character afterwards.
        let op = make_op(len(&doc), &steps);
        let position = marker.min(len(&doc));
        let moved = op.transform_index(position);
        prop_assert!(moved <= op.target_len());
        let mut start = 0u64;
        let mut kept = false;
        for part in op.components() {
            let n = match part {
                Component::Retain(n) | Component::Delete(n) => *n,
                Component::Insert(_) => continue,
            };
            if position < start + n {
                kept = matches!(part, Component::Retain(_));
                break;
            }
            start += n;
        }
        if kept {
            let before: String = doc.chars().skip(position as usize).take(1).collect();
            let after = op.apply_str(&doc).unwrap();
            let at: String = after.chars().skip(moved as usize).take(1).collect();
            prop_assert_eq!(before, at);
        }
    }
}
