//! Following the other replicas' event streams: their verdicts relayed
//! to this replica's watchers (SSE and gRPC `WatchVerdicts`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::ledger::states::Replica;

use super::peers::{Peers, FORWARDED, FORWARD_TIMEOUT};

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
        let alive: HashMap<String, Replica> = peers
            .alive()
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
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
                // A refusal is a configuration to fix, said once until
                // the stream is taken again; other ends are routine.
                let mut warned = false;
                loop {
                    match follow_one(&app, &http, &peer, token()).await {
                        Err(Ended::Refused(status)) if !warned => {
                            warned = true;
                            tracing::warn!(
                                peer = %peer.name,
                                %status,
                                "a replica refused this one its event stream: its verdicts are not relayed here; \
                                 replicas sharing a ledger need the same [auth] read tokens"
                            );
                        }
                        Err(e) => {
                            tracing::debug!(peer = %peer.name, error = %e, "a replica's event stream ended");
                        }
                        Ok(()) => warned = false,
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

/// Why a peer's event stream ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    /// The peer refused this replica's token (HTTP 401 or 403).
    #[error("refused: HTTP {0}")]
    Refused(reqwest::StatusCode),
    #[error("{0}")]
    Other(String),
}

/// Reads one peer's event stream until it ends.
async fn follow_one(
    app: &App,
    http: &reqwest::Client,
    peer: &Replica,
    token: Option<axum::http::HeaderValue>,
) -> Result<(), Ended> {
    let mut request = http
        .get(format!("{}/api/v1/releases/stream", peer.url))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .header(FORWARDED, "1");
    if let Some(token) = token {
        request = request.header(reqwest::header::AUTHORIZATION, token);
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| Ended::Other(e.to_string()))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Ended::Refused(status));
    }
    if !status.is_success() {
        return Err(Ended::Other(format!("HTTP {status}")));
    }
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Ended::Other(e.to_string()))?
    {
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            take_event(app, &peer.name, &event[..end]);
        }
        if buffer.len() > MAX_PEER_EVENT {
            return Err(Ended::Other(format!(
                "an event over {MAX_PEER_EVENT} bytes"
            )));
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
