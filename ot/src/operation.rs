//! The [`Operation`] type: its components, the normalising builders that keep every
//! operation in its one canonical form, and applying an operation to a string or a rope.

use ropey::Rope;

use crate::{OtError, MAX_LENGTH};

/// One step of an operation, walking the document from its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    /// Keep the next `n` characters.
    Retain(u64),
    /// Remove the next `n` characters.
    Delete(u64),
    /// Insert this text at the current position.
    Insert(String),
}

/// An edit that covers a whole document, always kept in normalised form.
///
/// Normalised means: no empty components, no two adjacent components of the same kind, and
/// an insert never directly follows a delete (it is moved in front of it, which edits the
/// text identically). Two operations with the same effect therefore compare equal and
/// serialise identically, exactly like Rustpad's and ot.js's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operation {
    components: Vec<Component>,
    base_len: u64,
    target_len: u64,
}

/// Number of code points in `s`.
pub(crate) fn char_len(s: &str) -> u64 {
    // usize is at most 64 bits on every target Rust supports, so this cast is lossless.
    s.chars().count() as u64
}

/// How many bytes of `block` (64 of them) start a code point: eight at a time, as those
/// whose top bits are not `10`.
fn starts_in(block: &[u8]) -> usize {
    block
        .chunks_exact(8)
        .map(|word| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(word);
            let word = u64::from_le_bytes(bytes);
            let continuations = word & !(word << 1) & 0x8080_8080_8080_8080;
            8 - continuations.count_ones() as usize
        })
        .sum()
}

/// Splits `s` after its first `n` code points (or at its end if it is shorter).
///
/// Every client applies every edit to its whole text, so this runs over long prefixes
/// (`char_indices().nth(n)` here cost the load generator 40% of its CPU on 3,000-character
/// documents). It skips a block of bytes at a time instead, counting the code points each
/// holds a word of eight bytes at a time (1.5 → 0.5 µs to apply an edit near the end of
/// 3,600 characters).
pub(crate) fn split_at_char(s: &str, n: u64) -> (&str, &str) {
    const BLOCK: usize = 64;
    let is_start = |byte: &u8| (*byte as i8) >= -0x40;
    let bytes = s.as_bytes();
    let mut remaining = usize::try_from(n).unwrap_or(usize::MAX);
    let mut at = 0;
    // Skip whole blocks holding at most the code points still to pass; `at` may then sit
    // inside a sequence, whose continuation bytes the loop below passes over.
    while let Some(block) = bytes.get(at..at + BLOCK) {
        let starts = starts_in(block);
        if starts > remaining {
            break;
        }
        remaining -= starts;
        at += BLOCK;
    }
    for (offset, byte) in bytes[at..].iter().enumerate() {
        if is_start(byte) {
            if remaining == 0 {
                return s.split_at(at + offset);
            }
            remaining -= 1;
        }
    }
    (s, "")
}

