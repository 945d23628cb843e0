use super::*;

const HOUR: UnixNanos = 3600 * NANOS_PER_SEC;
const MINUTE: UnixNanos = 60 * NANOS_PER_SEC;
/// 2026-11-02T00:00:00Z, a Monday.
const D0: UnixNanos = 1_793_577_600 * NANOS_PER_SEC;

fn fact(kind: Kind, ts: UnixNanos, env: Option<&str>, id: Option<&str>, sha: Option<&str>) -> Fact {
    Fact {
        kind,
        ts,
        service: "checkout".into(),
        environment: env.map(Into::into),
        deployment_id: id.map(Into::into),
        git_sha: sha.map(Into::into),
    }
}

fn release(kind: Kind, ts: UnixNanos, id: &str) -> Fact {
    fact(kind, ts, Some("prod"), Some(id), Some(&format!("sha-{id}")))
}

fn day() -> Window {
    Window {
        since: D0,
        until: D0 + DAY,
    }
}

fn only(reports: Vec<Report>) -> Measures {
    assert_eq!(reports.len(), 1, "{reports:#?}");
    reports.into_iter().next().unwrap().measures
}

#[test]
fn quantiles_interpolate_between_ranks() {
    let v = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(quantile(&v, 0.5), Some(2.5));
    assert_eq!(quantile(&v, 0.9), Some(3.7));
    assert_eq!(quantile(&[7.0], 0.95), Some(7.0));
    assert_eq!(quantile(&[], 0.5), None);
}

#[test]
fn a_commit_named_by_sha_gives_the_lead_time() {
    let facts = vec![
        fact(Kind::Change, D0 + HOUR, None, None, Some("sha-a")),
        release(Kind::Started, D0 + 2 * HOUR, "a"),
        release(Kind::Promoted, D0 + 3 * HOUR, "a"),
    ];
    let m = only(compute(&facts, day(), None));
    assert_eq!(m.deployments, 1);
    assert_eq!(m.lead_time_seconds.count, 1);
    assert_eq!(m.lead_time_seconds.median, Some(7200.0));
}

#[test]
fn the_earliest_change_counts_and_changes_after_promotion_do_not() {
    let facts = vec![
        fact(Kind::Change, D0 + 2 * HOUR, None, Some("a"), None),
        fact(Kind::Change, D0 + HOUR, None, None, Some("sha-a")),
        release(Kind::Promoted, D0 + 3 * HOUR, "a"),
        fact(Kind::Change, D0 + 5 * HOUR, None, None, Some("sha-b")),
        release(Kind::Promoted, D0 + 4 * HOUR, "b"),
    ];
    let m = only(compute(&facts, day(), None));
    assert_eq!(m.deployments, 2);
    assert_eq!(m.lead_time_seconds.count, 1, "b's change came after it");
    assert_eq!(m.lead_time_seconds.median, Some(7200.0));
}

#[test]
fn red_rollback_and_incident_each_fail_a_release() {
    let facts = vec![
        release(Kind::Started, D0 + HOUR, "a"),
        release(Kind::Failed, D0 + HOUR + 5 * MINUTE, "a"),
        release(Kind::RolledBack, D0 + HOUR + 12 * MINUTE, "a"),
        release(Kind::Started, D0 + 2 * HOUR, "b"),
        release(Kind::RolledBack, D0 + 2 * HOUR + 20 * MINUTE, "b"),
        release(Kind::Started, D0 + 3 * HOUR, "c"),
        release(Kind::Promoted, D0 + 3 * HOUR + 30 * MINUTE, "c"),
        // Names nothing: the release started last before it, c.
        fact(
            Kind::IncidentStarted,
            D0 + 4 * HOUR,
            Some("prod"),
            None,
            None,
        ),
        fact(
            Kind::Restored,
            D0 + 4 * HOUR + 25 * MINUTE,
            None,
            None,
            None,
        ),
        release(Kind::Started, D0 + 5 * HOUR, "d"),
        release(Kind::Promoted, D0 + 5 * HOUR + 30 * MINUTE, "d"),
    ];
    let m = only(compute(&facts, day(), None));
    assert_eq!(m.releases_started, 4);
    assert_eq!(m.failed_releases, 3);
    assert_eq!(m.change_failure_rate, Some(0.75));
    // b was rolled back with no red or incident before: failed, but
    // nobody knows when it began, so it has no time to restore.
    let ttr = &m.time_to_restore_seconds;
    assert_eq!((ttr.count, ttr.open), (2, 0));
    assert_eq!(ttr.median, Some((420.0 + 1500.0) / 2.0));
}

