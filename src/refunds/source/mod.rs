//! Where refunds come from and where their results go back to: a CSV file or the `refunds`
//! table of a SQLite database (`sql/refunds.sql`).
//!
//! The write-back guarantees are those of the order sync: a CSV keeps every other byte, column
//! and row and is replaced atomically (temporary file, fsync, rename, fsync of the folder); a
//! SQLite table is updated in one `BEGIN IMMEDIATE` transaction per batch with a busy timeout.

mod csv;
mod sqlite;

use std::path::Path;

use crate::cli::SourceFormat;
use crate::source::{SourceError, SourceRow};

use super::model::Layout;

pub use self::sqlite::{SCHEMA, init_db};

/// The result columns of a refund the provider confirmed; the error column is cleared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RefundColumns {
    /// The provider's refund id (AfterPay: the refund numbers, `|`-separated).
    pub refund_id: String,
    /// Komfortkasse's `referenceNumber` (`KKBT...`); empty for the other providers.
    pub reference_number: String,
    /// The refund's status (Komfortkasse's own; `REFUNDED` for AfterPay and Ratepay).
    pub status: String,
    /// When the refund was sent (RFC 3339, UTC).
    pub sent_at: String,
}

/// What to write into a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowUpdate {
    /// Nothing: the row keeps every value.
    Untouched,
    /// The refund's result columns, with an empty error.
    Refund(RefundColumns),
    /// Only the error column; the other result columns keep their values.
    Failed(String),
}

/// A row with what to write into it.
#[derive(Debug, Clone)]
pub struct FinishedRow {
    /// The row as read.
    pub source: SourceRow,
    /// Its update.
    pub update: RowUpdate,
}

/// Reads refunds row by row.
pub trait RefundSource: Send {
    /// Which column is which.
    fn layout(&self) -> &Layout;
    /// The next row, or `None` at the end.
    fn next_row(&mut self) -> Result<Option<SourceRow>, SourceError>;
    /// Empty lines after the last row (CSV), known once `next_row` returned `None`.
    fn trailing_blank_lines(&self) -> u64 {
        0
    }
}

/// Writes results back, batch by batch, in the order the rows were read.
pub trait RefundSink: Send {
    /// Writes the updates of consecutive rows.
    fn write(&mut self, rows: &[FinishedRow]) -> Result<(), SourceError>;
    /// Writes the empty lines that followed the last row.
    fn write_trailing_blank_lines(&mut self, _lines: u64) -> Result<(), SourceError> {
        Ok(())
    }
    /// Completes the write-back. With `changed == false` a CSV is left byte-identical.
    fn finish(self: Box<Self>, changed: bool) -> Result<(), SourceError>;
}

/// A source opened for reading and, unless read-only, for write-back.
pub type Opened = (Box<dyn RefundSource>, Option<Box<dyn RefundSink>>);

/// Opens a refunds source.
pub fn open(
    path: &Path,
    format: SourceFormat,
    delimiter: Option<u8>,
    read_only: bool,
) -> Result<Opened, SourceError> {
    match format {
        SourceFormat::Csv => {
            let (source, sink) = self::csv::open(path, delimiter, read_only)?;
            Ok((
                Box::new(source),
                sink.map(|s| Box::new(s) as Box<dyn RefundSink>),
            ))
        }
        SourceFormat::Sqlite => {
            let (source, sink) = self::sqlite::open(path, read_only)?;
            Ok((
                Box::new(source),
                sink.map(|s| Box::new(s) as Box<dyn RefundSink>),
            ))
        }
    }
}

/// The message for a source without some required columns.
fn missing_columns_message(missing: &[&str], found: &[String]) -> String {
    format!(
        "no {} column (found: {}); see README \"Refunds\" for the columns",
        missing
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", "),
        found.join(", ")
    )
}
