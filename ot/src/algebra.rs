//! The algebra of operations: composing two edits into one, transforming concurrent edits
//! against each other (with Rustpad's tie-break), and moving a cursor through an edit.

use crate::operation::{char_len, split_at_char};
use crate::{Component, Operation, OtError};

/// A borrowed, possibly partly consumed component, as the merge loops walk two operations.
#[derive(Debug, Clone, Copy)]
enum Part<'a> {
    Retain(u64),
    Delete(u64),
    /// The text and its length in code points, kept so it is counted only once.
    Insert(&'a str, u64),
}

impl<'a> Part<'a> {
    fn from_component(component: &'a Component) -> Self {
        match component {
            Component::Retain(n) => Part::Retain(*n),
            Component::Delete(n) => Part::Delete(*n),
            Component::Insert(s) => Part::Insert(s, char_len(s)),
        }
    }

    fn len(self) -> u64 {
        match self {
            Part::Retain(n) | Part::Delete(n) | Part::Insert(_, n) => n,
        }
    }

    /// Splits off the first `n` units (`n` at most [`Part::len`]): returns them and what is
    /// left, or `None` when nothing is.
    fn split(self, n: u64) -> (Self, Option<Self>) {
        let len = self.len();
        if n >= len {
            return (self, None);
        }
        let rest = len - n;
        match self {
            Part::Retain(_) => (Part::Retain(n), Some(Part::Retain(rest))),
            Part::Delete(_) => (Part::Delete(n), Some(Part::Delete(rest))),
            Part::Insert(s, _) => {
                let (head, tail) = split_at_char(s, n);
                (Part::Insert(head, n), Some(Part::Insert(tail, rest)))
            }
        }
    }
}

/// Walks an operation's components as [`Part`]s.
struct Parts<'a> {
    iter: std::slice::Iter<'a, Component>,
}

impl<'a> Parts<'a> {
    fn new(op: &'a Operation) -> Self {
        Self {
            iter: op.components().iter(),
        }
    }

    /// The leftover of a split part if there is one, else the next component.
    fn resume(&mut self, leftover: Option<Part<'a>>) -> Option<Part<'a>> {
        leftover.or_else(|| self.next())
    }
}

impl<'a> Iterator for Parts<'a> {
    type Item = Part<'a>;

    fn next(&mut self) -> Option<Part<'a>> {
        self.iter.next().map(Part::from_component)
    }
}

impl Operation {
    /// Combines `self` followed by `next` into one operation with the same effect:
    /// `apply(S, self.compose(next)) == apply(apply(S, self), next)`.
    ///
    /// Fails with [`OtError::IncompatibleOperations`] unless `next` starts from the length
    /// `self` produces.
    pub fn compose(&self, next: &Operation) -> Result<Operation, OtError> {
        self.check_bounds()?;
        next.check_bounds()?;
        if self.target_len() != next.base_len() {
            return Err(OtError::IncompatibleOperations);
        }
        let mut out = Operation::new();
        let mut first = Parts::new(self);
        let mut second = Parts::new(next);
        let mut a = first.next();
        let mut b = second.next();
        loop {
            match (a, b) {
                (None, None) => break,
                // Text `self` deletes is never seen by `next`.
                (Some(Part::Delete(n)), _) => {
                    out.delete(n);
                    a = first.next();
                }
                // Text `next` inserts was never seen by `self`.
                (_, Some(Part::Insert(s, _))) => {
                    out.insert(s);
                    b = second.next();
                }
                (None, Some(_)) | (Some(_), None) => return Err(OtError::IncompatibleOperations),
                (Some(x), Some(y)) => {
                    let n = x.len().min(y.len());
                    let (head, x_rest) = x.split(n);
                    let (_, y_rest) = y.split(n);
                    match (head, y) {
                        (Part::Retain(_), Part::Retain(_)) => {
                            out.retain(n);
                        }
                        (Part::Retain(_), Part::Delete(_)) => {
                            out.delete(n);
                        }
                        (Part::Insert(s, _), Part::Retain(_)) => {
                            out.insert(s);
                        }
                        // Text `self` inserts and `next` deletes again leaves no trace.
                        (Part::Insert(..), Part::Delete(_)) => {}
                        // Handled by the arms above; kept as an error rather than a panic.
                        (Part::Delete(_), _) | (_, Part::Insert(..)) => {
                            return Err(OtError::IncompatibleOperations)
                        }
                    }
                    a = first.resume(x_rest);
                    b = second.resume(y_rest);
                }
            }
        }
        out.check_bounds()?;
        Ok(out)
    }

