//! `GET /api/v1/releases/stream`: verdict changes as server-sent events,
//! fed by the same broadcast as the gRPC watch. A `snapshot` event with
//! every release first, then a `verdict` event per change. The snapshot is
//! encoded once for every stream that needs one at the time (`readers`)
//! and written a piece at a time as the connection takes it. A stream that
//! falls behind, or has not taken its snapshot within
//! `server.stream_snapshot_timeout`, ends; so do all at shutdown, so they
//! never hold up the drain. Clients reconnect (after the `retry:` they were
//! told) and get a fresh snapshot: events carry no `id:`, since a snapshot
//! replaces whatever was missed.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::readers::{Pending, Readers, Shared, Snap, Ticket};
use crate::app::App;
use crate::clock::system_now;
use crate::self_metrics::StreamDrop;
use crate::verdict::{Filter, Verdict};

/// A comment this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How soon a client reconnects after the stream ends (the `retry:` field,
/// in milliseconds).
const RETRY_MS: u64 = 1000;
/// The snapshot is written in pieces of about this size, copied out of the
/// shared one: what the connection buffers pins no snapshot. Small, since
/// hyper holds up to 16 pieces for a client that does not read.
const PIECE: usize = 4 * 1024;

#[derive(Clone)]
pub struct Streams {
    pub app: Arc<App>,
    pub readers: Arc<Readers>,
    snapshots: Arc<Shared<Snapshot>>,
    /// Ends every stream on shutdown.
    pub stop: CancellationToken,
}

impl Streams {
    pub fn new(app: Arc<App>, readers: Arc<Readers>, stop: CancellationToken) -> Self {
        Self {
            snapshots: Shared::new(&readers, Snapshot::build, Snapshot::bytes),
            app,
            readers,
            stop,
        }
    }
}

/// Every release's verdict as JSON, encoded once for all the streams that
/// asked at the time; each stream writes the ones its filter admits.
pub struct Snapshot {
    releases: Vec<Encoded>,
}

struct Encoded {
    service: String,
    environment: String,
    json: Box<[u8]>,
    /// Judged by another replica (relayed from its stream).
    remote: bool,
}

impl Snapshot {
    /// Blocking: run on the whole-reads thread.
    fn build(app: &App) -> Self {
        let mut releases = app.map_verdicts(&Filter::default(), system_now(), |v| Encoded {
            json: serde_json::to_vec(&v).unwrap_or_default().into(),
            service: v.service,
            environment: v.environment,
            remote: false,
        });
        let remote = app.remote_verdicts(&Filter::default());
        releases.extend(remote.iter().map(|v| Encoded {
            json: serde_json::to_vec(&**v).unwrap_or_default().into(),
            service: v.service.clone(),
            environment: v.environment.clone(),
            remote: true,
        }));
        Self { releases }
    }

    /// Its bytes, about.
    fn bytes(&self) -> usize {
        self.releases
            .iter()
            .map(|r| {
                std::mem::size_of::<Encoded>()
                    + r.json.len()
                    + r.service.len()
                    + r.environment.len()
            })
            .sum()
    }

    /// Appends the releases `filter` admits from `*next` on to `out`
    /// until it holds about `PIECE` bytes, moving `*next` on; true once
    /// the last was written. `*any` says whether one was written before.
    fn piece(&self, want: &Want, next: &mut usize, any: &mut bool, out: &mut Vec<u8>) -> bool {
        while let Some(r) = self.releases.get(*next) {
            if out.len() >= PIECE {
                return false;
            }
            *next += 1;
            if want.filter.matches(&r.service, &r.environment) && !(r.remote && want.local_only) {
                if std::mem::replace(any, true) {
                    out.push(b',');
                }
                out.extend_from_slice(&r.json);
            }
        }
        true
    }
}

/// The stream, for clients that ask for `text/event-stream`; anything
/// else is the release whose deployment id is "stream". Beyond
/// `server.max_streams` open streams: 503 with Retry-After.
pub async fn releases(
    State(s): State<Streams>,
    peers: axum::Extension<Arc<super::fleet::Peers>>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let wants_events = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_events {
        let id = Path("stream".into());
        return super::api::get(State(s.app), peers, headers, id, Query(filter)).await;
    }
    let Some(ticket) = s.readers.open() else {
        let after = s.readers.retry_after().as_secs().max(1);
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": s.readers.refusal() })),
        )
            .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(after));
        return resp;
    };
    let want = Want {
        filter,
        local_only: headers.contains_key(super::fleet::FORWARDED),
    };
    let body = Body::from_stream(events(s, want, ticket).map(Ok::<_, std::convert::Infallible>));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Where a stream is.
enum Phase {
    /// Waiting for a snapshot.
    Start,
    /// Writing the snapshot: the next release, whether one was written.
    Snapshot {
        held: Pending<Snap<Snapshot>>,
        next: usize,
        any: bool,
    },
    /// Writing changes as they come.
    Changes,
}

