//! The verdict object as its protobuf message (`proto/release_verdict/v1`),
//! the types tonic generates for it, and the descriptors for reflection.
//! Pure conversion; the service that sends them is `server::verdict_grpc`.

use crate::judge::checks::{CheckReport, CohortStats, ExemplarRef};
use crate::judge::Figures;
use crate::verdict::Verdict;

/// Generated types and service.
pub mod pb {
    tonic::include_proto!("release_verdict.v1");

    /// The encoded descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/verdict_descriptor.bin"));
}

fn stats(s: &CohortStats) -> pb::CohortStats {
    pb::CohortStats {
        requests: s.requests,
        errors: s.errors,
        error_ratio: s.error_ratio,
        p50_ms: s.p50_ms,
        p95_ms: s.p95_ms,
        p99_ms: s.p99_ms,
        per_request: s.per_request,
        median: s.median,
    }
}

fn exemplar(e: &ExemplarRef) -> pb::Exemplar {
    pb::Exemplar {
        trace_id: e.trace_id.clone(),
        span_id: e.span_id.clone(),
        value: e.value,
        failed: e.failed,
        endpoint: e.endpoint.clone(),
        url: e.url.clone(),
    }
}

fn figures(f: &Figures) -> pb::Figures {
    pb::Figures {
        canary: f.canary,
        baseline: f.baseline,
        canary_requests: f.canary_requests,
        canary_errors: f.canary_errors,
        baseline_requests: f.baseline_requests,
        baseline_errors: f.baseline_errors,
        e_value: f.e_value,
    }
}

fn check(c: &CheckReport) -> pb::Check {
    pb::Check {
        name: c.name.clone(),
        result: c.result.as_str().into(),
        critical: c.critical,
        weight: c.weight,
        canary: Some(stats(&c.canary)),
        baseline: c.baseline.as_ref().map(stats),
        statistic: Some(pb::Statistic {
            e_value: c.statistic.e_value,
            p_value: c.statistic.p_value,
            pass_p_value: c.statistic.pass_p_value,
        }),
        detail: c.detail.clone(),
        exemplars: c.exemplars.iter().map(exemplar).collect(),
        evidence: c.evidence.clone(),
    }
}

/// The verdict object as its protobuf message.
pub fn to_pb(v: &Verdict) -> pb::Verdict {
    pb::Verdict {
        service: v.service.clone(),
        environment: v.environment.clone(),
        deployment_id: v.deployment_id.clone(),
        git_sha: v.git_sha.clone(),
        role: v.role.map(|r| r.as_str().to_string()),
        baseline: v.baseline.as_ref().map(|b| pb::Baseline {
            deployment_id: b.deployment_id.clone(),
            git_sha: b.git_sha.clone(),
            requests: b.requests,
            errors: b.errors,
            chosen_by: b.chosen_by.to_string(),
        }),
        verdict: v.verdict.as_str().into(),
        reason: v.reason.clone(),
        evaluated_at: v.evaluated_at.clone(),
        first_seen_at: v.first_seen_at.clone(),
        last_seen_at: v.last_seen_at.clone(),
        changed_at: v.changed_at.clone(),
        red_since: v.red_since.clone(),
        red_evidence: v.red_evidence.as_ref().map(|r| pb::RedEvidence {
            decided_at: r.decided_at.clone(),
            check: r.evidence.check.clone(),
            subject: r.evidence.subject.clone(),
            quantile: r.evidence.quantile,
            then: Some(figures(&r.evidence.then)),
            detail: r.evidence.detail.clone(),
            now: r.now.as_ref().map(figures),
            endpoint: r.endpoint.clone(),
            kind: r.kind.clone(),
        }),
        canary: Some(pb::CohortTotals {
            requests: v.canary.requests,
            errors: v.canary.errors,
        }),
        checks: v.checks.iter().map(check).collect(),
        endpoints: v
            .endpoints
            .iter()
            .map(|e| pb::Endpoint {
                name: e.name.to_string(),
                result: e.result.as_str().into(),
                canary: Some(stats(&e.canary)),
                baseline: Some(stats(&e.baseline)),
                e_value: e.e_value,
                detail: e.detail.clone(),
                evidence: e.evidence.clone(),
            })
            .collect(),
        new_errors: v
            .new_errors
            .iter()
            .map(|k| pb::ErrorKind {
                kind: k.kind.clone(),
                count: k.count,
            })
            .collect(),
        decision_eta_seconds: v.decision_eta_seconds,
        live: v.live,
        requests_from: v.requests_from.as_str().into(),
        error_kinds: v
            .error_kinds
            .iter()
            .map(|k| pb::ErrorKindTest {
                kind: k.kind.to_string(),
                result: k.result.as_str().into(),
                canary: Some(stats(&k.canary)),
                baseline: Some(stats(&k.baseline)),
                e_value: k.e_value,
                detail: k.detail.clone(),
                evidence: k.evidence.clone(),
                first_trace: k.first_trace.as_ref().map(exemplar),
            })
            .collect(),
    }
}
