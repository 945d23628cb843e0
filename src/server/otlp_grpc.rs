//! OTLP/gRPC receivers: `TraceService/Export` (its bytes walked in place)
//! and `MetricsService/Export` (decoded by prost), admitted under the
//! in-flight bound, mapped and recorded by `App`.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::codegen::{
    http, Body, BoxFuture, CompressionEncoding, Context, EnabledCompressionEncodings, Poll,
    Service, StdError,
};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstEncoder;
use tonic_types::{ErrorDetails, StatusExt};

use crate::app::{App, Ingested, Sender, ServiceScope, TokenSender};
use crate::clock::system_now;
use crate::ingest::decode::Encoding;
use crate::self_metrics::{Reason, Signal, Transport};

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

/// `TraceService/Export`, its request walked in place (`ingest::walk`)
/// instead of decoded by prost. tonic's generated `TraceServiceServer`
/// fixes prost's codec, so this is that server with a codec whose decoder
/// hands over the message's bytes (framing, decompression and the size
/// cap stay tonic's).
#[derive(Clone)]
pub struct TraceServer {
    app: Arc<App>,
    accept: EnabledCompressionEncodings,
    max_decoding: Option<usize>,
}

impl TraceServer {
    pub fn new(app: Arc<App>) -> Self {
        Self {
            app,
            accept: EnabledCompressionEncodings::default(),
            max_decoding: None,
        }
    }

    /// Accepts requests compressed with `encoding`.
    #[must_use]
    pub fn accept_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.accept.enable(encoding);
        self
    }

    /// Refuses messages larger than `limit` once decompressed.
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding = Some(limit);
        self
    }
}

impl NamedService for TraceServer {
    const NAME: &'static str = trace_service_server::SERVICE_NAME;
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl<B> Service<http::Request<B>> for TraceServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async {
                let mut resp = http::Response::new(tonic::body::Body::default());
                let headers = resp.headers_mut();
                headers.insert(Status::GRPC_STATUS, (Code::Unimplemented as i32).into());
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(resp)
            });
        }
        let mut grpc = tonic::server::Grpc::new(RawCodec)
            .apply_compression_config(self.accept, EnabledCompressionEncodings::default())
            .apply_max_message_size_config(self.max_decoding, None);
        let export = Export(self.app.clone());
        Box::pin(async move { Ok(grpc.unary(export, req).await) })
    }
}

/// The export itself: admitted, walked, mapped and recorded.
struct Export(Arc<App>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let app = self.0.clone();
        Box::pin(async move {
            let Some(_admitted) = app.admit(Signal::Spans, Transport::Grpc) else {
                return Err(overloaded(&app));
            };
            let outcome = app
                .ingest_trace_bytes(
                    request.get_ref(),
                    Encoding::Protobuf,
                    Transport::Grpc,
                    system_now(),
                    request.extensions().get::<ServiceScope>(),
                )
                .map_err(|e| {
                    app.refuse_request(Signal::Spans, Transport::Grpc, Reason::Malformed);
                    Status::invalid_argument(e.to_string())
                })?;
            Ok(Response::new(check(&app, outcome)?.trace_response()))
        })
    }
}

/// Requests as their bytes, answers encoded by prost.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ProstEncoder<ExportTraceServiceResponse>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // tonic's buffer is one `BytesMut`: this splits it, without a copy.
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
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
        let outcome = self.app.ingest_metrics(
            request.get_ref(),
            Transport::Grpc,
            system_now(),
            request.extensions().get::<ServiceScope>(),
            Sender::of(
                request.extensions().get::<TokenSender>().copied(),
                request.remote_addr().map(|a| a.ip()),
            ),
        );
        Ok(Response::new(check(&self.app, outcome)?.metrics_response()))
    }
}

/// HTTP/1.x on the gRPC port. The gRPC server accepts HTTP/1 connections
/// only so that this layer, outermost, can answer them: every request that
/// is not HTTP/2 gets a plain-text 400 naming the OTLP/HTTP port and the
/// protocol setting, is counted and is logged at most once a minute; none
/// reaches a gRPC service. The version is read after TLS when TLS is on
/// (ALPN offers only `h2` there, so a TLS client that asks for `http/1.1`
/// fails its handshake first; one that asks for nothing is answered here).
#[derive(Clone)]
pub struct WrongProtocol {
    pub app: Arc<App>,
    /// The OTLP/HTTP port, for the answer.
    pub http_port: u16,
}

impl<S> tower::Layer<S> for WrongProtocol {
    type Service = WrongProtocolService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WrongProtocolService {
            inner,
            outer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct WrongProtocolService<S> {
    inner: S,
    outer: WrongProtocol,
}

/// The answer to an HTTP/1.x request on the gRPC port.
pub fn wrong_protocol_answer(http_port: u16) -> String {
    format!(
        "This is release-verdict's OTLP/gRPC port: it speaks gRPC (HTTP/2) only, \
         and this request came as HTTP/1.x.\n\
         For OTLP over HTTP (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf, the default \
         of the Node.js SDK and the Java agent), send to port {http_port}: \
         OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:{http_port}\n\
         Or keep this port and set OTEL_EXPORTER_OTLP_PROTOCOL=grpc.\n"
    )
}

impl<S, B> Service<http::Request<B>> for WrongProtocolService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.version() == http::Version::HTTP_2 {
            return Box::pin(self.inner.call(req));
        }
        let user_agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        let port = self.outer.http_port;
        self.outer.app.wrong_port(user_agent, port, system_now());
        let body = http_body_util::Full::new(Bytes::from(wrong_protocol_answer(port)));
        let answer = http::Response::builder()
            .status(http::StatusCode::BAD_REQUEST)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            // Nothing of the body is read: the connection is not reused.
            .header(http::header::CONNECTION, "close")
            .body(tonic::body::Body::new(body))
            .expect("a static answer is a valid response");
        Box::pin(async move { Ok(answer) })
    }
}
