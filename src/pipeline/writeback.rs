//! The write-back: the source is read again and every row gets its result from the state
//! store (the status the API last reported, or the error that stopped it) or from this run's
//! validation. Rows whose recorded values are already right are left alone, so a run that
//! learnt nothing leaves a CSV byte-identical and a SQLite table unwritten.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::readback::ChangedOrders;
use super::trail::{Next, Trail};
use crate::config::SourceSettings;
use crate::order::{Field, RowView};
use crate::source::csv_patch::CsvPatch;
use crate::source::sqlite::SqlitePatch;
use crate::source::{
    self, FileIdentity, FinishedRow, OrderSource, ResultSink, RowResult, SourceError, SourceRow,
};
use crate::state::lookahead::Lookahead;
use crate::state::orders::Known;
use crate::state::{StateDb, StateError};

/// Rows written per call of the sink (one SQLite transaction).
const ROWS_PER_WRITE: usize = 1000;
/// Rows rewritten in one read transaction of the write-back's own connection.
const ROWS_PER_READ: usize = 100;

/// What the write-back found and wrote.
#[derive(Debug, Clone, Default)]
pub struct WriteBackStats {
    /// Rows read.
    pub rows: u64,
    /// Rows whose recorded status or error changed.
    pub changed: u64,
    /// Rows that carry an error (validation, rejected by the API, given up).
    pub rejected: u64,
    /// Those errors, grouped by reason.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Rows per `paymentStatus` after the write-back.
    pub statuses: BTreeMap<String, u64>,
}

/// The write-back failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteBackError {
    /// Reading the source or writing it failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The state store could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// Another stage panicked while holding the state store.
    #[error("the state store is unusable after an internal error")]
    Poisoned,
}

/// Rows the send phase lists for a partial write-back, at most (16 bytes each); with more, the
/// whole source is written back.
const MAX_TOUCHED: usize = 250_000;
/// Rows that wait for the read-back's verdict, at most (16 bytes each); the reader waits for
/// the read-back rather than list more.
const MAX_PENDING: usize = 500_000;

/// What the send phase learnt for the write-back: the rows whose results may differ from what
/// the source records (where they start), and the tally of all other rows, whose results it
/// already knows and the source already records. With it, a CSV write-back rewrites only those
/// rows ([`CsvPatch`]; the rest of the file is copied as it is), a SQLite write-back reads and
/// writes only those rows (`SqlitePatch`).
#[derive(Debug)]
pub struct Touched {
    /// (offset, row) of each row whose result may differ.
    rows: Vec<(u64, u64)>,
    /// A row could not be listed (no offset, too many rows, or a row known only by number).
    incomplete: bool,
    /// The rows not listed, counted as the write-back counts them.
    settled: WriteBackStats,
    /// Rows read while the status read-back was running, whose file records what the store
    /// knew then: settled, unless the read-back changed their order ([`Touched::resolve`]).
    pending: Vec<Pending>,
    /// The statuses pending rows record (a handful of distinct values).
    pending_statuses: Vec<String>,
    /// How many rows may be pending ([`MAX_PENDING`]; tests use fewer).
    pending_cap: usize,
    /// Rows listed and handed to a write-back trailing the send phase ([`Touched::take_rows`]).
    handed: usize,
    /// Where the last row the send phase read is (SQLite: its rowid; see
    /// [`Touched::read_up_to`]).
    read_up_to: Option<u64>,
}

impl Default for Touched {
    fn default() -> Self {
        Touched {
            rows: Vec::new(),
            incomplete: false,
            settled: WriteBackStats::default(),
            pending: Vec::new(),
            pending_statuses: Vec::new(),
            pending_cap: crate::pause::max_pending(MAX_PENDING),
            handed: 0,
            read_up_to: None,
        }
    }
}

/// A row read while the read-back was running, in 16 bytes (the list holds up to
/// [`MAX_PENDING`] of them): its offset and row (up to 2^40 each: a file beyond that is
/// written back whole), the index of the status it records and [`ChangedOrders::hash`] of its
/// order number (40 bits).
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Offset, then the status index (8 bits), then the hash's low 16 bits.
    offset_status_hash: u64,
    /// Row, then the hash's upper 24 bits.
    row_hash: u64,
}

