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
    fn client_ids_are_checked() {
        assert!(valid_client_id("tab-1_x"));
        assert!(!valid_client_id(""));
        assert!(!valid_client_id("a.b"));
        assert!(!valid_client_id(&"a".repeat(65)));
    }
}
