//! Who may read or write a document: the one check every entry point (the WebSocket,
//! `/api/text`, the presence API) goes through before it touches the document.
//!
//! Two locks, both optional: a JWT ([`Auth`], for a private deployment) and the document's
//! own password (Kolabpad's one-time password, kept by the owning docnode). A request needs
//! both when both are set. Wrong passwords are counted per (client address, document), so a
//! tab that keeps knocking on one protected document never locks its address out of the
//! others; a request that sends no password is asking, not guessing, and is never counted.
//! The client address is the one [`crate::client_addr`] reads (through trusted proxies), and
//! with Redis the count is shared by every gateway ([`crate::guesses`]), falling back to this
//! gateway's own count while Redis does not answer.

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use codraft_proto as pb;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Serialize;

use crate::{
    auth::{Auth, AuthError, Grant},
    guesses::SharedGuesses,
    metrics::{GatewayMetrics, LIMIT_OTP},
    routes::Routes,
};

/// Header that carries a document's password on the HTTP API (the WebSocket and browsers
/// use `?otp=`).
pub const PASSWORD_HEADER: &str = "x-document-password";

/// How long an address that spent its wrong-password budget on a document is refused.
const BLOCK: Duration = Duration::from_secs(60);

/// Entries kept before the books of wrong passwords are swept of stale ones.
const SWEEP_AT: usize = 100_000;

/// What a request presents: a token and a password, either possibly absent.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Bearer token (header or `?token=`).
    pub token: Option<String>,
    /// The document's password (`?otp=` or [`PASSWORD_HEADER`]).
    pub password: Option<String>,
}

impl Credentials {
    /// Credentials from the headers first, then the query parameters. An empty value counts
    /// as absent, as a browser sends `?otp=` with nothing after it.
    pub fn from_request(headers: &HeaderMap, token: Option<&str>, password: Option<&str>) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let token = header(header::AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or(token);
        let password = header(PASSWORD_HEADER).or(password);
        let present = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_owned);
        Self {
            token: present(token),
            password: present(password),
        }
    }
}

/// Why a request may not have the document.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The token is missing, invalid or does not cover the document.
    #[error("{0}")]
    Token(#[from] AuthError),
    /// The document has a password and none was sent.
    #[error("this document is protected by a password: send it as ?otp= or the X-Document-Password header")]
    PasswordRequired,
    /// The password sent is not the document's.
    #[error("wrong password for this document")]
    WrongPassword,
    /// This address sent too many wrong passwords for this document.
    #[error("too many wrong passwords for this document from your address; wait a minute")]
    TooManyGuesses,
    /// The document's owner could not be asked.
    #[error("the document is unavailable ({0}); retry shortly")]
    Unavailable(String),
}

impl Refusal {
    /// A word a program can match on (the `error` field, and the start of a close reason).
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Token(AuthError::Missing) => "token_required",
            Refusal::Token(AuthError::Invalid(_)) => "token_invalid",
            Refusal::Token(AuthError::Forbidden(_)) => "not_granted",
            Refusal::PasswordRequired => "password_required",
            Refusal::WrongPassword => "wrong_password",
            Refusal::TooManyGuesses => "too_many_guesses",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Token(AuthError::Forbidden(_)) => StatusCode::FORBIDDEN,
            Refusal::Token(_) | Refusal::PasswordRequired | Refusal::WrongPassword => {
                StatusCode::UNAUTHORIZED
            }
            Refusal::TooManyGuesses => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The WebSocket close code of the refusal: 4000 plus the HTTP status.
    pub fn close_code(&self) -> u16 {
        4000 + self.status().as_u16()
    }

    /// The close reason: the kind, a colon, then words for a person (at most 123 bytes, as
    /// a close frame allows).
    pub fn close_reason(&self) -> String {
        let mut reason = format!("{}: {self}", self.kind());
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason
    }

    /// The JSON body of a refusal: `{"error": kind, "message": words, "login_url": ...}`.
    pub fn body(&self, login_url: Option<&str>) -> RefusalJson {
        RefusalJson {
            error: self.kind(),
            message: self.to_string(),
            login_url: match self {
                Refusal::Token(AuthError::Missing | AuthError::Invalid(_)) => {
                    login_url.map(str::to_owned)
                }
                _ => None,
            },
        }
    }

    /// The HTTP response of a refusal, with its JSON body.
    pub fn response(&self, login_url: Option<&str>) -> Response {
        (self.status(), Json(self.body(login_url))).into_response()
    }

    /// Counts the refusal in the gateway's series.
    pub fn count(&self, metrics: &GatewayMetrics) {
        match self {
            Refusal::Token(AuthError::Forbidden(_)) => {
                metrics
                    .auth_refusals
                    .with_label_values(&["forbidden"])
                    .inc();
            }
            Refusal::Token(_) => {
                metrics
                    .auth_refusals
                    .with_label_values(&["unauthorized"])
                    .inc();
            }
            Refusal::PasswordRequired | Refusal::WrongPassword => {
                metrics.auth_refusals.with_label_values(&["otp"]).inc();
            }
            Refusal::TooManyGuesses => {
                metrics.rate_limited.with_label_values(&[LIMIT_OTP]).inc();
            }
            Refusal::Unavailable(_) => {}
        }
    }
}