/// Bits of a pending row's offset and of its row number.
const PLACE_BITS: u32 = 40;
const PLACE_MASK: u64 = (1 << PLACE_BITS) - 1;

impl Pending {
    /// `None` when a value does not fit.
    fn pack(offset: u64, row: u64, status: usize, hash: u64) -> Option<Pending> {
        let status = u8::try_from(status).ok()?;
        if offset > PLACE_MASK || row > PLACE_MASK || hash >> ChangedOrders::HASH_BITS != 0 {
            return None;
        }
        Some(Pending {
            offset_status_hash: offset | u64::from(status) << PLACE_BITS | (hash & 0xffff) << 48,
            row_hash: row | (hash >> 16) << PLACE_BITS,
        })
    }

    fn offset(self) -> u64 {
        self.offset_status_hash & PLACE_MASK
    }

    fn row(self) -> u64 {
        self.row_hash & PLACE_MASK
    }

    fn status(self) -> usize {
        usize::from((self.offset_status_hash >> PLACE_BITS) as u8)
    }

    fn hash(self) -> u64 {
        self.offset_status_hash >> 48 | (self.row_hash >> PLACE_BITS) << 16
    }
}

impl Touched {
    /// A row whose result may differ from what the source records.
    pub fn mark(&mut self, row: &SourceRow) {
        match row.offset {
            Some(offset) => self.mark_at(offset, row.row),
            None => self.give_up(),
        }
    }

    fn mark_at(&mut self, offset: u64, row: u64) {
        if !self.incomplete && self.rows.len() + self.handed < MAX_TOUCHED {
            self.rows.push((offset, row));
        } else {
            self.give_up();
        }
    }

    /// Whether patching the listed rows beats reading every row again: a listed row costs a
    /// point lookup in the store, a row of the full write-back a share of a page of it, so
    /// beyond a quarter of the rows (a first run over a file that already has the result
    /// columns) the full write-back is cheaper.
    pub(crate) fn worth_patching(&self) -> bool {
        let listed = (self.rows.len() + self.pending.len() + self.handed) as u64;
        !self.incomplete && listed.saturating_mul(4) <= self.settled.rows + listed
    }

    /// Takes the rows listed so far, sorted by offset, for a write-back trailing the send
    /// phase ([`super::trail`]); they still count as listed.
    pub(crate) fn take_rows(&mut self) -> Vec<(u64, u64)> {
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort_unstable();
        self.handed += rows.len();
        rows
    }

    /// Where the last row the send phase read is: rows a SQLite shop adds after it are written
    /// back too.
    pub(crate) fn read_up_to(&mut self, place: Option<u64>) {
        self.read_up_to = place;
    }

    /// The rows to write back, sorted by where they are, and the tally of the others, for a
    /// write-back of chosen rows after the send phase.
    fn into_patch_list(mut self) -> (Vec<(u64, u64)>, WriteBackStats) {
        // Pending rows left unresolved are listed: their orders may have changed.
        self.resolve(None);
        let mut rows = self.rows;
        rows.sort_unstable();
        // A row listed twice would be read twice, and lose its validation error the second
        // time (it is taken once).
        rows.dedup();
        tracing::debug!(
            rows = rows.len(),
            "writing back the rows that may have changed"
        );
        (rows, self.settled)
    }

    /// Whether every row whose result may differ is listed (the list was not given up).
    pub(crate) fn complete(&self) -> bool {
        !self.incomplete
    }

    /// The counts of the rows settled without being listed.
    pub(crate) fn into_settled(self) -> WriteBackStats {
        self.settled
    }

    /// Whether the list is full while rows wait for the read-back's verdict: one more row would
    /// give it up (see [`Touched::give_up`]).
    pub fn pending_full(&self) -> bool {
        !self.incomplete && self.pending.len() >= self.pending_cap
    }

    /// A list that holds at most `cap` pending rows.
    #[cfg(test)]
    pub(crate) fn with_pending_cap(cap: usize) -> Self {
        Touched {
            pending_cap: cap,
            ..Touched::default()
        }
    }

