//! `WatchVerdicts`: the releases a watch names, then their changes. The
//! snapshot is encoded once for every watch that asks at the time
//! (`readers`) and sent as those bytes: `WatchServer` serves this one
//! method with a codec that writes them as they are, in front of the
//! generated server for the rest. A watch is pulled by its connection, a
//! message at a time; one that falls behind, or has not taken its snapshot
//! within `server.stream_snapshot_timeout`, ends with UNAVAILABLE, which
//! clients retry.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use futures_util::Stream;
use prost::Message;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{NamedService, ServerStreamingService};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstDecoder;
use tonic_types::{ErrorDetails, StatusExt};

use super::readers::{Pending, Readers, Shared, Snap, Ticket};
use crate::app::App;
use crate::clock::system_now;
use crate::export::proto::{pb, to_pb};
use crate::self_metrics::StreamDrop;
use crate::verdict::{Filter, Verdict};

/// A watch's messages, encoded.
pub type Encoded = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// What every watch shares: the cap, the snapshots, the stop.
#[derive(Clone)]
pub struct Watches {
    app: Arc<App>,
    readers: Arc<Readers>,
    /// One protobuf snapshot for the watches that open at the same time.
    snapshots: Arc<Shared<Vec<Release>>>,
    /// Ends watch streams when the daemon shuts down.
    stop: CancellationToken,
}

impl Watches {
    pub fn new(app: Arc<App>, readers: Arc<Readers>, stop: CancellationToken) -> Self {
        Self {
            snapshots: Shared::new(&readers, snapshot, |s| snapshot_bytes(s)),
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

/// One release of a watch snapshot: what a filter reads, and its
/// message encoded (a third of the memory of the message itself).
struct Release {
    service: String,
    environment: String,
    deployment_id: String,
    message: Bytes,
}

/// Every release's verdict in protobuf, built once for all the watches
/// that asked at the time. Blocking: run on the whole-reads thread.
/// The other replicas' releases follow this one's.
fn snapshot(app: &App) -> Vec<Release> {
    let mut releases = app.map_verdicts(&Filter::default(), system_now(), |v| Release {
        message: to_pb(&v).encode_to_vec().into(),
        service: v.service,
        environment: v.environment,
        deployment_id: v.deployment_id,
    });
    let remote = app.remote_verdicts(&Filter::default());
    releases.extend(remote.iter().map(|v| Release {
        message: to_pb(v).encode_to_vec().into(),
        service: v.service.clone(),
        environment: v.environment.clone(),
        deployment_id: v.deployment_id.clone(),
    }));
    releases
}

/// A snapshot's bytes, about: its messages and names.
fn snapshot_bytes(releases: &[Release]) -> usize {
    releases
        .iter()
        .map(|r| {
            std::mem::size_of::<Release>()
                + r.message.len()
                + r.service.len()
                + r.environment.len()
                + r.deployment_id.len()
        })
        .sum()
}

/// Where a watch is.
enum Phase {
    /// Waiting for a snapshot.
    Start,
    /// Sending the snapshot's releases, from `next` on.
    Snapshot {
        held: Pending<Snap<Vec<Release>>>,
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
                let found = held.with(|all| {
                    while let Some(v) = all.get(*next) {
                        *next += 1;
                        if wanted(
                            &w.filter,
                            &w.deployment_id,
                            (&v.service, &v.environment, &v.deployment_id),
                        ) {
                            return Some(v.message.clone());
                        }
                    }
                    None
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
                        return Some((Ok(to_pb(&v).encode_to_vec().into()), w))
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

/// The verdict service with `WatchVerdicts` served from encoded
/// snapshots: the generated server (`inner`) decodes and encodes every
/// message, and a watch of 10,000 releases would cost each watcher that
/// much CPU again.
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
    B: Body + Send + 'static,
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
        let mut grpc = tonic::server::Grpc::new(WatchCodec);
        let watch = Watch(self.watches.clone());
        Box::pin(async move { Ok(grpc.server_streaming(watch, req).await) })
    }
}

struct Watch(Watches);

impl ServerStreamingService<pb::WatchVerdictsRequest> for Watch {
    type Response = Bytes;
    type ResponseStream = Encoded;
    type Future = BoxFuture<Response<Encoded>, Status>;

    fn call(&mut self, request: Request<pb::WatchVerdictsRequest>) -> Self::Future {
        let opened = self.0.open(request.into_inner()).map(Response::new);
        Box::pin(async move { opened })
    }
}

/// Requests decoded by prost, answers already encoded.
struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = Bytes;
    type Decode = pb::WatchVerdictsRequest;
    type Encoder = BytesEncoder;
    type Decoder = ProstDecoder<pb::WatchVerdictsRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}
