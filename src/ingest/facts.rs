//! What ingest reads of a request besides its release: the endpoint it
//! served and, when it failed, the kind of error. Pure rules over an
//! attribute lookup, so the prost mapper and any other decoder of the same
//! bytes name endpoints and errors alike.

use std::borrow::Cow;

use super::span::Val;
use crate::config::EndpointsCheck;

/// Where the endpoint is read from.
#[derive(Debug, Clone, Default)]
pub struct EndpointKeys {
    /// Each key, split at `/` into the attributes it joins.
    keys: Vec<Vec<String>>,
    span_name: bool,
}

/// The attributes that carry an HTTP request's method, newest first.
const METHOD_KEYS: [&str; 2] = ["http.request.method", "http.method"];
/// The attribute that names a failure in semantic conventions.
pub const ERROR_TYPE: &str = "error.type";
/// Span events and their attribute that record exceptions.
pub const EXCEPTION_EVENT: &str = "exception";
pub const EXCEPTION_TYPE: &str = "exception.type";

impl EndpointKeys {
    pub fn new(c: &EndpointsCheck) -> Self {
        if !c.enabled {
            return Self::default();
        }
        Self {
            keys: c
                .keys
                .iter()
                .map(|k| k.split('/').map(str::to_string).collect())
                .collect(),
            span_name: c.span_name,
        }
    }

    /// Whether endpoints are read at all.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty() || self.span_name
    }

    /// Every attribute key the rule may read (a decoder can skip the rest).
    pub fn attribute_keys(&self) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .flatten()
            .map(String::as_str)
            .chain(METHOD_KEYS)
    }

    /// The endpoint of an item with these attributes: the first key whose
    /// attributes are all present (`http.route` with its method before it),
    /// else, for a SERVER span, its name. A name made of several
    /// attributes is written into `scratch` (reused, so a span costs no
    /// allocation).
    pub fn endpoint<'s, 'a: 's>(
        &self,
        get: impl Fn(&str) -> Option<Val<'a>>,
        server_span_name: Option<&'a str>,
        scratch: &'s mut String,
    ) -> Option<&'s str> {
        let part = |k: &str| get(k).and_then(Val::str).filter(|s| !s.is_empty());
        for key in &self.keys {
            if let [only] = &key[..] {
                let Some(route) = part(only) else {
                    continue;
                };
                if only == "http.route" {
                    let method = METHOD_KEYS.iter().find_map(|k| get(k).and_then(Val::str));
                    if let Some(method) = method.filter(|m| !m.is_empty()) {
                        scratch.clear();
                        scratch.push_str(method);
                        scratch.push(' ');
                        scratch.push_str(route);
                        return Some(scratch);
                    }
                }
                return Some(route);
            }
            if !key.iter().all(|k| part(k).is_some()) {
                continue;
            }
            scratch.clear();
            for (i, k) in key.iter().enumerate() {
                if i > 0 {
                    scratch.push('/');
                }
                scratch.push_str(part(k).unwrap_or_default());
            }
            return Some(scratch);
        }
        if self.span_name {
            server_span_name.filter(|n| !n.is_empty())
        } else {
            None
        }
    }
}

/// The kind of a failed request: its `error.type`, else the type of its
/// first recorded exception, else its status code (`HTTP 503`, `gRPC 14`).
pub fn error_kind<'a>(
    get: impl Fn(&str) -> Option<Val<'a>>,
    exception_type: Option<&'a str>,
    http_keys: &[String],
    grpc_keys: &[String],
) -> Option<Cow<'a, str>> {
    if let Some(t) = get(ERROR_TYPE).and_then(Val::str).filter(|s| !s.is_empty()) {
        return Some(Cow::Borrowed(t));
    }
    if let Some(t) = exception_type.filter(|s| !s.is_empty()) {
        return Some(Cow::Borrowed(t));
    }
    let code = |keys: &[String]| keys.iter().find_map(|k| get(k));
    match code(http_keys) {
        Some(Val::Int(c)) => return Some(Cow::Owned(format!("HTTP {c}"))),
        Some(Val::Str(c)) if !c.is_empty() => return Some(Cow::Owned(format!("HTTP {c}"))),
        _ => {}
    }
    match code(grpc_keys) {
        Some(Val::Int(c)) => Some(Cow::Owned(format!("gRPC {c}"))),
        Some(Val::Str(c)) if !c.is_empty() => Some(Cow::Owned(format!("gRPC {c}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(attrs: &'a [(&'a str, Val<'a>)]) -> impl Fn(&str) -> Option<Val<'a>> + 'a {
        move |k| attrs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v)
    }

    #[test]
    fn endpoints_by_route_with_method_then_rpc_then_span_name() {
        let keys = EndpointKeys::new(&EndpointsCheck::default());
        let http = [
            ("http.route", Val::Str("/checkout")),
            ("http.request.method", Val::Str("POST")),
        ];
        assert_eq!(
            keys.endpoint(lookup(&http), Some("ignored"), &mut String::new()),
            Some("POST /checkout")
        );
        let bare = [("http.route", Val::Str("/health"))];
        assert_eq!(
            keys.endpoint(lookup(&bare), None, &mut String::new()),
            Some("/health")
        );
        let rpc = [
            ("rpc.service", Val::Str("cart.Cart")),
            ("rpc.method", Val::Str("Add")),
        ];
        assert_eq!(
            keys.endpoint(lookup(&rpc), None, &mut String::new()),
            Some("cart.Cart/Add")
        );
        let half = [("rpc.method", Val::Str("Add"))];
        assert_eq!(
            keys.endpoint(lookup(&half), Some("GET"), &mut String::new()),
            Some("GET")
        );
        assert_eq!(keys.endpoint(lookup(&half), None, &mut String::new()), None);
        let off = EndpointKeys::new(&EndpointsCheck {
            enabled: false,
            ..Default::default()
        });
        assert!(!off.enabled());
        assert_eq!(
            off.endpoint(lookup(&http), Some("x"), &mut String::new()),
            None
        );
    }

    #[test]
    fn error_kinds_by_type_then_exception_then_status() {
        let http = vec!["http.response.status_code".to_string()];
        let grpc = vec!["rpc.grpc.status_code".to_string()];
        let typed = [
            ("error.type", Val::Str("timeout")),
            ("http.response.status_code", Val::Int(503)),
        ];
        assert_eq!(
            error_kind(lookup(&typed), Some("java.io.IOException"), &http, &grpc).as_deref(),
            Some("timeout")
        );
        let coded = [("http.response.status_code", Val::Int(503))];
        assert_eq!(
            error_kind(lookup(&coded), Some("java.io.IOException"), &http, &grpc).as_deref(),
            Some("java.io.IOException")
        );
        assert_eq!(
            error_kind(lookup(&coded), None, &http, &grpc).as_deref(),
            Some("HTTP 503")
        );
        let rpc = [("rpc.grpc.status_code", Val::Int(14))];
        assert_eq!(
            error_kind(lookup(&rpc), None, &http, &grpc).as_deref(),
            Some("gRPC 14")
        );
        assert_eq!(error_kind(lookup(&[]), None, &http, &grpc), None);
    }
}