    /// (listed, pending, settled) rows, `None` once given up.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> Option<(usize, usize, u64)> {
        let counts = (self.rows.len(), self.pending.len(), self.settled.rows);
        (!self.incomplete).then_some(counts)
    }

    /// The list cannot be complete: the whole source will be written back.
    pub fn give_up(&mut self) {
        self.incomplete = true;
        self.rows = Vec::new();
        self.pending = Vec::new();
    }

    /// Once the read-back is over: a pending row whose order it changed (or may have: `None`
    /// when it failed) is listed, any other is settled with the status its file records.
    pub fn resolve(&mut self, changed: Option<&ChangedOrders>) {
        for pending in std::mem::take(&mut self.pending) {
            let unchanged = changed.is_some_and(|changed| !changed.may_contain(pending.hash()));
            match self.pending_statuses.get(pending.status()) {
                Some(status) if unchanged => {
                    self.settled.rows += 1;
                    self.settled.count_status(status);
                }
                _ => self.mark_at(pending.offset(), pending.row()),
            }
        }
    }

    /// A row whose file records what the store knows now, but the read-back may still change.
    fn defer(&mut self, row: &SourceRow, number: &str, status: &str) {
        let (Some(offset), false) = (row.offset, self.incomplete) else {
            return self.give_up();
        };
        if self.pending.len() >= self.pending_cap {
            return self.give_up();
        }
        let index = match self.pending_statuses.iter().position(|s| s == status) {
            Some(index) => index,
            None => {
                self.pending_statuses.push(status.to_string());
                self.pending_statuses.len() - 1
            }
        };
        if self.pending.capacity() == 0 {
            // Room for all at once: memory a list grows into is taken only as it is filled,
            // while growing by doubling would hold the old list and the new one (12 MiB at
            // 500,000 rows) at the moment it grows.
            self.pending.reserve_exact(self.pending_cap);
        }
        match Pending::pack(offset, row.row, index, ChangedOrders::hash(number)) {
            Some(pending) => self.pending.push(pending),
            // Beyond 2^40 bytes or rows, or 256 distinct statuses.
            None => self.give_up(),
        }
    }

    /// A valid row that was not sent: its result is what the store knows of its order. It is
    /// settled if the source records exactly that and nothing in this run can change it
    /// (`read_back_pending`: the status read-back has not finished), else marked.
    pub fn stored(
        &mut self,
        source: &dyn OrderSource,
        row: &SourceRow,
        known: Option<&Known>,
        read_back_pending: bool,
    ) {
        let previous_error = source.previous_error(&row.record);
        let settled = match known {
            Some(Known {
                last_error: Some(error),
                ..
            }) => {
                let settled = previous_error == Some(error.trim());
                if settled {
                    self.settled.count_rejected([reason_of(error).as_str()]);
                }
                settled
            }
            Some(Known {
                payment_status: Some(status),
                ..
            }) => {
                let recorded = previous_error.is_none()
                    && source.previous_status(&row.record) == Some(status.as_str());
                // A read-back still running may change any status it lists, final ones
                // included (a refund turns `PAID` into `REFUNDED`).
                if recorded && read_back_pending {
                    // The number is read only here, for the few rows this concerns.
                    if let Some(number) = row.number(source.layout()) {
                        return self.defer(row, number, status);
                    }
                } else if recorded {
                    self.settled.count_status(status);
                }
                recorded && !read_back_pending
            }
            // Known without a status or error: the read-back may give it one.
            Some(_) => !read_back_pending,
            None => true,
        };
        match settled {
            true => self.settled.rows += 1,
            false => self.mark(row),
        }
    }

    /// A row rejected by validation: settled when the source already records this error.
    pub fn rejected(
        &mut self,
        source: &dyn OrderSource,
        row: &SourceRow,
        error: &str,
        reasons: &[String],
    ) {
        if source.previous_error(&row.record) == Some(error.trim()) {
            self.settled.rows += 1;
            self.settled
                .count_rejected(reasons.iter().map(String::as_str));
        } else {
            self.mark(row);
        }
    }
}

impl WriteBackStats {
    /// Adds the counts of `other` (rows counted apart) to these.
    pub fn add(&mut self, other: WriteBackStats) {
        self.rows += other.rows;
        self.changed += other.changed;
        self.rejected += other.rejected;
        for (reason, count) in other.rejected_by_reason {
            *self.rejected_by_reason.entry(reason).or_default() += count;
        }
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
    }

    fn count_status(&mut self, status: &str) {
        match self.statuses.get_mut(status) {
            Some(count) => *count += 1,
            None => {
                self.statuses.insert(status.to_string(), 1);
            }
        }
    }

