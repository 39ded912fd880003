//! The JSON form of an operation, identical to Rustpad's and ot.js's: an array in which a
//! non-negative integer `n` retains `n` characters, a negative integer `-n` deletes `n`,
//! and a string inserts itself (`[3, "a", -2, 5]`).
//!
//! Deserialisation is written by hand so that hostile input is refused with a serde error
//! instead of a panic, and so that the result is always normalised.

use std::fmt;

use serde::de::{self, SeqAccess, Unexpected, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Component, Operation, MAX_LENGTH};

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.components().len()))?;
        for part in self.components() {
            match part {
                Component::Retain(n) => seq.serialize_element(n)?,
                Component::Delete(n) => match i64::try_from(*n) {
                    Ok(n) => seq.serialize_element(&-n)?,
                    // Only a saturated builder gets here; i128 keeps the number exact
                    // instead of failing.
                    Err(_) => seq.serialize_element(&-i128::from(*n))?,
                },
                Component::Insert(s) => seq.serialize_element(s)?,
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(OperationVisitor)
    }
}

/// Reads the JSON array and normalises as it goes.
struct OperationVisitor;

impl<'de> Visitor<'de> for OperationVisitor {
    type Value = Operation;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "an operation: an array of retain counts (non-negative integers), \
             delete counts (negative integers) and insert strings",
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Operation, A::Error> {
        let mut op = Operation::new();
        while let Some(WireComponent(part)) = seq.next_element()? {
            op.push_checked(part).map_err(de::Error::custom)?;
        }
        Ok(op)
    }
}

/// One element of the JSON array.
struct WireComponent(Component);

impl<'de> Deserialize<'de> for WireComponent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ComponentVisitor)
    }
}

/// Accepts integers within ±(2^53 − 1) and strings; every other JSON value (floats, nulls,
/// booleans, objects, nested arrays) falls through to serde's default "invalid type" error.
struct ComponentVisitor;

/// What an out-of-range count is reported as having been expected.
const COUNT_RANGE: &str = "a count between -(2^53 - 1) and 2^53 - 1";

