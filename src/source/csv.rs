//! CSV exports: streaming reader with delimiter and BOM detection, and an atomic rewrite that
//! keeps every column, row, value and the BOM, adding `paymentStatus` and `syncError`.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use csv::{ByteRecord, Terminator};

use super::csv_records::{self, Next, RawRecord, Records, Span};
use super::last_read::{self, Entry, LastRead, NextRead};
use super::sync_behind::SyncBehind;
use super::{
    FileIdentity, FinishedRow, OrderSource, ResultSink, RowResult, SourceError, SourceRow,
    TextRecord,
};
use crate::order::{ColumnNames, Field, Layout, RowView};

/// Result column with the payment status.
pub const STATUS_COLUMN: &str = "paymentStatus";
/// Result column with the error, empty when the row synced.
pub const ERROR_COLUMN: &str = "syncError";
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What the first line of the file tells about its dialect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    pub(crate) delimiter: u8,
    pub(crate) bom: bool,
    pub(crate) crlf: bool,
}

/// Reads a CSV export row by row.
pub struct CsvSource {
    path: PathBuf,
    records: Records,
    layout: Layout,
    header_len: usize,
    status_index: Option<usize>,
    error_index: Option<usize>,
    next_row: u64,
    /// Empty lines after the last record, once the end was reached.
    trailing_blank_lines: u64,
    /// The row being read, reused: the row handed out is a [`super::TextRecord`] copy of it.
    buffer: RawRecord,
    /// The text of a row given back ([`OrderSource::recycle`]), for the next one.
    spare: Option<super::TextRecord>,
    file_bytes: u64,
    delimiter: u8,
    identity: FileIdentity,
    /// What the rows of this file hold besides their bytes (see [`last_read::key`]).
    key: u64,
    /// The first of the result columns, where they are or where they will be appended: the
    /// index knows a row by its bytes before it.
    first_result: usize,
    /// The rows as the last run read them, and as this one does ([`OrderSource::use_row_index`]).
    index: Option<RowIndex>,
    /// Parses a row handed out unparsed when it is wanted whole ([`OrderSource::full_row`]).
    reparser: csv_core::Reader,
}

/// The index of the last run's rows, and the one this run writes.
#[derive(Debug)]
struct RowIndex {
    last: Option<LastRead>,
    next: Option<NextRead>,
    /// Rows handed out unparsed.
    unparsed: u64,
}

/// Writes the CSV back into a temporary file beside it, renamed over it at the end.
pub struct CsvSink {
    path: PathBuf,
    writer: csv::Writer<SyncBehind>,
    header_len: usize,
    status: ResultColumn,
    error: ResultColumn,
    /// The source as it was opened: its identity, permissions and owner.
    original: std::fs::Metadata,
    /// Lines end in CRLF.
    crlf: bool,
}

/// Where a result column sits: in the original header, or appended after it (status first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResultColumn {
    Existing(usize),
    Appended,
}

pub(super) fn open(
    path: &Path,
    delimiter: Option<u8>,
    column_names: &ColumnNames,
    read_only: bool,
) -> Result<(CsvSource, Option<CsvSink>), SourceError> {
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
    let file_len = metadata.len();
    let identity = FileIdentity::of(&metadata);
    let mut records = Records::new(file, dialect.delimiter);
    let (headers, blank_before_header) =
        read_header(path, dialect.delimiter, &identity, &mut records)?;
    let names: Vec<String> = headers
        .iter()
        .map(|h| String::from_utf8_lossy(strip_bom(h)).into_owned())
        .collect();
    if names.iter().all(|n| n.trim().is_empty()) {
        return Err(SourceError::Unusable {
            path: path.to_path_buf(),
            message: "the file has no header row".into(),
        });
    }
    // A column kksync reads or writes that appears twice: which one holds the value is a guess
    // kksync will not make (it would send one and silently ignore the other).
    let wanted = Field::ALL
        .iter()
        .map(|&f| column_names.csv(f))
        .chain([STATUS_COLUMN, ERROR_COLUMN]);
    for name in wanted {
        if names.iter().filter(|n| n.trim() == name).count() > 1 {
            return Err(repeated_column(path, name));
        }
    }
    let layout = Layout::from_columns(names.iter().map(String::as_str), |f| column_names.csv(f));
    if !layout.has(Field::Number) {
        return Err(SourceError::Unusable {
            path: path.to_path_buf(),
            message: format!(
                "no `{}` column in the header (found: {}); name the columns like the API's order fields, or map yours in the config file's [columns]",
                column_names.csv(Field::Number),
                names.join(", ")
            ),
        });
    }
    let position = |name: &str| names.iter().position(|n| n.trim() == name);
    let (status_index, error_index) = (position(STATUS_COLUMN), position(ERROR_COLUMN));
    // Where the result columns start: where they are, or where the write-back appends them
    // (status first).
    let first_result = status_index
        .unwrap_or(headers.len())
        .min(error_index.unwrap_or(headers.len() + usize::from(status_index.is_none())));
    // Values with what a fingerprint might treat specially (spaces, nothing, umlauts, a
    // delimiter), so that a change of the scheme changes the key.
    let samples = [" probe ", "", "Gr\u{f6}\u{df}e", "1,50", "x"];
    let probe: TextRecord = (0..headers.len())
        .map(|i| samples[i % samples.len()])
        .collect();
    let probe = crate::order::row_fingerprint(RowView {
        record: &probe,
        layout: &layout,
    });
    let key = last_read::key(dialect.delimiter, probe, first_result);
    let source = CsvSource {
        path: path.to_path_buf(),
        records,
        layout,
        header_len: headers.len(),
        status_index,
        error_index,
        next_row: 2 + blank_before_header,
        trailing_blank_lines: 0,
        buffer: RawRecord::default(),
        spare: None,
        file_bytes: file_len,
        delimiter: dialect.delimiter,
        identity,
        key,
        first_result,
        index: None,
        reparser: csv_records::parser(dialect.delimiter),
    };
    if read_only {
        return Ok((source, None));
    }
    let place = |index: Option<usize>| index.map_or(ResultColumn::Appended, ResultColumn::Existing);
    let (status, error) = (place(status_index), place(error_index));
    let sink = CsvSink::create(
        path,
        dialect,
        blank_before_header,
        &headers,
        (status, error),
        metadata,
    )?;
    Ok((source, Some(sink)))
}

