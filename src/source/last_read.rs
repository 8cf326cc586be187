//! What the last run read from a CSV file, row by row, so that a row whose order columns have
//! not changed since is not parsed again.
//!
//! A nightly run over a large export finds almost every row as the night before. Parsing such
//! a row (`csv_core` looks at every byte: about half of what the reader spends on a row),
//! checking its UTF-8 and hashing its fields only to learn that it is unchanged is most of the
//! reader's work. So each run writes, beside the state store (`<state>.rows`), one entry per
//! row it read: how long the row's bytes before its result columns are (its *prefix*: every
//! order column comes before the results, or the index is not used) and a hash of them, and
//! what the reader needs of a row it does not send: its order number, its row fingerprint, how
//! many line breaks the prefix has. The next run, at the start of each row,
//! hashes the next entry's length of bytes; when the hash matches, only the results after the
//! prefix are parsed (a few bytes: they are what the write-back changes), and the row is
//! handed out with its number and results, unparsed otherwise.
//!
//! Nothing is trusted beyond the bytes: every decision is still taken against the state store,
//! and a row the reader does need whole (it is to be sent, or its number repeats) is parsed
//! from its bytes after all ([`super::OrderSource::full_row`]). The entries hold only what the
//! bytes determine, under a key of everything else that does (the delimiter, the column
//! mapping, the fingerprint scheme and where the results start, see [`key`]), and each entry's
//! hash covers its own fields too, so an entry torn by a crash, or an index of another file or
//! version, is merely a miss. A row that misses is parsed as before; the entries realign after
//! a row changed in place, rows added anywhere and a few thousand rows removed from the top
//! (an export of the last N days). Rows an entry cannot describe are not indexed and always
//! parsed: results that need quotes (an error message with a comma), rows that are not UTF-8
//! or have too many or too few fields, a last row without a line end.
//!
//! The index is written as `<state>.rows.tmp` while the file is read and renamed over
//! `<state>.rows` once the whole file was read. It is a cache: failing to write it costs the
//! next run its speed, not its correctness, and is only logged.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The start of the file: its kind and the version of its layout.
const MAGIC: &[u8; 8] = b"KKROWS1\n";

/// Entries kept ahead while looking for where a row went (rows removed before it).
const LOOKAHEAD: usize = 16_384;

/// Looks for a moved row stop after this many in a row found nothing (rows added in many
/// places: every one would cost a look through the whole lookahead).
const FRUITLESS_LOOKS: u32 = 64;

/// Longest number an entry holds.
const MAX_NUMBER: usize = u8::MAX as usize;

/// Longest prefix an entry describes: it has to fit in the reader's buffer with room for
/// the results after it.
pub(crate) const MAX_PREFIX: usize = 16 * 1024;

/// What the last run read of a row: the row up to its result columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The row's bytes before its result columns: from the end of the previous record up to
    /// the delimiter before the first result column (or up to the line end when the file has
    /// no result columns yet: the write-back appends them there).
    pub(crate) prefix: u32,
    /// `\n` among them.
    pub(crate) newlines: u32,
    /// [`crate::order::row_fingerprint`] of the record (the order's columns all lie in the
    /// prefix).
    pub(crate) row_fingerprint: u64,
    /// The order number field as it stands (untrimmed).
    pub(crate) number: String,
    /// Hash of the prefix, seeded with the key and the fields above (set by
    /// [`NextRead::add`]).
    pub(crate) hash: u64,
}

impl Entry {
    /// How long the prefix of a record whose bytes are `bytes` (through its line end) is,
    /// when its `results` (the fields from the first result column on) are plain: written as
    /// they are, each after a `delimiter`. `None` when the record cannot be described: it
    /// has no line end (the last row may grow), a result needs quoting, or the bytes do not
    /// end in them (quoted after all).
    pub(crate) fn prefix_of<'f>(
        bytes: &[u8],
        delimiter: u8,
        results: impl DoubleEndedIterator<Item = &'f [u8]>,
    ) -> Option<usize> {
        let (&line_end, mut rest) = bytes.split_last()?;
        if line_end != b'\n' && line_end != b'\r' {
            return None;
        }
        for field in results.rev() {
            let plain = !field
                .iter()
                .any(|&b| b == delimiter || b == b'"' || b == b'\n' || b == b'\r');
            rest = rest.strip_suffix(field).filter(|_| plain)?;
            rest = rest.strip_suffix(&[delimiter])?;
        }
        // A record has at least its order number before the results.
        (!rest.is_empty() && rest.len() <= MAX_PREFIX).then_some(rest.len())
    }

    /// The fields after the hash, as written.
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix.to_le_bytes());
        out.extend_from_slice(&self.newlines.to_le_bytes());
        out.extend_from_slice(&self.row_fingerprint.to_le_bytes());
        // `NextRead::add` takes only numbers within a byte's length.
        out.push(u8::try_from(self.number.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.number.as_bytes());
    }

    /// The hash of `prefix` as this entry's under `key`.
    fn hash_of(&self, key: u64, prefix: &[u8], scratch: &mut Vec<u8>) -> u64 {
        scratch.clear();
        self.encode_fields(scratch);
        xxh3_64_with_seed(prefix, xxh3_64_with_seed(scratch, key))
    }
}

