//! `GET /api/v1/releases/stream`: verdict changes as server-sent events,
//! fed by the same broadcast as the gRPC watch. A `snapshot` event with
//! every release first (again whenever the stream fell behind), then a
//! `verdict` event per change. Streams end when the daemon shuts down, so
//! they never hold up the drain; clients reconnect.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::clock::system_now;
use crate::verdict::{Filter, Verdict};

/// Events buffered per client before it counts as behind.
const STREAM_BUFFER: usize = 256;
/// A comment this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How soon a client reconnects after the stream ends (the `retry:` field).
const RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Streams {
    pub app: Arc<App>,
    /// Ends every stream on shutdown.
    pub stop: CancellationToken,
}

/// The stream, for clients that ask for `text/event-stream`; anything
/// else is the release whose deployment id is "stream".
pub async fn releases(
    State(s): State<Streams>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let wants_events = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_events {
        return super::api::get(State(s.app), Path("stream".into()), Query(filter)).await;
    }
    Sse::new(events(s.app, s.stop, filter))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// The `snapshot` event's data (serialized straight from the verdicts).
#[derive(serde::Serialize)]
struct Snapshot<'a> {
    releases: &'a [Verdict],
}

/// Every release, built a chunk at a time (as the JSON listing): run it
/// off the async workers.
fn snapshot(app: &App, filter: &Filter) -> Event {
    let releases = app.list_verdicts(filter, system_now());
    Event::default()
        .event("snapshot")
        .retry(RETRY)
        .json_data(Snapshot {
            releases: &releases,
        })
        .unwrap_or_default()
}

async fn snapshot_off(app: &Arc<App>, filter: &Filter) -> Event {
    let (app, filter) = (app.clone(), filter.clone());
    tokio::task::spawn_blocking(move || snapshot(&app, &filter))
        .await
        .unwrap_or_default()
}

fn change(v: &Verdict) -> Event {
    Event::default()
        .event("verdict")
        .json_data(v)
        .unwrap_or_default()
}

fn events(
    app: Arc<App>,
    stop: CancellationToken,
    filter: Filter,
) -> impl Stream<Item = Result<Event, Infallible>> {
    // Subscribe before reading the current state, so no change falls between.
    let mut changes = app.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        if tx
            .send(Ok(snapshot_off(&app, &filter).await))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                next = changes.recv() => next,
            };
            let event = match next {
                Ok(v) if filter.admits(&v) => change(&v),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => snapshot_off(&app, &filter).await,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