#[test]
fn a_later_promotion_rolls_a_failure_forward() {
    let facts = vec![
        release(Kind::Started, D0 + HOUR, "a"),
        release(Kind::Promoted, D0 + HOUR, "a"),
        release(Kind::Failed, D0 + 2 * HOUR, "a"),
        release(Kind::Started, D0 + 2 * HOUR, "b"),
        release(Kind::Promoted, D0 + 3 * HOUR, "b"),
    ];
    let m = only(compute(&facts, day(), None));
    assert_eq!(m.time_to_restore_seconds.count, 1);
    assert_eq!(m.time_to_restore_seconds.median, Some(3600.0));
}

#[test]
fn a_failure_not_restored_before_until_is_open() {
    let facts = vec![
        release(Kind::Started, D0 + HOUR, "a"),
        release(Kind::Failed, D0 + 2 * HOUR, "a"),
        // After the window: not seen.
        release(Kind::RolledBack, D0 + DAY + HOUR, "a"),
    ];
    let m = only(compute(&facts, day(), None));
    assert_eq!(m.failed_releases, 1);
    assert_eq!(m.time_to_restore_seconds.count, 0);
    assert_eq!(m.time_to_restore_seconds.open, 1);
}

#[test]
fn an_incident_by_sha_fails_every_release_of_that_sha() {
    let facts = vec![
        fact(
            Kind::Started,
            D0 + HOUR,
            Some("prod"),
            Some("a-prod"),
            Some("s1"),
        ),
        fact(
            Kind::Started,
            D0 + HOUR,
            Some("staging"),
            Some("a-stg"),
            Some("s1"),
        ),
        fact(
            Kind::Started,
            D0 + HOUR,
            Some("staging"),
            Some("b-stg"),
            Some("s2"),
        ),
        fact(Kind::IncidentStarted, D0 + 2 * HOUR, None, None, Some("s1")),
    ];
    let reports = compute(&facts, day(), None);
    let by_env: Vec<(&str, usize, usize)> = reports
        .iter()
        .map(|r| {
            (
                r.environment.as_str(),
                r.measures.releases_started,
                r.measures.failed_releases,
            )
        })
        .collect();
    assert_eq!(by_env, vec![("prod", 1, 1), ("staging", 2, 1)]);
}

#[test]
fn a_release_counts_in_the_window_it_started_in() {
    let facts = vec![
        release(Kind::Started, D0 - HOUR, "before"),
        release(Kind::Promoted, D0 + HOUR, "before"),
        release(Kind::Started, D0 + HOUR, "inside"),
        release(Kind::Started, D0 + DAY, "after"),
    ];
    let m = only(compute(&facts, day(), None));
    assert_eq!(m.releases_started, 1);
    assert_eq!(m.deployments, 1, "promoted inside the window");
    assert_eq!(m.deployments_per_day, 1.0);
}

#[test]
fn a_release_without_a_start_event_starts_at_its_first_event() {
    let facts = vec![release(Kind::Promoted, D0 + HOUR, "a")];
    let m = only(compute(&facts, day(), None));
    assert_eq!((m.releases_started, m.deployments), (1, 1));
}

#[test]
fn buckets_cut_the_window_by_day_and_iso_week() {
    let facts: Vec<Fact> = (0..10)
        .map(|d| release(Kind::Promoted, D0 + d * DAY + HOUR, &format!("r{d}")))
        .collect();
    let window = Window {
        since: D0 + 12 * HOUR,
        until: D0 + 9 * DAY,
    };
    let report = compute(&facts, window, Some(Bucket::Day)).remove(0);
    assert_eq!(report.buckets.len(), 9);
    assert_eq!(report.buckets[0].since, "2026-11-02T12:00:00.000Z");
    assert_eq!(report.buckets[0].deployments, 0, "day 0's was before noon");
    assert!(report.buckets[1..].iter().all(|b| b.deployments == 1));
    let weeks = compute(&facts, window, Some(Bucket::Week))
        .remove(0)
        .buckets;
    let cuts: Vec<(&str, usize)> = weeks
        .iter()
        .map(|b| (b.until.as_str(), b.deployments))
        .collect();
    assert_eq!(
        cuts,
        vec![
            ("2026-11-09T00:00:00.000Z", 6),
            ("2026-11-11T00:00:00.000Z", 2)
        ]
    );
    assert_eq!(weeks[0].deploy_days, 6);
}

#[test]
fn services_without_activity_in_the_window_are_left_out() {
    let mut facts = vec![release(Kind::Started, D0 - 3 * DAY, "old")];
    facts.push(Fact {
        service: "search".into(),
        ..release(Kind::Started, D0 + HOUR, "s")
    });
    let reports = compute(&facts, day(), None);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].service, "search");
}
