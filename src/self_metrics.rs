//! The daemon's own counters: what it accepted, refused and ignored, by
//! signal, transport and reason. Encoded with the rest of `/metrics`. Every
//! counter whose labels are known in advance is present at zero from the
//! start (a family shows a label set only once it is touched, and a series
//! that appears only after the first problem is one nobody alerts on).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Signal {
    Spans,
    Points,
}

impl Signal {
    pub const ALL: [Signal; 2] = [Signal::Spans, Signal::Points];

    /// `spans` or `points`, as the label says.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Spans => "spans",
            Signal::Points => "points",
        }
    }
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
    Replay,
}

impl Transport {
    /// The daemon's two ports (replay's counters appear when it runs).
    pub const SERVED: [Transport; 2] = [Transport::Grpc, Transport::Http];
}

/// Why items or whole requests were refused.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Reason {
    /// Broke the OTLP data model or our identity limits.
    Invalid,
    /// Belonged to a new release while the release table was full.
    ReleaseLimit,
    /// Claimed a `deployment.role` its deployment did not first declare.
    RoleConflict,
    /// A new cumulative stream while the stream table, or its resource's
    /// quota of it, was full.
    StreamLimit,
    /// Could not be decoded.
    Malformed,
    /// Over the request size limit.
    TooLarge,
    /// Content type or encoding not supported.
    Unsupported,
    /// Refused for overload, with an answer the client retries.
    Overloaded,
    /// The body was not sent within `server.body_read_timeout`.
    SlowBody,
    /// No valid ingest token (`[auth] ingest_tokens_file`).
    Unauthenticated,
    /// A service the ingest token may not speak for (`service=` in the
    /// tokens file).
    OutOfScope,
}

impl Reason {
    /// Why single items are refused (OTLP partial success).
    pub const ITEMS: [Reason; 5] = [
        Reason::Invalid,
        Reason::ReleaseLimit,
        Reason::RoleConflict,
        Reason::StreamLimit,
        Reason::OutOfScope,
    ];
    /// Why whole export requests are refused.
    pub const REQUESTS: [Reason; 6] = [
        Reason::Malformed,
        Reason::TooLarge,
        Reason::Unsupported,
        Reason::Overloaded,
        Reason::SlowBody,
        Reason::Unauthenticated,
    ];
}

/// Label values in snake case, as Prometheus users expect.
macro_rules! label_values {
    ($($ty:ty { $($variant:ident => $text:literal),* $(,)? })*) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                let text = match self { $(Self::$variant => $text),* };
                EncodeLabelValue::encode(&text, encoder)
            }
        }
    )*};
}

/// How a reload of the TLS files or the token files went.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ReloadResult {
    Ok,
    Error,
}

/// Why a verdict stream (SSE or gRPC watch) was cut off.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum StreamDrop {
    /// More verdict changes came than the change buffer holds while the
    /// client was not reading them.
    Lagged,
    /// The client had not taken its snapshot of every release within
    /// `server.stream_snapshot_timeout`.
    Stalled,
}

impl StreamDrop {
    pub const ALL: [StreamDrop; 2] = [StreamDrop::Lagged, StreamDrop::Stalled];
}

/// What became of one try of a notification.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum SinkResult {
    Delivered,
    Retried,
    Dead,
}

