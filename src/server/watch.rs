//! `WatchVerdicts`: the releases a watch names, then their changes. The
//! snapshot is encoded once for every watch that asks at the time
//! (`readers`), gRPC frames and all, in pieces of about `CHUNK` bytes, and
//! each watch sends slices of those pieces: `WatchServer` serves this one
//! method in front of the generated server for the rest, so what a
//! connection queues for its watches is the shared snapshot, not a copy
//! per watch (h2 queues up to 400 KiB a stream while the socket is busy:
//! 500 watches copying theirs added some 300 MiB). A watch is pulled by its
//! connection; one that falls behind, or has not taken its snapshot within
//! `server.stream_snapshot_timeout`, ends with UNAVAILABLE, which clients
//! retry.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use http_body::Frame;
use prost::Message;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::codec::Streaming;
use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::NamedService;
use tonic::{Code, Status};
use tonic_prost::ProstDecoder;
use tonic_types::{ErrorDetails, StatusExt};

use super::readers::{Pending, Readers, Shared, Snap, Ticket};
use crate::app::App;
use crate::clock::system_now;
use crate::export::proto::{pb, to_pb};
use crate::self_metrics::StreamDrop;
use crate::verdict::{Filter, Verdict};

/// A watch's messages as gRPC frames (a flag byte, a length, the message),
/// one or more an item.
pub type Encoded = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// Snapshot messages are framed into pieces of about this size: large
/// enough for few DATA frames, small enough that a watch queued behind a
/// busy socket pins little of a snapshot it has let go of.
const CHUNK: usize = 16 * 1024;

/// The largest `WatchVerdictsRequest` read.
const MAX_REQUEST: usize = 64 * 1024;

/// What every watch shares: the cap, the snapshots, the stop.
#[derive(Clone)]
pub struct Watches {
    app: Arc<App>,
    readers: Arc<Readers>,
    /// One protobuf snapshot for the watches that open at the same time.
    snapshots: Arc<Shared<Snapshot>>,
    /// Ends watch streams when the daemon shuts down.
    stop: CancellationToken,
}

impl Watches {
    pub fn new(app: Arc<App>, readers: Arc<Readers>, stop: CancellationToken) -> Self {
        Self {
            snapshots: Shared::new(&readers, Snapshot::build, Snapshot::bytes),
            app,
            readers,
            stop,
        }
    }

    /// The watch `r` asks for, or UNAVAILABLE with RetryInfo beyond
    /// `server.max_streams` open streams.
    pub fn open(&self, r: pb::WatchVerdictsRequest) -> Result<Encoded, Status> {
        let Some(ticket) = self.readers.open() else {
            return Err(Status::with_error_details(
                Code::Unavailable,
                self.readers.refusal(),
                ErrorDetails::with_retry_info(Some(self.readers.retry_after())),
            ));
        };
        let watcher = Watcher {
            watches: self.clone(),
            filter: filter(&r.service, &r.environment),
            deployment_id: r.deployment_id,
            // Subscribe before asking for the snapshot, so no change falls between.
            changes: self.app.subscribe(),
            phase: Phase::Start,
            _ticket: ticket,
        };
        Ok(Box::pin(futures_util::stream::unfold(watcher, next)))
    }
}

fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// A request's service and environment (empty: any) as a filter.
pub fn filter(service: &str, environment: &str) -> Filter {
    Filter {
        service: text(service),
        environment: text(environment),
    }
}

/// One release of a watch snapshot: what a filter reads, and where its
/// framed message is in the snapshot's pieces.
struct Release {
    service: String,
    environment: String,
    deployment_id: String,
    chunk: u32,
    start: u32,
    end: u32,
}

/// Every release's verdict in protobuf, framed, built once for all the
/// watches that asked at the time. The other replicas' releases follow
/// this one's.
pub struct Snapshot {
    releases: Vec<Release>,
    chunks: Vec<Bytes>,
}

