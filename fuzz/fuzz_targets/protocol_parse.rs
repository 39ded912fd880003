//! Fuzz target `protocol_parse`: arbitrary bytes as one client WebSocket text message.
//!
//! Invariants checked:
//! - `codraft_gateway::protocol::parse_client` never panics, and every frame it accepts keeps
//!   the limits it promises (revision and seq below 2^53, name, language and password
//!   lengths, hue, cursor count).
//! - An accepted edit's operation, normalised as the docnode normalises it, is accepted again
//!   when a client sends its `to_json` form, normalises to the same operation, and the
//!   gateway's `render` shows it to other clients exactly as `to_json` writes it.
//! - `codraft_ot::Operation::from_json` never panics on the same text; what it accepts is
//!   normalised, and `to_json` round-trips (`from_json(to_json(op)) == op`) and matches
//!   serde_json's output byte for byte.

#![no_main]

use codraft_fuzz::assert_normalised;
use codraft_gateway::protocol::{
    parse_client, render, MAX_CURSORS, MAX_LANGUAGE_CHARS, MAX_NAME_CHARS, MAX_OTP_CHARS, MAX_SAFE,
};
use codraft_ot::{Component, Operation, OtError};
use codraft_proto as pb;
use libfuzzer_sys::fuzz_target;
use pb::{client_frame::Kind as In, component::Kind as Part, server_frame::Kind as Out};

fuzz_target!(|data: &[u8]| {
    // A WebSocket text message is UTF-8 by definition; other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_client_message(text);
    check_operation_json(text);
});

/// Parses `text` as a client message and checks what an accepted one may contain.
fn check_client_message(text: &str) {
    let Ok(frame) = parse_client(text) else {
        return;
    };
    match frame.kind.expect("an accepted message has a kind") {
        In::Edit(edit) => {
            assert!(edit.revision <= MAX_SAFE, "revision {}", edit.revision);
            assert!(
                edit.seq.is_none_or(|seq| seq <= MAX_SAFE),
                "seq {:?}",
                edit.seq
            );
            let operation = edit.operation.expect("an accepted edit has an operation");
            check_edit_round_trip(&operation);
        }
        In::SetLanguage(set) => {
            assert!(set.language.chars().count() <= MAX_LANGUAGE_CHARS);
            assert!(!set.language.chars().any(char::is_control));
        }
        In::ClientInfo(info) => {
            assert!(info.name.chars().count() <= MAX_NAME_CHARS);
            assert!(info.hue <= 359, "hue {}", info.hue);
        }
        In::CursorData(data) => {
            assert!(data.cursors.len() + data.selections.len() <= MAX_CURSORS);
        }
        In::SetOtp(set) => {
            if let Some(otp) = set.otp {
                assert!((1..=MAX_OTP_CHARS).contains(&otp.chars().count()));
            }
        }
        // Listed, not matched by `_`, so that a new client message fails to compile here
        // until someone decides what its fuzz invariants are.
        In::Open(open) => panic!("a client message parsed as the stream's Open frame: {open:?}"),
        // Yjs frames come only from the binary y-websocket relay, never from this parser.
        In::Yjs(bytes) => panic!("a JSON client message parsed as a Yjs frame: {bytes:?}"),
    }
}

/// Normalises an accepted edit like the docnode does, sends it back through the client
/// parser and renders it as a history entry, checking all three agree with `to_json`.
fn check_edit_round_trip(operation: &pb::Operation) {
    let op = match operation_from_proto(operation) {
        Ok(op) => op,
        // The gateway checks each count, not their sum: an edit whose total length passes
        // 2^53 is the docnode's to refuse, and this is how it refuses it.
        Err(OtError::TooLong) => return,
        Err(other) => panic!("normalising an accepted edit failed with {other:?}"),
    };
    assert_normalised(&op);
    let json = op.to_json();

    // Normalising may merge two counts below 2^53 into one of exactly 2^53, which the OT
    // crate allows and the gateway (JavaScript's safe integers) does not; skip that case.
    let counts_fit = op.components().iter().all(|part| match part {
        Component::Retain(n) | Component::Delete(n) => *n <= MAX_SAFE,
        Component::Insert(_) => true,
    });
    if counts_fit {
        let message = format!(r#"{{"Edit":{{"revision":0,"operation":{json}}}}}"#);
        let frame = parse_client(&message)
            .unwrap_or_else(|e| panic!("the gateway refused to_json's {json}: {e}"));
        let Some(In::Edit(edit)) = frame.kind else {
            panic!("{message} did not parse as an edit");
        };
        let again = operation_from_proto(&edit.operation.expect("an edit has an operation"))
            .unwrap_or_else(|e| panic!("{json} no longer normalises: {e}"));
        assert_eq!(again, op, "{json} parsed back to a different operation");
    }

    let history = pb::ServerFrame {
        kind: Some(Out::History(pb::History {
            start: 0,
            entries: vec![pb::HistoryEntry {
                user_id: 1,
                operation: Some(operation_to_proto(&op)),
                ..Default::default()
            }],
            ..Default::default()
        })),
    };
    let rendered = render(&history, None, false).expect("a history frame renders");
    let expected =
        format!(r#"{{"History":{{"start":0,"operations":[{{"id":1,"operation":{json}}}]}}}}"#);
    assert_eq!(rendered.text, expected, "render and to_json disagree");
    assert!(rendered.close.is_none());
}

/// Parses `text` as a bare operation and checks the JSON round trip.
fn check_operation_json(text: &str) {
    let Ok(op) = Operation::from_json(text) else {
        return;
    };
    assert_normalised(&op);
    let json = op.to_json();
    let serde = serde_json::to_string(&op).expect("an operation always serialises");
    assert_eq!(json, serde, "to_json and serde_json disagree");
    let again = Operation::from_json(&json)
        .unwrap_or_else(|e| panic!("to_json wrote {json}, which does not parse: {e}"));
    assert_eq!(again, op, "{text} -> {json} does not round-trip");
}

/// The gateway's typed components as an operation, exactly as the docnode builds it
/// (`docnode/src/wire.rs`; the docnode crate is not a dependency of this one).
fn operation_from_proto(op: &pb::Operation) -> Result<Operation, OtError> {
    Operation::from_components(op.components.iter().filter_map(|c| {
        Some(match c.kind.as_ref()? {
            Part::Retain(n) => Component::Retain(*n),
            Part::Delete(n) => Component::Delete(*n),
            Part::Insert(s) => Component::Insert(s.clone()),
        })
    }))
}

/// An operation in the gRPC form the docnode sends to gateways.
fn operation_to_proto(op: &Operation) -> pb::Operation {
    pb::Operation {
        components: op
            .components()
            .iter()
            .map(|part| pb::Component {
                kind: Some(match part {
                    Component::Retain(n) => Part::Retain(*n),
                    Component::Delete(n) => Part::Delete(*n),
                    Component::Insert(s) => Part::Insert(s.clone()),
                }),
            })
            .collect(),
    }
}
