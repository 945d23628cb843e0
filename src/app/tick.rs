//! The judge's clock under the locks: a tick judges the fleets a chunk at
//! a time, tells watchers, logs and the ledger what changed, and adds the
//! charts' points; the checkpoint and its restore; expiry.

use std::sync::Arc;

use super::{lock, App, LIST_CHUNK};
use crate::ledger::Ledger;
use crate::model::{ReleaseKey, UnixNanos};
use crate::recording;
use crate::series::Point;
use crate::store::{Changed, Inferred, RestoreError, Store};
use crate::verdict::{self, Filter};

/// Fleets a tick judges in one hold of the store's lock.
const TICK_CHUNK: usize = 64;

impl App {
    /// Judges every release on what arrived since the last tick.
    #[tracing::instrument(name = "judge tick", skip_all, level = "debug")]
    pub fn tick(&self, now: UnixNanos) -> Vec<Changed> {
        let started = std::time::Instant::now();
        // A chunk of fleets a hold, as listings are: judging 10,000 busy
        // releases takes a good part of a second, and an export waiting
        // on the lock for all of it would wait that long.
        let keys = self.store.lock().fleet_keys();
        let mut changed = Vec::new();
        for chunk in keys.chunks(TICK_CHUNK) {
            let mut store = self.store.lock();
            changed.extend(store.tick_fleets(chunk, now));
            parking_lot::MutexGuard::unlock_fair(store);
        }
        crate::store::sort_changed(&mut changed);
        let (ended, rebased) = {
            let mut store = self.store.lock();
            (store.take_inferred(), store.take_rebased())
        };
        self.metrics
            .evaluation_seconds
            .observe(started.elapsed().as_secs_f64());
        self.add_chart_points(now);
        if self.changes.receiver_count() > 0 && !changed.is_empty() {
            let verdicts = self.verdicts_of(&changed, now);
            for v in verdicts {
                // No receiver left is fine: nobody is watching.
                let _ = self.changes.send(Arc::new(v));
            }
        }
        for c in &changed {
            tracing::info!(
                service = %c.release.service,
                environment = %c.release.environment,
                deployment_id = %c.release.deployment_id,
                verdict = %c.color,
                "verdict changed"
            );
        }
        if let Some(ledger) = &self.ledger {
            self.write_ledger(ledger, &changed, &ended, &rebased, now);
        }
        for e in &ended {
            tracing::info!(
                service = %e.release.service,
                environment = %e.release.environment,
                deployment_id = %e.release.deployment_id,
                baseline = %e.baseline,
                rollout = e.rollout.as_str(),
                "rollout ended (inferred from who went quiet)"
            );
        }
        changed
    }

    /// Once a step, a chart point per release from the checks just
    /// reported. The store lock is held only to copy a few numbers out, a
    /// chunk of fleets at a time.
    fn add_chart_points(&self, now: UnixNanos) {
        if !lock(&self.series).due(now) {
            return;
        }
        let keys = self.read(Store::fleet_keys);
        let mut points = Vec::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            self.read(|store| {
                for key in chunk {
                    let Some(fleet) = store.fleet(&key.service, &key.environment) else {
                        continue;
                    };
                    points.extend(fleet.releases.iter().map(|(id, r)| {
                        (
                            key.release(id.clone()),
                            Point::of(now, &r.judgement().checks),
                        )
                    }));
                }
            });
        }
        lock(&self.series).add(now, points);
    }

    /// A release's chart points, oldest first; None when it has none.
    pub fn series(
        &self,
        service: &str,
        environment: &str,
        deployment_id: &str,
    ) -> Option<Vec<Point>> {
        lock(&self.series).get(service, environment, deployment_id)
    }

    /// Writes a tick's news to the ledger without waiting for the disk: a
    /// full queue drops (and counts) rather than stall the judge.
    fn write_ledger(
        &self,
        ledger: &Ledger,
        changed: &[Changed],
        ended: &[Inferred],
        rebased: &[ReleaseKey],
        now: UnixNanos,
    ) {
        if !rebased.is_empty() {
            // Whom a release is compared with survives a restart without
            // the checkpoint through its record (the cold-start baseline).
            for v in &self.verdicts_named(rebased.iter(), now) {
                let _ = ledger.try_upsert_release(recording::release_record(v, now));
            }
        }
        if changed.is_empty() && ended.is_empty() {
            return;
        }
        let verdicts = self.verdicts_of(changed, now);
        let (events, records) = recording::tick_records(changed, &verdicts, ended, now);
        for e in events {
            let _ = ledger.try_record(e);
        }
        for r in records {
            let _ = ledger.try_upsert_release(r);
        }
    }

    /// The judge's whole state, for the ledger's checkpoint: serialized a
    /// fleet a hold, so ingest and the tick wait for one fleet at most, not
    /// the whole store (126 ms for 10,000 releases in one hold).
    pub fn checkpoint(&self) -> Vec<u8> {
        let (head, fleets) = self.read(|store| {
            let names = verdict::fleets(store, &Filter::default());
            (store.checkpoint_head(), names)
        });
        let parts = fleets
            .iter()
            .filter_map(|f| {
                self.read(|store| store.checkpoint_fleet(&f.fleet.service, &f.fleet.environment))
            })
            .collect();
        crate::store::checkpoint_of(head, parts)
    }

    /// Restores a checkpoint; returns the releases restored.
    pub fn restore(&self, bytes: &[u8]) -> Result<usize, RestoreError> {
        let mut store = self.store.lock();
        let n = store.restore(bytes)?;
        self.metrics.releases_tracked.set(store.len() as i64);
        Ok(n)
    }

    /// Hands the store the ledger's record of who was compared with whom
    /// (evidence of baselines that survives a restart).
    pub fn remember_baselines(&self, pairs: Vec<crate::ledger::RecordedBaseline>) {
        let pairs = pairs.into_iter().map(|p| {
            let release = ReleaseKey::new(p.service, p.environment, p.deployment_id);
            (release, Arc::from(p.baseline_deployment_id), p.last_seen_ns)
        });
        self.store.lock().remember_baselines(pairs);
    }

    /// Hands the store the ledger's record of releases that turned red: each
    /// is held red, with the same `red_since`, once tracked.
    pub fn remember_reds(&self, reds: Vec<crate::ledger::RecordedRed>) {
        let reds = reds.into_iter().map(|r| {
            let release = ReleaseKey::new(r.service, r.environment, r.deployment_id);
            (release, r.red_since_ns, r.reason)
        });
        self.store.lock().remember_reds(reds);
    }

    /// Forgets idle releases and metric streams.
    pub fn expire(&self, now: UnixNanos) {
        let idle = self.config.limits.release_idle_expiry.as_nanos() as u64;
        let (expired, tracked) = {
            let mut store = self.store.lock();
            (store.expire(now, idle), store.len())
        };
        lock(&self.deltas).expire(now, idle);
        self.metrics.releases_expired.inc_by(expired as u64);
        self.metrics.releases_tracked.set(tracked as i64);
    }
}
