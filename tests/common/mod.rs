//! Test fixtures: a real daemon on loopback port 0, and OTLP builders.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use release_verdict::config::Config;
use release_verdict::server::Server;
use tokio::sync::oneshot;

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

pub fn kv(key: &str, value: &str) -> KeyValue {
    attr(key, Value::StringValue(value.into()))
}

pub fn kv_int(key: &str, value: i64) -> KeyValue {
    attr(key, Value::IntValue(value))
}

fn attr(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Resource attributes of one deployment.
pub fn release_resource(service: &str, env: &str, id: &str, sha: &str) -> Vec<KeyValue> {
    vec![
        kv("service.name", service),
        kv("deployment.environment.name", env),
        kv("deployment.id", id),
        kv("git.sha", sha),
    ]
}

/// A SERVER span lasting `millis`, failed or not.
pub fn server_span(n: u64, millis: u64, failed: bool) -> Span {
    let mut trace_id = [7u8; 16];
    trace_id[..8].copy_from_slice(&(n + 1).to_be_bytes());
    Span {
        trace_id: trace_id.to_vec(),
        span_id: (n + 1).to_be_bytes().to_vec(),
        name: "GET /checkout".into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + millis * 1_000_000,
        status: failed.then(|| Status {
            code: StatusCode::Error as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

/// `n` SERVER spans of one resource, every `error_every`-th failed.
pub fn trace_request(
    resource: Vec<KeyValue>,
    n: u64,
    error_every: u64,
) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| server_span(i, 10 + i % 50, error_every > 0 && i % error_every == 0))
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
