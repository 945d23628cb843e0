//! Cumulative histogram streams turned into deltas, one remembered point per
//! stream, with counter resets, retries and bounded memory handled.

use std::collections::HashMap;

use super::buckets::{downscale, Buckets};
use crate::model::UnixNanos;

/// One cumulative point of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Cumulative {
    pub start: UnixNanos,
    pub time: UnixNanos,
    pub count: u64,
    pub buckets: Buckets,
}

/// What a cumulative point adds.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// New counts since the stream's previous point.
    Add { count: u64, buckets: Buckets },
    /// Nothing new: a first point whose history predates us (kept as the
    /// reference), or a repeat of a point already seen (an exporter retry).
    Nothing,
    /// A new stream could not be tracked, for want of room.
    Refused(Full),
}

/// Which bound kept a new stream out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The whole table (`[limits] max_metric_streams`).
    Table,
    /// The stream's resource's quota (`[limits]
    /// max_metric_streams_per_resource`), so that one sender's flood of
    /// streams cannot lock the others out.
    Resource,
    /// The sender's quota (`[limits] max_metric_streams_per_sender`), so
    /// that one sender's many resources cannot either.
    Sender,
    /// The bytes of remembered points (`[limits] max_metric_stream_bytes`):
    /// streams of thousands of buckets add up to it long before the table
    /// is full.
    Bytes,
}

#[derive(Debug)]
struct Stream {
    last: Cumulative,
    seen_at: UnixNanos,
    /// Whose quotas the stream counts against.
    resource: u64,
    sender: u64,
}

/// How far ahead of the daemon's clock a stream's last point may be
/// stamped and still order the points after it by their times.
const AHEAD_OF_US: UnixNanos = 30 * 1_000_000_000;

/// Remembers the last cumulative point of each stream.
#[derive(Debug)]
pub struct DeltaTracker {
    streams: HashMap<u64, Stream>,
    /// Streams held by each resource (only resources holding some).
    per_resource: HashMap<u64, usize>,
    /// Streams held by each sender (only senders holding some).
    per_sender: HashMap<u64, usize>,
    max_streams: usize,
    max_per_resource: usize,
    max_per_sender: usize,
    /// Who sends the points observed now (`sending`).
    sender: u64,
    /// Bytes the remembered points take (`cost`), and the most they may.
    bytes: usize,
    max_bytes: usize,
    started_at: UnixNanos,
}

impl DeltaTracker {
    /// `started_at` decides a new stream's first point: counted in full when
    /// the stream started after it, kept only as a reference otherwise (its
    /// counts are history from before we were listening).
    pub fn new(max_streams: usize, started_at: UnixNanos) -> Self {
        Self {
            streams: HashMap::new(),
            per_resource: HashMap::new(),
            per_sender: HashMap::new(),
            max_streams,
            max_per_resource: max_streams,
            max_per_sender: max_streams,
            sender: 0,
            bytes: 0,
            max_bytes: usize::MAX,
            started_at,
        }
    }

