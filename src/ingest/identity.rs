//! Which release a span or data point belongs to: attribute lookup with the
//! item's own attributes winning over its resource's.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

use super::span::Val;
use crate::config::IdentityConfig;
use crate::model::{ReleaseRef, Role};

/// Longest accepted service, environment or deployment id, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// The attribute keys to look for, from the configuration.
#[derive(Debug, Clone)]
pub struct IdentityKeys {
    release: Vec<String>,
    commit: Vec<String>,
    service: Vec<String>,
    environment: Vec<String>,
    role: Vec<String>,
}

impl From<&IdentityConfig> for IdentityKeys {
    fn from(c: &IdentityConfig) -> Self {
        Self {
            release: c.release_keys.clone(),
            commit: c.commit_keys.clone(),
            service: c.service_keys.clone(),
            environment: c.environment_keys.clone(),
            role: c.role_keys.clone(),
        }
    }
}

impl IdentityKeys {
    /// Every key looked up.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        [
            &self.release,
            &self.commit,
            &self.service,
            &self.environment,
            &self.role,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
    }
}

impl Default for IdentityKeys {
    fn default() -> Self {
        Self::from(&IdentityConfig::default())
    }
}

/// Identity attributes found at one level (resource, span or data point),
/// borrowed from the request. Within a level, the key listed first wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found<'a> {
    pub release: Option<&'a str>,
    pub commit: Option<&'a str>,
    pub service: Option<&'a str>,
    pub environment: Option<&'a str>,
    pub role: Option<&'a str>,
}

impl<'a> Found<'a> {
    /// Scans attributes once; the key listed first wins within the level.
    pub fn scan(attrs: &'a [KeyValue], keys: &IdentityKeys) -> Found<'a> {
        Found::scan_pairs(
            attrs
                .iter()
                .map(|kv| (kv.key.as_str(), Val::of(kv.value.as_ref()))),
            keys,
        )
    }

    /// As `scan`, over (key, value) pairs from any decoder.
    pub fn scan_pairs(
        attrs: impl IntoIterator<Item = (&'a str, Val<'a>)>,
        keys: &IdentityKeys,
    ) -> Found<'a> {
        let mut scan = Scan::default();
        for (key, value) in attrs {
            scan.offer(key, value, keys);
        }
        scan.found
    }

    /// This level's fields, falling back to `base` (the resource) field by field.
    pub fn over(self, base: Found<'a>) -> Found<'a> {
        Found {
            release: self.release.or(base.release),
            commit: self.commit.or(base.commit),
            service: self.service.or(base.service),
            environment: self.environment.or(base.environment),
            role: self.role.or(base.role),
        }
    }

    /// The release this identifies, if it names one.
    pub fn release(&self) -> Result<Option<ReleaseRef<'a>>, IdentityError> {
        let Some(deployment_id) = self.release else {
            return Ok(None);
        };
        let service = self.service.unwrap_or("unknown_service");
        let environment = self.environment.unwrap_or("");
        for (what, value) in [
            ("deployment id", deployment_id),
            ("service", service),
            ("environment", environment),
        ] {
            if value.len() > MAX_ID_LEN {
                return Err(IdentityError::TooLong {
                    what,
                    len: value.len(),
                });
            }
        }
        let git_sha = match self.commit {
            Some(sha) if sha.len() > MAX_ID_LEN => {
                return Err(IdentityError::TooLong {
                    what: "commit",
                    len: sha.len(),
                })
            }
            other => other,
        };
        Ok(Some(ReleaseRef {
            service,
            environment,
            deployment_id,
            git_sha,
            role: self.role.and_then(Role::parse),
        }))
    }
}

/// A scan under way: attributes offered one at a time, in order, as a
/// decoder meets them (a resource's attributes may come in several parts).
#[derive(Debug, Clone, Copy)]
pub struct Scan<'a> {
    pub found: Found<'a>,
    /// The position in its key list of each field's value so far.
    rank: [usize; 5],
}

impl Default for Scan<'_> {
    fn default() -> Self {
        Scan {
            found: Found::default(),
            rank: [usize::MAX; 5],
        }
    }
}

impl<'a> Scan<'a> {
    /// Takes `value` for the fields `key` names, if it ranks before what
    /// they hold (the key listed first wins; empty values are absent).
    #[inline]
    pub fn offer(&mut self, key: &str, value: Val<'a>, keys: &IdentityKeys) {
        let Val::Str(s) = value else {
            return;
        };
        if s.is_empty() {
            return;
        }
        let lists = [
            &keys.release,
            &keys.commit,
            &keys.service,
            &keys.environment,
            &keys.role,
        ];
        for (field, list) in lists.into_iter().enumerate() {
            if let Some(pos) = list.iter().position(|k| k == key) {
                let rank = &mut self.rank[field];
                if pos < *rank {
                    *rank = pos;
                    let slot = match field {
                        0 => &mut self.found.release,
                        1 => &mut self.found.commit,
                        2 => &mut self.found.service,
                        3 => &mut self.found.environment,
                        _ => &mut self.found.role,
                    };
                    *slot = Some(s);
                }
            }
        }
    }
}