    fn count_rejected<'a>(&mut self, reasons: impl IntoIterator<Item = &'a str>) {
        self.rejected += 1;
        for reason in reasons {
            match self.rejected_by_reason.get_mut(reason) {
                Some(count) => *count += 1,
                None => {
                    self.rejected_by_reason.insert(reason.to_string(), 1);
                }
            }
        }
    }
}

/// Writes every row's result back into the source. `read` is the identity of the file the send
/// phase read (CSV): this run's validation errors are keyed by row number, so a file that
/// changed since is not written back at all. With `touched` (complete), only the rows it lists
/// are rewritten, when the source allows it. `on_rows` is told how many rows were done
/// (progress).
pub fn write_back(
    settings: &SourceSettings,
    state: &Arc<Mutex<StateDb>>,
    read: Option<&FileIdentity>,
    touched: Option<Touched>,
    run: Option<i64>,
    on_rows: &dyn Fn(u64),
) -> Result<WriteBackStats, WriteBackError> {
    if let Some(touched) = touched.filter(Touched::worth_patching) {
        if let Some(read) = read
            && let Some(patch) = CsvPatch::open(settings, read)?
        {
            return patch_back(patch, touched, state, run, on_rows);
        }
        if let Some(patch) = SqlitePatch::open(settings)? {
            return patch_back_sqlite(patch, touched, state, run, on_rows);
        }
    }
    let (mut source, sink) = source::open(settings, false)?;
    let Some(mut sink) = sink else {
        return Ok(WriteBackStats::default());
    };
    if read.is_some() && source.identity() != read {
        // Dropping the sink removes its temporary file.
        tracing::error!(source = %settings.path.display(), "the source changed after it was read; not writing back");
        return Err(SourceError::Changed {
            path: settings.path.clone(),
        }
        .into());
    }
    let lookups = Lookups {
        lookahead: Lookahead::default(),
        errors: RowErrors::default(),
        run,
        own: None,
    };
    // The sink rewrites the source: it takes every row, changed or not.
    let mut results = Results::new(lookups, WriteBackStats::default(), true, on_rows);
    while let Some(row) = source.next_row()? {
        results.put(source.as_ref(), sink.as_mut(), row, state)?;
    }
    let stats = results.end(sink.as_mut())?;
    sink.write_trailing_blank_lines(source.trailing_blank_lines())?;
    sink.finish(stats.changed > 0)?;
    Ok(stats)
}

/// The write-back of the rows `touched` lists; every other row is copied as it is.
fn patch_back(
    patch: CsvPatch,
    touched: Touched,
    state: &Arc<Mutex<StateDb>>,
    run: Option<i64>,
    on_rows: &dyn Fn(u64),
) -> Result<WriteBackStats, WriteBackError> {
    let (rows, settled) = touched.into_patch_list();
    let mut patcher = Patcher::new(patch, run, state);
    patcher.stats = settled;
    patcher.rewrite(rows, state, on_rows)?;
    patcher.finish()
}

/// The write-back of the rows `touched` lists in a SQLite source, by rowid; no other row the
/// send phase read is read again. A row the shop deleted meanwhile is passed over, and rows it
/// added after the send phase read the table (a new order, or one it replaced, which gets a new
/// rowid) get their results as the full write-back would give them.
fn patch_back_sqlite(
    mut patch: SqlitePatch,
    touched: Touched,
    state: &Arc<Mutex<StateDb>>,
    run: Option<i64>,
    on_rows: &dyn Fn(u64),
) -> Result<WriteBackStats, WriteBackError> {
    let read_up_to = touched.read_up_to;
    let (rows, settled) = touched.into_patch_list();
    let lookups = Lookups {
        // The listed rows are a small share of the table, far apart: a page each would be
        // wasted.
        lookahead: Lookahead::sparse(),
        errors: RowErrors::default(),
        run,
        own: None,
    };
    // Rows are updated in place: only changed results are written.
    let mut results = Results::new(lookups, settled, false, on_rows);
    for (rowid, _) in rows {
        if let Some(row) = patch.row_at(rowid)? {
            let (source, sink) = patch.parts();
            results.put(source, sink, row, state)?;
        }
    }
    patch.read_after(read_up_to.unwrap_or(0));
    while let Some(row) = patch.next_row()? {
        let (source, sink) = patch.parts();
        results.put(source, sink, row, state)?;
    }
    let (_, sink) = patch.parts();
    let stats = results.end(sink)?;
    patch.finish()?;
    Ok(stats)
}

