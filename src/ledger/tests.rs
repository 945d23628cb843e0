//! Ledger tests over real SQLite files in the temp directory.

use super::event::{types, Event, Source};
use super::*;

/// A fresh database path in a new directory under the temp directory,
/// unique to this process and call.
pub(crate) fn temp_path(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Relaxed);
    let dir = std::env::temp_dir().join(format!("rv-ledger-{}-{name}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("ledger.db").to_string_lossy().into_owned()
}

/// Removes a database made by `temp_path`, with its directory.
pub(crate) fn remove(path: &str) {
    if let Some(dir) = Path::new(path).parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

const T: UnixNanos = 1_763_800_000_000_000_000;

fn event(kind: &str, id: &str, source: Source) -> Event {
    Event::new(kind, T, source, "checkout").for_release("prod", id)
}

#[test]
fn events_survive_reopening_in_order() {
    let path = temp_path("reopen");
    {
        let ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
        for kind in [
            types::RELEASE_STARTED,
            types::VERDICT_CHANGED,
            types::CANARY_FAILED,
        ] {
            ledger
                .try_record(event(kind, "v2", Source::Daemon).with("verdict", "red"))
                .unwrap();
        }
        ledger.flush().unwrap();
    }
    let ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
    let timeline = ledger.timeline("checkout", "prod", "v2").unwrap();
    let kinds: Vec<&str> = timeline.iter().map(|e| e.event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            types::RELEASE_STARTED,
            types::VERDICT_CHANGED,
            types::CANARY_FAILED
        ]
    );
    assert_eq!(timeline[0].event.metadata["verdict"], "red");
    drop(ledger);
    remove(&path);
}

#[test]
fn a_repeated_event_id_is_recorded_once() {
    let ledger = Ledger::open(MEMORY, LedgerOptions::default()).unwrap();
    let mut e = event(types::DEPLOY_STARTED, "v2", Source::Api);
    e.event_id = Some("ci-run-42".into());
    let first = ledger.insert_posted(vec![e.clone()]).unwrap();
    let again = ledger.insert_posted(vec![e]).unwrap();
    let Outcome::Inserted { id, .. } = first[0] else {
        panic!("{first:?}");
    };
    assert_eq!(again, vec![Outcome::Duplicate { id }]);
    let page = ledger.events(&EventFilter::default()).unwrap();
    assert_eq!(page.events.len(), 1);
}

#[test]
fn an_explicit_event_wins_over_an_inferred_one() {
    let ledger = Ledger::open(MEMORY, LedgerOptions::default()).unwrap();
    ledger
        .try_record(event(types::PROMOTED, "v2", Source::Inferred))
        .unwrap();
    ledger.flush().unwrap();
    let out = ledger
        .insert_posted(vec![event(types::PROMOTED, "v2", Source::Api)])
        .unwrap();
    assert!(
        matches!(out[0], Outcome::Inserted { superseded: 1, .. }),
        "{out:?}"
    );
    // An inferred one arriving later is not recorded.
    ledger
        .try_record(event(types::PROMOTED, "v2", Source::Inferred))
        .unwrap();
    ledger.flush().unwrap();
    let promoted = ledger
        .events(&EventFilter {
            kind: Some(types::PROMOTED.into()),
            ..Default::default()
        })
        .unwrap();
    let sources: Vec<Source> = promoted.events.iter().map(|e| e.event.source).collect();
    assert_eq!(sources, [Source::Api]);
}

#[test]
fn pages_follow_the_cursor_and_filters_narrow() {
    let ledger = Ledger::open(MEMORY, LedgerOptions::default()).unwrap();
    for i in 0..25 {
        let id = if i % 5 == 0 { "other" } else { "v2" };
        ledger
            .try_record(event(types::VERDICT_CHANGED, id, Source::Daemon))
            .unwrap();
    }
    ledger.flush().unwrap();
    let mut filter = EventFilter {
        deployment_id: Some("v2".into()),
        limit: Some(7),
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = ledger.events(&filter).unwrap();
        seen.extend(page.events.iter().map(|e| e.id));
        match page.next_cursor {
            Some(c) => filter.after_id = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 20);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

#[test]
fn the_checkpoint_round_trips_and_is_replaced() {
    let path = temp_path("checkpoint");
    {
        let ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
        assert_eq!(ledger.load_checkpoint().unwrap(), None);
        ledger.save_checkpoint(1, b"first").unwrap();
        ledger.save_checkpoint(2, &[0, 255, 7]).unwrap();
    }
    let ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
    assert_eq!(
        ledger.load_checkpoint().unwrap(),
        Some((2, vec![0, 255, 7]))
    );
    drop(ledger);
    remove(&path);
}

#[test]
fn a_file_that_is_not_a_database_is_reported_at_open() {
    let path = temp_path("corrupt");
    std::fs::create_dir_all(Path::new(&path).parent().unwrap()).unwrap();
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = Ledger::open(&path, LedgerOptions::default())
        .err()
        .expect("refused");
    assert!(err.to_string().contains(&path), "{err}");
    remove(&path);
}

#[test]
fn retention_deletes_old_events() {
    let ledger = Ledger::open(
        MEMORY,
        LedgerOptions {
            retention: std::time::Duration::from_secs(60),
            ..Default::default()
        },
    )
    .unwrap();
    let mut old = event(types::VERDICT_CHANGED, "v1", Source::Daemon);
    old.ts = T - 120 * 1_000_000_000;
    ledger.try_record(old).unwrap();
    ledger
        .try_record(event(types::VERDICT_CHANGED, "v2", Source::Daemon))
        .unwrap();
    let done = ledger.maintain(T).unwrap();
    assert_eq!(done.expired, 1);
    let left = ledger.events(&EventFilter::default()).unwrap();
    assert_eq!(left.events.len(), 1);
    assert_eq!(left.events[0].event.deployment_id.as_deref(), Some("v2"));
}

#[test]
fn a_failing_write_degrades_instead_of_crashing() {
    let ledger = Ledger::open(MEMORY, LedgerOptions::default()).unwrap();
    // The disk "fails": every later insert errors out.
    ledger.exec(|conn| conn.execute_batch("DROP TABLE events").unwrap());
    ledger
        .try_record(event(types::VERDICT_CHANGED, "v2", Source::Daemon))
        .unwrap();
    ledger.flush().unwrap();
    assert!(ledger.is_degraded());
    assert_eq!(ledger.stats().write_errors, 1);
    assert!(ledger
        .insert_posted(vec![event(types::COMMIT, "v2", Source::Api)])
        .is_err());
}

/// The reds a restart keeps: releases recorded red and seen since the
/// cut-off, with their first red (a later upsert does not move it).
#[test]
fn recorded_reds_are_the_releases_seen_red() {
    let path = temp_path("reds");
    let ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
    let record = |id: &str, last_seen: UnixNanos, red_since: Option<UnixNanos>| ReleaseRecord {
        service: "checkout".into(),
        environment: "prod".into(),
        deployment_id: id.into(),
        git_sha: None,
        baseline_deployment_id: Some("stable".into()),
        baseline_git_sha: None,
        first_seen_ns: T,
        last_seen_ns: last_seen,
        verdict: if red_since.is_some() { "red" } else { "yellow" }.into(),
        reason: format!("{id}: roll back"),
        red_since_ns: red_since,
        verdict_json: "{}".into(),
    };
    ledger
        .try_upsert_release(record("red", T + 10, Some(T + 5)))
        .unwrap();
    ledger
        .try_upsert_release(record("red", T + 20, Some(T + 15)))
        .unwrap();
    ledger
        .try_upsert_release(record("yellow", T + 20, None))
        .unwrap();
    ledger
        .try_upsert_release(record("old-red", T - 100, Some(T - 200)))
        .unwrap();
    ledger.flush().unwrap();
    let reds = ledger.recorded_reds(T, 10).unwrap();
    assert_eq!(reds.len(), 1, "{reds:?}");
    assert_eq!(
        (reds[0].deployment_id.as_str(), reds[0].red_since_ns),
        ("red", T + 5)
    );
    assert!(reds[0].reason.contains("roll back"));
    assert_eq!(ledger.recorded_reds(T - 1_000, 10).unwrap().len(), 2);
    drop(ledger);
    remove(&path);
}

/// A small cap for the size tests (the config's minimum is 1 MiB; the
/// options take any).
const CAP: u64 = 256 << 10;

fn capped(path: &str) -> Ledger {
    let options = LedgerOptions {
        max_bytes: Some(CAP),
        ..Default::default()
    };
    Ledger::open(path, options).unwrap()
}

/// `n` posted events of about 1 KiB each, stamped `ts`.
fn junk(n: usize, ts: UnixNanos) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = event(types::COMMIT, &format!("junk-{i}"), Source::Api);
            e.ts = ts;
            e.with("pad", "j".repeat(1000))
        })
        .collect()
}

