//! The I/O shell: binds the gRPC and HTTP ports, serves OTLP (`otlp_grpc`,
//! `otlp_http`; gRPC messages received under the bodies' budget by
//! `grpc_bodies`), the JSON API (`api`, with its event stream in `stream`),
//! the Release Health page (`page`) and the verdict service
//! (`verdict_grpc`) over one shared `App`, runs the judge's tick and the
//! expiry, and drains on shutdown. Everything below it is synchronous.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::Code;
use tracing::{info, warn};

mod api;
mod auth;
mod fleet;
mod grpc_bodies;
mod otlp_grpc;
mod otlp_http;
mod page;
mod readers;
mod reload;
mod stream;
mod tls;
mod verdict_grpc;
mod watch;

use crate::app::App;
use crate::clock::system_now;
use crate::config::{Config, LedgerConfig};
use crate::dora::Window;
use crate::export::proto::pb::{self, verdict_service_server::VerdictServiceServer};
use crate::ledger::{
    default_replica, DoraQuery, Ledger, LedgerError, LedgerOptions, PostgresOptions,
};
use crate::notify::Sinks;
use crate::self_metrics::{SinkResult, SinkResultLabels};
use otlp_http as http;
use tls::{Port, Tls, TlsError};
use verdict_grpc::VerdictGrpc;

/// How often idle releases are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// How often the ledger's retention and size cap are enforced.
const LEDGER_UPKEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Why the daemon could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("gRPC reflection could not be set up: {0}")]
    Reflection(String),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Notify(#[from] crate::notify::NotifyError),
}

/// The shortest lease of a claimed delivery (see `open_ledger`).
const CLAIM_LEASE_MIN: Duration = Duration::from_secs(60);

/// How the ledger reaches PostgreSQL beyond its URL: the password and a
/// private CA from `[ledger]`.
pub fn postgres_options(c: &LedgerConfig) -> Result<PostgresOptions, String> {
    Ok(PostgresOptions {
        password: c.password()?,
        ca_file: c.ca_file.clone(),
        ..LedgerOptions::default().postgres
    })
}

/// Opens the configured ledger (none when neither a path nor a URL is
/// set). A database that cannot be opened or reached stops the start, with
/// the reason.
async fn open_ledger(
    config: &Config,
    sinks: Option<&Sinks>,
) -> Result<Option<Arc<Ledger>>, LedgerError> {
    let c = &config.ledger;
    let location = c.location().to_string();
    if location.is_empty() {
        return Ok(None);
    }
    let options = LedgerOptions {
        retention: c.retention,
        max_bytes: Some(c.max_bytes),
        routes: sinks.map(Sinks::routes).unwrap_or_default(),
        postgres: postgres_options(c).map_err(LedgerError::Settings)?,
        // A claim outlives a send and its timeout several times over: only
        // a replica that died lets one lapse.
        claim_lease: CLAIM_LEASE_MIN.max(config.notify.timeout * 4),
        replica: match c.replica.as_str() {
            "" => default_replica(),
            name => name.to_string(),
        },
        ..LedgerOptions::default()
    };
    // PostgreSQL's client blocks: opened off the runtime's threads.
    let ledger = tokio::task::spawn_blocking(move || Ledger::open(&location, options))
        .await
        .map_err(|e| LedgerError::Settings(format!("opening the ledger: {e}")))??;
    info!(path = %ledger.path(), "release ledger open");
    Ok(Some(Arc::new(ledger)))
}

/// Computes the DORA gauges' measures over the trailing window again.
async fn refresh_dora(app: &Arc<App>, ledger: &Arc<Ledger>) {
    let until = system_now();
    let query = DoraQuery {
        service: None,
        environment: None,
        window: Window {
            since: until.saturating_sub(app.config.ledger.dora_window.as_nanos() as u64),
            until,
        },
        bucket: None,
    };
    let ledger = ledger.clone();
    match tokio::task::spawn_blocking(move || ledger.dora(&query)).await {
        Ok(Ok(reports)) => app.set_dora(reports),
        Ok(Err(e)) => warn!(error = %e, "DORA gauges not refreshed"),
        Err(e) => warn!(error = %e, "DORA gauges not refreshed"),
    }
}

/// Bound listeners, ready to serve.
pub struct Server {
    app: Arc<App>,
    auth: Arc<auth::Auth>,
    tls: Option<Arc<Tls>>,
    sinks: Option<Arc<Sinks>>,
    grpc: TcpListener,
    http: TcpListener,
}

