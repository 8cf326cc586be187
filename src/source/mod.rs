//! Where orders come from and where results go back to.
//!
//! A source is read row by row ([`OrderSource`]) and its results are written back batch by
//! batch, in the same order ([`ResultSink`]). CSV and SQLite differ only behind these two traits.

pub(crate) mod csv;
pub(crate) mod csv_patch;
pub(crate) mod csv_records;
mod direct;
pub(crate) mod last_read;
pub(crate) mod record;
pub(crate) mod sqlite;
pub(crate) mod sync_behind;

use std::path::PathBuf;

use ::csv::ByteRecord;

use self::csv_records::RawRecord;

use crate::cli::SourceFormat;
use crate::config::SourceSettings;
use crate::order::Layout;

pub use self::record::TextRecord;
pub use self::sqlite::init_db;

/// Reading or writing the source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be opened, read or written.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CSV is malformed beyond a single row.
    #[error("{path}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A SQLite error.
    #[error("{path}: {action}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// The file was replaced or modified by someone else during the run.
    #[error(
        "{path}: the source changed during the run; nothing was overwritten; the statuses are kept in the state store and the next run writes them back"
    )]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The database refused to store the results of some rows (a constraint or a trigger of
    /// the shop's); every other row's result was written.
    #[error(
        "{path}: the database refused the results of {count} row(s), all other rows were written ({first}); their statuses are kept in the state store, and each run tries them again"
    )]
    RowsRefused {
        /// The database.
        path: PathBuf,
        /// How many rows.
        count: usize,
        /// The first few, with SQLite's message.
        first: String,
    },
    /// The source lacks something kksync needs.
    #[error("{path}: {message}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
}

/// What tells a file apart from the one that replaced it or a modified version of it: device,
/// inode, length and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileIdentity {
    /// The file's length when the identity was taken.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// The identity of the file `metadata` describes.
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let (device, inode) = {
            use std::os::unix::fs::MetadataExt;
            (metadata.dev(), metadata.ino())
        };
        #[cfg(not(unix))]
        let (device, inode) = (0, 0);
        FileIdentity {
            device,
            inode,
            len: metadata.len(),
            modified: metadata.modified().ok(),
        }
    }
}

/// What makes a row unusable as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defect {
    /// The text for `syncError`, naming the row.
    pub message: String,
    /// The reason the summary groups it under.
    pub reason: &'static str,
}

/// One row of the source, as read.
#[derive(Debug, Clone)]
pub struct SourceRow {
    /// The row's number in error messages (CSV: spreadsheet row with the header as row 1;
    /// SQLite: rowid). SQLite also uses it to write the result back.
    pub row: u64,
    /// The values as text, one per column of the source's layout.
    pub record: TextRecord,
    /// The original bytes when the row was not valid UTF-8 (it was decoded as Latin-1 for
    /// validation); write-back uses these so the file keeps its bytes.
    pub raw: Option<ByteRecord>,
    /// A problem that makes the row unusable as a whole (e.g. too many fields).
    pub defect: Option<Defect>,
    /// Empty lines right before this row (CSV), which the write-back keeps.
    pub blank_lines_before: u64,
    /// Where a write-back finds the row again to rewrite it alone: CSV, where it starts in the
    /// file (the end of the previous record, [`csv_patch`]); SQLite, its rowid
    /// (`sqlite::SqlitePatch`).
    pub offset: Option<u64>,
    /// [`crate::order::row_fingerprint`] of the row, when the source knows it already.
    pub row_fingerprint: Option<u64>,
    /// The row's bytes are those of a row the last run read, and `record` holds only its
    /// number and result columns (every other field empty): [`OrderSource::full_row`] reads
    /// it whole (see `last_read`).
    pub unparsed: bool,
}

impl SourceRow {
    /// CSV row `row` from its bytes, checked against the header's width.
    pub(crate) fn from_csv(row: u64, bytes: &ByteRecord, header_len: usize) -> SourceRow {
        let mut record = TextRecord::default();
        let utf8 = record.set_utf8(bytes);
        SourceRow::from_fields(row, bytes.len(), header_len, record, utf8, || bytes.clone())
    }

    /// As [`SourceRow::from_csv`], from the fields the reader parsed, in the memory of `record`
    /// (a row read before).
    pub(crate) fn from_raw_into(
        row: u64,
        raw: &RawRecord,
        header_len: usize,
        mut record: TextRecord,
    ) -> SourceRow {
        let utf8 = record.set_utf8_fields(raw.as_slice(), raw.ends().iter().copied());
        SourceRow::from_fields(row, raw.len(), header_len, record, utf8, || {
            raw.to_byte_record()
        })
    }

    /// A row of `fields` fields whose text `record` holds when they were `utf8`; otherwise
    /// their `bytes` are read as Latin-1.
    fn from_fields(
        row: u64,
        fields: usize,
        header_len: usize,
        record: TextRecord,
        utf8: bool,
        bytes: impl FnOnce() -> ByteRecord,
    ) -> SourceRow {
        let defect = (fields > header_len).then(|| Defect {
            message: format!(
                "row {row}: has {fields} fields but the header has {header_len}; check the delimiter and quoting",
            ),
            reason: "row has more fields than the header",
        });
        let (record, raw) = match utf8 {
            true => (record, None),
            // Not UTF-8: most likely a Latin-1 export. Validate a Latin-1 reading, but keep
            // the original bytes for write-back.
            false => {
                let bytes = bytes();
                (TextRecord::from_latin1(&bytes), Some(bytes))
            }
        };
        SourceRow {
            row,
            record,
            raw,
            defect,
            blank_lines_before: 0,
            offset: None,
            row_fingerprint: None,
            unparsed: false,
        }
    }

