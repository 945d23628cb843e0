//! Store tests: the baseline rule, rollout ends, the cap, expiry and checkpoints.

use super::fleet::Basis;
use super::*;
use crate::judge::Unpaired;
use crate::model::{Group, ReleaseRef, RequestSource, Sample};

fn batch(groups: &[(&'static str, u64, Option<Role>)]) -> Batch<'static> {
    let mut b = Batch::default();
    for &(id, n, role) in groups {
        b.groups.push(Group {
            release: ReleaseRef {
                service: "svc",
                environment: "prod",
                deployment_id: id,
                git_sha: Some("sha"),
                role,
            },
            items: n,
            sample: Sample {
                requests: n,
                errors: 0,
                latencies_us: vec![(1000, n)],
                ..Default::default()
            },
        });
    }
    b
}

fn fleet(store: &Store) -> &Fleet {
    store.fleets().next().unwrap().2
}

fn store(max: usize) -> Store {
    let c = crate::config::Config::default();
    Store::new(
        max,
        Judge::new(&c.judge, &c.checks),
        BaselineRule::from(&c.baseline),
    )
}

fn base<'a>(f: &'a Fleet, id: &str) -> Option<&'a str> {
    f.baseline_of(&f.releases[id]).map(|b| &*b.deployment_id)
}

const SEC: u64 = crate::model::NANOS_PER_SEC;

/// Seconds `from..to`: each second the groups are applied in order, a
/// fifth of a second apart, then the store is judged.
fn run(s: &mut Store, from: u64, to: u64, groups: &[(&'static str, u64, Option<Role>)]) {
    for t in from..to {
        for (k, g) in groups.iter().enumerate() {
            s.apply(&batch(&[*g]), t * SEC + k as u64 * SEC / 5);
        }
        s.tick(t * SEC + SEC - 1);
    }
}

fn unpaired(s: &Store, id: &str) -> Unpaired {
    let f = fleet(s);
    f.unpaired(&f.releases[id], s.rule, 1_000 * SEC)
}

#[test]
fn totals_accumulate_per_release() {
    let mut s = store(10);
    s.apply(&batch(&[("a", 3, None), ("b", 2, None)]), 10);
    s.apply(&batch(&[("a", 4, None)]), 20);
    let f = fleet(&s);
    assert_eq!(f.releases["a"].total.requests, 7);
    assert_eq!(f.releases["a"].first_seen, 10);
    assert_eq!(f.releases["a"].last_seen, 20);
    assert_eq!(f.releases["b"].total.requests, 2);
    assert_eq!(s.len(), 2);
}

#[test]
fn the_busiest_deployment_is_the_baseline_whoever_reports_first() {
    let mut s = store(10);
    // The new version's exporter always flushes first.
    let traffic = [("new", 10, None), ("old", 90, None)];
    run(&mut s, 1, 5, &traffic);
    assert_eq!(base(fleet(&s), "new"), None, "chosen before settling");
    assert!(matches!(unpaired(&s, "new"), Unpaired::Settling { .. }));
    run(&mut s, 5, 13, &traffic);
    let f = fleet(&s);
    assert_eq!(base(f, "new"), Some("old"));
    assert_eq!(base(f, "old"), None);
    assert_eq!(
        unpaired(&s, "old"),
        Unpaired::BaselineOf(vec!["new".into()])
    );
    assert!(matches!(
        f.choice,
        Choice::Chosen { basis: Basis::Traffic { share }, .. } if (share - 0.9).abs() < 1e-9
    ));
}

#[test]
fn the_baseline_stays_while_the_canary_takes_most_of_the_traffic() {
    let mut s = store(10);
    run(&mut s, 1, 12, &[("old", 90, None), ("new", 10, None)]);
    run(&mut s, 12, 100, &[("old", 20, None), ("new", 80, None)]);
    assert_eq!(base(fleet(&s), "new"), Some("old"));
}

/// A restart without the checkpoint, mid-rollout: the canary serves 80%
/// and, as its exporter flushes first, reports alone for a while. Traffic
/// alone would make it the baseline; the ledger's record says otherwise.
#[test]
fn after_a_restart_the_ledger_keeps_a_canary_past_half_on_its_baseline() {
    let pair = |id: &str, baseline: &str, at: u64| {
        (ReleaseKey::new("svc", "prod", id), Arc::from(baseline), at)
    };
    let mut s = store(10);
    // An older pair ("old" was the canary of "older") whose baseline no
    // longer reports is no evidence.
    s.remember_baselines([pair("new", "old", 5), pair("old", "older", 1)]);
    run(&mut s, 1, 15, &[("new", 80, None)]);
    assert_eq!(base(fleet(&s), "new"), None);
    run(&mut s, 15, 20, &[("new", 80, None), ("old", 20, None)]);
    let f = fleet(&s);
    assert_eq!(base(f, "new"), Some("old"), "{:?}", f.choice);
    assert_eq!(base(f, "old"), None);
    assert!(matches!(
        &f.choice,
        Choice::Chosen { basis: Basis::Ledger { of }, .. } if &**of == "new"
    ));

    // Without the record the same traffic inverts the roles.
    let mut s = store(10);
    run(&mut s, 1, 15, &[("new", 80, None)]);
    run(&mut s, 15, 20, &[("new", 80, None), ("old", 20, None)]);
    assert_eq!(base(fleet(&s), "old"), Some("new"));
}

#[test]
fn a_declared_role_beats_the_ledgers_record() {
    let mut s = store(10);
    s.remember_baselines([(ReleaseKey::new("svc", "prod", "new"), Arc::from("old"), 5)]);
    run(
        &mut s,
        1,
        15,
        &[("new", 80, Some(Role::Baseline)), ("old", 20, None)],
    );
    assert_eq!(base(fleet(&s), "old"), Some("new"));
}

#[test]
fn similar_shares_are_ambiguous_until_a_role_says() {
    let mut s = store(10);
    run(&mut s, 1, 12, &[("a", 50, None), ("b", 45, None)]);
    assert_eq!(base(fleet(&s), "a"), None);
    assert!(matches!(unpaired(&s, "b"), Unpaired::Ambiguous { ref top } if top.len() == 2));
    run(
        &mut s,
        12,
        13,
        &[("a", 50, Some(Role::Baseline)), ("b", 45, None)],
    );
    assert_eq!(base(fleet(&s), "b"), Some("a"));
}

#[test]
fn a_declared_baseline_wins() {
    let mut s = store(10);
    run(&mut s, 1, 12, &[("old", 100, None)]);
    run(
        &mut s,
        12,
        14,
        &[("old", 100, None), ("canary", 5, Some(Role::Canary))],
    );
    assert_eq!(base(fleet(&s), "canary"), Some("old"));
    run(&mut s, 14, 15, &[("base", 5, Some(Role::Baseline))]);
    let f = fleet(&s);
    assert_eq!(base(f, "canary"), Some("base"));
    assert_eq!(base(f, "base"), None);
}

#[test]
fn a_declared_canary_is_never_anyones_baseline() {
    let mut s = store(10);
    run(
        &mut s,
        1,
        15,
        &[("c1", 80, Some(Role::Canary)), ("c2", 20, None)],
    );
    let f = fleet(&s);
    assert_eq!(base(f, "c2"), None);
    assert_eq!(base(f, "c1"), Some("c2"));
}

#[test]
fn a_quiet_baseline_is_replaced_by_the_deployment_still_serving() {
    let mut s = store(10);
    run(&mut s, 1, 15, &[("old", 90, None), ("new", 10, None)]);
    assert_eq!(base(fleet(&s), "new"), Some("old"));
    // Promoted: the old version stops reporting.
    run(&mut s, 15, 200, &[("new", 100, None)]);
    let f = fleet(&s);
    assert_eq!(f.chosen().map(|id| &**id), Some("new"));
    assert_eq!(base(f, "new"), None);
}

#[test]
fn who_goes_quiet_tells_how_a_rollout_ended() {
    let mut s = store(10);
    let svc = [("old", 90, None), ("new", 10, None), ("bad", 10, None)];
    run(&mut s, 1, 20, &svc);
    assert!(s.take_inferred().is_empty());
    // "bad" is rolled back: it stops, its baseline goes on.
    run(&mut s, 20, 200, &[("old", 90, None), ("new", 10, None)]);
    let ended = s.take_inferred();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(
        (&*ended[0].release.deployment_id, ended[0].rollout),
        ("bad", Rollout::RolledBack)
    );
    assert_eq!(&*ended[0].baseline, "old");
    // "new" is promoted: it goes on, the old version stops; once only.
    run(&mut s, 200, 400, &[("new", 100, None)]);
    let ended = s.take_inferred();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(
        (&*ended[0].release.deployment_id, ended[0].rollout),
        ("new", Rollout::Promoted)
    );
    assert_eq!(ended[0].git_sha.as_deref(), Some("sha"));
}

/// A batch whose releases fail a share of their requests.
fn failing(groups: &[(&'static str, u64, u64)]) -> Batch<'static> {
    let mut b = batch(
        &groups
            .iter()
            .map(|&(id, n, _)| (id, n, None))
            .collect::<Vec<_>>(),
    );
    for (g, &(_, _, errors)) in b.groups.iter_mut().zip(groups) {
        g.sample.errors = errors;
    }
    b
}

fn verdicts(s: &Store) -> Vec<(String, Color, String, Option<UnixNanos>)> {
    let mut out: Vec<_> = fleet(s)
        .releases
        .values()
        .map(|r| {
            let j = r.judgement();
            (
                r.deployment_id.to_string(),
                j.color,
                j.reason.clone(),
                j.red_since,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_restored_checkpoint_carries_on_as_if_never_stopped() {
    let traffic = [("old", 200, 1), ("bad", 20, 4), ("good", 20, 0)];
    let mut a = store(10);
    for t in 1..40 {
        a.apply(&failing(&traffic), t * SEC);
        a.tick(t * SEC + SEC / 2);
    }
    let bytes = a.checkpoint();
    let mut b = store(10);
    assert_eq!(b.restore(&bytes).unwrap(), 3);
    assert_eq!(b.len(), 3);
    assert_eq!(fleet(&b).choice, fleet(&a).choice);
    assert_eq!(verdicts(&b), verdicts(&a));
    assert_eq!(verdicts(&a)[0].1, Color::Red, "{:?}", verdicts(&a));
    for t in 40..80 {
        for s in [&mut a, &mut b] {
            s.apply(&failing(&traffic), t * SEC);
            s.tick(t * SEC + SEC / 2);
        }
    }
    assert_eq!(verdicts(&b), verdicts(&a));
}

/// A fleet first seen by a replica waits (unjudged) for its state from the
/// ledger; the state taken, it goes on with the last judge's baseline and
/// red, and the requests counted here while waiting are added to it.
#[test]
fn a_fleet_moved_to_another_replica_keeps_its_verdict_and_counts() {
    let traffic = [("old", 200, 1), ("bad", 20, 4), ("good", 20, 0)];
    let mut a = store(10);
    for t in 1..40 {
        a.apply(&failing(&traffic), t * SEC);
        a.tick(t * SEC + SEC / 2);
    }
    let (state, last_seen) = a.fleet_state("svc", "prod").unwrap();
    assert_eq!(last_seen, 39 * SEC);
    let before = verdicts(&a);
    assert_eq!(before[0].1, Color::Red, "{before:?}");

    let mut b = store(10).with_adoption_if(true);
    b.apply(&failing(&traffic), 40 * SEC);
    assert!(b.wants_adoption());
    let keys = b.take_to_adopt();
    assert_eq!(keys, vec![FleetKey::new("svc", "prod")]);
    assert!(
        b.tick(40 * SEC + SEC / 2).is_empty(),
        "not judged while waiting"
    );
    assert_eq!(
        b.fleet_state("svc", "prod"),
        None,
        "nothing written over the state"
    );
    assert_eq!(b.adopt(&state, 40 * SEC + SEC / 2).unwrap(), 3);
    assert_eq!(fleet(&b).choice, fleet(&a).choice);
    let bad = &fleet(&b).releases["bad"];
    let in_a = &fleet(&a).releases["bad"].total;
    assert_eq!(bad.total.requests, in_a.requests + 20);
    assert_eq!(bad.total.errors, in_a.errors + 4);
    b.tick(41 * SEC);
    let after = verdicts(&b);
    assert_eq!(after[0].1, Color::Red);
    assert_eq!(after[0].3, before[0].3, "the same red_since");
    assert_eq!(b.len(), 3);

    // No state in the ledger: judged on its own count.
    let mut c = store(10).with_adoption_if(true);
    c.apply(&failing(&traffic), 40 * SEC);
    let key = c.take_to_adopt().remove(0);
    c.adopted(&key);
    assert!(c.fleet_state("svc", "prod").is_some());
    assert!(!c.is_adopting(&key));
    // A flood of new services: at most a cap's worth wait for a state.
    let mut e = store(3).with_adoption_if(true);
    for (i, name) in ["s1", "s2", "s3", "s4", "s5"].into_iter().enumerate() {
        let mut b = batch(&[("x", 1, None)]);
        b.groups[0].release.service = name;
        // Each after the last went idle: the cap makes room for it.
        e.apply(&b, (1 + 100 * i as u64) * SEC);
    }
    assert_eq!(e.len(), 3);
    assert_eq!(e.take_to_adopt().len(), 3);
    // A state that would pass the cap is refused.
    let mut d = store(4).with_adoption_if(true);
    d.apply(&batch(&[("x", 1, None), ("y", 1, None)]), SEC);
    assert!(matches!(d.adopt(&state, SEC), Err(RestoreError::Full(4))));
}

#[test]
fn a_checkpoint_from_other_settings_is_refused() {
    let mut a = store(10);
    run(&mut a, 1, 5, &[("old", 10, None)]);
    let mut c = crate::config::Config::default();
    c.judge.window_slots = 12;
    let mut b = Store::new(
        10,
        Judge::new(&c.judge, &c.checks),
        BaselineRule::from(&c.baseline),
    );
    assert!(matches!(
        b.restore(&a.checkpoint()),
        Err(RestoreError::Settings)
    ));
    assert!(b.restore(b"not a checkpoint").is_err());
    assert!(b.is_empty());
}

#[test]
fn the_cap_refuses_new_releases_but_not_known_ones() {
    let mut s = store(2);
    let a = s.apply(
        &batch(&[("a", 1, None), ("b", 1, None), ("c", 3, None)]),
        10,
    );
    assert_eq!(
        (a.recorded, a.refused, a.refused_releases, a.created),
        (2, 3, 1, 2)
    );
    let a = s.apply(&batch(&[("a", 1, None)]), 11);
    assert_eq!((a.recorded, a.refused), (1, 0));
    assert_eq!(s.len(), 2);
}

#[test]
fn idle_releases_expire_and_free_their_slot() {
    let mut s = store(2);
    s.apply(&batch(&[("a", 1, None)]), 10);
    s.apply(&batch(&[("b", 1, None)]), 100);
    assert_eq!(s.expire(105, 50), 1);
    assert_eq!(s.len(), 1);
    let a = s.apply(&batch(&[("c", 1, None)]), 106);
    assert_eq!(a.created, 1);
    assert_eq!(s.expire(1_000, 50), 2);
    assert!(s.is_empty());
    assert_eq!(s.fleets().count(), 0);
}

#[test]
fn a_judged_canary_cannot_declare_itself_the_baseline() {
    let mut s = store(10);
    run(&mut s, 1, 15, &[("old", 90, None), ("bad", 10, None)]);
    assert_eq!(base(fleet(&s), "bad"), Some("old"));
    // One forged span under the bad canary's identity.
    let applied = s.apply(&batch(&[("bad", 1, Some(Role::Baseline))]), 15 * SEC);
    assert_eq!((applied.role_conflicts, applied.recorded), (1, 0));
    assert_eq!(
        applied.first_role_conflict,
        Some(("bad".to_string(), Role::Baseline, None))
    );
    run(&mut s, 16, 18, &[("old", 90, None), ("bad", 10, None)]);
    let f = fleet(&s);
    assert_eq!(
        base(f, "bad"),
        Some("old"),
        "still judged against the stable"
    );
    assert_eq!(f.releases["bad"].role, None);
    // Nor can the baseline be declared a canary, leaving the fleet without one.
    let applied = s.apply(&batch(&[("old", 1, Some(Role::Canary))]), 18 * SEC);
    assert_eq!(applied.role_conflicts, 1);
    // A deployment keeps the role it first declared.
    run(&mut s, 18, 19, &[("c", 5, Some(Role::Canary))]);
    let applied = s.apply(&batch(&[("c", 1, Some(Role::Stable))]), 19 * SEC);
    assert_eq!(
        applied.first_role_conflict,
        Some(("c".to_string(), Role::Stable, Some(Role::Canary)))
    );
}

#[test]
fn a_forged_first_span_does_not_make_a_canary_the_baseline() {
    let mut s = store(10);
    run(&mut s, 1, 15, &[("old", 90, None)]);
    assert_eq!(fleet(&s).chosen().map(|id| &**id), Some("old"));
    // One forged span declares the coming canary the baseline before the
    // canary's own telemetry (which carries no role) arrives.
    s.apply(&batch(&[("bad", 1, Some(Role::Baseline))]), 15 * SEC);
    s.tick(15 * SEC + 1);
    assert_eq!(
        fleet(&s).chosen().map(|id| &**id),
        Some("bad"),
        "as declared"
    );
    let applied = s.apply(&batch(&[("bad", 10, None)]), 16 * SEC);
    assert_eq!(applied.roles_withdrawn, vec!["bad".to_string()]);
    assert_eq!(applied.recorded, 10, "the canary's own telemetry counts");
    run(&mut s, 16, 40, &[("old", 90, None), ("bad", 10, None)]);
    let f = fleet(&s);
    assert!(f.releases["bad"].role_withdrawn);
    assert_eq!(f.releases["bad"].role, None);
    assert_eq!(
        base(f, "bad"),
        Some("old"),
        "judged against the busiest again"
    );
    // More forged claims are refused, not obeyed.
    let applied = s.apply(&batch(&[("bad", 1, Some(Role::Baseline))]), 40 * SEC);
    assert_eq!(applied.role_conflicts, 1);
    s.tick(40 * SEC + 1);
    assert_eq!(base(fleet(&s), "bad"), Some("old"));
}

#[test]
fn a_deployment_that_declares_the_baseline_after_the_canary_does_not_take_its_place() {
    let mut s = store(10);
    // The stable serves most; the canary is judged against it.
    run(&mut s, 1, 20, &[("old", 90, None), ("c", 10, None)]);
    assert_eq!(base(fleet(&s), "c"), Some("old"));
    // A deployment first seen well after the canary declares itself the
    // baseline, and keeps declaring it.
    run(
        &mut s,
        40,
        60,
        &[
            ("old", 90, None),
            ("c", 10, None),
            ("forged", 5, Some(Role::Baseline)),
        ],
    );
    let f = fleet(&s);
    assert_eq!(f.releases["forged"].role, Some(Role::Baseline));
    assert_eq!(base(f, "c"), Some("old"), "the late claim is held off");

    // Declared alongside the canary (within `settle`), as a fresh baseline
    // deployed with it: taken.
    let mut s = store(10);
    run(&mut s, 1, 20, &[("old", 90, None)]);
    run(
        &mut s,
        20,
        40,
        &[
            ("old", 90, None),
            ("c2", 10, None),
            ("fresh", 10, Some(Role::Baseline)),
        ],
    );
    assert_eq!(base(fleet(&s), "c2"), Some("fresh"));

    // And with baseline.late_claims_displace, a late claim is taken too.
    let mut s = store(10);
    s.rule.late_claims_displace = true;
    run(&mut s, 1, 20, &[("old", 90, None), ("c", 10, None)]);
    run(
        &mut s,
        40,
        60,
        &[
            ("old", 90, None),
            ("c", 10, None),
            ("late", 5, Some(Role::Baseline)),
        ],
    );
    assert_eq!(base(fleet(&s), "c"), Some("late"));
}

#[test]
fn a_newer_deployment_claiming_the_baseline_does_not_take_it() {
    let mut s = store(10);
    let canary = ("c", 10, None);
    run(&mut s, 1, 15, &[("b1", 50, Some(Role::Baseline)), canary]);
    assert_eq!(base(fleet(&s), "c"), Some("b1"));
    run(
        &mut s,
        15,
        30,
        &[
            ("b1", 50, Some(Role::Baseline)),
            ("b2", 50, Some(Role::Baseline)),
            canary,
        ],
    );
    assert_eq!(base(fleet(&s), "c"), Some("b1"), "b1 still holds it");
    // Once b1 has gone quiet, the declared b2 is the baseline.
    let quiet = crate::config::Config::default().baseline.quiet.as_secs();
    run(
        &mut s,
        30,
        31 + quiet,
        &[("b2", 50, Some(Role::Baseline)), canary],
    );
    assert_eq!(base(fleet(&s), "c"), Some("b2"));
}

#[test]
fn one_service_cannot_take_the_others_places() {
    let mut s = store(100).with_service_cap(3);
    let junk: Vec<&'static str> = vec!["j0", "j1", "j2", "j3", "j4"];
    let mut flood = Batch::default();
    for id in &junk {
        flood.groups.push(batch(&[(id, 1, None)]).groups.remove(0));
    }
    let applied = s.apply(&flood, SEC);
    assert_eq!((applied.refused, applied.refused_releases), (2, 2));
    assert_eq!(applied.full_service.as_deref(), Some("svc"));
    // Known releases of the full service still count; other services are
    // not affected.
    assert_eq!(s.apply(&batch(&[("j0", 1, None)]), 2 * SEC).refused, 0);
    let mut other = batch(&[("shop-1", 1, None)]);
    other.groups[0].release.service = "shop";
    let applied = s.apply(&other, 3 * SEC);
    assert_eq!((applied.refused, applied.created), (0, 1));
}

/// An idle release keeps no histogram: its window's slots, its pending
/// samples and an unused cohort's give theirs back, and its totals since
/// first seen are counts only.
#[test]
fn an_idle_release_gives_its_window_histograms_back() {
    let mut s = store(10);
    run(&mut s, 1, 30, &[("old", 100, None), ("new", 10, None)]);
    let busy = fleet(&s).releases["new"].heap_bytes();
    run(&mut s, 30, 200, &[("old", 100, None)]);
    let idle = fleet(&s).releases["new"].heap_bytes();
    assert!(busy > 0);
    assert_eq!(idle, 0, "busy {busy} B, idle {idle} B");
}

/// A release whose baseline is chosen after its first verdict, with no
/// change of color, is news for its ledger record (whom it is compared with).
#[test]
fn a_baseline_chosen_later_is_reported_once() {
    let mut s = store(10);
    run(&mut s, 1, 5, &[("old", 90, None), ("new", 10, None)]);
    assert_eq!(base(fleet(&s), "new"), None, "still settling");
    s.take_rebased();
    run(&mut s, 5, 13, &[("old", 90, None), ("new", 10, None)]);
    assert_eq!(base(fleet(&s), "new"), Some("old"));
    let rebased: Vec<String> = s
        .take_rebased()
        .iter()
        .map(|k| k.deployment_id.to_string())
        .collect();
    assert_eq!(rebased, vec!["new".to_string()]);
    run(&mut s, 13, 15, &[("old", 90, None), ("new", 10, None)]);
    assert!(s.take_rebased().is_empty());
}

/// A checkpoint written a fleet at a time is the checkpoint of the whole.
#[test]
fn a_checkpoint_in_parts_is_the_whole() {
    let mut s = store(10);
    run(&mut s, 1, 30, &[("old", 100, None), ("new", 10, None)]);
    let fleets: Vec<(&str, &str, &Fleet)> = s.fleets().collect();
    let whole = postcard::to_stdvec(&SavedRef {
        version: CHECKPOINT_VERSION,
        shape: s.shape(),
        fleets,
    })
    .unwrap();
    assert_eq!(s.checkpoint(), whole);
    let mut back = store(10);
    assert_eq!(back.restore(&whole).unwrap(), 2);
}

#[test]
fn a_tick_in_chunks_of_fleets_is_the_whole_tick() {
    const SERVICES: [&str; 5] = ["s0", "s1", "s2", "s3", "s4"];
    let traffic = |t: u64| {
        let mut b = Batch::default();
        for (k, service) in SERVICES.iter().enumerate() {
            for (id, n, errors) in [("old", 200, 1), ("new", 20, k as u64 + t % 3)] {
                let mut g = batch(&[(id, n, None)]).groups.remove(0);
                g.release.service = service;
                g.sample.errors = errors.min(n);
                b.groups.push(g);
            }
        }
        b
    };
    let (mut whole, mut chunked) = (store(100), store(100));
    let mut changes = 0;
    for t in 1..40 {
        whole.apply(&traffic(t), t * SEC);
        chunked.apply(&traffic(t), t * SEC);
        let expected = whole.tick(t * SEC + SEC / 2);
        let mut keys = chunked.fleet_keys();
        keys.reverse();
        let mut got = Vec::new();
        for chunk in keys.chunks(2) {
            got.extend(chunked.tick_fleets(chunk, t * SEC + SEC / 2));
        }
        sort_changed(&mut got);
        assert_eq!(got, expected, "second {t}");
        changes += expected.len();
    }
    assert!(changes >= 2 * SERVICES.len(), "colors changed: {changes}");
    let colors = |s: &Store| {
        let mut out: Vec<_> = s
            .fleets()
            .flat_map(|(svc, _, f)| {
                f.releases.values().map(move |r| {
                    (
                        svc.to_string(),
                        r.deployment_id.to_string(),
                        r.judgement().color,
                    )
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    };
    assert_eq!(colors(&chunked), colors(&whole));
    assert!(colors(&whole).iter().any(|c| c.2 == Color::Red));
}

/// A red the ledger recorded after the last checkpoint: the release is red
/// again with the same `red_since` as soon as it is tracked, whether it
/// comes back from the checkpoint (as yellow) or with its next telemetry,
/// and being red again is no news for the ledger.
#[test]
fn a_red_the_ledger_recorded_holds_after_a_restart() {
    let red = |id: &str| {
        let why = "canary error ratio 50.00% vs baseline 0.00%: roll back".to_string();
        (ReleaseKey::new("svc", "prod", id), 7 * SEC, why)
    };
    // The checkpoint was taken while "new" was still yellow.
    let mut before = store(10);
    run(&mut before, 1, 3, &[("old", 90, None), ("new", 10, None)]);
    let checkpoint = before.checkpoint();
    assert_eq!(before.fleets().count(), 1);

    let mut s = store(10);
    s.remember_reds([red("new"), red("later")]);
    assert_eq!(s.restore(&checkpoint).unwrap(), 2);
    let j = fleet(&s).releases["new"].judgement();
    assert_eq!((j.color, j.red_since), (Color::Red, Some(7 * SEC)));
    assert!(j.reason.contains("roll back"), "{}", j.reason);
    // "later" was first seen after the checkpoint: red from its first telemetry.
    let mut changed = Vec::new();
    for t in 3..20 {
        s.apply(
            &batch(&[("old", 90, None), ("new", 10, None), ("later", 10, None)]),
            t * SEC,
        );
        changed.extend(s.tick(t * SEC + SEC - 1));
    }
    for id in ["new", "later"] {
        let j = fleet(&s).releases[id].judgement();
        assert_eq!((j.color, j.red_since), (Color::Red, Some(7 * SEC)), "{id}");
    }
    assert!(
        changed.iter().all(|c| &*c.release.deployment_id == "old"),
        "held reds are not news: {changed:?}"
    );
    // A release the ledger did not record red is judged as before.
    let j = fleet(&s).releases["old"].judgement();
    assert_eq!(j.red_since, None);
}

// --- one request, one observation ---------------------------------------------

/// One group of release "a": `n` requests, `e` of them failed, from `source`.
fn from_source(source: RequestSource, n: u64, e: u64) -> Batch<'static> {
    let mut b = batch(&[("a", n, None)]);
    let s = &mut b.groups[0].sample;
    s.source = source;
    s.errors = e;
    b
}

/// (requests, errors, requests in the window, pending, chosen signal) of "a".
fn counted(s: &Store) -> (u64, u64, u64, u64, RequestSource) {
    let r = &fleet(s).releases["a"];
    (
        r.total.requests,
        r.total.errors,
        r.window.sum().requests,
        r.pending.requests,
        r.requests_from,
    )
}

use crate::model::RequestSource::{Metrics, Spans};

#[test]
fn requests_both_signals_report_are_counted_once_from_the_spans() {
    let mut s = store(10);
    // The metrics' first export comes before any span: counted meanwhile.
    s.apply(&from_source(Metrics, 15, 1), SEC);
    assert_eq!(counted(&s), (15, 1, 15, 15, Metrics));
    // The spans of the same requests and the next ones: the spans count.
    s.apply(&from_source(Spans, 20, 2), 2 * SEC);
    let (requests, errors, _, _, from) = counted(&s);
    assert_eq!((requests, errors, from), (20, 2, Spans));
    s.tick(2 * SEC + 1);
    for t in 3..30 {
        s.apply(&from_source(Spans, 10, 1), t * SEC);
        if t % 2 == 0 {
            // A metric export of the last two seconds: the same requests.
            s.apply(&from_source(Metrics, 20, 2), t * SEC + SEC / 2);
        }
        s.tick(t * SEC + SEC - 1);
    }
    let (requests, errors, _, pending, from) = counted(&s);
    assert_eq!((requests, errors, pending, from), (290, 29, 0, Spans));
    let r = &fleet(&s).releases["a"];
    assert_eq!(r.by_source[1].requests, 15 + 13 * 20);
}

#[test]
fn a_service_without_spans_is_counted_from_its_metrics() {
    let mut s = store(10);
    for t in 1..10 {
        s.apply(&from_source(Metrics, 45, 4), t * SEC);
        assert_eq!(counted(&s), (45 * t, 4 * t, 45 * t, 45 * t, Metrics));
    }
}

#[test]
fn sampled_spans_give_way_to_the_metrics() {
    let mut s = store(10);
    for t in 1..20 {
        // One request in ten sampled.
        s.apply(&from_source(Spans, 10, 1), t * SEC);
        s.apply(&from_source(Metrics, 100, 10), t * SEC + SEC / 2);
    }
    let (requests, errors, _, _, from) = counted(&s);
    assert_eq!((requests, errors, from), (1_900, 190, Metrics));
}

#[test]
fn a_service_that_stops_sending_spans_falls_back_to_its_metrics() {
    let mut s = store(10);
    let window = crate::config::Config::default().judge.window.as_nanos() as u64;
    s.apply(&from_source(Spans, 50, 0), SEC);
    s.apply(&from_source(Metrics, 50, 0), 2 * SEC);
    assert_eq!(counted(&s).4, Spans);
    // No span since; the metrics go on.
    s.apply(&from_source(Metrics, 10, 0), SEC + window);
    assert_eq!(counted(&s).4, Spans, "within the window of the last span");
    s.apply(&from_source(Metrics, 10, 0), 2 * SEC + window);
    let (requests, _, _, _, from) = counted(&s);
    assert_eq!((requests, from), (70, Metrics));
}

#[test]
fn configured_metrics_of_the_uncounted_signal_are_still_checked() {
    let mut s = store(10);
    s.apply(&from_source(Spans, 10, 0), SEC);
    let mut b = from_source(Metrics, 10, 0);
    b.groups[0].sample.metrics = vec![(0, crate::model::MetricObservation::Count(7))];
    s.apply(&b, 2 * SEC);
    let r = &fleet(&s).releases["a"];
    assert_eq!((r.total.requests, r.requests_from), (10, Spans));
    assert_eq!(r.window.sum().metric(0).map(|m| m.count), Some(7));
    assert_eq!(r.pending.metric(0).map(|m| m.count), Some(7));
}

#[test]
fn the_choice_of_signal() {
    let at = |requests, t| SourceCounts {
        requests,
        errors: 0,
        last_at: Some(t),
    };
    let none = SourceCounts::default();
    let recent = 60;
    assert_eq!(choose_source(none, none, recent), Spans);
    assert_eq!(choose_source(at(5, 1), none, recent), Spans);
    assert_eq!(choose_source(none, at(5, 1), recent), Metrics);
    // Metrics lag the spans: fewer, or a few more, is the same requests.
    assert_eq!(choose_source(at(100, 10), at(80, 10), recent), Spans);
    assert_eq!(choose_source(at(100, 10), at(170, 10), recent), Spans);
    assert_eq!(choose_source(at(10, 10), at(30, 10), recent), Spans);
    // Clearly more: the spans are sampled.
    assert_eq!(choose_source(at(100, 10), at(171, 10), recent), Metrics);
    // No span within `recent` of the latest metrics: the spans stopped.
    assert_eq!(choose_source(at(100, 10), at(100, 70), recent), Spans);
    assert_eq!(choose_source(at(100, 10), at(100, 71), recent), Metrics);
}

/// One release of its own service, `n` requests.
fn lone(service: &'static str, n: u64) -> Batch<'static> {
    let mut b = batch(&[(service, n, None)]);
    b.groups[0].release.service = service;
    b
}

#[test]
fn a_full_table_forgets_idle_junk_for_a_newcomer() {
    let mut s = store(3);
    for name in ["junk-a", "junk-b"] {
        s.apply(&lone(name, 1), 0);
    }
    s.apply(&lone("real", 500), 0);
    // Junk seen 30 s ago is not idle enough for a newcomer of its own.
    let a = s.apply(&lone("new", 1), 30 * SEC);
    assert_eq!((a.created, a.refused_releases, a.evicted), (0, 1, 0));
    // Idle for a minute: the oldest junk makes room.
    s.apply(&lone("junk-b", 1), 20 * SEC);
    let a = s.apply(&lone("new", 1), 61 * SEC);
    assert_eq!((a.created, a.evicted), (1, 1));
    assert!(s.fleet("junk-a", "prod").is_none(), "the oldest went");
    assert!(s.fleet("junk-b", "prod").is_some());
    assert!(s.fleet("real", "prod").is_some(), "one that served is kept");
    assert_eq!(s.len(), 3);
    // junk-b was seen at 20 s: idle from 80 s; before that nothing goes.
    let a = s.apply(&lone("newer", 1), 70 * SEC);
    assert_eq!(a.refused_releases, 1);
    let a = s.apply(&lone("newer", 1), 81 * SEC);
    assert_eq!((a.created, a.evicted), (1, 1));
    assert!(s.fleet("junk-b", "prod").is_none());
    // What remains served, or is newer than a minute: nothing to forget.
    let a = s.apply(&lone("newest", 1), 82 * SEC);
    assert_eq!(a.refused_releases, 1);
}

#[test]
fn a_canary_its_baseline_would_judge_takes_the_place_of_fresh_junk() {
    let mut s = store(3);
    run(&mut s, 1, 15, &[("old", 90, None)]);
    assert_eq!(fleet(&s).chosen().map(|id| &**id), Some("old"));
    s.apply(&lone("junk-a", 1), 15 * SEC);
    s.apply(&lone("junk-b", 1), 16 * SEC);
    // A new service's first release waits: the junk is fresh.
    let a = s.apply(&lone("other", 1), 17 * SEC);
    assert_eq!(a.refused_releases, 1);
    // A canary of the service with a baseline is judged: it gets in.
    let a = s.apply(&batch(&[("canary", 5, None)]), 17 * SEC);
    assert_eq!((a.created, a.evicted), (1, 1));
    assert!(s.fleet("junk-a", "prod").is_none(), "the oldest junk went");
    s.tick(18 * SEC);
    assert_eq!(base(s.fleet("svc", "prod").unwrap(), "canary"), Some("old"));
    // A fleet with a baseline is no junk, however little it served.
    let a = s.apply(&batch(&[("canary2", 1, None)]), 18 * SEC);
    assert_eq!((a.created, a.evicted), (1, 1));
    assert!(s.fleet("junk-b", "prod").is_none());
    let a = s.apply(&batch(&[("canary3", 1, None)]), 19 * SEC);
    assert_eq!(a.refused_releases, 1, "nothing left to forget");
}
