//! The size cap, held as the writer writes: how big the database is, and
//! which events give way first when it is over its cap.
//!
//! The least valuable go first: posted (`api`) events before the daemon's
//! own (`daemon`, `inferred`), and within each, the first received (the
//! lowest row id) first, whatever `ts` they claim. Release records, the
//! checkpoint and the outbox are never evicted.

use super::db::{args, Conn, DbError, Dialect};
use super::event::Source;

/// Most events deleted per statement, so the write lock is never held for
/// long.
const MAX_BATCH: u64 = 5_000;
/// What the first statement of a round assumes an event frees: a page, so
/// it deletes few; later ones go by what the previous ones freed, so a
/// ledger over its cap loses little more than it must.
const FIRST_GUESS_BYTES: u64 = 4096;

/// Posted events received before row `?1`, oldest received first.
const POSTED: &str = "DELETE FROM events WHERE id IN (
         SELECT id FROM events INDEXED BY events_source
         WHERE source = 'api' AND id < ?1 ORDER BY id LIMIT ?2)
     RETURNING source";

/// The daemon's own events, oldest received first (row order: once the
/// posted ones are gone, there is nothing to skip).
const OWN: &str = "DELETE FROM events WHERE id IN (
         SELECT id FROM events WHERE source <> 'api' AND id < ?1 ORDER BY id LIMIT ?2)
     RETURNING source";

/// Which events one round of eviction may delete.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    /// Posted events received before row id `before`: what a post may
    /// evict to make room for itself. Never the daemon's own history.
    PostedBefore(i64),
    /// Posted events, then the daemon's own: the cap always holds.
    All,
}

/// What one round of eviction deleted, by source, and the size after.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Evicted {
    /// Indexed by [`index`].
    pub by_source: [u64; 3],
    pub used_bytes: u64,
}

impl Evicted {
    pub fn total(&self) -> u64 {
        self.by_source.iter().sum()
    }

    /// Adds `other`'s deletions (its size is not kept).
    pub fn add(&mut self, other: &Evicted) {
        for (mine, theirs) in self.by_source.iter_mut().zip(other.by_source) {
            *mine += theirs;
        }
    }
}

/// The slot of a source in [`Evicted::by_source`].
pub(crate) fn index(source: Source) -> usize {
    match source {
        Source::Api => 0,
        Source::Daemon => 1,
        Source::Inferred => 2,
    }
}

/// Where eviction stops: a sixteenth under the cap, so a ledger at its cap
/// evicts once per that much writing, not on every write.
pub(crate) fn target(max_bytes: u64) -> u64 {
    max_bytes - max_bytes / 16
}

/// When the database uses more than `max_bytes`, deletes events in `scope`,
/// the least valuable first, until it uses at most [`target`] or nothing in
/// scope is left. Freed pages stay in the file until `incremental_vacuum`.
pub(crate) fn evict(conn: &mut Conn, max_bytes: u64, scope: Scope) -> Result<Evicted, DbError> {
    let mut evicted = Evicted {
        used_bytes: used_bytes(conn)?,
        ..Evicted::default()
    };
    if evicted.used_bytes <= max_bytes {
        return Ok(evicted);
    }
    let (tiers, before): (&[&str], i64) = match scope {
        Scope::PostedBefore(before) => (&[POSTED], before),
        Scope::All => (&[POSTED, OWN], i64::MAX),
    };
    let target = target(max_bytes);
    let mut bytes_per_event = FIRST_GUESS_BYTES;
    for sql in tiers {
        while evicted.used_bytes > target {
            let excess = evicted.used_bytes - target;
            let batch = excess.div_ceil(bytes_per_event).clamp(1, MAX_BATCH);
            let rows = conn.rows(sql, args![before, batch as i64])?;
            let mut deleted = 0;
            for row in rows {
                let source: String = row.get(0)?;
                // The schema's CHECK admits only the three sources.
                if let Ok(source) = source.parse() {
                    evicted.by_source[index(source)] += 1;
                }
                deleted += 1;
            }
            let used = used_bytes(conn)?;
            if deleted == 0 {
                break;
            }
            let freed = evicted.used_bytes.saturating_sub(used);
            // Pages free up only once empty: a small batch may free none,
            // and the next one is twice as big.
            bytes_per_event = match freed / deleted {
                0 => bytes_per_event / 2,
                per_event => per_event,
            }
            .clamp(64, FIRST_GUESS_BYTES);
            evicted.used_bytes = used;
        }
    }
    Ok(evicted)
}

/// Gives SQLite's free pages back to the file system. PostgreSQL's
/// autovacuum does its own.
pub(crate) fn vacuum(conn: &mut Conn) -> Result<(), DbError> {
    if conn.dialect() == Dialect::Sqlite {
        conn.rows("PRAGMA incremental_vacuum", &[])?;
    }
    Ok(())
}

/// The bytes the ledger's data takes: SQLite's pages in use, or the size
/// of PostgreSQL's tables with their indexes.
pub(crate) fn used_bytes(conn: &mut Conn) -> Result<u64, DbError> {
    if conn.dialect() == Dialect::Postgres {
        let row = conn.row(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
             WHERE c.relname IN ('events', 'releases', 'checkpoints', 'deliveries', 'sink_state')
               AND c.relkind = 'r' AND pg_table_is_visible(c.oid)",
            &[],
        )?;
        return Ok(row.map(|r| r.get::<u64>(0)).transpose()?.unwrap_or(0));
    }
    let mut pragma = |name: &str| -> Result<i64, DbError> {
        Ok(conn
            .row(name, &[])?
            .map(|r| r.get(0))
            .transpose()?
            .unwrap_or(0))
    };
    let used_pages = pragma("PRAGMA page_count")? - pragma("PRAGMA freelist_count")?;
    Ok((used_pages.max(0) * pragma("PRAGMA page_size")?) as u64)
}
