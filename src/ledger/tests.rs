//! Ledger tests over real databases: SQLite files in the temp directory,
//! and databases on a real PostgreSQL server this process starts. The tests
//! of what both must do run on both ([`BACKENDS`]); those of SQLite's file
//! (corruption, the size cap) on SQLite alone.

use super::event::{types, Event, Source};
use super::*;

#[path = "../../tests/common/postgres.rs"]
pub(crate) mod postgres_server;

/// The ledger's two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// Every database the ledger runs on.
pub(crate) const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

impl Backend {
    /// A new, empty ledger: a file in a fresh temp directory, or a fresh
    /// PostgreSQL database.
    pub fn fresh(self, name: &str) -> String {
        match self {
            Backend::Sqlite => temp_path(name),
            Backend::Postgres => postgres_server::database(name),
        }
    }

    /// Removes what `fresh` made (a PostgreSQL database goes with its
    /// server, at the end of the test process).
    pub fn remove(self, location: &str) {
        if self == Backend::Sqlite {
            remove(location);
        }
    }
}

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
    for backend in BACKENDS {
        let path = backend.fresh("reopen");
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
        backend.remove(&path);
    }
}

#[test]
fn a_repeated_event_id_is_recorded_once() {
    for backend in BACKENDS {
        let path = backend.fresh("dup");
        let ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
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
        backend.remove(&path);
    }
}

#[test]
fn an_explicit_event_wins_over_an_inferred_one() {
    for backend in BACKENDS {
        let path = backend.fresh("explicit");
        let ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
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
        backend.remove(&path);
    }
}

#[test]
fn pages_follow_the_cursor_and_filters_narrow() {
    for backend in BACKENDS {
        let path = backend.fresh("pages");
        let ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
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
        backend.remove(&path);
    }
}

fn fleet(service: &str, last_seen_ns: u64, data: &[u8]) -> states::FleetState {
    states::FleetState {
        service: service.into(),
        environment: "prod".into(),
        last_seen_ns,
        data: data.to_vec(),
    }
}

fn checkpoint(now: u64, url: &str, fleets: Vec<states::FleetState>) -> states::Checkpoint {
    states::Checkpoint {
        now,
        fleets,
        url: url.into(),
        started_ns: 1,
        forget_before: 0,
    }
}

/// Each fleet's state is one row, whoever judges it: a replica whose
/// telemetry is older than the row's (the one a service moved away from)
/// does not write over it; the replicas are listed with their URLs; the
/// judge of a fleet is found by the others, not by itself.
#[test]
fn a_fleet_state_is_the_newest_telemetrys() {
    for backend in BACKENDS {
        let path = backend.fresh("fleet-states");
        let named = |replica: &str| {
            Ledger::open(
                &path,
                LedgerOptions {
                    replica: replica.into(),
                    ..LedgerOptions::default()
                },
            )
            .unwrap()
        };
        let (a, b) = (named("a"), named("b"));
        assert_eq!(a.own_fleets().unwrap(), vec![]);
        a.save_fleets(checkpoint(
            100,
            "http://a:1",
            vec![fleet("svc", 10, b"a1"), fleet("other", 10, &[0, 255])],
        ))
        .unwrap();
        b.save_fleets(checkpoint(101, "http://b:1", vec![fleet("svc", 20, b"b1")]))
            .unwrap();
        // a's copy is staler than b's: refused; then newer: taken.
        a.save_fleets(checkpoint(102, "http://a:1", vec![fleet("svc", 15, b"a2")]))
            .unwrap();
        let svc = a.fleet_state("svc", "prod", 0).unwrap().unwrap();
        assert_eq!(
            (svc.replica.as_str(), svc.state.data.as_slice()),
            ("b", &b"b1"[..])
        );
        assert_eq!(svc.written_ns, 101);
        let own: Vec<_> = a
            .own_fleets()
            .unwrap()
            .into_iter()
            .map(|f| f.state.service)
            .collect();
        assert_eq!(own, vec!["other"]);
        assert_eq!(
            a.judge_of("svc", "prod", 0).unwrap().unwrap().url,
            "http://b:1"
        );
        assert_eq!(b.judge_of("svc", "prod", 0).unwrap(), None, "not itself");
        assert_eq!(
            a.judge_of("svc", "prod", 102).unwrap(),
            None,
            "b's heartbeat is older"
        );
        a.save_fleets(checkpoint(103, "http://a:1", vec![fleet("svc", 25, b"a3")]))
            .unwrap();
        assert_eq!(
            b.fleet_state("svc", "prod", 0).unwrap().unwrap().replica,
            "a"
        );
        assert_eq!(
            b.fleet_state("svc", "prod", 26).unwrap(),
            None,
            "seen too long ago"
        );
        let names: Vec<_> = a
            .replicas(0)
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.url))
            .collect();
        assert_eq!(
            names,
            vec![
                ("a".into(), "http://a:1".into()),
                ("b".into(), "http://b:1".into())
            ]
        );
        // What is older than forget_before goes: b's heartbeat, "other".
        let mut forgetting = checkpoint(104, "http://a:1", vec![fleet("svc", 30, b"a4")]);
        forgetting.forget_before = 102;
        a.save_fleets(forgetting).unwrap();
        assert_eq!(a.replicas(0).unwrap().len(), 1);
        assert_eq!(a.fleet_state("other", "prod", 0).unwrap(), None);
        drop((a, b));
        backend.remove(&path);
    }
}