/// Identity attributes that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("{what} is {len} bytes long; at most {MAX_ID_LEN} are accepted")]
    TooLong { what: &'static str, len: usize },
}

/// The string form of an attribute value, for string values only.
pub fn string_value(v: Option<&AnyValue>) -> Option<&str> {
    Val::of(v).str()
}

/// An integer attribute, also accepting a decimal string.
#[cfg(test)]
pub fn int_value(v: Option<&AnyValue>) -> Option<i64> {
    Val::of(v).int()
}

#[cfg(test)]
pub(crate) mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    use super::*;
    pub use crate::otlp_kit::{kv, kv_int};

    #[test]
    fn item_attributes_win_over_resource() {
        let keys = IdentityKeys::default();
        let resource = vec![
            kv("service.name", "checkout"),
            kv("deployment.id", "r-old"),
            kv("git.sha", "aaa"),
            kv("deployment.environment.name", "prod"),
        ];
        let span = vec![kv("deployment.id", "r-new"), kv("git.sha", "bbb")];
        let r = Found::scan(&span, &keys).over(Found::scan(&resource, &keys));
        let rel = r.release().unwrap().unwrap();
        assert_eq!(rel.deployment_id, "r-new");
        assert_eq!(rel.git_sha, Some("bbb"));
        assert_eq!(rel.service, "checkout");
        assert_eq!(rel.environment, "prod");
    }

    #[test]
    fn environment_falls_back_in_key_order() {
        let keys = IdentityKeys::default();
        let attrs = vec![
            kv("service.env", "c"),
            kv("deployment.environment", "b"),
            kv("deployment.id", "x"),
        ];
        let found = Found::scan(&attrs, &keys);
        assert_eq!(found.environment, Some("b"));
        let attrs = vec![
            kv("deployment.environment", "b"),
            kv("deployment.environment.name", "a"),
        ];
        assert_eq!(Found::scan(&attrs, &keys).environment, Some("a"));
        let attrs = vec![kv("service.env", "c")];
        assert_eq!(Found::scan(&attrs, &keys).environment, Some("c"));
    }

    #[test]
    fn commit_accepts_vcs_revision_and_role_parses() {
        let keys = IdentityKeys::default();
        let attrs = vec![
            kv("deployment.id", "x"),
            kv("vcs.ref.head.revision", "abc"),
            kv("deployment.role", "Baseline"),
        ];
        let rel = Found::scan(&attrs, &keys).release().unwrap().unwrap();
        assert_eq!(rel.git_sha, Some("abc"));
        assert_eq!(rel.role, Some(Role::Baseline));
        assert_eq!(rel.service, "unknown_service");
        assert_eq!(rel.environment, "");
    }

    #[test]
    fn no_release_id_means_unattributed() {
        let keys = IdentityKeys::default();
        let attrs = vec![kv("service.name", "a"), kv("deployment.id", "")];
        assert_eq!(Found::scan(&attrs, &keys).release().unwrap(), None);
    }

    #[test]
    fn configured_keys_are_used() {
        let keys = IdentityKeys::from(&IdentityConfig {
            release_keys: vec!["release".into()],
            ..IdentityConfig::default()
        });
        let attrs = vec![kv("deployment.id", "ignored"), kv("release", "r1")];
        let rel = Found::scan(&attrs, &keys).release().unwrap().unwrap();
        assert_eq!(rel.deployment_id, "r1");
    }

    #[test]
    fn overlong_ids_are_errors() {
        let keys = IdentityKeys::default();
        let long = "x".repeat(MAX_ID_LEN + 1);
        let attrs = vec![kv("deployment.id", &long)];
        assert!(matches!(
            Found::scan(&attrs, &keys).release(),
            Err(IdentityError::TooLong {
                what: "deployment id",
                ..
            })
        ));
    }

    #[test]
    fn int_values_accept_strings() {
        let v = AnyValue {
            value: Some(Value::StringValue("503".into())),
        };
        assert_eq!(int_value(Some(&v)), Some(503));
        let v = AnyValue {
            value: Some(Value::IntValue(200)),
        };
        assert_eq!(int_value(Some(&v)), Some(200));
    }
}