/// Reads the TLS files and the token files again (main calls it on SIGHUP).
#[derive(Clone)]
pub struct Reloader {
    tls: Option<Arc<Tls>>,
    auth: Arc<auth::Auth>,
}

impl Reloader {
    pub fn reload(&self) {
        // File reads: off the async workers.
        if let Some(tls) = &self.tls {
            let tls = tls.clone();
            tokio::task::spawn_blocking(move || tls.reload_logged("SIGHUP"));
        }
        if self.auth.has_files() {
            let auth = self.auth.clone();
            tokio::task::spawn_blocking(move || auth.reload_logged("SIGHUP"));
        }
        if self.tls.is_none() && !self.auth.has_files() {
            info!("SIGHUP: no TLS and no token files, nothing to reload");
        }
    }
}

impl Server {
    /// Binds both ports (port 0 picks free ones).
    pub async fn bind(config: Config) -> Result<Self, ServeError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let grpc = bind(config.server.grpc_listen).await?;
        let http = bind(config.server.http_listen).await?;
        let sinks = if config.notify.sinks.is_empty() {
            None
        } else {
            Some(Arc::new(Sinks::load(&config.notify)?))
        };
        let ledger = open_ledger(&config, sinks.as_deref()).await?;
        let app = Arc::new(App::with_ledger(config, system_now(), ledger.clone()));
        let auth = auth::Auth::load(&app.config.auth, app.metrics.token_reloads.clone())?;
        let auth = Arc::new(auth);
        let tls = Tls::load(&app.config.server.tls, app.metrics.tls_reloads.clone())?;
        if let Some(ledger) = ledger {
            let app = app.clone();
            // The ledger's reads block (PostgreSQL's client above all).
            let _ = tokio::task::spawn_blocking(move || fleet::restore(&app, &ledger)).await;
        }
        Ok(Self {
            app,
            auth,
            tls,
            sinks,
            grpc,
            http,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// What reloads the TLS files and the token files on demand.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            tls: self.tls.clone(),
            auth: self.auth.clone(),
        }
    }

    /// Serves until `shutdown` completes, then stops accepting, lets
    /// in-flight requests finish for up to the configured grace, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let (grpc_addr, http_addr) = (self.grpc_addr(), self.http_addr());
        let app = self.app;
        let auth = self.auth;
        let tls = self.tls;
        let sinks = self.sinks;
        let beyond_loopback = !grpc_addr.ip().is_loopback() || !http_addr.ip().is_loopback();
        if auth.ingest_is_open() && beyond_loopback {
            warn!(%grpc_addr, %http_addr, "listening beyond loopback with no ingest tokens: anyone who reaches these ports can move a verdict; set [auth] ingest_tokens_file");
        }
        let stop = CancellationToken::new();
        let me = fleet::Me::new(
            &app.config,
            app.ledger()
                .map_or_else(String::new, |l| l.replica().to_string()),
            http_addr,
            system_now(),
        );
        let peers = Arc::new(fleet::Peers::new(&me.name));
        let adopter = tokio::spawn(fleet::adopt(app.clone(), stop.clone()));
        let follower = {
            let auth = auth.clone();
            let token = move || auth.read_token();
            tokio::spawn(fleet::follow(
                app.clone(),
                peers.clone(),
                token,
                stop.clone(),
            ))
        };
        let limit = app.config.server.max_request_bytes;

        // SSE streams and gRPC watches, capped together.
        let readers = Arc::new(readers::Readers::new(app.clone()));
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<VerdictServiceServer<VerdictGrpc>>()
            .await;
        health.set_serving::<otlp_grpc::TraceServer>().await;
        health.set_serving::<otlp_grpc::MetricsServer>().await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
        // Many clients (grpcurl's older releases, Postman, Evans) still speak v1alpha.
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
        let grpc = tonic::transport::Server::builder()
            .max_concurrent_streams(app.config.server.grpc_max_concurrent_streams)
            // HTTP/1 only to answer it, never to serve it: see WrongProtocol.
            .accept_http1(true)
            .layer(otlp_grpc::WrongProtocol {
                app: app.clone(),
                http_port: http_addr.port(),
            })
            .layer(tower::util::MapResponseLayer::new(otlp_status))
            .layer(auth::GrpcAuth {
                app: app.clone(),
                auth: auth.clone(),
            })
            .layer(grpc_bodies::MessageBudget { app: app.clone() })
            .add_service(
                otlp_grpc::TraceServer::new(app.clone())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .max_decoding_message_size(limit),
            )
            .add_service(
                otlp_grpc::MetricsServer::new(app.clone())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .max_decoding_message_size(limit),
            )
            .add_service({
                let watches = watch::Watches::new(app.clone(), readers.clone(), stop.clone());
                let grpc = VerdictGrpc {
                    app: app.clone(),
                    peers: peers.clone(),
                    watches: watches.clone(),
                };
                watch::WatchServer::new(VerdictServiceServer::new(grpc), watches)
            })
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let grpc = match &tls {
            None => tokio::spawn(grpc.serve_with_incoming_shutdown(
                TcpIncoming::from(self.grpc),
                stop.clone().cancelled_owned(),
            )),
            Some(tls) => {
                let incoming = tls
                    .clone()
                    .incoming(self.grpc, Port::Grpc, stop.clone())
                    .map_err(ServeError::Http)?;
                tokio::spawn(grpc.serve_with_incoming_shutdown(
                    incoming.into_stream(),
                    stop.clone().cancelled_owned(),
                ))
            }
        };

