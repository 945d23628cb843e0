//! The way in, under the locks: a mapped export applied to the store, and
//! everything it came to counted (accepted, refused and why,
//! unattributed, metrics nothing reads) into the OTLP answer.

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use std::sync::Arc;

use super::senders::Arrived;
use super::{lock, App};
use crate::ingest::decode::{DecodeError, Encoding};
use crate::model::{Batch, UnixNanos};
use crate::self_metrics::{
    ItemLabels, MetricLabels, Reason, RefusedLabels, Signal, SignalLabels, Transport,
};

/// Metric names the ignored-metrics counter and log name one by one; the
/// rest are counted as `other`, so senders cannot grow the label set.
const IGNORED_METRIC_NAMES: usize = 16;

/// Which ingest token an export came with (a key derived from it, never
/// the token itself), put on the request by the auth layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenSender(pub u64);

/// Who sends an export, for the per-sender quota of cumulative streams:
/// its ingest token when tokens are on, so exporters behind one address
/// (a collector, a NAT) each with its own token each have their own share,
/// and one token spread over many addresses has one; else its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sender {
    Token(TokenSender),
    Address(std::net::IpAddr),
    /// Neither is known (a replay): one shared quota.
    Unknown,
}

impl Sender {
    pub fn of(token: Option<TokenSender>, peer: Option<std::net::IpAddr>) -> Self {
        match (token, peer) {
            (Some(t), _) => Sender::Token(t),
            (None, Some(ip)) => Sender::Address(ip),
            (None, None) => Sender::Unknown,
        }
    }

    /// The key its streams are counted under (0 for `Unknown`).
    fn key(self) -> u64 {
        use std::hash::{Hash, Hasher};
        if self == Sender::Unknown {
            return 0;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// The services an ingest token may speak for (`TOKEN service=a,b` in the
/// tokens file): telemetry of any other service is refused, counted
/// (`reason="out_of_scope"`) and named in the partial success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceScope(pub Arc<[String]>);

impl ServiceScope {
    fn admits(&self, service: &str) -> bool {
        self.0.iter().any(|s| s == service)
    }

    /// Drops the groups of services out of scope: their items and the
    /// first such service.
    fn keep_in(&self, batch: &mut Batch<'_>) -> (u64, Option<String>) {
        let (mut refused, mut first) = (0, None);
        batch.groups.retain(|g| {
            let admitted = self.admits(g.release.service);
            if !admitted {
                refused += g.items;
                first.get_or_insert_with(|| g.release.service.to_string());
            }
            admitted
        });
        (refused, first)
    }
}

/// What an export request came to, for its OTLP response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Items refused (`rejected_spans` / `rejected_data_points`).
    pub rejected: u64,
    /// Why, when anything was refused.
    pub message: String,
    /// Every item was invalid: the request as a whole is bad input
    /// (HTTP 400 / INVALID_ARGUMENT rather than a partial success).
    pub all_invalid: bool,
    /// Every item was refused because a table was full: answered with a
    /// code OTLP clients retry.
    pub all_full: bool,
}

impl Ingested {
    fn partial(&self) -> bool {
        self.rejected > 0
    }

    /// The OTLP trace response: partial success when anything was refused.
    pub fn trace_response(self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: self.partial().then_some(ExportTracePartialSuccess {
                rejected_spans: self.rejected as i64,
                error_message: self.message,
            }),
        }
    }

    /// The OTLP metrics response: partial success when anything was refused.
    pub fn metrics_response(self) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: self.partial().then_some(ExportMetricsPartialSuccess {
                rejected_data_points: self.rejected as i64,
                error_message: self.message,
            }),
        }
    }
}

impl App {
    /// Maps and applies a trace export.
    #[tracing::instrument(name = "ingest traces", skip_all, fields(transport = ?via))]
    pub fn ingest_traces(
        &self,
        req: &ExportTraceServiceRequest,
        via: Transport,
        now: UnixNanos,
    ) -> Ingested {
        let batch = self.mapper.traces(req);
        self.apply(batch, Signal::Spans, via, now, None)
    }

