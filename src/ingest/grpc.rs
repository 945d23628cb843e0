//! OTLP/gRPC receivers: `TraceService/Export` and `MetricsService/Export`.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

use crate::app::{App, Outcome};
use crate::export::self_metrics::Transport;
use crate::model::system_now;

/// Both OTLP services over one shared state.
#[derive(Clone)]
pub struct OtlpGrpc {
    pub app: Arc<App>,
}

/// A request whose every item was invalid is bad input as a whole.
fn check(outcome: Outcome) -> Result<Outcome, Status> {
    if outcome.all_invalid {
        Err(Status::invalid_argument(outcome.message))
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
        let outcome = self
            .app
            .ingest_traces(request.get_ref(), Transport::Grpc, system_now());
        Ok(Response::new(check(outcome)?.trace_response()))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let outcome = self
            .app
            .ingest_metrics(request.get_ref(), Transport::Grpc, system_now());
        Ok(Response::new(check(outcome)?.metrics_response()))
    }
}
