//! The outbox: each recorded event × each sink whose route matches it is a
//! delivery row, written in the same transaction as the event, so nothing
//! recorded is lost to a crash before it is sent. Deliveries of one release
//! to one sink go out in order, one at a time (a Slack thread's replies
//! after its opening message); each has a stable idempotency key. Also the
//! small per-sink, per-release state a sink keeps between deliveries (a
//! Slack thread's `ts`, a Grafana annotation's id). A sink's pending
//! deliveries are capped: past its route's `max_pending` the oldest are
//! dead-lettered (marked [`OVERFLOW`]), so a dead sink cannot grow the
//! outbox without bound.

use std::collections::HashMap;

use serde::Serialize;

use super::db::{args, Conn, DbError, Dialect, Row};
use super::event::Event;
use super::query::nanos;
use super::{Ledger, LedgerError};
use crate::model::UnixNanos;

/// Which events go to a sink. An empty list matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    pub sink: String,
    pub types: Vec<String>,
    pub services: Vec<String>,
    pub environments: Vec<String>,
    /// Most pending deliveries kept for this sink; past it the oldest are
    /// dead-lettered. `None`: no cap.
    pub max_pending: Option<u64>,
}

/// The `last_error` of a delivery dead-lettered because its sink's
/// outbox was full.
pub const OVERFLOW: &str = "outbox full: dead-lettered for newer deliveries";

impl Route {
    pub fn matches(&self, e: &Event) -> bool {
        let any = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|l| l == v))
        };
        any(&self.types, Some(&e.kind))
            && any(&self.services, Some(&e.service))
            && any(&self.environments, e.environment.as_deref())
    }
}

/// The unit deliveries are ordered in: one release (or, for events naming
/// no deployment, one service and environment).
pub fn release_key(e: &Event) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}",
        e.service,
        e.environment.as_deref().unwrap_or(""),
        e.deployment_id.as_deref().unwrap_or("")
    )
}

/// One delivery waiting to go out.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub sink: String,
    pub release_key: String,
    /// Stable across retries and restarts: `<event row id>-<sink>`.
    pub key: String,
    /// Tries made so far.
    pub attempts: u32,
    /// The ledger row id of the event.
    pub event_row: i64,
    pub event: Event,
}

/// What became of a delivery's try.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    Delivered,
    /// Try again at `at` (attempts so far, the error).
    Retry {
        attempts: u32,
        at: UnixNanos,
        error: String,
    },
    /// Given up: permanently refused, or out of tries.
    Dead {
        attempts: u32,
        error: String,
    },
}

/// Deliveries by sink and state, for self metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backlog {
    pub sink: String,
    pub pending: u64,
    pub dead: u64,
    /// Of the dead, those dead-lettered because the sink's outbox was full.
    pub overflowed: u64,
}

/// Writes the deliveries of a newly recorded event (the writer thread,
/// inside the event's transaction), due at once.
pub(crate) fn enqueue(
    conn: &mut Conn,
    routes: &[Route],
    event_row: i64,
    e: &Event,
) -> Result<(), DbError> {
    let matching: Vec<&Route> = routes.iter().filter(|r| r.matches(e)).collect();
    if matching.is_empty() {
        return Ok(());
    }
    let body = serde_json::to_string(e).map_err(|err| DbError::json(4, err))?;
    let key = release_key(e);
    for r in matching {
        let delivery_key = format!("{event_row}-{}", r.sink);
        conn.exec(
            "INSERT INTO deliveries (event_row, sink, release_key, delivery_key, event_json,
                                     state, attempts, next_at_ns, created_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, 0, ?6)",
            args![event_row, &r.sink, &key, &delivery_key, &body, nanos(e.ts)],
        )?;
        if let Some(cap) = r.max_pending {
            cap_pending(conn, &r.sink, cap, nanos(e.ts))?;
        }
    }
    Ok(())
}

