//! Prometheus exposition of every release's verdict, checks and cohort
//! numbers: a pure function of the store, in the Prometheus text format or
//! OpenMetrics. Series of expired releases disappear with them.
//!
//! `release_verdict_baseline_info` names each release's baseline (its
//! deployment id and commit, `previous_sha`) on a series of its own, so an
//! alert can carry the rollback target while `release_verdict`'s labels stay
//! what dashboards and rollout controllers query, and choosing a baseline
//! starts no new verdict series. `release_verdict_red_info` likewise names
//! where a red release is (the check, and the endpoint or kind of error it
//! was decided on), so the alert says where without a reason label: free
//! text whose numbers change every tick.

use std::fmt::Write;

use crate::dora::Report;
use crate::model::{UnixNanos, NANOS_PER_SEC};
use crate::store::{Fleet, Release, Store};
use crate::window::Signals;

/// The two exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`
    Text,
    /// `application/openmetrics-text; version=1.0.0`
    OpenMetrics,
}

impl Format {
    /// From an `Accept` header: OpenMetrics when asked for, else text.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The gauges, in exposition order: name, help.
const FAMILIES: [(&str, &str); 9] = [
    (
        "release_verdict",
        "Verdict of a release: 0 green, 1 yellow, 2 red",
    ),
    (
        "release_verdict_first_seen_timestamp_seconds",
        "When a release was first seen (a deploy marker)",
    ),
    (
        "release_verdict_check_status",
        "Result of one check: 0 pass, 1 marginal, 2 fail, 3 no data",
    ),
    (
        "release_verdict_check_e_value",
        "Anytime-valid e-value for a regression beyond tolerance on a check",
    ),
    (
        "release_verdict_request_rate",
        "Requests per second over the rolling window, by cohort",
    ),
    (
        "release_verdict_error_ratio",
        "Errors per request over the rolling window, by cohort",
    ),
    (
        "release_verdict_latency_seconds",
        "Latency percentiles (p50, p95, p99) over the rolling window, by cohort",
    ),
    (
        "release_verdict_baseline_info",
        "The baseline a release is compared with (the rollback target): its deployment id and commit, value 1",
    ),
    (
        "release_verdict_red_info",
        "Where a red release is: the check it was decided on and its endpoint or kind of error, value 1",
    ),
];

/// Escapes a label value: backslash, double quote and newline.
pub fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One sample line.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape(v, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    if value.is_finite() {
        let _ = write!(out, "{value}");
    } else if value.is_nan() {
        out.push_str("NaN");
    } else if value > 0.0 {
        out.push_str("+Inf");
    } else {
        out.push_str("-Inf");
    }
    out.push('\n');
}

/// Seconds of the window a release's numbers cover.
fn covered(r: &Release, window: UnixNanos, now: UnixNanos) -> f64 {
    let age = now
        .saturating_sub(r.first_seen)
        .clamp(NANOS_PER_SEC, window.max(NANOS_PER_SEC));
    age as f64 / NANOS_PER_SEC as f64
}

/// Writes every release's series (without the self metrics).
pub fn encode_releases(out: &mut String, store: &Store, window: UnixNanos, now: UnixNanos) {
    let mut releases = Releases::new(window, now);
    for (service, env, fleet) in store.fleets() {
        releases.fleet(service, env, fleet);
    }
    releases.finish(out);
}

/// Every release's series, written a few fleets at a time (so a caller
/// can let go of the store between them) and put together at the end, each
/// family's samples contiguous.
pub struct Releases {
    families: Vec<String>,
    window: UnixNanos,
    now: UnixNanos,
}

impl Releases {
    /// Numbers over a rolling `window`, as of `now`.
    pub fn new(window: UnixNanos, now: UnixNanos) -> Self {
        Self {
            families: vec![String::new(); FAMILIES.len()],
            window,
            now,
        }
    }

