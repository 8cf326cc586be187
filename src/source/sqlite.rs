//! SQLite sources: the `orders` table (sql/schema.sql), read in rowid pages, results written in
//! one transaction per batch with a busy timeout, so a shop writing to the same database at the
//! same time does not fail the run.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{
    Defect, FinishedRow, OrderSource, ResultSink, RowResult, SourceError, SourceRow, TextRecord,
};
use crate::config::SourceSettings;
use crate::order::{ColumnNames, Field, Layout};

/// The schema `kksync init-db` creates.
pub const SCHEMA: &str = include_str!("../../sql/schema.sql");
const TABLE: &str = "orders";
const RESULT_COLUMNS: [&str; 3] = ["payment_status", "sync_error", "synced_at"];
/// How long to wait for a shop's own write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
const PAGE_ROWS: usize = 1000;

/// Reads the `orders` table in pages of rowids.
pub struct SqliteSource {
    pages: RowidPages,
    layout: Layout,
    status_index: Option<usize>,
    error_index: Option<usize>,
}

/// Reads a table in pages of rowids. Each page is its own short statement, so the shop (and
/// kksync's own write-back) can take the write lock between pages. Shared by the orders and
/// the refunds tables.
pub(crate) struct RowidPages {
    path: PathBuf,
    connection: Connection,
    query: String,
    /// The same columns of one row, by rowid.
    row_query: String,
    /// The column names, for naming a value that is not valid UTF-8.
    columns: Vec<String>,
    page_rows: usize,
    reading: &'static str,
    last_rowid: i64,
    page: VecDeque<SourceRow>,
    /// Records of rows given back ([`RowidPages::recycle`]), whose memory the next rows reuse.
    spare: Vec<TextRecord>,
    exhausted: bool,
}

impl RowidPages {
    /// Pages of `columns` (quoted here) of `table`, `page_rows` at a time; `reading` names the
    /// action in errors ("reading orders").
    pub(crate) fn new(
        path: &Path,
        connection: Connection,
        table: &str,
        columns: &[&str],
        page_rows: usize,
        reading: &'static str,
    ) -> Self {
        let selected = columns
            .iter()
            .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(", ");
        RowidPages {
            path: path.to_path_buf(),
            connection,
            query: format!(
                "SELECT rowid, {selected} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT {page_rows}"
            ),
            row_query: format!("SELECT rowid, {selected} FROM {table} WHERE rowid = ?1"),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            page_rows,
            reading,
            last_rowid: 0,
            page: VecDeque::with_capacity(page_rows),
            spare: Vec::new(),
            exhausted: false,
        }
    }

    /// The next row, its values as text; `None` at the end.
    pub(crate) fn next_row(&mut self) -> Result<Option<SourceRow>, SourceError> {
        if self.page.is_empty() && !self.exhausted {
            self.fill_page()?;
        }
        Ok(self.page.pop_front())
    }

