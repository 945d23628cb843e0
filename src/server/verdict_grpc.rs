//! The verdict service over gRPC (`proto/release_verdict/v1/verdict.proto`):
//! get, list and watch, carrying the same verdict object as the HTTP API.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::readers::{Pending, Readers, Shared, Ticket};
use crate::app::App;
use crate::clock::system_now;
use crate::judge::Color;
use crate::self_metrics::StreamDrop;
use crate::verdict::{self, Filter, LookupError, Verdict};

use crate::export::proto::{pb, to_pb};
use pb::verdict_service_server::VerdictService;

#[derive(Clone)]
pub struct VerdictGrpc {
    pub app: Arc<App>,
    readers: Arc<Readers>,
    /// One protobuf snapshot for the watches that open at the same time.
    snapshots: Arc<Shared<Vec<pb::Verdict>>>,
    /// Ends watch streams when the daemon shuts down.
    pub stop: CancellationToken,
}

impl VerdictGrpc {
    pub fn new(app: Arc<App>, readers: Arc<Readers>, stop: CancellationToken) -> Self {
        Self {
            snapshots: Shared::new(app.clone(), snapshot),
            app,
            readers,
            stop,
        }
    }
}

fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn filter(service: &str, environment: &str) -> Filter {
    Filter {
        service: text(service),
        environment: text(environment),
    }
}

#[tonic::async_trait]
impl VerdictService for VerdictGrpc {
    async fn get_verdict(
        &self,
        request: Request<pb::GetVerdictRequest>,
    ) -> Result<Response<pb::Verdict>, Status> {
        let r = request.into_inner();
        if r.deployment_id.is_empty() {
            return Err(Status::invalid_argument("deployment_id is required"));
        }
        let f = filter(&r.service, &r.environment);
        let now = system_now();
        match self
            .app
            .read(|s| verdict::find(s, &r.deployment_id, &f, now))
        {
            Ok(v) => Ok(Response::new(to_pb(&v))),
            Err(e @ LookupError::NotFound(_)) => Err(Status::not_found(e.to_string())),
            Err(e @ LookupError::Ambiguous { .. }) => {
                Err(Status::failed_precondition(e.to_string()))
            }
        }
    }

    async fn list_verdicts(
        &self,
        request: Request<pb::ListVerdictsRequest>,
    ) -> Result<Response<pb::ListVerdictsResponse>, Status> {
        let r = request.into_inner();
        let color = match r.verdict.as_str() {
            "" => None,
            word => Some(
                word.parse::<Color>()
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ),
        };
        let f = filter(&r.service, &r.environment);
        let now = system_now();
        let releases = self
            .app
            .whole_read(move |app| {
                let releases = app.list_verdicts(&f, now);
                releases
                    .iter()
                    .filter(|v| color.is_none_or(|c| v.verdict == c))
                    .map(to_pb)
                    .collect()
            })
            .await
            .ok_or_else(|| Status::internal("listing the releases failed"))?;
        Ok(Response::new(pb::ListVerdictsResponse { releases }))
    }

    type WatchVerdictsStream = Pin<Box<dyn Stream<Item = Result<pb::Verdict, Status>> + Send>>;

    /// The releases the request names, then their changes. Beyond
    /// `server.max_streams` open streams: UNAVAILABLE with RetryInfo. A
    /// watch that falls behind ends with UNAVAILABLE, which clients retry.
    async fn watch_verdicts(
        &self,
        request: Request<pb::WatchVerdictsRequest>,
    ) -> Result<Response<Self::WatchVerdictsStream>, Status> {
        let Some(ticket) = self.readers.open() else {
            return Err(Status::with_error_details(
                Code::Unavailable,
                self.readers.refusal(),
                ErrorDetails::with_retry_info(Some(self.readers.retry_after())),
            ));
        };
        let r = request.into_inner();
        let watcher = Watcher {
            grpc: self.clone(),
            filter: filter(&r.service, &r.environment),
            deployment_id: r.deployment_id,
            // Subscribe before asking for the snapshot, so no change falls between.
            changes: self.app.subscribe(),
            phase: Phase::Start,
            _ticket: ticket,
        };
        Ok(Response::new(Box::pin(futures_util::stream::unfold(
            watcher, next,
        ))))
    }
}

/// Every release's verdict in protobuf, built once for all the watches
/// that asked at the time. Blocking: run on the whole-reads thread.
fn snapshot(app: &App) -> Vec<pb::Verdict> {
    app.list_verdicts(&Filter::default(), system_now())
        .iter()
        .map(to_pb)
        .collect()
}

/// Where a watch is.
enum Phase {
    /// Waiting for a snapshot.
    Start,
    /// Sending the snapshot's releases, from `next` on.
    Snapshot {
        held: Pending<Vec<pb::Verdict>>,
        next: usize,
    },
    /// Sending changes as they come.
    Changes,
    /// Told the client why it ends.
    Ended,
}

struct Watcher {
    grpc: VerdictGrpc,
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
async fn next(mut w: Watcher) -> Option<(Result<pb::Verdict, Status>, Watcher)> {
    if w.grpc.stop.is_cancelled() {
        return None;
    }
    loop {
        match &mut w.phase {
            Phase::Ended => return None,
            Phase::Start => {
                let stop = w.grpc.stop.clone();
                let snapshot = tokio::select! {
                    _ = stop.cancelled() => return None,
                    s = w.grpc.snapshots.fresh() => s,
                };
                let Some(snapshot) = snapshot else {
                    w.phase = Phase::Ended;
                    return Some((Err(Status::internal("listing the releases failed")), w));
                };
                w.phase = Phase::Snapshot {
                    held: w.grpc.readers.hold(snapshot),
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
                            return Some(v.clone());
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
                let stop = w.grpc.stop.clone();
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
                        return Some((Ok(to_pb(&v)), w))
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        w.grpc.readers.dropped(StreamDrop::Lagged);
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
