//! OTLP/HTTP receivers: `POST /v1/traces` and `/v1/metrics`, protobuf or
//! JSON, optionally gzip, answered in the request's encoding.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::BodyExt;
use std::net::{IpAddr, SocketAddr};

use axum::extract::connect_info::Connected;
use axum::extract::ConnectInfo;
use axum::serve::IncomingStream;
use axum::Extension;
use tonic::Code;

use crate::app::{App, BodyHold, NoRoom, Sender, ServiceScope, TokenSender};
use crate::clock::system_now;
use crate::ingest::decode::{decompress, encode, weight, DecodeError, Encoding, RpcStatus};
use crate::self_metrics::{Reason, Signal, Transport};

/// gRPC status codes carried in `google.rpc.Status` bodies.
const INVALID_ARGUMENT: i32 = Code::InvalidArgument as i32;
const RESOURCE_EXHAUSTED: i32 = Code::ResourceExhausted as i32;
const UNAVAILABLE: i32 = Code::Unavailable as i32;

/// A connection's remote address, kept by the HTTP server for the
/// bodies' per-peer budget (over TCP or TLS alike).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, super::tls::Incoming>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, super::tls::Incoming>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The peer's address, when the server was asked to keep it.
pub type Peer = Option<Extension<ConnectInfo<PeerAddr>>>;

fn peer_ip(peer: Peer) -> Option<IpAddr> {
    peer.map(|Extension(ConnectInfo(PeerAddr(addr)))| addr.ip())
}

pub async fn traces(
    State(app): State<Arc<App>>,
    peer: Peer,
    scope: Option<Extension<ServiceScope>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let scope = scope.map(|Extension(s)| s);
    let received = receive(&app, peer_ip(peer), &headers, body, Signal::Spans).await;
    let (raw, encoding, _buffered) = match received {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    // Only a fully received body takes an in-flight place.
    let Some(_admitted) = app.admit(Signal::Spans, Transport::Http) else {
        return overloaded(&app, encoding);
    };
    // Walked or read in place (`Mapper::trace_bytes`), never decoded in
    // full; but JSON laid out otherwise than exporters write it is read
    // through a model of its spans (5,000,000 empty ones in 14 MiB took
    // 2.4 GB), so JSON takes room for its weight as metrics do.
    let bytes = match inflate(&app, &headers, &raw) {
        Ok(bytes) => bytes,
        Err(e) => return undecodable(&app, &e, encoding, Signal::Spans),
    };
    let _decoding = match encoding {
        Encoding::Json => match app.decoding_room(weight(&bytes, encoding)).await {
            Ok(room) => Some(room),
            Err(e) => return undecodable(&app, &e, encoding, Signal::Spans),
        },
        Encoding::Protobuf => None,
    };
    let outcome = app.ingest_trace_bytes(
        &bytes,
        encoding,
        Transport::Http,
        system_now(),
        scope.as_ref(),
    );
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return undecodable(&app, &e, encoding, Signal::Spans),
    };
    if outcome.all_invalid {
        return invalid(outcome.message, encoding);
    }
    if outcome.all_full {
        return full(&app, outcome.message, encoding);
    }
    reply(&outcome.trace_response(), encoding)
}

pub async fn metrics(
    State(app): State<Arc<App>>,
    peer: Peer,
    scope: Option<Extension<ServiceScope>>,
    token: Option<Extension<TokenSender>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let scope = scope.map(|Extension(s)| s);
    let peer = peer_ip(peer);
    let sender = Sender::of(token.map(|Extension(t)| t), peer);
    let received = receive(&app, peer, &headers, body, Signal::Points).await;
    let (raw, encoding, _buffered) = match received {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let Some(_admitted) = app.admit(Signal::Points, Transport::Http) else {
        return overloaded(&app, encoding);
    };
    let decoded = match inflate(&app, &headers, &raw) {
        Ok(body) => app.decode_metrics(&body, encoding).await,
        Err(e) => Err(e),
    };
    let (req, _decoding) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => return undecodable(&app, &e, encoding, Signal::Points),
    };
    drop(raw);
    let outcome = app.ingest_metrics(&req, Transport::Http, system_now(), scope.as_ref(), sender);
    if outcome.all_invalid {
        return invalid(outcome.message, encoding);
    }
    if outcome.all_full {
        return full(&app, outcome.message, encoding);
    }
    reply(&outcome.metrics_response(), encoding)
}