    /// The row with this rowid, if it still exists (a write-back of chosen rows).
    pub(crate) fn row_at(&mut self, rowid: u64) -> Result<Option<SourceRow>, SourceError> {
        let Ok(rowid) = i64::try_from(rowid) else {
            return Ok(None);
        };
        let mut statement = self
            .connection
            .prepare_cached(&self.row_query)
            .map_err(sql_error(&self.path, "preparing the read"))?;
        let mut rows = statement
            .query(params![rowid])
            .map_err(sql_error(&self.path, self.reading))?;
        match rows.next().map_err(sql_error(&self.path, self.reading))? {
            Some(row) => {
                source_row(&self.path, &self.columns, row, TextRecord::default()).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Reads on from the row after `rowid`.
    pub(crate) fn restart_after(&mut self, rowid: u64) {
        self.last_rowid = i64::try_from(rowid).unwrap_or(i64::MAX);
        self.page.clear();
        self.exhausted = false;
    }

    /// Takes back a row's record once the reader is done with it: the next page reuses its
    /// memory (two allocations a row fewer).
    pub(crate) fn recycle(&mut self, row: SourceRow) {
        if self.spare.len() < self.page_rows && row.record.worth_reusing() {
            self.spare.push(row.record);
        }
    }

    fn fill_page(&mut self) -> Result<(), SourceError> {
        let mut statement = self
            .connection
            .prepare_cached(&self.query)
            .map_err(sql_error(&self.path, "preparing the read"))?;
        let mut rows = statement
            .query(params![self.last_rowid])
            .map_err(sql_error(&self.path, self.reading))?;
        let mut count = 0;
        while let Some(row) = rows.next().map_err(sql_error(&self.path, self.reading))? {
            let record = self.spare.pop().unwrap_or_default();
            let row = source_row(&self.path, &self.columns, row, record)?;
            self.last_rowid = i64::try_from(row.row).unwrap_or(i64::MAX);
            self.page.push_back(row);
            count += 1;
        }
        self.exhausted = count < self.page_rows;
        Ok(())
    }
}

/// One row of a [`RowidPages`] query (its rowid, then `columns`), its values as text, in the
/// memory of `record` (a row read before).
fn source_row(
    path: &Path,
    columns: &[String],
    row: &rusqlite::Row<'_>,
    mut record: TextRecord,
) -> Result<SourceRow, SourceError> {
    let rowid: i64 = row.get(0).map_err(sql_error(path, "reading a rowid"))?;
    let row_number = u64::try_from(rowid).unwrap_or(0);
    record.clear();
    let mut not_utf8: Vec<&str> = Vec::new();
    for (i, column) in columns.iter().enumerate() {
        let value = row
            .get_ref(i + 1)
            .map_err(sql_error(path, "reading a value"))?;
        match text_of(value) {
            Some(text) => record.push_field(&text),
            None => {
                // Never sent altered: the row fails validation and names the column.
                not_utf8.push(column);
                record.push_field("");
            }
        }
    }
    let defect = (!not_utf8.is_empty()).then(|| Defect {
        message: not_utf8
            .iter()
            .map(|column| format!("row {row_number}: {column} is not valid UTF-8"))
            .collect::<Vec<_>>()
            .join("; "),
        reason: "a value is not valid UTF-8",
    });
    Ok(SourceRow {
        row: row_number,
        record,
        raw: None,
        defect,
        blank_lines_before: 0,
        // Where a write-back of chosen rows finds it again.
        offset: Some(row_number),
        row_fingerprint: None,
        unparsed: false,
    })
}

/// Writes results with one transaction per batch.
pub struct SqliteSink {
    path: PathBuf,
    connection: Connection,
    /// What a synced row's `sync_error` becomes: NULL, or `''` where the shop's table declares
    /// the column `NOT NULL`.
    no_error: Option<&'static str>,
    /// Rows whose result the database refused (a constraint or a trigger of the shop's):
    /// (rowid, SQLite's message). The other rows are written; the run then fails naming these.
    refused: Vec<(u64, String)>,
}

pub(crate) fn sql_error<'p>(
    path: &'p Path,
    action: &'static str,
) -> impl FnOnce(rusqlite::Error) -> SourceError + use<'p> {
    // The path is copied only for an error: reading a row makes one of these per value.
    move |source| SourceError::Sqlite {
        path: path.to_path_buf(),
        action,
        source,
    }
}

pub(crate) fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, SourceError> {
    // One thread uses a connection at a time (rusqlite's `Connection` is not `Sync`), so
    // SQLite need not lock it around every call: a tenth of the time it takes to read a row.
    let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)
        .map_err(sql_error(path, "opening the database"))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(sql_error(path, "setting the busy timeout"))?;
    Ok(connection)
}

