//! OTLP/gRPC export messages received like OTLP/HTTP bodies: in full
//! before a service sees them, the room of the whole message taken from
//! the shared budget of bodies being read (`App::body_hold`: in all and
//! per peer) as soon as its 5-byte prefix declares its length, the whole
//! under `server.body_read_timeout`. A message declaring more than
//! `server.max_request_bytes` is refused from its prefix. Without this, tonic buffers every stream's
//! partial message for as long as the peer keeps the stream open.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::transport::server::TcpConnectInfo;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::app::{App, BodyHold, NoRoom};
use crate::self_metrics::{Reason, Signal, Transport};

const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
/// A gRPC message's prefix: the compressed flag and the length, big-endian.
const PREFIX: usize = 5;

/// The layer, innermost of the gRPC server's (after authentication, so an
/// unauthenticated stream never holds budget).
#[derive(Clone)]
pub struct MessageBudget {
    pub app: Arc<App>,
}

impl<S> tower::Layer<S> for MessageBudget {
    type Service = Budgeted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budgeted {
            inner,
            app: self.app.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Budgeted<S> {
    inner: S,
    app: Arc<App>,
}

impl<S> Service<http::Request<Body>> for Budgeted<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let signal = match req.uri().path() {
            TRACES => Signal::Spans,
            METRICS => Signal::Points,
            _ => return Box::pin(self.inner.call(req)),
        };
        // The service polled ready is the one that serves this request.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let app = self.app.clone();
        Box::pin(async move {
            let peer = req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
                .map(|addr| addr.ip());
            let (parts, body) = req.into_parts();
            match receive(&app, peer, body).await {
                Ok((message, hold)) => {
                    let req = http::Request::from_parts(
                        parts,
                        Body::new(http_body_util::Full::new(message)),
                    );
                    let answer = inner.call(req).await;
                    // Unary: the export was processed by now.
                    drop(hold);
                    answer
                }
                Err((reason, status)) => {
                    app.refuse_request(signal, Transport::Grpc, reason);
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// Reads one request's message in full under the budget and the deadline.
/// The budget is taken for the whole message as soon as its prefix says
/// how long it is (the room it will need), and the buffer allocated once.
async fn receive(
    app: &App,
    peer: Option<IpAddr>,
    body: Body,
) -> Result<(Bytes, BodyHold), (Reason, Status)> {
    let limit = app.config.server.max_request_bytes;
    let read = async {
        let mut body = body;
        let mut buf = BytesMut::new();
        let mut hold = app.body_hold(peer);
        let mut whole = None;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err((
                    Reason::Malformed,
                    Status::invalid_argument("the message broke off"),
                ));
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let Some(whole) = whole else {
                // The prefix: at most 5 bytes held before the length is known.
                let take = (PREFIX - buf.len()).min(data.len());
                buf.extend_from_slice(&data[..take]);
                if buf.len() < PREFIX {
                    continue;
                }
                let declared = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if declared > limit {
                    return Err(too_large(limit));
                }
                hold.grow(PREFIX + declared)
                    .map_err(|why| no_room(app, why))?;
                let mut message = BytesMut::with_capacity(PREFIX + declared);
                message.extend_from_slice(&buf);
                buf = message;
                whole = Some(PREFIX + declared);
                if !add(&mut buf, &data[take..], PREFIX + declared) {
                    return Err(overrun());
                }
                continue;
            };
            if !add(&mut buf, &data, whole) {
                return Err(overrun());
            }
        }
        Ok((buf.freeze(), hold))
    };
    match tokio::time::timeout(app.config.server.body_read_timeout, read).await {
        Ok(received) => received,
        Err(_) => Err((
            Reason::SlowBody,
            Status::deadline_exceeded(format!(
                "the message was not received within {} s (server.body_read_timeout)",
                app.config.server.body_read_timeout.as_secs_f64()
            )),
        )),
    }
}

/// Appends `data` unless that makes the request longer than `whole`.
fn add(buf: &mut BytesMut, data: &[u8], whole: usize) -> bool {
    if buf.len() + data.len() > whole {
        return false;
    }
    buf.extend_from_slice(data);
    true
}

/// A unary request is one message: bytes past it are not OTLP.
fn overrun() -> (Reason, Status) {
    (
        Reason::Malformed,
        Status::invalid_argument("the request carries more bytes than its one message declared"),
    )
}

/// Not retried: the same message would be refused again.
fn too_large(limit: usize) -> (Reason, Status) {
    (
        Reason::TooLarge,
        Status::resource_exhausted(format!(
            "the message is larger than {limit} bytes (server.max_request_bytes)"
        )),
    )
}

/// RESOURCE_EXHAUSTED with RetryInfo, which OTLP exporters retry.
fn no_room(app: &App, why: NoRoom) -> (Reason, Status) {
    let what = match why {
        NoRoom::Full => "request bodies being read (server.max_buffered_bytes)",
        NoRoom::PeerShare => {
            "request bodies being read from this address (server.max_buffered_bytes_per_peer)"
        }
    };
    let after = app.config.server.overload_retry_after;
    let status = Status::with_error_details(
        Code::ResourceExhausted,
        format!("overloaded: too many {what} at once; retry after {after:?}"),
        ErrorDetails::with_retry_info(Some(after)),
    );
    (Reason::Overloaded, status)
}
