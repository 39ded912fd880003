//! Rustpad's JSON client protocol, translated to and from the typed gRPC frames.
//!
//! Parsing happens here, at the edge: a message that is not valid JSON, is of an unknown kind
//! or has a field of the wrong shape never reaches a docnode. The docnode still validates what
//! only it can judge (an operation against the document). docs/protocol.md lists every message.

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use codraft_proto as pb;
use pb::{
    client_frame::Kind as In, component::Kind as Part, in_process::Fanout,
    server_frame::Kind as Out,
};
use serde::{
    de::{self, SeqAccess, Visitor},
    ser::SerializeSeq,
    Deserialize, Deserializer, Serialize, Serializer,
};

/// Largest count or position a client may send: JavaScript's safe integers.
pub use codraft_proto::MAX_SAFE_INTEGER as MAX_SAFE;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest language name, in characters.
pub const MAX_LANGUAGE_CHARS: usize = 32;
/// Longest one-time password, in characters.
pub const MAX_OTP_CHARS: usize = 128;
/// Most cursors plus selections in one CursorData.
pub const MAX_CURSORS: usize = 128;

/// Close code for a message the gateway could not understand (not fatal).
pub use codraft_proto::close::INVALID_MESSAGE;

/// Why a client message was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, or not a message this server knows.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// A field out of its allowed range.
    #[error("{0}")]
    OutOfRange(String),
}

#[derive(Deserialize)]
enum ClientMsg {
    Edit(EditMsg),
    SetLanguage(String),
    ClientInfo(InfoMsg),
    CursorData(CursorMsg),
    SetOtp(Option<String>),
}

#[derive(Deserialize)]
struct EditMsg {
    revision: u64,
    operation: WireOperation,
    #[serde(default)]
    seq: Option<u64>,
}

#[derive(Deserialize, Serialize)]
struct InfoMsg {
    name: String,
    hue: u32,
}

#[derive(Deserialize)]
struct CursorMsg {
    cursors: Vec<u64>,
    selections: Vec<(u64, u64)>,
}

/// An operation as JSON: integers retain (positive) or delete (negative), strings insert.
struct WireOperation(Vec<pb::Component>);

impl<'de> Deserialize<'de> for WireOperation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Parts;
        impl<'de> Visitor<'de> for Parts {
            type Value = WireOperation;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of integers and strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(part) = seq.next_element::<WirePart>()? {
                    parts.push(pb::Component { kind: Some(part.0) });
                }
                Ok(WireOperation(parts))
            }
        }
        deserializer.deserialize_seq(Parts)
    }
}

struct WirePart(Part);

