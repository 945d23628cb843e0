//! The JSON read API, health endpoints and `/metrics` on the HTTP port.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde_json::json;

use crate::app::App;
use crate::clock::system_now;
use crate::dora::{Bucket, Window};
use crate::export::prometheus::Format;
use crate::ledger::event::{parse_posted, parse_time, PostError};
use crate::ledger::{DoraQuery, EventFilter, Ledger, LedgerError, ReleaseRecord};
use crate::model::{format_time, UnixNanos};
use crate::verdict::{self, Filter, LookupError};

use super::fleet::{self, Elsewhere, Peers, FORWARDED};

/// Verdicts change every second: never let a cache answer for us.
const NO_STORE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-store");

/// `GET /api/v1/releases?service=&environment=`: every release this
/// replica judges, and those the other replicas sharing its ledger judge
/// (asked within the forwarding timeout), each once.
pub async fn list(
    State(app): State<Arc<App>>,
    Extension(peers): Extension<Arc<Peers>>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let others = peers.others();
    if others.is_empty() || headers.contains_key(FORWARDED) {
        return local_list(app, filter).await;
    }
    let auth = headers.get(header::AUTHORIZATION);
    let (answers, local) = tokio::join!(
        fleet::peer_listings(&peers, &filter, auth),
        local_list(app, filter.clone())
    );
    if local.status() != StatusCode::OK {
        return local;
    }
    let Ok(local) = axum::body::to_bytes(local.into_body(), usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // Megabytes of JSON read and written again: off the async workers.
    let merged = tokio::task::spawn_blocking(move || merge_listings(local, answers)).await;
    match merged {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json"), NO_STORE], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Listings' releases, each release once (the first listing's first).
fn merge_listings(first: bytes::Bytes, others: Vec<bytes::Bytes>) -> Vec<u8> {
    let mut merged = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for body in std::iter::once(first).chain(others) {
        let Ok(mut listing) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        let serde_json::Value::Array(releases) = listing["releases"].take() else {
            continue;
        };
        for v in releases {
            let key = ["service", "environment", "deployment_id"].map(|k| v[k].to_string());
            if seen.insert(key) {
                merged.push(v);
            }
        }
    }
    serde_json::to_vec(&json!({ "releases": merged })).unwrap_or_default()
}

/// The releases this replica judges.
async fn local_list(app: Arc<App>, filter: Filter) -> Response {
    let now = system_now();
    // Read and serialized off the async workers, one listing at a time:
    // the JSON of 10,000 releases is many megabytes, and writing it on a
    // worker would hold up every export that worker serves. Serialized
    // straight from the verdicts: `json!` would first copy them all into a
    // `Value` tree, several times their size.
    let body = app
        .whole_read(move |app| {
            let releases = app.list_verdicts(&filter, now);
            serde_json::to_vec(&Listing { releases })
        })
        .await;
    match body {
        Some(Ok(body)) => {
            ([(header::CONTENT_TYPE, "application/json"), NO_STORE], body).into_response()
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The listing's body.
#[derive(serde::Serialize)]
struct Listing {
    releases: Vec<crate::verdict::Verdict>,
}

/// `GET /api/v1/releases/{deployment_id}?service=&environment=`
///
/// A release another replica sharing the ledger judges is asked of it
/// (within the forwarding timeout); one no replica judges any more is
/// the ledger's last verdict, `"live": false`.
pub async fn get(
    State(app): State<Arc<App>>,
    Extension(peers): Extension<Arc<Peers>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(filter): Query<Filter>,
) -> Response {
    let now = system_now();
    match app.read(|store| verdict::find(store, &id, &filter, now)) {
        Ok(v) => ([NO_STORE], Json(v)).into_response(),
        Err(e @ LookupError::NotFound(_)) => {
            let forward = !headers.contains_key(FORWARDED);
            let auth = headers.get(header::AUTHORIZATION);
            match fleet::elsewhere(&app, &peers, &id, &filter, "", auth, forward).await {
                Some(Elsewhere::Judged { body, replica }) => forwarded(body, replica),
                Some(Elsewhere::Recorded(records)) if !records.is_empty() => {
                    remembered(&id, &records)
                }
                _ => (
                    StatusCode::NOT_FOUND,
                    [NO_STORE],
                    Json(json!({ "error": e.to_string() })),
                )
                    .into_response(),
            }
        }
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

/// A live verdict another replica answered, as it answered it.
fn forwarded(body: bytes::Bytes, replica: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json"), NO_STORE],
        [(REPLICA_HEADER, replica)],
        body,
    )
        .into_response()
}

/// Names the replica that answered a forwarded read.
const REPLICA_HEADER: &str = "x-release-verdict-replica";

/// Releases no replica judges, answered from the ledger: the last verdict,
/// marked `"live": false`; several releases by that id: which.
fn remembered(id: &str, records: &[ReleaseRecord]) -> Response {
    match records {
        [one] => match serde_json::from_str::<serde_json::Value>(&one.verdict_json) {
            Ok(mut v) => {
                v["live"] = json!(false);
                ([NO_STORE], Json(v)).into_response()
            }
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the ledger's record of {:?} does not read: {e}",
                    verdict::shown(id)
                ),
            ),
        },
        many => {
            let candidates: Vec<_> = many
                .iter()
                .map(|r| json!({ "service": r.service, "environment": r.environment }))
                .collect();
            (
                StatusCode::CONFLICT,
                [NO_STORE],
                Json(json!({
                    "error": format!("deployment id {:?} names {} releases; narrow with ?service= and ?environment=", verdict::shown(id), many.len()),
                    "matches": candidates,
                })),
            )
                .into_response()
        }
    }
}

/// An error answer: its status and message.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, [NO_STORE], Json(json!({ "error": self.1 }))).into_response()
    }
}

/// An error answer with its message.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    ApiError(status, message.to_string()).into_response()
}

/// The ledger, or the answer that it is off.
fn ledger_of(app: &App) -> Result<Arc<Ledger>, ApiError> {
    app.ledger().cloned().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the release ledger is off ([ledger] path is empty)".into(),
        )
    })
}