    /// At most `max` bytes of remembered points in all (`cost`): a stream
    /// takes memory in proportion to its buckets, so many streams of
    /// thousands of buckets are refused before they add up.
    pub fn with_byte_budget(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    /// Bytes the remembered points take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// At most `max` streams of any one resource.
    pub fn with_resource_quota(mut self, max: usize) -> Self {
        self.max_per_resource = max;
        self
    }

    /// At most `max` streams of any one sender (see `sending`).
    pub fn with_sender_quota(mut self, max: usize) -> Self {
        self.max_per_sender = max;
        self
    }

    /// Who sends the points observed from now on (a peer address's key; 0
    /// for one not known): new streams count against its quota, so one
    /// sender's many resources cannot fill the table.
    pub fn sending(&mut self, sender: u64) {
        self.sender = sender;
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The delta a point of stream `key`, of resource `resource`, adds,
    /// remembering it.
    pub fn observe(&mut self, resource: u64, key: u64, point: Cumulative, now: UnixNanos) -> Delta {
        let started_at = self.started_at;
        match self.streams.get_mut(&key) {
            None => {
                if self.streams.len() >= self.max_streams {
                    return Delta::Refused(Full::Table);
                }
                let held = self.per_resource.get(&resource).copied().unwrap_or(0);
                if held >= self.max_per_resource {
                    return Delta::Refused(Full::Resource);
                }
                let sender = self.sender;
                let sent = self.per_sender.get(&sender).copied().unwrap_or(0);
                if sent >= self.max_per_sender {
                    return Delta::Refused(Full::Sender);
                }
                let cost = cost(&point);
                if self.bytes + cost > self.max_bytes {
                    return Delta::Refused(Full::Bytes);
                }
                self.bytes += cost;
                self.per_resource.insert(resource, held + 1);
                self.per_sender.insert(sender, sent + 1);
                let fresh = point.start != 0 && point.start >= started_at;
                let delta = if fresh && point.count > 0 {
                    Delta::Add {
                        count: point.count,
                        buckets: point.buckets.clone(),
                    }
                } else {
                    Delta::Nothing
                };
                self.streams.insert(
                    key,
                    Stream {
                        last: point,
                        seen_at: now,
                        resource,
                        sender,
                    },
                );
                delta
            }
            Some(stream) => {
                let prev = &stream.last;
                let same_run = point.start == prev.start || point.start == 0;
                if same_run && point.time == prev.time && point.count == prev.count {
                    stream.seen_at = now; // a retry
                    return Delta::Nothing;
                }
                let grows = cost(&point).saturating_sub(cost(prev));
                if grows > 0 && self.bytes + grows > self.max_bytes {
                    // A stream that widens its buckets past the budget.
                    return Delta::Refused(Full::Bytes);
                }
                if same_run && prev.time > now.saturating_add(AHEAD_OF_US) {
                    // The last point was stamped ahead of our clock: its time
                    // cannot order the points after it (or one such point would
                    // freeze the stream until then). Order them by arrival: a
                    // point that adds to it counts; one that does not is the
                    // stream's new reference, adding nothing.
                    let delta = subtract(&point, prev).unwrap_or(Delta::Nothing);
                    self.bytes = self.bytes - cost(&stream.last) + cost(&point);
                    stream.last = point;
                    stream.seen_at = now;
                    return delta;
                }
                if same_run && point.time <= prev.time {
                    stream.seen_at = now;
                    return Delta::Nothing;
                }
                let delta = if same_run {
                    subtract(&point, prev)
                } else {
                    None
                };
                // A new start time or a count that went down: the stream was
                // reset, and everything in this point is new.
                let delta = delta.unwrap_or_else(|| Delta::Add {
                    count: point.count,
                    buckets: point.buckets.clone(),
                });
                self.bytes = self.bytes - cost(&stream.last) + cost(&point);
                stream.last = point;
                stream.seen_at = now;
                delta
            }
        }
    }

    /// Forgets streams not seen since `now - idle`.
    pub fn expire(&mut self, now: UnixNanos, idle: UnixNanos) {
        let cutoff = now.saturating_sub(idle);
        let (per_resource, per_sender) = (&mut self.per_resource, &mut self.per_sender);
        let bytes = &mut self.bytes;
        self.streams.retain(|_, s| {
            let keep = s.seen_at >= cutoff;
            if !keep {
                release(per_resource, s.resource);
                release(per_sender, s.sender);
                *bytes -= cost(&s.last);
            }
            keep
        });
    }
}

/// The bytes a remembered point takes: the table's entry and its buckets.
fn cost(point: &Cumulative) -> usize {
    let buckets = match &point.buckets {
        Buckets::Explicit { bounds, counts } => bounds.capacity() * 8 + counts.capacity() * 8,
        Buckets::Exponential { counts, .. } => counts.capacity() * 8,
    };
    std::mem::size_of::<(u64, Stream)>() + 16 + buckets
}

/// One stream fewer held by `key`.
fn release(held: &mut HashMap<u64, usize>, key: u64) {
    if let Some(n) = held.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            held.remove(&key);
        }
    }
}

