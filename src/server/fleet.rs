//! This daemon among the replicas sharing its ledger: what it restores at
//! start, its checkpoint (each fleet's state and its own heartbeat), the
//! state it takes for a fleet first seen here (a service the Collector's
//! ring moved to it), and the reads it forwards to the replica judging a
//! release (`Peers`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::{App, Found};
use crate::clock::system_now;
use crate::config::Config;
use crate::ledger::states::{Checkpoint, Replica};
use crate::ledger::Ledger;
use crate::model::{FleetKey, UnixNanos};

/// How far back the ledger's record of baselines is read at start.
const RECORDED_BASELINES_SINCE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most recorded pairs read at start.
const RECORDED_BASELINES_MAX: usize = 100_000;

/// The longest a read waits for the replica judging the release: past it
/// the ledger's last verdict answers, and the peer is skipped for
/// `PEER_DOWN_FOR` (a dead peer costs its timeout once).
pub const FORWARD_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a peer that did not answer is not asked again.
const PEER_DOWN_FOR: Duration = Duration::from_secs(10);
/// A fleet whose latest telemetry here is this much older than another
/// replica's was moved away (an HA pair's copies stay within it).
const LET_GO_AFTER: Duration = Duration::from_secs(10);
/// Marks a forwarded read: the replica asked answers from what it holds
/// (live, or the ledger), never forwarding again.
pub const FORWARDED: &str = "x-release-verdict-forwarded";

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

/// How long a replica's heartbeat says it is alive: three checkpoints.
pub fn alive_for(config: &Config) -> Duration {
    (config.ledger.checkpoint_interval * 3).max(Duration::from_secs(3))
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

/// The replicas beside this one, and how to ask them.
pub struct Peers {
    me: String,
    alive: Mutex<Vec<Replica>>,
    /// Peers that did not answer, not asked again until then.
    down: Mutex<HashMap<String, Instant>>,
    http: reqwest::Client,
}

/// A read answered by the replica judging the release.
pub struct Forwarded {
    pub status: u16,
    pub body: bytes::Bytes,
    pub replica: String,
}

impl Peers {
    pub fn new(me: &Me) -> Peers {
        let http = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .connect_timeout(FORWARD_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Peers {
            me: me.name.clone(),
            alive: Mutex::new(Vec::new()),
            down: Mutex::new(HashMap::new()),
            http,
        }
    }

    fn set_alive(&self, mut replicas: Vec<Replica>) {
        replicas.retain(|r| r.name != self.me);
        *self.alive.lock().unwrap_or_else(PoisonError::into_inner) = replicas;
    }

    /// The other replicas alive at the last checkpoint, but those that
    /// did not answer lately.
    pub fn others(&self) -> Vec<Replica> {
        let now = Instant::now();
        let down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        let alive = self.alive.lock().unwrap_or_else(PoisonError::into_inner);
        alive
            .iter()
            .filter(|r| down.get(&r.name).is_none_or(|until| *until <= now))
            .cloned()
            .collect()
    }

    /// Whether `name` is a replica to ask (alive, answering lately).
    pub fn askable(&self, name: &str) -> Option<Replica> {
        self.others().into_iter().find(|r| r.name == name)
    }

    /// GETs `path_and_query` from `peer` as the caller would (its
    /// `Authorization` header), within `FORWARD_TIMEOUT`. A peer that does
    /// not answer is skipped for a while; None then.
    pub async fn get(
        &self,
        peer: &Replica,
        path_and_query: &str,
        authorization: Option<&axum::http::HeaderValue>,
    ) -> Option<Forwarded> {
        let mut request = self
            .http
            .get(format!("{}{path_and_query}", peer.url))
            .header(FORWARDED, "1");
        if let Some(auth) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        let answer = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            Ok::<_, reqwest::Error>((status, response.bytes().await?))
        };
        match answer.await {
            Ok((status, body)) if status < 500 => Some(Forwarded {
                status,
                body,
                replica: peer.name.clone(),
            }),
            outcome => {
                let why = match outcome {
                    Ok((status, _)) => format!("HTTP {status}"),
                    Err(e) => e.to_string(),
                };
                warn!(peer = %peer.name, url = %peer.url, error = %why,
                    "a replica did not answer a forwarded read; the ledger answers for it a while");
                self.down
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(peer.name.clone(), Instant::now() + PEER_DOWN_FOR);
                None
            }
        }
    }
}

/// Where the answer for a release this replica does not judge comes from.
pub enum Elsewhere {
    /// The replica judging it answered (its JSON body).
    Judged { body: bytes::Bytes, replica: String },
    /// The ledger's last verdict of each release it knows by that id (none:
    /// no release by that id at all).
    Recorded(Vec<crate::ledger::ReleaseRecord>),
}

/// Percent-encodes a path segment or a query value.
pub fn encode(value: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, RESERVED).to_string()
}