        // Its own state: streams end when the daemon stops.
        let streams = Router::new()
            .route("/api/v1/releases/stream", get(stream::releases))
            .with_state(stream::Streams::new(
                app.clone(),
                readers.clone(),
                stop.clone(),
            ));
        let router = Router::new()
            .route("/", get(page::index))
            .route("/assets/page.css", get(page::css))
            .route("/assets/page.js", get(page::js))
            .route("/v1/traces", post(http::traces))
            .route("/v1/metrics", post(http::metrics))
            .route("/api/v1/releases", get(api::list))
            .route("/api/v1/releases/{deployment_id}", get(api::get))
            .route(
                "/api/v1/releases/{deployment_id}/timeline",
                get(api::timeline),
            )
            .route("/api/v1/releases/{deployment_id}/series", get(api::series))
            .merge(streams)
            .route("/api/v1/events", get(api::events).post(api::post_events))
            .route("/api/v1/dora", get(api::dora))
            .route("/api/v1/senders", get(api::senders))
            .route("/healthz", get(api::healthz))
            .route("/readyz", get(api::readyz))
            .route("/metrics", get(api::metrics))
            .layer(axum::Extension(peers.clone()))
            .layer(DefaultBodyLimit::disable())
            .layer(axum::middleware::from_fn_with_state(
                (app.clone(), auth.clone()),
                auth::http,
            ))
            .with_state(app.clone());
        let http = match &tls {
            None => {
                let http = axum::serve(
                    self.http,
                    router.into_make_service_with_connect_info::<http::PeerAddr>(),
                )
                .with_graceful_shutdown(stop.clone().cancelled_owned());
                tokio::spawn(async move { http.await })
            }
            Some(tls) => {
                let incoming = tls
                    .clone()
                    .incoming(self.http, Port::Http, stop.clone())
                    .map_err(ServeError::Http)?;
                let http = axum::serve(
                    incoming,
                    router.into_make_service_with_connect_info::<http::PeerAddr>(),
                )
                .with_graceful_shutdown(stop.clone().cancelled_owned());
                tokio::spawn(async move { http.await })
            }
        };
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().watch(stop.clone()));
        }
        if auth.has_files() {
            tokio::spawn(auth.clone().watch(stop.clone()));
        }
        let notifiers = match (sinks, app.ledger().cloned()) {
            (Some(sinks), Some(ledger)) => {
                // Each sink's tries at zero from the start, like every counter.
                for sink in &sinks.sinks {
                    for result in [SinkResult::Delivered, SinkResult::Retried, SinkResult::Dead] {
                        let _ = app.metrics.notify_sent.get_or_create(&SinkResultLabels {
                            sink: sink.name.clone(),
                            result,
                        });
                    }
                }
                let metrics = crate::notify::Metrics {
                    sent: app.metrics.notify_sent.clone(),
                    pending: app.metrics.notify_pending.clone(),
                    dead: app.metrics.notify_dead.clone(),
                };
                info!(sinks = sinks.sinks.len(), "notifiers on");
                Some(tokio::spawn(crate::notify::run(
                    ledger,
                    sinks,
                    metrics,
                    stop.clone(),
                )))
            }
            _ => None,
        };

        let ticker = {
            let (app, stop, me, peers) = (app.clone(), stop.clone(), me.clone(), peers.clone());
            tokio::spawn(async move {
                let mut judge = tokio::time::interval(app.config.judge.tick);
                judge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut expiry = tokio::time::interval(EXPIRY_INTERVAL);
                let mut saving = tokio::time::interval(app.config.ledger.checkpoint_interval);
                saving.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut upkeep = tokio::time::interval(LEDGER_UPKEEP_INTERVAL);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = saving.tick() => fleet::checkpoint(&app, &me, &peers).await,
                        _ = upkeep.tick() => {
                            if let Some(ledger) = app.ledger().cloned() {
                                let _ = tokio::task::spawn_blocking(move || {
                                    if let Err(e) = ledger.maintain(system_now()) {
                                        warn!(error = %e, "ledger upkeep failed");
                                    }
                                })
                                .await;
                            }
                        }
                        _ = judge.tick() => {
                            // Judging takes the store lock for a while: keep it off the
                            // async workers that serve requests.
                            let app = app.clone();
                            let _ = tokio::task::spawn_blocking(move || app.tick(system_now())).await;
                        }
                        _ = expiry.tick() => app.expire(system_now()),
                    }
                }
            })
        };

        // Its own task: a long DORA query must not delay the judge's tick.
        let gauges = app.ledger().cloned().map(|ledger| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut refresh = tokio::time::interval(app.config.ledger.dora_refresh);
                refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = refresh.tick() => refresh_dora(&app, &ledger).await,
                    }
                }
            })
        });

        app.set_ready(true);
        info!(%grpc_addr, %http_addr, "release-verdict listening");
        shutdown.await;
        app.set_ready(false);
        let grace = app.config.server.shutdown_grace;
        info!(grace = ?grace, "shutting down: draining in-flight requests");
        stop.cancel();
        let drain = async {
            let grpc = grpc.await;
            let http = http.await;
            let _ = ticker.await;
            let _ = adopter.await;
            let _ = follower.await;
            if let Some(gauges) = gauges {
                let _ = gauges.await;
            }
            if let Some(notifiers) = notifiers {
                let _ = notifiers.await;
            }
            (grpc, http)
        };
        match tokio::time::timeout(grace, drain).await {
            Ok((grpc, http)) => {
                if let Ok(Err(e)) = grpc {
                    return Err(e.into());
                }
                if let Ok(Err(e)) = http {
                    return Err(ServeError::Http(e));
                }
                info!("drained");
            }
            Err(_) => {
                warn!(grace = ?grace, "requests still in flight after the grace period; stopping anyway")
            }
        }
        // Nothing is lost on a clean stop: the last state and every event.
        fleet::checkpoint(&app, &me, &peers).await;
        if let Some(ledger) = app.ledger().cloned() {
            let _ = tokio::task::spawn_blocking(move || ledger.flush()).await;
            info!("ledger checkpointed and flushed");
        }
        Ok(())
    }
}