/// Dead-letters the oldest pending deliveries of `sink` past `cap`;
/// returns how many.
fn cap_pending(conn: &mut Conn, sink: &str, cap: u64, now: i64) -> Result<u64, DbError> {
    let pending: i64 = conn
        .row(
            "SELECT count(*) FROM deliveries WHERE state = 'pending' AND sink = ?1",
            args![sink],
        )?
        .map(|r| r.get(0))
        .transpose()?
        .unwrap_or_default();
    let excess = (pending.max(0) as u64).saturating_sub(cap);
    if excess == 0 {
        return Ok(0);
    }
    conn.exec(
        "UPDATE deliveries SET state = 'dead', last_error = ?3, done_ns = ?4
         WHERE id IN (SELECT id FROM deliveries WHERE state = 'pending' AND sink = ?1
                      ORDER BY id LIMIT ?2)",
        args![sink, excess as i64, OVERFLOW, now],
    )
}

/// Applies a try's outcome (the writer thread).
pub(crate) fn settle(
    conn: &mut Conn,
    id: i64,
    outcome: &Settle,
    now: UnixNanos,
) -> Result<(), DbError> {
    match outcome {
        Settle::Delivered => conn.exec(
            "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1,
                    done_ns = ?2, last_error = NULL, claimed_by = NULL, claimed_until_ns = NULL
             WHERE id = ?1",
            args![id, nanos(now)],
        )?,
        Settle::Retry {
            attempts,
            at,
            error,
        } => conn.exec(
            "UPDATE deliveries SET attempts = ?2, next_at_ns = ?3, last_error = ?4,
                    claimed_by = NULL, claimed_until_ns = NULL
             WHERE id = ?1",
            args![id, *attempts, nanos(*at), error],
        )?,
        Settle::Dead { attempts, error } => conn.exec(
            "UPDATE deliveries SET state = 'dead', attempts = ?2, last_error = ?3,
                    done_ns = ?4, claimed_by = NULL, claimed_until_ns = NULL WHERE id = ?1",
            args![id, *attempts, error, nanos(now)],
        )?,
    };
    Ok(())
}

/// Sets one value of a sink's state for a release (the writer thread).
pub(crate) fn set_state(
    conn: &mut Conn,
    sink: &str,
    release_key: &str,
    key: &str,
    value: &str,
) -> Result<(), DbError> {
    conn.exec(
        "INSERT INTO sink_state (sink, release_key, key, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (sink, release_key, key) DO UPDATE SET value = excluded.value",
        args![sink, release_key, key, value],
    )?;
    Ok(())
}

/// Joined to `deliveries d`: each sink and release's oldest pending
/// delivery, of sink `?3` alone unless it is null. What is sent next.
const HEADS: &str = "JOIN (SELECT min(id) AS id FROM deliveries
          WHERE state = 'pending' AND (CAST(?3 AS TEXT) IS NULL OR sink = ?3)
          GROUP BY sink, release_key) head ON head.id = d.id";

/// Claims up to `limit` of the deliveries due at `now` (each sink and
/// release's oldest pending one, past its retry time) for `owner` until
/// `now + lease`: those unclaimed, claimed by `owner`, or whose claim
/// lapsed (a replica that died). PostgreSQL skips rows another replica is
/// claiming this instant (`FOR UPDATE SKIP LOCKED`), so replicas sharing a
/// ledger never claim the same delivery. Oldest first.
pub(crate) fn claim(
    conn: &mut Conn,
    owner: &str,
    sink: Option<&str>,
    now: UnixNanos,
    limit: usize,
    lease: std::time::Duration,
) -> Result<Vec<Delivery>, DbError> {
    let lock = match conn.dialect() {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE OF d SKIP LOCKED",
    };
    let until = nanos(now).saturating_add(lease.as_nanos().min(i64::MAX as u128) as i64);
    let claimed = conn.rows(
        &format!(
            "UPDATE deliveries SET claimed_by = ?4, claimed_until_ns = ?5
             WHERE id IN (
                 SELECT d.id FROM deliveries d {HEADS}
                 -- Checked again on the row as it is now: PostgreSQL reads
                 -- the heads as of the start of the statement, and another
                 -- replica may have sent one since.
                 WHERE d.state = 'pending' AND d.next_at_ns <= ?1
                   AND (d.claimed_until_ns IS NULL OR d.claimed_until_ns <= ?1
                        OR d.claimed_by = ?4)
                 ORDER BY d.id LIMIT ?2{lock})
             RETURNING id, sink, release_key, delivery_key, attempts, event_row, event_json"
        ),
        args![nanos(now), limit as i64, sink, owner, until],
    )?;
    let mut deliveries = claimed
        .iter()
        .map(delivery)
        .collect::<Result<Vec<_>, _>>()?;
    deliveries.sort_by_key(|d| d.id);
    Ok(deliveries)
}

