//! This daemon among the replicas sharing its ledger: what it restores at
//! start, its checkpoint (each fleet's state and its own heartbeat, and
//! the fleets it lets go of because another replica receives them now),
//! and the state it takes for a fleet first seen here (a service the
//! Collector's ring moved to it). `peers`: the other replicas and the
//! reads forwarded to them; `follow`: their event streams, relayed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::{App, Found};
use crate::clock::system_now;
use crate::config::Config;
use crate::ledger::states::Checkpoint;
use crate::ledger::Ledger;
use crate::model::{FleetKey, UnixNanos};

mod follow;
mod peers;

pub use follow::follow;
pub use peers::{
    alive_for, elsewhere, peer_listings, recorded_verdict, Elsewhere, Peers, FORWARDED,
};

/// How far back the ledger's record of baselines is read at start.
const RECORDED_BASELINES_SINCE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most recorded pairs read at start.
const RECORDED_BASELINES_MAX: usize = 100_000;
/// A fleet whose latest telemetry here is this much older than another
/// replica's was moved away (an HA pair's copies stay within it).
const LET_GO_AFTER: Duration = Duration::from_secs(10);

/// This daemon as the other replicas see it.
#[derive(Debug, Clone)]
pub struct Me {
    pub name: String,
    /// Where its HTTP API answers.
    pub url: String,
    pub started_ns: UnixNanos,
}

impl Me {
    pub fn new(config: &Config, name: String, http: SocketAddr, started_ns: UnixNanos) -> Me {
        let url = match config.ledger.advertise_url.trim_end_matches('/') {
            "" => {
                let scheme = if config.server.tls.enabled() {
                    "https"
                } else {
                    "http"
                };
                let host = if http.ip().is_unspecified() {
                    crate::ledger::default_replica()
                } else {
                    http.ip().to_string()
                };
                match http {
                    SocketAddr::V6(_) if !http.ip().is_unspecified() => {
                        format!("{scheme}://[{host}]:{}", http.port())
                    }
                    _ => format!("{scheme}://{host}:{}", http.port()),
                }
            }
            url => url.to_string(),
        };
        Me {
            name,
            url,
            started_ns,
        }
    }
}

/// Brings back the judge's state from the ledger at start: the fleets this
/// replica judged last, and what the ledger recorded since: its record of
/// baselines, and the releases it recorded red (a red after the last
/// checkpoint stays red, with the same `red_since`, whenever the daemon
/// died). A ledger from before fleet states gives its whole-daemon
/// checkpoint instead.
pub fn restore(app: &App, ledger: &Ledger) {
    let since = system_now().saturating_sub(RECORDED_BASELINES_SINCE.as_nanos() as u64);
    match ledger.recorded_baselines(since, RECORDED_BASELINES_MAX) {
        Ok(pairs) => app.remember_baselines(pairs),
        Err(e) => warn!(error = %e, "the ledger's record of baselines could not be read"),
    }
    // Held by the store until each release is tracked; a release idle
    // longer than the expiry would be forgotten anyway.
    let idle = app.config.limits.release_idle_expiry.as_nanos() as u64;
    match ledger.recorded_reds(system_now().saturating_sub(idle), RECORDED_BASELINES_MAX) {
        Ok(reds) => {
            if !reds.is_empty() {
                info!(
                    releases = reds.len(),
                    "red releases recorded in the ledger stay red"
                );
            }
            app.remember_reds(reds)
        }
        Err(e) => warn!(error = %e, "the ledger's record of red releases could not be read"),
    }
    let fleets = match ledger.own_fleets() {
        Ok(fleets) => fleets,
        Err(e) => {
            warn!(error = %e, "the ledger's fleet states could not be read; starting afresh");
            return;
        }
    };
    if fleets.is_empty() {
        restore_whole(app, ledger);
        return;
    }
    let (mut releases, now) = (0, system_now());
    for saved in fleets {
        let key = FleetKey::new(saved.state.service, saved.state.environment);
        let found = Found {
            state: Some(saved.state.data),
            ..Found::default()
        };
        match app.adopt(&key, found, now) {
            Ok(n) => releases += n,
            Err(e) => warn!(service = %key.service, environment = %key.environment, error = %e,
                "a fleet's state in the ledger was not restored; it starts afresh"),
        }
    }
    info!(releases, "restored the judge's state from the ledger");
}

/// The whole-daemon checkpoint of a ledger from before fleet states.
fn restore_whole(app: &App, ledger: &Ledger) {
    match ledger.load_checkpoint() {
        Ok(Some((written, bytes))) => match app.restore(&bytes) {
            Ok(n) => info!(
                releases = n,
                age_s = system_now().saturating_sub(written) / 1_000_000_000,
                "restored the judge's state from the ledger's checkpoint"
            ),
            Err(e) => {
                warn!(error = %e, "the ledger's checkpoint was not restored; starting afresh")
            }
        },
        Ok(None) => {}
        Err(e) => warn!(error = %e, "the ledger's checkpoint could not be read; starting afresh"),
    }
}