/// Rows' results on their way to a sink, [`ROWS_PER_WRITE`] to a call (a SQLite transaction).
struct Results<'a> {
    lookups: Lookups,
    stats: WriteBackStats,
    batch: Vec<FinishedRow>,
    /// The sink takes every row (it rewrites the whole source), not only changed results.
    every_row: bool,
    /// Calls of the sink so far.
    writes: usize,
    /// Rows looked at, and how many of them `on_rows` was told about.
    done: u64,
    reported: u64,
    on_rows: &'a dyn Fn(u64),
}

impl<'a> Results<'a> {
    fn new(
        lookups: Lookups,
        stats: WriteBackStats,
        every_row: bool,
        on_rows: &'a dyn Fn(u64),
    ) -> Self {
        Results {
            lookups,
            stats,
            batch: Vec::with_capacity(ROWS_PER_WRITE),
            every_row,
            writes: 0,
            done: 0,
            reported: 0,
            on_rows,
        }
    }

    /// Takes the row's result; writes a full batch.
    fn put(
        &mut self,
        source: &dyn OrderSource,
        sink: &mut dyn ResultSink,
        row: SourceRow,
        state: &Mutex<StateDb>,
    ) -> Result<(), WriteBackError> {
        let result = self
            .lookups
            .new_result(source, &row, state, &mut self.stats)?;
        if let Some(result) = result.or(self.every_row.then_some(RowResult::Untouched)) {
            self.batch.push(FinishedRow {
                source: row,
                result,
            });
        }
        self.done += 1;
        if self.batch.len() >= ROWS_PER_WRITE {
            self.write(sink)?;
            if self.writes == 1 {
                crate::pause::point("writing-back");
            }
        } else if self.done - self.reported >= ROWS_PER_WRITE as u64 {
            self.report();
        }
        Ok(())
    }

    /// Writes the last batch; the counts of the whole write-back.
    fn end(mut self, sink: &mut dyn ResultSink) -> Result<WriteBackStats, WriteBackError> {
        self.write(sink)?;
        Ok(self.stats)
    }

    fn write(&mut self, sink: &mut dyn ResultSink) -> Result<(), WriteBackError> {
        sink.write(&self.batch)?;
        self.batch.clear();
        self.writes += 1;
        self.report();
        Ok(())
    }

    fn report(&mut self) {
        (self.on_rows)(self.done - self.reported);
        self.reported = self.done;
    }
}

/// The partial write-back behind the send phase (see [`super::trail`]): opens the file once
/// rows are handed over, rewrites them as their results settle and finishes the file when the
/// send phase does. `Ok(None)` when the trail was abandoned: the source is left alone, and the
/// run writes it back whole. The counts cover the rewritten rows only.
pub fn trail_back(
    settings: &SourceSettings,
    read: &FileIdentity,
    trail: &Trail,
    state: &Arc<Mutex<StateDb>>,
    run: Option<i64>,
) -> Result<Option<WriteBackStats>, WriteBackError> {
    let follow = || -> Result<Option<WriteBackStats>, WriteBackError> {
        let mut patcher: Option<Patcher> = None;
        loop {
            let (rows, last) = match trail.next() {
                Next::Abandon => return Ok(None),
                Next::Rows(rows) => (rows, false),
                Next::Finish(rows) => (rows, true),
            };
            let current = match &mut patcher {
                Some(current) => current,
                None => match CsvPatch::open(settings, read)? {
                    Some(patch) => patcher.insert(Patcher::new(patch, run, state)),
                    None => return Ok(None),
                },
            };
            if rows
                .first()
                .is_some_and(|&(offset, _)| Some(offset) <= current.last_offset)
            {
                tracing::debug!(
                    "a row behind the trailing write-back: writing back the whole file"
                );
                return Ok(None);
            }
            // Errors recorded since the last rows were taken: read them afresh.
            current.lookups.errors = RowErrors {
                after: current.last_row,
                ..RowErrors::default()
            };
            current.rewrite(rows, state, &|_| {})?;
            if last {
                return patcher.map(Patcher::finish).transpose();
            }
        }
    };
    let written = follow();
    if !matches!(written, Ok(Some(_))) {
        // Rows handed over from now on are dropped.
        trail.abandon();
    }
    written
}