/// `?service=&environment=` of a filter ("" when empty).
pub fn fleet_query(filter: &crate::verdict::Filter) -> String {
    let parts: Vec<String> = [
        ("service", &filter.service),
        ("environment", &filter.environment),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.as_deref().map(|v| format!("{key}={}", encode(v))))
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Asks for release `id` (narrowed by `filter`) where it is judged: the
/// live replica judging its fleet (GET `/api/v1/releases/{id}{tail}`, as
/// the caller, when `forward`), else the ledger's record. None when there
/// is no ledger.
pub async fn elsewhere(
    app: &Arc<App>,
    peers: &Peers,
    id: &str,
    filter: &crate::verdict::Filter,
    tail: &str,
    authorization: Option<&axum::http::HeaderValue>,
    forward: bool,
) -> Option<Elsewhere> {
    let ledger = app.ledger()?.clone();
    let alive_since = system_now().saturating_sub(alive_for(&app.config).as_nanos() as u64);
    let (id_owned, f) = (id.to_string(), filter.clone());
    let (records, judge) = tokio::task::spawn_blocking(move || {
        let records = ledger
            .find_release(&id_owned, f.service.as_deref(), f.environment.as_deref())
            .unwrap_or_default();
        let fleet = match (f.service, f.environment, records.as_slice()) {
            (Some(s), Some(e), _) => Some((s, e)),
            (_, _, [one]) => Some((one.service.clone(), one.environment.clone())),
            _ => None,
        };
        let judge = fleet
            .filter(|_| forward)
            .and_then(|(service, environment)| {
                let judge = ledger
                    .judge_of(&service, &environment, alive_since)
                    .ok()??;
                Some((judge, service, environment))
            });
        (records, judge)
    })
    .await
    .ok()?;
    if let Some((judge, service, environment)) = judge {
        if let Some(peer) = peers.askable(&judge.name) {
            let fleet = crate::verdict::Filter {
                service: Some(service),
                environment: Some(environment),
            };
            let path = format!(
                "/api/v1/releases/{}{tail}{}",
                encode(id),
                fleet_query(&fleet)
            );
            if let Some(answer) = peers.get(&peer, &path, authorization).await {
                if answer.status == 200 {
                    return Some(Elsewhere::Judged {
                        body: answer.body,
                        replica: answer.replica,
                    });
                }
            }
        }
    }
    Some(Elsewhere::Recorded(records))
}

/// The listings of every other live replica (`GET /api/v1/releases`, as
/// the caller), those that answered in time.
pub async fn peer_listings(
    peers: &Peers,
    filter: &crate::verdict::Filter,
    authorization: Option<&axum::http::HeaderValue>,
) -> Vec<bytes::Bytes> {
    let path = format!("/api/v1/releases{}", fleet_query(filter));
    let others = peers.others();
    let asks = others
        .iter()
        .map(|peer| peers.get(peer, &path, authorization));
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .filter(|a| a.status == 200)
        .map(|a| a.body)
        .collect()
}

/// A ledger record's verdict, marked not live.
pub fn recorded_verdict(record: &crate::ledger::ReleaseRecord) -> Option<crate::verdict::Verdict> {
    let mut v: crate::verdict::Verdict = serde_json::from_str(&record.verdict_json).ok()?;
    v.live = Some(false);
    Some(v)
}

/// Longest event (a peer's snapshot) read from a peer's stream: past it
/// the stream is dropped and followed again later.
const MAX_PEER_EVENT: usize = 256 << 20;
/// How soon a peer's stream that ended is followed again.
const FOLLOW_AGAIN: Duration = Duration::from_secs(1);

/// Follows the event stream of every other live replica, so this one's
/// watchers (SSE, gRPC `WatchVerdicts`) hear of the releases they judge:
/// their snapshot, then each change. `token` gives the read token to ask
/// with (replicas share their configuration).
pub async fn follow(
    app: Arc<App>,
    peers: Arc<Peers>,
    token: impl Fn() -> Option<axum::http::HeaderValue> + Send + Sync + 'static,
    stop: CancellationToken,
) {
    let token = Arc::new(token);
    let http = reqwest::Client::builder()
        .connect_timeout(FORWARD_TIMEOUT)
        .read_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default();
    let mut following: HashMap<String, (String, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = every.tick() => {}
        }
        let alive: HashMap<String, Replica> = {
            let alive = peers.alive.lock().unwrap_or_else(PoisonError::into_inner);
            alive.iter().map(|r| (r.name.clone(), r.clone())).collect()
        };
        following.retain(|name, (url, task)| {
            let keep = alive.get(name).is_some_and(|r| &r.url == url) && !task.is_finished();
            if !keep {
                task.abort();
                app.forget_remote(name);
            }
            keep
        });
        for (name, peer) in alive {
            if following.contains_key(&name) {
                continue;
            }
            let (app, http, token) = (app.clone(), http.clone(), token.clone());
            let url = peer.url.clone();
            let task = tokio::spawn(async move {
                loop {
                    if let Err(e) = follow_one(&app, &http, &peer, token()).await {
                        tracing::debug!(peer = %peer.name, error = %e, "a replica's event stream ended");
                    }
                    tokio::time::sleep(FOLLOW_AGAIN).await;
                }
            });
            following.insert(name, (url, task));
        }
    }
    for (name, (_, task)) in following {
        task.abort();
        app.forget_remote(&name);
    }
}