impl<'de> Visitor<'de> for ComponentVisitor {
    type Value = WireComponent;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "an operation component: a retain count (non-negative integer), \
             a delete count (negative integer) or an insert string",
        )
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<WireComponent, E> {
        if n > MAX_LENGTH {
            return Err(E::invalid_value(Unexpected::Unsigned(n), &COUNT_RANGE));
        }
        Ok(WireComponent(Component::Retain(n)))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<WireComponent, E> {
        let count = n.unsigned_abs();
        if count > MAX_LENGTH {
            return Err(E::invalid_value(Unexpected::Signed(n), &COUNT_RANGE));
        }
        Ok(WireComponent(if n < 0 {
            Component::Delete(count)
        } else {
            Component::Retain(count)
        }))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<WireComponent, E> {
        Ok(WireComponent(Component::Insert(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<WireComponent, E> {
        Ok(WireComponent(Component::Insert(s)))
    }
}

impl Operation {
    /// The operation's JSON form, exactly as Rustpad writes it (`[3,"a",-2,5]`, `[]`).
    pub fn to_json(&self) -> String {
        // Written by hand rather than through serde_json so that it cannot fail and needs
        // no unwrap; a test checks it matches serde_json byte for byte.
        let mut out = String::from("[");
        for (i, part) in self.components().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match part {
                Component::Retain(n) => out.push_str(&n.to_string()),
                Component::Delete(n) => {
                    out.push('-');
                    out.push_str(&n.to_string());
                }
                Component::Insert(s) => push_json_string(&mut out, s),
            }
        }
        out.push(']');
        out
    }

    /// Parses an operation from its JSON form, normalising it.
    pub fn from_json(s: &str) -> Result<Operation, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// Appends `s` as a JSON string literal, escaping exactly the characters serde_json does.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use Component::{Delete, Insert, Retain};

    fn parse(s: &str) -> Result<Operation, serde_json::Error> {
        Operation::from_json(s)
    }

    #[test]
    fn serialises_like_rustpad() {
        let mut op = Operation::new();
        op.retain(3).insert("a").delete(2).retain(5);
        assert_eq!(op.to_json(), r#"[3,"a",-2,5]"#);
        assert_eq!(serde_json::to_string(&op).unwrap(), r#"[3,"a",-2,5]"#);
        assert_eq!(Operation::new().to_json(), "[]");
        assert_eq!(serde_json::to_string(&Operation::new()).unwrap(), "[]");
    }

    #[test]
    fn round_trips() {
        for json in [
            "[]",
            "[5]",
            "[-5]",
            r#"["héllo 中 🎉 👨‍👩‍👧‍👦"]"#,
            r#"[1,"e",-1,3]"#,
            r#"["a\"b\\c\nd\te\u0001f\u001f",2]"#,
            "[9007199254740991]",
            "[-9007199254740991]",
        ] {
            let op = parse(json).unwrap();
            assert_eq!(op.to_json(), json);
            assert_eq!(serde_json::to_string(&op).unwrap(), json);
            assert_eq!(parse(&op.to_json()).unwrap(), op);
        }
    }

    #[test]
    fn parses_and_normalises() {
        let op = parse(r#"[1,-1,"e",3]"#).unwrap();
        assert_eq!(
            op.components(),
            &[Retain(1), Insert("e".into()), Delete(1), Retain(3)]
        );
        assert_eq!(op.to_json(), r#"[1,"e",-1,3]"#);
        let op = parse(r#"[0,"",1,2,"a","b",-1,-2,0]"#).unwrap();
        assert_eq!(op.to_json(), r#"[3,"ab",-3]"#);
        assert_eq!(parse("[0]").unwrap(), Operation::new());
        assert_eq!(parse(r#"[""]"#).unwrap(), Operation::new());
        // Astral characters may arrive as escaped UTF-16 surrogate pairs.
        let op = parse(r#"["\ud83c\udf89"]"#).unwrap();
        assert_eq!(op, Operation::insert_text("🎉"));
        assert_eq!(op.target_len(), 1);
    }

    #[test]
    fn rejects_malformed_input() {
        for json in [
            "",
            "{}",
            "null",
            "5",
            r#""abc""#,
            "[1.0]",
            "[1.5]",
            "[-0]",
            "[1e3]",
            "[null]",
            "[true]",
            "[{}]",
            r#"[{"retain":1}]"#,
            "[[1]]",
            "[1,]",
            "[1",
            r#"["\ud83c"]"#,
            "[9007199254740992]",
            "[-9007199254740992]",
            "[18446744073709551615]",
            "[18446744073709551616]",
            "[-9223372036854775808]",
            "[-99999999999999999999999]",
            "[9007199254740991,1]",
            "[9007199254740991,-1]",
            r#"[9007199254740991,"x"]"#,
        ] {
            assert!(parse(json).is_err(), "{json} should be rejected");
        }
    }

    #[test]
    fn errors_tell_what_is_wrong() {
        let float = parse("[1.5]").unwrap_err().to_string();
        assert!(float.contains("floating point"), "{float}");
        let big = parse("[9007199254740992]").unwrap_err().to_string();
        assert!(big.contains("2^53"), "{big}");
        let long = parse("[9007199254740991,1]").unwrap_err().to_string();
        assert!(long.contains("exceeds"), "{long}");
        let object = parse("{}").unwrap_err().to_string();
        assert!(object.contains("an operation"), "{object}");
    }

    #[test]
    fn saturated_deletes_still_serialise_exactly() {
        let mut op = Operation::new();
        op.delete(u64::MAX);
        assert_eq!(op.to_json(), "[-18446744073709551615]");
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            "[-18446744073709551615]"
        );
    }
}
