//! Trace exports that are not protobuf, sent over the real gRPC and HTTP
//! ports: the walker refuses them with INVALID_ARGUMENT / 400 and a message
//! naming the field, counts them, and the daemon keeps serving.

use crate::common::*;
use bytes::{Buf, BufMut};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use release_verdict::otlp_kit::{release_resource, server_span, trace_request};
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// Sends whatever bytes it is given as the request message.
#[derive(Clone, Default)]
struct RawBytes;

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<ExportTraceServiceResponse>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

async fn send_raw(
    server: &TestServer,
    bytes: Vec<u8>,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(tonic::Request::new(bytes), path, RawBytes)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn grpc_bytes_that_are_not_a_trace_export_are_invalid_argument() {
    let server = TestServer::start().await;
    // A span whose name is not UTF-8, and a message cut short.
    let mut span = server_span(1, 5, false).encode_to_vec();
    span.extend([0x2a, 0x02, 0xc3, 0x28]);
    let scope = [vec![0x12, span.len() as u8], span].concat();
    let rs = [vec![0x12, scope.len() as u8], scope].concat();
    let bad = [vec![0x0a, rs.len() as u8], rs].concat();
    let err = send_raw(&server, bad.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("resource_spans[0].scope_spans[0].spans[0].name: invalid string value"),
        "{}",
        err.message()
    );
    let err = send_raw(&server, bad[..bad.len() / 2].to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("invalid protobuf: "),
        "{}",
        err.message()
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("release_verdict_export_requests_refused_total")
                && l.contains("transport=\"grpc\"")
                && l.contains("reason=\"malformed\"")
                && l.ends_with(" 2")
        ),
        "{metrics}"
    );
    // Still serving: a good export after the bad ones is counted in full.
    let mut client = server.trace_client().await;
    client
        .export(trace_request(release_resource("a", "b", "c", "d"), 3, 0))
        .await
        .unwrap();
    server
        .wait_for_release("c", |v| v["canary"]["requests"] == 3)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn http_protobuf_that_is_not_a_trace_export_is_400() {
    let server = TestServer::start().await;
    let resp = server
        .post(
            "/v1/traces",
            &[("content-type", PROTOBUF)],
            vec![0x0a, 0x05, 0x12, 0x03, 0x0a],
        )
        .await;
    assert_eq!(resp.status().as_u16(), 400);
    let body = resp.bytes().await.unwrap();
    let status = release_verdict::RpcStatus::decode(body.chunk()).unwrap();
    assert_eq!(status.code, 3);
    assert!(
        status.message.starts_with("invalid protobuf: "),
        "{}",
        status.message
    );
    server.stop().await;
}
