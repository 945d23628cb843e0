//! The ledger's two databases behind one face: SQLite, embedded (one
//! daemon, the default), and PostgreSQL (a database several daemons share).
//!
//! SQL is written once, in SQLite's spelling with `?N` or `?` parameters;
//! [`Conn`] spells it for PostgreSQL (`$N`, no `INDEXED BY` hints, `chr`
//! for `char`). What differs beyond spelling (the schema, JSON, the size
//! cap) asks [`Conn::dialect`]. Values cross as [`Arg`] and come back as
//! [`Row`]s of owned values: the ledger's rows are small, and reads page.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use rusqlite::types::{ToSqlOutput, ValueRef};

/// Which database a connection speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A value bound to a statement's parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::Int(v.into())
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Blob(v)
    }
}

impl<'a, T: Into<Arg<'a>>> From<Option<T>> for Arg<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Arg::Null, Into::into)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().into()
    }
}

/// `args![a, b]`: a statement's parameters, in order.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        &[$($crate::ledger::db::Arg::from($arg)),*][..]
    };
}
pub(crate) use args;

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Arg::Null => ValueRef::Null,
            Arg::Int(v) => ValueRef::Integer(v),
            Arg::Text(v) => ValueRef::Text(v.as_bytes()),
            Arg::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

impl ToSql for Arg<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(v) if *ty == Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
            Arg::Int(v) if *ty == Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
            Arg::Int(v) => v.to_sql(ty, out),
            Arg::Text(v) => v.to_sql(ty, out),
            Arg::Blob(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::INT2,
            Type::INT4,
            Type::INT8,
            Type::TEXT,
            Type::VARCHAR,
            Type::BPCHAR,
            Type::NAME,
            Type::UNKNOWN,
            Type::BYTEA,
        ]
        .contains(ty)
    }

    to_sql_checked!();
}

/// A column's value as read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// One row read, its columns in the statement's order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row(Vec<Val>);

impl Row {
    /// Column `i` as a `T`; a wrong type is an error naming the column.
    pub fn get<T: FromVal>(&self, i: usize) -> Result<T, DbError> {
        let value = self.0.get(i).unwrap_or(&Val::Null);
        T::from_val(value).ok_or_else(|| DbError::Value {
            column: i,
            found: format!("{value:?}"),
        })
    }
}

/// A Rust value a column converts to.
pub(crate) trait FromVal: Sized {
    fn from_val(v: &Val) -> Option<Self>;
}

impl FromVal for i64 {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Int(n) => Some(*n),
            _ => None,
        }
    }
}

impl FromVal for u32 {
    fn from_val(v: &Val) -> Option<Self> {
        i64::from_val(v).and_then(|n| u32::try_from(n).ok())
    }
}

/// Times are signed in both databases; they fit until 2262.
impl FromVal for u64 {
    fn from_val(v: &Val) -> Option<Self> {
        i64::from_val(v).map(|n| n.max(0) as u64)
    }
}

impl FromVal for String {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromVal for Vec<u8> {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
}

impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Null => Some(None),
            other => T::from_val(other).map(Some),
        }
    }
}

/// A database error of either kind.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("column {column} holds {found}, not the type expected")]
    Value { column: usize, found: String },
    /// A stored value that does not parse (bad JSON, an unknown source).
    #[error("column {column}: {message}")]
    Parse { column: usize, message: String },
    /// The same error again, for another caller of one failed transaction.
    #[error("{0}")]
    Again(String),
}

/// PostgreSQL's own message and code where the server sent one.
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl DbError {
    /// A copy for another caller: SQLite's failures keep their code.
    pub fn again(&self) -> DbError {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(code, msg)) => {
                DbError::Sqlite(rusqlite::Error::SqliteFailure(*code, msg.clone()))
            }
            other => DbError::Again(other.to_string()),
        }
    }

    /// A value that could not be read or written as JSON.
    pub fn json(column: usize, e: serde_json::Error) -> DbError {
        DbError::Parse {
            column,
            message: e.to_string(),
        }
    }
}