    /// Maps and applies a trace export from its encoded bytes, without
    /// decoding it in full (`Mapper::trace_bytes`); Err when the bytes are
    /// not an export request. Only services in `scope` are taken, when
    /// the sender's token has one.
    #[tracing::instrument(name = "ingest traces", skip_all, fields(transport = ?via))]
    pub fn ingest_trace_bytes(
        &self,
        bytes: &[u8],
        encoding: Encoding,
        via: Transport,
        now: UnixNanos,
        scope: Option<&ServiceScope>,
    ) -> Result<Ingested, DecodeError> {
        self.mapper.trace_bytes(bytes, encoding, |batch| {
            self.apply(batch, Signal::Spans, via, now, scope)
        })
    }

    /// Maps and applies a metrics export (of the services in `scope` only,
    /// when the sender's token has one). New cumulative streams count
    /// against the quota of `sender`.
    #[tracing::instrument(name = "ingest metrics", skip_all, fields(transport = ?via))]
    pub fn ingest_metrics(
        &self,
        req: &ExportMetricsServiceRequest,
        via: Transport,
        now: UnixNanos,
        scope: Option<&ServiceScope>,
        sender: Sender,
    ) -> Ingested {
        let batch = {
            let mut deltas = lock(&self.deltas);
            deltas.sending(sender.key());
            self.mapper.metrics(req, &mut deltas, now)
        };
        self.apply(batch, Signal::Points, via, now, scope)
    }

    /// Applies a mapped batch to the store and counts what was accepted,
    /// refused (and why) and unattributed: the export's answer.
    fn apply(
        &self,
        mut batch: Batch<'_>,
        signal: Signal,
        transport: Transport,
        now: UnixNanos,
        scope: Option<&ServiceScope>,
    ) -> Ingested {
        let (out_of_scope, first_out) = scope.map_or((0, None), |s| s.keep_in(&mut batch));
        let (applied, tracked) = {
            let mut store = self.store.lock();
            let applied = store.apply(&batch, now);
            if store.wants_adoption() {
                self.adoptions.notify_one();
            }
            (applied, store.len())
        };
        let m = &self.metrics;
        let refused_by = |reason, n: u64| {
            if n > 0 {
                m.refused
                    .get_or_create(&RefusedLabels {
                        signal,
                        transport,
                        reason,
                    })
                    .inc_by(n);
            }
        };
        refused_by(Reason::Invalid, batch.invalid);
        refused_by(Reason::ReleaseLimit, applied.refused);
        refused_by(Reason::RoleConflict, applied.role_conflicts);
        refused_by(Reason::StreamLimit, batch.full);
        refused_by(Reason::OutOfScope, out_of_scope);
        let rejected =
            batch.invalid + applied.refused + applied.role_conflicts + batch.full + out_of_scope;
        m.accepted
            .get_or_create(&ItemLabels { signal, transport })
            .inc_by(batch.items.saturating_sub(rejected));
        if batch.unattributed > 0 {
            m.unattributed
                .get_or_create(&SignalLabels { signal })
                .inc_by(batch.unattributed);
        }
        m.releases_refused.inc_by(applied.refused_releases);
        m.releases_evicted.inc_by(applied.evicted);
        if !batch.ignored_metrics.is_empty() {
            self.count_ignored(&batch.ignored_metrics);
        }
        self.note_senders(&batch, signal, now);
        m.releases_tracked.set(tracked as i64);

        let mut reasons = Vec::new();
        if let Some(first) = &batch.first_error {
            reasons.push(format!("{} invalid: {first}", batch.invalid));
        }
        if let Some(service) = &first_out {
            reasons.push(format!(
                "{out_of_scope} refused: service {:?} is not among the services this ingest token may send for",
                crate::verdict::shown(service)
            ));
        }
        if applied.refused > 0 {
            let limit = match &applied.full_service {
                Some(service) => format!(
                    "the limit of {} tracked releases of service {:?}",
                    self.config.limits.max_releases_per_service,
                    crate::verdict::shown(service)
                ),
                None => format!(
                    "the limit of {} tracked releases",
                    self.config.limits.max_releases
                ),
            };
            reasons.push(format!(
                "{} refused: {} new release(s) over {limit}; idle releases are forgotten after [limits] release_idle_expiry",
                applied.refused, applied.refused_releases
            ));
        }
        if let Some(why) = &batch.full_reason {
            reasons.push(format!("{} refused: {why}", batch.full));
        }
        for id in &applied.roles_withdrawn {
            tracing::warn!(
                deployment = %crate::verdict::shown(id),
                "telemetry of this deployment came without the deployment.role it first claimed: the claim is not its own and no longer counts (its baseline is chosen by traffic)"
            );
        }
        if let Some((id, claimed, held)) = &applied.first_role_conflict {
            reasons.push(format!(
                "{} refused: deployment {:?} claims deployment.role={} but first declared {}; a role is fixed by a deployment's first telemetry",
                applied.role_conflicts,
                crate::verdict::shown(id),
                claimed.as_str(),
                held.map_or("none", |r| r.as_str()),
            ));
        }
        Ingested {
            rejected,
            message: reasons.join("; "),
            all_invalid: batch.items > 0 && batch.invalid == batch.items,
            // Every item was valid and refused for want of room: the whole
            // request may be retried later.
            all_full: batch.items > 0
                && rejected == batch.items
                && batch.invalid == 0
                && applied.role_conflicts == 0
                && out_of_scope == 0,
        }
    }

