//! OTLP/HTTP receivers: `POST /v1/traces` and `/v1/metrics`, protobuf or
//! JSON, optionally gzip, answered in the request's encoding.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use tonic::Code;

use crate::app::App;
use crate::clock::system_now;
use crate::ingest::decode::{decode, decompress, encode, DecodeError, Encoding, RpcStatus};
use crate::self_metrics::{Reason, Signal, Transport};

/// gRPC status codes carried in `google.rpc.Status` bodies.
const INVALID_ARGUMENT: i32 = Code::InvalidArgument as i32;
const RESOURCE_EXHAUSTED: i32 = Code::ResourceExhausted as i32;
const UNAVAILABLE: i32 = Code::Unavailable as i32;

pub async fn traces(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let Some(_admitted) = app.admit(Signal::Spans, Transport::Http) else {
        return overloaded(&app, &headers, body).await;
    };
    let (req, encoding) =
        match read::<ExportTraceServiceRequest>(&app, &headers, body, Signal::Spans).await {
            Ok(ok) => ok,
            Err(resp) => return resp,
        };
    let outcome = app.ingest_traces(&req, Transport::Http, system_now());
    if outcome.all_invalid {
        return invalid(outcome.message, encoding);
    }
    reply(&outcome.trace_response(), encoding)
}

pub async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let Some(_admitted) = app.admit(Signal::Points, Transport::Http) else {
        return overloaded(&app, &headers, body).await;
    };
    let (req, encoding) =
        match read::<ExportMetricsServiceRequest>(&app, &headers, body, Signal::Points).await {
            Ok(ok) => ok,
            Err(resp) => return resp,
        };
    let outcome = app.ingest_metrics(&req, Transport::Http, system_now());
    if outcome.all_invalid {
        return invalid(outcome.message, encoding);
    }
    reply(&outcome.metrics_response(), encoding)
}

/// Reads, decompresses and decodes a body, or answers with the error.
async fn read<M>(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    signal: Signal,
) -> Result<(M, Encoding), Response>
where
    M: prost::Message + serde::de::DeserializeOwned + Default,
{
    let header_str = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let limit = app.config.server.max_request_bytes;
    let fail = |e: DecodeError, encoding| {
        let reason = match e {
            DecodeError::TooLarge { .. } => Reason::TooLarge,
            DecodeError::MediaType(_) | DecodeError::ContentEncoding(_) => Reason::Unsupported,
            _ => Reason::Malformed,
        };
        app.refuse_request(signal, Transport::Http, reason);
        error_response(&e, encoding)
    };
    let encoding = Encoding::from_content_type(header_str(header::CONTENT_TYPE))
        .map_err(|e| fail(e, Encoding::Json))?;
    let raw: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| fail(DecodeError::TooLarge { limit }, encoding))?;
    let bytes = decompress(&raw, header_str(header::CONTENT_ENCODING), limit)
        .map_err(|e| fail(e, encoding))?;
    let msg = decode::<M>(&bytes, encoding).map_err(|e| fail(e, encoding))?;
    Ok((msg, encoding))
}

fn reply<M: prost::Message + serde::Serialize>(msg: &M, encoding: Encoding) -> Response {
    (
        [(header::CONTENT_TYPE, encoding.content_type())],
        encode(msg, encoding),
    )
        .into_response()
}

/// 503 with Retry-After: the OTLP/HTTP answer exporters retry. The body is
/// read and dropped frame by frame first (nothing kept), so the client can
/// finish sending and read the answer instead of a broken connection.
async fn overloaded(app: &App, headers: &HeaderMap, body: Body) -> Response {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map(|d| d.len()).unwrap_or(0);
        if seen > app.config.server.max_request_bytes {
            break;
        }
    }
    let encoding = Encoding::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
    .unwrap_or(Encoding::Json);
    let after = app.config.server.overload_retry_after.as_secs().max(1);
    let body = RpcStatus {
        code: UNAVAILABLE,
        message: format!(
            "overloaded: {} export requests in flight; retry after {after}s",
            app.config.server.max_inflight_requests
        ),
    };
    let mut resp = reply(&body, encoding);
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut().insert(header::RETRY_AFTER, after.into());
    resp
}

/// 400 for a request whose every item broke the data model.
fn invalid(message: String, encoding: Encoding) -> Response {
    let mut resp = reply(
        &RpcStatus {
            code: INVALID_ARGUMENT,
            message,
        },
        encoding,
    );
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp
}

/// The OTLP/HTTP error answer: status code plus a `google.rpc.Status` body.
pub fn error_response(e: &DecodeError, encoding: Encoding) -> Response {
    let (status, code) = match e {
        DecodeError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, RESOURCE_EXHAUSTED),
        DecodeError::MediaType(_) | DecodeError::ContentEncoding(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, INVALID_ARGUMENT)
        }
        _ => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT),
    };
    let body = RpcStatus {
        code,
        message: e.to_string(),
    };
    let mut resp = reply(&body, encoding);
    *resp.status_mut() = status;
    resp
}
