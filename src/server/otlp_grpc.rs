//! OTLP/gRPC receivers: `TraceService/Export` and `MetricsService/Export`,
//! admitted under the in-flight bound, mapped and recorded by `App`.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::app::{App, Ingested};
use crate::clock::system_now;
use crate::self_metrics::{Signal, Transport};

/// Both OTLP services over one shared state.
#[derive(Clone)]
pub struct OtlpGrpc {
    pub app: Arc<App>,
}

/// The overload answer: UNAVAILABLE, which OTLP exporters always retry,
/// with `google.rpc.RetryInfo` saying when (the OTLP specification's
/// throttling signal).
fn overloaded(app: &App) -> Status {
    let after = app.config.server.overload_retry_after;
    let message = format!(
        "overloaded: {} export requests in flight; retry after {after:?}",
        app.config.server.max_inflight_requests
    );
    Status::with_error_details(
        Code::Unavailable,
        message,
        ErrorDetails::with_retry_info(Some(after)),
    )
}

/// A request whose every item was invalid is bad input as a whole; one
/// whose every item was refused for want of room is retried later
/// (RESOURCE_EXHAUSTED with RetryInfo, which OTLP exporters retry).
fn check(app: &App, outcome: Ingested) -> Result<Ingested, Status> {
    if outcome.all_invalid {
        Err(Status::invalid_argument(outcome.message))
    } else if outcome.all_full {
        Err(Status::with_error_details(
            Code::ResourceExhausted,
            outcome.message,
            ErrorDetails::with_retry_info(Some(app.config.server.overload_retry_after)),
        ))
    } else {
        Ok(outcome)
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let Some(_admitted) = self.app.admit(Signal::Spans, Transport::Grpc) else {
            return Err(overloaded(&self.app));
        };
        let outcome = self
            .app
            .ingest_traces(request.get_ref(), Transport::Grpc, system_now());
        Ok(Response::new(check(&self.app, outcome)?.trace_response()))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let Some(_admitted) = self.app.admit(Signal::Points, Transport::Grpc) else {
            return Err(overloaded(&self.app));
        };
        let outcome = self
            .app
            .ingest_metrics(request.get_ref(), Transport::Grpc, system_now());
        Ok(Response::new(check(&self.app, outcome)?.metrics_response()))
    }
}
