//! Reading the per-order state for a stream of order numbers, cheaply when the stream is sorted.
//!
//! Shop exports usually list orders by ascending number, and the state table is a B-tree on
//! the number. A point lookup per row costs a statement round trip and a tree descent
//! (several µs); reading the table forward a page at a time and answering from the page costs
//! a fraction of that. [`Lookahead`] does the second while the requested numbers ascend and
//! falls back to point lookups for a number behind its page, so any order is answered
//! correctly, only a sorted one faster.
//!
//! A page is a snapshot. The send phase writes only the state of numbers it has already asked
//! for (the journal of a sent order, a cleared error). The read-back running alongside may
//! update `payment_status` of a number still ahead in the page; the send phase uses that only
//! for `--resend-open-after`, where a stale status costs at most one harmless resend. The
//! write-back starts with a new `Lookahead`, after both have finished.

use rusqlite::params;

use super::orders::{
    KNOWN_COLUMNS, KNOWN_COLUMNS_FOR_SENDING, Known, known_columns, known_columns_for_sending,
    known_for_sending_into, known_into,
};
use super::{StateDb, StateError};

/// Pages grow up to this many rows while they are used, and shrink while they are not. Each
/// page is a statement run, and SQLite reprepares the page query for each (its plan depends
/// on the bound number), so pages of a few thousand rows keep that cost small.
const MAX_PAGE: usize = 4096;
const MIN_PAGE: usize = 16;

/// Answers [`StateDb::known`] for order numbers, a page of the table at a time.
#[derive(Debug)]
pub struct Lookahead {
    /// Rows of the table with `number >= from`, in order: the first `len` entries. Entries
    /// past `len` are kept for their memory, which the next page reuses.
    page: Vec<(String, Known)>,
    len: usize,
    /// Where the next number asked for is likely to be in the page (just after the last hit).
    cursor: usize,
    /// Where the page starts; `None` before the first page.
    from: Option<String>,
    /// The page holds every row from `from` to the end of the table.
    to_end: bool,
    /// Rows to read for the next page.
    size: usize,
    /// Lookups the current page answered.
    hits: usize,
    /// The answer of the last point lookup behind the page.
    behind: Option<Known>,
    /// Point lookups only: the numbers asked for are far apart.
    sparse: bool,
    /// Pages leave out what only the write-back and `--resend-open-after` look at.
    for_sending: bool,
}

impl Default for Lookahead {
    fn default() -> Self {
        Lookahead {
            page: Vec::new(),
            len: 0,
            cursor: 0,
            from: None,
            to_end: false,
            size: MIN_PAGE * 4,
            hits: 0,
            behind: None,
            sparse: false,
            for_sending: false,
        }
    }
}

impl Lookahead {
    /// A lookahead that reads no pages, for numbers far apart in the table (a page would be
    /// read for about one hit).
    pub fn sparse() -> Self {
        Lookahead {
            sparse: true,
            ..Lookahead::default()
        }
    }

    /// A lookahead for the send phase: its pages answer without `accepted_at` and
    /// `status_run` (`None`), which it does not look at unless it resends open orders after a
    /// while (`needs_accepted_at`: then they are read too). An order with an error, and a
    /// number behind the page, are looked up whole.
    pub fn for_sending(needs_accepted_at: bool) -> Self {
        Lookahead {
            for_sending: !needs_accepted_at,
            ..Lookahead::default()
        }
    }

    /// What the store knows about `number` (as [`StateDb::known`]).
    pub fn known(&mut self, db: &StateDb, number: &str) -> Result<Option<Known>, StateError> {
        Ok(self.known_ref(db, number)?.cloned())
    }

    /// As [`Lookahead::known`], without copying what the page holds.
    pub fn known_ref(&mut self, db: &StateDb, number: &str) -> Result<Option<&Known>, StateError> {
        self.known_ref_with(number, || Ok::<_, StateError>(db))
    }

