//! The verdict service over gRPC (`proto/release_verdict/v1/verdict.proto`):
//! get, list and watch, carrying the same verdict object as the HTTP API.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use super::watch::{filter, Watches};
use crate::app::App;
use crate::clock::system_now;
use crate::judge::Color;
use crate::verdict::{self, LookupError};

use crate::export::proto::{pb, to_pb};
use pb::verdict_service_server::VerdictService;

#[derive(Clone)]
pub struct VerdictGrpc {
    pub app: Arc<App>,
    /// The watch streams (see `watch`).
    pub watches: Watches,
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

    /// As `watch::WatchServer` serves it, decoded again: for a server
    /// built on `VerdictServiceServer` alone.
    async fn watch_verdicts(
        &self,
        request: Request<pb::WatchVerdictsRequest>,
    ) -> Result<Response<Self::WatchVerdictsStream>, Status> {
        let encoded = self.watches.open(request.into_inner())?;
        Ok(Response::new(Box::pin(encoded.map(|m| {
            m.and_then(|b| pb::Verdict::decode(b).map_err(|e| Status::internal(e.to_string())))
        }))))
    }
}
