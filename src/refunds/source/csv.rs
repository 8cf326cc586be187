//! Refunds in a CSV file: delimiter and BOM detection, Latin-1 fallback, and an atomic rewrite
//! that keeps every column, row and value, adding the five result columns where missing.
//! The dialect sniffing and the rename/fsync steps are the order sync's (`crate::source::csv`).

use std::fs::File;
use std::path::{Path, PathBuf};

use csv::ByteRecord;

use super::{FinishedRow, RefundSink, RefundSource, RowUpdate, missing_columns_message};
use crate::refunds::model::{Layout, ResultColumn};
use crate::source::sync_behind::SyncBehind;
use crate::source::{FileIdentity, SourceError, SourceRow};

use crate::source::csv::{
    Dialect, check_quotes_closed, read_header, repeated_column, replace_with_temp, sniff,
    strip_bom, temp_writer, write_blank_lines,
};
use crate::source::csv_records::{Next, RawRecord, Records};

/// Reads a refunds CSV row by row.
pub struct CsvRefunds {
    path: PathBuf,
    records: Records,
    layout: Layout,
    header_len: usize,
    next_row: u64,
    identity: FileIdentity,
    delimiter: u8,
    /// Empty lines after the last row (kept on rewrite), once the end was reached.
    trailing_blank_lines: u64,
}

/// Where a result column sits: in the original header, or appended after it.
#[derive(Debug, Clone, Copy)]
enum Place {
    Existing(usize),
    Appended(usize),
}

/// Writes the CSV into a temporary file beside it, renamed over it at the end.
pub struct CsvRefundSink {
    path: PathBuf,
    writer: csv::Writer<SyncBehind>,
    header_len: usize,
    places: Vec<Place>,
    appended: usize,
    /// The source as it was opened: its identity, permissions and owner.
    original: std::fs::Metadata,
    /// Lines end in CRLF.
    crlf: bool,
}

pub(super) fn open(
    path: &Path,
    delimiter: Option<u8>,
    read_only: bool,
) -> Result<(CsvRefunds, Option<CsvRefundSink>), SourceError> {
    let io = |action| {
        move |source| SourceError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    };
    let dialect = sniff(path, delimiter).map_err(io("reading the header"))?;
    let file = File::open(path).map_err(io("opening"))?;
    let metadata = file.metadata().map_err(io("reading permissions"))?;
    let identity = FileIdentity::of(&metadata);
    let mut records = Records::new(file, dialect.delimiter);
    let (headers, blank_before_header) =
        read_header(path, dialect.delimiter, &identity, &mut records)?;
    let names: Vec<String> = headers
        .iter()
        .map(|h| String::from_utf8_lossy(strip_bom(h)).into_owned())
        .collect();
    if let Some(name) = Layout::repeated_column(names.iter().map(String::as_str)) {
        return Err(repeated_column(path, name));
    }
    let layout = Layout::from_headers(names.iter().map(String::as_str));
    let missing: Vec<&str> = layout.missing().iter().map(|c| c.csv_name()).collect();
    if !missing.is_empty() {
        return Err(SourceError::Unusable {
            path: path.to_path_buf(),
            message: missing_columns_message(&missing, &names),
        });
    }
    let mut appended = 0;
    let places = ResultColumn::ALL
        .iter()
        .map(|&column| match layout.result(column) {
            Some(i) => Place::Existing(i),
            None => {
                appended += 1;
                Place::Appended(appended - 1)
            }
        })
        .collect();
    let source = CsvRefunds {
        path: path.to_path_buf(),
        records,
        layout,
        header_len: headers.len(),
        next_row: 2 + blank_before_header,
        identity,
        delimiter: dialect.delimiter,
        trailing_blank_lines: 0,
    };
    if read_only {
        return Ok((source, None));
    }
    let columns = (places, appended);
    let sink = CsvRefundSink::create(
        path,
        dialect,
        blank_before_header,
        &headers,
        columns,
        metadata,
    )?;
    Ok((source, Some(sink)))
}