/// Reads the header of a file `records` reads from its start: its fields, and the empty lines
/// before it (kept too, and counted in the row numbers). An empty file has an empty header.
pub(crate) fn read_header(
    path: &Path,
    delimiter: u8,
    identity: &FileIdentity,
    records: &mut Records,
) -> Result<(ByteRecord, u64), SourceError> {
    let mut raw = RawRecord::default();
    let read = records.read(&mut raw).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        action: "reading",
        source,
    })?;
    match read {
        Next::Record(span) => {
            check_quotes_closed(path, delimiter, identity, span, 1)?;
            Ok((raw.to_byte_record(), span.blank_lines))
        }
        Next::End { .. } => Ok((ByteRecord::new(), 0)),
    }
}

/// csv (`csv_core`) is lenient about a quoted field that is never closed: the field runs to the
/// end of the file, so every row after it would silently become part of it (and be sent, and
/// written back inside the field). Such a record is necessarily the last one and reaches the end
/// of the file, so only a record that does is checked: its raw bytes, from its start to the end
/// of the file, are run through a small quote state machine. `row` names the record in the
/// error. Every other record costs one comparison.
///
/// The file is opened again by name for that: if the name now leads to another file (a new
/// export renamed into place) or the file changed, the read fails with
/// [`SourceError::Changed`] instead of checking the wrong bytes.
pub(crate) fn check_quotes_closed(
    path: &Path,
    delimiter: u8,
    opened: &FileIdentity,
    record: Span,
    row: u64,
) -> Result<(), SourceError> {
    if record.end < opened.file_len() {
        return Ok(());
    }
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        action: "reading",
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    if FileIdentity::of(&file.metadata().map_err(io)?) != *opened {
        return Err(SourceError::Changed {
            path: path.to_path_buf(),
        });
    }
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(record.start)).map_err(io)?;
    match unclosed_quote(BufReader::new(file), delimiter).map_err(io)? {
        None => Ok(()),
        Some(line_breaks) => Err(SourceError::Csv {
            path: path.to_path_buf(),
            message: format!(
                "row {row}: a quoted field is not closed before the end of the file; it opens on line {} and would swallow every line after it (close or double that quote, then run again)",
                record.line.saturating_add(line_breaks)
            ),
        }),
    }
}

/// Reads CSV bytes from the start of a record to the end and tells whether a quoted field is
/// still open at the end, with the number of line breaks before its opening quote. The rules
/// are `csv_core`'s defaults: a `"` at the start of a field opens a quoted field, inside it `""`
/// is a quote and a single `"` closes it; a `"` anywhere else is an ordinary character.
fn unclosed_quote(mut reader: impl Read, delimiter: u8) -> std::io::Result<Option<u64>> {
    #[derive(Clone, Copy)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let mut state = State::FieldStart;
    let (mut line_breaks, mut opened_after) = (0u64, 0u64);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        for &b in buffer.get(..n).unwrap_or_default() {
            let boundary = b == delimiter || b == b'\n' || b == b'\r';
            state = match (state, b) {
                (State::FieldStart, b'"') => {
                    opened_after = line_breaks;
                    State::Quoted
                }
                (State::Quoted, b'"') => State::QuoteInQuoted,
                (State::Quoted, _) => State::Quoted,
                (State::QuoteInQuoted, b'"') => State::Quoted,
                (_, _) if boundary => State::FieldStart,
                (_, _) => State::Unquoted,
            };
            line_breaks += u64::from(b == b'\n');
        }
    }
    Ok(matches!(state, State::Quoted).then_some(opened_after))
}

/// The error for a header that names a column kksync reads or writes more than once: which one
/// holds the value would be a guess.
pub(crate) fn repeated_column(path: &Path, name: &str) -> SourceError {
    SourceError::Unusable {
        path: path.to_path_buf(),
        message: format!(
            "the column `{name}` appears more than once in the header; rename or remove the extra one"
        ),
    }
}

pub(crate) fn strip_bom(field: &[u8]) -> &[u8] {
    field.strip_prefix(BOM).unwrap_or(field)
}

/// Looks at the first line: BOM, line ending, and the delimiter (the most frequent of `;`, `,`
/// and tab outside quotes, unless one is given).
pub(crate) fn sniff(path: &Path, delimiter: Option<u8>) -> std::io::Result<Dialect> {
    // The file is read more than once and replaced by rename: a pipe or a device would hang
    // or lose data.
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (kksync reads the file more than once and replaces it)",
        ));
    }
    let mut prefix = Vec::with_capacity(64 * 1024);
    File::open(path)?.take(64 * 1024).read_to_end(&mut prefix)?;
    let bom = prefix.starts_with(BOM);
    let line_end = prefix
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(prefix.len());
    let line = &prefix[..line_end];
    let crlf = line.last() == Some(&b'\r');
    let delimiter = delimiter.unwrap_or_else(|| {
        let mut counts = [(b';', 0usize), (b',', 0), (b'\t', 0)];
        let mut quoted = false;
        for &b in line {
            if b == b'"' {
                quoted = !quoted;
            } else if !quoted && let Some(entry) = counts.iter_mut().find(|(c, _)| *c == b) {
                entry.1 += 1;
            }
        }
        // Ties (including no delimiter at all, a one-column file) go to the comma.
        counts.sort_by_key(|&(c, n)| (std::cmp::Reverse(n), c != b','));
        counts[0].0
    });
    Ok(Dialect {
        delimiter,
        bom,
        crlf,
    })
}

impl CsvSource {
    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Where the result columns are, if the header has both.
    pub(crate) fn result_columns(&self) -> Option<ResultColumns> {
        Some(ResultColumns {
            header_len: self.header_len,
            status: ResultColumn::Existing(self.status_index?),
            error: ResultColumn::Existing(self.error_index?),
        })
    }

    /// The field delimiter.
    pub(crate) fn delimiter(&self) -> u8 {
        self.delimiter
    }
}

/// Bytes after a row's prefix its results may take (a longer row is parsed).
const RESULTS_ROOM: usize = 4096;

/// `\n` in `bytes`.
fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Where a row's fields are.
#[derive(Clone, Copy)]
struct Columns<'a> {
    layout: &'a Layout,
    first_result: usize,
    header_len: usize,
}

/// Makes `record` a row whose order columns are empty but for its `number`, followed by the
/// `results` [`csv_records::parse_results`] read; `false` if they are not UTF-8 or the row has
/// more fields than the header.
fn sparse_record(
    record: &mut TextRecord,
    columns: Columns<'_>,
    number: &str,
    results: &RawRecord,
) -> bool {
    // The results start with the empty field before the delimiter they follow.
    let fields = columns.first_result + results.len().saturating_sub(1);
    if fields > columns.header_len {
        return false;
    }
    record.clear();
    // Every order column empty but the number (a field at a time was 2% of a nightly run).
    match columns
        .layout
        .column(Field::Number)
        .filter(|&at| at < columns.first_result)
    {
        Some(at) => {
            record.push_empty_fields(at);
            record.push_field(number);
            record.push_empty_fields(columns.first_result - at - 1);
        }
        None => record.push_empty_fields(columns.first_result),
    }
    let mut start = 0;
    for (i, &end) in results.ends().iter().enumerate() {
        let field = &results.as_slice()[start..end];
        start = end;
        if i == 0 {
            continue;
        }
        match std::str::from_utf8(field) {
            Ok(text) => record.push_field(text),
            Err(_) => return false,
        }
    }
    true
}

