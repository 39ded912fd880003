//! Optional JWT access control at the gateway.
//!
//! When a key is configured, every socket (and `/api/text`) needs a valid token, from an
//! `Authorization: Bearer` header or a `token=` query parameter (browsers cannot set headers
//! on a WebSocket). The claims name the user and say which documents they may read or write:
//!
//! ```json
//! {"sub": "u1", "name": "Alice", "exp": 1900000000, "aud": "codraft",
//!  "read": ["*"], "write": ["team-*", "notes"]}
//! ```
//!
//! A pattern is a document id, or a prefix followed by `*`; `write` implies `read`. A reader
//! receives edits and presence but its edits are refused (4403). Without a key configured the
//! gateway is open, as Rustpad is.

use std::path::PathBuf;

use clap::Args;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// JWT settings.
#[derive(Debug, Clone, Default, Args)]
pub struct AuthConfig {
    /// Shared secret for HS256 tokens. Setting it (or JWT_PUBLIC_KEY_FILE) turns JWT on.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key for RS256 or ES256 tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Algorithm of the public key: RS256 or ES256.
    #[arg(long, env = "JWT_ALGORITHM", default_value = "RS256")]
    pub jwt_algorithm: String,

    /// Required `aud` claim, if set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim, if set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Where the web client sends a user whose token is missing or refused (it appends
    /// `?return=<page URL>`); sent in refusals as `login_url`.
    #[arg(long, env = "LOGIN_URL")]
    pub login_url: Option<String>,
}

/// What a connection may do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive edits and presence only.
    Read,
    /// Edit too.
    Write,
}

/// Who a valid token says the user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Display name from the token, shown to others instead of what the client claims.
    pub name: Option<String>,
    /// What the connection may do.
    pub access: Access,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token was sent.
    #[error("a token is required: send Authorization: Bearer <jwt> or ?token=<jwt>")]
    Missing,
    /// The token is not valid (signature, expiry, audience, issuer, shape).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token is valid but does not cover this document.
    #[error("this token does not grant access to document {0}")]
    Forbidden(String),
}

/// Why the JWT settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// The key file could not be read or parsed.
    #[error("JWT key: {0}")]
    Key(String),
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
}

/// Checks tokens, when configured.
#[derive(Clone)]
pub struct Auth {
    key: Option<(DecodingKey, Validation)>,
}

fn matches(pattern: &str, document: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => document.starts_with(prefix),
        None => pattern == document,
    }
}

impl Auth {
    /// No access control.
    pub fn open() -> Self {
        Self { key: None }
    }

    /// Access control as configured (open when no key is set).
    pub fn from_config(config: &AuthConfig) -> Result<Self, AuthConfigError> {
        let (key, algorithm) = if let Some(secret) = &config.jwt_secret {
            (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )
        } else if let Some(path) = &config.jwt_public_key_file {
            let pem = std::fs::read(path).map_err(|e| {
                AuthConfigError::Key(format!("cannot read {}: {e}", path.display()))
            })?;
            match config.jwt_algorithm.to_ascii_uppercase().as_str() {
                "RS256" => (
                    DecodingKey::from_rsa_pem(&pem)
                        .map_err(|e| AuthConfigError::Key(e.to_string()))?,
                    Algorithm::RS256,
                ),
                "ES256" => (
                    DecodingKey::from_ec_pem(&pem)
                        .map_err(|e| AuthConfigError::Key(e.to_string()))?,
                    Algorithm::ES256,
                ),
                other => {
                    return Err(AuthConfigError::Key(format!(
                        "JWT_ALGORITHM must be RS256 or ES256, not {other}"
                    )))
                }
            }
        } else {
            return Ok(Self::open());
        };
        let mut validation = Validation::new(algorithm);
        validation.validate_exp = true;
        match &config.jwt_audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Self {
            key: Some((key, validation)),
        })
    }

    /// Whether tokens are required.
    pub fn is_enabled(&self) -> bool {
        self.key.is_some()
    }

    /// What `token` allows on `document`. Open gateways allow everything.
    pub fn authorize(&self, token: Option<&str>, document: &str) -> Result<Grant, AuthError> {
        let Some((key, validation)) = &self.key else {
            return Ok(Grant {
                name: None,
                access: Access::Write,
            });
        };
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;
        let access = if claims.write.iter().any(|p| matches(p, document)) {
            Access::Write
        } else if claims.read.iter().any(|p| matches(p, document)) {
            Access::Read
        } else {
            return Err(AuthError::Forbidden(document.to_owned()));
        };
        Ok(Grant {
            name: claims.name.map(|n| n.chars().take(64).collect()),
            access,
        })
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    fn auth() -> Auth {
        Auth::from_config(&AuthConfig {
            jwt_secret: Some("s3cret".into()),
            jwt_audience: Some("codraft".into()),
            ..AuthConfig::default()
        })
        .expect("valid config")
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encodes")
    }

    fn later() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + 3600
    }

    #[test]
    fn an_open_gateway_lets_everyone_write() {
        let grant = Auth::open().authorize(None, "doc").expect("open");
        assert_eq!(grant.access, Access::Write);
    }

    #[test]
    fn write_and_read_patterns_decide_access() {
        let t = token(
            json!({"name": "Alice", "exp": later(), "aud": "codraft", "read": ["*"], "write": ["team-*"]}),
            "s3cret",
        );
        let a = auth();
        assert_eq!(
            a.authorize(Some(&t), "team-x"),
            Ok(Grant {
                name: Some("Alice".into()),
                access: Access::Write
            })
        );
        assert_eq!(
            a.authorize(Some(&t), "other").map(|g| g.access),
            Ok(Access::Read)
        );
    }

    #[test]
    fn bad_tokens_are_refused() {
        let a = auth();
        assert_eq!(a.authorize(None, "d"), Err(AuthError::Missing));
        let expired = token(
            json!({"exp": 1000, "aud": "codraft", "write": ["*"]}),
            "s3cret",
        );
        assert!(matches!(
            a.authorize(Some(&expired), "d"),
            Err(AuthError::Invalid(_))
        ));
        let forged = token(
            json!({"exp": later(), "aud": "codraft", "write": ["*"]}),
            "wrong",
        );
        assert!(matches!(
            a.authorize(Some(&forged), "d"),
            Err(AuthError::Invalid(_))
        ));
        let audience = token(
            json!({"exp": later(), "aud": "elsewhere", "write": ["*"]}),
            "s3cret",
        );
        assert!(matches!(
            a.authorize(Some(&audience), "d"),
            Err(AuthError::Invalid(_))
        ));
        let narrow = token(
            json!({"exp": later(), "aud": "codraft", "read": ["x"]}),
            "s3cret",
        );
        assert_eq!(
            a.authorize(Some(&narrow), "y"),
            Err(AuthError::Forbidden("y".into()))
        );
    }
}