    /// Counts the points of metrics nothing reads, by name for the first
    /// few names (each logged once), as `other` beyond.
    fn count_ignored(&self, ignored: &[(&str, u64)]) {
        let mut named = lock(&self.ignored_metrics);
        for &(name, points) in ignored {
            let label = if named.contains(name) {
                name
            } else if named.len() < IGNORED_METRIC_NAMES {
                named.insert(name.to_string());
                tracing::info!(
                    metric = %name,
                    "metric ignored: neither a request-duration histogram ([ingest] duration_metrics) nor a [[checks.metric]]"
                );
                name
            } else {
                "other"
            };
            self.metrics
                .metric_points_ignored
                .get_or_create(&MetricLabels {
                    metric: label.to_string(),
                })
                .inc_by(points);
        }
    }

    /// Records who sent the batch's items, attributed or not; logs each
    /// service the first time it sends items without a release id.
    fn note_senders(&self, batch: &Batch<'_>, signal: Signal, now: UnixNanos) {
        let named: u64 = batch.unattributed_services.iter().map(|(_, n)| n).sum();
        let mut attributed = batch.groups.iter().map(|g| (g.release.service, g.items));
        let news = lock(&self.senders).record(
            Arrived {
                signal,
                attributed: &mut attributed,
                unattributed: &batch.unattributed_services,
                unattributed_unnamed: batch.unattributed - named,
            },
            now,
        );
        let keys = &self.config.identity.release_keys;
        for service in news.unattributed_services {
            tracing::warn!(
                %service,
                signal = signal.as_str(),
                missing = %keys.join(" or "),
                "telemetry without a release id: counted and ignored until its resource carries the missing attribute (OTEL_RESOURCE_ATTRIBUTES); logged once per service"
            );
        }
    }

    /// Counts a whole export request refused before mapping.
    pub fn refuse_request(&self, signal: Signal, transport: Transport, reason: Reason) {
        self.metrics
            .requests_refused
            .get_or_create(&RefusedLabels {
                signal,
                transport,
                reason,
            })
            .inc();
    }
}
