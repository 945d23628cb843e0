//! Bearer tokens by scope: `ingest` (OTLP over gRPC and HTTP), `read` (the
//! JSON API, `/metrics`, the verdict gRPC service and reflection) and
//! `write` (posted ledger events). A scope with no tokens file is open;
//! `/healthz`, `/readyz`, gRPC health and the Release Health page's own
//! HTML, CSS and JS always are. Tokens are compared in
//! constant time and never logged. The files are read again when they
//! change and on SIGHUP; a file that cannot be read then leaves the tokens
//! in force as they were.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::reload::{self, Watched};
use crate::app::{App, ServiceScope, TokenSender};
use crate::config::AuthConfig;
use crate::self_metrics::{Reason, ReloadLabels, Signal, Transport};

/// What a request is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ingest,
    Read,
    Write,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

/// Why the tokens could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth.{key} {path}: {source}")]
    Unreadable {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("auth.{key} {path} holds no token (one per line; # starts a comment)")]
    Empty { key: &'static str, path: String },
    #[error("auth.{key} {path} line {line}: {message}")]
    BadLine {
        key: &'static str,
        path: String,
        line: usize,
        message: String,
    },
}

/// One token, and for an ingest token the services it may send for
/// (`TOKEN service=checkout,pay`; all when not said).
#[derive(Debug)]
struct Token {
    secret: Vec<u8>,
    services: Option<ServiceScope>,
    /// Who sends with it, for per-sender quotas (derived from the secret).
    sender: TokenSender,
}

/// What a request's token grants it; the default when its scope is open.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    /// The services it may send for; None: any.
    pub services: Option<ServiceScope>,
    /// Which token it came with.
    pub token: Option<TokenSender>,
}

impl Grant {
    /// Puts what the handlers read on the request.
    fn attach(self, extensions: &mut axum::http::Extensions) {
        if let Some(services) = self.services {
            extensions.insert(services);
        }
        if let Some(token) = self.token {
            extensions.insert(token);
        }
    }
}

/// The tokens of each scope; None is open.
#[derive(Debug, Default)]
struct Tokens {
    ingest: Option<Vec<Token>>,
    read: Option<Vec<Token>>,
    write: Option<Vec<Token>>,
}

/// A tokens file's line: the token, then for ingest tokens optionally
/// `service=a,b`.
fn parse_token(key: &'static str, path: &str, n: usize, line: &str) -> Result<Token, AuthError> {
    let bad = |message: String| AuthError::BadLine {
        key,
        path: path.to_string(),
        line: n + 1,
        message,
    };
    let mut words = line.split_whitespace();
    let secret = words.next().unwrap_or_default().as_bytes().to_vec();
    let mut services = None;
    for word in words {
        let Some(list) = word.strip_prefix("service=") else {
            return Err(bad(format!(
                "{word:?} is not an option (after the token: service=NAME[,NAME...])"
            )));
        };
        if key != "ingest_tokens_file" {
            return Err(bad("service= limits ingest tokens only".to_string()));
        }
        let names: Vec<String> = list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return Err(bad("service= names no service".to_string()));
        }
        services = Some(ServiceScope(names.into()));
    }
    let sender = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (key, &secret).hash(&mut h);
        TokenSender(h.finish())
    };
    Ok(Token {
        secret,
        services,
        sender,
    })
}

