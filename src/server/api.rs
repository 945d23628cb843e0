//! The JSON read API, health endpoints and `/metrics` on the HTTP port.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::app::App;
use crate::clock::system_now;
use crate::export::prometheus::Format;
use crate::verdict::{self, Filter, LookupError};

/// Verdicts change every second: never let a cache answer for us.
const NO_STORE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-store");

/// `GET /api/v1/releases?service=&environment=`
pub async fn list(State(app): State<Arc<App>>, Query(filter): Query<Filter>) -> Response {
    let now = system_now();
    let releases = app.read(|store| verdict::list(store, &filter, now));
    ([NO_STORE], Json(json!({ "releases": releases }))).into_response()
}

/// `GET /api/v1/releases/{deployment_id}?service=&environment=`
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(filter): Query<Filter>,
) -> Response {
    let now = system_now();
    match app.read(|store| verdict::find(store, &id, &filter, now)) {
        Ok(v) => ([NO_STORE], Json(v)).into_response(),
        Err(e @ LookupError::NotFound(_)) => (
            StatusCode::NOT_FOUND,
            [NO_STORE],
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(ref e @ LookupError::Ambiguous { ref matches, .. }) => {
            let candidates: Vec<_> = matches
                .iter()
                .map(|v| json!({ "service": v.service, "environment": v.environment }))
                .collect();
            (
                StatusCode::CONFLICT,
                [NO_STORE],
                Json(json!({ "error": e.to_string(), "matches": candidates })),
            )
                .into_response()
        }
    }
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: listening and not draining.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_ready() {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// `GET /metrics`: Prometheus text, or OpenMetrics when the scraper asks.
pub async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = app.encode_metrics(format, system_now());
    (
        [(header::CONTENT_TYPE, format.content_type()), NO_STORE],
        body,
    )
        .into_response()
}