/// How to reach a PostgreSQL database, again after a lost connection.
#[derive(Clone)]
pub(crate) struct Connect {
    config: postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("host", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish()
    }
}

/// How to reach PostgreSQL beyond its URL: kept out of the URL so the
/// configuration file never holds a secret.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostgresOptions {
    /// The password, when the URL names none.
    pub password: Option<String>,
    /// Certificates (PEM) trusted for the database's TLS beside the public
    /// roots: a private CA.
    pub ca_file: Option<PathBuf>,
    /// How long a connection attempt waits.
    pub connect_timeout: std::time::Duration,
}

impl Connect {
    /// Parses the URL (`postgres://user@host:port/db?sslmode=require`);
    /// TLS is used when the URL's `sslmode` asks for it (or, by default,
    /// when the server offers it).
    pub fn new(url: &str, options: &PostgresOptions) -> Result<Connect, String> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| format!("the ledger's PostgreSQL URL does not parse: {e}"))?;
        if config.get_password().is_none() {
            if let Some(password) = &options.password {
                config.password(password);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        config.application_name("release-verdict");
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &options.ca_file {
            use rustls_pki_types::pem::PemObject;
            let pem = std::fs::read(path)
                .map_err(|e| format!("ledger.ca_file {}: {e}", path.display()))?;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("ledger.ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ledger.ca_file {}: {e}", path.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS to PostgreSQL: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Connect {
            config,
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
        })
    }

    fn open(&self) -> Result<postgres::Client, DbError> {
        Ok(self.config.connect(self.tls.clone())?)
    }
}

/// Prepared statements kept per PostgreSQL connection, by their SQL.
const STATEMENT_CACHE: usize = 256;

/// A PostgreSQL connection that reconnects when the server went away.
pub(crate) struct Pg {
    connect: Connect,
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
    read_only: bool,
    /// A statement failed inside the open transaction: PostgreSQL ignores
    /// the rest of it until it is rolled back.
    aborted: bool,
    in_transaction: bool,
}

impl Pg {
    pub fn open(connect: Connect, read_only: bool) -> Result<Pg, DbError> {
        let mut pg = Pg {
            connect,
            client: None,
            statements: HashMap::new(),
            read_only,
            aborted: false,
            in_transaction: false,
        };
        pg.client()?;
        Ok(pg)
    }

    /// The connection, opened again if it was lost between transactions.
    fn client(&mut self) -> Result<&mut postgres::Client, DbError> {
        let lost = self.client.as_ref().is_none_or(|c| c.is_closed());
        if lost && !self.in_transaction {
            self.statements.clear();
            let mut client = self.connect.open()?;
            if self.read_only {
                client.batch_execute("SET default_transaction_read_only = on")?;
            }
            self.client = Some(client);
        }
        match &mut self.client {
            Some(client) => Ok(client),
            None => Err(DbError::Again("the PostgreSQL connection is closed".into())),
        }
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, DbError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let spelled = postgres_sql(sql);
        let statement = self.client()?.prepare(&spelled)?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn track<T>(&mut self, result: Result<T, DbError>) -> Result<T, DbError> {
        if result.is_err() && self.in_transaction {
            self.aborted = true;
        }
        result
    }

    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
        let result = (|| {
            let statement = self.statement(sql)?;
            let params = params(args);
            Ok(self.client()?.execute(&statement, &params)?)
        })();
        self.track(result)
    }

    fn rows(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, DbError> {
        let result = (|| {
            let statement = self.statement(sql)?;
            let params = params(args);
            let rows = self.client()?.query(&statement, &params)?;
            rows.iter().map(pg_row).collect()
        })();
        self.track(result)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        let result = (|| Ok(self.client()?.batch_execute(&postgres_sql(sql))?))();
        self.track(result)
    }
}

impl Drop for Pg {
    /// The client blocks as it closes: on an async runtime's thread (the
    /// daemon dropping its ledger) it is closed on a thread of its own.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("ledger-close".into())
                    .spawn(move || drop(client));
            }
        }
    }
}

