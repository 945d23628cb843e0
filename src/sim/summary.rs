//! A scenario's results over many releases, and the table `simulate`
//! prints.

use super::run::{run, RunResult};
use super::Scenario;
use crate::config::Config;
use crate::judge::Color;

/// A scenario's results over many releases.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: &'static str,
    pub runs: usize,
    pub red: usize,
    pub green: usize,
    pub green_within_60s: usize,
    pub red_within_60s: usize,
    pub median_red: Option<u64>,
    pub p95_red: Option<u64>,
    pub median_green: Option<u64>,
    pub green_within_180s: usize,
    /// Shown green after the regression's onset and before red.
    pub green_before_red: usize,
    /// Shown green, then yellow again.
    pub green_taken_back: usize,
    pub yellow_insufficient: usize,
    /// Releases with a time-to-decision estimate and a decision after it,
    /// and those decided within 0.5×–2× of the first estimate.
    pub eta_decided: usize,
    pub eta_accurate: usize,
    /// Releases whose red names the regressed endpoint.
    pub red_on_endpoint: usize,
    /// Releases whose last verdict lists the new error kind.
    pub new_error_listed: usize,
    /// Releases whose red names the new error kind.
    pub red_on_kind: usize,
}

fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * q).round() as usize])
}

/// Runs `runs` releases of a scenario with seeds `seed..seed+runs`.
pub fn summarize(s: &Scenario, runs: usize, seed: u64, config: &Config) -> Summary {
    let results: Vec<RunResult> = (0..runs as u64).map(|i| run(s, seed + i, config)).collect();
    let mut reds: Vec<u64> = results.iter().filter_map(|r| r.red_after).collect();
    let mut greens: Vec<u64> = results.iter().filter_map(|r| r.green_after).collect();
    reds.sort_unstable();
    greens.sort_unstable();
    Summary {
        name: s.name,
        runs,
        red: reds.len(),
        green: greens.len(),
        green_within_60s: greens.iter().filter(|g| **g <= 60).count(),
        red_within_60s: reds.iter().filter(|r| **r <= 60).count(),
        median_red: quantile(&reds, 0.5),
        p95_red: quantile(&reds, 0.95),
        median_green: quantile(&greens, 0.5),
        green_within_180s: greens.iter().filter(|g| **g <= 180).count(),
        green_before_red: results.iter().filter(|r| r.green_before_red).count(),
        green_taken_back: results.iter().filter(|r| r.green_taken_back).count(),
        eta_decided: results
            .iter()
            .filter(|r| r.first_eta.is_some() && r.decided_at.is_some())
            .count(),
        eta_accurate: results
            .iter()
            .filter(|r| match (r.first_eta, r.decided_at) {
                (Some((shown, eta)), Some(done)) => {
                    let ratio = (done - shown) as f64 / eta.max(1) as f64;
                    (0.5..=2.0).contains(&ratio)
                }
                _ => false,
            })
            .count(),
        red_on_endpoint: results.iter().filter(|r| r.red_endpoint).count(),
        red_on_kind: results.iter().filter(|r| r.red_kind).count(),
        new_error_listed: results
            .iter()
            .filter(|r| r.new_errors.iter().any(|k| k == "NullPointerException"))
            .count(),
        yellow_insufficient: results
            .iter()
            .filter(|r| r.last == Color::Yellow && r.last_reason.starts_with("insufficient data"))
            .count(),
    }
}

impl Summary {
    pub fn header() -> &'static str {
        "| case | releases | red | red ≤60s | median to red | p95 to red | green before red | green | green ≤60s | green ≤3 min | median to green | ETA within 0.5–2× | yellow, insufficient data |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    }

    pub fn row(&self) -> String {
        let pct = |n: usize| format!("{:.1}%", 100.0 * n as f64 / self.runs as f64);
        let secs = |s: Option<u64>| s.map(|s| format!("{s} s")).unwrap_or_else(|| "–".into());
        let eta = if self.eta_decided == 0 {
            "–".to_string()
        } else {
            format!(
                "{:.0}% of {}",
                100.0 * self.eta_accurate as f64 / self.eta_decided as f64,
                self.eta_decided
            )
        };
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.name,
            self.runs,
            pct(self.red),
            pct(self.red_within_60s),
            secs(self.median_red),
            secs(self.p95_red),
            pct(self.green_before_red),
            pct(self.green),
            pct(self.green_within_60s),
            pct(self.green_within_180s),
            secs(self.median_green),
            eta,
            pct(self.yellow_insufficient),
        )
    }
}