    /// As [`Lookahead::known_ref`], but `store` is asked for the store only when the page
    /// cannot answer, so that a caller sharing the store takes its lock once a page, not once a
    /// number (a read-back running alongside holds it most of the time).
    pub fn known_ref_with<G, E>(
        &mut self,
        number: &str,
        mut store: impl FnMut() -> Result<G, E>,
    ) -> Result<Option<&Known>, E>
    where
        G: std::ops::Deref<Target = StateDb>,
        E: From<StateError>,
    {
        let in_page = !self.sparse
            && self
                .from
                .as_deref()
                .is_some_and(|from| number >= from && self.covers(number));
        let mut held = None;
        if !in_page {
            let db = held.insert(store()?);
            // Behind the page: the source is not sorted here.
            if self.sparse || self.from.as_deref().is_some_and(|from| number < from) {
                self.behind = db.known(number)?;
                return Ok(self.behind.as_ref());
            }
            self.load(db, number)?;
        }
        let page = &self.page[..self.len];
        // Ascending numbers hit the entry after the last hit; anything else is searched.
        let found = match page.get(self.cursor) {
            Some((n, _)) if n == number => Ok(self.cursor),
            _ => page.binary_search_by(|(n, _)| n.as_str().cmp(number)),
        };
        match found {
            Ok(index) => {
                self.hits += 1;
                self.cursor = index + 1;
                if self.for_sending && self.page[index].1.last_error.is_some() {
                    // A page for sending leaves out the details of an error: looked up whole.
                    let db = match held {
                        Some(db) => db,
                        None => store()?,
                    };
                    self.behind = db.known(number)?;
                    return Ok(self.behind.as_ref());
                }
                Ok(Some(&self.page[index].1))
            }
            Err(_) => Ok(None),
        }
    }

    /// Whether `number` (not before `from`) falls inside the page.
    fn covers(&self, number: &str) -> bool {
        self.to_end
            || self.page[..self.len]
                .last()
                .is_some_and(|(last, _)| number <= last.as_str())
    }