/// The key an index is valid under: everything besides a row's bytes that decides what the
/// entries say. `probe` is the row fingerprint of a fixed record under the file's column
/// mapping, so a changed mapping or fingerprint scheme changes the key; `first_result` is
/// where the result columns start (where the write-back appends them, if the header lacks
/// them).
pub(crate) fn key(delimiter: u8, probe: u64, first_result: usize) -> u64 {
    let mut seed = Vec::with_capacity(32);
    seed.extend_from_slice(MAGIC);
    seed.push(delimiter);
    seed.extend_from_slice(&probe.to_le_bytes());
    seed.extend_from_slice(
        &u64::try_from(first_result)
            .unwrap_or(u64::MAX)
            .to_le_bytes(),
    );
    xxh3_64_with_seed(&seed, 0)
}

/// Reads the entries of the last run, one row at a time.
pub(crate) struct LastRead {
    key: u64,
    file: Option<BufReader<File>>,
    /// Entries read but not yet passed: the next one first.
    ahead: VecDeque<Entry>,
    /// Looks for a moved row that found nothing, since the last that found it.
    fruitless: u32,
    scratch: Vec<u8>,
}

impl LastRead {
    /// The entries in `path`, if it holds an index under `key`; an index that is missing or
    /// made under another key gives no entries.
    pub(crate) fn open(path: &Path, key: u64) -> LastRead {
        let mut last = LastRead {
            key,
            file: None,
            ahead: VecDeque::new(),
            fruitless: 0,
            scratch: Vec::new(),
        };
        let Ok(file) = File::open(path) else {
            return last;
        };
        let mut file = BufReader::with_capacity(64 * 1024, file);
        let mut header = [0u8; 16];
        if file.read_exact(&mut header).is_ok()
            && header[..8] == MAGIC[..]
            && header[8..] == key.to_le_bytes()
        {
            last.file = Some(file);
        }
        last
    }

    /// Whether `bytes` start with the prefix of the row the next entry describes; that entry
    /// if so.
    pub(crate) fn matches(&mut self, bytes: &[u8]) -> Option<&Entry> {
        self.fill(1);
        let entry = self.ahead.front()?;
        let prefix = bytes.get(..usize::try_from(entry.prefix).ok()?)?;
        (entry.hash_of(self.key, prefix, &mut self.scratch) == entry.hash).then_some(entry)
    }

    /// How long the prefix the next entry describes is, if there is one.
    pub(crate) fn wanted(&mut self) -> Option<usize> {
        self.fill(1);
        self.ahead
            .front()
            .and_then(|e| usize::try_from(e.prefix).ok())
    }

    /// The next entry described the row just read: passes it.
    pub(crate) fn pass(&mut self) -> Option<Entry> {
        self.ahead.pop_front()
    }

    /// A row was parsed instead (its bytes did not match): passes the entries it replaces. A row
    /// changed in place replaces the next entry; a row found further ahead replaces it and the
    /// ones before it (rows removed); a row found nowhere ahead replaces none (a row added).
    pub(crate) fn parsed(&mut self, number: &str) {
        self.fill(1);
        if self.ahead.front().is_some_and(|e| e.number == number) {
            self.ahead.pop_front();
            return;
        }
        if self.fruitless >= FRUITLESS_LOOKS || self.ahead.is_empty() {
            return;
        }
        self.fill(LOOKAHEAD);
        match self.ahead.iter().position(|e| e.number == number) {
            Some(at) => {
                self.ahead.drain(..=at);
                self.fruitless = 0;
            }
            None => self.fruitless += 1,
        }
    }

    /// Reads entries until `count` are ahead or the index ends. An entry that cannot be
    /// decoded ends the index: the rows after it are parsed.
    fn fill(&mut self, count: usize) {
        while self.ahead.len() < count {
            let Some(file) = &mut self.file else {
                return;
            };
            match read_entry(file) {
                Some(entry) => self.ahead.push_back(entry),
                None => self.file = None,
            }
        }
    }
}

