//! The verdict service over gRPC (`proto/release_verdict/v1/verdict.proto`):
//! get, list and watch, carrying the same verdict object as the HTTP API.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::watch::{decoded, filter, Watches};
use crate::app::App;
use crate::clock::system_now;
use crate::judge::Color;
use crate::verdict::{self, LookupError, Verdict};

use super::fleet::{self, Elsewhere, Peers};

/// Another replica's listing, as its JSON API gives it.
#[derive(serde::Deserialize)]
struct Listing {
    releases: Vec<Verdict>,
}

/// Adds the releases of other replicas' listings that `color` admits and
/// `releases` does not hold.
fn add_theirs(
    mut releases: Vec<pb::Verdict>,
    theirs: Vec<bytes::Bytes>,
    color: Option<Color>,
) -> Vec<pb::Verdict> {
    let key = |s: &str, e: &str, d: &str| (s.to_string(), e.to_string(), d.to_string());
    let mut seen: HashSet<(String, String, String)> = releases
        .iter()
        .map(|v| key(&v.service, &v.environment, &v.deployment_id))
        .collect();
    for body in theirs {
        let Ok(listing) = serde_json::from_slice::<Listing>(&body) else {
            continue;
        };
        for v in listing.releases {
            let k = key(&v.service, &v.environment, &v.deployment_id);
            if color.is_none_or(|c| v.verdict == c) && seen.insert(k) {
                releases.push(to_pb(&v));
            }
        }
    }
    releases
}

/// The caller's bearer token, to ask another replica as the caller.
fn authorization<T>(request: &Request<T>) -> Option<axum::http::HeaderValue> {
    let value = request.metadata().get("authorization")?;
    axum::http::HeaderValue::from_bytes(value.as_bytes()).ok()
}

use crate::export::proto::{pb, to_pb};
use pb::verdict_service_server::VerdictService;

#[derive(Clone)]
pub struct VerdictGrpc {
    pub app: Arc<App>,
    /// The replicas beside this one, asked for the releases they judge.
    pub peers: Arc<Peers>,
    /// The watch streams (see `watch`).
    pub watches: Watches,
}

#[tonic::async_trait]
impl VerdictService for VerdictGrpc {
    async fn get_verdict(
        &self,
        request: Request<pb::GetVerdictRequest>,
    ) -> Result<Response<pb::Verdict>, Status> {
        let auth = authorization(&request);
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
            Err(e @ LookupError::NotFound(_)) => {
                let id = &r.deployment_id;
                let found =
                    fleet::elsewhere(&self.app, &self.peers, id, &f, "", auth.as_ref(), true).await;
                match found {
                    Some(Elsewhere::Judged { body, replica }) => {
                        let v: Verdict = serde_json::from_slice(&body).map_err(|e| {
                            Status::unavailable(format!("replica {replica} answered {e}"))
                        })?;
                        Ok(Response::new(to_pb(&v)))
                    }
                    Some(Elsewhere::Recorded(records)) => match records.as_slice() {
                        [] => Err(Status::not_found(e.to_string())),
                        [one] => fleet::recorded_verdict(one)
                            .map(|v| Response::new(to_pb(&v)))
                            .ok_or_else(|| {
                                Status::internal("the ledger's record of the release does not read")
                            }),
                        many => Err(Status::failed_precondition(format!(
                            "deployment id {:?} names {} releases; set service and environment",
                            verdict::shown(id),
                            many.len()
                        ))),
                    },
                    None => Err(Status::not_found(e.to_string())),
                }
            }
            Err(e @ LookupError::Ambiguous { .. }) => {
                Err(Status::failed_precondition(e.to_string()))
            }
        }
    }

    async fn list_verdicts(
        &self,
        request: Request<pb::ListVerdictsRequest>,
    ) -> Result<Response<pb::ListVerdictsResponse>, Status> {
        let auth = authorization(&request);
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
        let peers = self.peers.clone();
        let fleet_filter = f.clone();
        let theirs =
            async move { fleet::peer_listings(&peers, &fleet_filter, auth.as_ref()).await };
        let mine = self.app.whole_read(move |app| {
            let releases = app.list_verdicts(&f, now);
            releases
                .iter()
                .filter(|v| color.is_none_or(|c| v.verdict == c))
                .map(to_pb)
                .collect()
        });
        let (theirs, mine) = tokio::join!(theirs, mine);
        let releases: Vec<pb::Verdict> =
            mine.ok_or_else(|| Status::internal("listing the releases failed"))?;
        if theirs.is_empty() {
            return Ok(Response::new(pb::ListVerdictsResponse { releases }));
        }
        // The other replicas' listings are read off the async workers.
        let releases = tokio::task::spawn_blocking(move || add_theirs(releases, theirs, color))
            .await
            .map_err(|_| Status::internal("listing the releases failed"))?;
        Ok(Response::new(pb::ListVerdictsResponse { releases }))
    }

    type WatchVerdictsStream = Pin<Box<dyn Stream<Item = Result<pb::Verdict, Status>> + Send>>;

    /// As `watch::WatchServer` serves it, decoded again: for a server
    /// built on `VerdictServiceServer` alone.
    async fn watch_verdicts(
        &self,
        request: Request<pb::WatchVerdictsRequest>,
    ) -> Result<Response<Self::WatchVerdictsStream>, Status> {
        let encoded = self.watches.open(request.into_inner())?;
        Ok(Response::new(Box::pin(decoded(encoded))))
    }
}
