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
use crate::export::self_metrics::{Signal, Transport};
use crate::model::system_now;

/// Both OTLP services over one shared state.
#[derive(Clone)]
pub struct OtlpGrpc {
    pub app: Arc<App>,
}

/// `google.rpc.RetryInfo` inside a `google.rpc.Status`, so OTLP exporters
/// know when to retry (the OTLP specification's throttling signal).
mod rpc {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<Duration>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }
}

/// The overload answer: UNAVAILABLE, which OTLP exporters always retry,
/// with RetryInfo saying when.
fn overloaded(app: &App) -> Status {
    use prost::Message;
    let after = app.config.server.overload_retry_after;
    let message = format!(
        "overloaded: {} export requests in flight; retry after {after:?}",
        app.config.server.max_inflight_requests
    );
    let retry = rpc::RetryInfo {
        retry_delay: Some(rpc::Duration {
            seconds: after.as_secs() as i64,
            nanos: after.subsec_nanos() as i32,
        }),
    };
    let details = rpc::Status {
        code: tonic::Code::Unavailable as i32,
        message: message.clone(),
        details: vec![rpc::Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: retry.encode_to_vec(),
        }],
    };
    Status::with_details(
        tonic::Code::Unavailable,
        message,
        details.encode_to_vec().into(),
    )
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
        let Some(_admitted) = self.app.admit(Signal::Spans, Transport::Grpc) else {
            return Err(overloaded(&self.app));
        };
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
        let Some(_admitted) = self.app.admit(Signal::Points, Transport::Grpc) else {
            return Err(overloaded(&self.app));
        };
        let outcome = self
            .app
            .ingest_metrics(request.get_ref(), Transport::Grpc, system_now());
        Ok(Response::new(check(outcome)?.metrics_response()))
    }
}
