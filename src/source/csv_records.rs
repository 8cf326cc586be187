//! CSV records read straight off the file with `csv_core`: each one's fields, where it starts
//! and ends, and the empty lines before it.
//!
//! `csv::Reader` reads through a buffer of its own (a second copy of every byte) and reports
//! where a record ends but not how many empty lines it skipped before it, so the readers used to
//! read the whole file a second time alongside to count them. Parsing with `csv_core` over one
//! buffer of our own gives both from the bytes the parser consumes (the orders' and the refunds'
//! CSV readers). The parser is configured as `csv::ReaderBuilder::new()`
//! configures it (line ends `\n`, `\r` or `\r\n`, `"` quotes doubled inside quoted fields, a
//! byte order mark at the start dropped), so records and positions are the ones csv gave.

use std::fs::File;
use std::io::{self, Read};

use csv::ByteRecord;
use csv_core::ReadRecordResult;

/// Bytes read from the file at a time.
const BUFFER: usize = 256 * 1024;

/// A record starts with at least this many bytes of the file in the buffer (unless the file
/// ends first), so that every record up to this long lies in the buffer whole
/// ([`Records::last_bytes`]).
const WHOLE: usize = 32 * 1024;

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

    /// Gives a record never used room to start with.
    fn make_room(&mut self) {
        if self.bytes.is_empty() {
            self.bytes.resize(1024, 0);
        }
        if self.ends.is_empty() {
            self.ends.resize(64, 0);
        }
    }

    fn grow_bytes(&mut self) {
        let grown = self.bytes.len() * 2;
        self.bytes.resize(grown, 0);
    }

    fn grow_ends(&mut self) {
        let grown = self.ends.len() * 2;
        self.ends.resize(grown, 0);
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
    /// Records were skipped ([`Records::skip`]) since the parser last read one.
    skipped: bool,
    /// How many bytes the last skip passed.
    skipped_len: usize,
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
            parser: parser(delimiter),
            skipped: false,
            skipped_len: 0,
        }
    }

    /// The bytes consumed so far: the end of the last record read.
    pub(crate) fn position(&self) -> u64 {
        self.at
    }

    /// Reads the next record into `record`.
    pub(crate) fn read(&mut self, record: &mut RawRecord) -> io::Result<Next> {
        if self.skipped {
            // The parser did not see the records skipped: it goes on as if from the start of a
            // record (which it is at), on the line they ended on.
            self.skipped = false;
            let line = self.parser.line();
            restart(&mut self.parser, line);
        }
        if self.filled - self.pos < WHOLE {
            self.fill_to(WHOLE)?;
        }
        let start = self.at;
        let line = self.parser.line();
        let mut blank = BlankLines::after(self.after_cr);
        record.used = 0;
        record.fields = 0;
        loop {
            record.make_room();
            if self.pos == self.filled && !self.eof {
                self.fill_to(1)?;
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
                ReadRecordResult::OutputFull => record.grow_bytes(),
                ReadRecordResult::OutputEndsFull => record.grow_ends(),
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

    /// The bytes of the record `span` (the last one read), if they are still in the buffer.
    pub(crate) fn last_bytes(&self, span: &Span) -> Option<&[u8]> {
        let base = self.at - self.pos as u64;
        let from = usize::try_from(span.start.checked_sub(base)?).ok()?;
        self.buffer.get(from..self.pos)
    }

    /// The bytes [`Records::skip`] passed last.
    pub(crate) fn last_skipped(&self) -> &[u8] {
        // Nothing moved the buffer since, while the caller holds to that (see
        // `OrderSource::full_row`); otherwise these are not the bytes, and parsing them fails.
        self.pos
            .checked_sub(self.skipped_len)
            .and_then(|start| self.buffer.get(start..self.pos))
            .unwrap_or_default()
    }

    /// Whether the last byte consumed was a `\r` (for [`blank_lines`]).
    pub(crate) fn after_cr(&self) -> bool {
        self.after_cr
    }

    /// The line the parser is on (counting from 1): past the last record read or skipped.
    pub(crate) fn line(&self) -> u64 {
        self.parser.line()
    }

    /// The unread bytes, at least `wanted` of them unless the file ends first or `wanted` is
    /// more than the buffer holds.
    pub(crate) fn peek(&mut self, wanted: usize) -> io::Result<&[u8]> {
        if self.filled - self.pos < wanted {
            self.fill_to(wanted)?;
        }
        Ok(&self.buffer[self.pos..self.filled])
    }

    /// Passes the next `len` bytes, a whole record (from the end of the last one through its
    /// line end) known without parsing it, with `newlines` `\n` among them. The caller took
    /// them from [`Records::peek`].
    pub(crate) fn skip(&mut self, len: usize, newlines: u64) {
        let len = len.min(self.filled - self.pos);
        self.skipped_len = len;
        self.pos += len;
        self.at += len as u64;
        if len > 0 {
            self.after_cr = self.buffer[self.pos - 1] == b'\r';
        }
        self.parser.set_line(self.parser.line() + newlines);
        self.skipped = true;
    }

    /// Moves the unread bytes to the front of the buffer and reads until it holds `wanted`
    /// (or is full, or the file ends).
    fn fill_to(&mut self, wanted: usize) -> io::Result<()> {
        self.buffer.copy_within(self.pos..self.filled, 0);
        self.filled -= self.pos;
        self.pos = 0;
        let wanted = wanted.min(self.buffer.len());
        while self.filled < wanted && !self.eof {
            match self.file.read(&mut self.buffer[self.filled..]) {
                Ok(0) => self.eof = true,
                Ok(read) => self.filled += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// The parser `csv::ReaderBuilder::new()` would build, with `delimiter`.
pub(crate) fn parser(delimiter: u8) -> csv_core::Reader {
    csv_core::ReaderBuilder::new().delimiter(delimiter).build()
}

/// Makes `parser` read on from the start of a record other than the first in the file, on
/// `line`.
fn restart(parser: &mut csv_core::Reader, line: u64) {
    parser.reset();
    // csv_core drops a byte order mark at the start of what it reads first; there that is a
    // row, whose leading bytes are its own. A first read that consumes nothing (it has no
    // room for output) marks the parser as having read.
    let _ = parser.read_record(b"\n", &mut [], &mut []);
    parser.set_line(line);
}

/// Parses `bytes`, one whole record (from the end of the previous one through its line end,
/// as [`Records::last_bytes`] gave it), into `record`, with `parser` (reused); `false` if they
/// do not hold one record.
pub(crate) fn parse_record(
    parser: &mut csv_core::Reader,
    bytes: &[u8],
    record: &mut RawRecord,
) -> bool {
    parse_one(parser, bytes, false, record) == Some((bytes.len(), false))
}

/// Parses the results of a record whose first `prefix` of `bytes` are known (they end
/// before the delimiter of its first result column, or at its line end when it has none) into
/// `record`: the empty field the delimiter ends, then the results. `to_end`: `bytes` run to
/// the end of the file. How many bytes the record takes, through its line end; `None` if
/// `bytes` do not hold all of it or do not continue as a record with results can.
pub(crate) fn parse_results(
    parser: &mut csv_core::Reader,
    bytes: &[u8],
    prefix: usize,
    delimiter: u8,
    to_end: bool,
    record: &mut RawRecord,
) -> Option<usize> {
    record.used = 0;
    record.fields = 0;
    match bytes.get(prefix) {
        // No results (yet): the record ends at its line end.
        Some(b'\n' | b'\r') => return Some(prefix + 1),
        Some(&byte) if byte == delimiter => {}
        // A record cut at the end of the file has nothing the index may describe.
        _ => return None,
    }
    match parse_one(parser, &bytes[prefix..], to_end, record)? {
        (len, false) => Some(prefix + len),
        // A record the end of the file ends (no line end) is read whole, like any last row an
        // entry cannot describe: `full_row` could not read it alone again.
        (_, true) => None,
    }
}

/// Parses one record from the start of `input` into `record`, with `parser` restarted for it.
/// How many bytes it took, and whether the end of the file ended it (`to_end`: `input` runs to
/// the end of the file); `None` if `input` ends before the record does.
fn parse_one(
    parser: &mut csv_core::Reader,
    mut input: &[u8],
    to_end: bool,
    record: &mut RawRecord,
) -> Option<(usize, bool)> {
    restart(parser, 1);
    record.used = 0;
    record.fields = 0;
    let length = input.len();
    let mut finished = false;
    loop {
        record.make_room();
        let (result, read, written, ended) = parser.read_record(
            input,
            &mut record.bytes[record.used..],
            &mut record.ends[record.fields..],
        );
        input = &input[read..];
        record.used += written;
        record.fields += ended;
        match result {
            ReadRecordResult::OutputFull => record.grow_bytes(),
            ReadRecordResult::OutputEndsFull => record.grow_ends(),
            ReadRecordResult::Record => return Some((length - input.len(), finished)),
            ReadRecordResult::InputEmpty if to_end && !finished => finished = true,
            ReadRecordResult::InputEmpty | ReadRecordResult::End => return None,
        }
    }
}

/// The empty lines `bytes` start with, read right after a `\r` (`after_cr`) or not, as
/// [`Records::read`] counts them.
pub(crate) fn blank_lines(after_cr: bool, bytes: &[u8]) -> u64 {
    let mut blank = BlankLines::after(after_cr);
    blank.count(bytes);
    blank.lines
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
