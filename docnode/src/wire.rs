//! Conversions between the gRPC contract and the OT types the docnode works with.

use codraft_ot::{Component, Operation, OtError};
use codraft_proto as pb;

// The OT crate's length bound is the wire's: an op a client may send is one it may apply.
const _: () = assert!(codraft_ot::MAX_LENGTH == pb::MAX_SAFE_INTEGER);

/// Builds a normalised operation from the gateway's typed components.
pub fn operation_from_proto(op: &pb::Operation) -> Result<Operation, OtError> {
    Operation::from_components(op.components.iter().filter_map(|c| {
        Some(match c.kind.as_ref()? {
            pb::component::Kind::Retain(n) => Component::Retain(*n),
            pb::component::Kind::Delete(n) => Component::Delete(*n),
            pb::component::Kind::Insert(s) => Component::Insert(s.clone()),
        })
    }))
}

/// The gRPC form of an operation.
pub fn operation_to_proto(op: &Operation) -> pb::Operation {
    pb::Operation {
        components: op
            .components()
            .iter()
            .map(|c| pb::Component {
                kind: Some(match c {
                    Component::Retain(n) => pb::component::Kind::Retain(*n),
                    Component::Delete(n) => pb::component::Kind::Delete(*n),
                    Component::Insert(s) => pb::component::Kind::Insert(s.clone()),
                }),
            })
            .collect(),
    }
}

/// Wraps a server message kind in a frame.
pub fn frame(kind: pb::server_frame::Kind) -> pb::ServerFrame {
    pb::ServerFrame { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_operation() {
        let mut op = Operation::new();
        op.retain(2).insert("héllo 🎉").delete(3).retain(1);
        let back = operation_from_proto(&operation_to_proto(&op)).expect("valid op");
        assert_eq!(back, op);
    }

    #[test]
    fn components_are_normalised_on_the_way_in() {
        let raw = pb::Operation {
            components: vec![
                pb::Component {
                    kind: Some(pb::component::Kind::Retain(1)),
                },
                pb::Component {
                    kind: Some(pb::component::Kind::Delete(1)),
                },
                pb::Component {
                    kind: Some(pb::component::Kind::Insert("e".into())),
                },
                pb::Component {
                    kind: Some(pb::component::Kind::Retain(0)),
                },
                pb::Component { kind: None },
            ],
        };
        let op = operation_from_proto(&raw).expect("valid op");
        assert_eq!(op.to_json(), r#"[1,"e",-1]"#);
    }
}