impl CsvSource {
    /// The next row unparsed, when its bytes up to its results are those of the next row the
    /// last run read; its results are read as they stand.
    fn unparsed_row(&mut self) -> Result<Option<SourceRow>, SourceError> {
        let Some(RowIndex {
            last: Some(last), ..
        }) = &mut self.index
        else {
            return Ok(None);
        };
        let Some(prefix) = last.wanted() else {
            return Ok(None);
        };
        let room = prefix + RESULTS_ROOM;
        let after_cr = self.records.after_cr();
        let bytes = self.records.peek(room).map_err(|source| SourceError::Io {
            path: self.path.clone(),
            action: "reading",
            source,
        })?;
        // The buffer holds far more than `room`: fewer bytes are the end of the file.
        let to_end = bytes.len() < room;
        let Some(entry) = last.matches(bytes) else {
            return Ok(None);
        };
        let Some(len) = csv_records::parse_results(
            &mut self.reparser,
            bytes,
            prefix,
            self.delimiter,
            to_end,
            &mut self.buffer,
        ) else {
            return Ok(None);
        };
        let newlines = u64::from(entry.newlines) + count_newlines(&bytes[prefix..len]);
        let mut record = self.spare.take().unwrap_or_default();
        let columns = Columns {
            layout: &self.layout,
            first_result: self.first_result,
            header_len: self.header_len,
        };
        if !sparse_record(&mut record, columns, &entry.number, &self.buffer) {
            self.spare = Some(record);
            return Ok(None);
        }
        // Counted here, not taken from the entry: whether a leading `\n` ends the line of the
        // row before (its `\r\n`) or is an empty line depends on that row's line end.
        let blank_lines = csv_records::blank_lines(after_cr, &bytes[..prefix]);
        let fingerprint = entry.row_fingerprint;
        let start = self.records.position();
        let line = self.records.line();
        self.records.skip(len, newlines);
        let row = self.next_row + blank_lines;
        self.next_row = row + 1;
        let span = Span {
            start,
            line,
            end: self.records.position(),
            blank_lines,
        };
        check_quotes_closed(&self.path, self.delimiter, &self.identity, span, row)?;
        let unparsed = SourceRow {
            row,
            record,
            raw: None,
            defect: None,
            blank_lines_before: blank_lines,
            offset: Some(start),
            row_fingerprint: Some(fingerprint),
            unparsed: true,
        };
        let Some(index) = &mut self.index else {
            return Ok(Some(unparsed));
        };
        index.unparsed += 1;
        if let (Some(entry), Some(next)) = (
            index.last.as_mut().and_then(LastRead::pass),
            &mut index.next,
        ) && let Err(error) = next.add_hashed(&entry)
        {
            self.drop_next_index(&error);
        }
        Ok(Some(unparsed))
    }

    /// Records a parsed row in the index this run writes, and moves the last run's past it.
    fn remember(&mut self, row: &mut SourceRow, span: &Span) {
        let Some(index) = &mut self.index else {
            return;
        };
        let number = self
            .layout
            .column(Field::Number)
            .and_then(|at| row.record.get(at));
        if let (Some(last), Some(number)) = (&mut index.last, number) {
            last.parsed(number);
        }
        let Some(next) = &mut index.next else {
            return;
        };
        let fields = row.record.len();
        let (Some(number), Some(bytes)) = (number, self.records.last_bytes(span)) else {
            return;
        };
        if row.defect.is_some() || row.raw.is_some() || fields < self.first_result {
            return;
        }
        let results = (self.first_result..fields).filter_map(|i| row.record.field_bytes(i));
        let Some(prefix) = Entry::prefix_of(bytes, self.delimiter, results) else {
            return;
        };
        let fingerprint = crate::order::row_fingerprint(RowView {
            record: &row.record,
            layout: &self.layout,
        });
        row.row_fingerprint = Some(fingerprint);
        // The results after the prefix are plain: the only line break there is the line end.
        let newlines = (self.records.line().saturating_sub(span.line))
            .saturating_sub(u64::from(bytes.last() == Some(&b'\n')));
        let entry = Entry {
            prefix: u32::try_from(prefix).unwrap_or(u32::MAX),
            newlines: u32::try_from(newlines).unwrap_or(u32::MAX),
            row_fingerprint: fingerprint,
            number: number.to_string(),
            hash: 0,
        };
        if let Err(error) = next.add(entry, &bytes[..prefix]) {
            self.drop_next_index(&error);
        }
    }

    /// Puts this run's index in place, once the whole file was read.
    fn finish_index(&mut self) {
        let Some(index) = &mut self.index else {
            return;
        };
        tracing::debug!(
            rows = index.unparsed,
            "rows known by their bytes, not parsed"
        );
        let Some(next) = index.next.take() else {
            return;
        };
        if let Err(error) = next.finish() {
            tracing::warn!(%error, "cannot write the index of the rows read; the next run parses every row");
        }
    }

    /// Stops writing this run's index after `error`.
    fn drop_next_index(&mut self, error: &std::io::Error) {
        if let Some(next) = self.index.as_mut().and_then(|index| index.next.take()) {
            tracing::warn!(%error, "cannot write the index of the rows read; the next run parses every row");
            drop(next);
        }
    }
}

impl OrderSource for CsvSource {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn result_indexes(&self) -> (Option<usize>, Option<usize>) {
        (self.status_index, self.error_index)
    }

    fn identity(&self) -> Option<&FileIdentity> {
        Some(&self.identity)
    }

    fn estimated_rows(&self, rows_read: u64) -> Option<u64> {
        let bytes_read = self.records.position();
        (bytes_read > 0).then(|| rows_read.saturating_mul(self.file_bytes) / bytes_read)
    }

    fn next_row(&mut self) -> Result<Option<SourceRow>, SourceError> {
        if let Some(row) = self.unparsed_row()? {
            return Ok(Some(row));
        }
        let reading = |source| SourceError::Io {
            path: self.path.clone(),
            action: "reading",
            source,
        };
        let span = match self.records.read(&mut self.buffer).map_err(reading)? {
            Next::Record(span) => span,
            Next::End { blank_lines } => {
                self.trailing_blank_lines = blank_lines;
                self.finish_index();
                return Ok(None);
            }
        };
        // csv_core skips empty lines silently; they are counted so that row numbers are the
        // ones a spreadsheet shows, and so that the write-back keeps them.
        let row = self.next_row + span.blank_lines;
        self.next_row = row + 1;
        check_quotes_closed(&self.path, self.delimiter, &self.identity, span, row)?;
        let spare = self.spare.take().unwrap_or_default();
        let mut row = SourceRow::from_raw_into(row, &self.buffer, self.header_len, spare);
        row.blank_lines_before = span.blank_lines;
        row.offset = Some(span.start);
        if self.index.is_some() {
            self.remember(&mut row, &span);
        }
        Ok(Some(row))
    }