/// Gives back `owner`'s claims on deliveries not yet sent (a replica
/// stopping): another replica, or this one restarted, sends them at once.
pub(crate) fn release_claims(conn: &mut Conn, owner: &str) -> Result<u64, DbError> {
    conn.exec(
        "UPDATE deliveries SET claimed_by = NULL, claimed_until_ns = NULL
         WHERE claimed_by = ?1 AND state = 'pending'",
        args![owner],
    )
}

/// A row of `id, sink, release_key, delivery_key, attempts, event_row,
/// event_json`.
fn delivery(r: &Row) -> Result<Delivery, DbError> {
    let json: String = r.get(6)?;
    let event = serde_json::from_str(&json).map_err(|e| DbError::json(6, e))?;
    Ok(Delivery {
        id: r.get(0)?,
        sink: r.get(1)?,
        release_key: r.get(2)?,
        key: r.get(3)?,
        attempts: r.get(4)?,
        event_row: r.get(5)?,
        event,
    })
}

/// Deletes delivered rows done before `cutoff` (the writer's upkeep).
pub(crate) fn forget_delivered(conn: &mut Conn, cutoff: UnixNanos) -> Result<u64, DbError> {
    conn.exec(
        "DELETE FROM deliveries WHERE state = 'delivered' AND done_ns < ?1",
        args![nanos(cutoff)],
    )
}

impl Ledger {
    /// The deliveries due at `now`: for each sink and release, its oldest
    /// pending delivery, if that one is due; oldest first, at most `limit`.
    pub fn due_deliveries(
        &self,
        now: UnixNanos,
        limit: usize,
    ) -> Result<Vec<Delivery>, LedgerError> {
        self.due(None, now, limit)
    }

    /// The same for one sink: what its lane sends next.
    pub fn due_deliveries_of(
        &self,
        sink: &str,
        now: UnixNanos,
        limit: usize,
    ) -> Result<Vec<Delivery>, LedgerError> {
        self.due(Some(sink), now, limit)
    }

    fn due(
        &self,
        sink: Option<&str>,
        now: UnixNanos,
        limit: usize,
    ) -> Result<Vec<Delivery>, LedgerError> {
        self.readers.with(|conn| {
            conn.rows(
                &format!(
                    "SELECT d.id, d.sink, d.release_key, d.delivery_key, d.attempts,
                            d.event_row, d.event_json
                     FROM deliveries d {HEADS}
                     WHERE d.next_at_ns <= ?1
                     ORDER BY d.id LIMIT ?2"
                ),
                args![nanos(now), limit as i64, sink],
            )?
            .iter()
            .map(delivery)
            .collect()
        })
    }

    /// When the next pending delivery is due, if any.
    pub fn next_due(&self) -> Result<Option<UnixNanos>, LedgerError> {
        self.readers.with(|conn| {
            Ok(conn
                .row(
                    "SELECT min(next_at_ns) FROM deliveries WHERE state = 'pending'",
                    &[],
                )?
                .map(|r| r.get::<Option<UnixNanos>>(0))
                .transpose()?
                .flatten())
        })
    }

