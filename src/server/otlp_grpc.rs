//! OTLP/gRPC receivers: `TraceService/Export` (its bytes walked in place)
//! and `MetricsService/Export` (decoded by prost once there is room for
//! what decoding it takes, `App::decode_metrics`), admitted under the
//! in-flight bound, mapped and recorded by `App`.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
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

/// An OTLP export service served from the request's bytes: tonic's
/// generated servers fix prost's codec, so this is such a server with a
/// codec whose decoder hands over the message's bytes (framing,
/// decompression and the size cap stay tonic's). Traces are walked in
/// place (`ingest::walk`); metrics decoded by prost once there is room.
pub struct ExportServer<K> {
    app: Arc<App>,
    accept: EnabledCompressionEncodings,
    max_decoding: Option<usize>,
    kind: PhantomData<fn() -> K>,
}

/// `TraceService/Export`.
pub type TraceServer = ExportServer<Traces>;
/// `MetricsService/Export`.
pub type MetricsServer = ExportServer<Metrics>;

impl<K> Clone for ExportServer<K> {
    fn clone(&self) -> Self {
        Self {
            app: self.app.clone(),
            accept: self.accept,
            max_decoding: self.max_decoding,
            kind: PhantomData,
        }
    }
}

impl<K> ExportServer<K> {
    pub fn new(app: Arc<App>) -> Self {
        Self {
            app,
            accept: EnabledCompressionEncodings::default(),
            max_decoding: None,
            kind: PhantomData,
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

/// What an `ExportServer` serves: the service, its one method, and the
/// export of a request's bytes.
pub trait Kind: Send + 'static {
    const NAME: &'static str;
    const PATH: &'static str;
    type Response: prost::Message + Default + Send + 'static;
    fn export(
        app: Arc<App>,
        request: Request<Bytes>,
    ) -> BoxFuture<Response<Self::Response>, Status>;
}

pub struct Traces;
pub struct Metrics;

impl<K: Kind> NamedService for ExportServer<K> {
    const NAME: &'static str = K::NAME;
}

impl<K: Kind, B> Service<http::Request<B>> for ExportServer<K>
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
        if req.uri().path() != K::PATH {
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
        let mut grpc = tonic::server::Grpc::new(RawCodec::<K::Response>(PhantomData))
            .apply_compression_config(self.accept, EnabledCompressionEncodings::default())
            .apply_max_message_size_config(self.max_decoding, None);
        let export = Export::<K>(self.app.clone(), PhantomData);
        Box::pin(async move { Ok(grpc.unary(export, req).await) })
    }
}

/// The export itself: admitted, read, mapped and recorded.
struct Export<K>(Arc<App>, PhantomData<fn() -> K>);

impl<K: Kind> UnaryService<Bytes> for Export<K> {
    type Response = K::Response;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        K::export(self.0.clone(), request)
    }
}

impl Kind for Traces {
    const NAME: &'static str = trace_service_server::SERVICE_NAME;
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    type Response = ExportTraceServiceResponse;

    fn export(
        app: Arc<App>,
        request: Request<Bytes>,
    ) -> BoxFuture<Response<Self::Response>, Status> {
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

impl Kind for Metrics {
    const NAME: &'static str = metrics_service_server::SERVICE_NAME;
    const PATH: &'static str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    type Response = ExportMetricsServiceResponse;

    fn export(
        app: Arc<App>,
        request: Request<Bytes>,
    ) -> BoxFuture<Response<Self::Response>, Status> {
        Box::pin(async move {
            let Some(_admitted) = app.admit(Signal::Points, Transport::Grpc) else {
                return Err(overloaded(&app));
            };
            let (req, _decoding) = app
                .decode_metrics(request.get_ref(), Encoding::Protobuf)
                .await
                .map_err(|e| {
                    let reason = super::otlp_http::refusal_reason(&e);
                    app.refuse_request(Signal::Points, Transport::Grpc, reason);
                    Status::invalid_argument(e.to_string())
                })?;
            let outcome = app.ingest_metrics(
                &req,
                Transport::Grpc,
                system_now(),
                request.extensions().get::<ServiceScope>(),
                Sender::of(
                    request.extensions().get::<TokenSender>().copied(),
                    request.remote_addr().map(|a| a.ip()),
                ),
            );
            Ok(Response::new(check(&app, outcome)?.metrics_response()))
        })
    }
}

/// Requests as their bytes, answers encoded by prost.
struct RawCodec<R>(PhantomData<fn() -> R>);

impl<R: prost::Message + Default + Send + 'static> Codec for RawCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ProstEncoder<R>;
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