    fn use_row_index(&mut self, path: &Path, read: bool, write: bool) {
        if self
            .layout
            .last_column()
            .is_some_and(|last| last >= self.first_result)
        {
            // An order column after the results: the index knows rows by their bytes before
            // the results, which would leave it out.
            return;
        }
        let last = read.then(|| LastRead::open(path, self.key));
        let next = match write.then(|| NextRead::create(path, self.key)) {
            Some(Err(error)) => {
                tracing::warn!(index = %path.display(), %error, "cannot write the index of the rows read; the next run parses every row");
                None
            }
            Some(Ok(next)) => Some(next),
            None => None,
        };
        self.index = Some(RowIndex {
            last,
            next,
            unparsed: 0,
        });
    }

    fn full_row(&mut self, row: SourceRow) -> Result<SourceRow, SourceError> {
        if !row.unparsed {
            return Ok(row);
        }
        let bytes = self.records.last_skipped();
        if !csv_records::parse_record(&mut self.reparser, bytes, &mut self.buffer) {
            // The bytes matched a whole record's hash: this does not happen.
            return Err(SourceError::Csv {
                path: self.path.clone(),
                message: format!("row {}: could not be read again", row.row),
            });
        }
        let mut full = SourceRow::from_raw_into(row.row, &self.buffer, self.header_len, row.record);
        full.blank_lines_before = row.blank_lines_before;
        full.offset = row.offset;
        full.row_fingerprint = row.row_fingerprint;
        Ok(full)
    }

    fn trailing_blank_lines(&self) -> u64 {
        self.trailing_blank_lines
    }

    fn recycle(&mut self, row: SourceRow) {
        if row.record.worth_reusing() {
            self.spare = Some(row.record);
        }
    }
}

/// Writes `lines` empty lines into the file behind `writer`. csv's writer would write an empty
/// record as `""` (so that it reads back as a record), so the line ends go to the writer's
/// output directly, after what the writer holds.
pub(crate) fn write_blank_lines(
    writer: &mut csv::Writer<SyncBehind>,
    crlf: bool,
    lines: u64,
) -> std::io::Result<()> {
    if lines == 0 {
        return Ok(());
    }
    let line_end: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    writer.flush()?;
    let mut output = writer.get_ref();
    (0..lines).try_for_each(|_| output.write_all(line_end))
}

impl CsvSink {
    /// Writes `lines` empty lines.
    fn blank_lines(&mut self, lines: u64) -> Result<(), SourceError> {
        write_blank_lines(&mut self.writer, self.crlf, lines)
            .map_err(|e| self.write_error(e.into()))
    }

    fn create(
        path: &Path,
        dialect: Dialect,
        blank_before_header: u64,
        headers: &ByteRecord,
        (status, error): (ResultColumn, ResultColumn),
        original: std::fs::Metadata,
    ) -> Result<Self, SourceError> {
        let writer = temp_writer(path, dialect)?;
        let mut sink = CsvSink {
            path: path.to_path_buf(),
            writer,
            header_len: headers.len(),
            status,
            error,
            original,
            crlf: dialect.crlf,
        };
        sink.blank_lines(blank_before_header)?;
        let header: Vec<&[u8]> = headers.iter().map(strip_bom).collect();
        let field = |i: usize| header.get(i).copied();
        sink.write_with_results(header.len(), field, Some(STATUS_COLUMN), Some(ERROR_COLUMN))
            .map_err(|e| sink.write_error(e))?;
        Ok(sink)
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

    /// Writes a row of `len` fields with the result columns set (see [`write_with_results`]).
    fn write_with_results<'f>(
        &mut self,
        len: usize,
        fields: impl Fn(usize) -> Option<&'f [u8]>,
        status: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), csv::Error> {
        let columns = ResultColumns {
            header_len: self.header_len,
            status: self.status,
            error: self.error,
        };
        write_with_results(&mut self.writer, columns, len, fields, status, error)
    }
}

/// Where the result columns of a file go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResultColumns {
    /// Fields in the header.
    pub(crate) header_len: usize,
    pub(crate) status: ResultColumn,
    pub(crate) error: ResultColumn,
}

/// Writes a row of `len` fields, field `i` being `fields(i)`, padded to the header's width,
/// with the result columns set in place or inserted after the original columns, so nothing
/// is overwritten.
pub(crate) fn write_with_results<'f, W: Write>(
    writer: &mut csv::Writer<W>,
    columns: ResultColumns,
    len: usize,
    fields: impl Fn(usize) -> Option<&'f [u8]>,
    status: Option<&str>,
    error: Option<&str>,
) -> Result<(), csv::Error> {
    let ResultColumns {
        header_len,
        status: status_column,
        error: error_column,
    } = columns;
    let width = len.max(header_len);
    let mut appended: [&[u8]; 2] = [b"", b""];
    let mut appended_count = 0;
    let mut replaced: [Option<(usize, &[u8])>; 2] = [None, None];
    for (slot, (column, value)) in [(status_column, status), (error_column, error)]
        .into_iter()
        .enumerate()
    {
        match column {
            ResultColumn::Existing(i) => replaced[slot] = value.map(|v| (i, v.as_bytes())),
            ResultColumn::Appended => {
                appended[appended_count] = value.unwrap_or("").as_bytes();
                appended_count += 1;
            }
        }
    }
    let field = |i: usize| -> &[u8] {
        for (index, value) in replaced.iter().flatten() {
            if *index == i {
                return value;
            }
        }
        fields(i).unwrap_or(b"")
    };
    // Original columns, then the appended result columns, then any extra fields of a row
    // that is wider than the header.
    let record = (0..header_len)
        .map(field)
        .chain(appended[..appended_count].iter().copied())
        .chain((header_len..width).map(field));
    writer.write_record(record)
}

