//! Tokens for the access tests: HS256 JWTs signed with a test's secret.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::Value;

/// A token with `claims`, signed with `secret`.
pub fn token(claims: Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a JSON object encodes as a token")
}

/// An `exp` claim an hour from now.
pub fn in_an_hour() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600
}
