//! CSV records read straight off the file with `csv_core`: each one's fields, where it starts
//! and ends, and the empty lines before it.
//!
//! `csv::Reader` reads through a buffer of its own (a second copy of every byte) and reports
//! where a record ends but not how many empty lines it skipped before it, so the reader used to
//! read the whole file a second time alongside to count them ([`super::csv::Gaps`], which the
//! small refunds file still uses). Parsing with `csv_core` over one buffer of our own gives both
//! from the bytes the parser consumes. The parser is configured as `csv::ReaderBuilder::new()`
//! configures it (line ends `\n`, `\r` or `\r\n`, `"` quotes doubled inside quoted fields, a
//! byte order mark at the start dropped), so records and positions are the ones csv gave.

use std::fs::File;
use std::io::{self, Read};

use csv::ByteRecord;
use csv_core::ReadRecordResult;

/// Bytes read from the file at a time.
const BUFFER: usize = 256 * 1024;

/// Where a record was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// Where reading it began: the end of the previous record (csv's `ByteRecord::position`).
    pub(crate) start: u64,
    /// The line `start` is on, counting from 1.
    pub(crate) line: u64,
    /// Just past the record's line end (or the end of the file).
    pub(crate) end: u64,
    /// Empty lines between `start` and the record.
    pub(crate) blank_lines: u64,
}

/// What [`Records::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A record, now in the [`RawRecord`] passed.
    Record(Span),
    /// The end of the file, after this many empty lines.
    End { blank_lines: u64 },
}

/// A record's fields as the parser wrote them: back to back, with where each ends. Reused from
/// record to record, so reading allocates only while rows grow.
#[derive(Debug, Default)]
pub(crate) struct RawRecord {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Bytes of `bytes` in use; the rest is room for the parser.
    used: usize,
    /// Entries of `ends` in use.
    fields: usize,
}

impl RawRecord {
    /// All fields back to back.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.used]
    }

    /// Where each field ends in [`RawRecord::as_slice`].
    pub(crate) fn ends(&self) -> &[usize] {
        &self.ends[..self.fields]
    }

    /// How many fields the record has.
    pub(crate) fn len(&self) -> usize {
        self.fields
    }

    /// A `csv::ByteRecord` with the same fields.
    pub(crate) fn to_byte_record(&self) -> ByteRecord {
        let mut record = ByteRecord::with_capacity(self.used, self.fields);
        let mut start = 0;
        for &end in self.ends() {
            record.push_field(&self.bytes[start..end]);
            start = end;
        }
        record
    }
}

/// Reads the records of a CSV file one after the other.
pub(crate) struct Records {
    file: File,
    buffer: Box<[u8]>,
    /// The unread bytes are `buffer[pos..filled]`.
    pos: usize,
    filled: usize,
    /// The file has no more bytes to give.
    eof: bool,
    /// Where `buffer[pos]` is in the file: the bytes consumed so far.
    at: u64,
    /// The last byte consumed was a `\r` (a `\n` right after it ends the same line).
    after_cr: bool,
    parser: csv_core::Reader,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").field("at", &self.at).finish()
    }
}

impl Records {
    /// Reads `file` from where it stands, with fields separated by `delimiter`.
    pub(crate) fn new(file: File, delimiter: u8) -> Self {
        Records {
            file,
            buffer: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            filled: 0,
            eof: false,
            at: 0,
            after_cr: false,
            parser: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
        }
    }

    /// The bytes consumed so far: the end of the last record read.
    pub(crate) fn position(&self) -> u64 {
        self.at
    }