impl RefundSource for CsvRefunds {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn next_row(&mut self) -> Result<Option<SourceRow>, SourceError> {
        let reading = |source| SourceError::Io {
            path: self.path.clone(),
            action: "reading",
            source,
        };
        let mut raw = RawRecord::default();
        let span = match self.records.read(&mut raw).map_err(reading)? {
            Next::Record(span) => span,
            Next::End { blank_lines } => {
                self.trailing_blank_lines = blank_lines;
                return Ok(None);
            }
        };
        let row = self.next_row + span.blank_lines;
        self.next_row = row + 1;
        check_quotes_closed(&self.path, self.delimiter, &self.identity, span, row)?;
        let mut row = SourceRow::from_raw_into(row, &raw, self.header_len, Default::default());
        row.blank_lines_before = span.blank_lines;
        Ok(Some(row))
    }

    fn trailing_blank_lines(&self) -> u64 {
        self.trailing_blank_lines
    }
}

impl CsvRefundSink {
    fn create(
        path: &Path,
        dialect: Dialect,
        blank_before_header: u64,
        headers: &ByteRecord,
        (places, appended): (Vec<Place>, usize),
        original: std::fs::Metadata,
    ) -> Result<Self, SourceError> {
        let writer = temp_writer(path, dialect)?;
        let mut sink = CsvRefundSink {
            path: path.to_path_buf(),
            writer,
            header_len: headers.len(),
            places,
            appended,
            original,
            crlf: dialect.crlf,
        };
        sink.blank_lines(blank_before_header)?;
        let header: Vec<&[u8]> = headers.iter().map(strip_bom).collect();
        // Result columns already in the header keep their spelling; missing ones are appended.
        let names: Vec<Option<&str>> = ResultColumn::ALL
            .iter()
            .zip(&sink.places)
            .map(|(column, place)| match place {
                Place::Appended(_) => Some(column.csv_name()),
                Place::Existing(_) => None,
            })
            .collect();
        let field = |i: usize| header.get(i).copied();
        sink.write_record(header.len(), field, &names)
            .map_err(|e| sink.write_error(e))?;
        Ok(sink)
    }

    fn blank_lines(&mut self, lines: u64) -> Result<(), SourceError> {
        write_blank_lines(&mut self.writer, self.crlf, lines)
            .map_err(|e| self.write_error(e.into()))
    }

    fn write_error(&self, error: csv::Error) -> SourceError {
        match error.into_kind() {
            csv::ErrorKind::Io(source) => SourceError::Io {
                path: self.path.clone(),
                action: "writing the new file",
                source,
            },
            kind => SourceError::Csv {
                path: self.path.clone(),
                message: format!("writing: {kind:?}"),
            },
        }
    }

    /// Writes a row: its fields (padded to the header's width), the result values set in place
    /// or appended after the original columns, then any extra fields of a too-wide row.
    /// `values[i]` is the value of `ResultColumn::ALL[i]`; `None` keeps what the row has.
    /// Writes a row of `len` fields, field `i` being `fields(i)`, with the result values.
    fn write_record<'f>(
        &mut self,
        len: usize,
        fields: impl Fn(usize) -> Option<&'f [u8]>,
        values: &[Option<&str>],
    ) -> Result<(), csv::Error> {
        let mut replaced: Vec<(usize, &[u8])> = Vec::new();
        let mut appended: Vec<&[u8]> = vec![b""; self.appended];
        for (place, value) in self.places.iter().zip(values) {
            match (place, value) {
                (Place::Existing(at), Some(v)) => replaced.push((*at, v.as_bytes())),
                (Place::Appended(at), Some(v)) => {
                    if let Some(slot) = appended.get_mut(*at) {
                        *slot = v.as_bytes();
                    }
                }
                _ => {}
            }
        }
        let header_len = self.header_len;
        let width = len.max(header_len);
        let field = |i: usize| -> &[u8] {
            replaced
                .iter()
                .find(|(at, _)| *at == i)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| fields(i).unwrap_or(b""))
        };
        let record = (0..header_len)
            .map(field)
            .chain(appended.iter().copied())
            .chain((header_len..width).map(field));
        self.writer.write_record(record)
    }
}

