//! The daemon under test: a real server on loopback port 0, and the ways
//! to talk to it (OTLP over HTTP and gRPC, the JSON API, `/metrics`). The
//! OTLP messages themselves come from `release_verdict::otlp_kit`.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use release_verdict::config::Config;
use release_verdict::server::Server;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub mod postgres;

/// A running daemon; dropped, it is told to shut down.
pub struct TestServer {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_config(Config::default()).await
    }

    pub async fn with_config(config: Config) -> Self {
        let me = Self::spawn(config).await;
        me.wait_ready().await;
        me
    }

    /// A daemon with `[server.tls]` set: its HTTP port speaks HTTPS only,
    /// so readiness is read from the daemon itself.
    pub async fn with_tls(config: Config) -> Self {
        assert!(config.server.tls.enabled());
        Self::spawn(config).await
    }

    async fn spawn(mut config: Config) -> Self {
        // Tests run side by side: a ledger file is opt-in (set its path).
        if config.ledger.path == Config::default().ledger.path {
            config.ledger.path = ":memory:".into();
        }
        config.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
        config.server.http_listen = "127.0.0.1:0".parse().unwrap();
        let server = Server::bind(config).await.expect("bind");
        let (grpc, http) = (server.grpc_addr(), server.http_addr());
        let app = server.app();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("server ran");
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !app.is_ready() {
            assert!(Instant::now() < deadline, "server never became ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            grpc,
            http,
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = reqwest::get(self.url("/readyz")).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A gRPC channel to the daemon.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.grpc_url())
            .expect("a gRPC URL")
            .connect()
            .await
            .expect("gRPC connect")
    }

    /// An OTLP trace client over gRPC.
    pub async fn trace_client(&self) -> TraceServiceClient<Channel> {
        TraceServiceClient::new(self.channel().await)
    }

    /// An OTLP metrics client over gRPC.
    pub async fn metrics_client(&self) -> MetricsServiceClient<Channel> {
        MetricsServiceClient::new(self.channel().await)
    }

    /// POSTs `body` to `path` with these headers, on a new connection.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut req = reqwest::Client::new().post(self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POSTs an OTLP/HTTP protobuf trace export.
    pub async fn post_traces(&self, req: &ExportTraceServiceRequest) -> reqwest::Response {
        post_protobuf(&reqwest::Client::new(), &self.url("/v1/traces"), req).await
    }

    /// POSTs an OTLP/HTTP protobuf metrics export.
    pub async fn post_metrics(&self, req: &ExportMetricsServiceRequest) -> reqwest::Response {
        post_protobuf(&reqwest::Client::new(), &self.url("/v1/metrics"), req).await
    }

    /// A trace export over HTTP that must be answered 200, and its answer.
    pub async fn export_traces(
        &self,
        req: &ExportTraceServiceRequest,
    ) -> ExportTraceServiceResponse {
        self.export("/v1/traces", req).await
    }

    /// A metrics export over HTTP that must be answered 200, and its answer.
    pub async fn export_metrics(
        &self,
        req: &ExportMetricsServiceRequest,
    ) -> ExportMetricsServiceResponse {
        self.export("/v1/metrics", req).await
    }

    /// An OTLP/HTTP protobuf export to `path` that must be answered 200,
    /// and its answer.
    async fn export<A: Message + Default>(&self, path: &str, req: &impl Message) -> A {
        let resp = post_protobuf(&reqwest::Client::new(), &self.url(path), req).await;
        assert_eq!(resp.status(), 200, "POST {path}");
        A::decode(resp.bytes().await.expect("a body")).expect("an OTLP answer")
    }

    /// GET a JSON document, with its status.
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = reqwest::get(self.url(path)).await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON body"))
    }

    /// The `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Requests counted across the releases `GET /api/v1/releases?{query}` lists.
    pub async fn counted_requests(&self, query: &str) -> u64 {
        let (_, list) = self.get_json(&format!("/api/v1/releases?{query}")).await;
        list["releases"]
            .as_array()
            .expect("a release list")
            .iter()
            .map(|v| v["canary"]["requests"].as_u64().expect("a count"))
            .sum()
    }

    /// Polls the release until `pred` holds, or panics with the last answer.
    pub async fn wait_for_release(
        &self,
        id: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_for_release_within(id, Duration::from_secs(2), pred)
            .await
    }

    /// As `wait_for_release`, with a deadline of `within`.
    pub async fn wait_for_release_within(
        &self,
        id: &str,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        let path = format!("/api/v1/releases/{}", encode_segment(id));
        loop {
            let (status, body) = self.get_json(&path).await;
            if status == 200 && pred(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "release {id} never matched; last: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shuts down and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.expect("server task");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The content type of OTLP/HTTP protobuf.
pub const PROTOBUF: &str = "application/x-protobuf";

/// POSTs an OTLP message as protobuf to `url` with `client` (one that
/// keeps its connection, or one outside a `TestServer`'s reach).
pub async fn post_protobuf(
    client: &reqwest::Client,
    url: &str,
    message: &impl Message,
) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", PROTOBUF)
        .body(message.encode_to_vec())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// Now, in Unix nanoseconds: points dated near the daemon's clock.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
}

/// Percent-encodes one path segment.
pub fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