/// A replica restores the whole-daemon checkpoint of a ledger from before
/// fleet states (its own, else the unnamed one of before names) until it
/// writes fleet states: then its own is gone.
#[test]
fn the_whole_checkpoint_of_before_is_read_until_fleet_states() {
    for backend in BACKENDS {
        let path = backend.fresh("checkpoints");
        let c = Ledger::open(
            &path,
            LedgerOptions {
                replica: "c".into(),
                ..LedgerOptions::default()
            },
        )
        .unwrap();
        assert_eq!(c.load_checkpoint().unwrap(), None, "{backend:?}");
        c.exec(|conn| {
            conn.exec(
                "INSERT INTO checkpoints VALUES ('', 3, ?1), ('c', 4, ?2)",
                db::args![&[0u8][..], &[1u8][..]],
            )
            .unwrap();
        });
        assert_eq!(c.load_checkpoint().unwrap(), Some((4, vec![1])));
        c.save_fleets(checkpoint(5, "http://c:1", vec![fleet("svc", 5, b"c")]))
            .unwrap();
        assert_eq!(c.load_checkpoint().unwrap(), Some((3, vec![0])));
        drop(c);
        backend.remove(&path);
    }
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
    for backend in BACKENDS {
        let path = backend.fresh("retention");
        let ledger = Ledger::open(
            &path,
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
        backend.remove(&path);
    }
}

#[test]
fn a_failing_write_degrades_instead_of_crashing() {
    for backend in BACKENDS {
        let path = backend.fresh("failing");
        let ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
        // The disk "fails": every later insert errors out.
        ledger.exec(|conn| conn.batch("DROP TABLE events").unwrap());
        ledger
            .try_record(event(types::VERDICT_CHANGED, "v2", Source::Daemon))
            .unwrap();
        ledger.flush().unwrap();
        assert!(ledger.is_degraded());
        assert_eq!(ledger.stats().write_errors, 1);
        assert!(ledger
            .insert_posted(vec![event(types::COMMIT, "v2", Source::Api)])
            .is_err());
        backend.remove(&path);
    }
}

/// The reds a restart keeps: releases recorded red and seen since the
/// cut-off, with their first red (a later upsert does not move it).
#[test]
fn recorded_reds_are_the_releases_seen_red() {
    for backend in BACKENDS {
        let path = backend.fresh("reds");
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
        backend.remove(&path);
    }
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

/// What the API, DORA and the notifiers read answers the same on both
/// databases: releases by id (narrowed or not), recorded baselines, DORA
/// with a commit's own time, sink state and its clean-up.
#[test]
fn both_databases_answer_alike() {
    const S: UnixNanos = 1_000_000_000;
    let mut answers = Vec::new();
    for backend in BACKENDS {
        let path = backend.fresh("alike");
        let ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
        for (env, last_seen) in [("prod", T + 50 * S), ("staging", T + 10 * S)] {
            ledger
                .try_upsert_release(ReleaseRecord {
                    service: "checkout".into(),
                    environment: env.into(),
                    deployment_id: "v2".into(),
                    git_sha: Some("2b5d9af".into()),
                    baseline_deployment_id: Some("v1".into()),
                    baseline_git_sha: None,
                    first_seen_ns: T,
                    last_seen_ns: last_seen,
                    verdict: "green".into(),
                    reason: "ok".into(),
                    red_since_ns: None,
                    verdict_json: format!("{{\"environment\":\"{env}\"}}"),
                })
                .unwrap();
        }
        let at = |kind: &str, secs: u64| {
            let mut e = event(kind, "v2", Source::Api);
            e.ts = T + secs * S;
            e
        };
        let commit = at(types::COMMIT, 0).with("commit_time", "2025-11-22T08:00:00Z");
        ledger
            .insert_posted(vec![
                commit,
                at(types::DEPLOY_STARTED, 100),
                at(types::PROMOTED, 700),
            ])
            .unwrap();
        ledger
            .set_sink_state("slack", "gone", "thread_ts", "1.2")
            .unwrap();
        ledger.flush().unwrap();

        let both = ledger.find_release("v2", None, None).unwrap();
        let envs: Vec<&str> = both.iter().map(|r| r.environment.as_str()).collect();
        assert_eq!(
            envs,
            ["prod", "staging"],
            "{backend:?}: most recently seen first"
        );
        let one = ledger.find_release("v2", None, Some("staging")).unwrap();
        assert_eq!(one.len(), 1, "{backend:?}");
        assert_eq!(one[0].verdict_json, "{\"environment\":\"staging\"}");
        assert!(ledger
            .find_release("v2", Some("payments"), None)
            .unwrap()
            .is_empty());
        let baselines = ledger.recorded_baselines(T + 20 * S, 10).unwrap();
        assert_eq!(baselines.len(), 1, "{backend:?}");
        assert_eq!(baselines[0].baseline_deployment_id, "v1");

        let query = DoraQuery {
            service: Some("checkout".into()),
            environment: Some("prod".into()),
            window: crate::dora::Window {
                since: T - 86_400 * S,
                until: T + 86_400 * S,
            },
            bucket: None,
        };
        let dora = ledger.dora(&query).unwrap();
        assert_eq!(dora[0].measures.deployments, 1, "{backend:?}");
        assert_eq!(dora[0].measures.lead_time_seconds.count, 1, "{backend:?}");

        assert_eq!(ledger.sink_state("slack", "gone").unwrap().len(), 1);
        ledger.maintain(T).unwrap();
        assert!(
            ledger.sink_state("slack", "gone").unwrap().is_empty(),
            "{backend:?}: the state of a release with no record nor delivery goes"
        );
        answers.push((both, dora));
        drop(ledger);
        backend.remove(&path);
    }
    assert_eq!(answers[0], answers[1], "SQLite and PostgreSQL agree");
}

/// A PostgreSQL ledger opened by two daemons at once migrates once; a
/// schema newer than this build is refused with the reason.
#[test]
fn postgres_migrates_once_and_refuses_a_newer_schema() {
    let url = Backend::Postgres.fresh("migrate");
    let opened: Vec<Ledger> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| Ledger::open(&url, LedgerOptions::default()).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    drop(opened);
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let version: i64 = client
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, schema::VERSION);
    client
        .execute("UPDATE schema_version SET version = version + 1", &[])
        .unwrap();
    let err = Ledger::open(&url, LedgerOptions::default())
        .err()
        .expect("refused");
    assert!(matches!(err, LedgerError::TooNew { .. }), "{err}");
}

/// An unreachable PostgreSQL is a clear error at open, naming the URL but
/// never its password.
#[test]
fn an_unreachable_postgres_is_named_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://rv:s3cret@127.0.0.1:{port}/ledger");
    let err = Ledger::open(&url, LedgerOptions::default())
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

/// Two replicas sharing a ledger never claim the same delivery; a claim of
/// a replica that died lapses at its lease and the other sends it; a
/// replica stopping gives its unsent claims back at once.
#[test]
fn replicas_claim_each_delivery_once() {
    const S: UnixNanos = 1_000_000_000;
    for backend in BACKENDS {
        let path = backend.fresh("claims");
        let replica = |name: &str| {
            Ledger::open(
                &path,
                LedgerOptions {
                    routes: vec![outbox::Route {
                        sink: "hook".into(),
                        ..outbox::Route::default()
                    }],
                    replica: name.into(),
                    claim_lease: std::time::Duration::from_secs(60),
                    ..LedgerOptions::default()
                },
            )
            .unwrap()
        };
        let (a, b) = (replica("a"), replica("b"));
        for id in ["r1", "r2", "r3"] {
            a.try_record(event(types::RELEASE_STARTED, id, Source::Daemon))
                .unwrap();
        }
        a.flush().unwrap();
        let ids = |d: &[outbox::Delivery]| -> Vec<String> {
            d.iter()
                .map(|d| d.event.deployment_id.clone().unwrap())
                .collect()
        };
        let by_a = a.claim_deliveries_of("hook", T + S, 2).unwrap();
        assert_eq!(ids(&by_a), ["r1", "r2"], "{backend:?}");
        let by_b = b.claim_deliveries_of("hook", T + S, 10).unwrap();
        assert_eq!(ids(&by_b), ["r3"], "{backend:?}: only what a did not claim");
        assert!(b.claim_deliveries_of("hook", T + 2 * S, 10).unwrap().len() == 1);
        // a sends r1; its claim on r2 stays a's until the lease ends.
        a.settle_delivery(by_a[0].id, outbox::Settle::Delivered, T + 2 * S)
            .unwrap();
        assert_eq!(
            ids(&b.claim_deliveries_of("hook", T + 30 * S, 10).unwrap()),
            ["r3"],
            "{backend:?}: r2 is still a's"
        );
        // a "dies" (no more claims); past the lease b takes r2.
        assert_eq!(
            ids(&b.claim_deliveries_of("hook", T + 62 * S, 10).unwrap()),
            ["r2", "r3"],
            "{backend:?}"
        );
        // b stops without sending: its claims go back, a gets them at once.
        b.close();
        assert_eq!(
            ids(&a.claim_deliveries_of("hook", T + 63 * S, 10).unwrap()),
            ["r2", "r3"],
            "{backend:?}"
        );
        drop(a);
        backend.remove(&path);
    }
}

/// Two replicas claiming and sending at the same time, as fast as they
/// can: every delivery is sent, and by one replica only.
#[test]
fn racing_replicas_send_every_delivery_once() {
    const RELEASES: usize = 300;
    for backend in BACKENDS {
        let path = backend.fresh("race");
        let options = |name: &str| LedgerOptions {
            routes: vec![outbox::Route {
                sink: "hook".into(),
                ..outbox::Route::default()
            }],
            replica: name.into(),
            ..LedgerOptions::default()
        };
        let first = Ledger::open(&path, options("a")).unwrap();
        for i in 0..RELEASES {
            first
                .try_record(event(
                    types::RELEASE_STARTED,
                    &format!("r{i}"),
                    Source::Daemon,
                ))
                .unwrap();
        }
        first.flush().unwrap();
        let second = Ledger::open(&path, options("b")).unwrap();
        // Both start together: neither may sweep the outbox before the
        // other has begun.
        let start = std::sync::Barrier::new(2);
        let sent: Vec<Vec<i64>> = std::thread::scope(|s| {
            [&first, &second]
                .map(|ledger| {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        let mut mine = Vec::new();
                        loop {
                            let due = ledger.claim_deliveries_of("hook", T, 7).unwrap();
                            if due.is_empty() {
                                return mine;
                            }
                            for d in due {
                                ledger
                                    .settle_delivery(d.id, outbox::Settle::Delivered, T)
                                    .unwrap();
                                mine.push(d.id);
                            }
                        }
                    })
                })
                .map(|h| h.join().unwrap())
                .into()
        });
        let mut all: Vec<i64> = sent.concat();
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(total, all.len(), "{backend:?}: a delivery was sent twice");
        assert_eq!(all.len(), RELEASES, "{backend:?}: every delivery is sent");
        assert!(
            sent.iter().all(|s| !s.is_empty()),
            "{backend:?}: both replicas took part: {:?}",
            sent.iter().map(Vec::len).collect::<Vec<_>>()
        );
        drop((first, second));
        backend.remove(&path);
    }
}

