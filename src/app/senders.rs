//! Who sends telemetry, for a person's first five minutes: per service, the
//! spans and data points that arrived attributed to a release and those
//! without one (and the attribute they lack), and the HTTP/1.x requests
//! that reached the gRPC port. Read by `GET /api/v1/senders` and
//! `release-verdict status`. Bounded whatever the peers send: at most
//! [`MAX_SENDERS`] services, names cut to [`MAX_ID_LEN`] bytes, the least
//! recently seen service idle for [`SENDER_IDLE`] making room for a new
//! one, every other service's items counted together.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::ingest::identity::MAX_ID_LEN;
use crate::model::{format_time, UnixNanos};
use crate::self_metrics::Signal;

/// Most services remembered.
pub const MAX_SENDERS: usize = 256;
/// A service silent this long gives its place to a new one when full.
pub const SENDER_IDLE: Duration = Duration::from_secs(15 * 60);
/// The service named for items without a service name (as `identity` does).
const UNKNOWN_SERVICE: &str = "unknown_service";
/// What the services past the cap are called together.
const OTHER: &str = "(other services)";
/// At most one log line about HTTP/1.x on the gRPC port this often.
const WRONG_PORT_LOG_EVERY: Duration = Duration::from_secs(60);

/// Items of one signal: with a release id, and without.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub attributed: u64,
    pub unattributed: u64,
}

/// One service's items.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Sender {
    spans: Counts,
    points: Counts,
    first_seen: UnixNanos,
    last_seen: UnixNanos,
}

impl Sender {
    fn counts(&mut self, signal: Signal) -> &mut Counts {
        match signal {
            Signal::Spans => &mut self.spans,
            Signal::Points => &mut self.points,
        }
    }

    fn unattributed(&self) -> u64 {
        self.spans.unattributed + self.points.unattributed
    }
}

/// HTTP/1.x requests on the gRPC port.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct WrongPort {
    requests: u64,
    last_at: Option<UnixNanos>,
    last_user_agent: Option<String>,
    last_logged: Option<UnixNanos>,
    /// Requests since the last log line.
    unlogged: u64,
}

/// The table of senders.
#[derive(Debug, Default)]
pub struct Senders {
    services: HashMap<Box<str>, Sender>,
    /// Items of services that found the table full.
    other: Sender,
    wrong_port: WrongPort,
}

/// What a batch brought, by service.
pub struct Arrived<'b, 'a> {
    pub signal: Signal,
    /// (service, items) of each release the batch named.
    pub attributed: &'b mut dyn Iterator<Item = (&'a str, u64)>,
    /// Items without a release id by service (`None`: no service name).
    pub unattributed: &'b [(Option<&'a str>, u64)],
    /// Items without a release id of services past the batch's list.
    pub unattributed_unnamed: u64,
}

/// What to log once after recording: the services first seen sending items
/// without a release id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct News {
    pub unattributed_services: Vec<String>,
}