impl Operation {
    /// The empty operation: it expects the empty document and does nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the next `n` characters (normalising: `0` is skipped, retains merge).
    ///
    /// Lengths saturate rather than overflow; an operation whose lengths end up beyond
    /// [`MAX_LENGTH`] is refused with [`OtError::TooLong`] when it is used.
    pub fn retain(&mut self, n: u64) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len = self.base_len.saturating_add(n);
        self.target_len = self.target_len.saturating_add(n);
        match self.components.last_mut() {
            Some(Component::Retain(last)) => *last = last.saturating_add(n),
            _ => self.components.push(Component::Retain(n)),
        }
        self
    }

    /// Removes the next `n` characters (normalising: `0` is skipped, deletes merge).
    ///
    /// Lengths saturate as for [`Operation::retain`].
    pub fn delete(&mut self, n: u64) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len = self.base_len.saturating_add(n);
        match self.components.last_mut() {
            Some(Component::Delete(last)) => *last = last.saturating_add(n),
            _ => self.components.push(Component::Delete(n)),
        }
        self
    }

    /// Inserts `s` here (normalising: `""` is skipped, inserts merge, and an insert after a
    /// delete goes in front of it).
    pub fn insert(&mut self, s: &str) -> &mut Self {
        self.push_insert(s)
    }

    /// [`Operation::insert`] for a string the caller may already own, so that it is not
    /// copied when it becomes a new component.
    fn push_insert<S: AsRef<str> + Into<String>>(&mut self, s: S) -> &mut Self {
        let text = s.as_ref();
        if text.is_empty() {
            return self;
        }
        self.target_len = self.target_len.saturating_add(char_len(text));
        match self.components.as_mut_slice() {
            [.., Component::Insert(last)] | [.., Component::Insert(last), Component::Delete(_)] => {
                last.push_str(text);
            }
            [.., Component::Delete(_)] => {
                // Deleting then inserting edits the text the same way as inserting then
                // deleting; ot.js picks insert-first so that the form is unique.
                let before_delete = self.components.len() - 1;
                self.components
                    .insert(before_delete, Component::Insert(s.into()));
            }
            _ => self.components.push(Component::Insert(s.into())),
        }
        self
    }

    /// Builds a normalised operation from components in any form (zero counts, empty
    /// strings, adjacent parts of one kind, inserts after deletes are all fine).
    ///
    /// Fails with [`OtError::TooLong`] if a count or a length exceeds [`MAX_LENGTH`].
    pub fn from_components(parts: impl IntoIterator<Item = Component>) -> Result<Self, OtError> {
        let mut op = Self::new();
        for part in parts {
            op.push_checked(part)?;
        }
        Ok(op)
    }

    /// Appends one component, refusing counts and lengths beyond [`MAX_LENGTH`].
    ///
    /// Because every count and the lengths before the push are at most 2^53, the saturating
    /// builders never actually saturate on this path.
    pub(crate) fn push_checked(&mut self, part: Component) -> Result<(), OtError> {
        match part {
            Component::Retain(n) if n > MAX_LENGTH => return Err(OtError::TooLong),
            Component::Delete(n) if n > MAX_LENGTH => return Err(OtError::TooLong),
            Component::Retain(n) => self.retain(n),
            Component::Delete(n) => self.delete(n),
            Component::Insert(s) => self.push_insert(s),
        };
        self.check_bounds()
    }

    /// Fails with [`OtError::TooLong`] unless both lengths are within [`MAX_LENGTH`], which
    /// also guarantees that no builder saturated.
    pub(crate) fn check_bounds(&self) -> Result<(), OtError> {
        if self.base_len > MAX_LENGTH || self.target_len > MAX_LENGTH {
            return Err(OtError::TooLong);
        }
        Ok(())
    }

    /// The normalised components, in document order.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// The length, in code points, of the document this operation applies to.
    pub fn base_len(&self) -> u64 {
        self.base_len
    }

    /// The length, in code points, of the document after applying this operation.
    pub fn target_len(&self) -> u64 {
        self.target_len
    }

    /// Roughly how many bytes this operation holds in memory: its components and the text
    /// it inserts. Memory budgets count this, since an op like `[1,-1,1,-1,…]` takes about
    /// ten times its JSON size.
    pub fn memory_bytes(&self) -> usize {
        let inserted: usize = self
            .components
            .iter()
            .map(|part| match part {
                Component::Insert(s) => s.len(),
                _ => 0,
            })
            .sum();
        std::mem::size_of::<Self>()
            + self.components.len() * std::mem::size_of::<Component>()
            + inserted
    }

    /// True if applying this operation changes nothing (it only retains, or is empty).
    pub fn is_noop(&self) -> bool {
        self.components
            .iter()
            .all(|part| matches!(part, Component::Retain(_)))
    }

    /// The operation on the empty document that inserts `text`.
    pub fn insert_text(text: &str) -> Self {
        let mut op = Self::new();
        op.insert(text);
        op
    }

    /// Fails unless the operation is within bounds and expects a document of `actual`
    /// code points.
    fn check_base(&self, actual: u64) -> Result<(), OtError> {
        self.check_bounds()?;
        if self.base_len != actual {
            return Err(OtError::BaseLengthMismatch {
                expected: self.base_len,
                actual,
            });
        }
        Ok(())
    }

    /// Applies the operation to `text`, returning the edited text.
    ///
    /// Fails with [`OtError::BaseLengthMismatch`] if `text` does not have exactly
    /// [`Operation::base_len`] code points.
    pub fn apply_str(&self, text: &str) -> Result<String, OtError> {
        self.check_base(char_len(text))?;
        let inserted_bytes: usize = self
            .components
            .iter()
            .map(|part| match part {
                Component::Insert(s) => s.len(),
                _ => 0,
            })
            .sum();
        let mut out = String::with_capacity(text.len().saturating_add(inserted_bytes));
        let mut rest = text;
        for part in &self.components {
            match part {
                Component::Retain(n) => {
                    let (kept, tail) = split_at_char(rest, *n);
                    out.push_str(kept);
                    rest = tail;
                }
                Component::Delete(n) => rest = split_at_char(rest, *n).1,
                Component::Insert(s) => out.push_str(s),
            }
        }
        Ok(out)
    }

    /// Applies the operation to `rope` in place, in O(components × log n) plus the size of
    /// the inserted text — never in time proportional to the document.
    ///
    /// The base length is checked before anything is touched, so on error the rope is
    /// unchanged.
    pub fn apply(&self, rope: &mut Rope) -> Result<(), OtError> {
        // usize is at most 64 bits on every target Rust supports, so this cast is lossless.
        self.check_base(rope.len_chars() as u64)?;
        // Every count is now at most the rope's length, a usize, so these conversions cannot
        // fail and the rope cannot be left half edited; the error path is only a guard.
        let mut position: usize = 0;
        for part in &self.components {
            match part {
                Component::Retain(n) => {
                    position += usize::try_from(*n).map_err(|_| OtError::TooLong)?;
                }
                Component::Delete(n) => {
                    let n = usize::try_from(*n).map_err(|_| OtError::TooLong)?;
                    rope.remove(position..position + n);
                }
                Component::Insert(s) => {
                    rope.insert(position, s);
                    position += s.chars().count();
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Component::{Delete, Insert, Retain};

    fn ins(s: &str) -> Component {
        Insert(s.to_owned())
    }

    #[test]
    fn insert_after_delete_goes_before_it() {
        let op = Operation::from_components([Retain(1), Delete(1), ins("e"), Retain(3)]).unwrap();
        assert_eq!(
            op.components(),
            &[Retain(1), ins("e"), Delete(1), Retain(3)]
        );
        assert_eq!(op.base_len(), 5);
        assert_eq!(op.target_len(), 5);
    }

    #[test]
    fn builders_skip_empty_parts_and_merge_neighbours() {
        let mut op = Operation::new();
        op.retain(0)
            .retain(2)
            .retain(3)
            .insert("")
            .insert("ab")
            .insert("c")
            .delete(0)
            .delete(1)
            .delete(2)
            .insert("d")
            .retain(1);
        assert_eq!(
            op.components(),
            &[Retain(5), ins("abcd"), Delete(3), Retain(1)]
        );
        assert_eq!(op.base_len(), 9);
        assert_eq!(op.target_len(), 10);
    }

    #[test]
    fn insert_after_delete_merges_with_insert_before_it() {
        let op = Operation::from_components([ins("a"), Delete(2), ins("b"), Delete(1), ins("c")])
            .unwrap();
        assert_eq!(op.components(), &[ins("abc"), Delete(3)]);
    }

    #[test]
    fn zero_and_empty_components_vanish() {
        let op = Operation::from_components([Retain(0), ins(""), Delete(0)]).unwrap();
        assert_eq!(op, Operation::new());
        assert!(op.is_noop());
        assert_eq!(op.apply_str("").unwrap(), "");
    }

    #[test]
    fn from_components_refuses_counts_and_lengths_beyond_the_limit() {
        assert_eq!(
            Operation::from_components([Retain(MAX_LENGTH + 1)]),
            Err(OtError::TooLong)
        );
        assert_eq!(
            Operation::from_components([Delete(MAX_LENGTH + 1)]),
            Err(OtError::TooLong)
        );
        assert_eq!(
            Operation::from_components([Retain(MAX_LENGTH), Delete(1)]),
            Err(OtError::TooLong)
        );
        assert_eq!(
            Operation::from_components([Retain(MAX_LENGTH), ins("x")]),
            Err(OtError::TooLong)
        );
        let biggest = Operation::from_components([Retain(MAX_LENGTH)]).unwrap();
        assert_eq!(biggest.base_len(), MAX_LENGTH);
    }

    #[test]
    fn saturated_builders_are_refused_when_used() {
        let mut op = Operation::new();
        op.retain(u64::MAX).retain(u64::MAX);
        assert_eq!(op.base_len(), u64::MAX);
        assert_eq!(op.apply_str("abc"), Err(OtError::TooLong));
        assert_eq!(op.apply(&mut Rope::from_str("abc")), Err(OtError::TooLong));
        assert_eq!(op.compose(&op), Err(OtError::TooLong));
        assert_eq!(op.transform(&op), Err(OtError::TooLong));
    }

    #[test]
    fn noop_detection() {
        assert!(Operation::new().is_noop());
        let mut op = Operation::new();
        op.retain(4);
        assert!(op.is_noop());
        op.insert("x");
        assert!(!op.is_noop());
        let mut del = Operation::new();
        del.delete(1);
        assert!(!del.is_noop());
    }

    #[test]
    fn insert_text_builds_from_the_empty_document() {
        let op = Operation::insert_text("héllo 🎉");
        assert_eq!(op.base_len(), 0);
        assert_eq!(op.target_len(), 7);
        assert_eq!(op.apply_str("").unwrap(), "héllo 🎉");
        assert_eq!(Operation::insert_text(""), Operation::new());
    }

    #[test]
    fn lengths_count_code_points() {
        let family = "👨‍👩‍👧‍👦";
        assert_eq!(char_len(family), 7);
        assert_eq!(Operation::insert_text(family).target_len(), 7);
        assert_eq!(char_len("é中🎉"), 3);
    }

    #[test]
    fn apply_str_handles_multibyte_and_astral_text() {
        let text = "é中🎉👨‍👩‍👧‍👦x";
        // Keep é, delete 中, insert ✓, keep 🎉 and the man, delete the first joiner, keep rest.
        let mut op = Operation::new();
        op.retain(1)
            .delete(1)
            .insert("✓")
            .retain(2)
            .delete(1)
            .retain(6);
        assert_eq!(op.base_len(), 11);
        let expected = "é✓🎉👨👩\u{200d}👧\u{200d}👦x";
        assert_eq!(op.apply_str(text).unwrap(), expected);
        let mut rope = Rope::from_str(text);
        op.apply(&mut rope).unwrap();
        assert_eq!(rope.to_string(), expected);
    }

    #[test]
    fn apply_deletes_the_whole_family_emoji() {
        let text = "a👨‍👩‍👧‍👦b";
        let mut op = Operation::new();
        op.retain(1).delete(7).retain(1);
        assert_eq!(op.apply_str(text).unwrap(), "ab");
        let mut rope = Rope::from_str(text);
        op.apply(&mut rope).unwrap();
        assert_eq!(rope, "ab");
    }

    #[test]
    fn base_length_mismatch_is_reported_and_leaves_the_rope_unchanged() {
        let mut op = Operation::new();
        op.retain(2).insert("x").delete(1);
        let err = op.apply_str("ab").unwrap_err();
        assert_eq!(
            err,
            OtError::BaseLengthMismatch {
                expected: 3,
                actual: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "operation expects a document of 3 characters but it has 2"
        );
        // Three bytes-worth of one char must not pass for three characters.
        assert!(op.apply_str("中").is_err());

        let mut rope = Rope::from_str("🎉🎉🎉🎉");
        let before = rope.clone();
        assert_eq!(
            op.apply(&mut rope),
            Err(OtError::BaseLengthMismatch {
                expected: 3,
                actual: 4
            })
        );
        assert_eq!(rope, before);
    }

    #[test]
    fn apply_inserts_at_start_and_end() {
        let mut op = Operation::new();
        op.insert("«").retain(3).insert("»");
        let mut rope = Rope::from_str("中文字");
        op.apply(&mut rope).unwrap();
        assert_eq!(rope, "«中文字»");
        assert_eq!(op.apply_str("中文字").unwrap(), "«中文字»");
    }

    proptest::proptest! {
        /// Against the obvious definition, on text mixing one- to four-byte code points
        /// and lengths across several blocks.
        #[test]
        fn split_at_char_splits_after_n_code_points(
            text in "[a-zé中🎉]{0,300}",
            n in 0u64..320,
        ) {
            let at = text
                .char_indices()
                .nth(n as usize)
                .map_or(text.len(), |(byte, _)| byte);
            proptest::prop_assert_eq!(split_at_char(&text, n), text.split_at(at));
        }
    }

    #[test]
    fn split_at_char_stops_at_the_end() {
        assert_eq!(split_at_char("a🎉b", 2), ("a🎉", "b"));
        assert_eq!(split_at_char("a🎉b", 9), ("a🎉b", ""));
        assert_eq!(split_at_char("", 0), ("", ""));
    }
}