impl ResultSink for CsvSink {
    fn write(&mut self, rows: &[FinishedRow]) -> Result<(), SourceError> {
        for finished in rows {
            let source = &finished.source;
            self.blank_lines(source.blank_lines_before)?;
            let (status, error) = match &finished.result {
                RowResult::Synced { status } | RowResult::SyncedAgain { status } => {
                    (Some(status.as_str()), Some(""))
                }
                RowResult::Failed { error } => (None, Some(error.as_str())),
                RowResult::Untouched => (None, None),
            };
            let field = |i| source.field_bytes(i);
            self.write_with_results(source.field_count(), field, status, error)
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

/// A run killed between creating and renaming its temporary file leaves it behind. The caller
/// holds the source's run lock, so no other run is writing one now: they are all stale.
pub(crate) fn remove_stale_temp_files(dir: &Path, source_name: &str) {
    let prefix = format!(".{source_name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".kksync-tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a temporary file left by an interrupted run")
                }
                Err(error) => {
                    tracing::warn!(file = %entry.path().display(), %error, "cannot remove a stale temporary file")
                }
            }
        }
    }
}

/// After a rename, the folder entry itself must reach the disk for the new file to survive a
/// crash.
pub(crate) fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// A CSV writer into a new temporary file beside `path`, in the source's dialect (BOM
/// included); stale temporary files of killed runs are removed first.
pub(crate) fn temp_writer(
    path: &Path,
    dialect: Dialect,
) -> Result<csv::Writer<SyncBehind>, SourceError> {
    let io = |action| {
        move |source| SourceError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_stale_temp_files(&dir, &name);
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".kksync-tmp")
        .tempfile_in(&dir)
        .map_err(io("creating a temporary file beside the source"))?;
    let mut temp = SyncBehind::new(temp);
    if dialect.bom {
        std::io::Write::write_all(&mut temp, BOM).map_err(io("writing"))?;
    }
    Ok(csv::WriterBuilder::new()
        .delimiter(dialect.delimiter)
        .terminator(if dialect.crlf {
            Terminator::CRLF
        } else {
            Terminator::Any(b'\n')
        })
        .flexible(true)
        .from_writer(temp))
}

/// Completes an atomic rewrite: with `changed`, the temporary file is synced, given the
/// original owner and permissions, renamed over `path` and the folder synced; without, it is
/// dropped and the source stays byte-identical. `original` is the source as it was opened: if
/// the file at `path` is no longer that file (replaced, or modified, by someone else), nothing
/// is renamed over it and the temporary file is removed.
pub(crate) fn replace_with_temp(
    writer: csv::Writer<SyncBehind>,
    path: &Path,
    original: &std::fs::Metadata,
    changed: bool,
) -> Result<(), SourceError> {
    let behind = writer.into_inner().map_err(|e| SourceError::Io {
        path: path.to_path_buf(),
        action: "writing the new file",
        source: e.into_error(),
    })?;
    replace_with_temp_file(behind, path, original, changed)
}

/// As [`replace_with_temp`], for a temporary file written without a csv writer.
pub(crate) fn replace_with_temp_file(
    behind: SyncBehind,
    path: &Path,
    original: &std::fs::Metadata,
    changed: bool,
) -> Result<(), SourceError> {
    let io = |action| {
        move |source| SourceError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    };
    if !changed {
        // Dropping the temporary file removes it; what its syncs met does not matter.
        return Ok(());
    }
    let temp = behind.finish().map_err(io("writing the new file"))?;
    temp.as_file()
        .sync_all()
        .map_err(io("syncing the new file"))?;
    #[cfg(unix)]
    keep_owner(temp.as_file(), original, path).map_err(io("copying the owner"))?;
    std::fs::set_permissions(temp.path(), original.permissions())
        .map_err(io("copying permissions"))?;
    // Right before the rename: the shop may have exported a new file meanwhile.
    ensure_unchanged(path, original)?;
    temp.persist(path)
        .map_err(|e| io("replacing the source")(e.error))?;
    sync_parent_dir(path).map_err(io("syncing the folder"))
}

/// Fails with [`SourceError::Changed`] unless the file at `path` is still the one `original`
/// describes (same device, inode, length and modification time).
pub(crate) fn ensure_unchanged(
    path: &Path,
    original: &std::fs::Metadata,
) -> Result<(), SourceError> {
    let now = std::fs::metadata(path).ok().map(|m| FileIdentity::of(&m));
    if now.as_ref() == Some(&FileIdentity::of(original)) {
        return Ok(());
    }
    tracing::error!(source = %path.display(), "the source changed during the run; not overwriting it");
    Err(SourceError::Changed {
        path: path.to_path_buf(),
    })
}