fn params<'a>(args: &'a [Arg<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

fn pg_row(row: &postgres::Row) -> Result<Row, DbError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map(Val::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?
                .map(|v| Val::Int(v.into()))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)?
                .map(|v| Val::Int(v.into()))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?
                .map(|v| Val::Int(v.into()))
        } else if *ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i)?.map(Val::Real)
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i)?.map(Val::Blob)
        } else {
            row.try_get::<_, Option<String>>(i)?.map(Val::Text)
        };
        values.push(value.unwrap_or(Val::Null));
    }
    Ok(Row(values))
}

/// SQLite's spelling made PostgreSQL's: `?N` and `?` become `$N`,
/// `INDEXED BY name` hints go, `char(` becomes `chr(`. Quoted text is
/// left alone, and so are comments.
pub(crate) fn postgres_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 0;
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if !quoted && c == '-' && chars.peek() == Some(&'-') {
            // A comment, to the end of its line.
            out.push(c);
            for c in chars.by_ref() {
                out.push(c);
                if c == '\n' {
                    break;
                }
            }
            continue;
        }
        if c == '\'' {
            quoted = !quoted;
        }
        if quoted || c != '?' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        if digits.is_empty() {
            next += 1;
            digits = next.to_string();
        }
        out.push('$');
        out.push_str(&digits);
    }
    while let Some(at) = out.find(" INDEXED BY ") {
        let name_end = out[at + 12..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(out.len(), |n| at + 12 + n);
        out.replace_range(at..name_end, "");
    }
    out.replace("char(", "chr(")
}

/// One connection to the ledger's database.
pub(crate) enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<Pg>),
}