impl<'de> Deserialize<'de> for WirePart {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct One;
        impl Visitor<'_> for One {
            type Value = WirePart;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<WirePart, E> {
                if n > MAX_SAFE {
                    return Err(E::custom("retain count too large"));
                }
                Ok(WirePart(Part::Retain(n)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<WirePart, E> {
                if n >= 0 {
                    return self.visit_u64(n.unsigned_abs());
                }
                let n = n.unsigned_abs();
                if n > MAX_SAFE {
                    return Err(E::custom("delete count too large"));
                }
                Ok(WirePart(Part::Delete(n)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<WirePart, E> {
                Ok(WirePart(Part::Insert(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<WirePart, E> {
                Ok(WirePart(Part::Insert(s)))
            }
        }
        deserializer.deserialize_any(One)
    }
}

/// Parses one client text message into the frame for the docnode.
pub fn parse_client(text: &str) -> Result<pb::ClientFrame, ProtocolError> {
    let message: ClientMsg =
        serde_json::from_str(text).map_err(|e| ProtocolError::Invalid(e.to_string()))?;
    let kind = match message {
        ClientMsg::Edit(edit) => {
            if edit.revision > MAX_SAFE || edit.seq.is_some_and(|s| s > MAX_SAFE) {
                return Err(ProtocolError::OutOfRange(
                    "revision and seq must be below 2^53".into(),
                ));
            }
            In::Edit(pb::Edit {
                revision: edit.revision,
                operation: Some(pb::Operation {
                    components: edit.operation.0,
                }),
                seq: edit.seq,
                // The relay fills this in once it has opened the edit's span.
                trace_context: Default::default(),
            })
        }
        ClientMsg::SetLanguage(language) => {
            if language.chars().count() > MAX_LANGUAGE_CHARS
                || language.chars().any(char::is_control)
            {
                return Err(ProtocolError::OutOfRange(format!(
                    "a language name has at most {MAX_LANGUAGE_CHARS} printable characters"
                )));
            }
            In::SetLanguage(pb::SetLanguage { language })
        }
        ClientMsg::ClientInfo(info) => {
            if info.name.chars().count() > MAX_NAME_CHARS {
                return Err(ProtocolError::OutOfRange(format!(
                    "a name has at most {MAX_NAME_CHARS} characters"
                )));
            }
            if info.hue > 359 {
                return Err(ProtocolError::OutOfRange("hue must be 0 to 359".into()));
            }
            In::ClientInfo(pb::ClientInfo {
                name: info.name,
                hue: info.hue,
            })
        }
        ClientMsg::CursorData(data) => {
            if data.cursors.len() + data.selections.len() > MAX_CURSORS {
                return Err(ProtocolError::OutOfRange(format!(
                    "at most {MAX_CURSORS} cursors and selections"
                )));
            }
            In::CursorData(pb::CursorData {
                cursors: data.cursors,
                selections: data
                    .selections
                    .into_iter()
                    .map(|(start, end)| pb::Selection { start, end })
                    .collect(),
            })
        }
        ClientMsg::SetOtp(otp) => {
            if otp
                .as_deref()
                .is_some_and(|o| o.is_empty() || o.chars().count() > MAX_OTP_CHARS)
            {
                return Err(ProtocolError::OutOfRange(format!(
                    "a password has 1 to {MAX_OTP_CHARS} characters"
                )));
            }
            In::SetOtp(pb::SetOtp { otp })
        }
    };
    Ok(pb::ClientFrame { kind: Some(kind) })
}

/// An operation's parts, serialised as Rustpad's JSON array.
struct OperationJson<'a>(&'a [pb::Component]);

impl Serialize for OperationJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for part in self.0 {
            match &part.kind {
                Some(Part::Retain(n)) => seq.serialize_element(n)?,
                Some(Part::Delete(n)) => seq.serialize_element(&-i128::from(*n))?,
                Some(Part::Insert(s)) => seq.serialize_element(s)?,
                None => {}
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct EntryJson<'a> {
    id: u64,
    operation: OperationJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

#[derive(Serialize)]
struct HistoryJson<'a> {
    start: u64,
    operations: Vec<EntryJson<'a>>,
}

#[derive(Serialize)]
struct UserInfoJson<'a> {
    id: u64,
    info: Option<InfoJson<'a>>,
}

#[derive(Serialize)]
struct InfoJson<'a> {
    name: &'a str,
    hue: u32,
}

#[derive(Serialize)]
struct CursorJson<'a> {
    cursors: &'a [u64],
    selections: Vec<(u64, u64)>,
}

#[derive(Serialize)]
struct UserCursorJson<'a> {
    id: u64,
    data: CursorJson<'a>,
}

#[derive(Serialize)]
struct JoinedJson {
    revision: u64,
    resumed: bool,
    last_seq: u64,
    /// Only present (true) on a read-only connection: the client must not edit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    read_only: bool,
}

#[derive(Serialize)]
struct AccessJson<'a> {
    read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct RefusedJson<'a> {
    code: u16,
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    login_url: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    code: u32,
    message: &'a str,
}

#[derive(Serialize)]
enum ServerMsg<'a> {
    Identity(u64),
    Joined(JoinedJson),
    History(HistoryJson<'a>),
    Language(&'a str),
    UserInfo(UserInfoJson<'a>),
    UserCursor(UserCursorJson<'a>),
    Error(ErrorJson<'a>),
    #[serde(rename = "OTP")]
    Otp(Option<&'a str>),
    Access(AccessJson<'a>),
    Refused(RefusedJson<'a>),
}

/// A docnode frame rendered for one client, and whether the socket must close after it.
pub struct Rendered {
    /// The JSON text message.
    pub text: Utf8Bytes,
    /// Close code and reason, when the frame ends the connection.
    pub close: Option<(u16, String)>,
}

/// Renders a docnode frame as JSON for the client whose exactly-once id is `client_id`:
/// history entries of that client id carry their `seq`, others do not. `Joined` says
/// `"read_only": true` to a connection whose token only grants reading.
pub fn render(
    frame: &pb::ServerFrame,
    client_id: Option<&str>,
    read_only: bool,
) -> Option<Rendered> {
    let empty = pb::CursorData::default();
    let message = match frame.kind.as_ref()? {
        Out::Identity(identity) => ServerMsg::Identity(identity.user_id),
        Out::Joined(joined) => ServerMsg::Joined(JoinedJson {
            revision: joined.revision,
            resumed: joined.resumed,
            last_seq: joined.last_seq,
            read_only,
        }),
        Out::History(history) => history_message(history.start, &history.entries, client_id),
        Out::Language(language) => ServerMsg::Language(&language.language),
        Out::UserInfo(info) => ServerMsg::UserInfo(UserInfoJson {
            id: info.user_id,
            info: info.info.as_ref().map(|i| InfoJson {
                name: &i.name,
                hue: i.hue,
            }),
        }),
        Out::UserCursor(cursor) => {
            let data = cursor.data.as_ref().unwrap_or(&empty);
            ServerMsg::UserCursor(UserCursorJson {
                id: cursor.user_id,
                data: CursorJson {
                    cursors: &data.cursors,
                    selections: data.selections.iter().map(|s| (s.start, s.end)).collect(),
                },
            })
        }
        Out::Error(error) => ServerMsg::Error(ErrorJson {
            code: error.code,
            message: &error.message,
        }),
        Out::Otp(otp) => ServerMsg::Otp(otp.otp.as_deref()),
        // An OT document's docnode never sends a Yjs message; nothing to render.
        Out::Yjs(_) => return None,
    };
    let text = serde_json::to_string(&message).ok()?.into();
    let close = match frame.kind.as_ref()? {
        Out::Error(e) if e.close => {
            Some((u16::try_from(e.code).unwrap_or(4500), e.message.clone()))
        }
        _ => None,
    };
    Some(Rendered { text, close })
}

/// A History message of `entries` at the client's revision `start`; the entries of client id
/// `client_id` carry their `seq`.
fn history_message<'a>(
    start: u64,
    entries: &'a [pb::HistoryEntry],
    client_id: Option<&str>,
) -> ServerMsg<'a> {
    ServerMsg::History(HistoryJson {
        start,
        operations: entries
            .iter()
            .map(|entry| EntryJson {
                id: entry.user_id,
                operation: OperationJson(
                    entry
                        .operation
                        .as_ref()
                        .map(|op| op.components.as_slice())
                        .unwrap_or_default(),
                ),
                seq: entry
                    .seq
                    .filter(|_| client_id.is_some() && entry.client_id.as_deref() == client_id),
            })
            .collect(),
    })
}

/// Renders a History frame whose entries every session of the document shares, at the
/// client's revision `start`, for the client whose exactly-once id is `client_id`: as
/// [`render`] would, but a client that wrote none of the entries gets the fan-out's one
/// rendering (the same bytes for every such client).
pub fn render_shared(start: u64, fanout: &Fanout, client_id: Option<&str>) -> Option<Rendered> {
    let entries = fanout.entries();
    let text = |client_id| serde_json::to_string(&history_message(start, entries, client_id));
    let wrote_one = client_id.is_some()
        && entries
            .iter()
            .any(|e| e.seq.is_some() && e.client_id.as_deref() == client_id);
    if wrote_one {
        let text = text(client_id).ok()?.into();
        return Some(Rendered { text, close: None });
    }
    let bytes = fanout.rendered(start, || text(None).ok().map(Bytes::from))?;
    let text = Utf8Bytes::try_from(bytes).ok()?;
    Some(Rendered { text, close: None })
}

/// `{"Access": {"read_only": .., "name": ..}}`: what the connection's token allows, sent
/// first when a token restricts the connection or names its user (clients that do not know
/// the kind ignore it).
pub fn access_message(read_only: bool, name: Option<&str>) -> String {
    serde_json::to_string(&ServerMsg::Access(AccessJson { read_only, name })).unwrap_or_default()
}

/// `{"Refused": {"code", "error", "message", "login_url"}}`: why the socket is about to close
/// without joining, in more than a close reason's 123 bytes.
pub fn refused_message(code: u16, error: &str, message: &str, login_url: Option<&str>) -> String {
    serde_json::to_string(&ServerMsg::Refused(RefusedJson {
        code,
        error,
        message,
        login_url,
    }))
    .unwrap_or_default()
}

/// The JSON of a gateway-side error message (the socket stays open).
pub fn error_message(code: u16, message: &str) -> String {
    serde_json::to_string(&ServerMsg::Error(ErrorJson {
        code: u32::from(code),
        message,
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> In {
        parse_client(text).expect("valid").kind.expect("kind")
    }

    #[test]
    fn parses_rustpad_messages() {
        match parse_ok(r#"{"Edit":{"revision":3,"operation":[1,-2,"hé🎉",4]}}"#) {
            In::Edit(edit) => {
                assert_eq!(edit.revision, 3);
                assert_eq!(edit.seq, None);
                let parts: Vec<_> = edit
                    .operation
                    .expect("op")
                    .components
                    .into_iter()
                    .filter_map(|c| c.kind)
                    .collect();
                assert_eq!(
                    parts,
                    vec![
                        Part::Retain(1),
                        Part::Delete(2),
                        Part::Insert("hé🎉".into()),
                        Part::Retain(4)
                    ]
                );
            }
            other => panic!("not an edit: {other:?}"),
        }
        assert!(matches!(
            parse_ok(r#"{"SetLanguage":"rust"}"#),
            In::SetLanguage(_)
        ));
        assert!(matches!(
            parse_ok(r#"{"ClientInfo":{"name":"Alice","hue":42}}"#),
            In::ClientInfo(_)
        ));
        assert!(matches!(
            parse_ok(r#"{"CursorData":{"cursors":[4,6],"selections":[[5,10]]}}"#),
            In::CursorData(_)
        ));
        assert!(matches!(
            parse_ok(r#"{"SetOtp":"pw"}"#),
            In::SetOtp(pb::SetOtp { otp: Some(_) })
        ));
        assert!(matches!(
            parse_ok(r#"{"SetOtp":null}"#),
            In::SetOtp(pb::SetOtp { otp: None })
        ));
    }

    #[test]
    fn reads_the_seq_extension_and_ignores_unknown_fields() {
        match parse_ok(r#"{"Edit":{"revision":0,"operation":["a"],"seq":7,"future":1}}"#) {
            In::Edit(edit) => assert_eq!(edit.seq, Some(7)),
            other => panic!("not an edit: {other:?}"),
        }
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            "not json",
            "{}",
            r#"{"Nope":1}"#,
            r#"{"Edit":{"revision":-1,"operation":[]}}"#,
            r#"{"Edit":{"revision":0,"operation":[1.5]}}"#,
            r#"{"Edit":{"revision":0,"operation":[null]}}"#,
            r#"{"Edit":{"revision":0,"operation":[[1]]}}"#,
            r#"{"Edit":{"revision":0,"operation":[9007199254740993]}}"#,
            r#"{"Edit":{"revision":0,"operation":"abc"}}"#,
            r#"{"ClientInfo":{"name":"a","hue":360}}"#,
            r#"{"ClientInfo":{"name":"a"}}"#,
            r#"{"CursorData":{"cursors":[-1],"selections":[]}}"#,
        ] {
            assert!(parse_client(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn renders_history_like_rustpad_and_seq_only_for_its_own_client() {
        let frame = pb::ServerFrame {
            kind: Some(Out::History(pb::History {
                start: 5,
                entries: vec![pb::HistoryEntry {
                    user_id: 9,
                    operation: Some(pb::Operation {
                        components: vec![
                            pb::Component {
                                kind: Some(Part::Retain(2)),
                            },
                            pb::Component {
                                kind: Some(Part::Insert("x".into())),
                            },
                            pb::Component {
                                kind: Some(Part::Delete(1)),
                            },
                        ],
                    }),
                    client_id: Some("tab1".into()),
                    seq: Some(3),
                }],
                compacted: false,
                log_revision: None,
            })),
        };
        let other = render(&frame, Some("tab2"), false).expect("renders").text;
        assert_eq!(
            other,
            r#"{"History":{"start":5,"operations":[{"id":9,"operation":[2,"x",-1]}]}}"#
        );
        let own = render(&frame, Some("tab1"), false).expect("renders").text;
        assert_eq!(
            own,
            r#"{"History":{"start":5,"operations":[{"id":9,"operation":[2,"x",-1],"seq":3}]}}"#
        );
    }

    #[test]
    fn renders_departure_as_null_info() {
        let frame = pb::ServerFrame {
            kind: Some(Out::UserInfo(pb::UserInfo {
                user_id: 4,
                info: None,
            })),
        };
        assert_eq!(
            render(&frame, None, false).expect("renders").text,
            r#"{"UserInfo":{"id":4,"info":null}}"#
        );
    }

    #[test]
    fn a_closing_error_carries_its_code() {
        let frame = pb::ServerFrame {
            kind: Some(Out::Error(pb::Error {
                code: 4409,
                message: "bad op".into(),
                close: true,
                reroute: false,
            })),
        };
        let rendered = render(&frame, None, false).expect("renders");
        assert_eq!(
            rendered.text,
            r#"{"Error":{"code":4409,"message":"bad op"}}"#
        );
        assert_eq!(rendered.close, Some((4409, "bad op".into())));
    }

    /// A random History entry by one of a few clients (with or without a seq, sometimes
    /// without a client id), of a few components whose inserts hold characters that JSON
    /// escapes.
    fn random_entry(rng: &mut impl rand::Rng) -> pb::HistoryEntry {
        let components = (0..rng.random_range(0..4))
            .map(|_| pb::Component {
                kind: Some(match rng.random_range(0..3) {
                    0 => Part::Retain(rng.random_range(1..1000)),
                    1 => Part::Delete(rng.random_range(1..1000)),
                    _ => Part::Insert(
                        (0..rng.random_range(1..6))
                            .map(|_| ['a', '"', '\\', '\n', 'é', '😀'][rng.random_range(0..6)])
                            .collect(),
                    ),
                }),
            })
            .collect();
        pb::HistoryEntry {
            user_id: rng.random_range(0..4),
            operation: Some(pb::Operation { components }),
            client_id: rng
                .random_bool(0.8)
                .then(|| format!("tab{}", rng.random_range(0..3))),
            seq: rng.random_bool(0.8).then(|| rng.random_range(0..100)),
        }
    }

    /// A shared History frame renders, for every client, exactly what its own copy of the
    /// frame would (`seq` on its own entries only), and every client that wrote none of the
    /// entries gets the very same bytes, at the start they were made for; seeded
    /// (`RENDER_SEED` replays one).
    #[test]
    fn a_shared_history_renders_as_each_client_s_own_copy_would() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let seeds: Vec<u64> = match std::env::var("RENDER_SEED") {
            Ok(seed) => vec![seed.parse().expect("RENDER_SEED is a number")],
            Err(_) => (0..200).map(|_| rand::random()).collect(),
        };
        let clients = [None, Some("tab0"), Some("tab1"), Some("tab2"), Some("tab9")];
        for seed in seeds {
            let mut rng = StdRng::seed_from_u64(seed);
            let entries: Vec<_> = (0..rng.random_range(1..4))
                .map(|_| random_entry(&mut rng))
                .collect();
            let fanout = Fanout::new(entries);
            let start = rng.random_range(0..1000);
            // The first rendering made for clients that wrote none of the entries.
            let mut shared: Option<(u64, Bytes)> = None;
            for _ in 0..12 {
                let client = clients[rng.random_range(0..clients.len())];
                // Now and then a client at another revision (after a move).
                let at = if rng.random_bool(0.2) {
                    start + 1
                } else {
                    start
                };
                let rendered = render_shared(at, &fanout, client).expect("renders");
                let own = render(&fanout.frame(at), client, false).expect("renders");
                assert_eq!(
                    rendered.text, own.text,
                    "seed {seed}: client {client:?} at {at}"
                );
                assert_eq!(rendered.close, None);
                let wrote_one = fanout.entries().iter().any(|e| {
                    e.seq.is_some() && client.is_some() && e.client_id.as_deref() == client
                });
                if wrote_one {
                    continue;
                }
                let bytes = Bytes::from(rendered.text);
                match &shared {
                    None => shared = Some((at, bytes)),
                    Some((made_at, made)) if *made_at == at => assert_eq!(
                        made.as_ptr(),
                        bytes.as_ptr(),
                        "seed {seed}: {client:?} got a rendering of its own"
                    ),
                    Some(_) => {}
                }
            }
        }
    }
}
