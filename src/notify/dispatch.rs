//! The notifiers' loop (the shell: tokio, reqwest, the clock): one lane (a
//! task) per sink takes that sink's due deliveries from the ledger's outbox
//! (for each release the oldest pending one, so a thread's replies follow
//! its opening message), so a slow or dead sink delays only itself; sends
//! them side by side, each request under `notify.timeout` with its answer
//! read up to 64 KiB; and records each outcome: delivered, retried
//! after a backoff with jitter (or the server's Retry-After), or dead after
//! `max_attempts` or a refusal no retry helps. A crash between a send and
//! its record sends it again with the same idempotency key: at least once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::release::ReleaseState;
use super::{grafana, retry_after, slack, webhook, Failure, Sink, Sinks};
use crate::clock::system_now;
use crate::config::SinkKind;
use crate::ledger::outbox::{Delivery, Settle};
use crate::ledger::Ledger;
use crate::rng::Rng;
use crate::self_metrics::{SinkLabels, SinkResult, SinkResultLabels};

/// Deliveries taken from the outbox per pass.
const BATCH: usize = 32;
/// The longest wait between looks at the outbox.
const POLL: Duration = Duration::from_millis(250);
/// How often the backlog gauges are recomputed.
const BACKLOG_EVERY: Duration = Duration::from_secs(2);
/// The most of an answer read: Slack's and Grafana's JSON answers fit
/// with room to spare; a sink answering more cannot fill the memory.
const ANSWER_LIMIT: usize = 64 * 1024;
/// The least time between two "outbox full" warnings for a sink.
const OVERFLOW_WARN_EVERY: Duration = Duration::from_secs(60);

/// The counters and gauges the loop keeps (clones of the self metrics').
#[derive(Clone, Default)]
pub struct Metrics {
    pub sent: Family<SinkResultLabels, Counter>,
    pub pending: Family<SinkLabels, Gauge>,
    pub dead: Family<SinkLabels, Gauge>,
}

struct Dispatcher {
    ledger: Arc<Ledger>,
    sinks: Arc<Sinks>,
    http: reqwest::Client,
    metrics: Metrics,
    rng: Mutex<Rng>,
}

/// Sends deliveries until `stop`: one lane (a task) per sink, and the
/// backlog gauges kept here.
pub async fn run(
    ledger: Arc<Ledger>,
    sinks: Arc<Sinks>,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .timeout(sinks.policy.timeout)
        .user_agent(concat!("release-verdict/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "notifiers not started: no HTTP client");
            return;
        }
    };
    let d = Arc::new(Dispatcher {
        ledger,
        sinks,
        http,
        metrics,
        rng: Mutex::new(Rng::new(system_now())),
    });
    let mut lanes = tokio::task::JoinSet::new();
    for sink in &d.sinks.sinks {
        let (d, name, stop) = (d.clone(), sink.name.clone(), stop.clone());
        lanes.spawn(async move { d.lane(name, stop).await });
    }
    let mut overflow = OverflowWarnings::default();
    loop {
        d.refresh_backlog(&mut overflow).await;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(BACKLOG_EVERY) => {}
        }
    }
    while lanes.join_next().await.is_some() {}
}

/// When the "outbox full" warning is given: at most once a minute per
/// sink, with the count dead-lettered since the last one (pure: the clock
/// is an argument).
#[derive(Default)]
struct OverflowWarnings {
    /// By sink: the overflowed total last seen, the count not yet warned
    /// about, and when the last warning was given.
    sinks: HashMap<String, (u64, u64, Option<Instant>)>,
}

impl OverflowWarnings {
    /// Takes the sink's overflowed total; returns the count to warn about
    /// now, if any. The first total seen (rows from before a restart) is
    /// not warned about.
    fn observe(&mut self, sink: &str, total: u64, now: Instant) -> Option<u64> {
        let Some((seen, unwarned, warned_at)) = self.sinks.get_mut(sink) else {
            self.sinks.insert(sink.to_string(), (total, 0, None));
            return None;
        };
        // Retention deletes old dead rows: the total may fall.
        *unwarned += total.saturating_sub(*seen);
        *seen = total;
        let quiet = warned_at.is_none_or(|at| now.duration_since(at) >= OVERFLOW_WARN_EVERY);
        if *unwarned == 0 || !quiet {
            return None;
        }
        *warned_at = Some(now);
        Some(std::mem::take(unwarned))
    }
}

/// Runs a blocking ledger call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::ledger::LedgerError> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::transient(format!("ledger: {e}"))),
        Err(e) => Err(Failure::transient(format!("ledger task: {e}"))),
    }
}

/// An answer: status, Retry-After, body.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