/// Replicas fed the same telemetry record a release's start, red and
/// inferred end once between them; a post may not take those ids.
#[test]
fn once_per_release_events_are_written_once_by_any_number_of_replicas() {
    for backend in BACKENDS {
        let path = backend.fresh("once");
        let replicas: Vec<Ledger> = (0..2)
            .map(|_| Ledger::open(&path, LedgerOptions::default()).unwrap())
            .collect();
        for ledger in &replicas {
            for kind in [types::RELEASE_STARTED, types::CANARY_FAILED] {
                ledger
                    .try_record(event(kind, "v2", Source::Daemon).once_per_release())
                    .unwrap();
            }
            ledger
                .try_record(event(types::VERDICT_CHANGED, "v2", Source::Daemon))
                .unwrap();
            ledger.flush().unwrap();
        }
        let kinds: Vec<String> = replicas[0]
            .timeline("checkout", "prod", "v2")
            .unwrap()
            .into_iter()
            .map(|e| e.event.kind)
            .collect();
        let count = |k: &str| kinds.iter().filter(|x| x.as_str() == k).count();
        assert_eq!(count(types::RELEASE_STARTED), 1, "{backend:?}: {kinds:?}");
        assert_eq!(count(types::CANARY_FAILED), 1, "{backend:?}: {kinds:?}");
        assert_eq!(
            count(types::VERDICT_CHANGED),
            2,
            "{backend:?}: each replica's own"
        );
        assert_eq!(replicas[1].stats().duplicates, 2, "{backend:?}");
        drop(replicas);
        backend.remove(&path);
    }
    let posted = br#"{"type": "canary_failed", "service": "checkout",
        "event_id": "release-verdict:canary_failed:checkout:prod:v2"}"#;
    let err = event::parse_posted(posted, T).unwrap_err().to_string();
    assert!(err.starts_with("event_id: may not start with"), "{err}");
}