/// Puts tonic's own refusals in OTLP's terms. Our handlers answer only OK
/// or INVALID_ARGUMENT, so these codes come from tonic's decoding of the
/// request: OUT_OF_RANGE is an over-limit uncompressed message (OTLP says
/// RESOURCE_EXHAUSTED, which tonic already gives a compressed one), and
/// INTERNAL an undecodable one — the client's bad input, not our fault,
/// so INVALID_ARGUMENT (which exporters do not retry).
fn otlp_status<B>(mut resp: axum::http::Response<B>) -> axum::http::Response<B> {
    let Some(code) = resp
        .headers()
        .get("grpc-status")
        .map(|s| Code::from_bytes(s.as_bytes()))
    else {
        return resp;
    };
    let mapped = match code {
        Code::OutOfRange => Code::ResourceExhausted,
        Code::Internal => Code::InvalidArgument,
        _ => return resp,
    };
    resp.headers_mut()
        .insert("grpc-status", axum::http::HeaderValue::from(mapped as i32));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_status(code: &'static str) -> axum::http::Response<()> {
        let mut r = axum::http::Response::new(());
        r.headers_mut()
            .insert("grpc-status", axum::http::HeaderValue::from_static(code));
        r
    }

    #[test]
    fn tonic_refusals_become_otlp_codes() {
        let code =
            |r: axum::http::Response<()>| r.headers()["grpc-status"].to_str().unwrap().to_string();
        assert_eq!(code(otlp_status(with_status("11"))), "8");
        assert_eq!(code(otlp_status(with_status("13"))), "3");
        assert_eq!(code(otlp_status(with_status("0"))), "0");
        assert_eq!(code(otlp_status(with_status("14"))), "14");
    }
}