impl std::fmt::Debug for LastRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LastRead")
            .field("ahead", &self.ahead.len())
            .field("open", &self.file.is_some())
            .finish()
    }
}

fn read_entry(file: &mut impl Read) -> Option<Entry> {
    let mut fixed = [0u8; 8 + 4 + 4 + 8 + 1];
    file.read_exact(&mut fixed).ok()?;
    let (hash, rest) = fixed.split_at(8);
    let (prefix, rest) = rest.split_at(4);
    let (newlines, rest) = rest.split_at(4);
    let (row_fingerprint, rest) = rest.split_at(8);
    Some(Entry {
        prefix: u32::from_le_bytes(prefix.try_into().ok()?),
        newlines: u32::from_le_bytes(newlines.try_into().ok()?),
        row_fingerprint: u64::from_le_bytes(row_fingerprint.try_into().ok()?),
        number: read_text(file, rest[0])?,
        hash: u64::from_le_bytes(hash.try_into().ok()?),
    })
}

fn read_text(file: &mut impl Read, len: u8) -> Option<String> {
    let mut bytes = vec![0u8; usize::from(len)];
    file.read_exact(&mut bytes).ok()?;
    String::from_utf8(bytes).ok()
}

/// Writes the entries of this run into `<index>.tmp`, renamed over the index at the end.
pub(crate) struct NextRead {
    key: u64,
    path: PathBuf,
    temp: PathBuf,
    file: BufWriter<File>,
    scratch: Vec<u8>,
    /// Renamed into place.
    finished: bool,
}

impl std::fmt::Debug for NextRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextRead")
            .field("path", &self.path)
            .finish()
    }
}

impl NextRead {
    /// Starts the index at `path` (written beside it until [`NextRead::finish`]).
    pub(crate) fn create(path: &Path, key: u64) -> std::io::Result<NextRead> {
        let mut temp = path.as_os_str().to_owned();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let mut file = BufWriter::with_capacity(64 * 1024, File::create(&temp)?);
        file.write_all(MAGIC)?;
        file.write_all(&key.to_le_bytes())?;
        Ok(NextRead {
            key,
            path: path.to_path_buf(),
            temp,
            file,
            scratch: Vec::new(),
            finished: false,
        })
    }

    /// Adds the entry of a row whose prefix is `prefix`; its hash is computed here. A number
    /// too long for an entry is left out, and so is its row: the next run parses it.
    pub(crate) fn add(&mut self, mut entry: Entry, prefix: &[u8]) -> std::io::Result<()> {
        if entry.number.len() > MAX_NUMBER {
            return Ok(());
        }
        entry.hash = entry.hash_of(self.key, prefix, &mut self.scratch);
        self.add_hashed(&entry)
    }

    /// Adds an entry read from the last index, for a row whose bytes it matched.
    pub(crate) fn add_hashed(&mut self, entry: &Entry) -> std::io::Result<()> {
        self.scratch.clear();
        self.scratch.extend_from_slice(&entry.hash.to_le_bytes());
        entry.encode_fields(&mut self.scratch);
        self.file.write_all(&self.scratch)
    }