/// Creates the `orders` table if it is missing, and adds missing result columns to an
/// existing one. Safe to run again.
pub fn init_db(path: &Path) -> Result<(), SourceError> {
    let connection = connect(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    connection
        .execute_batch(SCHEMA)
        .map_err(sql_error(path, "creating the orders table"))?;
    add_result_columns(path, &connection)
}

fn table_columns(path: &Path, connection: &Connection) -> Result<Vec<String>, SourceError> {
    let mut statement = connection
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .map_err(sql_error(path, "reading the table"))?;
    let names = statement
        .query_map([TABLE], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(sql_error(path, "reading the table's columns"))?;
    Ok(names)
}

/// Whether the `orders` column `column` is declared `NOT NULL`.
fn column_is_not_null(
    path: &Path,
    connection: &Connection,
    column: &str,
) -> Result<bool, SourceError> {
    connection
        .query_row(
            "SELECT \"notnull\" FROM pragma_table_info(?1) WHERE name = ?2 COLLATE NOCASE",
            params![TABLE, column],
            |row| row.get::<_, i64>(0),
        )
        .optional()
        .map(|flag| flag.is_some_and(|flag| flag != 0))
        .map_err(sql_error(path, "reading the table's columns"))
}

fn add_result_columns(path: &Path, connection: &Connection) -> Result<(), SourceError> {
    let existing = table_columns(path, connection)?;
    for column in RESULT_COLUMNS {
        if !existing.iter().any(|c| c.eq_ignore_ascii_case(column)) {
            connection
                .execute_batch(&format!("ALTER TABLE {TABLE} ADD COLUMN {column} TEXT"))
                .map_err(sql_error(path, "adding a result column"))?;
        }
    }
    Ok(())
}

pub(super) fn open(
    path: &Path,
    column_names: &ColumnNames,
    read_only: bool,
) -> Result<(SqliteSource, Option<SqliteSink>), SourceError> {
    if !path.exists() {
        return Err(SourceError::Unusable {
            path: path.to_path_buf(),
            message: "no such database (create one with `kksync init-db PATH`)".into(),
        });
    }
    let sink = if read_only {
        None
    } else {
        let connection = connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        crate::state::commits_normal_in_wal(&connection)
            .map_err(sql_error(path, "reading the journal mode"))?;
        let existing = table_columns(path, &connection)?;
        if !existing.is_empty() {
            add_result_columns(path, &connection)?;
        }
        let no_error = if column_is_not_null(path, &connection, "sync_error")? {
            Some("")
        } else {
            None
        };
        Some(SqliteSink {
            path: path.to_path_buf(),
            connection,
            no_error,
            refused: Vec::new(),
        })
    };
    let connection = connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let columns = table_columns(path, &connection)?;
    if columns.is_empty() {
        return Err(SourceError::Unusable {
            path: path.to_path_buf(),
            message: format!("no `{TABLE}` table (create it with `kksync init-db PATH`)"),
        });
    }
    // Rows are read in rowid pages and results written by rowid.
    if connection
        .prepare("SELECT rowid FROM orders LIMIT 0")
        .is_err()
    {
        return Err(SourceError::Unusable {
            path: path.to_path_buf(),
            message: format!(
                "the `{TABLE}` table has no rowid (it is a view or a WITHOUT ROWID table); kksync reads it and writes the results by rowid"
            ),
        });
    }
    // Select the known fields that exist, plus the stored status; other columns are the shop's.
    let mut selected: Vec<&str> = Field::ALL
        .iter()
        .map(|&f| column_names.sql(f))
        .filter(|name| columns.iter().any(|c| c.eq_ignore_ascii_case(name)))
        .collect();
    let number_column = column_names.sql(Field::Number);
    if !selected.contains(&number_column) {
        return Err(SourceError::Unusable {
            path: path.to_path_buf(),
            message: format!("the orders table has no `{number_column}` column"),
        });
    }
    let status_index = columns
        .iter()
        .any(|c| c.eq_ignore_ascii_case("payment_status"))
        .then(|| {
            selected.push("payment_status");
            selected.len() - 1
        });
    let error_index = columns
        .iter()
        .any(|c| c.eq_ignore_ascii_case("sync_error"))
        .then(|| {
            selected.push("sync_error");
            selected.len() - 1
        });
    let layout = Layout::from_columns(selected.iter().copied(), |f| column_names.sql(f));
    let source = SqliteSource {
        pages: RowidPages::new(
            path,
            connection,
            TABLE,
            &selected,
            PAGE_ROWS,
            "reading orders",
        ),
        layout,
        status_index,
        error_index,
    };
    Ok((source, sink))
}

/// A value as text; `None` for text (or a blob) that is not valid UTF-8, which a lossy decoding
/// would silently alter.
fn text_of(value: ValueRef<'_>) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match value {
        ValueRef::Null => Some(Cow::Borrowed("")),
        ValueRef::Integer(i) => Some(Cow::Owned(i.to_string())),
        // A REAL amount is the shop's own choice; its shortest decimal form is what it meant.
        ValueRef::Real(f) => Some(Cow::Owned(f.to_string())),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            // As for a CSV row, simdutf8 checks the usual value faster than `std`.
            simdutf8::basic::from_utf8(bytes).ok().map(Cow::Borrowed)
        }
    }
}