    /// Transforms two concurrent operations on the same document into `(self', other')`
    /// such that `apply(apply(S, self), other') == apply(apply(S, other), self')`.
    ///
    /// When both insert at the same position, `self`'s text ends up first. Following
    /// Rustpad, the server transforms the edit that reached it later (`self`) against the
    /// history it missed (`other`), so the later edit's insert goes first.
    ///
    /// Fails with [`OtError::IncompatibleOperations`] unless both start from the same length,
    /// and with [`OtError::TooLong`] if a result would exceed [`crate::MAX_LENGTH`].
    pub fn transform(&self, other: &Operation) -> Result<(Operation, Operation), OtError> {
        self.check_bounds()?;
        other.check_bounds()?;
        if self.base_len() != other.base_len() {
            return Err(OtError::IncompatibleOperations);
        }
        let mut self_prime = Operation::new();
        let mut other_prime = Operation::new();
        let mut first = Parts::new(self);
        let mut second = Parts::new(other);
        let mut a = first.next();
        let mut b = second.next();
        loop {
            match (a, b) {
                (None, None) => break,
                // Checked before `other`'s insert: this is what puts `self`'s text first.
                (Some(Part::Insert(s, len)), _) => {
                    self_prime.insert(s);
                    other_prime.retain(len);
                    a = first.next();
                }
                (_, Some(Part::Insert(s, len))) => {
                    self_prime.retain(len);
                    other_prime.insert(s);
                    b = second.next();
                }
                (None, Some(_)) | (Some(_), None) => return Err(OtError::IncompatibleOperations),
                (Some(x), Some(y)) => {
                    let n = x.len().min(y.len());
                    let (_, x_rest) = x.split(n);
                    let (_, y_rest) = y.split(n);
                    match (x, y) {
                        (Part::Retain(_), Part::Retain(_)) => {
                            self_prime.retain(n);
                            other_prime.retain(n);
                        }
                        // Both deleted the same text: nothing is left for either to do.
                        (Part::Delete(_), Part::Delete(_)) => {}
                        (Part::Delete(_), Part::Retain(_)) => {
                            self_prime.delete(n);
                        }
                        (Part::Retain(_), Part::Delete(_)) => {
                            other_prime.delete(n);
                        }
                        // Handled by the arms above; kept as an error rather than a panic.
                        (Part::Insert(..), _) | (_, Part::Insert(..)) => {
                            return Err(OtError::IncompatibleOperations)
                        }
                    }
                    a = first.resume(x_rest);
                    b = second.resume(y_rest);
                }
            }
        }
        self_prime.check_bounds()?;
        other_prime.check_bounds()?;
        Ok((self_prime, other_prime))
    }

