//! The verdict service over gRPC (`proto/release_verdict/v1/verdict.proto`):
//! get, list and watch, carrying the same verdict object as the HTTP API.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::clock::system_now;
use crate::judge::Color;
use crate::verdict::{self, Filter, LookupError, Verdict};

use crate::export::proto::{pb, to_pb};
use pb::verdict_service_server::VerdictService;

/// Buffered verdicts per watcher before it is considered lagging.
const WATCH_BUFFER: usize = 256;

#[derive(Clone)]
pub struct VerdictGrpc {
    pub app: Arc<App>,
    /// Ends watch streams when the daemon shuts down.
    pub stop: CancellationToken,
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

    type WatchVerdictsStream = ReceiverStream<Result<pb::Verdict, Status>>;

    async fn watch_verdicts(
        &self,
        request: Request<pb::WatchVerdictsRequest>,
    ) -> Result<Response<Self::WatchVerdictsStream>, Status> {
        let r = request.into_inner();
        let f = filter(&r.service, &r.environment);
        let wanted = move |v: &Verdict| {
            f.admits(v) && (r.deployment_id.is_empty() || r.deployment_id == v.deployment_id)
        };
        // Subscribe before reading the current state, so no change falls between.
        let mut changes = self.app.subscribe();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let (app, stop) = (self.app.clone(), self.stop.clone());
        tokio::spawn(async move {
            let current = |app: Arc<App>| async move {
                tokio::task::spawn_blocking(move || {
                    app.list_verdicts(&Filter::default(), system_now())
                })
                .await
                .unwrap_or_default()
            };
            for v in current(app.clone()).await.iter().filter(|v| wanted(v)) {
                if tx.send(Ok(to_pb(v))).await.is_err() {
                    return;
                }
            }
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    next = changes.recv() => next,
                };
                let batch: Vec<Arc<Verdict>> = match next {
                    Ok(v) => vec![v],
                    // Fell behind: send the whole current state again.
                    Err(broadcast::error::RecvError::Lagged(_)) => current(app.clone())
                        .await
                        .into_iter()
                        .map(Arc::new)
                        .collect(),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for v in batch.iter().filter(|v| wanted(v)) {
                    if tx.send(Ok(to_pb(v))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