    /// A sink's state for a release.
    pub fn sink_state(
        &self,
        sink: &str,
        release_key: &str,
    ) -> Result<HashMap<String, String>, LedgerError> {
        self.readers.with(|conn| {
            conn.rows(
                "SELECT key, value FROM sink_state WHERE sink = ?1 AND release_key = ?2",
                args![sink, release_key],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
        })
    }

    /// Pending and dead deliveries by sink.
    pub fn backlog(&self) -> Result<Vec<Backlog>, LedgerError> {
        self.readers.with(|conn| {
            conn.rows(
                "SELECT sink, count(*) FILTER (WHERE state = 'pending'),
                        count(*) FILTER (WHERE state = 'dead'),
                        count(*) FILTER (WHERE state = 'dead' AND last_error = ?1)
                 FROM deliveries
                 WHERE state IN ('pending', 'dead') GROUP BY sink ORDER BY sink",
                args![OVERFLOW],
            )?
            .iter()
            .map(|r| {
                Ok(Backlog {
                    sink: r.get(0)?,
                    pending: r.get(1)?,
                    dead: r.get(2)?,
                    overflowed: r.get(3)?,
                })
            })
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::event::{types, Source};
    use crate::ledger::tests::Backend;
    use crate::ledger::{LedgerOptions, MEMORY};

    /// Where each test's ledgers live: in memory (SQLite) and in a fresh
    /// PostgreSQL database.
    fn locations(name: &str) -> [String; 2] {
        [MEMORY.to_string(), Backend::Postgres.fresh(name)]
    }

    /// A ledger on each database, with two routes.
    fn ledgers() -> Vec<Ledger> {
        locations("outbox").iter().map(|l| ledger(l)).collect()
    }

    fn ledger(location: &str) -> Ledger {
        let routes = vec![
            Route {
                sink: "slack".into(),
                types: vec![types::RELEASE_STARTED.into(), types::VERDICT_CHANGED.into()],
                ..Route::default()
            },
            Route {
                sink: "hook".into(),
                environments: vec!["prod".into()],
                ..Route::default()
            },
        ];
        Ledger::open(
            location,
            LedgerOptions {
                routes,
                ..LedgerOptions::default()
            },
        )
        .unwrap()
    }

    fn event(kind: &str, env: &str, id: &str, ts: u64) -> Event {
        Event::new(kind, ts, Source::Daemon, "checkout").for_release(env, id)
    }

    #[test]
    fn routed_events_become_deliveries_sent_in_order_per_release() {
        for l in ledgers() {
            for e in [
                event(types::RELEASE_STARTED, "prod", "a", 1),
                event(types::VERDICT_CHANGED, "prod", "a", 2),
                event(types::RELEASE_STARTED, "prod", "b", 3),
                event(types::CANARY_FAILED, "prod", "a", 4),
                event(types::RELEASE_STARTED, "staging", "c", 5),
            ] {
                l.try_record(e).unwrap();
            }
            l.flush().unwrap();
            let due = l.due_deliveries(10, 100).unwrap();
            let heads: Vec<(String, String, String)> = due
                .iter()
                .map(|d| {
                    (
                        d.sink.clone(),
                        d.event.deployment_id.clone().unwrap(),
                        d.event.kind.clone(),
                    )
                })
                .collect();
            // Per sink and release only the oldest: a's later ones wait.
            let want: Vec<(String, String, String)> = [
                ("slack", "a"),
                ("hook", "a"),
                ("slack", "b"),
                ("hook", "b"),
                ("slack", "c"),
            ]
            .iter()
            .map(|(s, id)| (s.to_string(), id.to_string(), "release_started".to_string()))
            .collect();
            assert_eq!(heads, want);
            assert!(due
                .iter()
                .all(|d| d.key == format!("{}-{}", d.event_row, d.sink)));
            let first = &due[0];
            l.settle_delivery(first.id, Settle::Delivered, 11).unwrap();
            let next = l.due_deliveries(12, 100).unwrap();
            assert!(next
                .iter()
                .any(|d| d.sink == "slack" && d.event.kind == types::VERDICT_CHANGED));
            assert_eq!(
                l.backlog().unwrap(),
                vec![
                    Backlog {
                        sink: "hook".into(),
                        pending: 4,
                        dead: 0,
                        overflowed: 0,
                    },
                    Backlog {
                        sink: "slack".into(),
                        pending: 3,
                        dead: 0,
                        overflowed: 0,
                    },
                ]
            );
        }
    }

    #[test]
    fn a_retry_waits_and_a_dead_one_lets_the_next_go() {
        for l in ledgers() {
            l.try_record(event(types::RELEASE_STARTED, "prod", "a", 1))
                .unwrap();
            l.try_record(event(types::CANARY_FAILED, "prod", "a", 2))
                .unwrap();
            l.flush().unwrap();
            let head = l.due_deliveries(10, 1).unwrap().remove(0);
            assert_eq!(head.sink, "slack");
            let retry = Settle::Retry {
                attempts: 1,
                at: 100,
                error: "HTTP 503".into(),
            };
            l.settle_delivery(head.id, retry, 10).unwrap();
            let due = l.due_deliveries(50, 100).unwrap();
            assert!(
                due.iter().all(|d| d.sink != "slack"),
                "the retry is not due yet"
            );
            assert_eq!(l.next_due().unwrap(), Some(0));
            let again = l.due_deliveries(100, 100).unwrap();
            let head = again.iter().find(|d| d.sink == "slack").unwrap();
            assert_eq!(head.attempts, 1);
            l.settle_delivery(
                head.id,
                Settle::Dead {
                    attempts: 2,
                    error: "invalid_auth".into(),
                },
                101,
            )
            .unwrap();
            let b = l.backlog().unwrap();
            assert!(
                b.contains(&Backlog {
                    sink: "slack".into(),
                    pending: 0,
                    dead: 1,
                    overflowed: 0,
                }),
                "{b:?}"
            );
            l.set_sink_state("slack", "k", "thread_ts", "1.2").unwrap();
            l.set_sink_state("slack", "k", "thread_ts", "1.3").unwrap();
            assert_eq!(l.sink_state("slack", "k").unwrap()["thread_ts"], "1.3");
        }
    }

    #[test]
    fn a_duplicate_post_makes_no_second_delivery() {
        for l in ledgers() {
            let e = Event {
                event_id: Some("ci-7".into()),
                source: Source::Api,
                ..event(types::DEPLOY_STARTED, "prod", "a", 1)
            };
            l.insert_posted(vec![e.clone()]).unwrap();
            l.insert_posted(vec![e]).unwrap();
            assert_eq!(
                l.due_deliveries(10, 100).unwrap().len(),
                1,
                "hook only, once"
            );
        }
    }

    #[test]
    fn a_full_outbox_dead_letters_the_sinks_oldest_and_only_its_own() {
        let routes = vec![
            Route {
                sink: "dead-hook".into(),
                max_pending: Some(3),
                ..Route::default()
            },
            Route {
                sink: "slack".into(),
                max_pending: Some(100),
                ..Route::default()
            },
        ];
        let options = LedgerOptions {
            routes,
            ..LedgerOptions::default()
        };
        for location in locations("outbox_full") {
            let l = Ledger::open(&location, options.clone()).unwrap();
            // Five releases, one event each: five heads, all due at once.
            for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
                l.try_record(event(types::RELEASE_STARTED, "prod", id, i as u64 + 1))
                    .unwrap();
            }
            l.flush().unwrap();
            let hook: Vec<String> = l
                .due_deliveries_of("dead-hook", 10, 100)
                .unwrap()
                .into_iter()
                .map(|d| d.event.deployment_id.unwrap())
                .collect();
            assert_eq!(hook, ["c", "d", "e"], "the two oldest are dead-lettered");
            assert_eq!(l.due_deliveries_of("slack", 10, 100).unwrap().len(), 5);
            assert_eq!(
                l.backlog().unwrap(),
                vec![
                    Backlog {
                        sink: "dead-hook".into(),
                        pending: 3,
                        dead: 2,
                        overflowed: 2,
                    },
                    Backlog {
                        sink: "slack".into(),
                        pending: 5,
                        dead: 0,
                        overflowed: 0,
                    },
                ]
            );
        }
    }
}
