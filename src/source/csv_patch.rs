//! A CSV write-back that rewrites only the rows whose results changed and copies every other
//! byte of the file as it is.
//!
//! The full write-back reads, parses and writes every row again. On a nightly run of a large
//! export, where a few thousand of a million rows change, that second pass costs more than
//! everything else. When the send phase knows which rows may change (their byte offsets) and
//! the header already has both result columns, [`CsvPatch`] copies the file through, parses
//! only those rows (with the same `csv_core` parser the reader uses) and writes the ones whose
//! results differ. Line ends, quoting and empty lines of every other row stay exactly as they
//! were. The result is renamed over the file atomically, as in the full write-back.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};

use csv::ByteRecord;
use csv_core::ReadRecordResult;

use super::csv::{
    CsvSource, ResultColumns, replace_with_temp_file, temp_writer, write_with_results,
};
use super::sync_behind::SyncBehind;
use super::{FileIdentity, OrderSource, SourceError, SourceRow};
use crate::config::SourceSettings;

/// Copy buffers.
const BUFFER: usize = 256 * 1024;

/// The input copied in pieces of this size, each dropped from the page cache once copied.
const DROP_STEP: u64 = 16 << 20;

/// The raw bytes of the row last read, and where its fields start and end among them.
#[derive(Default)]
struct Held {
    /// From the end of the previous record up to and including this one's line end.
    bytes: Vec<u8>,
    /// Empty-line bytes before the record.
    lead: usize,
    /// Where the record's fields end (its line end follows).
    end: usize,
}

/// Rewrites chosen rows of a CSV file in a temporary copy, renamed over it at the end.
pub struct CsvPatch {
    source: CsvSource,
    columns: ResultColumns,
    input: BufReader<File>,
    output: BufWriter<SyncBehind>,
    /// Bytes of the input consumed so far (copied, or held).
    at: u64,
    /// The input's pages before this offset were dropped from the page cache (see
    /// [`CsvPatch::drop_behind`]).
    dropped: u64,
    /// The row last read, not yet copied or replaced.
    held: Option<Held>,
    parser: csv_core::Reader,
    /// Writes a replaced row with csv's quoting.
    writer: csv::WriterBuilder,
    original: std::fs::Metadata,
}

impl CsvPatch {
    /// Opens a CSV source for patching; `None` when it is not a CSV file, or its header lacks a
    /// result column (then every row gets a new field, and only the full write-back can add
    /// it). `read` is the identity of the file the send phase read.
    pub fn open(
        settings: &SourceSettings,
        read: &FileIdentity,
    ) -> Result<Option<CsvPatch>, SourceError> {
        if settings.format != crate::cli::SourceFormat::Csv {
            return Ok(None);
        }
        let (source, _) =
            super::csv::open(&settings.path, settings.delimiter, &settings.columns, true)?;
        let Some(columns) = source.result_columns() else {
            return Ok(None);
        };
        let path = source.path().to_path_buf();
        let io = |action| {
            let path = path.clone();
            move |source| SourceError::Io {
                path,
                action,
                source,
            }
        };
        let file = File::open(&path).map_err(io("opening"))?;
        let original = file.metadata().map_err(io("reading permissions"))?;
        if FileIdentity::of(&original) != *read || source.identity() != Some(read) {
            tracing::error!(source = %path.display(), "the source changed after it was read; not writing back");
            return Err(SourceError::Changed { path });
        }
        let dialect = super::csv::Dialect {
            delimiter: source.delimiter(),
            bom: false,
            crlf: false,
        };
        // The BOM and every line end come with the copied bytes.
        let temp = temp_writer(&path, dialect)?
            .into_inner()
            .map_err(|e| io("creating a temporary file beside the source")(e.into_error()))?;
        let delimiter = source.delimiter();
        Ok(Some(CsvPatch {
            source,
            columns,
            input: BufReader::with_capacity(BUFFER, file),
            output: BufWriter::with_capacity(BUFFER, temp),
            at: 0,
            dropped: 0,
            held: None,
            parser: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            writer: {
                let mut builder = csv::WriterBuilder::new();
                builder
                    .delimiter(delimiter)
                    .flexible(true)
                    .terminator(csv::Terminator::Any(b'\n'))
                    .buffer_capacity(1024);
                builder
            },
            original,
        }))
    }