impl OrderSource for SqliteSource {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn result_indexes(&self) -> (Option<usize>, Option<usize>) {
        (self.status_index, self.error_index)
    }

    fn records_sync_time(&self) -> bool {
        true
    }

    fn next_row(&mut self) -> Result<Option<SourceRow>, SourceError> {
        self.pages.next_row()
    }

    fn recycle(&mut self, row: SourceRow) {
        self.pages.recycle(row);
    }
}

/// The write-back of chosen rows of a SQLite source: they are read again by rowid and their
/// results written as the full write-back writes them; no other row is read.
pub struct SqlitePatch {
    source: SqliteSource,
    sink: SqliteSink,
}

impl SqlitePatch {
    /// Opens a SQLite source for writing back chosen rows; `None` when it is not one.
    pub fn open(settings: &SourceSettings) -> Result<Option<SqlitePatch>, SourceError> {
        if settings.format != crate::cli::SourceFormat::Sqlite {
            return Ok(None);
        }
        let (source, sink) = open(&settings.path, &settings.columns, false)?;
        Ok(sink.map(|sink| SqlitePatch { source, sink }))
    }

    /// The row with this rowid; `None` when the shop deleted it meanwhile.
    pub fn row_at(&mut self, rowid: u64) -> Result<Option<SourceRow>, SourceError> {
        self.source.pages.row_at(rowid)
    }

    /// From now on [`SqlitePatch::next_row`] reads the rows after `rowid`.
    pub fn read_after(&mut self, rowid: u64) {
        self.source.pages.restart_after(rowid);
    }

    /// The next row of those [`SqlitePatch::read_after`] asked for.
    pub fn next_row(&mut self) -> Result<Option<SourceRow>, SourceError> {
        self.source.pages.next_row()
    }

    /// The source, for what it records in a row, and the sink the results go to.
    pub fn parts(&mut self) -> (&dyn OrderSource, &mut dyn ResultSink) {
        (&self.source, &mut self.sink)
    }

    /// Ends the write-back: fails naming the rows whose results the database refused.
    pub fn finish(self) -> Result<(), SourceError> {
        Box::new(self.sink).finish(true)
    }
}

/// How one attempt at writing a batch ended.
enum Attempt {
    /// Committed; these rows' results were refused: (rowid, SQLite's message).
    Committed(Vec<(u64, String)>),
    /// The row at this index was refused in a way that rolled back the whole transaction
    /// (`RAISE(ROLLBACK)`, `ON CONFLICT ROLLBACK`).
    RolledBack(usize, String),
}