impl Tokens {
    /// Reads the configured tokens files.
    fn load(c: &AuthConfig) -> Result<Tokens, AuthError> {
        let file = |key: &'static str, path: &str| -> Result<Option<Vec<Token>>, AuthError> {
            if path.is_empty() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(path).map_err(|source| AuthError::Unreadable {
                key,
                path: path.to_string(),
                source,
            })?;
            let tokens = text
                .lines()
                .map(str::trim)
                .enumerate()
                .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
                .map(|(n, l)| parse_token(key, path, n, l))
                .collect::<Result<Vec<Token>, AuthError>>()?;
            if tokens.is_empty() {
                return Err(AuthError::Empty {
                    key,
                    path: path.to_string(),
                });
            }
            Ok(Some(tokens))
        };
        Ok(Tokens {
            ingest: file("ingest_tokens_file", &c.ingest_tokens_file)?,
            read: file("read_tokens_file", &c.read_tokens_file)?,
            write: file("write_tokens_file", &c.write_tokens_file)?,
        })
    }

    /// Checks the `Authorization: Bearer …` header for `scope`: what the
    /// token grants, or the message to answer with.
    fn check(&self, scope: Scope, headers: &HeaderMap) -> Result<Grant, String> {
        let tokens = match scope {
            Scope::Ingest => &self.ingest,
            Scope::Read => &self.read,
            Scope::Write => &self.write,
        };
        let Some(tokens) = tokens else {
            return Ok(Grant::default());
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (kind, token) = v.trim().split_once(' ')?;
                kind.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let Some(presented) = presented else {
            return Err(format!(
                "a {} token is required: send Authorization: Bearer <token>",
                scope.as_str()
            ));
        };
        // Every token is compared, whatever matched: the time taken tells
        // nothing about which bytes were right.
        let matched = tokens.iter().fold(None, |found, t| {
            if same(&t.secret, presented.as_bytes()) {
                Some(t)
            } else {
                found
            }
        });
        match matched {
            Some(token) => Ok(Grant {
                services: token.services.clone(),
                token: Some(token.sender),
            }),
            None => Err(format!("the token is not a valid {} token", scope.as_str())),
        }
    }
}

/// The tokens in force and the files they come from.
#[derive(Debug)]
pub struct Auth {
    files: AuthConfig,
    tokens: RwLock<Arc<Tokens>>,
    watched: Watched,
}

impl Auth {
    /// Reads the configured tokens files; a file that is missing, unreadable
    /// or holds no token stops the start, with the reason.
    pub fn load(c: &AuthConfig, reloads: Family<ReloadLabels, Counter>) -> Result<Auth, AuthError> {
        let paths = c.files().into_iter().filter(|p| !p.is_empty());
        let watched = Watched::new(paths.map(String::from).collect(), reloads);
        let tokens = Tokens::load(c)?;
        Ok(Auth {
            files: c.clone(),
            tokens: RwLock::new(Arc::new(tokens)),
            watched,
        })
    }

    /// `Bearer <token>` of the first read token in force, if reads need
    /// one: what this replica reads the others' event streams with
    /// (replicas sharing a ledger share their configuration).
    pub fn read_token(&self) -> Option<axum::http::HeaderValue> {
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let first = tokens.read.as_ref()?.first()?;
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(&first.secret);
        axum::http::HeaderValue::from_bytes(&value).ok()
    }

    /// Whether any scope has a tokens file (so there is something to reload).
    pub fn has_files(&self) -> bool {
        self.files.files().iter().any(|p| !p.is_empty())
    }

    /// Whether telemetry can be sent without a token. Fixed at start: a
    /// reload changes the tokens of a scope, never whether it has any.
    pub fn ingest_is_open(&self) -> bool {
        self.files.ingest_tokens_file.is_empty()
    }

    /// Reads the files again and puts their tokens in force; on an error
    /// the tokens in force stay, and the error is returned.
    pub fn reload(&self) -> Result<(), AuthError> {
        let tokens = self.watched.reload(|| Tokens::load(&self.files))?;
        *self.tokens.write().expect("tokens lock") = Arc::new(tokens);
        Ok(())
    }

    /// Reloads and says how it went (never which tokens).
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => info!(why, "tokens reloaded"),
            Err(e) => {
                warn!(why, error = %e, "tokens not reloaded; the previous ones stay in force")
            }
        }
    }

    /// Looks at the files every `reload_interval` until `stop`, and
    /// reloads when one changed.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let interval = self.files.reload_interval;
        reload::every(interval, stop, move || {
            if self.watched.changed() {
                self.reload_logged("the files changed");
            }
        })
        .await;
    }

    /// Checks the `Authorization: Bearer …` header for `scope` against the
    /// tokens in force: what the token grants, or the message to answer
    /// with.
    pub fn check(&self, scope: Scope, headers: &HeaderMap) -> Result<Grant, String> {
        let tokens = self.tokens.read().expect("tokens lock").clone();
        tokens.check(scope, headers)
    }
}