/// Rewrites listed rows into a copy of the file and copies every other byte.
struct Patcher {
    patch: CsvPatch,
    lookups: Lookups,
    stats: WriteBackStats,
    /// The last row rewritten (offset, row): the next must come after it.
    last_offset: Option<u64>,
    last_row: Option<u64>,
    done: usize,
}

impl Patcher {
    fn new(patch: CsvPatch, run: Option<i64>, state: &Mutex<StateDb>) -> Self {
        let own = state
            .lock()
            .ok()
            .and_then(|db| db.open_reader().ok().flatten());
        Patcher {
            patch,
            lookups: Lookups {
                // The listed rows are a small share of the file, far apart: a page each would be
                // wasted.
                lookahead: Lookahead::sparse(),
                errors: RowErrors::default(),
                run,
                own,
            },
            stats: WriteBackStats::default(),
            last_offset: None,
            last_row: None,
            done: 0,
        }
    }

    /// Rewrites `rows` (offset, row), ascending, whose results are final: committed before
    /// they were handed over, so one read transaction sees them all.
    fn rewrite(
        &mut self,
        rows: Vec<(u64, u64)>,
        state: &Mutex<StateDb>,
        on_rows: &dyn Fn(u64),
    ) -> Result<(), WriteBackError> {
        self.lookups.own_transaction("BEGIN")?;
        let rewritten = self.rewrite_rows(rows, state, on_rows);
        let ended = self.lookups.own_transaction("COMMIT");
        rewritten.and(ended.map_err(Into::into))
    }

    fn rewrite_rows(
        &mut self,
        rows: Vec<(u64, u64)>,
        state: &Mutex<StateDb>,
        on_rows: &dyn Fn(u64),
    ) -> Result<(), WriteBackError> {
        for (index, (offset, row)) in rows.into_iter().enumerate() {
            if index > 0 && index % ROWS_PER_READ == 0 {
                // A read transaction as long as the whole write-back would keep the store's
                // WAL from being emptied beside it (`StateDb::empty_wal`); a later one sees
                // the results committed before the rows were handed over, or newer ones.
                self.lookups.own_transaction("COMMIT; BEGIN")?;
            }
            let row = self.patch.row_at(row, offset)?;
            self.last_offset = Some(offset);
            self.last_row = Some(row.row);
            let stats = &mut self.stats;
            if let Some(result) =
                self.lookups
                    .new_result(self.patch.source(), &row, state, stats)?
            {
                match &result {
                    RowResult::Synced { status } => {
                        self.patch.replace(&row, Some(status), Some(""))?
                    }
                    RowResult::Failed { error } => self.patch.replace(&row, None, Some(error))?,
                    // A CSV file records no sync time: the row stays as it is.
                    RowResult::SyncedAgain { .. } | RowResult::Untouched => {}
                }
                if self.stats.changed == 1 {
                    crate::pause::point("writing-back");
                }
            }
            self.done += 1;
            if self.done.is_multiple_of(ROWS_PER_WRITE) {
                on_rows(ROWS_PER_WRITE as u64);
            }
        }
        Ok(())
    }

    /// Copies the rest of the file and puts it in place of the source if a row changed.
    fn finish(self) -> Result<WriteBackStats, WriteBackError> {
        self.patch.finish(self.stats.changed > 0)?;
        Ok(self.stats)
    }
}

/// Where the write-back finds the rows' results, read in row order.
struct Lookups {
    lookahead: Lookahead,
    errors: RowErrors,
    /// This run: a status its own send reported is a new sync, even if the status is the same.
    run: Option<i64>,
    /// A connection of the write-back's own (a store in WAL mode) for the orders' state: a
    /// batch of rows is looked up in one read transaction on it, not one per row on the
    /// shared connection. `None`: the shared one. This run's row errors stay on the shared
    /// connection (a temporary table, which only it sees).
    own: Option<StateDb>,
}

impl Lookups {
    /// Begins or ends (`sql`) the read transaction of a batch on the write-back's own
    /// connection, if it has one.
    fn own_transaction(&self, sql: &str) -> Result<(), StateError> {
        match &self.own {
            Some(own) => own
                .connection()
                .execute_batch(sql)
                .map_err(own.error("reading results")),
            None => Ok(()),
        }
    }