    /// Puts the index in place of the last one.
    ///
    /// The last one is removed first: renaming over an existing file makes ext4
    /// (`auto_da_alloc`) write the new one to disk before the rename returns, 32 ms for a
    /// million rows at the end of the pass. The index needs no such care: a torn or missing
    /// index is only a miss (every entry is checked against the row's bytes).
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        self.file.flush()?;
        // The rename reports what matters; a last index that could not be removed is replaced.
        let _ = std::fs::remove_file(&self.path);
        std::fs::rename(&self.temp, &self.path)?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for NextRead {
    /// An index not finished (the file was not read to its end, or writing it failed) is
    /// removed.
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Where the index of a source whose state store is `state` lives.
pub(crate) fn index_path(state: &Path) -> PathBuf {
    let mut path = state.as_os_str().to_owned();
    path.push(".rows");
    PathBuf::from(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(number: &str, prefix: &[u8]) -> Entry {
        Entry {
            prefix: prefix.len() as u32,
            newlines: prefix.iter().filter(|&&b| b == b'\n').count() as u32,
            row_fingerprint: 7,
            number: number.into(),
            hash: 0,
        }
    }

    /// An index of rows with these prefixes, written and opened again under `key`.
    fn index_of(rows: &[(&str, &[u8])], key: u64) -> (tempfile::TempDir, LastRead) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db.rows");
        let mut next = NextRead::create(&path, key).unwrap();
        for (number, prefix) in rows {
            next.add(entry(number, prefix), prefix).unwrap();
        }
        next.finish().unwrap();
        let last = LastRead::open(&path, key);
        (dir, last)
    }

    #[test]
    fn a_row_matches_only_its_own_prefix_under_the_same_key() {
        let rows: [(&str, &[u8]); 2] = [("1", b"1,a,b"), ("2", b"\n2,c,d")];
        let (_dir, mut last) = index_of(&rows, 5);
        assert_eq!(last.wanted(), Some(5));
        assert!(last.matches(b"1,a,X,PAID,\n").is_none());
        assert!(last.matches(b"1,a,").is_none(), "too few bytes");
        let found = last.matches(b"1,a,b,PAID,\n2,c");
        assert_eq!(found.map(|e| e.number.as_str()), Some("1"));
        assert_eq!(last.pass().map(|e| e.row_fingerprint), Some(7));
        assert_eq!(last.matches(b"\n2,c,d,,\n").map(|e| e.newlines), Some(1));

        let (_dir, mut other_key) = index_of(&rows, 6);
        other_key.key = 5;
        assert!(
            other_key.matches(b"1,a,b,\n").is_none(),
            "the hash is keyed"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db.rows");
        NextRead::create(&path, 6).unwrap().finish().unwrap();
        assert_eq!(
            LastRead::open(&path, 5).wanted(),
            None,
            "another key: no entries"
        );
        assert_eq!(LastRead::open(&dir.path().join("none"), 5).wanted(), None);
    }

    #[test]
    fn a_torn_entry_is_a_miss_and_a_cut_one_ends_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db.rows");
        let mut next = NextRead::create(&path, 1).unwrap();
        next.add(entry("1", b"1,a"), b"1,a").unwrap();
        next.add(entry("2", b"2,b"), b"2,b").unwrap();
        next.finish().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // The second entry's number (its last byte) changes from "2" to "3": its hash no
        // longer fits.
        let at = bytes.len() - 1;
        assert_eq!(bytes[at], b'2');
        bytes[at] = b'3';
        bytes.extend_from_slice(&[9, 9, 9]);
        std::fs::write(&path, &bytes).unwrap();
        let mut last = LastRead::open(&path, 1);
        assert!(last.matches(b"1,a,,\n").is_some());
        last.pass();
        assert!(last.matches(b"2,b,,\n").is_none());
        last.pass();
        assert_eq!(last.wanted(), None);
    }

    #[test]
    fn entries_realign_after_rows_changed_added_and_removed() {
        let rows: Vec<(String, Vec<u8>)> = (1..=10)
            .map(|n| (n.to_string(), format!("{n},x").into_bytes()))
            .collect();
        let refs: Vec<(&str, &[u8])> = rows.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
        let (_dir, mut last) = index_of(&refs, 3);
        // Rows 1-3 removed: row 4 is found ahead.
        assert!(last.matches(b"4,x,\n").is_none());
        last.parsed("4");
        assert_eq!(
            last.matches(b"5,x,\n").map(|e| e.number.clone()),
            Some("5".into())
        );
        last.pass();
        // Row 6 changed in place.
        assert!(last.matches(b"6,y,\n").is_none());
        last.parsed("6");
        // A row added before row 7.
        assert!(last.matches(b"99,x,\n").is_none());
        last.parsed("99");
        assert!(last.matches(b"7,x,\n").is_some());
    }

    #[test]
    fn the_prefix_ends_before_plain_results() {
        let fields = |f: &[&'static str]| f.iter().map(|f| f.as_bytes()).collect::<Vec<_>>();
        let prefix = |bytes: &[u8], results: &[&'static str]| {
            Entry::prefix_of(bytes, b',', fields(results).into_iter())
        };
        assert_eq!(prefix(b"1,\"a,b\",PAID,\r", &["PAID", ""]), Some(7));
        assert_eq!(prefix(b"\n1,a\n", &[]), Some(4), "results to be appended");
        assert_eq!(prefix(b"1,a,PAID,", &["PAID", ""]), None, "no line end");
        assert_eq!(prefix(b"1,a,\"PAID\",\n", &["PAID", ""]), None, "quoted");
        assert_eq!(
            prefix(b"1,a,,\"x,y\"\n", &["", "x,y"]),
            None,
            "needs quotes"
        );
        assert_eq!(prefix(b",PAID,\n", &["PAID", ""]), None, "nothing before");
    }

    #[test]
    fn the_key_covers_delimiter_mapping_and_result_columns() {
        let base = key(b',', 1, 2);
        assert_ne!(base, key(b';', 1, 2));
        assert_ne!(base, key(b',', 2, 2));
        assert_ne!(base, key(b',', 1, 3));
        assert_eq!(base, key(b',', 1, 2));
    }
}