impl SqliteSink {
    /// Writes the batch in one transaction, leaving out the rows at the indexes in `skip`.
    fn try_write(
        &mut self,
        rows: &[FinishedRow],
        skip: &[usize],
        now: &str,
    ) -> Result<Attempt, SourceError> {
        let path = self.path.clone();
        let mut refused = Vec::new();
        // IMMEDIATE takes the write lock up front (waiting up to the busy timeout) instead of
        // failing half-way when a shop transaction holds it.
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error(&path, "starting the write-back"))?;
        {
            let mut synced = tx
                .prepare_cached(
                    "UPDATE orders SET payment_status = ?1, sync_error = ?4, synced_at = ?2 WHERE rowid = ?3",
                )
                .map_err(sql_error(&path, "preparing the write-back"))?;
            let mut failed = tx
                .prepare_cached("UPDATE orders SET sync_error = ?1 WHERE rowid = ?2")
                .map_err(sql_error(&path, "preparing the write-back"))?;
            // The status and error stay as they are: a shop's trigger on them does not fire.
            let mut synced_again = tx
                .prepare_cached("UPDATE orders SET synced_at = ?1 WHERE rowid = ?2")
                .map_err(sql_error(&path, "preparing the write-back"))?;
            for (index, finished) in rows.iter().enumerate() {
                if skip.contains(&index) {
                    continue;
                }
                let rowid = i64::try_from(finished.source.row).unwrap_or(i64::MAX);
                let written = match &finished.result {
                    RowResult::Synced { status } => {
                        synced.execute(params![status, now, rowid, self.no_error])
                    }
                    RowResult::SyncedAgain { .. } => synced_again.execute(params![now, rowid]),
                    RowResult::Failed { error } => failed.execute(params![error, rowid]),
                    RowResult::Untouched => Ok(0),
                };
                let (error, message) = match written {
                    Ok(_) => continue,
                    Err(rusqlite::Error::SqliteFailure(error, message))
                        if error.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        (error, message)
                    }
                    Err(error) => return Err(sql_error(&path, "writing a result")(error)),
                };
                let message = message.unwrap_or_else(|| error.to_string());
                if tx.is_autocommit() {
                    return Ok(Attempt::RolledBack(index, message));
                }
                // ABORT undid just this statement; FAIL (a trigger's `RAISE(FAIL)` after the
                // update) may have kept it: a row that holds its result was written.
                let holds = holds_result(&tx, rowid, &finished.result, self.no_error)
                    .map_err(sql_error(&path, "checking a refused result"))?;
                if !holds {
                    refused.push((finished.source.row, message));
                }
            }
        }
        tx.commit()
            .map_err(sql_error(&path, "committing the write-back"))?;
        Ok(Attempt::Committed(refused))
    }
}

/// Whether row `rowid` holds `result` already.
fn holds_result(
    connection: &Connection,
    rowid: i64,
    result: &RowResult,
    no_error: Option<&str>,
) -> rusqlite::Result<bool> {
    let (status, error) = match result {
        RowResult::Synced { status } => (Some(status.as_str()), no_error),
        RowResult::Failed { error } => (None, Some(error.as_str())),
        // The row records its status already; only the sync time was refused.
        RowResult::SyncedAgain { .. } | RowResult::Untouched => return Ok(true),
    };
    connection
        .query_row(
            "SELECT (?2 IS NULL OR payment_status IS ?2) AND sync_error IS ?3 FROM orders WHERE rowid = ?1",
            params![rowid, status, error],
            |row| row.get::<_, bool>(0),
        )
        .optional()
        .map(|holds| holds.unwrap_or(false))
}

impl ResultSink for SqliteSink {
    /// A row that the shop's constraint or trigger refuses does not stop the others: ABORT (the
    /// default) undoes only its statement; a refusal that rolls back the whole transaction
    /// makes the batch start again without that row. The refused rows are reported at the end.
    fn write(&mut self, rows: &[FinishedRow]) -> Result<(), SourceError> {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut skip = Vec::new();
        loop {
            match self.try_write(rows, &skip, &now)? {
                Attempt::Committed(refused) => {
                    self.refused.extend(refused);
                    return Ok(());
                }
                Attempt::RolledBack(index, message) => {
                    // A row that records its status already lost only its sync time.
                    if let Some(finished) = rows.get(index)
                        && !matches!(finished.result, RowResult::SyncedAgain { .. })
                    {
                        self.refused.push((finished.source.row, message));
                    }
                    skip.push(index);
                }
            }
        }
    }