/// `name` cut to at most [`MAX_ID_LEN`] bytes, on a character boundary.
fn bounded(name: &str) -> &str {
    if name.len() <= MAX_ID_LEN {
        return name;
    }
    let mut end = MAX_ID_LEN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

impl Senders {
    /// Records a batch's items at `now`.
    pub fn record(&mut self, arrived: Arrived<'_, '_>, now: UnixNanos) -> News {
        let signal = arrived.signal;
        let mut news = News::default();
        for (service, n) in arrived.attributed {
            self.sender(service, now).0.counts(signal).attributed += n;
        }
        for &(service, n) in arrived.unattributed {
            let service = service.unwrap_or(UNKNOWN_SERVICE);
            let (s, shared) = self.sender(service, now);
            let first = s.unattributed() == 0;
            s.counts(signal).unattributed += n;
            if first && n > 0 {
                news.unattributed_services.push(match shared {
                    true => OTHER.to_string(),
                    false => bounded(service).to_string(),
                });
            }
        }
        if arrived.unattributed_unnamed > 0 {
            let first = self.other.unattributed() == 0;
            self.other.counts(signal).unattributed += arrived.unattributed_unnamed;
            if self.other.first_seen == 0 {
                self.other.first_seen = now;
            }
            self.other.last_seen = now;
            if first {
                news.unattributed_services.push(OTHER.into());
            }
        }
        news
    }

    /// The entry of `service`, made if there is room; else the shared one
    /// (and `true`).
    fn sender(&mut self, service: &str, now: UnixNanos) -> (&mut Sender, bool) {
        let service = bounded(service);
        if !self.services.contains_key(service) && !self.make_room(now) {
            let other = &mut self.other;
            if other.first_seen == 0 {
                other.first_seen = now;
            }
            other.last_seen = now;
            return (other, true);
        }
        let s = self
            .services
            .entry(service.into())
            .or_insert_with(|| Sender {
                first_seen: now,
                ..Sender::default()
            });
        s.last_seen = s.last_seen.max(now);
        (s, false)
    }

    /// Whether a new service fits, forgetting the least recently seen one
    /// if the table is full and it has been idle long enough.
    fn make_room(&mut self, now: UnixNanos) -> bool {
        if self.services.len() < MAX_SENDERS {
            return true;
        }
        let idle = SENDER_IDLE.as_nanos() as u64;
        let stalest = self
            .services
            .iter()
            .min_by_key(|(_, s)| s.last_seen)
            .filter(|(_, s)| now.saturating_sub(s.last_seen) >= idle)
            .map(|(name, _)| name.clone());
        match stalest {
            Some(name) => {
                self.services.remove(&name);
                true
            }
            None => false,
        }
    }

    /// Counts an HTTP/1.x request on the gRPC port; Some(requests since the
    /// last log line) when a log line is due (at most one a minute).
    pub fn wrong_port(&mut self, user_agent: Option<&str>, now: UnixNanos) -> Option<u64> {
        let w = &mut self.wrong_port;
        w.requests += 1;
        w.unlogged += 1;
        w.last_at = Some(now);
        w.last_user_agent = user_agent.map(|ua| bounded(ua).to_string());
        let due = w
            .last_logged
            .is_none_or(|at| now.saturating_sub(at) >= WRONG_PORT_LOG_EVERY.as_nanos() as u64);
        if !due {
            return None;
        }
        w.last_logged = Some(now);
        Some(std::mem::take(&mut w.unlogged))
    }

    /// The table as the API shows it: services by name; `missing` names
    /// the release keys (`[identity] release_keys`) when items lacked them.
    pub fn view(&self, release_keys: &[String]) -> SendersView {
        let missing = release_keys.join(" or ");
        let row = |service: &str, s: &Sender| SenderView {
            service: service.to_string(),
            spans: s.spans,
            points: s.points,
            missing: (s.unattributed() > 0).then(|| missing.clone()),
            first_seen_at: format_time(s.first_seen),
            last_seen_at: format_time(s.last_seen),
        };
        let mut senders: Vec<SenderView> =
            self.services.iter().map(|(name, s)| row(name, s)).collect();
        senders.sort_by(|a, b| a.service.cmp(&b.service));
        let w = &self.wrong_port;
        SendersView {
            release_keys: release_keys.to_vec(),
            senders,
            other_services: (self.other != Sender::default()).then(|| row(OTHER, &self.other)),
            grpc_port_http1: WrongPortView {
                requests: w.requests,
                last_at: w.last_at.map(format_time),
                last_user_agent: w.last_user_agent.clone(),
            },
        }
    }
}

/// `GET /api/v1/senders`.
#[derive(Debug, Clone, Serialize)]
pub struct SendersView {
    /// The attributes that name a release, any one of them.
    pub release_keys: Vec<String>,
    pub senders: Vec<SenderView>,
    /// Services past the table's cap, counted together.
    pub other_services: Option<SenderView>,
    /// HTTP/1.x requests that reached the gRPC port (each answered with
    /// the OTLP/HTTP port to use).
    pub grpc_port_http1: WrongPortView,
}

/// One service.
#[derive(Debug, Clone, Serialize)]
pub struct SenderView {
    pub service: String,
    pub spans: Counts,
    pub points: Counts,
    /// The attribute unattributed items lacked; null when none did.
    pub missing: Option<String>,
    pub first_seen_at: String,
    pub last_seen_at: String,
}

/// HTTP/1.x requests on the gRPC port.
#[derive(Debug, Clone, Serialize)]
pub struct WrongPortView {
    pub requests: u64,
    pub last_at: Option<String>,
    pub last_user_agent: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn record(
        t: &mut Senders,
        signal: Signal,
        attributed: &[(&str, u64)],
        unattributed: &[(Option<&str>, u64)],
        now: UnixNanos,
    ) -> News {
        let mut it = attributed.iter().copied();
        t.record(
            Arrived {
                signal,
                attributed: &mut it,
                unattributed,
                unattributed_unnamed: 0,
            },
            now,
        )
    }

    #[test]
    fn counts_by_service_and_names_the_missing_key_once() {
        let mut t = Senders::default();
        let news = record(&mut t, Signal::Spans, &[("checkout", 5)], &[], S);
        assert!(news.unattributed_services.is_empty());
        let news = record(
            &mut t,
            Signal::Points,
            &[],
            &[(Some("web"), 3), (None, 1)],
            2 * S,
        );
        assert_eq!(news.unattributed_services, ["web", "unknown_service"]);
        let news = record(&mut t, Signal::Spans, &[], &[(Some("web"), 2)], 3 * S);
        assert!(news.unattributed_services.is_empty(), "logged once");
        let v = t.view(&["deployment.id".into()]);
        let names: Vec<_> = v.senders.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(names, ["checkout", "unknown_service", "web"]);
        let web = &v.senders[2];
        assert_eq!(
            web.points,
            Counts {
                attributed: 0,
                unattributed: 3
            }
        );
        assert_eq!(
            web.spans,
            Counts {
                attributed: 0,
                unattributed: 2
            }
        );
        assert_eq!(web.missing.as_deref(), Some("deployment.id"));
        assert_eq!(v.senders[0].missing, None);
        assert_eq!(v.senders[0].spans.attributed, 5);
    }

    #[test]
    fn stays_bounded_and_makes_room_from_idle_services() {
        let mut t = Senders::default();
        let long = "x".repeat(10_000);
        record(&mut t, Signal::Spans, &[], &[(Some(&long), 1)], S);
        assert_eq!(t.services.keys().next().unwrap().len(), MAX_ID_LEN);
        for i in 1..MAX_SENDERS + 10 {
            let name = format!("s{i}");
            record(&mut t, Signal::Spans, &[(&name, 1)], &[], S + i as u64);
        }
        assert_eq!(t.services.len(), MAX_SENDERS);
        assert_eq!(
            t.other.spans.attributed, 10,
            "past the cap, counted together"
        );
        // Once the oldest is idle, a new name takes its place.
        let later = S + SENDER_IDLE.as_nanos() as u64 + 1;
        record(&mut t, Signal::Spans, &[("new", 1)], &[], later);
        assert!(t.services.contains_key("new"));
        assert!(!t
            .services
            .contains_key(long.as_str().get(..MAX_ID_LEN).unwrap()));
        assert_eq!(t.services.len(), MAX_SENDERS);
    }

    #[test]
    fn wrong_port_logs_at_most_once_a_minute_with_the_count() {
        let mut t = Senders::default();
        assert_eq!(
            t.wrong_port(Some("OTel-OTLP-Exporter-JavaScript/0.200.0"), S),
            Some(1)
        );
        assert_eq!(t.wrong_port(None, 2 * S), None);
        assert_eq!(t.wrong_port(None, 30 * S), None);
        assert_eq!(t.wrong_port(Some("curl/8"), 61 * S), Some(3));
        let v = t.view(&[]);
        assert_eq!(v.grpc_port_http1.requests, 4);
        assert_eq!(v.grpc_port_http1.last_user_agent.as_deref(), Some("curl/8"));
    }
}
