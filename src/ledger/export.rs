//! `ledger export`: the events of a ledger file as Parquet (Arrow) or JSON
//! lines, for DuckDB, BigQuery or a warehouse. Reads the file through a
//! read-only connection of its own, so it runs beside a live daemon.
//!
//! The Parquet columns are the `events` table's: `id` (int64), `event_id`,
//! `type`, `ts` (timestamp, microseconds, UTC), `ts_ns` (int64, the exact
//! time), `service`, `environment`, `deployment_id`, `git_sha`, `source`,
//! and `metadata` (JSON text: `json_extract` in DuckDB, `JSON_VALUE` in
//! BigQuery). The JSON lines are `/api/v1/events`'s objects, with `id`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rusqlite::{Connection, OpenFlags};

use super::db::{args, Conn, Connect, DbError, Pg, PostgresOptions};
use super::query::{nanos, stored_event, EVENT_COLUMNS};
use super::schema::VERSION;
use super::StoredEvent;
use crate::model::UnixNanos;

/// Rows per Arrow record batch (and per read from SQLite).
const BATCH_ROWS: usize = 8192;

/// The two export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Parquet,
    Jsonl,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no ledger at {0}: check [ledger] path and the working directory")]
    Missing(String),
    #[error(
        "the ledger is kept in memory ([ledger] path = \":memory:\"): there is no file to export"
    )]
    InMemory,
    #[error("the ledger {path} has schema version {found}, newer than this build's {VERSION}; export it with the newer release-verdict")]
    TooNew { path: String, found: i64 },
    #[error("reading the ledger: {0}")]
    Db(#[from] DbError),
    #[error("the ledger's PostgreSQL settings: {0}")]
    Settings(String),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("building the Arrow batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for ExportError {
    fn from(e: rusqlite::Error) -> Self {
        ExportError::Db(e.into())
    }
}

/// Writes the events recorded at `[since, until)` (all if absent) in the
/// ledger at `path` (a SQLite file or a PostgreSQL URL, reached with
/// `postgres`) to `out`, oldest recorded first. Returns how many.
pub fn export(
    path: &str,
    postgres: &PostgresOptions,
    since: Option<UnixNanos>,
    until: Option<UnixNanos>,
    format: Format,
    out: impl Write + Send,
) -> Result<u64, ExportError> {
    if path == super::MEMORY || path.is_empty() {
        return Err(ExportError::InMemory);
    }
    let (mut conn, found) = if super::is_postgres(path) {
        let connect = Connect::new(path, postgres).map_err(ExportError::Settings)?;
        let mut conn = Conn::Postgres(Box::new(Pg::open(connect, true)?));
        let found = conn
            .row("SELECT version FROM schema_version", &[])?
            .map(|r| r.get::<i64>(0))
            .transpose()?
            .unwrap_or(0);
        (conn, found)
    } else {
        if !Path::new(path).is_file() {
            return Err(ExportError::Missing(path.to_string()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        (Conn::Sqlite(conn), found)
    };
    if found > VERSION {
        return Err(ExportError::TooNew {
            path: super::redact(path),
            found,
        });
    }
    let pages = Pages {
        conn: &mut conn,
        since: nanos(since.unwrap_or(0)),
        until: nanos(until.unwrap_or(UnixNanos::MAX)),
        after: 0,
    };
    match format {
        Format::Jsonl => jsonl(pages, out),
        Format::Parquet => parquet(pages, out),
    }
}

/// The events in pages of [`BATCH_ROWS`], by id: one read transaction each,
/// so a long export never holds the daemon's checkpoints back.
struct Pages<'a> {
    conn: &'a mut Conn,
    since: i64,
    until: i64,
    after: i64,
}

impl Pages<'_> {
    fn next_page(&mut self) -> Result<Vec<StoredEvent>, DbError> {
        let page: Vec<StoredEvent> = self
            .conn
            .rows(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events
                     WHERE id > ?1 AND ts_ns >= ?2 AND ts_ns < ?3 ORDER BY id LIMIT ?4"
                ),
                args![self.after, self.since, self.until, BATCH_ROWS as i64],
            )?
            .iter()
            .map(stored_event)
            .collect::<Result<_, DbError>>()?;
        if let Some(last) = page.last() {
            self.after = last.id;
        }
        Ok(page)
    }
}

fn jsonl(mut pages: Pages<'_>, out: impl Write) -> Result<u64, ExportError> {
    let mut out = std::io::BufWriter::new(out);
    let mut written = 0;
    loop {
        let page = pages.next_page()?;
        if page.is_empty() {
            break;
        }
        for e in &page {
            serde_json::to_writer(&mut out, e).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
        written += page.len() as u64;
    }
    out.flush()?;
    Ok(written)
}

/// The Parquet file's schema.
pub fn schema() -> Schema {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        text("event_id", true),
        text("type", false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("ts_ns", DataType::Int64, false),
        text("service", false),
        text("environment", true),
        text("deployment_id", true),
        text("git_sha", true),
        text("source", false),
        text("metadata", false),
    ])
}

fn parquet(mut pages: Pages<'_>, out: impl Write + Send) -> Result<u64, ExportError> {
    let schema = Arc::new(schema());
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("release-verdict {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut writer = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
    let mut written = 0;
    loop {
        let page = pages.next_page()?;
        if page.is_empty() {
            break;
        }
        writer.write(&batch(&schema, &page)?)?;
        written += page.len() as u64;
    }
    writer.close()?;
    Ok(written)
}

/// One page of events as an Arrow record batch of [`schema`].
fn batch(schema: &Arc<Schema>, page: &[StoredEvent]) -> Result<RecordBatch, ExportError> {
    let n = page.len();
    let mut id = Int64Builder::with_capacity(n);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut ts_ns = Int64Builder::with_capacity(n);
    let mut text: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::new()).collect();
    for stored in page {
        let e = &stored.event;
        id.append_value(stored.id);
        ts.append_value((e.ts / 1000) as i64);
        ts_ns.append_value(nanos(e.ts));
        let metadata = serde_json::to_string(&e.metadata).map_err(std::io::Error::from)?;
        let columns: [Option<&str>; 8] = [
            e.event_id.as_deref(),
            Some(&e.kind),
            Some(&e.service),
            e.environment.as_deref(),
            e.deployment_id.as_deref(),
            e.git_sha.as_deref(),
            Some(e.source.as_str()),
            Some(&metadata),
        ];
        for (builder, value) in text.iter_mut().zip(columns) {
            builder.append_option(value);
        }
    }
    let mut text = text
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || text.next().expect("eight text columns");
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        next(), // event_id
        next(), // type
        Arc::new(ts.finish()),
        Arc::new(ts_ns.finish()),
        next(), // service
        next(), // environment
        next(), // deployment_id
        next(), // git_sha
        next(), // source
        next(), // metadata
    ];
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::event::{Event, Source};
    use crate::ledger::{Ledger, LedgerOptions};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn parquet_and_jsonl_hold_every_event_in_the_window() {
        for backend in crate::ledger::tests::BACKENDS {
            let path = backend.fresh("export");
            let ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
            let t0 = 1_790_000_000_000_000_000;
            let events: Vec<Event> = (0..10_000u64)
                .map(|i| {
                    Event::new(
                        "deploy_started",
                        t0 + i * 1_000_000_000,
                        Source::Api,
                        "checkout",
                    )
                    .for_release("prod", &format!("r{i}"))
                    .with("n", i)
                })
                .collect();
            for chunk in events.chunks(1000) {
                ledger.insert_posted(chunk.to_vec()).unwrap();
            }
            ledger.flush().unwrap();

            let mut bytes = Vec::new();
            let since = t0 + 1_000 * 1_000_000_000;
            let n = export(
                &path,
                &PostgresOptions::default(),
                Some(since),
                None,
                Format::Parquet,
                &mut bytes,
            )
            .unwrap();
            assert_eq!(n, 9_000);
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                .unwrap()
                .build()
                .unwrap();
            let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert_eq!(rows, 9_000);
            assert_eq!(batches[0].schema().fields(), schema().fields());
            let first_ts = batches[0]
                .column(3)
                .as_any()
                .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
                .unwrap()
                .value(0);
            assert_eq!(first_ts as u64 * 1000, since);

            let mut lines = Vec::new();
            let until = Some(t0 + 10 * 1_000_000_000);
            assert_eq!(
                export(
                    &path,
                    &PostgresOptions::default(),
                    None,
                    until,
                    Format::Jsonl,
                    &mut lines
                )
                .unwrap(),
                10
            );
            let last: serde_json::Value =
                serde_json::from_str(String::from_utf8(lines).unwrap().lines().last().unwrap())
                    .unwrap();
            assert_eq!(last["deployment_id"], "r9");
            assert_eq!(last["metadata"]["n"], 9);
            ledger.close();
            backend.remove(&path);
        }
    }

    #[test]
    fn refuses_what_it_cannot_export() {
        assert!(matches!(
            export(
                ":memory:",
                &PostgresOptions::default(),
                None,
                None,
                Format::Jsonl,
                Vec::new()
            ),
            Err(ExportError::InMemory)
        ));
        assert!(matches!(
            export(
                "/nonexistent/ledger.db",
                &PostgresOptions::default(),
                None,
                None,
                Format::Jsonl,
                Vec::new()
            ),
            Err(ExportError::Missing(_))
        ));
    }
}