/// A refusal as JSON.
#[derive(Debug, Serialize)]
pub struct RefusalJson {
    /// [`Refusal::kind`].
    pub error: &'static str,
    /// Words for a person.
    pub message: String,
    /// Where to sign in, for a missing or invalid token when LOGIN_URL is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
}

/// What [`Gate::admit`] does when the document's owner cannot be asked about the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfOwnerUnreachable {
    /// Let the request through: the owner checks the password again when the session
    /// opens (the WebSocket).
    Admit,
    /// Refuse with [`Refusal::Unavailable`]: nothing else would check (`/api/text`).
    Refuse,
    /// Let the request through only if this gateway saw the document open (no password)
    /// within [`SEEN_OPEN`]; else refuse. For presence, which Redis still answers while a
    /// dead owner's entries expire: a password can only have been set since if the owner
    /// took it in the moments before it died.
    AdmitIfSeenOpen,
}

/// How long a request for a document seen open waits for its owner's answer.
const SEEN_OPEN_WAIT: Duration = Duration::from_millis(250);

/// How long a document this gateway saw without a password counts as open when its owner
/// cannot be asked ([`IfOwnerUnreachable::AdmitIfSeenOpen`]).
pub const SEEN_OPEN: Duration = Duration::from_secs(60);

/// Wrong passwords are counted per address and document.
type GuessKey = (IpAddr, String);

/// The check in front of every document: token, then password, with the wrong-password
/// budget.
pub struct Gate {
    auth: Auth,
    routes: Arc<Routes>,
    /// Wrong-password budget per (address, document).
    failures: DefaultKeyedRateLimiter<GuessKey>,
    /// (Address, document) pairs that spent their budget, and until when.
    blocked: Mutex<HashMap<GuessKey, Instant>>,
    /// Documents the owner last said open without a password, and when.
    seen_open: Mutex<HashMap<String, Instant>>,
    login_url: Option<String>,
    /// The cluster-wide budget in Redis, when the gateway has Redis.
    shared: Option<SharedGuesses>,
    /// OTP_FAILURES_PER_MINUTE, for the shared budget.
    failures_per_minute: u32,
}

impl Gate {
    /// A gate over `auth` that asks documents' owners through `routes`; each (address,
    /// document) may send `failures_per_minute` wrong passwords, counted in `shared` (Redis)
    /// when given and answering, else on this gateway.
    pub fn new(
        auth: Auth,
        routes: Arc<Routes>,
        failures_per_minute: u32,
        login_url: Option<String>,
        shared: Option<SharedGuesses>,
    ) -> Self {
        let quota = NonZeroU32::new(failures_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            auth,
            routes,
            failures: RateLimiter::keyed(Quota::per_minute(quota)),
            blocked: Mutex::default(),
            seen_open: Mutex::default(),
            login_url,
            shared,
            failures_per_minute,
        }
    }

    /// Where the page sends a user whose token is missing or refused (LOGIN_URL).
    pub fn login_url(&self) -> Option<&str> {
        self.login_url.as_deref()
    }

    /// What `credentials` from `peer` may do with `document`, or why nothing.
    pub async fn admit(
        &self,
        document: &str,
        credentials: &Credentials,
        peer: IpAddr,
        unreachable: IfOwnerUnreachable,
    ) -> Result<Grant, Refusal> {
        let grant = self
            .auth
            .authorize(credentials.token.as_deref(), document)?;
        let key = (peer, document.to_owned());
        if self.is_blocked(&key).await {
            // Only a guess at a protected document is refused: if the password was removed
            // meanwhile, the document opens without one.
            return match self.ask_owner(document, None).await {
                Ok(()) => Ok(grant),
                Err(Refusal::PasswordRequired) => Err(Refusal::TooManyGuesses),
                Err(Refusal::Unavailable(reason)) => {
                    self.unreachable(document, unreachable, grant, reason)
                }
                Err(other) => Err(other),
            };
        }
        let asked = self.ask_owner(document, credentials.password.as_deref());
        // A document seen open moments ago is not kept waiting for a dead owner's
        // replacement (the route waits out membership changes for seconds).
        let answer =
            if unreachable == IfOwnerUnreachable::AdmitIfSeenOpen && self.seen_open(document) {
                tokio::time::timeout(SEEN_OPEN_WAIT, asked)
                    .await
                    .unwrap_or_else(|_| Err(Refusal::Unavailable("no answer in time".to_owned())))
            } else {
                asked.await
            };
        match answer {
            Ok(()) => Ok(grant),
            Err(Refusal::Unavailable(reason)) => {
                self.unreachable(document, unreachable, grant, reason)
            }
            Err(Refusal::WrongPassword) => {
                // Only failures spend the budget, so busy offices behind one address are
                // fine.
                if self.spend(key).await {
                    return Err(Refusal::TooManyGuesses);
                }
                Err(Refusal::WrongPassword)
            }
            Err(other) => Err(other),
        }
    }