    /// A row's result if the source does not record it yet (counted as changed) or records
    /// when it was synced and this run's send reported it again, else `None`; either way the
    /// row is counted in `stats`.
    fn new_result(
        &mut self,
        source: &dyn OrderSource,
        row: &SourceRow,
        state: &Mutex<StateDb>,
        stats: &mut WriteBackStats,
    ) -> Result<Option<RowResult>, WriteBackError> {
        stats.rows += 1;
        let (result, reported_to) = {
            let shared = state.lock().map_err(|_| WriteBackError::Poisoned)?;
            let db = Stores {
                shared: &shared,
                orders: self.own.as_ref().unwrap_or(&shared),
            };
            result_of(
                source,
                row,
                db,
                &mut self.lookahead,
                &mut self.errors,
                stats,
            )?
        };
        if unchanged(source, row, &result) {
            // The same status again from this run's send: only the sync time is new.
            let synced_again = self.run.is_some() && reported_to == self.run;
            return Ok(match result {
                RowResult::Synced { status } if synced_again && source.records_sync_time() => {
                    Some(RowResult::SyncedAgain { status })
                }
                _ => None,
            });
        }
        stats.changed += 1;
        Ok(Some(result))
    }
}

/// Where [`result_of`] reads: this run's row errors on the shared connection, the orders'
/// state on `orders` (the same one, or the write-back's own).
#[derive(Clone, Copy)]
struct Stores<'a> {
    shared: &'a StateDb,
    orders: &'a StateDb,
}

/// A row's result: this run's validation error, else what the store knows about its order;
/// with the run whose send reported a synced status.
fn result_of(
    source: &dyn OrderSource,
    row: &SourceRow,
    db: Stores<'_>,
    lookahead: &mut Lookahead,
    errors: &mut RowErrors,
    stats: &mut WriteBackStats,
) -> Result<(RowResult, Option<i64>), StateError> {
    if let Some((error, reasons)) = errors.take(db.shared, row.row)? {
        stats.count_rejected(reasons.split('\n'));
        return Ok((RowResult::Failed { error }, None));
    }
    let view = RowView {
        record: &row.record,
        layout: source.layout(),
    };
    let Some(number) = view.get(Field::Number) else {
        return Ok((RowResult::Untouched, None));
    };
    let Some(known) = lookahead.known_ref(db.orders, number)? else {
        return Ok((RowResult::Untouched, None));
    };
    if let Some(error) = known.last_error.clone() {
        stats.count_rejected([reason_of(&error).as_str()]);
        return Ok((RowResult::Failed { error }, None));
    }
    match &known.payment_status {
        Some(status) => {
            stats.count_status(status);
            let status = status.clone();
            Ok((RowResult::Synced { status }, known.status_run))
        }
        None => Ok((RowResult::Untouched, None)),
    }
}

/// Whether the source already records this result.
fn unchanged(source: &dyn OrderSource, row: &SourceRow, result: &RowResult) -> bool {
    let status = source.previous_status(&row.record);
    let error = source.previous_error(&row.record);
    match result {
        RowResult::Synced { status: new } | RowResult::SyncedAgain { status: new } => {
            status == Some(new.as_str()) && error.is_none()
        }
        RowResult::Failed { error: new } => error == Some(new.trim()),
        RowResult::Untouched => true,
    }
}

/// Groups API failures: the attempt count of "gave up after N attempts" would split groups.
pub fn reason_of(error: &str) -> String {
    match error
        .strip_prefix("gave up after ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((_, last_error)) => format!("gave up: {last_error}"),
        None => error.to_string(),
    }
}

/// This run's validation errors, read in row order alongside the source (rows only ever
/// increase), a page at a time.
#[derive(Default)]
struct RowErrors {
    page: VecDeque<(u64, String, String)>,
    after: Option<u64>,
    exhausted: bool,
}

impl RowErrors {
    const PAGE: u32 = 1000;