impl Conn {
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs a statement; the rows it changed.
    pub fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
        match self {
            Conn::Sqlite(c) => {
                Ok(c.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(args))? as u64)
            }
            Conn::Postgres(pg) => pg.exec(sql, args),
        }
    }

    /// Runs a query; all its rows.
    pub fn rows(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, DbError> {
        match self {
            Conn::Sqlite(c) => {
                let mut statement = c.prepare_cached(sql)?;
                let width = statement.column_count();
                let rows = statement
                    .query_map(rusqlite::params_from_iter(args), |r| {
                        (0..width)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    ValueRef::Null => Val::Null,
                                    ValueRef::Integer(v) => Val::Int(v),
                                    ValueRef::Real(v) => Val::Real(v),
                                    ValueRef::Text(t) => {
                                        Val::Text(String::from_utf8_lossy(t).into_owned())
                                    }
                                    ValueRef::Blob(b) => Val::Blob(b.to_vec()),
                                })
                            })
                            .collect::<rusqlite::Result<Vec<Val>>>()
                            .map(Row)
                    })?
                    .collect::<rusqlite::Result<Vec<Row>>>()?;
                Ok(rows)
            }
            Conn::Postgres(pg) => pg.rows(sql, args),
        }
    }

    /// Runs an INSERT; the id of the row it inserted, or none when it
    /// inserted nothing (a conflict). SQLite's RETURNING would write a
    /// statement journal for every row: there the id is the connection's
    /// last one.
    pub fn insert(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<i64>, DbError> {
        match self {
            Conn::Sqlite(c) => {
                let n = c
                    .prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(args))?;
                Ok((n > 0).then(|| c.last_insert_rowid()))
            }
            Conn::Postgres(pg) => match pg.rows(&format!("{sql} RETURNING id"), args)?.first() {
                Some(row) => Ok(Some(row.get(0)?)),
                None => Ok(None),
            },
        }
    }

    /// The query's first row, if any.
    pub fn row(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<Row>, DbError> {
        Ok(self.rows(sql, args)?.into_iter().next())
    }

    /// Statements without parameters, separated by semicolons.
    pub fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(pg) => pg.batch(sql),
        }
    }

    pub fn begin(&mut self) -> Result<(), DbError> {
        self.batch("BEGIN")?;
        if let Conn::Postgres(pg) = self {
            pg.in_transaction = true;
            pg.aborted = false;
        }
        Ok(())
    }

    pub fn commit(&mut self) -> Result<(), DbError> {
        let result = self.batch("COMMIT");
        self.ended();
        result
    }

    pub fn rollback(&mut self) -> Result<(), DbError> {
        let result = match self {
            Conn::Sqlite(c) if c.is_autocommit() => Ok(()),
            _ => self.batch("ROLLBACK"),
        };
        self.ended();
        result
    }

    fn ended(&mut self) {
        if let Conn::Postgres(pg) = self {
            pg.in_transaction = false;
            pg.aborted = false;
        }
    }

    /// Whether the open transaction is lost: SQLite rolled it back itself
    /// (a full disk), or a statement failed in PostgreSQL's.
    pub fn transaction_lost(&self) -> bool {
        match self {
            Conn::Sqlite(c) => c.is_autocommit(),
            Conn::Postgres(pg) => pg.aborted,
        }
    }

    /// Runs `f` so that its failure undoes only its own writes, not the
    /// transaction's others: a savepoint around it (SQLite's statements
    /// are atomic alone, so there only where `f` writes more than once).
    pub fn isolated<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Conn) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.batch(&format!("SAVEPOINT {name}"))?;
        if let Conn::Postgres(pg) = self {
            pg.aborted = false;
        }
        match f(self) {
            Ok(v) => {
                self.batch(&format!("RELEASE {name}"))?;
                Ok(v)
            }
            Err(e) => {
                if !self.transaction_lost_for_good() {
                    self.batch(&format!("ROLLBACK TO {name}; RELEASE {name}"))?;
                    if let Conn::Postgres(pg) = self {
                        pg.aborted = false;
                    }
                }
                Err(e)
            }
        }
    }

    /// Runs one of a transaction's commands so that its failure loses only
    /// its own writes: in PostgreSQL a savepoint around it (a failed
    /// statement there aborts the whole transaction); SQLite's statements
    /// fail alone, and its savepoints cost a third of a write, so there it
    /// runs as it is.
    pub fn command<T>(
        &mut self,
        f: impl FnOnce(&mut Conn) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        match self.dialect() {
            Dialect::Sqlite => f(self),
            Dialect::Postgres => self.isolated("command", f),
        }
    }

    /// A transaction gone whatever is rolled back: SQLite's own rollback,
    /// or a PostgreSQL connection that closed.
    fn transaction_lost_for_good(&self) -> bool {
        match self {
            Conn::Sqlite(c) => c.is_autocommit(),
            Conn::Postgres(pg) => pg.client.as_ref().is_none_or(|c| c.is_closed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spells_sqlite_for_postgres() {
        assert_eq!(
            postgres_sql("SELECT 1 FROM events INDEXED BY events_deployment WHERE a = ?1 AND b IS NOT DISTINCT FROM ?2"),
            "SELECT 1 FROM events WHERE a = $1 AND b IS NOT DISTINCT FROM $2"
        );
        assert_eq!(
            postgres_sql("WHERE a = ? AND b = ? AND c = '?' ORDER BY id LIMIT ?"),
            "WHERE a = $1 AND b = $2 AND c = '?' ORDER BY id LIMIT $3"
        );
        assert_eq!(postgres_sql("a || char(31) || b"), "a || chr(31) || b");
        assert_eq!(
            postgres_sql("-- the row's own\nWHERE a = ?1"),
            "-- the row's own\nWHERE a = $1"
        );
    }

    #[test]
    fn sqlite_rows_come_back_typed() {
        let mut conn = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        conn.batch("CREATE TABLE t (i INTEGER, s TEXT, b BLOB)")
            .unwrap();
        let none: Option<&str> = None;
        conn.exec(
            "INSERT INTO t VALUES (?1, ?2, ?3)",
            args![7i64, none, &b"x"[..]],
        )
        .unwrap();
        let row = conn.row("SELECT i, s, b FROM t", &[]).unwrap().unwrap();
        assert_eq!(row.get::<i64>(0).unwrap(), 7);
        assert_eq!(row.get::<Option<String>>(1).unwrap(), None);
        assert_eq!(row.get::<Vec<u8>>(2).unwrap(), b"x");
        assert!(row.get::<String>(0).is_err(), "an integer is not text");
    }
}