/// Equality in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The scope an HTTP request needs; None for health.
fn http_scope(method: &Method, path: &str) -> Option<Scope> {
    match path {
        "/healthz" | "/readyz" => None,
        // The page is open; the JSON it reads asks for a read token.
        p if super::page::is_page(p) => None,
        "/v1/traces" | "/v1/metrics" => Some(Scope::Ingest),
        "/api/v1/events" if method == Method::POST => Some(Scope::Write),
        _ => Some(Scope::Read),
    }
}

/// Axum middleware: 401 with `WWW-Authenticate: Bearer` unless the request
/// carries a token of its scope.
pub async fn http(
    State((app, auth)): State<(Arc<App>, Arc<Auth>)>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let Some(scope) = http_scope(req.method(), path) else {
        return next.run(req).await;
    };
    match auth.check(scope, req.headers()) {
        Ok(grant) => {
            grant.attach(req.extensions_mut());
            next.run(req).await
        }
        Err(message) => {
            if scope == Scope::Ingest {
                let signal = if path == "/v1/metrics" {
                    Signal::Points
                } else {
                    Signal::Spans
                };
                app.refuse_request(signal, Transport::Http, Reason::Unauthenticated);
            }
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(serde_json::json!({ "error": message })),
            )
                .into_response()
        }
    }
}

/// The scope a gRPC method needs; None for health.
fn grpc_scope(path: &str) -> Option<(Scope, Option<Signal>)> {
    if path.starts_with("/grpc.health.") {
        None
    } else if path.starts_with("/opentelemetry.proto.collector.metrics.") {
        Some((Scope::Ingest, Some(Signal::Points)))
    } else if path.starts_with("/opentelemetry.proto.collector.") {
        Some((Scope::Ingest, Some(Signal::Spans)))
    } else {
        Some((Scope::Read, None))
    }
}

/// Tower layer for the gRPC server: UNAUTHENTICATED unless the call
/// carries a token of its method's scope.
#[derive(Clone)]
pub struct GrpcAuth {
    pub app: Arc<App>,
    pub auth: Arc<Auth>,
}

