//! `[identity]`: the attribute keys that say which release, commit,
//! service, environment and role a span or data point belongs to.

use serde::Deserialize;

/// Attribute keys, looked up on the span or data point first, then on its
/// resource. Where a list is given, the first key present wins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The release id.
    pub release_keys: Vec<String>,
    /// The commit.
    pub commit_keys: Vec<String>,
    /// The service.
    pub service_keys: Vec<String>,
    /// The environment.
    pub environment_keys: Vec<String>,
    /// The optional cohort role: `canary`, `baseline` or `stable`.
    pub role_keys: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect();
        Self {
            release_keys: keys(&["deployment.id"]),
            commit_keys: keys(&["git.sha", "vcs.ref.head.revision"]),
            service_keys: keys(&["service.name"]),
            environment_keys: keys(&[
                "deployment.environment.name",
                "deployment.environment",
                "service.env",
            ]),
            role_keys: keys(&["deployment.role"]),
        }
    }
}

impl IdentityConfig {
    /// Adds every problem to `problems`.
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        for (name, keys) in [
            ("identity.release_keys", &self.release_keys),
            ("identity.service_keys", &self.service_keys),
        ] {
            if keys.is_empty() || keys.iter().any(|k| k.is_empty()) {
                problems.push(format!("{name} must list at least one non-empty key"));
            }
        }
        for (name, keys) in [
            ("identity.commit_keys", &self.commit_keys),
            ("identity.environment_keys", &self.environment_keys),
            ("identity.role_keys", &self.role_keys),
        ] {
            if keys.iter().any(|k| k.is_empty()) {
                problems.push(format!("{name} must not contain an empty key"));
            }
        }
    }
}
