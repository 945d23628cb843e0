//! Reading what DORA needs: the events of the types it uses, in a window
//! and the lookback before it, as [`Fact`]s for [`crate::dora::compute`].

use super::db::{Arg, Dialect};
use super::event::parse_time;
use super::query::nanos;
use super::{Ledger, LedgerError};
use crate::dora::{self, Bucket, Fact, Kind, Report, Window, LOOKBACK};
use crate::model::UnixNanos;

/// What `/api/v1/dora` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoraQuery {
    pub service: Option<String>,
    pub environment: Option<String>,
    pub window: Window,
    pub bucket: Option<Bucket>,
}

impl Ledger {
    /// DORA's measures per service and environment over the query's window.
    /// With both a service and an environment named, there is always one
    /// report, zero if nothing happened.
    pub fn dora(&self, q: &DoraQuery) -> Result<Vec<Report>, LedgerError> {
        let facts = self.facts(q)?;
        let mut reports = dora::compute(&facts, q.window, q.bucket);
        if let (Some(service), Some(environment)) = (&q.service, &q.environment) {
            reports.retain(|r| r.environment == *environment);
            if reports.is_empty() {
                reports = dora::empty(service, environment, q.window, q.bucket);
            }
        }
        Ok(reports)
    }

    /// The events DORA reads, from `LOOKBACK` before the window to its end.
    fn facts(&self, q: &DoraQuery) -> Result<Vec<Fact>, LedgerError> {
        let marks = vec!["?"; Kind::TYPES.len()].join(", ");
        let mut args: Vec<Arg<'_>> = Kind::TYPES.iter().map(|t| Arg::Text(t)).collect();
        args.push(Arg::Int(nanos(q.window.since.saturating_sub(LOOKBACK))));
        args.push(Arg::Int(nanos(q.window.until)));
        let mut narrowing = String::new();
        if let Some(service) = &q.service {
            narrowing.push_str(" AND service = ?");
            args.push(Arg::Text(service));
        }
        if let Some(environment) = &q.environment {
            narrowing.push_str(" AND (environment = ? OR environment IS NULL)");
            args.push(Arg::Text(environment));
        }
        self.readers.with(|conn| {
            let commit_time = match conn.dialect() {
                Dialect::Sqlite => "json_extract(metadata, '$.commit_time')",
                Dialect::Postgres => "(metadata::jsonb ->> 'commit_time')",
            };
            let sql = format!(
                "SELECT type, ts_ns, service, environment, deployment_id, git_sha,
                        CASE WHEN type = 'commit' THEN {commit_time} END
                 FROM events WHERE type IN ({marks}) AND ts_ns >= ? AND ts_ns < ?{narrowing}"
            );
            conn.rows(&sql, &args)?
                .iter()
                .map(|r| {
                    let kind: String = r.get(0)?;
                    let ts: UnixNanos = r.get(1)?;
                    let commit_time: Option<String> = r.get(6)?;
                    let Some(kind) = Kind::of(&kind) else {
                        return Ok(None);
                    };
                    Ok(Some(Fact {
                        kind,
                        // A commit's own time when it carries a valid one.
                        ts: commit_time.and_then(|t| parse_time(&t).ok()).unwrap_or(ts),
                        service: r.get(2)?,
                        environment: r.get(3)?,
                        deployment_id: r.get(4)?,
                        git_sha: r.get(5)?,
                    }))
                })
                .filter_map(Result::transpose)
                .collect()
        })
    }
}