/// `n` of the daemon's own events of about 1 KiB each, committed.
fn daemon_history(ledger: &Ledger, n: usize) {
    for i in 0..n {
        let e = event(types::VERDICT_CHANGED, &format!("v{i}"), Source::Daemon);
        ledger.try_record(e.with("pad", "d".repeat(1000))).unwrap();
    }
    ledger.flush().unwrap();
}

/// The file's size as another process sees it now (pages, committed).
fn file_bytes(path: &str) -> u64 {
    let conn =
        rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let pragma = |name: &str| -> u64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    };
    pragma("page_count") * pragma("page_size")
}

fn count(ledger: &Ledger, source: Source) -> usize {
    let mut filter = EventFilter {
        limit: Some(1000),
        ..Default::default()
    };
    let mut n = 0;
    loop {
        let page = ledger.events(&filter).unwrap();
        n += page
            .events
            .iter()
            .filter(|e| e.event.source == source)
            .count();
        match page.next_cursor {
            Some(c) => filter.after_id = Some(c),
            None => return n,
        }
    }
}

/// Fails without the write-time cap: the file grows to ~5 MiB until
/// `maintain` runs, which this test never calls.
#[test]
fn the_cap_holds_as_soon_as_a_write_returns() {
    let path = temp_path("cap-write");
    let ledger = capped(&path);
    for round in 0..50 {
        ledger.insert_posted(junk(100, T + round)).unwrap();
        let size = file_bytes(&path);
        assert!(
            size <= CAP,
            "round {round}: {size} bytes over a {CAP}-byte cap"
        );
    }
    let stats = ledger.stats();
    assert!(stats.capped_api > 4_000, "{stats:?}");
    assert_eq!(stats.capped, stats.capped_api);
    // The newest post is all there.
    let newest = ledger
        .events(&EventFilter {
            since: Some(T + 49),
            limit: Some(1000),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(newest.events.len(), 100);
    drop(ledger);
    remove(&path);
}

/// Fails before the change twice over: nothing is evicted at write time,
/// and `maintain` deleted by `ts`, the daemon's history before junk stamped
/// in 2200.
#[test]
fn posted_junk_is_evicted_before_the_daemons_history() {
    let path = temp_path("cap-order");
    let ledger = capped(&path);
    let year_2200 = 7_258_118_400 * 1_000_000_000;
    ledger.insert_posted(junk(20, year_2200)).unwrap();
    daemon_history(&ledger, 40);
    for _ in 0..10 {
        ledger.insert_posted(junk(30, year_2200)).unwrap();
        assert!(file_bytes(&path) <= CAP);
    }
    assert_eq!(
        count(&ledger, Source::Daemon),
        40,
        "the daemon's history is kept"
    );
    assert!(count(&ledger, Source::Api) < 320);
    ledger.maintain(T).unwrap();
    assert_eq!(
        count(&ledger, Source::Daemon),
        40,
        "and kept by maintenance"
    );
    let stats = ledger.stats();
    assert_eq!((stats.capped_daemon, stats.refused), (0, 0), "{stats:?}");
    drop(ledger);
    remove(&path);
}

/// When only the daemon's own history is left to evict, a post that does
/// not fit is refused whole and the history stays (before the change it
/// was written, then the history deleted by `maintain`).
#[test]
fn a_post_that_does_not_fit_is_refused_rather_than_cost_history() {
    let path = temp_path("cap-refuse");
    let ledger = capped(&path);
    daemon_history(&ledger, 60);
    let refused = ledger.insert_posted(junk(300, T)).unwrap_err();
    assert!(
        matches!(refused, LedgerError::Full { max_bytes: CAP }),
        "{refused}"
    );
    ledger.maintain(T).unwrap();
    assert_eq!(count(&ledger, Source::Api), 0, "all or nothing");
    assert_eq!(count(&ledger, Source::Daemon), 60);
    assert_eq!(ledger.stats().refused, 300);
    // A post that fits is recorded.
    ledger.insert_posted(junk(5, T)).unwrap();
    assert_eq!(count(&ledger, Source::Api), 5);
    drop(ledger);
    remove(&path);
}

/// With only its own events, the daemon's oldest received go: the cap
/// holds whoever writes.
#[test]
fn the_daemons_own_events_give_way_oldest_received_first() {
    let path = temp_path("cap-own");
    let ledger = capped(&path);
    for i in 0..1_000u64 {
        let mut e = event(types::VERDICT_CHANGED, &format!("v{i}"), Source::Daemon)
            .with("pad", "d".repeat(1000));
        // Stamped backwards: received order, not ts, decides.
        e.ts = T - i;
        ledger.try_record(e).unwrap();
    }
    ledger.flush().unwrap();
    assert!(file_bytes(&path) <= CAP);
    let left = ledger
        .events(&EventFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .unwrap();
    let last = left.events.last().unwrap();
    assert_eq!(last.event.deployment_id.as_deref(), Some("v999"));
    assert!(left.events.len() < 1_000);
    assert_eq!(
        ledger.stats().capped_daemon,
        1_000 - left.events.len() as u64
    );
    drop(ledger);
    remove(&path);
}