    fn finish(self: Box<Self>, _changed: bool) -> Result<(), SourceError> {
        // Every batch was committed as it was written.
        self.connection
            .close()
            .map_err(|(_, e)| sql_error(&self.path, "closing the database")(e))?;
        match self.refused.as_slice() {
            [] => Ok(()),
            refused => Err(SourceError::RowsRefused {
                path: self.path.clone(),
                count: refused.len(),
                first: refused
                    .iter()
                    .take(5)
                    .map(|(row, message)| format!("row {row}: {message}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database made by `init-db` in a folder of its own (removed when dropped), and a
    /// connection to it.
    fn shop_db() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.db");
        init_db(&path).unwrap();
        let connection = Connection::open(&path).unwrap();
        (dir, path, connection)
    }

    #[test]
    fn init_db_is_idempotent_and_adds_result_columns_to_a_shop_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.db");
        init_db(&path).unwrap();
        init_db(&path).unwrap();
        let other = dir.path().join("own.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE orders (number TEXT PRIMARY KEY, amount TEXT)")
            .unwrap();
        init_db(&other).unwrap();
        let columns = table_columns(&other, &Connection::open(&other).unwrap()).unwrap();
        assert!(columns.iter().any(|c| c == "synced_at"), "{columns:?}");
    }

    #[test]
    fn a_view_or_a_table_without_rowid_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        for (name, sql) in [
            (
                "view.db",
                "CREATE TABLE o (number TEXT); CREATE VIEW orders AS SELECT * FROM o;",
            ),
            (
                "norowid.db",
                "CREATE TABLE orders (number TEXT PRIMARY KEY) WITHOUT ROWID;",
            ),
        ] {
            let path = dir.path().join(name);
            Connection::open(&path).unwrap().execute_batch(sql).unwrap();
            let error = open(&path, &ColumnNames::default(), true).err().unwrap();
            assert!(
                error.to_string().contains("has no rowid"),
                "{name}: {error}"
            );
        }
    }

    /// Creates a shop database with `schema`, writes back the result `result_of(row)` of every
    /// row, and returns the write-back's outcome and the two columns `query` then selects.
    fn write_back_all<T: rusqlite::types::FromSql>(
        schema: &str,
        result_of: impl Fn(u64) -> RowResult,
        query: &str,
    ) -> (Result<(), SourceError>, Vec<(String, T)>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.db");
        let connection = Connection::open(&path).unwrap();
        connection.execute_batch(schema).unwrap();
        let (mut source, sink) = open(&path, &ColumnNames::default(), false).unwrap();
        let mut sink = sink.unwrap();
        let mut finished = Vec::new();
        while let Some(row) = source.next_row().unwrap() {
            let result = result_of(row.row);
            finished.push(FinishedRow {
                source: row,
                result,
            });
        }
        sink.write(&finished).unwrap();
        let outcome = Box::new(sink).finish(true);
        let rows = connection
            .prepare(query)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (outcome, rows)
    }

    fn paid(_: u64) -> RowResult {
        RowResult::Synced {
            status: "PAID".into(),
        }
    }

    /// A shop's table may declare `sync_error NOT NULL`, and a shop's trigger may refuse a row:
    /// the other rows are still written, and the refused one is named.
    #[test]
    fn a_not_null_error_column_gets_empty_text_and_a_refused_row_does_not_stop_the_others() {
        let (outcome, got) = write_back_all::<String>(
            "CREATE TABLE orders (number TEXT PRIMARY KEY, amount TEXT,
                 payment_status TEXT NOT NULL DEFAULT '', sync_error TEXT NOT NULL DEFAULT '',
                 synced_at TEXT NOT NULL DEFAULT '');
             INSERT INTO orders (number, amount) VALUES ('A', '1'), ('B', '1'), ('C', '1');
             CREATE TRIGGER no_b BEFORE UPDATE ON orders WHEN old.number = 'B'
             BEGIN SELECT RAISE(ABORT, 'B is archived'); END;",
            |row| match row {
                3 => RowResult::Failed {
                    error: "row 3: bad".into(),
                },
                _ => paid(row),
            },
            "SELECT number, payment_status || '|' || sync_error FROM orders ORDER BY rowid",
        );
        let error = outcome.unwrap_err();
        assert!(
            matches!(&error, SourceError::RowsRefused { count: 1, first, .. } if first.contains("row 2: B is archived")),
            "{error}"
        );
        let row = |n: &str, s: &str, e: &str| (n.to_string(), format!("{s}|{e}"));
        assert_eq!(
            got,
            [
                row("A", "PAID", ""),
                row("B", "", ""),
                row("C", "", "row 3: bad")
            ]
        );
    }

    /// Found by review: a trigger that rolls back the whole transaction, and one that fails
    /// after the update was made.
    #[test]
    fn a_refusal_that_rolls_back_is_left_out_and_a_failed_trigger_after_the_update_is_not_a_refusal()
     {
        let (outcome, got) = write_back_all::<Option<String>>(
            "CREATE TABLE orders (number TEXT PRIMARY KEY, amount TEXT);
             INSERT INTO orders (number, amount) VALUES ('A', '1'), ('B', '1'), ('C', '1'), ('D', '1');
             CREATE TRIGGER b_rolls_back BEFORE UPDATE ON orders WHEN old.number = 'B'
             BEGIN SELECT RAISE(ROLLBACK, 'B is locked'); END;
             CREATE TRIGGER c_fails_after AFTER UPDATE ON orders WHEN old.number = 'C'
             BEGIN SELECT RAISE(FAIL, 'C is audited'); END;",
            paid,
            "SELECT number, payment_status FROM orders ORDER BY rowid",
        );
        let error = outcome.unwrap_err();
        assert!(
            matches!(&error, SourceError::RowsRefused { count: 1, first, .. } if first == "row 2: B is locked"),
            "{error}"
        );
        let paid = |n: &str| (n.to_string(), Some("PAID".to_string()));
        assert_eq!(got, [paid("A"), ("B".into(), None), paid("C"), paid("D")]);
    }

    /// A row whose status is written again only for its sync time: the time alone is updated,
    /// and a trigger that refuses that (even by rolling back) costs the row only its time.
    #[test]
    fn a_row_synced_again_gets_only_its_time_and_a_refusal_of_that_is_no_failure() {
        let (outcome, got) = write_back_all::<String>(
            "CREATE TABLE orders (number TEXT PRIMARY KEY, amount TEXT, payment_status TEXT,
                 sync_error TEXT, synced_at TEXT NOT NULL DEFAULT 'before');
             INSERT INTO orders (number, amount, payment_status) VALUES
                 ('A', '1', 'PAID'), ('B', '1', 'PAID'), ('C', '1', 'PAID');
             CREATE TRIGGER b_rolls_back BEFORE UPDATE ON orders WHEN old.number = 'B'
             BEGIN SELECT RAISE(ROLLBACK, 'B is locked'); END;
             CREATE TRIGGER no_status BEFORE UPDATE OF payment_status ON orders
             BEGIN SELECT RAISE(ABORT, 'statuses are written by hand'); END;",
            |_| RowResult::SyncedAgain {
                status: "PAID".into(),
            },
            "SELECT number, payment_status || '|' || (synced_at != 'before') FROM orders ORDER BY rowid",
        );
        outcome.unwrap();
        let row = |n: &str, new_time: bool| (n.to_string(), format!("PAID|{}", u8::from(new_time)));
        assert_eq!(got, [row("A", true), row("B", false), row("C", true)]);
    }

    #[test]
    fn reads_in_pages_and_writes_results_by_rowid() {
        let (_dir, path, connection) = shop_db();
        for i in 0..(PAGE_ROWS + 5) {
            connection
                .execute(
                    "INSERT INTO orders (number, amount, date) VALUES (?1, '1.50', '2026-01-02')",
                    [format!("N{i}")],
                )
                .unwrap();
        }
        let (mut source, sink) = open(&path, &ColumnNames::default(), false).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = source.next_row().unwrap() {
            rows.push(row);
        }
        assert_eq!(rows.len(), PAGE_ROWS + 5);
        let view = crate::order::RowView {
            record: &rows[3].record,
            layout: source.layout(),
        };
        assert_eq!(view.get(Field::Number), Some("N3"));
        assert_eq!(view.get(Field::Amount), Some("1.50"));
        let mut sink = sink.unwrap();
        let finished = vec![
            FinishedRow {
                source: rows[0].clone(),
                result: RowResult::Synced {
                    status: "PAID".into(),
                },
            },
            FinishedRow {
                source: rows[1].clone(),
                result: RowResult::Failed {
                    error: "row 2: nope".into(),
                },
            },
        ];
        sink.write(&finished).unwrap();
        Box::new(sink).finish(true).unwrap();
        let got: Vec<(Option<String>, Option<String>, bool)> = connection
            .prepare("SELECT payment_status, sync_error, synced_at IS NOT NULL FROM orders ORDER BY rowid LIMIT 3")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got[0], (Some("PAID".into()), None, true));
        assert_eq!(got[1], (None, Some("row 2: nope".into()), false));
        assert_eq!(got[2], (None, None, false));
    }