    /// Writes one service and environment's releases.
    pub fn fleet(&mut self, service: &str, env: &str, fleet: &Fleet) {
        let (window, now) = (self.window, self.now);
        let families = &mut self.families;
        for r in fleet.releases.values() {
            let id = &*r.deployment_id;
            let sha = r.git_sha.as_deref().unwrap_or("");
            let base = [
                ("service", service),
                ("environment", env),
                ("deployment_id", id),
            ];
            let with_sha = [base[0], base[1], base[2], ("git_sha", sha)];
            let j = r.judgement();
            sample(
                &mut families[0],
                FAMILIES[0].0,
                &with_sha,
                j.color.value() as f64,
            );
            sample(
                &mut families[1],
                FAMILIES[1].0,
                &with_sha,
                r.first_seen as f64 / NANOS_PER_SEC as f64,
            );
            if let (Some(ev), Some(_)) = (&j.red_evidence, j.red_since) {
                let labels = [
                    base[0],
                    base[1],
                    base[2],
                    ("red_check", ev.check.as_str()),
                    ("red_subject", ev.subject.as_deref().unwrap_or("")),
                ];
                sample(&mut families[8], FAMILIES[8].0, &labels, 1.0);
            }
            for c in &j.checks {
                let labels = [base[0], base[1], base[2], ("check", c.name.as_str())];
                sample(
                    &mut families[2],
                    FAMILIES[2].0,
                    &labels,
                    c.result.value() as f64,
                );
                sample(
                    &mut families[3],
                    FAMILIES[3].0,
                    &labels,
                    c.statistic.e_value,
                );
            }
            let mut cohort = |name: &str, rel: &Release, w: &Signals| {
                let labels = [base[0], base[1], base[2], ("cohort", name)];
                sample(
                    &mut families[4],
                    FAMILIES[4].0,
                    &labels,
                    w.requests as f64 / covered(rel, window, now),
                );
                if let Some(ratio) = w.error_ratio() {
                    sample(&mut families[5], FAMILIES[5].0, &labels, ratio);
                }
                // `quantile` is reserved for summaries; these are gauges.
                for (q, qs) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
                    if let Some(us) = w.latency.quantile(q) {
                        let labels = [
                            base[0],
                            base[1],
                            base[2],
                            ("cohort", name),
                            ("percentile", qs),
                        ];
                        sample(&mut families[6], FAMILIES[6].0, &labels, us as f64 / 1e6);
                    }
                }
            };
            cohort("canary", r, r.window.sum());
            if let Some(b) = fleet.baseline_of(r) {
                cohort("baseline", b, b.window.sum());
                let labels = [
                    base[0],
                    base[1],
                    base[2],
                    ("git_sha", sha),
                    ("baseline_deployment_id", &*b.deployment_id),
                    ("previous_sha", b.git_sha.as_deref().unwrap_or("")),
                ];
                sample(&mut families[7], FAMILIES[7].0, &labels, 1.0);
            }
        }
    }

    /// The exposition: each family's help, type and samples.
    pub fn finish(self, out: &mut String) {
        for ((name, help), body) in FAMILIES.iter().zip(self.families) {
            let _ = writeln!(out, "# HELP {name} {help}.");
            let _ = writeln!(out, "# TYPE {name} gauge");
            out.push_str(&body);
        }
    }
}

/// The DORA gauges, in exposition order: name, help.
const DORA_FAMILIES: [(&str, &str); 9] = [
    (
        "release_verdict_dora_window_seconds",
        "The trailing window the DORA gauges cover",
    ),
    (
        "release_verdict_dora_deployments",
        "Releases promoted in the trailing window",
    ),
    (
        "release_verdict_dora_deployments_per_day",
        "Deployment frequency: releases promoted per day over the trailing window",
    ),
    (
        "release_verdict_dora_releases_started",
        "Releases started in the trailing window",
    ),
    (
        "release_verdict_dora_failed_releases",
        "Releases started in the trailing window that went red, were rolled back or caused an incident",
    ),
    (
        "release_verdict_dora_change_failure_rate",
        "Change failure rate: failed releases / releases started, 0 to 1",
    ),
    (
        "release_verdict_dora_lead_time_seconds",
        "Lead time for changes (first commit or merge to promoted) of the releases promoted in the window",
    ),
    (
        "release_verdict_dora_time_to_restore_seconds",
        "Time to restore (red or incident to rollback, restore or the next promotion) of the failures in the window",
    ),
    (
        "release_verdict_dora_open_failures",
        "Failures detected in the window and not restored yet",
    ),
];

/// The DORA gauges of each service and environment over the trailing
/// window of `window_seconds`.
pub fn encode_dora(out: &mut String, reports: &[Report], window_seconds: f64) {
    let mut families: Vec<String> = vec![String::new(); DORA_FAMILIES.len()];
    sample(&mut families[0], DORA_FAMILIES[0].0, &[], window_seconds);
    for r in reports {
        let labels = [
            ("service", r.service.as_str()),
            ("environment", r.environment.as_str()),
        ];
        let m = &r.measures;
        let mut put =
            |i: usize, value: f64| sample(&mut families[i], DORA_FAMILIES[i].0, &labels, value);
        put(1, m.deployments as f64);
        put(2, m.deployments_per_day);
        put(3, m.releases_started as f64);
        put(4, m.failed_releases as f64);
        if let Some(rate) = m.change_failure_rate {
            put(5, rate);
        }
        put(8, m.time_to_restore_seconds.open as f64);
        let lead = &m.lead_time_seconds;
        let restore = &m.time_to_restore_seconds;
        let spreads = [
            (6, "p50", lead.median),
            (6, "p90", lead.p90),
            (7, "p50", restore.median),
            (7, "p95", restore.p95),
        ];
        for (i, percentile, value) in spreads {
            if let Some(v) = value {
                let labels = [labels[0], labels[1], ("percentile", percentile)];
                sample(&mut families[i], DORA_FAMILIES[i].0, &labels, v);
            }
        }
    }
    for ((name, help), body) in DORA_FAMILIES.iter().zip(families) {
        let _ = writeln!(out, "# HELP {name} {help}.");
        let _ = writeln!(out, "# TYPE {name} gauge");
        out.push_str(&body);
    }
}

