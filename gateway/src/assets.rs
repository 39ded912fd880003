//! The web editor, embedded at compile time so running codraft needs no Node.
//!
//! The sources and the build script live in web/; `web/build.sh` regenerates web/dist/, which
//! is committed.

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};

/// The editor page.
pub const INDEX_HTML: &str = include_str!("../../web/dist/index.html");
/// The editor bundle.
pub const APP_JS: &str = include_str!("../../web/dist/app.js");
/// The editor styles.
pub const APP_CSS: &str = include_str!("../../web/dist/app.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /app.js`.
pub async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /app.css`.
pub async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}
