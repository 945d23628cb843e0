//! Exemplars: each failing or marginal check linked to canary requests
//! that show it (failed ones for error checks, the slowest for latency),
//! with a trace link when `[judge] trace_url_template` is set.

use super::checks::{CheckReport, CheckResult, EndpointReport, ExemplarRef, KindReport};
use super::Judge;
use crate::window::Detail;

impl Judge {
    /// Links each failing or marginal check to canary requests that show
    /// it: failed ones for error checks, the slowest for latency.
    pub(super) fn attach_exemplars(
        &self,
        reports: &mut [CheckReport],
        endpoints: &[EndpointReport],
        detail: &Detail,
    ) {
        let template = self.config.trace_url_template.as_deref();
        let refs = |failed: bool, endpoint: Option<&str>| -> Vec<ExemplarRef> {
            let mut picked: Vec<&crate::model::Exemplar> = detail
                .exemplars
                .iter()
                .filter(|e| e.failed == failed)
                .filter(|e| endpoint.is_none() || e.endpoint.as_deref() == endpoint)
                .collect();
            if failed {
                picked.sort_by_key(|e| std::cmp::Reverse(e.time));
            } else {
                picked.sort_by_key(|e| std::cmp::Reverse(e.latency_us));
            }
            picked
                .into_iter()
                .take(crate::model::EXEMPLARS)
                .map(|e| exemplar_ref(e, template))
                .collect()
        };
        let endpoint_failing = endpoints
            .iter()
            .find(|e| matches!(e.result, CheckResult::Fail | CheckResult::Marginal));
        for r in reports.iter_mut() {
            if !matches!(r.result, CheckResult::Fail | CheckResult::Marginal) {
                continue;
            }
            let failed = r.name.contains("error");
            let endpoint = endpoint_failing
                .filter(|_| failed && r.name == "error_ratio" && r.result != CheckResult::Fail)
                .map(|e| &*e.name);
            r.exemplars = refs(failed, endpoint);
            if r.exemplars.is_empty() && endpoint.is_some() {
                r.exemplars = refs(failed, None);
            }
        }
    }
}

impl Judge {
    /// Links each kind of error to the first canary request seen failing
    /// that way.
    pub(super) fn attach_first_traces(&self, kinds: &mut [KindReport], detail: &Detail) {
        let template = self.config.trace_url_template.as_deref();
        for k in kinds {
            k.first_trace = detail
                .kind_traces
                .iter()
                .find(|(kind, _)| *kind == k.kind)
                .map(|(_, e)| exemplar_ref(e, template));
        }
    }
}

/// Hex trace and span ids, the latency in ms, and the link if configured.
fn exemplar_ref(e: &crate::model::Exemplar, template: Option<&str>) -> ExemplarRef {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let (trace_id, span_id) = (hex(&e.trace_id), hex(&e.span_id));
    ExemplarRef {
        url: template.map(|t| {
            t.replace("{trace_id}", &trace_id)
                .replace("{span_id}", &span_id)
        }),
        trace_id,
        span_id,
        value: e.latency_us as f64 / 1000.0,
        failed: e.failed,
        endpoint: e.endpoint.as_deref().map(str::to_string),
    }
}
