//! `[baseline]`: how a service's baseline is chosen by traffic share when
//! no deployment declares its role, and when it is given up.

use std::time::Duration;

use serde::Deserialize;

/// How the baseline of each service and environment is chosen when no
/// deployment declares its role (see docs/design.md, "The baseline").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// A service's traffic is watched this long before its baseline is
    /// chosen by traffic share, so who exported first does not matter. At
    /// least the exporters' interval (traces: 5s by default).
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// The deployment serving the most requests over the rolling window
    /// becomes the baseline if it serves at least this many times as many
    /// as the next; else the baseline is ambiguous until a role is set.
    pub lead: f64,
    /// A baseline that sends nothing for this long is given up (removed,
    /// or promoted away), and the baseline is chosen again.
    #[serde(with = "humantime_serde")]
    pub quiet: Duration,
    /// Whether a deployment that declares `baseline` or `stable` takes the
    /// place of an established baseline even when it appeared after a
    /// release that baseline judges (by more than `settle`). Off: such a
    /// late claim is held off while the established baseline reports, so
    /// one forged span cannot hand a bad deployment the baseline's place.
    /// On for setups that start a declared baseline after their canaries.
    pub late_claims_displace: bool,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(10),
            lead: 1.5,
            quiet: Duration::from_secs(120),
            late_claims_displace: false,
        }
    }
}

impl BaselineConfig {
    /// Adds every problem to `problems`.
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if !(self.lead.is_finite() && self.lead >= 1.0) {
            problems.push(format!(
                "baseline.lead must be at least 1, not {}",
                self.lead
            ));
        }
        if self.quiet < Duration::from_secs(1) {
            problems.push("baseline.quiet must be at least 1s".to_string());
        }
    }
}
