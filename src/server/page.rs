//! The Release Health page on the HTTP port: `GET /` and its assets,
//! compiled into the binary (no CDN, no build step). The page reads the
//! JSON API like any client; these routes themselves need no token.
//! Each answer carries the headers that keep a browser to the page's own
//! files: a Content-Security-Policy, no framing, no sniffing, no referrer.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("page/index.html");
const CSS: &str = include_str!("page/page.css");
const JS: &str = include_str!("page/page.js");

/// A new daemon may serve a new page: browsers ask again every time.
const REVALIDATE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-cache");

/// Scripts, styles and requests from the daemon only (the page has no
/// inline script or style), the empty `data:` icon, no plugins, no `<base>`,
/// no forms, and no framing by another site.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What a browser may do with the page and its assets.
const LOCKED_DOWN: [(header::HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CSP),
    // For browsers that predate `frame-ancestors`.
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    // Links out (trace URLs) do not tell where they were followed from.
    (header::REFERRER_POLICY, "no-referrer"),
];

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, content_type), REVALIDATE],
        LOCKED_DOWN,
        body,
    )
        .into_response()
}

/// `GET /`
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /assets/page.css`
pub async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// `GET /assets/page.js`
pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// Whether the page's own routes are asked for (served without a token).
pub fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/assets/page.css" | "/assets/page.js")
}