/// The values for the result columns, in `ResultColumn::ALL` order (`None`: keep).
fn result_values(update: &RowUpdate) -> [Option<&str>; 5] {
    match update {
        RowUpdate::Untouched => [None; 5],
        RowUpdate::Refund(columns) => [
            Some(columns.refund_id.as_str()),
            Some(columns.reference_number.as_str()),
            Some(columns.status.as_str()),
            Some(""),
            Some(columns.sent_at.as_str()),
        ],
        RowUpdate::Failed(error) => [None, None, None, Some(error.as_str()), None],
    }
}

impl RefundSink for CsvRefundSink {
    fn write(&mut self, rows: &[FinishedRow]) -> Result<(), SourceError> {
        for finished in rows {
            let source = &finished.source;
            self.blank_lines(source.blank_lines_before)?;
            let field = |i| source.field_bytes(i);
            let values = result_values(&finished.update);
            self.write_record(source.field_count(), field, &values)
                .map_err(|e| self.write_error(e))?;
        }
        Ok(())
    }

    fn write_trailing_blank_lines(&mut self, lines: u64) -> Result<(), SourceError> {
        self.blank_lines(lines)
    }

    fn finish(self: Box<Self>, changed: bool) -> Result<(), SourceError> {
        replace_with_temp(self.writer, &self.path, &self.original, changed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::RefundColumns;
    use super::*;

    fn read_all(source: &mut CsvRefunds) -> Vec<SourceRow> {
        let mut rows = Vec::new();
        while let Some(row) = source.next_row().unwrap() {
            rows.push(row);
        }
        rows
    }

    #[test]
    fn rewrite_keeps_every_other_byte_and_adds_the_result_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let original = "\u{feff}orderNumber;externalReference;amount;currency;provider;notiz\r\n\
                        A-1;RMA-1;12,50;EUR;komfortkasse;\"mit; Semikolon\"\r\n\
                        A-2;RMA-2;3;EUR;komfortkasse;x\r\n\
                        A-3;RMA-3;4;EUR;komfortkasse;y\r\n";
        std::fs::write(&path, original).unwrap();
        let (mut source, sink) = open(&path, None, false).unwrap();
        let rows = read_all(&mut source);
        let updates = [
            RowUpdate::Refund(RefundColumns {
                refund_id: "30000".into(),
                reference_number: "KKBT00030000".into(),
                status: "NEW".into(),
                sent_at: "2026-03-10T10:00:00Z".into(),
            }),
            RowUpdate::Failed("row 3: amount \"3\" too small".into()),
            RowUpdate::Untouched,
        ];
        let finished: Vec<FinishedRow> = rows
            .into_iter()
            .zip(updates)
            .map(|(source, update)| FinishedRow { source, update })
            .collect();
        let mut sink = sink.unwrap();
        sink.write(&finished).unwrap();
        Box::new(sink).finish(true).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            written,
            "\u{feff}orderNumber;externalReference;amount;currency;provider;notiz;refundId;refundReferenceNumber;refundStatus;refundError;refundSentAt\r\n\
             A-1;RMA-1;12,50;EUR;komfortkasse;\"mit; Semikolon\";30000;KKBT00030000;NEW;;2026-03-10T10:00:00Z\r\n\
             A-2;RMA-2;3;EUR;komfortkasse;x;;;;\"row 3: amount \"\"3\"\" too small\";\r\n\
             A-3;RMA-3;4;EUR;komfortkasse;y;;;;;\r\n"
        );
    }