impl Snapshot {
    /// Blocking: run on the whole-reads thread.
    fn build(app: &App) -> Self {
        // Framed one by one, then copied into the pieces in the listing's
        // order (which it sorts after the messages are made).
        let mut messages = app.map_verdicts(&Filter::default(), system_now(), |v| {
            (
                framed(&to_pb(&v)),
                v.service,
                v.environment,
                v.deployment_id,
            )
        });
        let remote = app.remote_verdicts(&Filter::default());
        messages.extend(remote.iter().map(|v| {
            let names = (
                v.service.clone(),
                v.environment.clone(),
                v.deployment_id.clone(),
            );
            (framed(&to_pb(v)), names.0, names.1, names.2)
        }));
        let mut pieces = Pieces::default();
        let releases = messages
            .into_iter()
            .map(|(frame, service, environment, deployment_id)| {
                let (chunk, start, end) = pieces.add(&frame);
                Release {
                    service,
                    environment,
                    deployment_id,
                    chunk,
                    start,
                    end,
                }
            })
            .collect();
        Self {
            releases,
            chunks: pieces.finish(),
        }
    }

    /// Its bytes, about: its pieces and names.
    fn bytes(&self) -> usize {
        let names: usize = self
            .releases
            .iter()
            .map(|r| r.service.len() + r.environment.len() + r.deployment_id.len())
            .sum();
        let pieces: usize = self.chunks.iter().map(Bytes::len).sum();
        self.releases.len() * std::mem::size_of::<Release>() + names + pieces
    }

    /// The frames of the next run of releases a watch wants, from
    /// `*next` on and within one piece, moving `*next` past them; None
    /// once there are no more.
    fn run(&self, wants: impl Fn(&Release) -> bool, next: &mut usize) -> Option<Bytes> {
        let first = loop {
            let r = self.releases.get(*next)?;
            *next += 1;
            if wants(r) {
                break r;
            }
        };
        let mut end = first.end;
        while let Some(r) = self.releases.get(*next) {
            if r.chunk != first.chunk || r.start != end || !wants(r) {
                break;
            }
            end = r.end;
            *next += 1;
        }
        Some(self.chunks[first.chunk as usize].slice(first.start as usize..end as usize))
    }
}

/// The snapshot's pieces as they are filled.
#[derive(Default)]
struct Pieces {
    done: Vec<Bytes>,
    filling: Vec<u8>,
}

impl Pieces {
    /// Copies a frame into the pieces: its piece, start and end.
    fn add(&mut self, frame: &[u8]) -> (u32, u32, u32) {
        if !self.filling.is_empty() && self.filling.len() + frame.len() > CHUNK {
            let full = std::mem::take(&mut self.filling);
            self.done.push(full.into());
        }
        if self.filling.is_empty() {
            self.filling.reserve_exact(frame.len().max(CHUNK));
        }
        let start = self.filling.len() as u32;
        self.filling.extend_from_slice(frame);
        (self.done.len() as u32, start, self.filling.len() as u32)
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.filling.is_empty() {
            self.done.push(self.filling.into());
        }
        self.done
    }
}

/// A gRPC message's frame header: the compressed flag and the length.
const FRAME_HEADER: usize = 5;

fn frame_into(message: &impl Message, out: &mut Vec<u8>) {
    out.push(0);
    out.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
    message
        .encode(out)
        .expect("a Vec grows to take any message");
}

fn framed(message: &impl Message) -> Bytes {
    let mut out = Vec::with_capacity(FRAME_HEADER + message.encoded_len());
    frame_into(message, &mut out);
    out.into()
}

/// The messages in frames as `Encoded` carries them.
fn unframe(mut frames: Bytes) -> impl Iterator<Item = Result<pb::Verdict, Status>> {
    std::iter::from_fn(move || {
        if frames.len() < FRAME_HEADER {
            return None;
        }
        frames.advance(1);
        let len = frames.get_u32() as usize;
        let message = frames.split_to(len.min(frames.len()));
        Some(pb::Verdict::decode(message).map_err(|e| Status::internal(e.to_string())))
    })
}

/// Where a watch is.
enum Phase {
    /// Waiting for a snapshot.
    Start,
    /// Sending the snapshot's releases, from `next` on.
    Snapshot {
        held: Pending<Snap<Snapshot>>,
        next: usize,
    },
    /// Sending changes as they come.
    Changes,
    /// Told the client why it ends.
    Ended,
}

struct Watcher {
    watches: Watches,
    filter: Filter,
    deployment_id: String,
    changes: broadcast::Receiver<Arc<Verdict>>,
    phase: Phase,
    _ticket: Ticket,
}

/// Whether a watch of `filter` and `deployment_id` (empty: any) wants
/// this release.
fn wanted(filter: &Filter, deployment_id: &str, v: (&str, &str, &str)) -> bool {
    filter.matches(v.0, v.1) && (deployment_id.is_empty() || deployment_id == v.2)
}

