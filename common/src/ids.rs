//! What a valid document id and exactly-once client id look like. The gateway refuses bad
//! ones before the upgrade; the docnode checks again, since gRPC is its own edge.

/// Longest document id accepted.
pub const MAX_DOCUMENT_ID_LEN: usize = 256;
/// Longest client id accepted.
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// Whether `id` is a valid document id: 1–256 of `A-Z a-z 0-9 - _ .`.
pub fn valid_document_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DOCUMENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What a Yjs document's id starts with: `y:<room>`, where the room is a valid document id.
/// OT document ids cannot hold a `:`, so the two kinds never share an id.
pub const YJS_PREFIX: &str = "y:";

/// Whether `id` names a Yjs document (`y:<room>`).
pub fn is_yjs(id: &str) -> bool {
    id.strip_prefix(YJS_PREFIX).is_some_and(valid_document_id)
}

/// Whether `id` is a valid id of either kind: an OT document id, or `y:` and one.
pub fn valid_any_document_id(id: &str) -> bool {
    valid_document_id(id) || is_yjs(id)
}

/// Whether `id` is a valid exactly-once client id: 1–64 of `A-Z a-z 0-9 - _`.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_ids_are_checked() {
        assert!(valid_document_id("abc-DEF_1.2"));
        assert!(!valid_document_id(""));
        assert!(!valid_document_id("a/b"));
        assert!(!valid_document_id("héllo"));
        assert!(!valid_document_id(&"a".repeat(257)));
        assert!(valid_document_id(&"a".repeat(256)));
    }

    #[test]
    fn yjs_ids_are_a_prefix_and_a_document_id() {
        assert!(is_yjs("y:notes"));
        assert!(!is_yjs("y:"));
        assert!(!is_yjs("y:a:b"));
        assert!(!is_yjs("notes"));
        assert!(!valid_document_id("y:notes"));
        assert!(valid_any_document_id("y:notes") && valid_any_document_id("notes"));
    }

    #[test]
    fn client_ids_are_checked() {
        assert!(valid_client_id("tab-1_x"));
        assert!(!valid_client_id(""));
        assert!(!valid_client_id("a.b"));
        assert!(!valid_client_id(&"a".repeat(65)));
    }
}