    /// As in the orders CSV: empty lines count in row numbers and stay on rewrite.
    #[test]
    fn empty_lines_are_counted_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let header = "orderNumber,externalReference,amount,currency,provider";
        std::fs::write(
            &path,
            format!("\n{header}\nA-1,RMA-1,1,EUR,komfortkasse\n\nA-2,RMA-2,2,EUR,komfortkasse\n\n"),
        )
        .unwrap();
        let (mut source, sink) = open(&path, None, false).unwrap();
        let rows = read_all(&mut source);
        assert_eq!(rows.iter().map(|r| r.row).collect::<Vec<_>>(), [3, 5]);
        let finished: Vec<FinishedRow> = rows
            .into_iter()
            .map(|source| FinishedRow {
                source,
                update: RowUpdate::Failed("x".into()),
            })
            .collect();
        let mut sink = sink.unwrap();
        sink.write(&finished).unwrap();
        sink.write_trailing_blank_lines(source.trailing_blank_lines())
            .unwrap();
        Box::new(sink).finish(true).unwrap();
        let results = "refundId,refundReferenceNumber,refundStatus,refundError,refundSentAt";
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!(
                "\n{header},{results}\nA-1,RMA-1,1,EUR,komfortkasse,,,,x,\n\nA-2,RMA-2,2,EUR,komfortkasse,,,,x,\n\n"
            )
        );
    }

    #[test]
    fn a_failure_keeps_existing_result_values_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(
            &path,
            "refundStatus,order_number,external_reference,amount,currency,provider,refundId\n\
             NEW,A-1,RMA-1,1,EUR,komfortkasse,77\n",
        )
        .unwrap();
        let (mut source, sink) = open(&path, None, false).unwrap();
        let rows = read_all(&mut source);
        let mut sink = sink.unwrap();
        sink.write(&[FinishedRow {
            source: rows[0].clone(),
            update: RowUpdate::Failed("could not refresh".into()),
        }])
        .unwrap();
        Box::new(sink).finish(true).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "refundStatus,order_number,external_reference,amount,currency,provider,refundId,refundReferenceNumber,refundError,refundSentAt\n\
             NEW,A-1,RMA-1,1,EUR,komfortkasse,77,,could not refresh,\n"
        );
    }

    #[test]
    fn a_file_without_the_required_columns_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(&path, "number,amount\n1,2\n").unwrap();
        let error = open(&path, None, true).err().unwrap().to_string();
        assert!(error.contains("`orderNumber`"), "{error}");
        assert!(error.contains("`provider`"), "{error}");
    }

    #[test]
    fn latin1_bytes_are_written_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(
            &path,
            b"orderNumber,externalReference,amount,currency,provider,kunde\nA,R,1,EUR,komfortkasse,K\xF6ln\n",
        )
        .unwrap();
        let (mut source, sink) = open(&path, None, false).unwrap();
        let rows = read_all(&mut source);
        assert_eq!(rows[0].record.get(5), Some("Köln"));
        let mut sink = sink.unwrap();
        sink.write(&[FinishedRow {
            source: rows[0].clone(),
            update: RowUpdate::Failed("x".into()),
        }])
        .unwrap();
        Box::new(sink).finish(true).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"orderNumber,externalReference,amount,currency,provider,kunde,refundId,refundReferenceNumber,refundStatus,refundError,refundSentAt\nA,R,1,EUR,komfortkasse,K\xF6ln,,,,x,\n"
        );
    }

    #[test]
    fn an_unchanged_run_leaves_the_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let text =
            "orderNumber,externalReference,amount,currency,provider\nA,R,1,EUR,komfortkasse\n";
        std::fs::write(&path, text).unwrap();
        std::fs::write(dir.path().join(".r.csv.old.kksync-tmp"), "stale").unwrap();
        let (_, sink) = open(&path, None, false).unwrap();
        Box::new(sink.unwrap()).finish(false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_unclosed_quote_in_the_last_row_fails_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let text = "orderNumber,externalReference,amount,currency,provider\nA-1,RMA-1,\"1,00\",EUR,komfortkasse\nA-2,\"RMA-2,2,EUR,komfortkasse\nA-3,RMA-3,3,EUR,komfortkasse\n";
        std::fs::write(&path, text).unwrap();
        let (mut source, _) = open(&path, None, true).unwrap();
        assert_eq!(source.next_row().unwrap().unwrap().row, 2);
        let error = source.next_row().unwrap_err().to_string();
        assert!(
            error.contains("row 3: a quoted field is not closed"),
            "{error}"
        );
    }

    #[test]
    fn a_refund_column_twice_in_the_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let text = "orderNumber,externalReference,amount,currency,provider,amount\nA-1,RMA-1,1,EUR,komfortkasse,99\n";
        std::fs::write(&path, text).unwrap();
        let error = open(&path, None, true).err().unwrap().to_string();
        assert!(error.contains("`amount` appears more than once"), "{error}");
    }
}