/// Reads one peer's event stream until it ends.
async fn follow_one(
    app: &App,
    http: &reqwest::Client,
    peer: &Replica,
    token: Option<axum::http::HeaderValue>,
) -> Result<(), String> {
    let mut request = http
        .get(format!("{}/api/v1/releases/stream", peer.url))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .header(FORWARDED, "1");
    if let Some(token) = token {
        request = request.header(reqwest::header::AUTHORIZATION, token);
    }
    let mut response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            take_event(app, &peer.name, &event[..end]);
        }
        if buffer.len() > MAX_PEER_EVENT {
            return Err(format!("an event over {MAX_PEER_EVENT} bytes"));
        }
    }
    Ok(())
}

/// One server-sent event of a peer's stream: its snapshot, or a change.
fn take_event(app: &App, peer: &str, event: &[u8]) {
    let Ok(text) = std::str::from_utf8(event) else {
        return;
    };
    let (mut kind, mut data) = ("message", String::new());
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    match kind {
        "snapshot" => {
            #[derive(serde::Deserialize)]
            struct Snapshot {
                releases: Vec<crate::verdict::Verdict>,
            }
            if let Ok(s) = serde_json::from_str::<Snapshot>(&data) {
                app.take_remote(peer, s.releases, true);
            }
        }
        "verdict" => {
            if let Ok(v) = serde_json::from_str(&data) {
                app.take_remote(peer, vec![v], false);
            }
        }
        _ => {}
    }
}