/// prometheus-client writes OpenMetrics; the text format differs in a
/// counter's family name (`x_total` there, `x` here), has no `# UNIT`
/// and no `# EOF`.
pub fn openmetrics_to_text(om: &str, out: &mut String) {
    let mut counters: Vec<&str> = Vec::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.push(name);
            }
        }
    }
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# TYPE ")
            .map(|r| ("# TYPE ", r))
            .or_else(|| line.strip_prefix("# HELP ").map(|r| ("# HELP ", r)));
        if let Some((kind, rest)) = meta {
            let name = rest.split(' ').next().unwrap_or("");
            if counters.contains(&name) {
                let _ = writeln!(out, "{kind}{name}_total{}", &rest[name.len()..]);
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::judge::Judge;
    use crate::model::{Batch, Group, ReleaseRef, Role, Sample};
    use crate::store::BaselineRule;

    const SEC: UnixNanos = NANOS_PER_SEC;

    /// One second of traffic of each (deployment id, git sha, role) in the
    /// service `odd "svc"`, then a tick.
    fn serve(store: &mut Store, t: UnixNanos, deployments: &[(&str, Option<&str>, Option<Role>)]) {
        let mut batch = Batch::default();
        for &(deployment_id, git_sha, role) in deployments {
            batch.groups.push(Group {
                release: ReleaseRef {
                    service: "odd \"svc\"",
                    environment: "prod",
                    deployment_id,
                    git_sha,
                    role,
                },
                items: 10,
                sample: Sample {
                    requests: 10,
                    latencies_us: vec![(1000, 10)],
                    ..Default::default()
                },
            });
        }
        store.apply(&batch, t);
        store.tick(t + SEC / 2);
    }

    fn new_store() -> Store {
        let c = Config::default();
        Store::new(
            10,
            Judge::new(&c.judge, &c.checks),
            BaselineRule::from(&c.baseline),
        )
    }

    fn baseline_lines(store: &Store, now: UnixNanos) -> Vec<String> {
        let mut out = String::new();
        encode_releases(&mut out, store, 60 * SEC, now);
        out.lines()
            .filter(|l| l.starts_with("release_verdict_baseline_info{"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_baseline_info_names_the_rollback_target_of_releases_with_a_baseline() {
        let mut store = new_store();
        // No baseline yet: no series, though the verdict is exposed.
        serve(&mut store, SEC, &[("new\\1", Some("2b5d"), None)]);
        assert_eq!(baseline_lines(&store, 2 * SEC), Vec::<String>::new());
        // A declared baseline (its id needing escapes) is chosen at once;
        // it has no baseline of its own.
        let old = "old\"1\n";
        let both = [
            ("new\\1", Some("2b5d"), None),
            (old, Some("1a2b"), Some(Role::Baseline)),
        ];
        serve(&mut store, 2 * SEC, &both);
        assert_eq!(
            baseline_lines(&store, 3 * SEC),
            [concat!(
                r#"release_verdict_baseline_info{service="odd \"svc\"",environment="prod","#,
                r#"deployment_id="new\\1",git_sha="2b5d","#,
                r#"baseline_deployment_id="old\"1\n",previous_sha="1a2b"} 1"#
            )]
        );
        // The canary's verdict keeps its labels.
        let mut out = String::new();
        encode_releases(&mut out, &store, 60 * SEC, 3 * SEC);
        assert!(out.contains(
            r#"release_verdict{service="odd \"svc\"",environment="prod",deployment_id="new\\1",git_sha="2b5d"} "#
        ));
        // A baseline without a commit still names its deployment.
        let mut store2 = new_store();
        serve(
            &mut store2,
            SEC,
            &[("c", None, None), ("b", None, Some(Role::Stable))],
        );
        assert_eq!(
            baseline_lines(&store2, 2 * SEC),
            [
                r#"release_verdict_baseline_info{service="odd \"svc\"",environment="prod",deployment_id="c",git_sha="",baseline_deployment_id="b",previous_sha=""} 1"#
            ]
        );
        // The baseline expires with its series; the canary stays.
        serve(&mut store, 100 * SEC, &[("new\\1", Some("2b5d"), None)]);
        assert_eq!(store.expire(101 * SEC, 60 * SEC), 1);
        assert_eq!(baseline_lines(&store, 101 * SEC), Vec::<String>::new());
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", &[("a", "x\"y\\z\nw")], 1.5);
        assert_eq!(out, "m{a=\"x\\\"y\\\\z\\nw\"} 1.5\n");
    }

    #[test]
    fn special_values_are_spelled_out() {
        let mut out = String::new();
        sample(&mut out, "m", &[], f64::INFINITY);
        sample(&mut out, "m", &[], f64::NAN);
        assert_eq!(out, "m +Inf\nm NaN\n");
    }

    #[test]
    fn openmetrics_counters_become_text_counters() {
        let om = "# HELP x_items Items.\n# TYPE x_items counter\nx_items_total{a=\"b\"} 3\n# TYPE g gauge\ng 1\n# EOF\n";
        let mut out = String::new();
        openmetrics_to_text(om, &mut out);
        assert_eq!(
            out,
            "# HELP x_items_total Items.\n# TYPE x_items_total counter\nx_items_total{a=\"b\"} 3\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn accept_headers_choose_the_format() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
    }
}