/// What a stream sends: the releases its filter admits, and only this
/// replica's when another replica follows it (`fleet::FORWARDED`), so
/// no verdict goes round the fleet.
struct Want {
    filter: Filter,
    local_only: bool,
}

impl Want {
    fn admits(&self, v: &Verdict) -> bool {
        self.filter.admits(v) && !(self.local_only && v.judged_by.is_some())
    }
}

struct Client {
    streams: Streams,
    want: Want,
    changes: broadcast::Receiver<Arc<Verdict>>,
    keep_alive: tokio::time::Interval,
    phase: Phase,
    /// Where a piece is put together before it is copied out at its size.
    scratch: Vec<u8>,
    _ticket: Ticket,
}

fn change(v: &Verdict) -> Bytes {
    let mut out = b"event: verdict\ndata: ".to_vec();
    // A verdict always serializes; the JSON has no newlines.
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    out.into()
}

fn events(streams: Streams, want: Want, ticket: Ticket) -> impl Stream<Item = Bytes> {
    // Subscribe before asking for the snapshot, so no change falls between.
    let changes = streams.app.subscribe();
    let mut keep_alive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let client = Client {
        streams,
        want,
        changes,
        keep_alive,
        phase: Phase::Start,
        scratch: Vec::new(),
        _ticket: ticket,
    };
    futures_util::stream::unfold(client, next)
}

/// The stream's next piece, made when the connection asks for it.
async fn next(mut c: Client) -> Option<(Bytes, Client)> {
    if c.streams.stop.is_cancelled() {
        return None;
    }
    loop {
        match &mut c.phase {
            Phase::Start => {
                let stop = c.streams.stop.clone();
                let snapshot = tokio::select! {
                    _ = stop.cancelled() => return None,
                    s = c.streams.snapshots.fresh() => s?,
                };
                let held = c.streams.readers.hold(snapshot);
                c.phase = Phase::Snapshot {
                    held,
                    next: 0,
                    any: false,
                };
                let head = format!("event: snapshot\nretry: {RETRY_MS}\ndata: {{\"releases\":[");
                return Some((head.into(), c));
            }
            Phase::Snapshot { held, next, any } => {
                let out = &mut c.scratch;
                out.clear();
                // Let go of for stalling: the client reconnects.
                let done = held.with(|s| s.piece(&c.want, next, any, out))?;
                if done {
                    out.extend_from_slice(b"]}\n\n");
                }
                let piece = Bytes::copy_from_slice(out);
                if done {
                    c.phase = Phase::Changes;
                    c.scratch = Vec::new();
                }
                return Some((piece, c));
            }
            Phase::Changes => {
                let stop = c.streams.stop.clone();
                let next = tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = c.keep_alive.tick() => return Some((Bytes::from_static(b":\n\n"), c)),
                    next = c.changes.recv() => next,
                };
                match next {
                    Ok(v) if c.want.admits(&v) => return Some((change(&v), c)),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        c.streams.readers.dropped(StreamDrop::Lagged);
                        return None;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(service: &str, n: usize) -> Encoded {
        Encoded {
            service: service.into(),
            environment: "prod".into(),
            json: format!("{{\"n\":{n}}}").into_bytes().into(),
            // Every third is another replica's.
            remote: n % 3 == 2,
        }
    }

    fn written(s: &Snapshot, filter: &Filter) -> (String, usize) {
        written_for(s, filter, false)
    }

    fn written_for(s: &Snapshot, filter: &Filter, local_only: bool) -> (String, usize) {
        let want = Want {
            filter: filter.clone(),
            local_only,
        };
        let (mut next, mut any, mut all, mut pieces) = (0, false, Vec::new(), 0);
        loop {
            let mut out = Vec::new();
            let done = s.piece(&want, &mut next, &mut any, &mut out);
            assert!(out.len() < PIECE + 64, "a piece is about PIECE bytes");
            all.extend_from_slice(&out);
            pieces += 1;
            if done {
                return (String::from_utf8(all).unwrap(), pieces);
            }
        }
    }

    #[test]
    fn pieces_make_the_filtered_json_list() {
        let s = Snapshot {
            releases: (0..3000)
                .map(|n| encoded(if n % 2 == 0 { "a" } else { "b" }, n))
                .collect(),
        };
        let (all, pieces) = written(&s, &Filter::default());
        let v: serde_json::Value = serde_json::from_str(&format!("[{all}]")).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3000);
        assert!(pieces > 1, "written in pieces");
        let only_b = Filter {
            service: Some("b".into()),
            environment: None,
        };
        let (b, _) = written(&s, &only_b);
        let v: serde_json::Value = serde_json::from_str(&format!("[{b}]")).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1500);
        assert_eq!(v[0]["n"], 1);
        let none = Filter {
            service: Some("c".into()),
            environment: None,
        };
        assert_eq!(written(&s, &none).0, "");
        // A replica following this one's stream gets this one's only.
        let (mine, _) = written_for(&s, &Filter::default(), true);
        let v: serde_json::Value = serde_json::from_str(&format!("[{mine}]")).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2000);
    }
}