/// Why a body could not be received (besides taking longer than
/// `server.body_read_timeout`).
enum Unreceived {
    TooLarge,
    /// `server.max_buffered_bytes` are held by bodies being read, or this
    /// peer's share of them.
    NoRoom(NoRoom),
    /// The connection broke mid-body.
    Broken,
}

/// Reads the raw body in full before anything else is spent on it: its
/// bytes are first taken from the bodies' buffer budget (all at once when
/// it declares its length, else frame by frame), and the whole under
/// `server.body_read_timeout`. Returns the bytes, the
/// request's encoding and the budget held for them.
async fn receive(
    app: &App,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    body: Body,
    signal: Signal,
) -> Result<(Bytes, Encoding, BodyHold), Response> {
    let limit = app.config.server.max_request_bytes;
    let encoding = Encoding::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
    .map_err(|e| {
        app.refuse_request(signal, Transport::Http, Reason::Unsupported);
        error_response(&e, Encoding::Json)
    })?;
    // A body that says its length takes its room at once, in one buffer;
    // one sent in chunks takes it frame by frame.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let read = async {
        let mut body = body;
        let mut buf = BytesMut::new();
        let mut held = app.body_hold(peer);
        let mut full = None;
        let mut seen = 0usize;
        if let Some(length) = declared {
            if length > limit {
                return Err(Unreceived::TooLarge);
            }
            match held.grow(length) {
                Ok(()) => buf.reserve(length),
                Err(why) => full = Some(why),
            }
        }
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(Unreceived::Broken);
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            seen += data.len();
            if seen > limit {
                return Err(Unreceived::TooLarge);
            }
            if full.is_some() {
                continue; // read to the end, so the client reads the answer
            }
            if declared.is_none() {
                if let Err(why) = held.grow(data.len()) {
                    full = Some(why);
                    buf = BytesMut::new();
                    held = app.body_hold(None);
                    continue;
                }
            }
            buf.extend_from_slice(&data);
        }
        if let Some(why) = full {
            return Err(Unreceived::NoRoom(why));
        }
        Ok((buf.freeze(), held))
    };
    let (reason, resp) = match tokio::time::timeout(app.config.server.body_read_timeout, read).await
    {
        Ok(Ok((bytes, held))) => return Ok((bytes, encoding, held)),
        Ok(Err(Unreceived::NoRoom(NoRoom::Full))) => (
            Reason::Overloaded,
            busy(
                app,
                encoding,
                StatusCode::SERVICE_UNAVAILABLE,
                "request bodies being read (server.max_buffered_bytes)",
            ),
        ),
        Ok(Err(Unreceived::NoRoom(NoRoom::PeerShare))) => (
            Reason::Overloaded,
            busy(
                app,
                encoding,
                StatusCode::TOO_MANY_REQUESTS,
                "request bodies being read from this address (server.max_buffered_bytes_per_peer)",
            ),
        ),
        Ok(Err(Unreceived::TooLarge)) => (
            Reason::TooLarge,
            error_response(&DecodeError::TooLarge { limit }, encoding),
        ),
        Ok(Err(Unreceived::Broken)) => (
            Reason::Malformed,
            status(
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                "the body broke off".into(),
                encoding,
            ),
        ),
        Err(_) => (
            Reason::SlowBody,
            status(
                StatusCode::REQUEST_TIMEOUT,
                INVALID_ARGUMENT,
                format!(
                    "the body was not received within {} s (server.body_read_timeout)",
                    app.config.server.body_read_timeout.as_secs_f64()
                ),
                encoding,
            ),
        ),
    };
    app.refuse_request(signal, Transport::Http, reason);
    Err(resp)
}