    #[test]
    fn the_write_back_commits_without_an_fsync_each_only_in_wal_mode() {
        for (mode, expected) in [("delete", 2), ("wal", 1)] {
            let (_dir, path, connection) = shop_db();
            connection
                .pragma_update(None, "journal_mode", mode)
                .unwrap();
            let (_, sink) = open(&path, &ColumnNames::default(), false).unwrap();
            // 1 is NORMAL, 2 FULL (SQLite's default).
            let synchronous: i64 = sink
                .unwrap()
                .connection
                .pragma_query_value(None, "synchronous", |row| row.get(0))
                .unwrap();
            assert_eq!(synchronous, expected, "{mode}");
        }
    }

    #[test]
    fn rows_read_into_recycled_memory_are_the_rows_read_afresh() {
        let (_dir, path, connection) = shop_db();
        for i in 0..(PAGE_ROWS * 2 + 3) {
            // Longer and shorter rows, NULLs and numbers among the text.
            let city = "Ö".repeat(i % 7 * 20);
            connection
                .execute(
                    "INSERT INTO orders (number, amount, billing_city, initial_dunning_level) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![
                        format!("R{i}"),
                        (i % 3 != 0).then(|| format!("{i}.50")),
                        city,
                        (i % 2 == 0).then_some(i as i64),
                    ],
                )
                .unwrap();
        }
        let read = |recycle: bool| {
            let (mut source, _) = open(&path, &ColumnNames::default(), true).unwrap();
            let mut records = Vec::new();
            while let Some(row) = source.next_row().unwrap() {
                records.push((row.row, row.record.clone()));
                if recycle {
                    source.recycle(row);
                }
            }
            records
        };
        let fresh = read(false);
        assert_eq!(fresh.len(), PAGE_ROWS * 2 + 3);
        assert_eq!(read(true), fresh);
    }

    #[test]
    fn a_row_is_found_again_by_the_rowid_it_was_read_with_and_a_deleted_one_is_gone() {
        let (_dir, path, connection) = shop_db();
        connection
            .execute_batch(
                "INSERT INTO orders (rowid, number, amount) VALUES (7, 'A', '1.00'), (9, 'B', '2.00'), (12, 'C', '3.00');",
            )
            .unwrap();
        let (mut source, _) = open(&path, &ColumnNames::default(), true).unwrap();
        let mut read = Vec::new();
        while let Some(row) = source.next_row().unwrap() {
            read.push((row.row, row.offset, row.record.clone()));
        }
        assert_eq!(
            read.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
            [(7, Some(7)), (9, Some(9)), (12, Some(12))]
        );
        connection
            .execute("DELETE FROM orders WHERE number = 'B'", [])
            .unwrap();
        let settings = SourceSettings {
            path: path.clone(),
            format: crate::cli::SourceFormat::Sqlite,
            delimiter: None,
            columns: ColumnNames::default(),
        };
        let mut patch = SqlitePatch::open(&settings).unwrap().unwrap();
        let again = patch.row_at(12).unwrap().unwrap();
        assert_eq!((again.row, &again.record), (12, &read[2].2));
        assert!(patch.row_at(9).unwrap().is_none(), "deleted meanwhile");
        assert!(patch.row_at(u64::MAX).unwrap().is_none());
    }

    #[test]
    fn text_that_is_not_utf8_fails_the_row_instead_of_being_altered() {
        let (_dir, path, connection) = shop_db();
        connection
            .execute_batch(
                "INSERT INTO orders (number, billing_city) VALUES ('N1', 'München');
                 INSERT INTO orders (number, billing_city) VALUES ('N2', CAST(X'4DFC6E6368656E' AS TEXT));",
            )
            .unwrap();
        let (mut source, _) = open(&path, &ColumnNames::default(), true).unwrap();
        let first = source.next_row().unwrap().unwrap();
        assert_eq!(first.defect, None);
        let second = source.next_row().unwrap().unwrap();
        assert_eq!(
            second.defect.map(|d| d.message).as_deref(),
            Some("row 2: billing_city is not valid UTF-8")
        );
        assert!(!second.record.iter().any(|v| v.contains('\u{fffd}')));
    }
}