impl Answer {
    /// Any 2xx is success (webhooks, Slack's incoming webhooks answer
    /// `ok`, Grafana's patch a message).
    fn success(self) -> Result<(), Failure> {
        if (200..300).contains(&self.status) {
            Ok(())
        } else {
            Err(Failure::from_status(
                self.status,
                self.retry_after,
                &self.body,
            ))
        }
    }
}

impl Dispatcher {
    /// One sink's lane: its due deliveries, sent side by side, until
    /// `stop`. A sink that hangs holds up only its own lane.
    async fn lane(&self, sink: String, stop: CancellationToken) {
        let mut unreadable = false;
        loop {
            let now = system_now();
            let due = {
                let (ledger, sink) = (self.ledger.clone(), sink.clone());
                blocking(move || ledger.claim_deliveries_of(&sink, now, BATCH)).await
            };
            let due = match due {
                Ok(due) => {
                    if unreadable {
                        unreadable = false;
                        tracing::info!(%sink, "the outbox can be read again");
                    }
                    due
                }
                Err(e) => {
                    // Once per outage, not every pass.
                    if !unreadable {
                        unreadable = true;
                        warn!(%sink, error = %e.message, "the outbox could not be read; notifications wait");
                    }
                    Vec::new()
                }
            };
            if due.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(POLL) => continue,
                }
            }
            let sends = due.into_iter().map(|delivery| self.deliver(delivery));
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = futures_util::future::join_all(sends) => {}
            }
        }
    }

    async fn refresh_backlog(&self, overflow: &mut OverflowWarnings) {
        let ledger = self.ledger.clone();
        let Ok(backlog) = blocking(move || ledger.backlog()).await else {
            return;
        };
        let by_sink: HashMap<&str, _> = backlog.iter().map(|b| (b.sink.as_str(), b)).collect();
        for sink in &self.sinks.sinks {
            let labels = SinkLabels {
                sink: sink.name.clone(),
            };
            let (pending, dead, overflowed) = by_sink
                .get(sink.name.as_str())
                .map_or((0, 0, 0), |b| (b.pending, b.dead, b.overflowed));
            if let Some(n) = overflow.observe(&sink.name, overflowed, Instant::now()) {
                warn!(sink = %sink.name, dead_lettered = n, max_pending = sink.route.max_pending.unwrap_or_default(),
                    "the sink's outbox is full: its oldest notifications were dead-lettered");
            }
            self.metrics
                .pending
                .get_or_create(&labels)
                .set(pending as i64);
            self.metrics.dead.get_or_create(&labels).set(dead as i64);
        }
    }

    /// Tries one delivery and records what became of it.
    async fn deliver(&self, d: Delivery) {
        let attempts = d.attempts + 1;
        let result = match self.sinks.get(&d.sink) {
            Some(sink) => match sink.kind {
                SinkKind::Webhook => self.webhook(sink, &d).await,
                SinkKind::Slack => self.slack(sink, &d).await,
                SinkKind::SlackWebhook => self.slack_webhook(sink, &d).await,
                SinkKind::Grafana => self.grafana(sink, &d).await,
            },
            None => Err(Failure {
                message: "the sink is no longer configured".into(),
                permanent: true,
                retry_after: None,
            }),
        };
        let policy = self.sinks.policy;
        let (outcome, result) = match result {
            Ok(()) => (Settle::Delivered, SinkResult::Delivered),
            Err(f) if f.permanent || attempts >= policy.max_attempts => {
                warn!(sink = %d.sink, delivery = %d.key, attempts, error = %f.message,
                    "notification dead-lettered");
                (
                    Settle::Dead {
                        attempts,
                        error: f.message,
                    },
                    SinkResult::Dead,
                )
            }
            Err(f) => {
                let unit = self.rng.lock().map(|mut r| r.uniform()).unwrap_or(0.5);
                let wait = policy.backoff(attempts, unit, f.retry_after);
                debug!(sink = %d.sink, delivery = %d.key, attempts, error = %f.message,
                    wait_ms = wait.as_millis() as u64, "notification will be retried");
                (
                    Settle::Retry {
                        attempts,
                        at: system_now() + wait.as_nanos() as u64,
                        error: f.message,
                    },
                    SinkResult::Retried,
                )
            }
        };
        self.metrics
            .sent
            .get_or_create(&SinkResultLabels {
                sink: d.sink.clone(),
                result,
            })
            .inc();
        let ledger = self.ledger.clone();
        let id = d.id;
        if let Err(e) = blocking(move || ledger.settle_delivery(id, outcome, system_now())).await {
            // Not recorded: it is sent again, with the same key.
            warn!(sink = %d.sink, delivery = %d.key, error = %e.message, "delivery outcome not recorded");
        }
    }

    /// Sends one request; a network error or timeout is worth retrying.
    /// The deadline covers reading the answer too.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Answer, Failure> {
        let timeout = self.sinks.policy.timeout;
        tokio::time::timeout(timeout, self.request(method, url, headers, body))
            .await
            .unwrap_or_else(|_| {
                Err(Failure::transient(format!(
                    "no full answer within {}ms",
                    timeout.as_millis()
                )))
            })
    }

    /// The request, and its answer read up to [`ANSWER_LIMIT`]: the rest
    /// is dropped with the connection, and the answer judged by its status.
    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Answer, Failure> {
        // The URL may be a secret (a Slack incoming webhook's).
        let failed = |e: reqwest::Error| Failure::transient(e.without_url().to_string());
        let mut resp = self
            .http
            .request(method, url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        let status = resp.status().as_u16();
        let retry_after = retry_after(
            resp.headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let mut read = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            let room = ANSWER_LIMIT - read.len();
            read.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if read.len() >= ANSWER_LIMIT {
                break;
            }
        }
        Ok(Answer {
            status,
            retry_after,
            body: String::from_utf8_lossy(&read).into_owned(),
        })
    }

    fn headers(&self, sink: &Sink, d: &Delivery) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Some(token) = &sink.token {
            if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
                v.set_sensitive(true);
                h.insert(AUTHORIZATION, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&d.key) {
            h.insert(HeaderName::from_static(webhook::DELIVERY_HEADER), v);
        }
        h
    }

    async fn state(&self, sink: &Sink, d: &Delivery) -> Result<HashMap<String, String>, Failure> {
        let (ledger, name, key) = (
            self.ledger.clone(),
            sink.name.clone(),
            d.release_key.clone(),
        );
        blocking(move || ledger.sink_state(&name, &key)).await
    }

    async fn set_state(
        &self,
        sink: &Sink,
        d: &Delivery,
        key: &str,
        value: &str,
    ) -> Result<(), Failure> {
        let (ledger, name, release) = (
            self.ledger.clone(),
            sink.name.clone(),
            d.release_key.clone(),
        );
        let (key, value) = (key.to_string(), value.to_string());
        blocking(move || ledger.set_sink_state(&name, &release, &key, &value)).await
    }

    /// The release's state after this delivery's event.
    fn release_after(state: &HashMap<String, String>, d: &Delivery) -> ReleaseState {
        state
            .get("release")
            .and_then(|s| serde_json::from_str::<ReleaseState>(s).ok())
            .unwrap_or_default()
            .after(&d.event)
    }

    async fn save_release(
        &self,
        sink: &Sink,
        d: &Delivery,
        r: &ReleaseState,
    ) -> Result<(), Failure> {
        let json = serde_json::to_string(r).unwrap_or_default();
        self.set_state(sink, d, "release", &json).await
    }

    async fn webhook(&self, sink: &Sink, d: &Delivery) -> Result<(), Failure> {
        let body = webhook::body(d.event_row, &d.event);
        let now = system_now() / 1_000_000_000;
        let mut h = self.headers(sink, d);
        if let Some(secret) = &sink.secret {
            let sig = webhook::signature(secret.expose().as_bytes(), now, &body);
            if let Ok(v) = HeaderValue::from_str(&sig) {
                h.insert(HeaderName::from_static(webhook::SIGNATURE_HEADER), v);
            }
        }
        h.insert(
            HeaderName::from_static(webhook::TIMESTAMP_HEADER),
            HeaderValue::from(now),
        );
        if let Ok(v) = HeaderValue::from_str(&d.event.kind) {
            h.insert(HeaderName::from_static(webhook::EVENT_HEADER), v);
        }
        self.send(reqwest::Method::POST, &sink.url, h, body)
            .await?
            .success()
    }

    async fn slack_call(
        &self,
        sink: &Sink,
        d: &Delivery,
        method: &str,
        body: &serde_json::Value,
    ) -> Result<slack::Posted, Failure> {
        let url = format!("{}/{method}", sink.url);
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let a = self
            .send(reqwest::Method::POST, &url, self.headers(sink, d), bytes)
            .await?;
        slack::read_answer(a.status, a.retry_after, &a.body)
    }

    /// A thread per release: the opening message, then replies, and the
    /// opening message rewritten at each change of standing. Each step is
    /// recorded as it succeeds, so a retry does not repeat it.
    async fn slack(&self, sink: &Sink, d: &Delivery) -> Result<(), Failure> {
        let state = self.state(sink, d).await?;
        let release = Self::release_after(&state, d);
        let links = &self.sinks.links;
        let (Some(ts), Some(channel)) = (state.get("thread_ts"), state.get("channel")) else {
            if !slack::opens_thread(&d.event) {
                return self.save_release(sink, d, &release).await;
            }
            let body = slack::post_message(
                &sink.channel,
                None,
                &slack::opening(&release, links),
                &d.key,
            );
            let posted = self.slack_call(sink, d, "chat.postMessage", &body).await?;
            self.set_state(sink, d, "channel", &posted.channel).await?;
            self.set_state(sink, d, "thread_ts", &posted.ts).await?;
            return self.save_release(sink, d, &release).await;
        };
        let replied = format!("replied:{}", d.id);
        if !state.contains_key(&replied) {
            let body = slack::post_message(
                channel,
                Some(ts),
                &slack::reply(&d.event, &release, links),
                &d.key,
            );
            self.slack_call(sink, d, "chat.postMessage", &body).await?;
            self.set_state(sink, d, &replied, "1").await?;
        }
        if slack::changes_standing(&d.event) {
            let body = slack::update(channel, ts, &slack::opening(&release, links));
            self.slack_call(sink, d, "chat.update", &body).await?;
        }
        self.save_release(sink, d, &release).await
    }

    /// Incoming webhooks cannot thread: one message per event.
    async fn slack_webhook(&self, sink: &Sink, d: &Delivery) -> Result<(), Failure> {
        let state = self.state(sink, d).await?;
        let release = Self::release_after(&state, d);
        let links = &self.sinks.links;
        let opened = state.contains_key("opened");
        if !opened && !slack::opens_thread(&d.event) {
            return self.save_release(sink, d, &release).await;
        }
        let message = if opened {
            slack::reply(&d.event, &release, links)
        } else {
            slack::opening(&release, links)
        };
        let body = serde_json::to_vec(&serde_json::json!({
            "text": message["text"], "blocks": message["blocks"], "unfurl_links": false,
        }))
        .unwrap_or_default();
        let a = self
            .send(
                reqwest::Method::POST,
                &sink.url,
                self.headers(sink, d),
                body,
            )
            .await?;
        a.success()?;
        if !opened {
            self.set_state(sink, d, "opened", "1").await?;
        }
        self.save_release(sink, d, &release).await
    }

    /// A marker at the release's first event, a region to its final verdict.
    async fn grafana(&self, sink: &Sink, d: &Delivery) -> Result<(), Failure> {
        let state = self.state(sink, d).await?;
        let release = Self::release_after(&state, d);
        let at_ms = d.event.ts / 1_000_000;
        let ends = grafana::ends_region(&d.event);
        match state.get("annotation_id") {
            // A stable deployment seen for the first time was not deployed
            // now: no marker (as no Slack thread).
            None if !slack::opens_thread(&d.event) => {}
            None => {
                let body =
                    grafana::create(&release, at_ms, ends.then_some(at_ms), &sink.dashboard_uid);
                let url = format!("{}/api/annotations", sink.url);
                let a = self
                    .send(
                        reqwest::Method::POST,
                        &url,
                        self.headers(sink, d),
                        serde_json::to_vec(&body).unwrap_or_default(),
                    )
                    .await?;
                let id = grafana::read_created(a.status, a.retry_after, &a.body)?;
                self.set_state(sink, d, "annotation_id", &id.to_string())
                    .await?;
                self.set_state(sink, d, "start_ms", &at_ms.to_string())
                    .await?;
            }
            Some(id) if ends => {
                let start = state
                    .get("start_ms")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(at_ms);
                let body = grafana::extend(&release, start, at_ms);
                let url = format!("{}/api/annotations/{id}", sink.url);
                let a = self
                    .send(
                        reqwest::Method::PATCH,
                        &url,
                        self.headers(sink, d),
                        serde_json::to_vec(&body).unwrap_or_default(),
                    )
                    .await?;
                a.success()?;
            }
            Some(_) => {}
        }
        self.save_release(sink, d, &release).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_full_warnings_are_counted_and_at_most_one_a_minute() {
        let mut w = OverflowWarnings::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // What was dead-lettered before a restart is not news.
        assert_eq!(w.observe("hook", 7, at(0)), None);
        assert_eq!(w.observe("hook", 7, at(2)), None);
        assert_eq!(w.observe("hook", 10, at(4)), Some(3));
        // Within the minute: counted, not told.
        assert_eq!(w.observe("hook", 15, at(6)), None);
        assert_eq!(w.observe("hook", 16, at(30)), None);
        assert_eq!(w.observe("slack", 0, at(30)), None);
        assert_eq!(w.observe("hook", 16, at(64)), Some(6));
        assert_eq!(w.observe("hook", 16, at(200)), None, "nothing new");
        // Retention deleting dead rows is not an overflow.
        assert_eq!(w.observe("hook", 2, at(300)), None);
        assert_eq!(w.observe("hook", 3, at(400)), Some(1));
    }
}