impl<S> tower::Layer<S> for GrpcAuth {
    type Service = GrpcAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcAuthService {
            inner,
            app: self.app.clone(),
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcAuthService<S> {
    inner: S,
    app: Arc<App>,
    auth: Arc<Auth>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<axum::http::Request<B>> for GrpcAuthService<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        let checked = grpc_scope(req.uri().path())
            .map(|(scope, signal)| (self.auth.check(scope, req.headers()), signal));
        let denied = match checked {
            None => None,
            Some((Ok(grant), _)) => {
                grant.attach(req.extensions_mut());
                None
            }
            Some((Err(message), signal)) => {
                if let Some(signal) = signal {
                    self.app
                        .refuse_request(signal, Transport::Grpc, Reason::Unauthenticated);
                }
                Some(message)
            }
        };
        match denied {
            None => Box::pin(self.inner.call(req)),
            Some(message) => {
                let resp = tonic::Status::unauthenticated(message).into_http();
                Box::pin(async move { Ok(resp) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(ingest: &[&str]) -> Tokens {
        Tokens {
            ingest: Some(
                ingest
                    .iter()
                    .enumerate()
                    .map(|(n, l)| parse_token("ingest_tokens_file", "t", n, l).unwrap())
                    .collect(),
            ),
            ..Tokens::default()
        }
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn tokens_are_checked_by_scope() {
        let a = auth(&["s3cret", "other"]);
        let services = |h: &HeaderMap| a.check(Scope::Ingest, h).map(|g| g.services);
        assert_eq!(services(&bearer("Bearer s3cret")), Ok(None));
        assert_eq!(services(&bearer("bearer  other ")), Ok(None));
        // each token is a sender of its own
        let (one, two) = (
            a.check(Scope::Ingest, &bearer("Bearer s3cret"))
                .unwrap()
                .token,
            a.check(Scope::Ingest, &bearer("Bearer other"))
                .unwrap()
                .token,
        );
        assert!(one.is_some() && two.is_some() && one != two);
        assert!(a.check(Scope::Ingest, &bearer("Bearer s3cre")).is_err());
        assert!(a.check(Scope::Ingest, &bearer("Basic s3cret")).is_err());
        let missing = a.check(Scope::Ingest, &HeaderMap::new()).unwrap_err();
        assert!(missing.contains("ingest token is required"), "{missing}");
        assert!(!missing.contains("s3cret"), "never echoes a token");
        assert_eq!(
            a.check(Scope::Read, &HeaderMap::new()),
            Ok(Grant::default()),
            "open"
        );
    }

    #[test]
    fn an_ingest_token_may_be_limited_to_services() {
        let a = auth(&["team-a service=checkout,pay", "anyone"]);
        let scope = a.check(Scope::Ingest, &bearer("Bearer team-a")).unwrap();
        assert_eq!(
            scope.services,
            Some(ServiceScope(vec!["checkout".into(), "pay".into()].into()))
        );
        let anyone = a.check(Scope::Ingest, &bearer("Bearer anyone")).unwrap();
        assert_eq!(anyone.services, None);
        assert!(a
            .check(Scope::Ingest, &bearer("Bearer team-a service=checkout"))
            .is_err());
        let bad = parse_token("ingest_tokens_file", "t", 2, "x servce=a").unwrap_err();
        assert!(bad.to_string().contains("line 3"), "{bad}");
        let bad = parse_token("read_tokens_file", "t", 0, "x service=a").unwrap_err();
        assert!(bad.to_string().contains("ingest tokens only"), "{bad}");
        assert!(parse_token("ingest_tokens_file", "t", 0, "x service=").is_err());
    }

    #[test]
    fn scopes_of_paths() {
        assert_eq!(http_scope(&Method::GET, "/healthz"), None);
        assert_eq!(http_scope(&Method::POST, "/v1/traces"), Some(Scope::Ingest));
        assert_eq!(
            http_scope(&Method::POST, "/api/v1/events"),
            Some(Scope::Write)
        );
        assert_eq!(
            http_scope(&Method::GET, "/api/v1/events"),
            Some(Scope::Read)
        );
        assert_eq!(http_scope(&Method::GET, "/metrics"), Some(Scope::Read));
        assert_eq!(http_scope(&Method::GET, "/"), None);
        assert_eq!(http_scope(&Method::GET, "/assets/page.js"), None);
        assert_eq!(
            http_scope(&Method::GET, "/api/v1/releases/stream"),
            Some(Scope::Read)
        );
        assert_eq!(grpc_scope("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            grpc_scope("/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
            Some((Scope::Ingest, Some(Signal::Spans)))
        );
        assert_eq!(
            grpc_scope("/release_verdict.v1.VerdictService/GetVerdict"),
            Some((Scope::Read, None))
        );
    }

    #[test]
    fn token_files_skip_comments_and_refuse_emptiness() {
        let dir = std::env::temp_dir().join(format!("rv-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "# CI\n  tok-1  \n\ntok-2\n").unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "# nobody\n").unwrap();
        let c = AuthConfig {
            ingest_tokens_file: good.to_string_lossy().into(),
            ..AuthConfig::default()
        };
        let a = Tokens::load(&c).unwrap();
        assert_eq!(a.ingest.as_ref().unwrap().len(), 2);
        assert!(a.read.is_none());
        let c = AuthConfig {
            read_tokens_file: empty.to_string_lossy().into(),
            ..AuthConfig::default()
        };
        assert!(matches!(Tokens::load(&c), Err(AuthError::Empty { .. })));
        let c = AuthConfig {
            write_tokens_file: dir.join("missing").to_string_lossy().into(),
            ..AuthConfig::default()
        };
        assert!(matches!(
            Tokens::load(&c),
            Err(AuthError::Unreadable { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