/// `cur - prev`, or None when any count went down (a reset) or the shapes differ.
fn subtract(cur: &Cumulative, prev: &Cumulative) -> Option<Delta> {
    let count = cur.count.checked_sub(prev.count)?;
    let buckets = match (&cur.buckets, &prev.buckets) {
        (
            Buckets::Explicit { bounds, counts },
            Buckets::Explicit {
                bounds: prev_bounds,
                counts: prev_counts,
            },
        ) => {
            if bounds != prev_bounds {
                return None;
            }
            let counts = if prev_counts.is_empty() {
                counts.clone()
            } else if counts.len() == prev_counts.len() {
                counts
                    .iter()
                    .zip(prev_counts)
                    .map(|(c, p)| c.checked_sub(*p))
                    .collect::<Option<Vec<_>>>()?
            } else {
                return None;
            };
            Buckets::Explicit {
                bounds: bounds.clone(),
                counts,
            }
        }
        (
            Buckets::Exponential {
                scale,
                zero,
                offset,
                counts,
            },
            Buckets::Exponential {
                scale: prev_scale,
                zero: prev_zero,
                offset: prev_offset,
                counts: prev_counts,
            },
        ) => {
            let common = (*scale).min(*prev_scale);
            let (off, cur_counts) = downscale(*offset, counts, (scale - common) as u32);
            let (poff, prev_counts) =
                downscale(*prev_offset, prev_counts, (prev_scale - common) as u32);
            let mut out = cur_counts;
            for (k, p) in prev_counts.iter().enumerate() {
                if *p == 0 {
                    continue;
                }
                let idx = poff + k as i32 - off;
                let slot = usize::try_from(idx).ok().and_then(|i| out.get_mut(i))?;
                *slot = slot.checked_sub(*p)?;
            }
            Buckets::Exponential {
                scale: common,
                zero: zero.checked_sub(*prev_zero)?,
                offset: off,
                counts: out,
            }
        }
        _ => return None,
    };
    Some(Delta::Add { count, buckets })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resource of the tests' streams.
    const R: u64 = 0;

    fn explicit(start: u64, time: u64, counts: &[u64]) -> Cumulative {
        Cumulative {
            start,
            time,
            count: counts.iter().sum(),
            buckets: Buckets::Explicit {
                bounds: vec![1.0, 2.0],
                counts: counts.to_vec(),
            },
        }
    }

    fn added(d: Delta) -> (u64, Vec<u64>) {
        match d {
            Delta::Add {
                count,
                buckets: Buckets::Explicit { counts, .. },
            } => (count, counts),
            Delta::Add {
                count,
                buckets: Buckets::Exponential { counts, zero, .. },
            } => (count, [vec![zero], counts].concat()),
            other => panic!("expected Add, got {other:?}"),
        }
    }

    #[test]
    fn cumulative_points_become_deltas() {
        let mut t = DeltaTracker::new(10, 100);
        assert_eq!(
            added(t.observe(R, 1, explicit(150, 200, &[1, 2, 0]), 0)),
            (3, vec![1, 2, 0])
        );
        assert_eq!(
            added(t.observe(R, 1, explicit(150, 300, &[1, 5, 1]), 0)),
            (4, vec![0, 3, 1])
        );
        assert_eq!(
            added(t.observe(R, 1, explicit(150, 400, &[1, 5, 1]), 0)),
            (0, vec![0, 0, 0])
        );
    }

    #[test]
    fn history_from_before_start_is_only_a_reference() {
        let mut t = DeltaTracker::new(10, 1_000);
        assert_eq!(
            t.observe(R, 1, explicit(10, 1_100, &[50, 50, 0]), 0),
            Delta::Nothing
        );
        assert_eq!(
            added(t.observe(R, 1, explicit(10, 1_200, &[51, 50, 2]), 0)),
            (3, vec![1, 0, 2])
        );
    }

    #[test]
    fn resets_count_the_new_run_in_full() {
        let mut t = DeltaTracker::new(10, 0);
        t.observe(R, 1, explicit(10, 100, &[5, 5, 5]), 0);
        // the process restarted: new start time, smaller counts
        assert_eq!(
            added(t.observe(R, 1, explicit(150, 200, &[1, 0, 0]), 0)),
            (1, vec![1, 0, 0])
        );
        // a count went down without a start time change: still a reset
        assert_eq!(
            added(t.observe(R, 1, explicit(150, 300, &[0, 1, 0]), 0)),
            (1, vec![0, 1, 0])
        );
    }

    #[test]
    fn retried_points_add_nothing() {
        let mut t = DeltaTracker::new(10, 0);
        t.observe(R, 1, explicit(10, 100, &[1, 0, 0]), 0);
        t.observe(R, 1, explicit(10, 200, &[2, 0, 0]), 0);
        assert_eq!(
            t.observe(R, 1, explicit(10, 200, &[2, 0, 0]), 0),
            Delta::Nothing
        );
        assert_eq!(
            t.observe(R, 1, explicit(10, 150, &[1, 0, 0]), 0),
            Delta::Nothing
        );
    }

    #[test]
    fn a_point_stamped_ahead_does_not_freeze_its_stream() {
        const S: u64 = 1_000_000_000;
        let mut t = DeltaTracker::new(10, 0);
        let now = 1_000 * S;
        t.observe(R, 1, explicit(10, now, &[5, 0, 0]), now);
        // Forged: the same stream, stamped nine minutes ahead.
        assert_eq!(
            added(t.observe(R, 1, explicit(10, now + 540 * S, &[6, 0, 0]), now)),
            (1, vec![1, 0, 0])
        );
        // The honest points after it are counted, by arrival.
        assert_eq!(
            added(t.observe(R, 1, explicit(10, now + 10 * S, &[8, 1, 0]), now + 10 * S)),
            (3, vec![2, 1, 0])
        );
        assert_eq!(
            added(t.observe(R, 1, explicit(10, now + 20 * S, &[9, 1, 0]), now + 20 * S)),
            (1, vec![1, 0, 0])
        );
        // A forged point with counts above the honest ones: they become the
        // reference at the next honest point, which adds nothing, and the
        // ones after it count again.
        t.observe(
            R,
            1,
            explicit(10, now + 500 * S, &[900, 0, 0]),
            now + 21 * S,
        );
        assert_eq!(
            t.observe(R, 1, explicit(10, now + 30 * S, &[10, 1, 0]), now + 30 * S),
            Delta::Nothing
        );
        assert_eq!(
            added(t.observe(R, 1, explicit(10, now + 40 * S, &[12, 1, 0]), now + 40 * S)),
            (2, vec![2, 0, 0])
        );
    }

    #[test]
    fn the_stream_table_is_bounded_and_expires() {
        let mut t = DeltaTracker::new(2, 0);
        t.observe(R, 1, explicit(10, 100, &[1, 0, 0]), 5);
        t.observe(R, 2, explicit(10, 100, &[1, 0, 0]), 50);
        assert_eq!(
            t.observe(R, 3, explicit(10, 100, &[1, 0, 0]), 50),
            Delta::Refused(Full::Table)
        );
        t.expire(60, 20);
        assert_eq!(t.len(), 1);
        assert!(matches!(
            t.observe(R, 3, explicit(10, 100, &[1, 0, 0]), 60),
            Delta::Add { .. }
        ));
    }

    #[test]
    fn one_resource_cannot_take_the_whole_table() {
        let mut t = DeltaTracker::new(10, 0).with_resource_quota(2);
        let first = || explicit(10, 100, &[1, 0, 0]);
        t.observe(1, 1, first(), 5);
        t.observe(1, 2, first(), 50);
        assert_eq!(t.observe(1, 3, first(), 50), Delta::Refused(Full::Resource));
        assert!(matches!(t.observe(2, 4, first(), 50), Delta::Add { .. }));
        // The full resource's known streams are still followed.
        assert_eq!(
            added(t.observe(1, 2, explicit(10, 200, &[2, 0, 0]), 50)),
            (1, vec![1, 0, 0])
        );
        // An expired stream gives its place in the quota back.
        t.expire(60, 20);
        assert!(matches!(t.observe(1, 3, first(), 60), Delta::Add { .. }));
        assert_eq!(t.observe(1, 5, first(), 60), Delta::Refused(Full::Resource));
    }

    #[test]
    fn one_sender_cannot_take_the_whole_table_with_many_resources() {
        let mut t = DeltaTracker::new(10, 0)
            .with_resource_quota(3)
            .with_sender_quota(6);
        t.sending(7);
        for key in 0..6 {
            let resource = key / 3; // two resources, three streams each
            assert_ne!(
                t.observe(resource, key, explicit(10, 100, &[1]), 0),
                Delta::Refused(Full::Sender)
            );
        }
        assert_eq!(
            t.observe(5, 6, explicit(10, 100, &[1]), 0),
            Delta::Refused(Full::Sender),
            "a third resource of the same sender"
        );
        t.sending(8);
        assert_ne!(
            t.observe(5, 6, explicit(10, 100, &[1]), 0),
            Delta::Refused(Full::Sender),
            "another sender has room"
        );
        t.expire(1_000, 10);
        t.sending(7);
        assert_ne!(
            t.observe(9, 9, explicit(10, 100, &[1]), 2_000),
            Delta::Refused(Full::Sender),
            "expired streams give their room back"
        );
    }

    #[test]
    fn the_remembered_points_are_bounded_in_bytes() {
        let wide = |n: usize| Cumulative {
            start: 10,
            time: 100,
            count: 1,
            buckets: Buckets::Explicit {
                bounds: (0..n).map(|b| b as f64).collect(),
                counts: {
                    let mut c = vec![0; n + 1];
                    c[0] = 1;
                    c
                },
            },
        };
        let one = cost(&wide(4095));
        assert!(one > 65_000, "{one}");
        let mut t = DeltaTracker::new(1_000, 0).with_byte_budget(3 * one);
        for key in 0..3 {
            assert_ne!(
                t.observe(R, key, wide(4095), 0),
                Delta::Refused(Full::Bytes)
            );
        }
        assert_eq!(t.observe(R, 3, wide(4095), 0), Delta::Refused(Full::Bytes));
        assert_eq!(t.bytes(), 3 * one);
        // Nor can a narrow stream widen past it.
        let mut t2 = DeltaTracker::new(1_000, 0).with_byte_budget(one - 1);
        assert_ne!(t2.observe(R, 1, wide(15), 0), Delta::Refused(Full::Bytes));
        let mut widened = wide(4095);
        widened.time = 200;
        let refused = t2.observe(R, 1, widened, 0) == Delta::Refused(Full::Bytes);
        assert!(refused, "widened past the budget");
        // Once the wide ones expire, their bytes come back.
        t.expire(1_000, 10);
        assert_eq!(t.bytes(), 0);
        assert_ne!(
            t.observe(R, 3, wide(15), 2_000),
            Delta::Refused(Full::Bytes)
        );
    }

    #[test]
    fn exponential_deltas_survive_a_scale_change() {
        let mut t = DeltaTracker::new(10, 0);
        let p1 = Cumulative {
            start: 10,
            time: 100,
            count: 3,
            buckets: Buckets::Exponential {
                scale: 2,
                zero: 1,
                offset: 4,
                counts: vec![1, 1],
            },
        };
        t.observe(R, 7, p1, 0);
        // downscaled by one: indices 4,5 at scale 2 → 2 at scale 1
        let p2 = Cumulative {
            start: 10,
            time: 200,
            count: 6,
            buckets: Buckets::Exponential {
                scale: 1,
                zero: 1,
                offset: 2,
                counts: vec![4, 1],
            },
        };
        match t.observe(R, 7, p2, 0) {
            Delta::Add {
                count,
                buckets:
                    Buckets::Exponential {
                        scale,
                        zero,
                        offset,
                        counts,
                    },
            } => {
                assert_eq!((count, scale, zero, offset), (3, 1, 0, 2));
                assert_eq!(counts, vec![2, 1]);
            }
            other => panic!("{other:?}"),
        }
    }
}