    fn take(&mut self, db: &StateDb, row: u64) -> Result<Option<(String, String)>, StateError> {
        loop {
            while self.page.front().is_some_and(|(r, _, _)| *r < row) {
                self.page.pop_front();
            }
            match self.page.front() {
                Some((r, _, _)) if *r == row => {
                    return Ok(self.page.pop_front().map(|(_, e, reason)| (e, reason)));
                }
                Some(_) => return Ok(None),
                None if self.exhausted => return Ok(None),
                None => {
                    let page = db.row_errors_after(self.after, Self::PAGE)?;
                    self.exhausted = page.len() < Self::PAGE as usize;
                    self.after = page.last().map(|(r, _, _)| *r).or(self.after);
                    self.page.extend(page);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::SourceFormat;

    /// Rows of a CSV whose result columns record `UNPAID`, `PAID` and nothing.
    fn rows() -> (tempfile::TempDir, Box<dyn OrderSource>, Vec<SourceRow>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.csv");
        std::fs::write(
            &path,
            "number,paymentStatus,syncError\nA,UNPAID,\nB,PAID,\nC,,\n",
        )
        .unwrap();
        let settings = SourceSettings {
            path,
            format: SourceFormat::Csv,
            delimiter: None,
            columns: Default::default(),
        };
        let (mut source, _) = source::open(&settings, true).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = source.next_row().unwrap() {
            rows.push(row);
        }
        (dir, source, rows)
    }

    fn known(status: &str) -> Known {
        Known {
            payment_status: Some(status.into()),
            ..Known::default()
        }
    }

    #[test]
    fn a_row_is_settled_only_when_the_source_records_a_status_nothing_can_change_now() {
        let (_dir, source, rows) = rows();
        let source = source.as_ref();
        let mut touched = Touched::default();
        // Recorded, and the read-back is over: settled.
        touched.stored(source, &rows[0], Some(&known("UNPAID")), false);
        assert_eq!((touched.rows.len(), touched.settled.rows), (0, 1));
        // The store knows more than the source records: listed.
        touched.stored(source, &rows[2], Some(&known("UNPAID")), false);
        assert_eq!(touched.rows, [(rows[2].offset.unwrap(), 4)]);
        // Recorded, but read while the read-back ran, which may change any status (a refund
        // of a PAID order too): pending until it is over.
        touched.stored(source, &rows[0], Some(&known("UNPAID")), true);
        touched.stored(source, &rows[1], Some(&known("PAID")), true);
        assert_eq!((touched.rows.len(), touched.pending.len()), (1, 2));
        let mut changed = ChangedOrders::default();
        changed.add("B");
        touched.resolve(Some(&changed));
        // B changed: listed; A did not: settled with its status.
        assert_eq!(touched.rows[1], (rows[1].offset.unwrap(), 3));
        assert_eq!((touched.rows.len(), touched.settled.rows), (2, 2));
        assert_eq!(touched.settled.statuses.get("UNPAID"), Some(&2));
        assert_eq!(touched.settled.statuses.get("PAID"), None);
        // A read-back that failed tells nothing: every pending row is listed.
        touched.stored(source, &rows[0], Some(&known("UNPAID")), true);
        touched.resolve(None);
        assert_eq!(touched.rows.len(), 3);
        // Three rows listed, two settled: patching them would cost more than a full pass.
        assert!(!touched.worth_patching());
        touched.settled.rows += 10;
        assert!(touched.worth_patching());
        // A row without an offset (SQLite) makes the list useless.
        let mut no_offset = rows[2].clone();
        no_offset.offset = None;
        touched.mark(&no_offset);
        assert!(touched.incomplete && touched.rows.is_empty());
    }

    #[test]
    fn a_pending_row_keeps_its_place_status_and_hash_in_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Pending>(), 16);
        let hash = ChangedOrders::hash("A-10001");
        let top = PLACE_MASK;
        for (offset, row, status) in [(0, 0, 0), (top, top, 255), (384_000_123, 1_000_000, 3)] {
            let pending = Pending::pack(offset, row, status, hash).unwrap();
            assert_eq!(
                (
                    pending.offset(),
                    pending.row(),
                    pending.status(),
                    pending.hash()
                ),
                (offset, row, status, hash)
            );
        }
        // What does not fit is not packed (the caller writes back every row instead).
        assert!(Pending::pack(top + 1, 0, 0, hash).is_none());
        assert!(Pending::pack(0, top + 1, 0, hash).is_none());
        assert!(Pending::pack(0, 0, 256, hash).is_none());
        assert!(Pending::pack(0, 0, 0, 1 << ChangedOrders::HASH_BITS).is_none());
    }
}
