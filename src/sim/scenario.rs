//! The suite's scenarios: how a baseline and its canary behave, healthy
//! (A/A) or with a regression of a given shape and onset.

/// One simulated release: a warm baseline, then a canary beside it.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    /// Requests per second of both cohorts together.
    pub total_rps: f64,
    /// The canary's share of traffic.
    pub canary_weight: f64,
    pub baseline_error: f64,
    pub canary_error: f64,
    pub median_ms: f64,
    /// Log-space spread of latencies.
    pub sigma: f64,
    /// Canary latencies are multiplied by this.
    pub canary_slowdown: f64,
    /// The canary behaves like the baseline until this many seconds in.
    pub regression_at: u64,
    /// Seconds the baseline serves alone before the canary appears.
    pub warmup: u64,
    /// Seconds simulated after the canary appears.
    pub duration: u64,
    /// Whether a baseline deployment exists at all.
    pub with_baseline: bool,
    /// The canary's share of traffic from a given second on (a split that
    /// moves during the rollout); empty for `canary_weight` throughout.
    pub split: Vec<(u64, f64)>,
    /// Share of requests on a second, small endpoint (0: one endpoint).
    pub small_endpoint: f64,
    /// The canary's error ratio on the small endpoint once bad (a
    /// regression confined to it); None for `canary_error` there too.
    pub small_endpoint_error: Option<f64>,
    /// Once bad, this share of canary requests is `tail_slowdown` times
    /// slower (a p99-only regression).
    pub tail_share: f64,
    pub tail_slowdown: f64,
    /// Once bad, the canary's errors are of a kind the baseline never shows.
    pub new_error_kind: bool,
    /// Once bad, this share of canary requests fails too, with a kind the
    /// baseline never shows (on top of its usual errors).
    pub new_kind_share: f64,
    /// Once bad, this many milliseconds are added to `tail_share` of the
    /// canary's requests (a tail regression that is not a multiple).
    pub tail_add_ms: f64,
    /// The small endpoint's latencies are this many times the large one's,
    /// on both cohorts (endpoints of different speeds).
    pub small_endpoint_slowdown: f64,
    /// The canary's share of requests on the small endpoint, when its mix
    /// differs from the baseline's (sticky or header-routed users); None
    /// for `small_endpoint`.
    pub canary_small_endpoint: Option<f64>,
    /// Once bad, the canary's latencies on the small endpoint are
    /// multiplied by this (a latency regression confined to it).
    pub small_endpoint_canary_slowdown: f64,
    /// Both cohorts: from, to (seconds after the canary appears), error
    /// ratio and slowdown (an incident that is not the canary's fault).
    pub incident: Option<(u64, u64, f64, f64)>,
    /// Sent as request-duration histograms only (a metrics-only service)
    /// rather than spans.
    pub histograms: Option<Histograms>,
    /// The canary's change is within the latency check's tolerance (1 ms):
    /// any red is a false red.
    pub within_tolerance: bool,
}

/// How a metrics-only service reports: its histogram's bounds and how
/// often each cohort exports.
#[derive(Debug, Clone, Copy)]
pub struct Histograms {
    pub bounds_ms: &'static [f64],
    /// Seconds between exports (each cohort at a phase of its own).
    pub every: u64,
    /// Durations recorded as whole milliseconds, as the older `ms`
    /// conventions' instrumentations did.
    pub whole_ms: bool,
}