/// Writes each fleet's state and this replica's heartbeat to the ledger,
/// off the async workers; then reads which replicas are alive.
pub async fn checkpoint(app: &Arc<App>, me: &Me, peers: &Peers) {
    let Some(ledger) = app.ledger().cloned() else {
        return;
    };
    let (shared, me) = (app.clone(), me.clone());
    let alive = alive_for(&app.config).as_nanos() as u64;
    let written = tokio::task::spawn_blocking(move || {
        let now = system_now();
        let idle = shared.config.limits.release_idle_expiry.as_nanos() as u64;
        let fleets = shared.fleet_states();
        let mine: HashMap<(String, String), UnixNanos> = fleets
            .iter()
            .map(|f| ((f.service.clone(), f.environment.clone()), f.last_seen_ns))
            .collect();
        let checkpoint = Checkpoint {
            now,
            fleets,
            url: me.url,
            started_ns: me.started_ns,
            forget_before: now.saturating_sub(idle.max(alive)),
        };
        ledger.save_fleets(checkpoint)?;
        // A fleet whose telemetry reaches another replica and no longer
        // this one was moved away: let it go.
        let lost: Vec<FleetKey> = ledger
            .fleets_judged_elsewhere()?
            .into_iter()
            .filter(|(s, e, seen)| {
                let key = (s.clone(), e.clone());
                let behind = alive.max(LET_GO_AFTER.as_nanos() as u64);
                mine.get(&key).is_some_and(|mine| *seen > mine.saturating_add(behind))
            })
            .map(|(s, e, _)| FleetKey::new(s, e))
            .collect();
        if !lost.is_empty() {
            let releases = shared.let_go(&lost);
            info!(fleets = lost.len(), releases,
                "let go of services another replica receives now; reads of them are forwarded there");
        }
        let replicas = ledger.replicas(now.saturating_sub(alive))?;
        Ok::<_, crate::ledger::LedgerError>((now, replicas))
    })
    .await;
    match written {
        Ok(Ok((at, replicas))) => {
            app.metrics
                .checkpoint_written
                .set(at as f64 / 1_000_000_000.0);
            peers.set_alive(replicas);
        }
        Ok(Err(e)) => warn!(error = %e, "checkpoint not written"),
        Err(e) => warn!(error = %e, "checkpoint task failed"),
    }
}

/// Looks, for each fleet first seen here, for what the ledger holds of it
/// (its state as its last judge checkpointed it, its reds, its pairs) and
/// hands it to the judge: a service moved to this replica carries on.
pub async fn adopt(app: Arc<App>, stop: CancellationToken) {
    let Some(ledger) = app.ledger().cloned() else {
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = app.adoptions().notified() => {}
        }
        let keys = app.take_to_adopt();
        if keys.is_empty() {
            continue;
        }
        let (app, ledger) = (app.clone(), ledger.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let idle = app.config.limits.release_idle_expiry.as_nanos() as u64;
            for key in keys {
                if !app.is_adopting(&key) {
                    // Evicted, or judged on its own after its wait.
                    continue;
                }
                let since = system_now().saturating_sub(idle);
                let found = look_up(&ledger, &key, since);
                let from = found.as_ref().ok().and_then(|(f, from)| f.state.as_ref().map(|_| from.clone()));
                let found = found.map(|(f, _)| f).unwrap_or_else(|e| {
                    warn!(service = %key.service, environment = %key.environment, error = %e,
                        "the ledger could not be asked for a fleet's state; it starts afresh");
                    Found::default()
                });
                match app.adopt(&key, found, system_now()) {
                    Ok(0) => {}
                    Ok(n) => info!(service = %key.service, environment = %key.environment,
                        releases = n, from = from.as_deref().unwrap_or(""),
                        "carried on with a fleet's state from the ledger"),
                    Err(e) => warn!(service = %key.service, environment = %key.environment,
                        error = %e, "a fleet's state in the ledger was not taken; it starts afresh"),
                }
            }
        })
        .await;
    }
}

/// What the ledger holds of a fleet seen since `since`, and who wrote its
/// state.
fn look_up(
    ledger: &Ledger,
    key: &FleetKey,
    since: UnixNanos,
) -> Result<(Found, String), crate::ledger::LedgerError> {
    let (service, environment) = (&*key.service, &*key.environment);
    let saved = ledger.fleet_state(service, environment, since)?;
    let reds = ledger.recorded_reds_of(service, environment, since)?;
    let baselines = ledger.recorded_baselines_of(service, environment, since)?;
    let from = saved
        .as_ref()
        .map(|s| s.replica.clone())
        .unwrap_or_default();
    let found = Found {
        state: saved.map(|s| s.state.data),
        reds,
        baselines,
    };
    Ok((found, from))
}
