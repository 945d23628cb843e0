//! `[server]` and `[server.tls]`: listen addresses, request limits,
//! overload answers, shutdown, and TLS on both ports.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Listen addresses, request limits and shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// OTLP/gRPC (and, later, the verdict gRPC service). Port 0 picks a free port.
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP, the JSON API, health and metrics. Port 0 picks a free port.
    pub http_listen: SocketAddr,
    /// Largest accepted request, measured after decompression, in bytes.
    pub max_request_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Export requests processed at once; beyond it, requests are refused
    /// with an answer OTLP clients retry (gRPC UNAVAILABLE, HTTP 503 with
    /// Retry-After), so memory stays bounded under overload.
    pub max_inflight_requests: usize,
    /// What clients are told to wait before retrying an overload refusal.
    #[serde(with = "humantime_serde")]
    pub overload_retry_after: Duration,
    /// OTLP/HTTP bodies are read in full before an in-flight place is
    /// taken; one that takes longer is refused (408), so slow senders cost
    /// a connection, never the places of others.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Bytes of OTLP request bodies (HTTP bodies, gRPC messages) held
    /// while they are read; past it a body is refused with an answer
    /// clients retry (HTTP 503, gRPC RESOURCE_EXHAUSTED). At least
    /// `max_request_bytes`.
    pub max_buffered_bytes: usize,
    /// Of those, the most one peer (an IP address) holds at once, so one
    /// sender's unfinished bodies never take the room of the others. At
    /// least `max_request_bytes`; above `max_buffered_bytes` it is that.
    pub max_buffered_bytes_per_peer: usize,
    /// Memory OTLP requests may take while decoded, all together, as
    /// `ingest::decode::weight` reckons it from their bytes (a few bytes
    /// of wire can become a struct of a few hundred): metrics requests
    /// and OTLP/JSON trace requests (protobuf spans are walked in place).
    /// A request waits for room, and one heavier than all of it is
    /// refused (HTTP 413, gRPC INVALID_ARGUMENT). At least
    /// `max_request_bytes`.
    pub max_decoding_bytes: usize,
    /// gRPC streams one HTTP/2 connection may have open at once (the
    /// SETTINGS_MAX_CONCURRENT_STREAMS the server announces).
    pub grpc_max_concurrent_streams: u32,
    /// Verdict streams open at once, server-sent events and gRPC watches
    /// together; beyond it a stream is refused with an answer clients
    /// retry (HTTP 503 with Retry-After, gRPC UNAVAILABLE with RetryInfo).
    pub max_streams: usize,
    /// A stream that has not taken its snapshot of every release in this
    /// time is cut off and its snapshot let go, so a client that stops
    /// reading holds no memory; it reconnects for a fresh one.
    #[serde(with = "humantime_serde")]
    pub stream_snapshot_timeout: Duration,
    /// Bytes of snapshots the verdict streams may hold at once: past it, a
    /// new stream waits for its snapshot until the streams let an older
    /// one go (one snapshot is always built, whatever its size).
    pub max_stream_snapshot_bytes: u64,
    /// TLS on both ports (off while `cert_file` is empty).
    pub tls: TlsConfig,
}

/// TLS on both ports, with rustls. The files are PEM; they are read again
/// when they change (looked at every `reload_interval`) or on SIGHUP, so a
/// renewed certificate needs no restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain, leaf first. Empty: plain TCP.
    pub cert_file: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// CA certificates for mutual TLS: when set, every client must present a
    /// certificate signed by one of them.
    pub client_ca_file: String,
    /// How often the files are looked at for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// A TLS handshake not finished in this time costs its connection.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            reload_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 4317)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 4318)),
            max_request_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            max_inflight_requests: 64,
            overload_retry_after: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(10),
            max_buffered_bytes: 256 * 1024 * 1024,
            max_buffered_bytes_per_peer: 64 * 1024 * 1024,
            max_decoding_bytes: 256 * 1024 * 1024,
            grpc_max_concurrent_streams: 100,
            max_streams: 1000,
            stream_snapshot_timeout: Duration::from_secs(30),
            max_stream_snapshot_bytes: 64 << 20,
            tls: TlsConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Adds every problem to `problems`.
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if self.max_buffered_bytes < self.max_request_bytes
            || self.max_buffered_bytes > u32::MAX as usize
        {
            problems.push(format!(
                "server.max_buffered_bytes must be between server.max_request_bytes ({}) and 4 GiB",
                self.max_request_bytes
            ));
        }
        if self.max_buffered_bytes_per_peer < self.max_request_bytes {
            problems.push(format!(
                "server.max_buffered_bytes_per_peer must be at least server.max_request_bytes ({})",
                self.max_request_bytes
            ));
        }
        if self.max_decoding_bytes < self.max_request_bytes
            || self.max_decoding_bytes > (u32::MAX as usize) << 10
        {
            problems.push(format!(
                "server.max_decoding_bytes must be between server.max_request_bytes ({}) and 4 TiB",
                self.max_request_bytes
            ));
        }
        if self.grpc_max_concurrent_streams == 0 {
            problems.push("server.grpc_max_concurrent_streams must be at least 1".to_string());
        }
        self.tls.validate(problems);
        if self.body_read_timeout < Duration::from_millis(100) {
            problems.push("server.body_read_timeout must be at least 100ms".to_string());
        }
        if self.max_inflight_requests == 0 {
            problems.push("server.max_inflight_requests must be at least 1".to_string());
        }
        if self.max_streams == 0 || self.max_streams > 100_000 {
            problems.push("server.max_streams must be between 1 and 100000".to_string());
        }
        if self.max_stream_snapshot_bytes < 1 << 20 {
            problems.push("server.max_stream_snapshot_bytes must be at least 1048576".to_string());
        }
        if self.stream_snapshot_timeout < Duration::from_millis(100) {
            problems.push("server.stream_snapshot_timeout must be at least 100ms".to_string());
        }
        if self.max_request_bytes < 1024 {
            problems.push("server.max_request_bytes must be at least 1024".to_string());
        }
    }
}

impl TlsConfig {
    /// Adds every problem to `problems`.
    fn validate(&self, problems: &mut Vec<String>) {
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            problems.push("server.tls: cert_file and key_file go together".to_string());
        }
        if !self.client_ca_file.is_empty() && !self.enabled() {
            problems.push("server.tls.client_ca_file needs cert_file and key_file".to_string());
        }
        if self.reload_interval < Duration::from_millis(100) {
            problems.push("server.tls.reload_interval must be at least 100ms".to_string());
        }
        if self.handshake_timeout < Duration::from_millis(100) {
            problems.push("server.tls.handshake_timeout must be at least 100ms".to_string());
        }
    }
}