    /// Reads the next record into `record`.
    pub(crate) fn read(&mut self, record: &mut RawRecord) -> io::Result<Next> {
        let start = self.at;
        let line = self.parser.line();
        let mut blank = BlankLines::after(self.after_cr);
        record.used = 0;
        record.fields = 0;
        if record.bytes.is_empty() {
            record.bytes.resize(1024, 0);
        }
        if record.ends.is_empty() {
            record.ends.resize(64, 0);
        }
        loop {
            if self.pos == self.filled && !self.eof {
                self.refill()?;
            }
            let input = &self.buffer[self.pos..self.filled];
            let (result, read, written, ended) = self.parser.read_record(
                input,
                &mut record.bytes[record.used..],
                &mut record.ends[record.fields..],
            );
            let consumed = &input[..read];
            blank.count(consumed);
            if let Some(&last) = consumed.last() {
                self.after_cr = last == b'\r';
            }
            self.pos += read;
            self.at += read as u64;
            record.used += written;
            record.fields += ended;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    let grown = record.bytes.len() * 2;
                    record.bytes.resize(grown, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let grown = record.ends.len() * 2;
                    record.ends.resize(grown, 0);
                }
                ReadRecordResult::Record => {
                    return Ok(Next::Record(Span {
                        start,
                        line,
                        end: self.at,
                        blank_lines: blank.lines,
                    }));
                }
                ReadRecordResult::End => {
                    return Ok(Next::End {
                        blank_lines: blank.lines,
                    });
                }
            }
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        loop {
            match self.file.read(&mut self.buffer) {
                Ok(read) => {
                    self.pos = 0;
                    self.filled = read;
                    self.eof = read == 0;
                    return Ok(());
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// Counts the empty lines at the start of what the parser consumes for one record: every `\n`,
/// `\r\n` or `\r` before its first other byte, except the `\n` that completes the previous
/// record's `\r\n`.
struct BlankLines {
    lines: u64,
    counting: bool,
    after_cr: bool,
}

impl BlankLines {
    fn after(after_cr: bool) -> Self {
        BlankLines {
            lines: 0,
            counting: true,
            after_cr,
        }
    }

    fn count(&mut self, consumed: &[u8]) {
        if !self.counting {
            return;
        }
        for &byte in consumed {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' => self.lines += 1,
                b'\r' => {
                    self.lines += 1;
                    self.after_cr = true;
                }
                _ => {
                    self.counting = false;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record's fields and where it was found.
    type Found = (Vec<Vec<u8>>, Span);

    /// Every record of `bytes` with its span, then the empty lines at the end, as [`Records`]
    /// reads them.
    fn read_all(bytes: &[u8]) -> (Vec<Found>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        std::fs::write(&path, bytes).unwrap();
        let mut records = Records::new(File::open(&path).unwrap(), b',');
        let mut raw = RawRecord::default();
        let mut found = Vec::new();
        loop {
            match records.read(&mut raw).unwrap() {
                Next::Record(span) => {
                    let fields = raw.to_byte_record().iter().map(<[u8]>::to_vec).collect();
                    found.push((fields, span));
                }
                Next::End { blank_lines } => return (found, blank_lines),
            }
        }
    }

    /// What csv's own reader gives for `bytes`: fields, record positions (byte, line) and the
    /// position after each.
    fn csv_reads(bytes: &[u8]) -> Vec<(Vec<Vec<u8>>, u64, u64, u64)> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes);
        let mut record = ByteRecord::new();
        let mut found = Vec::new();
        while reader.read_byte_record(&mut record).unwrap() {
            let position = record.position().unwrap();
            found.push((
                record.iter().map(<[u8]>::to_vec).collect(),
                position.byte(),
                position.line(),
                reader.position().byte(),
            ));
        }
        found
    }

    #[test]
    fn records_and_positions_are_the_ones_csv_reads() {
        let inputs: [&[u8]; 7] = [
            b"a,b\n1,2\n3,4\n",
            b"a,b\r\n1,2\r\n\r\n3,4",
            b"\xEF\xBB\xBFa,b\n\n\n1,\"x\ny\"\n",
            b"a;b,\"c\"\"d\"\r3,4\r\r5,6\n",
            b"\n\na\n",
            b"",
            b"a,b\n1,2\n\n\r\n",
        ];
        for input in inputs {
            let (ours, _) = read_all(input);
            let expected = csv_reads(input);
            let ours: Vec<_> = ours
                .into_iter()
                .map(|(fields, span)| (fields, span.start, span.line, span.end))
                .collect();
            assert_eq!(ours, expected, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn empty_lines_are_counted_before_each_record_and_at_the_end() {
        let (records, trailing) = read_all(b"a\r\n\r\n\nb\r\rc\n\n\r\n");
        let blanks: Vec<u64> = records.iter().map(|(_, s)| s.blank_lines).collect();
        // The `\n` of a record's `\r\n` is not an empty line; a lone `\r` or `\n` is.
        assert_eq!(blanks, [0, 2, 1]);
        assert_eq!(trailing, 2);
    }

    #[test]
    fn a_record_longer_than_the_buffers_is_read_whole() {
        let long = "x".repeat(BUFFER + 5000);
        let many = vec!["y"; 300].join(",");
        let input = format!("{long},z\n{many}\n");
        let (records, _) = read_all(input.as_bytes());
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].0, [long.as_bytes(), b"z"]);
        assert_eq!(records[1].0.len(), 300);
        assert_eq!(records[1].1.end, input.len() as u64);
    }
}