/// Largest accepted `POST /api/v1/events` body.
const MAX_EVENTS_BODY: usize = 1 << 20;

/// `POST /api/v1/events`: one event or `{"events": [...]}`, from CI and
/// controllers. Answers once committed, one result per event; 507 when the
/// ledger is at its cap with no older posted events left to evict.
pub async fn post_events(State(app): State<Arc<App>>, body: Body) -> Response {
    let ledger = match ledger_of(&app) {
        Ok(l) => l,
        Err(answer) => return answer.into_response(),
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_EVENTS_BODY).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_EVENTS_BODY} bytes"),
        );
    };
    let events = match parse_posted(&bytes, system_now()) {
        Ok(events) => events,
        Err(e @ PostError::TooMany { .. }) => return error(StatusCode::PAYLOAD_TOO_LARGE, e),
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match tokio::task::spawn_blocking(move || ledger.insert_posted(events)).await {
        Ok(Ok(results)) => ([NO_STORE], Json(json!({ "results": results }))).into_response(),
        // Retrying soon does not help: room comes from raising the cap.
        Ok(Err(e @ LedgerError::Full { .. })) => error(StatusCode::INSUFFICIENT_STORAGE, e),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The query of `GET /api/v1/events`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    service: Option<String>,
    environment: Option<String>,
    deployment_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    /// RFC 3339.
    since: Option<String>,
    until: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<i64>,
    limit: Option<usize>,
}

/// `GET /api/v1/events?service=&environment=&deployment_id=&type=&since=&until=&cursor=&limit=`
pub async fn events(
    State(app): State<Arc<App>>,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let ledger = match ledger_of(&app) {
        Ok(l) => l,
        Err(answer) => return answer.into_response(),
    };
    let time = |name: &str, v: &Option<String>| -> Result<Option<u64>, ApiError> {
        v.as_deref()
            .map(|s| {
                parse_time(s).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{name}: {e}")))
            })
            .transpose()
    };
    let (since, until) = match (time("since", &q.since), time("until", &q.until)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(answer), _) | (_, Err(answer)) => return answer.into_response(),
    };
    let filter = EventFilter {
        service: q.service,
        environment: q.environment,
        deployment_id: q.deployment_id,
        kind: q.kind,
        since,
        until,
        after_id: q.cursor,
        limit: q.limit,
    };
    match tokio::task::spawn_blocking(move || ledger.events(&filter)).await {
        Ok(Ok(page)) => ([NO_STORE], Json(page)).into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Most buckets one `/api/v1/dora` answer holds per service.
const MAX_DORA_BUCKETS: u64 = 1000;

/// The query of `GET /api/v1/dora`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoraParams {
    service: Option<String>,
    environment: Option<String>,
    /// RFC 3339; default `until` minus `[ledger] dora_window`.
    since: Option<String>,
    /// RFC 3339; default now.
    until: Option<String>,
    /// `day` or `week`: the window also cut into calendar buckets (UTC).
    bucket: Option<String>,
}

/// `GET /api/v1/dora?service=&environment=&since=&until=&bucket=`: DORA's
/// measures per service and environment (definitions in the README).
pub async fn dora(
    State(app): State<Arc<App>>,
    query: Result<Query<DoraParams>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let ledger = match ledger_of(&app) {
        Ok(l) => l,
        Err(answer) => return answer.into_response(),
    };
    let query = match dora_query(q, system_now(), app.config.ledger.dora_window) {
        Ok(query) => query,
        Err(answer) => return answer.into_response(),
    };
    let window = query.window;
    match tokio::task::spawn_blocking(move || ledger.dora(&query)).await {
        Ok(Ok(reports)) => (
            [NO_STORE],
            Json(json!({
                "since": format_time(window.since),
                "until": format_time(window.until),
                "dora": reports,
            })),
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The ledger's query for `/api/v1/dora`'s parameters, or the 400 naming
/// the bad one.
fn dora_query(
    q: DoraParams,
    now: UnixNanos,
    default_window: std::time::Duration,
) -> Result<DoraQuery, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let time = |name: &str, v: Option<&str>| {
        v.map(|s| parse_time(s).map_err(|e| bad(format!("{name}: {e}"))))
            .transpose()
    };
    let until = time("until", q.until.as_deref())?.unwrap_or(now);
    let since = time("since", q.since.as_deref())?
        .unwrap_or_else(|| until.saturating_sub(default_window.as_nanos() as u64));
    if since >= until {
        return Err(bad("since must be before until".into()));
    }
    let bucket = q
        .bucket
        .as_deref()
        .map(|b| b.parse::<Bucket>().map_err(bad))
        .transpose()?;
    if let Some(b) = bucket {
        if (until - since).div_ceil(b.span()) > MAX_DORA_BUCKETS {
            return Err(bad(format!(
                "the window holds more than {MAX_DORA_BUCKETS} buckets; narrow since/until"
            )));
        }
    }
    Ok(DoraQuery {
        service: q.service,
        environment: q.environment,
        window: Window { since, until },
        bucket,
    })
}

/// `GET /api/v1/releases/{deployment_id}/timeline?service=&environment=`:
/// the release's events, oldest first.
pub async fn timeline(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(filter): Query<Filter>,
) -> Response {
    let ledger = match ledger_of(&app) {
        Ok(l) => l,
        Err(answer) => return answer.into_response(),
    };
    let now = system_now();
    let (service, environment) = match app.read(|store| verdict::find(store, &id, &filter, now)) {
        Ok(v) => (v.service, v.environment),
        Err(LookupError::Ambiguous { .. }) => {
            return error(
                StatusCode::CONFLICT,
                "the deployment id names several releases; narrow with ?service= and ?environment=",
            )
        }
        Err(LookupError::NotFound(_)) => match (filter.service, filter.environment) {
            (Some(s), Some(e)) => (s, e),
            _ => {
                let (l, id2) = (ledger.clone(), id.clone());
                let found = tokio::task::spawn_blocking(move || l.find_release(&id2, None, None))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                match found.as_slice() {
                    [one] => (one.service.clone(), one.environment.clone()),
                    [] => {
                        return error(
                            StatusCode::NOT_FOUND,
                            format!(
                                "no release with deployment id {:?} is known",
                                verdict::shown(&id)
                            ),
                        )
                    }
                    _ => {
                        return error(
                            StatusCode::CONFLICT,
                            "the deployment id names several releases; narrow with ?service= and ?environment=",
                        )
                    }
                }
            }
        },
    };
    match tokio::task::spawn_blocking(move || ledger.timeline(&service, &environment, &id)).await {
        Ok(Ok(events)) => ([NO_STORE], Json(json!({ "events": events }))).into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/v1/releases/{deployment_id}/series?service=&environment=`:
/// the release's recent numbers for charts, one point every few seconds
/// over the last 30 minutes, oldest first.
pub async fn series(
    State(app): State<Arc<App>>,
    Extension(peers): Extension<Arc<Peers>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(filter): Query<Filter>,
) -> Response {
    let now = system_now();
    let (service, environment) = match (filter.service.clone(), filter.environment.clone()) {
        (Some(s), Some(e)) => (s, e),
        _ => match app.read(|store| verdict::find(store, &id, &filter, now)) {
            Ok(v) => (v.service, v.environment),
            Err(LookupError::NotFound(_)) => (String::new(), String::new()),
            Err(e @ LookupError::Ambiguous { .. }) => return error(StatusCode::CONFLICT, e),
        },
    };
    match app.series(&service, &environment, &id) {
        Some(points) => ([NO_STORE], Json(json!({ "points": points }))).into_response(),
        None if !headers.contains_key(FORWARDED) => {
            // Its chart is kept by the replica judging it.
            let auth = headers.get(header::AUTHORIZATION);
            match fleet::elsewhere(&app, &peers, &id, &filter, "/series", auth, true).await {
                Some(Elsewhere::Judged { body, replica }) => forwarded(body, replica),
                _ => no_series(&id),
            }
        }
        None => no_series(&id),
    }
}

fn no_series(id: &str) -> Response {
    {
        error(
            StatusCode::NOT_FOUND,
            format!(
                "no release with deployment id {:?} is tracked",
                verdict::shown(id)
            ),
        )
    }
}

/// `GET /api/v1/senders`: who has sent what since start, by service:
/// spans and data points attributed to a release or not, the attribute the
/// others lacked, and HTTP/1.x requests that reached the gRPC port.
pub async fn senders(State(app): State<Arc<App>>) -> Response {
    ([NO_STORE], Json(app.senders())).into_response()
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
    let now = system_now();
    let body = app
        .whole_read(move |app| app.encode_metrics(format, now))
        .await
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, format.content_type()), NO_STORE],
        body,
    )
        .into_response()
}