/// PostgreSQL dropping the daemon's connections (a failover, a restart of
/// the server, an idle timeout): the write in flight may be lost and is
/// counted; the next ones reconnect and succeed, reads too.
#[test]
fn a_postgres_ledger_reconnects_after_its_connections_are_killed() {
    let url = Backend::Postgres.fresh("reconnect");
    let ledger = Ledger::open(&url, LedgerOptions::default()).unwrap();
    ledger
        .try_record(event(types::RELEASE_STARTED, "v1", Source::Daemon))
        .unwrap();
    ledger.flush().unwrap();
    assert_eq!(
        ledger.events(&EventFilter::default()).unwrap().events.len(),
        1
    );
    let name = url.rsplit('/').next().unwrap().to_string();
    postgres_server::server()
        .psql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}'"
            ),
        )
        .unwrap();
    // The first use of each dead connection fails; the next reconnects.
    let mut recorded = false;
    for i in 0..5 {
        let e = event(types::VERDICT_CHANGED, &format!("v{i}"), Source::Daemon);
        ledger.try_record(e).unwrap();
        ledger.flush().unwrap();
        if !ledger.is_degraded() {
            recorded = true;
            break;
        }
    }
    assert!(recorded, "writes succeed again: {:?}", ledger.stats());
    let read = (0..5).find_map(|_| ledger.events(&EventFilter::default()).ok());
    let events = read.expect("reads succeed again").events;
    assert!(events.len() >= 2, "{events:?}");
}