fn behind(what: &str) -> Status {
    Status::unavailable(format!(
        "this watch fell behind ({what}); watch again for the current state"
    ))
}

/// The watch's next message, made when the connection asks for it.
async fn next(mut w: Watcher) -> Option<(Result<Bytes, Status>, Watcher)> {
    if w.watches.stop.is_cancelled() {
        return None;
    }
    loop {
        match &mut w.phase {
            Phase::Ended => return None,
            Phase::Start => {
                let stop = w.watches.stop.clone();
                let snapshot = tokio::select! {
                    _ = stop.cancelled() => return None,
                    s = w.watches.snapshots.fresh() => s,
                };
                let Some(snapshot) = snapshot else {
                    w.phase = Phase::Ended;
                    return Some((Err(Status::internal("listing the releases failed")), w));
                };
                w.phase = Phase::Snapshot {
                    held: w.watches.readers.hold(snapshot),
                    next: 0,
                };
            }
            Phase::Snapshot { held, next } => {
                let (filter, id) = (&w.filter, &w.deployment_id);
                let found = held.with(|all| {
                    all.run(
                        |r| wanted(filter, id, (&r.service, &r.environment, &r.deployment_id)),
                        next,
                    )
                });
                match found {
                    Some(Some(v)) => return Some((Ok(v), w)),
                    Some(None) => w.phase = Phase::Changes,
                    None => {
                        w.phase = Phase::Ended;
                        let why = "its snapshot was not read within server.stream_snapshot_timeout";
                        return Some((Err(behind(why)), w));
                    }
                }
            }
            Phase::Changes => {
                let stop = w.watches.stop.clone();
                let next = tokio::select! {
                    _ = stop.cancelled() => return None,
                    next = w.changes.recv() => next,
                };
                match next {
                    Ok(v)
                        if wanted(
                            &w.filter,
                            &w.deployment_id,
                            (&v.service, &v.environment, &v.deployment_id),
                        ) =>
                    {
                        return Some((Ok(framed(&to_pb(&v))), w))
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        w.watches.readers.dropped(StreamDrop::Lagged);
                        w.phase = Phase::Ended;
                        let why = format!("{n} changes went unread");
                        return Some((Err(behind(&why)), w));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    }
}

/// The messages of a watch's frames, decoded again.
pub fn decoded(encoded: Encoded) -> impl Stream<Item = Result<pb::Verdict, Status>> + Send {
    encoded.flat_map(|item| {
        let items: Vec<_> = match item {
            Ok(frames) => unframe(frames).collect(),
            Err(status) => vec![Err(status)],
        };
        futures_util::stream::iter(items)
    })
}

/// The verdict service with `WatchVerdicts` served from the shared
/// snapshot's frames: the generated server (`inner`) decodes and encodes
/// every message into a buffer of each stream's own, and a watch of
/// 10,000 releases would cost each watcher that much CPU again.
#[derive(Clone)]
pub struct WatchServer<S> {
    inner: S,
    watches: Watches,
}

impl<S> WatchServer<S> {
    pub fn new(inner: S, watches: Watches) -> Self {
        Self { inner, watches }
    }
}

impl<S: NamedService> NamedService for WatchServer<S> {
    const NAME: &'static str = S::NAME;
}

const WATCH_PATH: &str = "/release_verdict.v1.VerdictService/WatchVerdicts";

impl<S, B> Service<http::Request<B>> for WatchServer<S>
where
    S: Service<
        http::Request<B>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future = BoxFuture<http::Response<tonic::body::Body>, Infallible>,
    >,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != WATCH_PATH {
            return self.inner.call(req);
        }
        let watches = self.watches.clone();
        Box::pin(async move {
            Ok(match watches.serve(req).await {
                Ok(frames) => {
                    let mut resp = http::Response::new(tonic::body::Body::new(Frames {
                        inner: frames,
                        done: false,
                    }));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    resp
                }
                Err(status) => status.into_http(),
            })
        })
    }
}

impl Watches {
    /// The watch an HTTP/2 request asks for: its one message read
    /// (uncompressed, as the generated server would take it).
    async fn serve<B>(&self, req: http::Request<B>) -> Result<Encoded, Status>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let encoding = req
            .headers()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap_or("?"));
        if let Some(e) = encoding.filter(|e| *e != "identity") {
            return Err(Status::unimplemented(format!(
                "WatchVerdictsRequest compressed with {e} is not accepted: send it uncompressed"
            )));
        }
        let decoder = ProstDecoder::<pb::WatchVerdictsRequest>::default();
        let mut body = Streaming::new_request(decoder, req.into_body(), None, Some(MAX_REQUEST));
        let Some(r) = body.message().await? else {
            return Err(Status::invalid_argument("no WatchVerdictsRequest was sent"));
        };
        // To the end of the request, as the generated server reads it: a
        // request body dropped unread is reset, and the answer with it.
        if body.message().await?.is_some() {
            return Err(Status::invalid_argument(
                "a watch takes one WatchVerdictsRequest",
            ));
        }
        body.trailers().await?;
        self.open(r)
    }
}