    /// Reads the page starting at `number`, sized by how well the last one served.
    fn load(&mut self, db: &StateDb, number: &str) -> Result<(), StateError> {
        if self.from.is_some() {
            self.size = if self.hits * 2 >= self.len {
                (self.size * 2).min(MAX_PAGE)
            } else {
                (self.size / 2).max(MIN_PAGE)
            };
        }
        self.len = 0;
        self.cursor = 0;
        self.hits = 0;
        let limit = i64::try_from(self.size).unwrap_or(i64::MAX);
        let (query, number_at) = match self.for_sending {
            false => (
                concat!(
                    known_columns!(),
                    ", number FROM kksync_order_state WHERE number >= ?1 ORDER BY number LIMIT ?2"
                ),
                KNOWN_COLUMNS,
            ),
            true => (
                concat!(
                    known_columns_for_sending!(),
                    ", number FROM kksync_order_state WHERE number >= ?1 ORDER BY number LIMIT ?2"
                ),
                KNOWN_COLUMNS_FOR_SENDING,
            ),
        };
        let read = db
            .connection()
            .prepare_cached(query)
            .and_then(|mut statement| {
                let mut rows = statement.query(params![number, limit])?;
                while let Some(row) = rows.next()? {
                    if self.len == self.page.len() {
                        self.page.push(Default::default());
                    }
                    let (number, known) = &mut self.page[self.len];
                    number.clear();
                    number.push_str(row.get_ref(number_at)?.as_str()?);
                    match self.for_sending {
                        false => known_into(known, row, 0)?,
                        true => known_for_sending_into(known, row)?,
                    }
                    self.len += 1;
                }
                Ok(())
            });
        if let Err(error) = read {
            // A page cut short must not answer as if it were whole.
            self.len = 0;
            self.from = None;
            return Err(db.error("reading the order state")(error));
        }
        self.to_end = self.len < self.size;
        self.from = Some(number.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::orders::JournalEntry;

    fn store_with(numbers: &[&str]) -> (tempfile::TempDir, StateDb) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = StateDb::open(&dir.path().join("s.db"), false).unwrap();
        let entries: Vec<JournalEntry> = numbers
            .iter()
            .enumerate()
            .map(|(i, n)| JournalEntry::Accepted {
                number: (*n).into(),
                fingerprint: i as u64 + 1,
                date: time::macros::date!(2026 - 10 - 01),
                status: format!("S{i}"),
                row_fingerprint: 0,
            })
            .collect();
        db.journal(1, &entries).unwrap();
        (dir, db)
    }

    #[test]
    fn answers_as_point_lookups_do_in_any_order() {
        let numbers: Vec<String> = (0..300).map(|i| format!("N{:04}", i * 3)).collect();
        let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
        let (_dir, db) = store_with(&refs);
        // Ascending with gaps and misses, then a jump back, a repeat, and past the end.
        let mut asked: Vec<String> = (0..900).map(|i| format!("N{i:04}")).collect();
        asked.extend(["N0003", "N0003", "N0450", "A", "Z", "N0899", "N0000"].map(String::from));
        let mut lookahead = Lookahead::default();
        for number in &asked {
            let expected = db.known(number).unwrap();
            assert_eq!(lookahead.known(&db, number).unwrap(), expected, "{number}");
            assert_eq!(
                lookahead.known_ref(&db, number).unwrap(),
                expected.as_ref(),
                "{number}"
            );
        }
    }

    /// Pages for the send phase answer as point lookups do, without `accepted_at` and
    /// `status_run`; an order with an error, and a number behind the page, are answered whole.
    #[test]
    fn pages_for_sending_leave_out_only_the_send_times_and_the_status_run() {
        let numbers: Vec<String> = (0..100).map(|i| format!("N{i:03}")).collect();
        let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
        let (_dir, mut db) = store_with(&refs);
        let failed = JournalEntry::Failed {
            number: "N050".into(),
            fingerprint: 7,
            error: "rejected".into(),
            transient: true,
        };
        db.journal(2, &[failed]).unwrap();
        let mut lookahead = Lookahead::for_sending(false);
        let mut full = Lookahead::for_sending(true);
        for number in numbers.iter().skip(10).chain(["N003".to_string()].iter()) {
            let whole = db.known(number).unwrap().unwrap();
            assert!(whole.accepted_at.is_some() && whole.status_run.is_some());
            assert_eq!(full.known(&db, number).unwrap().as_ref(), Some(&whole));
            let answer = lookahead.known(&db, number).unwrap().unwrap();
            if number == "N003" || number == "N050" {
                assert_eq!(answer, whole, "{number}: a point lookup");
            } else {
                let expected = Known {
                    accepted_at: None,
                    status_run: None,
                    ..whole
                };
                assert_eq!(answer, expected, "{number}");
            }
        }
        let n050 = db.known("N050").unwrap().unwrap();
        assert!(
            n050.last_error.is_some() && n050.error_fingerprint == Some(7) && n050.error_transient
        );
    }

    #[test]
    fn an_empty_store_is_read_once() {
        let (_dir, db) = store_with(&[]);
        let mut lookahead = Lookahead::default();
        for i in 0..100 {
            assert_eq!(lookahead.known(&db, &format!("N{i:03}")).unwrap(), None);
        }
        assert!(lookahead.to_end);
        assert_eq!(lookahead.from.as_deref(), Some("N000"));
    }

    /// The store is asked for only when the page cannot answer: for the first page, for each
    /// page after it, and for a number behind the page.
    #[test]
    fn the_store_is_asked_for_only_when_the_page_cannot_answer() {
        let numbers: Vec<String> = (0..100).map(|i| format!("N{i:03}")).collect();
        let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
        let (_dir, db) = store_with(&refs);
        let mut lookahead = Lookahead::default();
        let asked = std::cell::Cell::new(0);
        let known = |lookahead: &mut Lookahead, number: &str| {
            let answer = lookahead
                .known_ref_with(number, || {
                    asked.set(asked.get() + 1);
                    Ok::<_, StateError>(&db)
                })
                .unwrap()
                .cloned();
            assert_eq!(answer, db.known(number).unwrap(), "{number}");
        };
        for number in &numbers[..64] {
            known(&mut lookahead, number);
        }
        // The first page holds 64 rows: one question for all of them.
        assert_eq!(asked.get(), 1);
        known(&mut lookahead, "N064");
        known(&mut lookahead, "N065");
        assert_eq!(asked.get(), 2);
        known(&mut lookahead, "N003");
        assert_eq!(asked.get(), 3);
    }
}