/// Gives the temporary file the source's owner and group. Only root may give a file away: for
/// anyone else the group alone is tried, and what cannot be kept is logged, not fatal (the
/// file still belongs to the user kksync runs as, who could write the source).
#[cfg(unix)]
fn keep_owner(temp: &File, original: &std::fs::Metadata, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, fchown};
    let (uid, gid) = (original.uid(), original.gid());
    let current = temp.metadata()?;
    if (current.uid(), current.gid()) == (uid, gid) {
        return Ok(());
    }
    // Not being permitted (a non-root user cannot give files away), or a file system that
    // cannot (some network and FUSE mounts), costs the owner, not the run: warn and go on.
    let owner_error = match fchown(temp, Some(uid), Some(gid)) {
        Ok(()) => return Ok(()),
        Err(error) => error,
    };
    let group_kept = fchown(temp, None, Some(gid)).is_ok();
    let now = temp.metadata()?;
    tracing::warn!(
        source = %path.display(),
        was = %format!("{uid}:{gid}"),
        now = %format!("{}:{}", now.uid(), now.gid()),
        group_kept,
        error = %owner_error,
        "could not keep the source's owner; the rewritten file belongs to the user kksync runs as"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Every row of the file at `path` as the reader hands it out, read whole, with the empty
    /// lines at the end; and the rows that came unparsed (their row numbers). With `index`,
    /// the rows as last read come from it, and the reading is indexed there.
    fn rows_read(path: &Path, index: Option<&Path>) -> (Vec<SourceRow>, u64, Vec<u64>) {
        let (mut source, _) = open(path, None, &ColumnNames::default(), true).unwrap();
        if let Some(index) = index {
            source.use_row_index(index, true, true);
        }
        let (mut rows, mut unparsed) = (Vec::new(), Vec::new());
        while let Some(row) = source.next_row().unwrap() {
            if row.unparsed {
                unparsed.push(row.row);
            }
            let row = source.full_row(row).unwrap();
            assert!(!row.unparsed);
            // A fingerprint the source knows is the one of the row's fields.
            let fingerprint = crate::order::row_fingerprint(RowView {
                record: &row.record,
                layout: source.layout(),
            });
            assert!(row.row_fingerprint.is_none_or(|known| known == fingerprint));
            rows.push(row);
        }
        (rows, source.trailing_blank_lines(), unparsed)
    }

    /// What a test compares of a row: everything the reader hands out.
    fn described(rows: &[SourceRow]) -> Vec<String> {
        rows.iter()
            .map(|r| {
                format!(
                    "{} {:?} {} {:?} {:?} {:?}",
                    r.row, r.offset, r.blank_lines_before, r.record, r.raw, r.defect
                )
            })
            .collect()
    }

    #[test]
    fn rows_known_by_their_bytes_read_as_parsed_ones_whatever_changed() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("orders.csv.kksync.db.rows");
        let header = "number,amount,paymentStatus,syncError\r\n";
        let rows: Vec<String> = (1..=40)
            .map(|n| match n % 5 {
                0 => format!("{n},\"1,{n}\",PAID,\r\n"),
                1 => format!("\r\n{n},\"line\r\nbreak\",UNPAID,\r\n"),
                2 => format!("{n},2.00,,\"row {n}: amount, missing\"\r\n"),
                3 => format!("{n},K\u{f6}ln,PAID_PARTIAL\r\n"),
                _ => format!("{n},3.00,UNPAID,\r\n"),
            })
            .collect();
        let first = format!("{header}{}\r\n", rows.concat());
        let path = write(dir.path(), "orders.csv", first.as_bytes());
        let (parsed, _, unparsed) = rows_read(&path, Some(&index));
        assert!(unparsed.is_empty(), "no index yet");
        let (again, _, unparsed) = rows_read(&path, Some(&index));
        assert_eq!(described(&again), described(&parsed));
        // Every row but those whose error needs quotes (8 of 40) came unparsed.
        assert_eq!(unparsed.len(), 32);

        // Rows removed from the top, an amount and a status changed, a row added, a Latin-1
        // one, and a last row without a line end.
        let mut edited: Vec<Vec<u8>> = rows.iter().map(|r| r.clone().into_bytes()).collect();
        edited.drain(..7);
        assert_eq!(edited[11], b"19,3.00,UNPAID,\r\n");
        edited[11] = b"19,9.99,UNPAID,\r\n".to_vec();
        assert_eq!(edited[12], b"20,\"1,20\",PAID,\r\n");
        edited[12] = b"20,\"1,20\",REFUNDED,\"x\"\r\n".to_vec();
        edited.insert(20, b"99,1.00,,\n".to_vec());
        edited.insert(25, b"98,K\xF6ln,,\r\n".to_vec());
        edited.push(b"97,1.00,,".to_vec());
        let mut second = header.as_bytes().to_vec();
        second.extend(edited.concat());
        std::fs::write(&path, &second).unwrap();
        let (plain, trailing, _) = rows_read(&path, None);
        let (indexed, indexed_trailing, unparsed) = rows_read(&path, Some(&index));
        assert_eq!(described(&indexed), described(&plain));
        assert_eq!(indexed_trailing, trailing);
        let row_of = |number: &str| {
            let row = plain
                .iter()
                .find(|r| r.record.get(0) == Some(number))
                .unwrap();
            row.row
        };
        assert!(!unparsed.contains(&row_of("19")), "changed amount: parsed");
        assert!(
            unparsed.contains(&row_of("20")),
            "changed results only: unparsed"
        );
        assert!(
            unparsed.contains(&row_of("21")),
            "after the change: realigned"
        );
        assert!(
            !unparsed.contains(&row_of("8")),
            "first after the removed rows: parsed"
        );
        assert!(
            unparsed.contains(&row_of("9")),
            "after the removed rows: realigned"
        );
        assert!(
            unparsed.contains(&row_of("40")),
            "after the added rows: realigned"
        );
        assert!(!unparsed.contains(&row_of("97")), "no line end: parsed");
        // The index written in that run describes the file as it is now: every row but the
        // new ones and those with quoted errors comes unparsed.
        let (_, _, again) = rows_read(&path, Some(&index));
        let quoted = plain
            .iter()
            .filter(|r| r.record.get(3).is_some_and(|e| e.contains(',')))
            .count();
        assert_eq!(
            again.len(),
            plain.len() - quoted - 1 - 1,
            "all but 97 and the Latin-1 row"
        );
    }

    #[test]
    fn rows_known_by_their_bytes_in_a_file_whose_line_ends_changed_read_as_parsed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("orders.csv.kksync.db.rows");
        let path = dir.path().join("orders.csv");
        // The same row bytes ("\n1,a" before the results) follow an empty line in the first
        // file and end the header's CRLF in the second; the last row then loses its line end.
        let files: [&[u8]; 4] = [
            b"number,x,paymentStatus,syncError\n\n1,a,PAID,\n2,b,UNPAID,\n",
            b"number,x,paymentStatus,syncError\r\n1,a,PAID,\r\n2,b,UNPAID,\r\n",
            b"number,x,paymentStatus,syncError\r\n1,a,PAID,\r\n2,b,UNPAID,",
            b"number,x,paymentStatus,syncError\r\n1,a,PAID,\r\n2,b,UNPAID,\r\n\r\n",
        ];
        for (i, bytes) in files.iter().enumerate() {
            std::fs::write(&path, bytes).unwrap();
            let (plain, trailing, _) = rows_read(&path, None);
            let (indexed, indexed_trailing, unparsed) = rows_read(&path, Some(&index));
            assert_eq!(described(&indexed), described(&plain), "file {i}");
            assert_eq!(indexed_trailing, trailing, "file {i}");
            if i > 0 {
                assert!(!unparsed.is_empty(), "file {i}: the index was used");
            }
        }
    }

    #[test]
    fn rows_with_an_order_column_after_the_results_are_always_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("orders.csv.kksync.db.rows");
        let text = "number,paymentStatus,syncError,amount\n1,PAID,,1.00\n2,PAID,,2.00\n";
        let path = write(dir.path(), "orders.csv", text.as_bytes());
        rows_read(&path, Some(&index));
        // Only the amount changes: known by the bytes before the results, it would pass as
        // unchanged.
        std::fs::write(&path, text.replace("2.00", "3.00")).unwrap();
        let (rows, _, unparsed) = rows_read(&path, Some(&index));
        assert!(unparsed.is_empty());
        assert_eq!(rows[1].record.get(3), Some("3.00"));
    }

    #[test]
    fn sniffs_semicolons_bom_and_crlf() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "a.csv",
            b"\xEF\xBB\xBFnumber;amount;\"a,b,c\"\r\n1;2,5;x\r\n",
        );
        let dialect = sniff(&path, None).unwrap();
        assert_eq!(
            (dialect.delimiter, dialect.bom, dialect.crlf),
            (b';', true, true)
        );
        let path = write(dir.path(), "b.csv", b"number,amount\n1,2\n");
        let dialect = sniff(&path, None).unwrap();
        assert_eq!(
            (dialect.delimiter, dialect.bom, dialect.crlf),
            (b',', false, false)
        );
    }

    #[test]
    fn rewrite_keeps_everything_and_adds_result_columns() {
        let dir = tempfile::tempdir().unwrap();
        let original =
            "\u{feff}number;amount;notiz\r\n1;2,50;\"mit; Semikolon\"\r\n2;3\r\n3;4;x;extra\r\n";
        let path = write(dir.path(), "o.csv", original.as_bytes());
        let (mut source, sink) = open(&path, None, &ColumnNames::default(), false).unwrap();
        let mut sink = sink.unwrap();
        let mut rows = Vec::new();
        while let Some(row) = source.next_row().unwrap() {
            rows.push(row);
        }
        assert_eq!(
            rows.iter().map(|r| r.row).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert!(rows[2].defect.is_some());
        let results = [
            RowResult::Synced {
                status: "PAID".into(),
            },
            RowResult::Failed {
                error: "row 3: bad".into(),
            },
            RowResult::Untouched,
        ];
        let finished: Vec<FinishedRow> = rows
            .into_iter()
            .zip(results)
            .map(|(source, result)| FinishedRow { source, result })
            .collect();
        sink.write(&finished).unwrap();
        Box::new(sink).finish(true).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            written,
            "\u{feff}number;amount;notiz;paymentStatus;syncError\r\n1;2,50;mit; Semikolon;PAID;\r\n2;3;;;row 3: bad\r\n3;4;x;;;extra\r\n"
                .replace("mit; Semikolon", "\"mit; Semikolon\"")
        );
    }

    /// Rewrites `original` with every row synced as PAID; returns the row numbers read and
    /// the file written.
    fn rewrite_all_paid(original: &str) -> (Vec<u64>, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "o.csv", original.as_bytes());
        let (mut source, sink) = open(&path, None, &ColumnNames::default(), false).unwrap();
        let mut sink = sink.unwrap();
        let mut rows = Vec::new();
        while let Some(row) = source.next_row().unwrap() {
            rows.push(FinishedRow {
                source: row,
                result: RowResult::Synced {
                    status: "PAID".into(),
                },
            });
        }
        let numbers = rows.iter().map(|r| r.source.row).collect();
        sink.write(&rows).unwrap();
        sink.write_trailing_blank_lines(source.trailing_blank_lines())
            .unwrap();
        Box::new(sink).finish(true).unwrap();
        (numbers, std::fs::read_to_string(&path).unwrap())
    }

    #[test]
    fn empty_lines_are_kept_and_counted_in_row_numbers_as_a_spreadsheet_shows_them() {
        // Spreadsheet rows: header 1, empty 2, A 3, B 4 (on two lines: a quoted line break),
        // empty 5 and 6, C 7, empty 8.
        let original = "number,notiz\n\nA,x\nB,\"zwei\nZeilen\"\n\n\nC,y\n\n";
        let (rows, written) = rewrite_all_paid(original);
        assert_eq!(rows, [3, 4, 7]);
        assert_eq!(
            written,
            "number,notiz,paymentStatus,syncError\n\nA,x,PAID,\nB,\"zwei\nZeilen\",PAID,\n\n\nC,y,PAID,\n\n"
        );
        let crlf = original.replace('\n', "\r\n");
        let (rows, written) = rewrite_all_paid(&crlf);
        assert_eq!(rows, [3, 4, 7]);
        assert_eq!(
            written,
            "number,notiz,paymentStatus,syncError\r\n\r\nA,x,PAID,\r\nB,\"zwei\r\nZeilen\",PAID,\r\n\r\n\r\nC,y,PAID,\r\n\r\n"
        );
        // Without a final line end, and without empty lines, nothing is added.
        let (rows, written) = rewrite_all_paid("number\nA\nB");
        assert_eq!(rows, [2, 3]);
        assert_eq!(
            written,
            "number,paymentStatus,syncError\nA,PAID,\nB,PAID,\n"
        );
    }

    /// Found by review: the first version counted csv's lines, which the last row without a line
    /// end and mixed line ends threw off.
    #[test]
    fn empty_lines_are_found_whatever_the_line_ends() {
        let header = "number,paymentStatus,syncError";
        // An empty line before a last row that has no line end.
        let (rows, written) = rewrite_all_paid("number\nA\n\nB");
        assert_eq!(rows, [2, 4]);
        assert_eq!(written, format!("{header}\nA,PAID,\n\nB,PAID,\n"));
        // Header in CRLF, rows in LF (and the other way round): no empty line appears, and the
        // rewrite uses the header's line end throughout.
        let (rows, written) = rewrite_all_paid("number\r\nA\nB\n");
        assert_eq!(rows, [2, 3]);
        assert_eq!(written, format!("{header}\r\nA,PAID,\r\nB,PAID,\r\n"));
        let (rows, written) = rewrite_all_paid("number\nA\r\nB\r\n");
        assert_eq!(rows, [2, 3]);
        assert_eq!(written, format!("{header}\nA,PAID,\nB,PAID,\n"));
        // Mixed, with empty lines of both kinds and a lone CR.
        let (rows, written) = rewrite_all_paid("number\r\nA\n\r\n\nB\r\n\rC\n\n");
        assert_eq!(rows, [2, 5, 7]);
        assert_eq!(
            written,
            format!("{header}\r\nA,PAID,\r\n\r\n\r\nB,PAID,\r\n\r\nC,PAID,\r\n\r\n")
        );
        // Empty lines before the header; a line holding a space is a row, not an empty line.
        let (rows, written) = rewrite_all_paid("\n\nnumber\nA\n \nB\n");
        assert_eq!(rows, [4, 5, 6]);
        assert_eq!(
            written,
            format!("\n\n{header}\nA,PAID,\n ,PAID,\nB,PAID,\n")
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_pipe_is_refused_instead_of_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.csv");
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates the file.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let error = open(&path, None, &ColumnNames::default(), true)
            .err()
            .unwrap();
        assert!(error.to_string().contains("not a regular file"), "{error}");
    }

    #[test]
    fn temporary_files_of_a_killed_run_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "o.csv", b"number\n1\n");
        write(dir.path(), ".o.csv.AbC123.kksync-tmp", b"number\n");
        write(dir.path(), ".other.csv.AbC123.kksync-tmp", b"keep");
        let (_, sink) = open(&path, None, &ColumnNames::default(), false).unwrap();
        Box::new(sink.unwrap()).finish(false).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".other.csv.AbC123.kksync-tmp", "o.csv"]);
    }

    #[test]
    fn unchanged_run_leaves_the_file_byte_identical_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "o.csv", b"number,amount\n1,2\n");
        let (_, sink) = open(&path, None, &ColumnNames::default(), false).unwrap();
        Box::new(sink.unwrap()).finish(false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"number,amount\n1,2\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn latin1_rows_are_decoded_for_validation_and_written_back_as_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "o.csv", b"number,city\n1,K\xF6ln\n");
        let (mut source, sink) = open(&path, None, &ColumnNames::default(), false).unwrap();
        let row = source.next_row().unwrap().unwrap();
        assert_eq!(row.record.get(1), Some("Köln"));
        let mut sink = sink.unwrap();
        sink.write(&[FinishedRow {
            source: row,
            result: RowResult::Synced {
                status: "UNPAID".into(),
            },
        }])
        .unwrap();
        Box::new(sink).finish(true).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"number,city,paymentStatus,syncError\n1,K\xF6ln,UNPAID,\n"
        );
    }

    /// A row read into the memory of a row given back holds exactly what a fresh one would:
    /// longer and shorter rows, fewer fields, Latin-1 among UTF-8.
    #[test]
    fn rows_read_into_recycled_memory_are_the_rows_read_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "o.csv",
            b"number,city,note\n1,M\xC3\xBCnchen,a long note\n2,K\xF6ln,x\n3,,\n4,Bonn\n\n5,\xC3\x9Flm,\"q,\"\n",
        );
        let read = |recycle: bool| {
            let (mut source, _) = open(&path, None, &ColumnNames::default(), true).unwrap();
            let mut rows = Vec::new();
            while let Some(row) = source.next_row().unwrap() {
                rows.push((row.row, row.record.clone(), row.raw.clone(), row.offset));
                if recycle {
                    source.recycle(row);
                }
            }
            rows
        };
        let afresh = read(false);
        assert_eq!(afresh.len(), 5);
        assert_eq!(afresh[1].1.get(1), Some("Köln"));
        assert_eq!(read(true), afresh);
    }

    #[cfg(unix)]
    #[test]
    fn permissions_survive_the_rewrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "o.csv", b"number\n1\n");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let (_, sink) = open(&path, None, &ColumnNames::default(), false).unwrap();
        Box::new(sink.unwrap()).finish(true).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn the_quote_state_machine_finds_only_unclosed_fields() {
        let open = |text: &str| unclosed_quote(text.as_bytes(), b';').unwrap();
        assert_eq!(open("1;\"a;b\";c\n2;x\n"), None);
        assert_eq!(open("1;\"say \"\"hi\"\"\";c\n"), None, "doubled quotes");
        assert_eq!(open("1;\"multi\nline\"\n"), None);
        assert_eq!(
            open("1;ab\"c;d\n"),
            None,
            "a quote inside a field is literal"
        );
        assert_eq!(open("1;\"x\"y\"z\n"), None, "closed, then literal");
        assert_eq!(open("1;\"\""), None, "empty quoted field at the end");
        assert_eq!(open("1;\"Am Markt 5;UNPAID;\n2;b\n"), Some(0));
        assert_eq!(
            open("1;a\r\n2;\"x\"\"\n3"),
            Some(1),
            "an escaped quote does not close"
        );
    }

    #[test]
    fn an_unclosed_quote_fails_the_read_naming_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let text =
            "number;street;paymentStatus\n1;Hauptstr. 1;\n2;\"Am Markt 5;UNPAID;\n3;Weg 3;\n";
        let path = write(dir.path(), "o.csv", text.as_bytes());
        let (mut source, _) = open(&path, None, &ColumnNames::default(), true).unwrap();
        assert_eq!(source.next_row().unwrap().unwrap().row, 2);
        let error = source.next_row().unwrap_err().to_string();
        assert!(
            error.contains("row 3: a quoted field is not closed before the end of the file")
                && error.contains("line 3"),
            "{error}"
        );
        // A well-formed last row, with or without a final line break, reads as before.
        for text in ["number\n1\n\"2\"\n", "number\n1\n\"2\""] {
            let path = write(dir.path(), "p.csv", text.as_bytes());
            let (mut source, _) = open(&path, None, &ColumnNames::default(), true).unwrap();
            let mut rows = 0;
            while source.next_row().unwrap().is_some() {
                rows += 1;
            }
            assert_eq!(rows, 2, "{text:?}");
        }
    }

    #[test]
    fn the_quote_check_does_not_read_a_file_renamed_into_place_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "o.csv", b"number\n1\n2\n");
        let (mut source, _) = open(&path, None, &ColumnNames::default(), true).unwrap();
        // A new export replaces the file while the old one is still being read.
        let next = write(dir.path(), "next.csv", b"number\n1\n2\n3\n");
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(source.next_row().unwrap().unwrap().row, 2);
        let error = source.next_row().unwrap_err();
        assert!(matches!(error, SourceError::Changed { .. }), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn owner_and_group_survive_the_rewrite() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "o.csv", b"number\n1\n");
        // Only root may give a file away; as anyone else the rewrite keeps what it can.
        if std::os::unix::fs::chown(&path, Some(1234), Some(5678)).is_err() {
            eprintln!("not root: skipping the chown to another owner");
            return;
        }
        let (_, sink) = open(&path, None, &ColumnNames::default(), false).unwrap();
        Box::new(sink.unwrap()).finish(true).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"number,paymentStatus,syncError\n",
            "the file was rewritten"
        );
        assert_eq!((metadata.uid(), metadata.gid()), (1234, 5678));
    }

    #[test]
    fn a_source_replaced_meanwhile_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "o.csv", b"number\n1\n");
        let (_, sink) = open(&path, None, &ColumnNames::default(), false).unwrap();
        // A new export, renamed into place as shops do.
        let fresh = write(dir.path(), "new.csv", b"number\n1\n2\n");
        std::fs::rename(&fresh, &path).unwrap();
        let error = Box::new(sink.unwrap()).finish(true).unwrap_err();
        assert!(matches!(error, SourceError::Changed { .. }), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), b"number\n1\n2\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file"
        );
    }

    #[test]
    fn a_column_kksync_uses_twice_in_the_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for header in [
            "number;amount;x;amount",
            "number;paymentStatus;paymentStatus",
        ] {
            let path = write(
                dir.path(),
                "d.csv",
                format!("{header}\n1;2;3;4\n").as_bytes(),
            );
            let error = open(&path, None, &ColumnNames::default(), false)
                .err()
                .unwrap();
            assert!(
                error.to_string().contains("appears more than once"),
                "{error}"
            );
        }
        // Columns kksync only carries through may repeat.
        let path = write(dir.path(), "ok.csv", b"number;note;note\n1;a;b\n");
        assert!(open(&path, None, &ColumnNames::default(), false).is_ok());
    }

    #[test]
    fn a_file_without_number_column_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "o.csv", b"id,amount\n1,2\n");
        let error = open(&path, None, &ColumnNames::default(), true)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("no `number` column"), "{error}");
    }
}