    /// Moves a cursor at `position` (in code points) through this operation, with exactly
    /// Rustpad's semantics: text inserted at the cursor pushes it forward, and a cursor
    /// inside deleted text moves to where the deletion started.
    ///
    /// Any position is accepted; the arithmetic is done in `i128` so nothing overflows, and
    /// a result beyond `u64::MAX` saturates.
    pub fn transform_index(&self, position: u64) -> u64 {
        let mut index = i128::from(position);
        let mut new_index = index;
        for part in self.components() {
            match part {
                Component::Retain(n) => index -= i128::from(*n),
                Component::Insert(s) => new_index += i128::from(char_len(s)),
                Component::Delete(n) => {
                    let n = i128::from(*n);
                    new_index -= index.min(n);
                    index -= n;
                }
            }
            // Parts after the cursor cannot move it; an insert right at it (index == 0)
            // still does.
            if index < 0 {
                break;
            }
        }
        u64::try_from(new_index.max(0)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_LENGTH;
    use Component::{Delete, Insert, Retain};

    fn op(parts: Vec<Component>) -> Operation {
        Operation::from_components(parts).unwrap()
    }

    fn ins(s: &str) -> Component {
        Insert(s.to_owned())
    }

    /// Rustpad's `transform_index`, copied as it is (u32/i32), to compare against.
    fn rustpad_transform_index(operation: &Operation, position: u32) -> u32 {
        let mut index = position as i32;
        let mut new_index = index;
        for op in operation.components() {
            match op {
                Retain(n) => index -= *n as i32,
                Insert(s) => new_index += s.chars().count() as i32,
                Delete(n) => {
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

    #[test]
    fn compose_applies_in_sequence() {
        let a = op(vec![Retain(2), ins("中🎉"), Delete(1), Retain(1)]);
        let b = op(vec![Retain(1), Delete(2), ins("é"), Retain(2)]);
        let ab = a.compose(&b).unwrap();
        let s = "abcd";
        let step = a.apply_str(s).unwrap();
        assert_eq!(step, "ab中🎉d");
        let expected = b.apply_str(&step).unwrap();
        assert_eq!(expected, "aé🎉d");
        assert_eq!(ab.apply_str(s).unwrap(), expected);
        assert_eq!(ab.base_len(), 4);
        assert_eq!(ab.target_len(), 4);
    }

    #[test]
    fn compose_cancels_an_insert_deleted_again() {
        let a = Operation::insert_text("👨‍👩‍👧‍👦");
        let b = op(vec![Delete(7)]);
        let ab = a.compose(&b).unwrap();
        assert!(ab.is_noop());
        assert_eq!(ab, Operation::new());
    }

    #[test]
    fn compose_splits_inserts_by_code_point() {
        let a = Operation::insert_text("a👨‍👩‍👧‍👦b");
        let b = op(vec![Retain(2), Delete(5), Retain(2)]);
        let ab = a.compose(&b).unwrap();
        assert_eq!(ab, Operation::insert_text("a👨👦b"));
    }

    #[test]
    fn compose_refuses_lengths_that_do_not_line_up() {
        let a = op(vec![Retain(2), ins("x")]);
        let b = op(vec![Retain(2)]);
        assert_eq!(a.compose(&b), Err(OtError::IncompatibleOperations));
        assert!(OtError::IncompatibleOperations
            .to_string()
            .contains("do not line up"));
    }

    #[test]
    fn transform_converges() {
        let s = "héllo 🎉 world";
        let a = op(vec![Retain(1), Delete(4), ins("i"), Retain(8)]);
        let b = op(vec![Retain(6), Delete(1), ins("🚀"), Retain(6)]);
        let (a2, b2) = a.transform(&b).unwrap();
        let left = b2.apply_str(&a.apply_str(s).unwrap()).unwrap();
        let right = a2.apply_str(&b.apply_str(s).unwrap()).unwrap();
        assert_eq!(left, right);
        assert_eq!(left, "hi 🚀 world");
    }

    #[test]
    fn transform_puts_selfs_insert_first_on_a_tie() {
        let s = "中";
        let later = op(vec![Retain(1), ins("🎉")]);
        let earlier = op(vec![Retain(1), ins("é")]);
        let (later2, earlier2) = later.transform(&earlier).unwrap();
        let via_earlier = later2.apply_str(&earlier.apply_str(s).unwrap()).unwrap();
        let via_later = earlier2.apply_str(&later.apply_str(s).unwrap()).unwrap();
        assert_eq!(via_earlier, "中🎉é");
        assert_eq!(via_later, "中🎉é");
        assert_eq!(later2.components(), &[Retain(1), ins("🎉"), Retain(1)]);
    }

    #[test]
    fn transform_of_overlapping_deletes() {
        let s = "👨‍👩‍👧‍👦";
        let a = op(vec![Delete(5), Retain(2)]);
        let b = op(vec![Retain(2), Delete(5)]);
        let (a2, b2) = a.transform(&b).unwrap();
        assert_eq!(a2.components(), &[Delete(2)]);
        assert_eq!(b2.components(), &[Delete(2)]);
        let left = b2.apply_str(&a.apply_str(s).unwrap()).unwrap();
        let right = a2.apply_str(&b.apply_str(s).unwrap()).unwrap();
        assert_eq!(left, "");
        assert_eq!(right, "");
    }

    #[test]
    fn transform_refuses_different_base_lengths() {
        let a = op(vec![Retain(3)]);
        let b = op(vec![Retain(4)]);
        assert_eq!(a.transform(&b), Err(OtError::IncompatibleOperations));
    }

    #[test]
    fn transform_refuses_results_beyond_the_limit() {
        let a = op(vec![Retain(MAX_LENGTH - 1), ins("x")]);
        let b = op(vec![Retain(MAX_LENGTH - 1), ins("y")]);
        assert_eq!(a.transform(&b), Err(OtError::TooLong));
    }

    #[test]
    fn transform_index_table() {
        // (operation, position, expected) following Rustpad's function.
        let cases: Vec<(Operation, u64, u64)> = vec![
            (op(vec![]), 0, 0),
            (op(vec![Retain(5)]), 3, 3),
            // An insert exactly at the cursor pushes it after the insert.
            (op(vec![Retain(3), ins("ab"), Retain(2)]), 3, 5),
            (op(vec![Retain(3), ins("ab"), Retain(2)]), 2, 2),
            (op(vec![Retain(3), ins("ab"), Retain(2)]), 4, 6),
            (op(vec![ins("🎉"), Retain(2)]), 0, 1),
            (op(vec![ins("👨‍👩‍👧‍👦"), Retain(2)]), 1, 8),
            // A cursor inside deleted text moves to where the deletion starts.
            (op(vec![Retain(1), Delete(3), Retain(2)]), 2, 1),
            (op(vec![Retain(1), Delete(3), Retain(2)]), 4, 1),
            (op(vec![Retain(1), Delete(3), Retain(2)]), 5, 2),
            (op(vec![Retain(1), Delete(3), Retain(2)]), 1, 1),
            // Insert then delete at the cursor: insert pushes, delete pulls nothing back.
            (op(vec![Retain(2), ins("xy"), Delete(2)]), 2, 4),
            (op(vec![Retain(2), ins("xy"), Delete(2)]), 3, 4),
            (op(vec![Retain(2), ins("xy"), Delete(2)]), 4, 4),
            // At the end of the document.
            (op(vec![Retain(3), ins("z")]), 3, 4),
            (op(vec![Delete(3)]), 3, 0),
            // Beyond the document: Rustpad shifts by the net change it walked over.
            (op(vec![Retain(2), ins("q")]), 10, 11),
            (op(vec![Delete(2)]), 10, 8),
        ];
        for (operation, position, expected) in cases {
            let got = operation.transform_index(position);
            assert_eq!(got, expected, "{operation:?} at {position}");
            let reference = rustpad_transform_index(&operation, position as u32);
            assert_eq!(u64::from(reference), expected, "reference {operation:?}");
        }
    }

    #[test]
    fn transform_index_never_overflows() {
        // Built without checks, as nothing stops a caller from doing so.
        let mut big = Operation::new();
        big.insert("ab").retain(u64::MAX);
        assert_eq!(big.transform_index(u64::MAX), u64::MAX);
        assert_eq!(big.transform_index(u64::MAX - 5), u64::MAX - 3);
        let del = op(vec![Delete(MAX_LENGTH)]);
        assert_eq!(del.transform_index(u64::MAX), u64::MAX - MAX_LENGTH);
        assert_eq!(del.transform_index(0), 0);
    }
}