/// Undoes a received body's `Content-Encoding` under the size cap.
fn inflate<'a>(
    app: &App,
    headers: &HeaderMap,
    raw: &'a [u8],
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    decompress(raw, content_encoding, app.config.server.max_request_bytes)
}

/// The answer to a body that cannot be decoded, counted by its reason.
fn undecodable(app: &App, e: &DecodeError, encoding: Encoding, signal: Signal) -> Response {
    app.refuse_request(signal, Transport::Http, refusal_reason(e));
    error_response(e, encoding)
}

/// How a body that cannot be decoded is counted, on either transport.
pub(super) fn refusal_reason(e: &DecodeError) -> Reason {
    match e {
        DecodeError::TooLarge { .. } | DecodeError::TooHeavy { .. } => Reason::TooLarge,
        DecodeError::MediaType(_) | DecodeError::ContentEncoding(_) => Reason::Unsupported,
        _ => Reason::Malformed,
    }
}

fn reply<M: prost::Message + serde::Serialize>(msg: &M, encoding: Encoding) -> Response {
    (
        [(header::CONTENT_TYPE, encoding.content_type())],
        encode(msg, encoding),
    )
        .into_response()
}

/// An error answer: HTTP status plus a `google.rpc.Status` body.
fn status(http: StatusCode, code: i32, message: String, encoding: Encoding) -> Response {
    let mut resp = reply(&RpcStatus { code, message }, encoding);
    *resp.status_mut() = http;
    resp
}

/// 503 (the daemon is busy) or 429 (this sender is) with Retry-After:
/// answers OTLP/HTTP exporters retry.
fn busy(app: &App, encoding: Encoding, code: StatusCode, what: &str) -> Response {
    let after = app.config.server.overload_retry_after.as_secs().max(1);
    let rpc = if code == StatusCode::TOO_MANY_REQUESTS {
        RESOURCE_EXHAUSTED
    } else {
        UNAVAILABLE
    };
    let mut resp = status(
        code,
        rpc,
        format!("overloaded: too many {what} at once; retry after {after}s"),
        encoding,
    );
    resp.headers_mut().insert(header::RETRY_AFTER, after.into());
    resp
}

/// The answer when every in-flight place is taken (the refusal is counted
/// by `App::admit`).
fn overloaded(app: &App, encoding: Encoding) -> Response {
    busy(
        app,
        encoding,
        StatusCode::SERVICE_UNAVAILABLE,
        &format!(
            "export requests in flight (server.max_inflight_requests = {})",
            app.config.server.max_inflight_requests
        ),
    )
}

/// 503 with Retry-After for a request whose every item was refused for
/// want of room: OTLP exporters retry it later.
fn full(app: &App, message: String, encoding: Encoding) -> Response {
    let after = app.config.server.overload_retry_after.as_secs().max(1);
    let mut resp = status(
        StatusCode::SERVICE_UNAVAILABLE,
        RESOURCE_EXHAUSTED,
        message,
        encoding,
    );
    resp.headers_mut().insert(header::RETRY_AFTER, after.into());
    resp
}

/// 400 for a request whose every item broke the data model.
fn invalid(message: String, encoding: Encoding) -> Response {
    status(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, message, encoding)
}

/// The OTLP/HTTP error answer: status code plus a `google.rpc.Status` body.
pub fn error_response(e: &DecodeError, encoding: Encoding) -> Response {
    let (status, code) = match e {
        DecodeError::TooLarge { .. } | DecodeError::TooHeavy { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, RESOURCE_EXHAUSTED)
        }
        DecodeError::MediaType(_) | DecodeError::ContentEncoding(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, INVALID_ARGUMENT)
        }
        _ => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT),
    };
    self::status(status, code, e.to_string(), encoding)
}