label_values! {
    StreamDrop { Lagged => "lagged", Stalled => "stalled" }
    SinkResult { Delivered => "delivered", Retried => "retried", Dead => "dead" }
    ReloadResult { Ok => "ok", Error => "error" }
    Signal { Spans => "spans", Points => "points" }
    Transport { Grpc => "grpc", Http => "http", Replay => "replay" }
    Reason {
        Invalid => "invalid",
        ReleaseLimit => "release_limit",
        RoleConflict => "role_conflict",
        StreamLimit => "stream_limit",
        Malformed => "malformed",
        TooLarge => "too_large",
        Unsupported => "unsupported",
        Overloaded => "overloaded",
        SlowBody => "slow_body",
        Unauthenticated => "unauthenticated",
        OutOfScope => "out_of_scope",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    pub signal: Signal,
    pub transport: Transport,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub signal: Signal,
    pub transport: Transport,
    pub reason: Reason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamDropLabels {
    pub reason: StreamDrop,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkResultLabels {
    pub sink: String,
    pub result: SinkResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: ReloadResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    pub signal: Signal,
}

/// A metric name, for the ignored-metrics counter (a bounded set of names,
/// the rest as `other`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricLabels {
    pub metric: String,
}

/// Counters and gauges, registered once.
#[derive(Debug)]
pub struct SelfMetrics {
    pub evaluation_seconds: Histogram,
    pub accepted: Family<ItemLabels, Counter>,
    pub refused: Family<RefusedLabels, Counter>,
    pub requests_refused: Family<RefusedLabels, Counter>,
    pub unattributed: Family<SignalLabels, Counter>,
    pub releases_tracked: Gauge,
    /// Bytes of OTLP/HTTP bodies being read, set at each scrape.
    pub body_bytes_buffered: Gauge,
    pub releases_refused: Counter,
    pub releases_expired: Counter,
    pub releases_evicted: Counter,
    pub metric_points_ignored: Family<MetricLabels, Counter>,
    /// The ledger's counters, copied from it at each scrape.
    pub ledger_written: Gauge,
    pub ledger_dropped: Gauge,
    pub ledger_write_errors: Gauge,
    pub ledger_degraded: Gauge,
    /// Events evicted by the size cap, by source (api, daemon, inferred).
    pub ledger_evicted: Family<SourceLabels, Gauge>,
    pub ledger_refused: Gauge,
    /// When the judge's state was last checkpointed, Unix seconds.
    pub checkpoint_written: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Reloads of the TLS files, by outcome.
    pub tls_reloads: Family<ReloadLabels, Counter>,
    /// Reloads of the `[auth]` token files, by outcome.
    pub token_reloads: Family<ReloadLabels, Counter>,
    /// Notification tries by sink and outcome.
    pub notify_sent: Family<SinkResultLabels, Counter>,
    /// Notifications waiting in the outbox, by sink.
    pub notify_pending: Family<SinkLabels, Gauge>,
    /// Notifications given up on (dead-lettered), by sink.
    pub notify_dead: Family<SinkLabels, Gauge>,
    /// HTTP/1.x requests on the gRPC port (an OTLP/HTTP exporter pointed
    /// at the gRPC port), answered with the port to use.
    pub grpc_port_http1: Counter,
    /// Verdict streams (SSE and gRPC watch) open now.
    pub streams_open: Gauge,
    /// Verdict streams refused at `server.max_streams`.
    pub streams_refused: Counter,
    /// Verdict streams cut off for falling behind, by why.
    pub streams_dropped: Family<StreamDropLabels, Counter>,
    /// Bytes of the snapshots verdict streams hold now.
    pub stream_snapshot_bytes: Gauge,
}

impl Default for SelfMetrics {
    fn default() -> Self {
        Self {
            evaluation_seconds: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            accepted: Family::default(),
            refused: Family::default(),
            requests_refused: Family::default(),
            unattributed: Family::default(),
            releases_tracked: Gauge::default(),
            body_bytes_buffered: Gauge::default(),
            releases_refused: Counter::default(),
            releases_expired: Counter::default(),
            releases_evicted: Counter::default(),
            metric_points_ignored: Family::default(),
            ledger_written: Gauge::default(),
            ledger_dropped: Gauge::default(),
            ledger_write_errors: Gauge::default(),
            ledger_degraded: Gauge::default(),
            ledger_evicted: Family::default(),
            ledger_refused: Gauge::default(),
            checkpoint_written: Gauge::default(),
            tls_reloads: Family::default(),
            token_reloads: Family::default(),
            notify_sent: Family::default(),
            notify_pending: Family::default(),
            notify_dead: Family::default(),
            grpc_port_http1: Counter::default(),
            streams_open: Gauge::default(),
            streams_refused: Counter::default(),
            streams_dropped: Family::default(),
            stream_snapshot_bytes: Gauge::default(),
        }
        .at_zero()
    }
}

impl SelfMetrics {
    /// Touches every label set known in advance, so each counter is on
    /// `/metrics` at zero before anything happens. Families keyed by what
    /// the outside names (metric names, sinks) appear as they are used.
    fn at_zero(self) -> Self {
        for signal in Signal::ALL {
            let _ = self.unattributed.get_or_create(&SignalLabels { signal });
            for transport in Transport::SERVED {
                let _ = self
                    .accepted
                    .get_or_create(&ItemLabels { signal, transport });
                for reason in Reason::ITEMS {
                    let _ = self.refused.get_or_create(&RefusedLabels {
                        signal,
                        transport,
                        reason,
                    });
                }
                for reason in Reason::REQUESTS {
                    let _ = self.requests_refused.get_or_create(&RefusedLabels {
                        signal,
                        transport,
                        reason,
                    });
                }
            }
        }
        for result in [ReloadResult::Ok, ReloadResult::Error] {
            let _ = self.tls_reloads.get_or_create(&ReloadLabels { result });
            let _ = self.token_reloads.get_or_create(&ReloadLabels { result });
        }
        for reason in StreamDrop::ALL {
            let _ = self
                .streams_dropped
                .get_or_create(&StreamDropLabels { reason });
        }
        self
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "release_verdict_evaluation_duration_seconds",
            "Time to judge every release once (one tick)",
            self.evaluation_seconds.clone(),
        );
        registry.register(
            "release_verdict_items_accepted",
            "Spans or data points accepted (recorded, ignored as non-request, or unattributed)",
            self.accepted.clone(),
        );
        registry.register(
            "release_verdict_items_refused",
            "Spans or data points refused through OTLP partial success",
            self.refused.clone(),
        );
        registry.register(
            "release_verdict_export_requests_refused",
            "Whole export requests refused (malformed, too large, unsupported)",
            self.requests_refused.clone(),
        );
        registry.register(
            "release_verdict_items_unattributed",
            "Accepted spans or data points without a release id (ignored)",
            self.unattributed.clone(),
        );
        registry.register(
            "release_verdict_releases_tracked",
            "Releases currently tracked",
            self.releases_tracked.clone(),
        );
        registry.register(
            "release_verdict_request_body_bytes_buffered",
            "Bytes of OTLP/HTTP request bodies being read (at most server.max_buffered_bytes; past it bodies are refused with 503)",
            self.body_bytes_buffered.clone(),
        );
        registry.register(
            "release_verdict_releases_refused",
            "New releases refused because the release table was full",
            self.releases_refused.clone(),
        );
        registry.register(
            "release_verdict_metric_points_ignored",
            "Data points of metrics nothing reads (not a request-duration histogram in [ingest] duration_metrics, nor a [[checks.metric]]), by metric name",
            self.metric_points_ignored.clone(),
        );
        registry.register(
            "release_verdict_ledger_events_written",
            "Events and release records committed to the ledger since start",
            self.ledger_written.clone(),
        );
        registry.register(
            "release_verdict_ledger_writes_dropped",
            "Ledger writes dropped since start because its queue was full",
            self.ledger_dropped.clone(),
        );
        registry.register(
            "release_verdict_ledger_write_errors",
            "Ledger writes lost to database errors since start",
            self.ledger_write_errors.clone(),
        );
        registry.register(
            "release_verdict_ledger_degraded",
            "1 while the ledger's last write failed (the daemon goes on in memory)",
            self.ledger_degraded.clone(),
        );
        registry.register(
            "release_verdict_ledger_events_evicted",
            "Events evicted since start to keep the ledger under [ledger] max_bytes, by source (posted api events go first)",
            self.ledger_evicted.clone(),
        );
        registry.register(
            "release_verdict_ledger_posted_events_refused",
            "Posted events refused since start (507) because the ledger was at its cap with no older posted events left to evict",
            self.ledger_refused.clone(),
        );
        registry.register(
            "release_verdict_checkpoint_timestamp_seconds",
            "When the judge's state was last checkpointed into the ledger",
            self.checkpoint_written.clone(),
        );
        registry.register(
            "release_verdict_tls_reloads",
            "Reloads of the [server.tls] files (on change or SIGHUP), by result; on error the previous certificates stay in force",
            self.tls_reloads.clone(),
        );
        registry.register(
            "release_verdict_token_reloads",
            "Reloads of the [auth] token files (on change or SIGHUP), by result; on error the previous tokens stay in force",
            self.token_reloads.clone(),
        );
        registry.register(
            "release_verdict_notifications",
            "Notification tries by sink and result: delivered, retried (will be tried again), dead (given up)",
            self.notify_sent.clone(),
        );
        registry.register(
            "release_verdict_notifications_pending",
            "Notifications in the outbox waiting to be delivered, by sink",
            self.notify_pending.clone(),
        );
        registry.register(
            "release_verdict_notifications_dead",
            "Notifications dead-lettered (out of tries or refused for good), by sink; see the deliveries table",
            self.notify_dead.clone(),
        );
        registry.register(
            "release_verdict_grpc_port_http1_requests",
            "HTTP/1.x requests on the OTLP/gRPC port, answered 400 with the OTLP/HTTP port to use (an exporter with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf pointed at the gRPC port)",
            self.grpc_port_http1.clone(),
        );
        registry.register(
            "release_verdict_streams_open",
            "Verdict streams open now: server-sent events (/api/v1/releases/stream) and gRPC WatchVerdicts, at most server.max_streams",
            self.streams_open.clone(),
        );
        registry.register(
            "release_verdict_streams_refused",
            "Verdict streams refused because server.max_streams were open (HTTP 503 / gRPC UNAVAILABLE, with a time to retry)",
            self.streams_refused.clone(),
        );
        registry.register(
            "release_verdict_streams_dropped",
            "Verdict streams cut off for falling behind: lagged (more changes than the buffer holds went unread), stalled (the snapshot not taken within server.stream_snapshot_timeout); clients reconnect and get a fresh snapshot",
            self.streams_dropped.clone(),
        );
        registry.register(
            "release_verdict_stream_snapshot_bytes",
            "Bytes of the snapshots of every release that verdict streams hold now, at most about server.max_stream_snapshot_bytes plus one snapshot",
            self.stream_snapshot_bytes.clone(),
        );
        registry.register(
            "release_verdict_releases_expired",
            "Releases forgotten after being idle",
            self.releases_expired.clone(),
        );
        registry.register(
            "release_verdict_releases_evicted",
            "Releases forgotten at limits.max_releases to make room for a new one: junk (at most 10 requests, no baseline), idle 60 s, or any junk for a release its service's baseline would judge",
            self.releases_evicted.clone(),
        );
    }
}