/// The SDKs' default bounds for request durations, in milliseconds (the
/// same for `http.server.request.duration` in seconds, but for 0).
pub const SDK_BOUNDS_MS: &[f64] = &[
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

impl Histograms {
    /// The SDKs' default bounds, exported every 10 s.
    pub fn sdk() -> Self {
        Self {
            bounds_ms: SDK_BOUNDS_MS,
            every: 10,
            whole_ms: false,
        }
    }
}

impl Scenario {
    /// Identical cohorts at the given total traffic.
    pub fn a_a(name: &'static str, total_rps: f64) -> Self {
        Self {
            name,
            total_rps,
            canary_weight: 0.1,
            baseline_error: 0.005,
            canary_error: 0.005,
            median_ms: 50.0,
            sigma: 0.5,
            canary_slowdown: 1.0,
            regression_at: 0,
            warmup: 120,
            duration: 300,
            with_baseline: true,
            split: Vec::new(),
            small_endpoint: 0.0,
            small_endpoint_error: None,
            tail_share: 0.0,
            tail_slowdown: 1.0,
            new_error_kind: false,
            new_kind_share: 0.0,
            tail_add_ms: 0.0,
            small_endpoint_slowdown: 1.0,
            canary_small_endpoint: None,
            small_endpoint_canary_slowdown: 1.0,
            incident: None,
            histograms: None,
            within_tolerance: false,
        }
    }

    /// Whether the canary is healthy (any red is a false red).
    pub fn healthy(&self) -> bool {
        if self.within_tolerance {
            return true;
        }
        self.canary_error == self.baseline_error
            && self.canary_slowdown == 1.0
            && self.small_endpoint_error.is_none()
            && self.tail_share == 0.0
            && self.new_kind_share == 0.0
            && self.small_endpoint_canary_slowdown == 1.0
            && self.with_baseline
    }

    /// Canary requests per second at second `t` after it appears.
    pub fn canary_rps(&self, t: u64) -> f64 {
        self.total_rps * self.weight(t)
    }

    fn weight(&self, t: u64) -> f64 {
        self.split
            .iter()
            .rev()
            .find(|(from, _)| t >= *from)
            .map_or(self.canary_weight, |(_, w)| *w)
    }

    /// The cases of the evaluation suite: healthy canaries (any red is
    /// false), regressions (red must come, green must not come first), and
    /// too little traffic to tell.
    pub fn suite() -> Vec<Scenario> {
        let base = Scenario::a_a("", 100.0);
        let busy = Scenario::a_a("", 1000.0);
        vec![
            Scenario::a_a("A/A, 10 rps", 10.0),
            Scenario::a_a("A/A, 100 rps", 100.0),
            Scenario::a_a("A/A, 1000 rps", 1000.0),
            Scenario {
                name: "A/A, split 5% → 25% → 50%",
                split: vec![(0, 0.05), (60, 0.25), (120, 0.5)],
                ..busy.clone()
            },
            Scenario {
                name: "A/A, heavy-tailed latency",
                sigma: 1.5,
                ..busy.clone()
            },
            Scenario {
                name: "A/A, incident on both cohorts",
                incident: Some((45, 105, 0.08, 2.0)),
                ..busy.clone()
            },
            Scenario {
                name: "errors 0.5% → 5%",
                canary_error: 0.05,
                ..base.clone()
            },
            Scenario {
                name: "errors 0.5% → 2%",
                canary_error: 0.02,
                ..base.clone()
            },
            Scenario {
                name: "busy, errors 1% → 2%",
                baseline_error: 0.01,
                canary_error: 0.02,
                ..busy.clone()
            },
            Scenario {
                name: "latency ×1.5",
                canary_slowdown: 1.5,
                ..base.clone()
            },
            Scenario {
                name: "p99 only: 2% of requests ×5",
                tail_share: 0.02,
                tail_slowdown: 5.0,
                ..busy.clone()
            },
            Scenario {
                name: "one endpoint (10%), errors ×10",
                small_endpoint: 0.1,
                small_endpoint_error: Some(0.05),
                ..busy.clone()
            },
            Scenario {
                name: "new error kind, 0.5% → 1.5%",
                canary_error: 0.015,
                new_error_kind: true,
                ..busy.clone()
            },
            Scenario {
                name: "errors → 5% at 2 min",
                canary_error: 0.05,
                regression_at: 120,
                ..base.clone()
            },
            Scenario {
                name: "too little traffic (2 rps)",
                ..Scenario::a_a("", 2.0)
            },
            Scenario {
                name: "no baseline",
                with_baseline: false,
                ..base.clone()
            },
            // Shapes added with per-kind and tail evidence (after the
            // others, so that their seeds stay as they were).
            Scenario {
                name: "new error kind on 0.5% more, 10 rps",
                new_kind_share: 0.005,
                ..base.clone()
            },
            Scenario {
                name: "new error kind on 0.5% more, 100 rps",
                new_kind_share: 0.005,
                ..busy.clone()
            },
            Scenario {
                name: "tail: 3% of requests +1 s, 10 rps",
                tail_share: 0.03,
                tail_add_ms: 1000.0,
                ..base.clone()
            },
            Scenario {
                name: "tail: 1% of requests +500 ms, 100 rps",
                tail_share: 0.01,
                tail_add_ms: 500.0,
                ..busy.clone()
            },
            Scenario {
                name: "latency ×10, 10 rps",
                canary_slowdown: 10.0,
                ..base.clone()
            },
            Scenario {
                name: "A/A, canary mix 60% on a 4× slower endpoint (20% on the baseline)",
                small_endpoint: 0.2,
                small_endpoint_slowdown: 4.0,
                canary_small_endpoint: Some(0.6),
                ..busy.clone()
            },
            Scenario {
                name: "slow endpoint ×1.5 under a different mix",
                small_endpoint: 0.2,
                small_endpoint_slowdown: 4.0,
                canary_small_endpoint: Some(0.6),
                small_endpoint_canary_slowdown: 1.5,
                ..busy.clone()
            },
            // A metrics-only service: request-duration histograms with the
            // SDKs' default bounds, exported every 10 s.
            Scenario {
                name: "metrics only: A/A, 10 rps",
                histograms: Some(Histograms::sdk()),
                ..base.clone()
            },
            Scenario {
                name: "metrics only: A/A, 100 rps",
                histograms: Some(Histograms::sdk()),
                ..busy.clone()
            },
            Scenario {
                name: "metrics only: latency ×1.5, 10 rps",
                canary_slowdown: 1.5,
                histograms: Some(Histograms::sdk()),
                ..base.clone()
            },
            Scenario {
                name: "metrics only: latency ×1.5, 100 rps",
                canary_slowdown: 1.5,
                histograms: Some(Histograms::sdk()),
                ..busy.clone()
            },
            Scenario {
                name: "metrics only: latency ×1.25 at 80 ms, 10 rps",
                median_ms: 80.0,
                canary_slowdown: 1.25,
                histograms: Some(Histograms::sdk()),
                ..base.clone()
            },
            Scenario {
                name: "metrics only: errors 0.5% → 5%, 10 rps",
                canary_error: 0.05,
                histograms: Some(Histograms::sdk()),
                ..base.clone()
            },
            Scenario {
                name: "metrics only, whole ms: median 0.4 → 0.6 ms (within 1 ms)",
                median_ms: 0.4,
                canary_slowdown: 1.5,
                within_tolerance: true,
                histograms: Some(Histograms {
                    whole_ms: true,
                    ..Histograms::sdk()
                }),
                ..busy
            },
        ]
    }
}
