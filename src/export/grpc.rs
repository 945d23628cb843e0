//! The verdict service over gRPC (`proto/release_verdict/v1/verdict.proto`):
//! get, list and watch, carrying the same verdict object as the HTTP API.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::judge::checks::{CheckReport, CohortStats, Outcome};
use crate::model::system_now;
use crate::verdict::{self, Filter, LookupError, Verdict};

/// Generated types and service.
pub mod pb {
    tonic::include_proto!("release_verdict.v1");

    /// The encoded descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/verdict_descriptor.bin"));
}

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
        if !matches!(r.verdict.as_str(), "" | "green" | "yellow" | "red") {
            return Err(Status::invalid_argument(format!(
                "verdict must be green, yellow or red, not {:?}",
                r.verdict
            )));
        }
        let f = filter(&r.service, &r.environment);
        let now = system_now();
        let releases = self
            .app
            .read(|s| verdict::list(s, &f, now))
            .iter()
            .map(to_pb)
            .filter(|v| r.verdict.is_empty() || v.verdict == r.verdict)
            .collect();
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
            f.service.as_deref().is_none_or(|s| s == v.service)
                && f.environment.as_deref().is_none_or(|e| e == v.environment)
                && (r.deployment_id.is_empty() || r.deployment_id == v.deployment_id)
        };
        // Subscribe before reading the current state, so no change falls between.
        let mut changes = self.app.subscribe();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let (app, stop) = (self.app.clone(), self.stop.clone());
        tokio::spawn(async move {
            let current =
                |app: &App| app.read(|s| verdict::list(s, &Filter::default(), system_now()));
            for v in current(&app).iter().filter(|v| wanted(v)) {
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
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        current(&app).into_iter().map(Arc::new).collect()
                    }
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

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Marginal => "marginal",
        Outcome::Fail => "fail",
        Outcome::Nodata => "nodata",
    }
}

fn stats(s: &CohortStats) -> pb::CohortStats {
    pb::CohortStats {
        requests: s.requests,
        errors: s.errors,
        error_ratio: s.error_ratio,
        p50_ms: s.p50_ms,
        p95_ms: s.p95_ms,
        p99_ms: s.p99_ms,
        per_request: s.per_request,
        median: s.median,
    }
}

fn check(c: &CheckReport) -> pb::Check {
    pb::Check {
        name: c.name.clone(),
        result: outcome(c.result).into(),
        critical: c.critical,
        weight: c.weight,
        canary: Some(stats(&c.canary)),
        baseline: c.baseline.as_ref().map(stats),
        statistic: Some(pb::Statistic {
            e_value: c.statistic.e_value,
            p_value: c.statistic.p_value,
            pass_p_value: c.statistic.pass_p_value,
        }),
        detail: c.detail.clone(),
    }
}

/// The verdict object as its protobuf message.
pub fn to_pb(v: &Verdict) -> pb::Verdict {
    pb::Verdict {
        service: v.service.clone(),
        environment: v.environment.clone(),
        deployment_id: v.deployment_id.clone(),
        git_sha: v.git_sha.clone(),
        role: v.role.map(|r| {
            match r {
                crate::model::Role::Canary => "canary",
                crate::model::Role::Baseline => "baseline",
                crate::model::Role::Stable => "stable",
            }
            .to_string()
        }),
        baseline: v.baseline.as_ref().map(|b| pb::Baseline {
            deployment_id: b.deployment_id.clone(),
            git_sha: b.git_sha.clone(),
            requests: b.requests,
            errors: b.errors,
        }),
        verdict: match v.verdict {
            crate::judge::Color::Green => "green",
            crate::judge::Color::Yellow => "yellow",
            crate::judge::Color::Red => "red",
        }
        .into(),
        reason: v.reason.clone(),
        evaluated_at: v.evaluated_at.clone(),
        first_seen_at: v.first_seen_at.clone(),
        last_seen_at: v.last_seen_at.clone(),
        changed_at: v.changed_at.clone(),
        red_since: v.red_since.clone(),
        canary: Some(pb::CohortTotals {
            requests: v.canary.requests,
            errors: v.canary.errors,
        }),
        checks: v.checks.iter().map(check).collect(),
    }
}