    /// How many fields the row has.
    pub(crate) fn field_count(&self) -> usize {
        self.record.len()
    }

    /// Field `index` as it is to be written back: the original bytes.
    pub(crate) fn field_bytes(&self, index: usize) -> Option<&[u8]> {
        match &self.raw {
            Some(raw) => raw.get(index),
            None => self.record.get(index).map(str::as_bytes),
        }
    }

    /// The row's order number, unless the row is defective as a whole or names none.
    pub fn number<'r>(&'r self, layout: &'r Layout) -> Option<&'r str> {
        if self.defect.is_some() {
            return None;
        }
        crate::order::RowView {
            record: &self.record,
            layout,
        }
        .get(crate::order::Field::Number)
    }
}

/// What became of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowResult {
    /// The API stored the order and reported this payment status.
    Synced {
        /// `paymentStatus` as the API sent it.
        status: String,
    },
    /// The API stored the order again in this run and reported the status the source records
    /// already: only a source that records when a row was synced has something to write.
    SyncedAgain {
        /// `paymentStatus` as the API sent it.
        status: String,
    },
    /// The row was not stored: invalid, rejected by the API, or given up on.
    Failed {
        /// The message written to `syncError`.
        error: String,
    },
    /// Nothing was done (the run stopped before this row); write-back keeps the row as it was.
    Untouched,
}

/// A row with its result, ready to be written back.
#[derive(Debug, Clone)]
pub struct FinishedRow {
    /// The row as read.
    pub source: SourceRow,
    /// Its result.
    pub result: RowResult,
}

/// Reads orders row by row, with constant memory.
pub trait OrderSource: Send {
    /// Which column is which field.
    fn layout(&self) -> &Layout;
    /// Where the payment status and the error are in a row, if the source has them.
    fn result_indexes(&self) -> (Option<usize>, Option<usize>);
    /// Whether the source records when a row was last synced (a SQLite source's `synced_at`):
    /// then a row the API accepted again in this run is written back even when its status
    /// stayed the same, to record the new time.
    fn records_sync_time(&self) -> bool {
        false
    }
    /// The payment status already recorded for this row by an earlier run, if any.
    fn previous_status<'r>(&self, record: &'r TextRecord) -> Option<&'r str> {
        recorded(record, self.result_indexes().0)
    }
    /// The `syncError` already recorded for this row, if any.
    fn previous_error<'r>(&self, record: &'r TextRecord) -> Option<&'r str> {
        recorded(record, self.result_indexes().1)
    }
    /// The next row, or `None` at the end.
    fn next_row(&mut self) -> Result<Option<SourceRow>, SourceError>;
    /// Reads the rows of the file as they were last read from the index at `path` (`read`),
    /// handing out unchanged ones unparsed ([`SourceRow::unparsed`]), and writes this run's
    /// index there (`write`). A source without one (SQLite) reads every row.
    fn use_row_index(&mut self, _path: &std::path::Path, _read: bool, _write: bool) {}
    /// `row`, the last one [`OrderSource::next_row`] gave out, with every field: read now if it
    /// was handed out unparsed.
    fn full_row(&mut self, row: SourceRow) -> Result<SourceRow, SourceError> {
        Ok(row)
    }

    /// Takes back a row [`OrderSource::next_row`] gave out and is done with, so that the next
    /// one may reuse its memory (two allocations a row fewer, a million times a run).
    fn recycle(&mut self, _row: SourceRow) {}
    /// A guess at the total number of rows, once some have been read (for sizing memory once
    /// instead of growing it step by step).
    fn estimated_rows(&self, _rows_read: u64) -> Option<u64> {
        None
    }
    /// Empty lines after the last row (CSV), known once `next_row` returned `None`.
    fn trailing_blank_lines(&self) -> u64 {
        0
    }
    /// The identity of the file as it was opened, for sources that are rewritten whole (CSV):
    /// the write-back refuses to replace a file that has changed since.
    fn identity(&self) -> Option<&FileIdentity> {
        None
    }
}

/// The trimmed value at `index`, unless empty.
fn recorded(record: &TextRecord, index: Option<usize>) -> Option<&str> {
    let value = record.get(index?)?.trim();
    (!value.is_empty()).then_some(value)
}

/// Writes results back, batch by batch, in the order the rows were read.
pub trait ResultSink: Send {
    /// Writes the results of consecutive rows.
    fn write(&mut self, rows: &[FinishedRow]) -> Result<(), SourceError>;
    /// Writes the empty lines that followed the last row.
    fn write_trailing_blank_lines(&mut self, _lines: u64) -> Result<(), SourceError> {
        Ok(())
    }
    /// Completes the write-back. With `changed == false` nothing was learnt, and a CSV source
    /// is left byte-identical.
    fn finish(self: Box<Self>, changed: bool) -> Result<(), SourceError>;
}

/// A source opened for reading, and for write-back unless it was opened read-only.
pub type Opened = (Box<dyn OrderSource>, Option<Box<dyn ResultSink>>);

/// Opens the source for reading and, unless `read_only`, for write-back.
pub fn open(settings: &SourceSettings, read_only: bool) -> Result<Opened, SourceError> {
    match settings.format {
        SourceFormat::Csv => {
            let (source, sink) = self::csv::open(
                &settings.path,
                settings.delimiter,
                &settings.columns,
                read_only,
            )?;
            Ok((
                Box::new(source),
                sink.map(|s| Box::new(s) as Box<dyn ResultSink>),
            ))
        }
        SourceFormat::Sqlite => {
            let (source, sink) = self::sqlite::open(&settings.path, &settings.columns, read_only)?;
            Ok((
                Box::new(source),
                sink.map(|s| Box::new(s) as Box<dyn ResultSink>),
            ))
        }
    }
}
