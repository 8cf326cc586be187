//! Refunds in the `refunds` table of a SQLite database (`sql/refunds.sql`): read in rowid
//! pages, results written in one `BEGIN IMMEDIATE` transaction per batch with a busy timeout,
//! so a shop writing to the same database at the same time does not fail the run.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::{FinishedRow, RefundSink, RefundSource, RowUpdate, missing_columns_message};
use crate::refunds::model::{Column, Layout, ResultColumn};
use crate::source::sqlite::{RowidPages, connect, sql_error};
use crate::source::{SourceError, SourceRow};

/// The schema `kksync init-db` creates for refunds.
pub const SCHEMA: &str = include_str!("../../../sql/refunds.sql");
const TABLE: &str = "refunds";
const PAGE_ROWS: usize = 500;

/// Reads the `refunds` table in pages of rowids.
pub struct SqliteRefunds {
    pages: RowidPages,
    layout: Layout,
}

/// Writes results with one transaction per batch.
pub struct SqliteRefundSink {
    path: PathBuf,
    connection: Connection,
}

fn table_columns(path: &Path, connection: &Connection) -> Result<Vec<String>, SourceError> {
    let mut statement = connection
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .map_err(sql_error(path, "reading the table"))?;
    statement
        .query_map([TABLE], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(sql_error(path, "reading the table's columns"))
}

fn add_result_columns(path: &Path, connection: &Connection) -> Result<(), SourceError> {
    let existing = table_columns(path, connection)?;
    for column in ResultColumn::ALL {
        let name = column.sql_name();
        if !existing.iter().any(|c| c.eq_ignore_ascii_case(name)) {
            connection
                .execute_batch(&format!("ALTER TABLE {TABLE} ADD COLUMN {name} TEXT"))
                .map_err(sql_error(path, "adding a result column"))?;
        }
    }
    Ok(())
}

/// Creates the `refunds` table if it is missing and adds missing result columns to an existing
/// one. Safe to run again.
pub fn init_db(path: &Path) -> Result<(), SourceError> {
    let connection = connect(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    connection
        .execute_batch(SCHEMA)
        .map_err(sql_error(path, "creating the refunds table"))?;
    add_result_columns(path, &connection)
}

pub(super) fn open(
    path: &Path,
    read_only: bool,
) -> Result<(SqliteRefunds, Option<SqliteRefundSink>), SourceError> {
    if !path.exists() {
        return Err(SourceError::Unusable {
            path: path.to_path_buf(),
            message: "no such database (create one with `kksync init-db PATH`)".into(),
        });
    }
    let connection = connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let columns = table_columns(path, &connection)?;
    if columns.is_empty() {
        return Err(SourceError::Unusable {
            path: path.to_path_buf(),
            message: format!("no `{TABLE}` table (create it with `kksync init-db PATH`)"),
        });
    }
    let sink = if read_only {
        None
    } else {
        let writer = connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        add_result_columns(path, &writer)?;
        Some(SqliteRefundSink {
            path: path.to_path_buf(),
            connection: writer,
        })
    };
    // Select the known columns that exist (matched like CSV headers); others are the shop's.
    let columns = table_columns(path, &connection)?;
    let known = |wanted: &str| {
        let wanted = crate::refunds::model::normalize_header(wanted);
        columns
            .iter()
            .find(|c| crate::refunds::model::normalize_header(c) == wanted)
            .cloned()
    };
    // Result columns are matched by their exact name: they are the ones kksync writes to.
    let result = |name: &str| {
        columns
            .iter()
            .find(|c| c.eq_ignore_ascii_case(name))
            .cloned()
    };
    let selected: Vec<String> = Column::ALL
        .iter()
        .filter_map(|c| known(c.sql_name()))
        .chain(
            ResultColumn::ALL
                .iter()
                .filter_map(|c| result(c.sql_name())),
        )
        .collect();
    let layout = Layout::from_headers(selected.iter().map(String::as_str));
    let missing: Vec<&str> = layout.missing().iter().map(|c| c.sql_name()).collect();
    if !missing.is_empty() {
        return Err(SourceError::Unusable {
            path: path.to_path_buf(),
            message: missing_columns_message(&missing, &columns),
        });
    }
    let columns: Vec<&str> = selected.iter().map(String::as_str).collect();
    let source = SqliteRefunds {
        pages: RowidPages::new(
            path,
            connection,
            TABLE,
            &columns,
            PAGE_ROWS,
            "reading refunds",
        ),
        layout,
    };
    Ok((source, sink))
}

impl RefundSource for SqliteRefunds {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn next_row(&mut self) -> Result<Option<SourceRow>, SourceError> {
        self.pages.next_row()
    }
}

impl RefundSink for SqliteRefundSink {
    fn write(&mut self, rows: &[FinishedRow]) -> Result<(), SourceError> {
        if rows.iter().all(|r| r.update == RowUpdate::Untouched) {
            return Ok(());
        }
        let path = self.path.clone();
        // IMMEDIATE takes the write lock up front (waiting up to the busy timeout) instead of
        // failing half-way when a shop transaction holds it.
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error(&path, "starting the write-back"))?;
        {
            let mut refunded = tx
                .prepare_cached(
                    "UPDATE refunds SET refund_id = ?1, refund_reference_number = ?2, refund_status = ?3,
                     refund_error = NULL, refund_sent_at = ?4 WHERE rowid = ?5",
                )
                .map_err(sql_error(&path, "preparing the write-back"))?;
            let mut failed = tx
                .prepare_cached("UPDATE refunds SET refund_error = ?1 WHERE rowid = ?2")
                .map_err(sql_error(&path, "preparing the write-back"))?;
            for finished in rows {
                let rowid = i64::try_from(finished.source.row).unwrap_or(i64::MAX);
                let empty_to_null = |s: &str| (!s.is_empty()).then(|| s.to_string());
                match &finished.update {
                    RowUpdate::Refund(c) => refunded.execute(params![
                        c.refund_id,
                        empty_to_null(&c.reference_number),
                        c.status,
                        empty_to_null(&c.sent_at),
                        rowid
                    ]),
                    RowUpdate::Failed(error) => failed.execute(params![error, rowid]),
                    RowUpdate::Untouched => Ok(0),
                }
                .map_err(sql_error(&path, "writing a result"))?;
            }
        }
        tx.commit()
            .map_err(sql_error(&path, "committing the write-back"))
    }

    fn finish(self: Box<Self>, _changed: bool) -> Result<(), SourceError> {
        // Every batch was committed as it was written.
        self.connection
            .close()
            .map_err(|(_, e)| sql_error(&self.path, "closing the database")(e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::RefundColumns;
    use super::*;

    #[test]
    fn init_db_is_idempotent_and_results_are_written_by_rowid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.db");
        init_db(&path).unwrap();
        init_db(&path).unwrap();
        let shop = Connection::open(&path).unwrap();
        for i in 0..3 {
            shop.execute(
                "INSERT INTO refunds (order_number, external_reference, amount, currency, provider)
                 VALUES (?1, ?2, '1,50', 'EUR', 'komfortkasse')",
                [format!("A-{i}"), format!("RMA-{i}")],
            )
            .unwrap();
        }
        let (mut source, sink) = open(&path, false).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = source.next_row().unwrap() {
            rows.push(row);
        }
        assert_eq!(rows.len(), 3);
        let view = crate::refunds::model::RowView {
            record: &rows[1].record,
            layout: source.layout(),
        };
        assert_eq!(view.get(Column::ExternalReference), Some("RMA-1"));
        assert_eq!(view.get(Column::Amount), Some("1,50"));
        let mut sink = sink.unwrap();
        sink.write(&[
            FinishedRow {
                source: rows[0].clone(),
                update: RowUpdate::Refund(RefundColumns {
                    refund_id: "9".into(),
                    reference_number: String::new(),
                    status: "REFUNDED".into(),
                    sent_at: "2026-01-01T00:00:00Z".into(),
                }),
            },
            FinishedRow {
                source: rows[1].clone(),
                update: RowUpdate::Failed("nope".into()),
            },
        ])
        .unwrap();
        Box::new(sink).finish(true).unwrap();
        type Results = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let got: Vec<Results> = shop
            .prepare("SELECT refund_id, refund_reference_number, refund_status, refund_error FROM refunds ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            got[0],
            (Some("9".into()), None, Some("REFUNDED".into()), None)
        );
        assert_eq!(got[1], (None, None, None, Some("nope".into())));
        assert_eq!(got[2], (None, None, None, None));
    }

    #[test]
    fn a_table_without_required_columns_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE refunds (id INTEGER, amount TEXT)")
            .unwrap();
        let error = open(&path, true).err().unwrap().to_string();
        assert!(error.contains("`external_reference`"), "{error}");
    }
}