    /// What an unreachable owner means for a request, as `unreachable` says.
    fn unreachable(
        &self,
        document: &str,
        unreachable: IfOwnerUnreachable,
        grant: Grant,
        reason: String,
    ) -> Result<Grant, Refusal> {
        let seen_open = || {
            let seen = self
                .seen_open
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            seen.get(document)
                .is_some_and(|at| at.elapsed() < SEEN_OPEN)
        };
        match unreachable {
            IfOwnerUnreachable::Admit => Ok(grant),
            IfOwnerUnreachable::AdmitIfSeenOpen if seen_open() => Ok(grant),
            _ => Err(Refusal::Unavailable(reason)),
        }
    }

    /// Asks the document's owner whether `password` opens it; a cold document is checked
    /// with a light query and not loaded.
    async fn ask_owner(&self, document: &str, password: Option<&str>) -> Result<(), Refusal> {
        let answer = self
            .routes
            .call(document, |client| {
                let request = pb::AuthorizeRequest {
                    document_id: document.to_owned(),
                    otp: password.map(str::to_owned),
                };
                async move { client.authorize(request).await }
            })
            .await;
        match answer {
            Ok(_) => {
                if password.is_none() {
                    self.note_open(document);
                }
                Ok(())
            }
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                self.seen_open
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(document);
                match password {
                    Some(_) => Err(Refusal::WrongPassword),
                    None => Err(Refusal::PasswordRequired),
                }
            }
            Err(status) => Err(Refusal::Unavailable(status.message().to_owned())),
        }
    }

    fn seen_open(&self, document: &str) -> bool {
        let seen = self
            .seen_open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        seen.get(document)
            .is_some_and(|at| at.elapsed() < SEEN_OPEN)
    }

    fn note_open(&self, document: &str) {
        let mut seen = self
            .seen_open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Swept of stale entries whenever it reaches a power of two (from 1,024 on): the
        // cost stays constant per insert, and a gateway that saw many documents once does
        // not keep one entry per document it ever served.
        if seen.len() >= 1024 && seen.len().is_power_of_two() {
            seen.retain(|_, at| at.elapsed() < SEEN_OPEN);
        }
        seen.insert(document.to_owned(), Instant::now());
    }

    /// Whether the pair spent its budget: Redis's answer when it gives one, else ours.
    async fn is_blocked(&self, key: &GuessKey) -> bool {
        if let Some(shared) = &self.shared {
            if let Some(blocked) = shared.is_blocked(key.0, &key.1).await {
                return blocked;
            }
        }
        self.is_blocked_here(key)
    }

    /// Counts a wrong password; true when it spent the budget (the pair is then blocked).
    async fn spend(&self, key: GuessKey) -> bool {
        if let Some(shared) = &self.shared {
            if let Some(spent) = shared.spend(key.0, &key.1, self.failures_per_minute).await {
                return spent;
            }
        }
        if self.failures.check_key(&key).is_err() {
            self.block(key);
            return true;
        }
        false
    }

    fn is_blocked_here(&self, key: &GuessKey) -> bool {
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        match blocked.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                blocked.remove(key);
                false
            }
            None => false,
        }
    }

    fn block(&self, key: GuessKey) {
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        if blocked.len() > SWEEP_AT {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
        }
        if self.failures.len() > SWEEP_AT {
            self.failures.retain_recent();
        }
        blocked.insert(key, Instant::now() + BLOCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_start_with_their_kind_and_fit_a_close_frame() {
        let long = Refusal::Token(AuthError::Invalid("x".repeat(500)));
        let reason = long.close_reason();
        assert!(reason.starts_with("token_invalid: "));
        assert!(reason.len() <= 123);
        assert_eq!(Refusal::PasswordRequired.close_code(), 4401);
        assert_eq!(Refusal::TooManyGuesses.close_code(), 4429);
        assert_eq!(
            Refusal::Token(AuthError::Forbidden("d".into())).close_code(),
            4403
        );
    }

    #[test]
    fn credentials_prefer_headers_and_treat_empty_as_absent() {
        let mut headers = HeaderMap::new();
        headers.insert(PASSWORD_HEADER, "pw".parse().expect("header value"));
        let both = Credentials::from_request(&headers, Some("t"), Some("other"));
        assert_eq!(both.password.as_deref(), Some("pw"));
        assert_eq!(both.token.as_deref(), Some("t"));
        let empty = Credentials::from_request(&HeaderMap::new(), Some(""), Some(""));
        assert!(empty.token.is_none() && empty.password.is_none());
    }

    #[test]
    fn the_login_url_is_offered_only_for_token_trouble() {
        let url = Some("https://sso.example/login");
        assert!(Refusal::Token(AuthError::Missing)
            .body(url)
            .login_url
            .is_some());
        assert!(Refusal::WrongPassword.body(url).login_url.is_none());
    }
}
