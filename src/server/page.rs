//! The Release Health page on the HTTP port: `GET /` and its assets,
//! compiled into the binary (no CDN, no build step). The page reads the
//! JSON API like any client; these routes themselves need no token.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("page/index.html");
const CSS: &str = include_str!("page/page.css");
const JS: &str = include_str!("page/page.js");

/// A new daemon may serve a new page: browsers ask again every time.
const REVALIDATE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-cache");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), REVALIDATE], body).into_response()
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
