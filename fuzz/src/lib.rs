//! Checks shared by the fuzz targets in `fuzz_targets/`: the properties every operation the
//! OT crate hands out must have, whichever path built it.

use codraft_ot::{Component, Operation, MAX_LENGTH};

/// Panics unless `op` is in the one canonical form `codraft_ot` promises: no empty components,
/// no two neighbours of one kind, no insert right after a delete, lengths that match its
/// components and stay within [`MAX_LENGTH`].
pub fn assert_normalised(op: &Operation) {
    let (mut base, mut target) = (0u64, 0u64);
    let mut previous: Option<&Component> = None;
    for part in op.components() {
        match part {
            Component::Retain(n) => {
                assert!(*n > 0, "zero retain in {op:?}");
                base = base.saturating_add(*n);
                target = target.saturating_add(*n);
            }
            Component::Delete(n) => {
                assert!(*n > 0, "zero delete in {op:?}");
                base = base.saturating_add(*n);
            }
            Component::Insert(s) => {
                assert!(!s.is_empty(), "empty insert in {op:?}");
                target = target.saturating_add(s.chars().count() as u64);
            }
        }
        if let Some(previous) = previous {
            assert_ne!(
                std::mem::discriminant(previous),
                std::mem::discriminant(part),
                "two neighbouring components of one kind in {op:?}"
            );
            assert!(
                !matches!(
                    (previous, part),
                    (Component::Delete(_), Component::Insert(_))
                ),
                "insert after a delete in {op:?}"
            );
        }
        previous = Some(part);
    }
    assert_eq!(op.base_len(), base, "base_len disagrees with {op:?}");
    assert_eq!(op.target_len(), target, "target_len disagrees with {op:?}");
    assert!(
        base <= MAX_LENGTH && target <= MAX_LENGTH,
        "too long: {op:?}"
    );
}
