//! The other replicas sharing the ledger, as the last checkpoint read
//! them, and the reads forwarded to the one judging a release: its JSON
//! verdict, chart or listing, asked as the caller within a short timeout;
//! the ledger's last verdict when it does not answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::app::App;
use crate::clock::system_now;
use crate::config::Config;
use crate::ledger::states::Replica;

/// The longest a read waits for the replica judging the release: past it
/// the ledger's last verdict answers, and the peer is skipped for
/// `PEER_DOWN_FOR` (a dead peer costs its timeout once).
pub const FORWARD_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a peer that did not answer is not asked again.
const PEER_DOWN_FOR: Duration = Duration::from_secs(10);
/// Marks a forwarded read: the replica asked answers from what it holds
/// (live, or the ledger), never forwarding again.
pub const FORWARDED: &str = "x-release-verdict-forwarded";

/// How long a replica's heartbeat says it is alive: three checkpoints.
pub fn alive_for(config: &Config) -> Duration {
    (config.ledger.checkpoint_interval * 3).max(Duration::from_secs(3))
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
    /// The peers of the replica named `me`.
    pub fn new(me: &str) -> Peers {
        let http = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .connect_timeout(FORWARD_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Peers {
            me: me.to_string(),
            alive: Mutex::new(Vec::new()),
            down: Mutex::new(HashMap::new()),
            http,
        }
    }

    /// The other replicas alive at the last checkpoint.
    pub(super) fn alive(&self) -> Vec<Replica> {
        self.alive
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_alive(&self, mut replicas: Vec<Replica>) {
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