    /// The source, for what it records in a row.
    pub fn source(&self) -> &dyn OrderSource {
        &self.source
    }

    /// Reads row `row`, which starts at byte `offset` (where the send phase found it; offsets
    /// must ascend). Every byte before it is copied; the row itself stays as it is unless
    /// [`CsvPatch::replace`] is called next.
    pub fn row_at(&mut self, row: u64, offset: u64) -> Result<SourceRow, SourceError> {
        self.release()?;
        if offset < self.at {
            return Err(self.changed());
        }
        let gap = offset - self.at;
        let copied = self.copy_input(gap)?;
        if copied < gap {
            return Err(self.changed());
        }
        let (held, record) = self.read_record()?;
        let mut source_row = SourceRow::from_csv(row, &record, self.columns.header_len);
        source_row.offset = Some(offset);
        self.held = Some(held);
        Ok(source_row)
    }

    /// Writes `row` (the one [`CsvPatch::row_at`] returned last) with these results in place
    /// of its original fields; its empty lines before and its line end stay as they were.
    pub fn replace(
        &mut self,
        row: &SourceRow,
        status: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), SourceError> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let mut writer = self.writer.from_writer(Vec::new());
        let fields = |i| row.field_bytes(i);
        let written = write_with_results(
            &mut writer,
            self.columns,
            row.field_count(),
            fields,
            status,
            error,
        )
        .and_then(|()| writer.into_inner().map_err(|e| e.into_error().into()));
        let record = match written {
            Ok(record) => record,
            Err(error) => {
                return Err(SourceError::Csv {
                    path: self.source.path().to_path_buf(),
                    message: format!("writing: {error}"),
                });
            }
        };
        // csv ends the record with `\n`; the row keeps its own line end.
        let record = record.strip_suffix(b"\n").unwrap_or(&record);
        let pieces = [&held.bytes[..held.lead], record, &held.bytes[held.end..]];
        for piece in pieces {
            self.output
                .write_all(piece)
                .map_err(|e| self.io("writing the new file", e))?;
        }
        Ok(())
    }

    /// Copies the rest of the file and, with `changed`, renames the copy over it.
    pub fn finish(mut self, changed: bool) -> Result<(), SourceError> {
        if !changed {
            // Dropping the temporary file removes it; the source stays as it is.
            return Ok(());
        }
        self.release()?;
        self.copy_input(u64::MAX)?;
        let path = self.source.path().to_path_buf();
        let behind = self.output.into_inner().map_err(|e| SourceError::Io {
            path: path.clone(),
            action: "writing the new file",
            source: e.into_error(),
        })?;
        replace_with_temp_file(behind, &path, &self.original, true)
    }

    /// Copies up to `limit` bytes of the input as they are (fewer at its end); returns how
    /// many.
    fn copy_input(&mut self, limit: u64) -> Result<u64, SourceError> {
        // The rows written so far go first.
        self.output
            .flush()
            .map_err(|e| self.io("writing the new file", e))?;
        let mut copied = 0;
        while copied < limit {
            let piece = (limit - copied).min(DROP_STEP);
            let n = self
                .output
                .get_mut()
                .copy_from(&mut self.input, piece)
                .map_err(|e| self.io("copying", e))?;
            copied += n;
            self.at += n;
            self.drop_behind();
            if n < piece {
                break;
            }
        }
        Ok(copied)
    }

    /// Drops the input's pages copied so far from the page cache, every [`DROP_STEP`].
    ///
    /// Nothing reads them again: the copy is renamed over the file. The old file's pages are
    /// freed when kksync closes it, which came last in the run with nothing beside it: the
    /// patch took 76-123 ms to finish for the 384 MB of a million orders, most of it freeing
    /// cached pages and their buffer heads. Dropped while the copy goes on, they are freed
    /// while the other stages still run; finishing took 51-64 ms (measured alternating with a
    /// build without this; what is left is the part of the file not dropped yet and freeing
    /// its blocks). It is advice: an error is ignored, and the kernel writes dirty pages (a
    /// file just exported) instead of dropping them.
    fn drop_behind(&mut self) {
        let upto = self.at - self.at % 4096;
        if let Some(len) = std::num::NonZeroU64::new(upto.saturating_sub(self.dropped))
            && len.get() >= DROP_STEP
        {
            let advised = rustix::fs::fadvise(
                self.input.get_ref(),
                self.dropped,
                Some(len),
                rustix::fs::Advice::DontNeed,
            );
            if let Err(error) = advised {
                tracing::debug!(%error, "the copied source stays in the page cache");
            }
            self.dropped = upto;
        }
    }

    /// Copies the held row as it was.
    fn release(&mut self) -> Result<(), SourceError> {
        if let Some(held) = self.held.take() {
            self.output
                .write_all(&held.bytes)
                .map_err(|e| self.io("writing the new file", e))?;
        }
        Ok(())
    }

    /// Parses one record from the input, keeping its raw bytes.
    fn read_record(&mut self) -> Result<(Held, ByteRecord), SourceError> {
        self.parser.reset();
        // csv_core drops a byte order mark at the start of what it reads first; here that is
        // a row, whose leading bytes the first pass kept. An empty line read first (skipped
        // like any other) makes the row's first bytes its own.
        let _ = self.parser.read_record(b"\n", &mut [], &mut []);
        let mut held = Held::default();
        let mut fields = vec![0u8; 1024];
        let mut ends = vec![0usize; 64];
        let (mut fields_len, mut ends_len) = (0, 0);
        loop {
            let input = match self.input.fill_buf() {
                Ok(input) => input,
                Err(error) => return Err(self.io("reading", error)),
            };
            let (result, read, written, ended) =
                self.parser
                    .read_record(input, &mut fields[fields_len..], &mut ends[ends_len..]);
            held.bytes.extend_from_slice(&input[..read]);
            self.input.consume(read);
            self.at += read as u64;
            fields_len += written;
            ends_len += ended;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => fields.resize(fields.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
                ReadRecordResult::Record => break,
                ReadRecordResult::End => return Err(self.changed()),
            }
        }
        held.lead = held
            .bytes
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        // The record's own line end is its last byte, unless the file ends without one.
        held.end = match held.bytes.last() {
            Some(b'\r' | b'\n') if held.bytes.len() > held.lead => held.bytes.len() - 1,
            _ => held.bytes.len(),
        };
        let mut record = ByteRecord::with_capacity(fields_len, ends_len);
        let mut start = 0;
        for &end in &ends[..ends_len] {
            record.push_field(&fields[start..end]);
            start = end;
        }
        Ok((held, record))
    }

    fn changed(&self) -> SourceError {
        tracing::error!(source = %self.source.path().display(), "the source changed after it was read; not writing back");
        SourceError::Changed {
            path: self.source.path().to_path_buf(),
        }
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> SourceError {
        SourceError::Io {
            path: self.source.path().to_path_buf(),
            action,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::SourceFormat;

    fn settings(path: &std::path::Path) -> SourceSettings {
        SourceSettings {
            path: path.to_path_buf(),
            format: SourceFormat::Csv,
            delimiter: None,
            columns: Default::default(),
        }
    }

    /// Writes `original`, reads it as the send phase does, then patches the rows at these
    /// indexes (0 = first row after the header) with these results. The file afterwards.
    fn patched(original: &[u8], changes: &[(usize, Option<&str>, Option<&str>)]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.csv");
        std::fs::write(&path, original).unwrap();
        let settings = settings(&path);
        let (mut source, _) =
            super::super::csv::open(&path, None, &settings.columns, true).unwrap();
        let identity = source.identity().cloned().unwrap();
        let mut rows = Vec::new();
        while let Some(row) = source.next_row().unwrap() {
            rows.push(row);
        }
        let mut patch = CsvPatch::open(&settings, &identity).unwrap().unwrap();
        for &(index, status, error) in changes {
            let read = &rows[index];
            let row = patch.row_at(read.row, read.offset.unwrap()).unwrap();
            assert_eq!(row.record, read.record);
            assert_eq!(row.row, read.row);
            patch.replace(&row, status, error).unwrap();
        }
        patch.finish(!changes.is_empty()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn only_the_chosen_rows_change_and_every_other_byte_stays() {
        let original = "number,x,paymentStatus,syncError\nA,1,,\nB,\"two\nlines\",UNPAID,\n\n\nC,3,,\r\nD,4\nE,\"5\",,";
        let expected = "number,x,paymentStatus,syncError\nA,1,,\nB,\"two\nlines\",PAID,\n\n\nC,3,,\r\nD,4,UNPAID,\nE,5,,row 8: bad";
        let out = patched(
            original.as_bytes(),
            &[
                (1, Some("PAID"), Some("")),
                (3, Some("UNPAID"), Some("")),
                (4, None, Some("row 8: bad")),
            ],
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn crlf_bom_semicolons_and_no_final_line_end() {
        let original = "\u{feff}number;paymentStatus;syncError\r\nA;;\r\n\r\nB;;\r\nC;;";
        let expected =
            "\u{feff}number;paymentStatus;syncError\r\nA;UNPAID;\r\n\r\nB;;\r\nC;PAID;\"x;y\"";
        let out = patched(
            original.as_bytes(),
            &[
                (0, Some("UNPAID"), Some("")),
                (2, Some("PAID"), Some("x;y")),
            ],
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        // The first and the last row, each alone.
        let out = patched(original.as_bytes(), &[(0, Some("PAID"), Some(""))]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            original.replacen("A;;", "A;PAID;", 1)
        );
        let out = patched(original.as_bytes(), &[(2, Some("PAID"), Some(""))]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            original.replacen("C;;", "C;PAID;", 1)
        );
    }

    #[test]
    fn a_row_starting_with_a_byte_order_mark_keeps_it() {
        // Files joined from several exports carry a BOM before a data row.
        let original = b"number,paymentStatus,syncError\nA,,\n\xEF\xBB\xBFB,,\nC,,\n";
        let out = patched(original, &[(1, Some("PAID"), Some(""))]);
        assert_eq!(
            out,
            b"number,paymentStatus,syncError\nA,,\n\xEF\xBB\xBFB,PAID,\nC,,\n"
        );
    }

    #[test]
    fn latin1_bytes_are_kept_in_a_replaced_row() {
        let original = b"number,name,paymentStatus,syncError\nA,M\xfcller,,\nB,x,,\n";
        let out = patched(original, &[(0, Some("PAID"), Some(""))]);
        assert_eq!(
            out,
            b"number,name,paymentStatus,syncError\nA,M\xfcller,PAID,\nB,x,,\n"
        );
    }

    #[test]
    fn gaps_and_a_tail_longer_than_a_copy_step_are_copied_whole() {
        // 50 MB: the gap before the second change and the tail after it each span more than
        // one piece of the copy (`DROP_STEP`).
        let pad = "x".repeat(990);
        let line = |i: usize, status: &str| format!("A{i:06},{pad},{status},\n");
        let rows = 50_000;
        let changed = [3, 30_000];
        let mut original = String::from("number,pad,paymentStatus,syncError\n");
        let mut expected = original.clone();
        for i in 0..rows {
            original.push_str(&line(i, ""));
            let status = if changed.contains(&i) { "PAID" } else { "" };
            expected.push_str(&line(i, status));
        }
        let length = line(0, "").len() as u64;
        assert!((30_000 - 3) * length > DROP_STEP && (rows - 30_000) as u64 * length > DROP_STEP);
        let changes: Vec<_> = changed.iter().map(|&i| (i, Some("PAID"), None)).collect();
        assert!(patched(original.as_bytes(), &changes) == expected.as_bytes());
    }

    #[test]
    fn nothing_changed_leaves_the_file_alone() {
        let original = b"number,paymentStatus,syncError\n\"A\",,\n";
        assert_eq!(patched(original, &[]), original);
    }

    #[test]
    fn a_header_without_result_columns_or_a_file_changed_since_is_not_patched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.csv");
        std::fs::write(&path, "number,paymentStatus\nA,\n").unwrap();
        let (source, _) = super::super::csv::open(&path, None, &Default::default(), true).unwrap();
        let identity = source.identity().cloned().unwrap();
        assert!(
            CsvPatch::open(&settings(&path), &identity)
                .unwrap()
                .is_none()
        );

        std::fs::write(&path, "number,paymentStatus,syncError\nA,,\n").unwrap();
        let (source, _) = super::super::csv::open(&path, None, &Default::default(), true).unwrap();
        let identity = source.identity().cloned().unwrap();
        std::fs::write(&path, "number,paymentStatus,syncError\nB,,\nA,,\n").unwrap();
        assert!(matches!(
            CsvPatch::open(&settings(&path), &identity),
            Err(SourceError::Changed { .. })
        ));
    }
}