/// A watch's response body: its frames as DATA, then its status as
/// trailers (OK when it simply ends).
struct Frames {
    inner: Encoded,
    done: bool,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let status = match std::task::ready!(self.inner.as_mut().poll_next(cx)) {
            Some(Ok(frames)) => return Poll::Ready(Some(Ok(Frame::data(frames)))),
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        if let Err(unsendable) = status.add_header(&mut trailers) {
            let _ = unsendable.add_header(&mut trailers);
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(service: &str, n: usize) -> pb::Verdict {
        pb::Verdict {
            service: service.into(),
            environment: "prod".into(),
            deployment_id: format!("{service}-{n}"),
            // Sizes from a few bytes to past a piece.
            git_sha: Some("x".repeat((n * 997) % (CHUNK + 300))),
            ..Default::default()
        }
    }

    fn snapshot(messages: &[pb::Verdict]) -> Snapshot {
        let mut pieces = Pieces::default();
        let releases = messages
            .iter()
            .map(|m| {
                let (chunk, start, end) = pieces.add(&framed(m));
                Release {
                    service: m.service.clone(),
                    environment: m.environment.clone(),
                    deployment_id: m.deployment_id.clone(),
                    chunk,
                    start,
                    end,
                }
            })
            .collect();
        Snapshot {
            releases,
            chunks: pieces.finish(),
        }
    }

    /// Every run a watch of `service` (None: all) sends, decoded.
    fn sent(snap: &Snapshot, service: Option<&str>) -> (Vec<pb::Verdict>, Vec<usize>) {
        let (mut out, mut sizes, mut next) = (Vec::new(), Vec::new(), 0);
        while let Some(run) = snap.run(|r| service.is_none_or(|s| r.service == s), &mut next) {
            sizes.push(run.len());
            out.extend(unframe(run).map(Result::unwrap));
        }
        (out, sizes)
    }

    #[test]
    fn a_watch_sends_the_releases_it_wants_in_order_in_slices_of_the_shared_pieces() {
        let all: Vec<_> = (0..400)
            .map(|n| verdict(if n % 3 == 0 { "checkout" } else { "search" }, n))
            .collect();
        let snap = snapshot(&all);
        assert!(snap.chunks.len() > 10, "{} pieces", snap.chunks.len());

        let (every, sizes) = sent(&snap, None);
        assert_eq!(every, all);
        // One run a piece: a piece is at most CHUNK but for one message past it.
        assert_eq!(sizes.len(), snap.chunks.len());
        let largest = all
            .iter()
            .map(|m| FRAME_HEADER + m.encoded_len())
            .max()
            .unwrap();
        assert!(sizes.iter().all(|&s| s <= CHUNK.max(largest)), "{sizes:?}");

        let (checkout, _) = sent(&snap, Some("checkout"));
        let wanted: Vec<_> = all
            .iter()
            .filter(|m| m.service == "checkout")
            .cloned()
            .collect();
        assert_eq!(checkout, wanted);
        assert_eq!(sent(&snap, Some("nothing")).0, vec![]);

        // Slices of the pieces, not copies.
        let mut next = 0;
        let run = snap.run(|_| true, &mut next).unwrap();
        assert_eq!(run.as_ptr(), snap.chunks[0].as_ptr());
    }

    #[test]
    fn a_change_is_one_frame() {
        let v = verdict("checkout", 7);
        let frame = framed(&v);
        assert_eq!(frame[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize,
            v.encoded_len()
        );
        assert_eq!(
            unframe(frame).map(Result::unwrap).collect::<Vec<_>>(),
            vec![v]
        );
    }
}
