//! The reading stage: rows → validated, serialized orders → the ones that need sending, in
//! chunks of at most `chunk_size`. Runs on a blocking thread so parsing overlaps with sending.
//!
//! Only orders travel on from here; rows are not kept. The write-back reads the source again
//! and takes every row's result from the state store, so memory does not depend on how far
//! apart the changed orders are.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use tokio::sync::mpsc;

use super::plan::{Decision, Incremental, decide};
use super::readback::ChangedOrders;
use super::seen::{Seen, SeenNumbers};
use super::trail::Trail;
use super::writeback::Touched;
use crate::order::{self, Issue, PreparedOrder, Problem, RowError, RowView, Rules};
use crate::source::{OrderSource, SourceError, SourceRow};
use crate::state::lookahead::Lookahead;
use crate::state::orders::{API_STATUSES, Known};
use crate::state::{StateDb, StateError};

/// Orders to send together.
#[derive(Debug, Default)]
pub struct Chunk {
    /// At most `chunk_size` orders, in source order.
    pub orders: Vec<PreparedOrder>,
    /// Rows read so far (for the progress bar).
    pub rows_read: u64,
    /// The source's estimated total of rows, once known (for the progress bar's ETA).
    pub estimated_rows: Option<u64>,
    /// Once this chunk and every one before it are journaled, every row starting before this
    /// offset has its final result (a write-back trailing the send phase may rewrite it):
    /// rows up to the one that filled the chunk, unless a validation error before them is
    /// not yet recorded or a duplicate check before them waits for the second pass.
    pub settled_before: u64,
}

/// What reading found, for the summary.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Rows read.
    pub rows: u64,
    /// Rows that passed validation.
    pub valid: u64,
    /// Valid orders not sent because they are unchanged since the API last answered for them.
    pub unchanged: u64,
    /// Rejected rows, grouped by reason.
    pub invalid_by_reason: BTreeMap<String, u64>,
    /// Whether the whole source was read (not stopped because the receiver went away).
    pub complete: bool,
    /// The rows the write-back has to look at.
    pub touched: Touched,
}

/// The reading stage failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The source could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The state store could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// Another stage panicked while holding the state store.
    #[error("the state store is unusable after an internal error")]
    Poisoned,
}

/// Rows read before the source's size is estimated (for the progress bar).
const SIZE_SAMPLE_ROWS: u64 = 1000;
/// Rows between two reports to [`ReadContext::on_rows`].
const PROGRESS_ROWS: u64 = 16_384;
/// Invalid rows are recorded in the state store in groups of this many.
const ROW_ERRORS_PER_WRITE: usize = 1000;
/// Row fingerprints stored per transaction (see `Reader::refresh_row_fingerprint`).
const FINGERPRINTS_PER_WRITE: usize = 1000;

/// Opens the source again (for settling deferred duplicate checks).
pub type Reopen<'a> = &'a (dyn Fn() -> Result<Box<dyn OrderSource>, SourceError> + Sync);

/// What the reader needs besides the source.
pub struct ReadContext<'a> {
    /// Validation rules of today.
    pub rules: &'a Rules,
    /// Orders per chunk.
    pub chunk_size: usize,
    /// What to send.
    pub policy: Incremental,
    /// The state store (lookups; invalid rows of this run).
    pub state: &'a Arc<Mutex<StateDb>>,
    /// Record invalid rows in the store for the write-back (not in a dry run).
    pub record_invalid: bool,
    /// Opens the source again, from its first row.
    pub reopen: Reopen<'a>,
    /// Set once the status read-back has finished (or there is none): from then on, the
    /// statuses in the store no longer change during this run except for the orders sent.
    pub read_back_done: &'a ReadBackDone,
    /// Told how many rows were read, every [`PROGRESS_ROWS`] rows (the progress bar: chunks
    /// tell it only as they fill, which a sparse incremental run does rarely).
    pub on_rows: &'a (dyn Fn(u64) + Sync),
    /// A write-back trailing the send phase, which the listed rows are handed to once their
    /// statuses stop changing; and how many rows to read before that (see [`Trail`]).
    pub trail: Option<(&'a Trail, u64)>,
}

/// Whether the status read-back is over; the reader checks it for every row and may wait for
/// it.
#[derive(Debug, Default)]
pub struct ReadBackDone {
    done: AtomicBool,
    lock: Mutex<()>,
    over: Condvar,
    /// Times a reader started waiting (tests watch it).
    waits: std::sync::atomic::AtomicUsize,
    /// What the read-back changed, once it has succeeded (`None`: not over, or failed, so any
    /// order may have changed).
    changed: Mutex<Option<Arc<ChangedOrders>>>,
}

impl ReadBackDone {
    /// Over already when `done` (there is no read-back).
    pub fn new(done: bool) -> Self {
        ReadBackDone {
            done: AtomicBool::new(done),
            // Without a read-back, nothing changed.
            changed: Mutex::new(done.then(Arc::default)),
            ..ReadBackDone::default()
        }
    }

    /// The read-back succeeded and changed these orders; call before it is over.
    pub fn set_changed(&self, changed: ChangedOrders) {
        *self.changed.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(changed));
    }

    /// What the read-back changed, once it is over (`None`: any order may have changed).
    pub fn changed(&self) -> Option<Arc<ChangedOrders>> {
        if !self.is_set() {
            return None;
        }
        self.changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the read-back is over.
    pub fn is_set(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The read-back is over (whether it succeeded or not).
    pub fn set(&self) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.done.store(true, Ordering::Release);
        self.over.notify_all();
    }

    /// A guard that calls [`ReadBackDone::set`] when dropped, however the read-back ends.
    pub fn set_on_drop(&self) -> impl Drop + '_ {
        struct SetOnDrop<'a>(&'a ReadBackDone);
        impl Drop for SetOnDrop<'_> {
            fn drop(&mut self) {
                self.0.set();
            }
        }
        SetOnDrop(self)
    }

    /// Waits until the read-back is over.
    fn wait(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !self.is_set() {
            guard = self
                .over
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// How the duplicate check is to treat a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DuplicateCheck {
    /// First pass: ask the filter; a "maybe" defers the row.
    Filter,
    /// Second pass, a deferred row now known to be its number's first valid row.
    First,
    /// Second pass, a deferred row now known to repeat an earlier valid row.
    Repeat,
}

/// What became of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Valid (sent, or unchanged and skipped).
    Valid,
    /// Rejected by validation (recorded).
    Invalid,
    /// Its duplicate check needs the second pass.
    Deferred,
}

/// What the fast path made of a row.
enum Unchanged {
    /// Settled.
    Handled(Handled),
    /// To be checked: what the fast path learnt.
    Check(Fast),
}

/// What the fast path learnt of a row it could not settle.
#[derive(Clone, Copy)]
struct Fast {
    row_fingerprint: Option<u64>,
    /// The row is unchanged but its number was seen before.
    unchanged_row: bool,
}

/// The reader's state over one run.
struct Reader<'c, 'a> {
    context: &'c ReadContext<'a>,
    chunks: &'c mpsc::Sender<Chunk>,
    stats: ReadStats,
    seen: SeenNumbers,
    lookahead: Lookahead,
    /// A connection of the reader's own for the lookups, when the store allows one, so that
    /// they do not wait while the read-back writes statuses (see [`StateDb::open_reader`]).
    lookups: Option<StateDb>,
    invalid: Vec<(u64, String, String)>,
    /// Row fingerprints to store: rows unchanged in payload whose stored fingerprint differs.
    refreshed: Vec<(String, u64)>,
    chunk: Chunk,
    now: time::OffsetDateTime,
    /// The read-back had finished when the current lookahead page was read.
    statuses_final: bool,
    /// Where the row last read in the first pass starts.
    position: Option<u64>,
    /// Where the first row of `invalid` starts (0 when unknown).
    first_invalid: Option<u64>,
    /// Where the first row whose duplicate check was deferred starts (0 when unknown).
    first_deferred: Option<u64>,
    /// The second pass has begun (it lists rows out of order).
    second_pass: bool,
}

/// Reads the whole source and sends the orders that need sending to `chunks`. Stops early,
/// without error, if the receiving side has gone away.
pub fn read_chunks(
    source: &mut dyn OrderSource,
    context: &ReadContext<'_>,
    chunks: &mpsc::Sender<Chunk>,
) -> Result<ReadStats, ReadError> {
    read_with(
        source,
        context,
        chunks,
        SeenNumbers::default(),
        Touched::default(),
    )
}

fn read_with(
    source: &mut dyn OrderSource,
    context: &ReadContext<'_>,
    chunks: &mpsc::Sender<Chunk>,
    seen: SeenNumbers,
    touched: Touched,
) -> Result<ReadStats, ReadError> {
    let mut reader = Reader {
        context,
        chunks,
        stats: ReadStats {
            touched,
            ..ReadStats::default()
        },
        seen,
        lookahead: Lookahead::for_sending(context.policy.resend_open_after.is_some()),
        lookups: own_connection(context.state)?,
        invalid: Vec::new(),
        refreshed: Vec::new(),
        chunk: Chunk::default(),
        now: time::OffsetDateTime::now_utc(),
        statuses_final: false,
        position: None,
        first_invalid: None,
        first_deferred: None,
        second_pass: false,
    };
    if let (None, _) | (_, None) = source.result_indexes() {
        // Without both result columns the write-back rewrites every row anyway.
        reader.stats.touched.give_up();
    }
    // Rows whose duplicate check the filter could not settle: (row, number).
    let mut deferred: Vec<(u64, String)> = Vec::new();
    while let Some(row) = source.next_row()? {
        reader.stats.rows += 1;
        if reader.stats.rows.is_multiple_of(PROGRESS_ROWS) {
            (context.on_rows)(reader.stats.rows);
        }
        reader.position = row.offset;
        let (handled, row) = reader.handle_next(source, row)?;
        if handled == Handled::Deferred {
            let number = row.number(source.layout()).unwrap_or_default();
            deferred.push((row.row, number.to_string()));
            reader.first_deferred.get_or_insert(row.offset.unwrap_or(0));
        }
        source.recycle(row);
        if reader.chunk_full() {
            if !reader.send_chunk(source)? {
                return Ok(reader.stats);
            }
            reader.hand_over()?;
        }
    }
    reader.stats.touched.read_up_to(reader.position);
    if !deferred.is_empty() {
        tracing::debug!(rows = deferred.len(), "settling deferred duplicate checks");
        reader.flush_invalid()?;
        reader.second_pass = true;
        let mut again = (context.reopen)()?;
        if !reader.settle(again.as_mut(), &deferred)? {
            return Ok(reader.stats);
        }
    }
    reader.flush_invalid()?;
    reader.chunk.rows_read = reader.stats.rows;
    // Every row's result is final once the last chunk is journaled, but the rows the second
    // pass listed go to the trailing writer with the last ones, sorted among those queued:
    // it must not have passed them.
    reader.chunk.settled_before = reader.first_deferred.unwrap_or(u64::MAX);
    if chunks
        .blocking_send(std::mem::take(&mut reader.chunk))
        .is_err()
    {
        return Ok(reader.stats);
    }
    reader.stats.complete = true;
    Ok(reader.stats)
}

impl<'a> Reader<'_, 'a> {
    /// Validates one row and decides whether it goes out; adds it to the chunk if so.
    fn handle(
        &mut self,
        source: &dyn OrderSource,
        row: &SourceRow,
        check: DuplicateCheck,
    ) -> Result<Handled, ReadError> {
        self.follow_read_back()?;
        match self.unchanged(source, row, check)? {
            Unchanged::Handled(handled) => Ok(handled),
            Unchanged::Check(fast) => self.check(source, row, check, fast),
        }
    }

    /// As [`Reader::handle`], for the row the first pass read last: a row handed out unparsed
    /// is read whole if it has to be checked. Gives the row back for recycling.
    fn handle_next(
        &mut self,
        source: &mut dyn OrderSource,
        row: SourceRow,
    ) -> Result<(Handled, SourceRow), ReadError> {
        let check = DuplicateCheck::Filter;
        self.follow_read_back()?;
        let fast = match self.unchanged(source, &row, check)? {
            Unchanged::Handled(handled) => return Ok((handled, row)),
            Unchanged::Check(fast) => fast,
        };
        let row = source.full_row(row)?;
        let handled = self.check(source, &row, check, fast)?;
        Ok((handled, row))
    }

    /// Follows the read-back running alongside: waits for it when too many rows wait for its
    /// verdict, and takes in what it changed once it is over.
    fn follow_read_back(&mut self) -> Result<(), ReadError> {
        if !self.statuses_final && self.stats.touched.pending_full() {
            // The rows read meanwhile wait for the read-back's verdict in a list of bounded
            // length; a full list would cost a write-back of every row. The write-back waits
            // for the read-back anyway. The orders of a chunk not yet full wait too: sending
            // it now would cost a request more than the orders need.
            tracing::info!(
                rows = self.stats.rows,
                "waiting for the status read-back before reading on"
            );
            self.context.read_back_done.wait();
        }
        if !self.statuses_final && self.context.read_back_done.is_set() {
            // A read-back attempt abandoned at its deadline may still be applying a batch on
            // the shared connection, which this reader's own connection would not wait for;
            // once the lock was free, none is applied any more (see `readback::apply_stream`).
            drop(self.context.state.lock().map_err(|_| ReadError::Poisoned)?);
            // Pages read before may hold statuses the read-back changed since.
            self.lookahead =
                Lookahead::for_sending(self.context.policy.resend_open_after.is_some());
            self.statuses_final = true;
            // The rows read meanwhile learn whether their orders changed; no row waits for the
            // read-back from now on.
            let changed = self.context.read_back_done.changed();
            self.stats.touched.resolve(changed.as_deref());
            self.hand_over()?;
        }
        Ok(())
    }

    /// The fast path: a row unchanged since the API accepted it is settled by what the store
    /// knows, without validation.
    fn unchanged(
        &mut self,
        source: &dyn OrderSource,
        row: &SourceRow,
        check: DuplicateCheck,
    ) -> Result<Unchanged, ReadError> {
        let number = row.number(source.layout());
        let row_fingerprint = number.map(|_| {
            row.row_fingerprint.unwrap_or_else(|| {
                order::row_fingerprint(RowView {
                    record: &row.record,
                    layout: source.layout(),
                })
            })
        });
        let mut unchanged_row = false;
        if let Some(number) = number {
            let known = lookup(
                &mut self.lookahead,
                self.lookups.as_ref(),
                self.context.state,
                number,
            )?;
            if unchanged_since_accepted(known, row_fingerprint, self.context.policy, self.now) {
                match duplicate(&mut self.seen, number, check) {
                    Seen::New => {
                        self.stats.valid += 1;
                        self.stats.unchanged += 1;
                        let pending = !self.statuses_final;
                        self.stats.touched.stored(source, row, known, pending);
                        return Ok(Unchanged::Handled(Handled::Valid));
                    }
                    Seen::Maybe => return Ok(Unchanged::Handled(Handled::Deferred)),
                    // Validated below, to report the duplicate like any other problem.
                    Seen::Duplicate => unchanged_row = true,
                }
            }
        }
        Ok(Unchanged::Check(Fast {
            row_fingerprint,
            unchanged_row,
        }))
    }

    /// The slow path: validates the row and decides whether it goes out.
    fn check(
        &mut self,
        source: &dyn OrderSource,
        row: &SourceRow,
        check: DuplicateCheck,
        Fast {
            row_fingerprint,
            unchanged_row,
        }: Fast,
    ) -> Result<Handled, ReadError> {
        let number = row.number(source.layout());
        // Only rows that go on need their own copy of what the store knows (asked again: the
        // page answers from memory; a number behind the page costs a second point lookup).
        let known = match number {
            Some(number) => self.known(number)?,
            None => None,
        };
        let checked =
            check_row(source, row, self.context.rules, known.as_ref()).and_then(|order| {
                let seen = match (unchanged_row, check) {
                    // The fast path above asked already: it is a duplicate.
                    (true, DuplicateCheck::Filter) => Seen::Duplicate,
                    _ => duplicate(&mut self.seen, &order.number, check),
                };
                match seen {
                    Seen::New => Ok(Some(order)),
                    Seen::Maybe => Ok(None),
                    Seen::Duplicate => Err(duplicate_error(row.row, order.number)),
                }
            });
        match checked {
            Ok(Some(mut order)) => {
                self.stats.valid += 1;
                order.row_fingerprint = row_fingerprint.unwrap_or_default();
                self.decide(source, row, order, known.as_ref())?;
                Ok(Handled::Valid)
            }
            Ok(None) => Ok(Handled::Deferred),
            Err((error, reasons)) => {
                self.stats.touched.rejected(source, row, &error, &reasons);
                self.reject(row.row, row.offset, error, reasons)?;
                Ok(Handled::Invalid)
            }
        }
    }

    /// What the store knows about `number`.
    fn known(&mut self, number: &str) -> Result<Option<Known>, ReadError> {
        let known = lookup(
            &mut self.lookahead,
            self.lookups.as_ref(),
            self.context.state,
            number,
        )?;
        Ok(known.cloned())
    }

    /// Sends a valid order, or skips it when the API already has it.
    fn decide(
        &mut self,
        source: &dyn OrderSource,
        row: &SourceRow,
        order: PreparedOrder,
        known: Option<&Known>,
    ) -> Result<(), ReadError> {
        match decide(known, order.fingerprint, self.context.policy, self.now) {
            Decision::Skip => {
                self.stats.unchanged += 1;
                if known.is_some_and(|k| {
                    k.last_error.is_some() && k.accepted_fingerprint == Some(order.fingerprint)
                }) {
                    let db = self.context.state.lock().map_err(|_| ReadError::Poisoned)?;
                    db.clear_error(&order.number)?;
                    // Its result is no longer the error `known` holds.
                    self.stats.touched.mark(row);
                } else {
                    let pending = !self.statuses_final;
                    self.stats.touched.stored(source, row, known, pending);
                    self.refresh_row_fingerprint(known, &order)?;
                }
            }
            _ => {
                self.stats.touched.mark(row);
                self.chunk.orders.push(order);
            }
        }
        Ok(())
    }

    fn reject(
        &mut self,
        row: u64,
        offset: Option<u64>,
        error: String,
        reasons: Vec<String>,
    ) -> Result<(), ReadError> {
        for reason in &reasons {
            *self
                .stats
                .invalid_by_reason
                .entry(reason.clone())
                .or_default() += 1;
        }
        if self.context.record_invalid {
            self.first_invalid.get_or_insert(offset.unwrap_or(0));
            self.invalid.push((row, error, reasons.join("\n")));
        }
        if self.invalid.len() >= ROW_ERRORS_PER_WRITE {
            self.flush_invalid()?;
        }
        Ok(())
    }

    /// Queues the row fingerprint of an order the API accepted as it stands, when the store
    /// holds another one (the row changed without its payload changing): the next run then
    /// takes the fast path for it. Not in a dry run, which writes nothing.
    fn refresh_row_fingerprint(
        &mut self,
        known: Option<&Known>,
        order: &PreparedOrder,
    ) -> Result<(), ReadError> {
        let accepted_as_is = known.is_some_and(|k| {
            k.last_error.is_none()
                && k.accepted_fingerprint == Some(order.fingerprint)
                && k.row_fingerprint != Some(order.row_fingerprint)
        });
        if accepted_as_is && self.context.record_invalid {
            self.refreshed
                .push((order.number.clone(), order.row_fingerprint));
            if self.refreshed.len() >= FINGERPRINTS_PER_WRITE {
                self.flush_row_fingerprints()?;
            }
        }
        Ok(())
    }

    fn flush_row_fingerprints(&mut self) -> Result<(), ReadError> {
        if !self.refreshed.is_empty() {
            let mut db = self.context.state.lock().map_err(|_| ReadError::Poisoned)?;
            db.refresh_row_fingerprints(&self.refreshed)?;
            self.refreshed.clear();
        }
        Ok(())
    }

    fn flush_invalid(&mut self) -> Result<(), ReadError> {
        self.flush_row_fingerprints()?;
        if !self.invalid.is_empty() {
            let mut db = self.context.state.lock().map_err(|_| ReadError::Poisoned)?;
            db.add_row_errors(&self.invalid)?;
            self.invalid.clear();
        }
        self.first_invalid = None;
        Ok(())
    }

    /// Only a full chunk goes out before the end of the source: however far apart the orders
    /// that need sending are, they take as few requests as they fill (the service is
    /// rate-limited, and a run killed before a chunk went out loses nothing: the next run
    /// sends its orders).
    fn chunk_full(&self) -> bool {
        self.chunk.orders.len() >= self.context.chunk_size
    }

    /// Hands the chunk on; `false` when the receiving side has gone away.
    fn send_chunk(&mut self, source: &dyn OrderSource) -> Result<bool, ReadError> {
        if self.live_trail().is_some_and(|(trail, _)| trail.started()) {
            // The trailing write-back may then pass the rows rejected so far.
            self.flush_invalid()?;
        }
        self.chunk.rows_read = self.stats.rows;
        if self.stats.rows >= SIZE_SAMPLE_ROWS {
            self.chunk.estimated_rows = source.estimated_rows(self.stats.rows);
        }
        let read = self.position.map_or(0, |offset| offset.saturating_add(1));
        self.chunk.settled_before = [Some(read), self.first_invalid, self.first_deferred]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(0);
        Ok(self
            .chunks
            .blocking_send(std::mem::take(&mut self.chunk))
            .is_ok())
    }

    /// Hands the rows listed so far to the write-back trailing the send phase, once the
    /// statuses they were checked against stop changing (the first pass only: the second
    /// lists rows out of order), and while patching looks worth it so far (not in a first
    /// run, where every row is sent; a cluster of changes keeps its rows until the end, when
    /// the whole list decides). A list given up abandons the trail: the whole file is written
    /// back then.
    fn hand_over(&mut self) -> Result<(), ReadError> {
        let Some((trail, after_rows)) = self.live_trail() else {
            return Ok(());
        };
        if !self.statuses_final || self.stats.rows < after_rows {
            return Ok(());
        }
        if !self.stats.touched.complete() {
            trail.abandon();
            return Ok(());
        }
        if !self.stats.touched.worth_patching() {
            return Ok(());
        }
        if !trail.started() {
            // From now on rows rejected are recorded before each chunk goes out.
            self.flush_invalid()?;
        }
        trail.hand_over(self.stats.touched.take_rows());
        Ok(())
    }

    /// The write-back trailing the send phase, while it may still take rows.
    fn live_trail(&self) -> Option<(&'a Trail, u64)> {
        self.context
            .trail
            .filter(|(trail, _)| !self.second_pass && !trail.abandoned())
    }

    /// The second pass: reads the source again and settles every deferred row. A deferred row
    /// is its number's first valid row unless an earlier valid row has that number. A deferred
    /// row that is gone or changed its number (the shop edited the source meanwhile) is not
    /// sent but rejected for this run. Returns `false` when the receiving side has gone away.
    fn settle(
        &mut self,
        source: &mut dyn OrderSource,
        deferred: &[(u64, String)],
    ) -> Result<bool, ReadError> {
        let numbers: HashSet<&str> = deferred.iter().map(|(_, n)| n.as_str()).collect();
        let mut pending = deferred.iter().peekable();
        // Deferred rows that are gone or carry another number now: the source changed.
        let mut unsettled: Vec<(u64, &str)> = Vec::new();
        // Numbers whose first valid row has been passed.
        let mut found: HashSet<String> = HashSet::new();
        while let Some(row) = source.next_row()? {
            while let Some((gone, number)) = pending.next_if(|(r, _)| *r < row.row) {
                unsettled.push((*gone, number));
            }
            let deferred_number = pending
                .next_if(|(r, _)| *r == row.row)
                .map(|(_, n)| n.as_str());
            let number = row.number(source.layout());
            match (deferred_number, number) {
                (Some(expected), Some(number)) if expected == number => {
                    let check = match found.contains(number) {
                        true => DuplicateCheck::Repeat,
                        false => DuplicateCheck::First,
                    };
                    if self.handle(source, &row, check)? == Handled::Valid {
                        found.insert(number.to_string());
                    }
                    if self.chunk_full() && !self.send_chunk(source)? {
                        return Ok(false);
                    }
                }
                (Some(expected), _) => unsettled.push((row.row, expected)),
                (None, Some(number)) => {
                    if numbers.contains(number)
                        && !found.contains(number)
                        && self.was_valid(source, &row, number)?
                    {
                        // Valid in the first pass: it was the first, as the filter had not
                        // seen it.
                        found.insert(number.to_string());
                    }
                }
                (None, None) => {}
            }
            if pending.peek().is_none() {
                break;
            }
        }
        unsettled.extend(pending.map(|(row, number)| (*row, number.as_str())));
        if !unsettled.is_empty() {
            // Known by number only now: the write-back has to read every row.
            self.stats.touched.give_up();
        }
        for (row, number) in unsettled {
            // Not sent, and not lost: the row carries this error until the next run checks it.
            let error = format!(
                "row {row}: changed while kksync was reading the source (number \"{number}\" \
                 was there before); it is checked again on the next run"
            );
            self.reject(
                row,
                None,
                error,
                vec!["changed while the run read the source".into()],
            )?;
        }
        Ok(true)
    }

    /// Whether a row the first pass did not defer passed validation there (it is checked again:
    /// a dry run does not record the rows it rejects).
    fn was_valid(
        &mut self,
        source: &dyn OrderSource,
        row: &SourceRow,
        number: &str,
    ) -> Result<bool, ReadError> {
        let known = self.known(number)?;
        let view = RowView {
            record: &row.record,
            layout: source.layout(),
        };
        let row_fingerprint = Some(order::row_fingerprint(view));
        Ok(unchanged_since_accepted(
            known.as_ref(),
            row_fingerprint,
            self.context.policy,
            self.now,
        ) || check_row(source, row, self.context.rules, known.as_ref()).is_ok())
    }
}

/// A connection of the reader's own to the store, if it allows one; without one (it could not
/// be opened), the reader shares the store's.
fn own_connection(state: &Mutex<StateDb>) -> Result<Option<StateDb>, ReadError> {
    let db = state.lock().map_err(|_| ReadError::Poisoned)?;
    Ok(db.open_reader().unwrap_or_else(|error| {
        tracing::debug!(%error, "reading the order state on the shared connection");
        None
    }))
}

/// What the store knows about `number`, through the lookahead: on the reader's own connection
/// if it has one, else on the shared store, whose lock is taken only when the lookahead's page
/// cannot answer.
fn lookup<'l>(
    lookahead: &'l mut Lookahead,
    own: Option<&StateDb>,
    shared: &Mutex<StateDb>,
    number: &str,
) -> Result<Option<&'l Known>, ReadError> {
    match own {
        Some(own) => Ok(lookahead.known_ref(own, number)?),
        None => lookahead.known_ref_with(number, || shared.lock().map_err(|_| ReadError::Poisoned)),
    }
}

fn duplicate(seen: &mut SeenNumbers, number: &str, check: DuplicateCheck) -> Seen {
    match check {
        DuplicateCheck::Filter => seen.check(number),
        DuplicateCheck::First => Seen::New,
        DuplicateCheck::Repeat => Seen::Duplicate,
    }
}

fn duplicate_error(row: u64, number: String) -> (String, Vec<String>) {
    let error = RowError {
        row,
        problems: vec![Problem {
            field: "number",
            value: Some(number),
            issue: Issue::Duplicate,
        }],
    };
    let reasons = error.problems.iter().map(Problem::reason).collect();
    (error.to_string(), reasons)
}

/// Validates one row: its prepared order, or its error text with the reasons for the summary.
fn check_row(
    source: &dyn OrderSource,
    row: &SourceRow,
    rules: &Rules,
    known: Option<&Known>,
) -> Result<PreparedOrder, (String, Vec<String>)> {
    if let Some(defect) = &row.defect {
        return Err((defect.message.clone(), vec![defect.reason.into()]));
    }
    let view = RowView {
        record: &row.record,
        layout: source.layout(),
    };
    // An order the API already has must not carry `initialDunningLevel` again.
    let created_before = source
        .previous_status(&row.record)
        .is_some_and(is_api_status)
        || known.is_some_and(|k| k.accepted_fingerprint.is_some());
    order::prepare(view, row.row, rules, created_before).map_err(|error| {
        let reasons = error.problems.iter().map(Problem::reason).collect();
        (error.to_string(), reasons)
    })
}

/// Fast path: the row is exactly as it was when the API accepted it, so neither validation nor
/// serialization can change the answer.
fn unchanged_since_accepted(
    known: Option<&Known>,
    row_fingerprint: Option<u64>,
    policy: Incremental,
    now: time::OffsetDateTime,
) -> bool {
    match (known, row_fingerprint) {
        (Some(known), Some(fingerprint)) => {
            known.row_fingerprint == Some(fingerprint)
                && known.last_error.is_none()
                && known.accepted_fingerprint.is_some_and(|accepted| {
                    decide(Some(known), accepted, policy, now) == Decision::Skip
                })
        }
        _ => false,
    }
}

/// Whether a row's `paymentStatus` is one the API reported (to an earlier run whose state is
/// gone, or to a shop plugin). A shop's own wording in that column (`offen`, `OFFEN`) says
/// nothing about Komfortkasse, so such a row keeps its `initialDunningLevel`. Should the order
/// exist after all (or carry a status newer than this list), the API refuses that field and the
/// order is resent without it: guessing wrong here costs a request, not the dunning level.
fn is_api_status(status: &str) -> bool {
    API_STATUSES.contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::SourceFormat;
    use crate::state::orders::JournalEntry;

    #[test]
    fn only_a_status_in_the_apis_vocabulary_marks_a_row_as_created_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.csv");
        let date = today();
        let csv = format!(
            "number,date,type,amount,currency,billing.countryCode,initialDunningLevel,paymentStatus\n\
             A-1,{date},INVOICE,1.00,EUR,DE,2,offen\n\
             A-2,{date},INVOICE,1.00,EUR,DE,2,UNPAID\n\
             A-3,{date},INVOICE,1.00,EUR,DE,2,\n\
             A-4,{date},INVOICE,1.00,EUR,DE,2,OFFEN\n\
             A-5,{date},INVOICE,1.00,EUR,DE,2,PAID_PARTIAL\n"
        );
        std::fs::write(&path, csv).unwrap();
        let settings = SourceSettings {
            path,
            format: SourceFormat::Csv,
            delimiter: None,
            columns: Default::default(),
        };
        let (mut source, _) = crate::source::open(&settings, true).unwrap();
        let rules = Rules::for_today(crate::dates::berlin_today());
        let mut carries_dunning = Vec::new();
        while let Some(row) = source.next_row().unwrap() {
            let order = check_row(source.as_ref(), &row, &rules, None).unwrap();
            let json = String::from_utf8(order.json).unwrap();
            carries_dunning.push((order.number, json.contains("initialDunningLevel")));
        }
        assert_eq!(
            carries_dunning,
            [
                ("A-1", true),
                ("A-2", false),
                ("A-3", true),
                ("A-4", true),
                ("A-5", false)
            ]
            .map(|(n, d)| (n.to_string(), d))
        );
    }
    use crate::config::SourceSettings;

    fn csv_of(rows: &[(&str, &str)]) -> String {
        let mut csv = String::from("number,date,type,amount,currency,billing.countryCode\n");
        for (number, date) in rows {
            csv.push_str(&format!("{number},{date},INVOICE,1.00,EUR,DE\n"));
        }
        csv
    }

    /// Reads `first` with a filter that says "maybe" to everything; the second pass reads
    /// `second` (the file as the shop changed it meanwhile). The numbers sent, and the store.
    fn read_saturated(first: &str, second: &str) -> (ReadStats, Vec<String>, Arc<Mutex<StateDb>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.csv");
        std::fs::write(&path, first).unwrap();
        let settings = SourceSettings {
            path: path.clone(),
            format: SourceFormat::Csv,
            delimiter: None,
            columns: Default::default(),
        };
        let state = Arc::new(Mutex::new(StateDb::in_memory().unwrap()));
        state.lock().unwrap().reset_row_errors().unwrap();
        let rules = Rules::for_today(crate::dates::berlin_today());
        let reopen = || {
            std::fs::write(&path, second).map_err(|e| SourceError::Io {
                path: path.clone(),
                action: "rewriting",
                source: e,
            })?;
            crate::source::open(&settings, true).map(|(source, _)| source)
        };
        let context = ReadContext {
            rules: &rules,
            chunk_size: 100,
            policy: Incremental::default(),
            state: &state,
            record_invalid: true,
            reopen: &reopen,
            read_back_done: &ReadBackDone::new(true),
            on_rows: &|_| {},
            trail: None,
        };
        let (sender, mut receiver) = mpsc::channel(16);
        let (mut source, _) = crate::source::open(&settings, true).unwrap();
        let stats = read_with(
            source.as_mut(),
            &context,
            &sender,
            SeenNumbers::saturated(),
            Touched::default(),
        )
        .unwrap();
        drop(sender);
        let mut sent = Vec::new();
        while let Ok(chunk) = receiver.try_recv() {
            sent.extend(chunk.orders.into_iter().map(|o| o.number));
        }
        (stats, sent, state)
    }

    fn today() -> String {
        crate::dates::berlin_today()
            .format(crate::dates::API_DATE)
            .unwrap()
    }

    /// With a filter that says "maybe" to everything, every check after the sorted start is
    /// settled by the second pass, and the outcome is the exact one.
    #[test]
    fn deferred_rows_are_settled_exactly_by_a_second_pass() {
        let date = today();
        let csv = csv_of(&[
            ("A-2", &date),
            ("A-5", &date),
            ("A-1", "31-02-2024"),
            ("A-1", &date),
            ("A-3", &date),
            ("A-2", &date),
            ("A-1", &date),
            ("A-4", &date),
        ]);
        let (stats, sent, state) = read_saturated(&csv, &csv);
        assert!(stats.complete);
        let mut numbers = sent.clone();
        numbers.sort();
        assert_eq!(numbers, ["A-1", "A-2", "A-3", "A-4", "A-5"], "{sent:?}");
        assert_eq!(stats.invalid_by_reason.values().sum::<u64>(), 3);
        let db = state.lock().unwrap();
        // Rows (header = row 1): 4 invalid date, 7 and 8 repeat.
        for (row, number) in [(7, "A-2"), (8, "A-1")] {
            let (error, _) = db.row_error(row).unwrap().unwrap();
            assert!(
                error.contains(number) && error.contains("more than once"),
                "{error}"
            );
        }
        assert!(db.row_error(4).unwrap().is_some());
        assert!(
            db.row_error(5).unwrap().is_none(),
            "the first valid A-1 is sent"
        );
    }

    /// A deferred row the shop changed or removed before the second pass is neither sent nor
    /// lost: it is rejected for this run, and the rows after it are still settled.
    #[test]
    fn deferred_rows_changed_meanwhile_are_rejected_not_dropped() {
        let date = today();
        let first = csv_of(&[
            ("A-2", &date),
            ("A-5", &date),
            ("A-1", &date),
            ("A-3", &date),
        ]);
        let second = csv_of(&[
            ("A-2", &date),
            ("A-5", &date),
            ("B-9", &date),
            ("A-3", &date),
        ]);
        let (stats, sent, state) = read_saturated(&first, &second);
        assert!(stats.complete);
        assert_eq!(sent, ["A-2", "A-5", "A-3"]);
        let db = state.lock().unwrap();
        let (error, _) = db.row_error(4).unwrap().unwrap();
        assert!(
            error.contains("changed while kksync was reading"),
            "{error}"
        );
        // Cut off before the last deferred row: it is rejected the same way.
        drop(db);
        let shorter = csv_of(&[("A-2", &date), ("A-5", &date), ("A-1", &date)]);
        let (_, sent, state) = read_saturated(&first, &shorter);
        assert_eq!(sent, ["A-2", "A-5", "A-1"]);
        let db = state.lock().unwrap();
        assert!(
            db.row_error(5)
                .unwrap()
                .is_some_and(|(e, _)| e.contains("changed while"))
        );
    }

    /// Reads `path` against `state`, with the read-back over when `done` says so, at most
    /// `pending_cap` rows waiting for it and the progress told to `on_rows`; the chunks handed
    /// on, and what was read.
    fn read_file(
        path: &std::path::Path,
        state: &Arc<Mutex<StateDb>>,
        done: &ReadBackDone,
        pending_cap: usize,
        on_rows: &(dyn Fn(u64) + Sync),
    ) -> (Vec<Chunk>, ReadStats) {
        let settings = SourceSettings {
            path: path.to_path_buf(),
            format: SourceFormat::Csv,
            delimiter: None,
            columns: Default::default(),
        };
        let rules = Rules::for_today(crate::dates::berlin_today());
        let reopen = || crate::source::open(&settings, true).map(|(source, _)| source);
        let context = ReadContext {
            rules: &rules,
            chunk_size: 100,
            policy: Incremental::default(),
            state,
            record_invalid: true,
            reopen: &reopen,
            read_back_done: done,
            on_rows,
            trail: None,
        };
        let (sender, mut receiver) = mpsc::channel(4096);
        let (mut source, _) = crate::source::open(&settings, true).unwrap();
        let seen = SeenNumbers::default();
        let touched = Touched::with_pending_cap(pending_cap);
        let stats = read_with(source.as_mut(), &context, &sender, seen, touched).unwrap();
        drop(sender);
        let mut chunks = Vec::new();
        while let Ok(chunk) = receiver.try_recv() {
            chunks.push(chunk);
        }
        (chunks, stats)
    }

    /// A CSV whose rows `A-<number>` record the status `UNPAID`, and a state store in `dir`
    /// in which the API accepted every one of them as the file has it.
    fn accepted_file(
        dir: &std::path::Path,
        numbers: impl Iterator<Item = String>,
    ) -> (std::path::PathBuf, String, Arc<Mutex<StateDb>>) {
        let path = dir.join("orders.csv");
        let date = today();
        let mut csv = String::from(
            "number,date,type,amount,currency,billing.countryCode,paymentStatus,syncError\n",
        );
        for number in numbers {
            csv.push_str(&format!("A-{number},{date},INVOICE,1.00,EUR,DE,UNPAID,\n"));
        }
        std::fs::write(&path, &csv).unwrap();
        let store = StateDb::open(&dir.join("state.db"), false).unwrap();
        let state = Arc::new(Mutex::new(store));
        state.lock().unwrap().reset_row_errors().unwrap();
        let (chunks, stats) = read_file(&path, &state, &ReadBackDone::new(true), 100, &|_| {});
        let accepted: Vec<JournalEntry> = chunks
            .into_iter()
            .flat_map(|chunk| chunk.orders)
            .map(|order| JournalEntry::Accepted {
                number: order.number,
                fingerprint: order.fingerprint,
                date: order.date,
                status: "UNPAID".into(),
                row_fingerprint: order.row_fingerprint,
            })
            .collect();
        assert_eq!(accepted.len() as u64, stats.rows, "every row is sent");
        state.lock().unwrap().journal(1, &accepted).unwrap();
        (path, csv, state)
    }

    /// A row whose stored fingerprint no longer matches (made by an earlier version, or the
    /// row changed without its payload changing) takes the slow path: its payload is as
    /// accepted, so nothing is sent, and its fingerprint is stored for the next run.
    #[test]
    fn a_stale_row_fingerprint_is_replaced_without_sending_anything() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, state) = accepted_file(dir.path(), (1..=3).map(|i| i.to_string()));
        let stored = |state: &Arc<Mutex<StateDb>>| -> Vec<i64> {
            let db = state.lock().unwrap();
            let mut query = db
                .connection()
                .prepare("SELECT row_fingerprint FROM kksync_order_state ORDER BY number")
                .unwrap();
            query
                .query_map([], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let fresh = stored(&state);
        state
            .lock()
            .unwrap()
            .connection()
            .execute("UPDATE kksync_order_state SET row_fingerprint = 42", [])
            .unwrap();

        let (chunks, stats) = read_file(&path, &state, &ReadBackDone::new(true), 100, &|_| {});

        assert!(
            chunks.iter().all(|chunk| chunk.orders.is_empty()),
            "nothing sent"
        );
        assert_eq!(stats.unchanged, 3);
        assert_eq!(
            stored(&state),
            fresh,
            "the rows' fingerprints are stored again"
        );
    }

    /// Rows read while the read-back runs wait in a list for its verdict. Once the list is
    /// full, the reader waits for the read-back instead of giving the list up (which would
    /// cost a write-back of every row), and settles the rows after it at once.
    #[test]
    fn a_full_list_of_rows_waiting_for_the_read_back_makes_the_reader_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, state) = accepted_file(dir.path(), (1..=6).map(|i| i.to_string()));
        let done = ReadBackDone::new(false);
        std::thread::scope(|scope| {
            let reading = scope.spawn(|| read_file(&path, &state, &done, 2, &|_| {}));
            // The reader stops at the third row; it must not finish on its own.
            let started = std::time::Instant::now();
            while done.waits.load(Ordering::Relaxed) == 0 && !reading.is_finished() {
                assert!(
                    started.elapsed().as_secs() < 60,
                    "the reader neither waited nor ended"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(
                !reading.is_finished(),
                "the reader went on with the list full"
            );
            done.set_changed(ChangedOrders::default());
            done.set();
            let (chunks, stats) = reading.join().unwrap();
            assert!(chunks.iter().all(|chunk| chunk.orders.is_empty()));
            assert_eq!(stats.unchanged, 6);
            // The two rows that waited learn the verdict (nothing changed) once the read-back
            // is over, and are settled like the four after the wait.
            assert_eq!(stats.touched.counts(), Some((0, 0, 6)));
        });
    }

    #[test]
    fn waiting_for_a_read_back_that_is_over_returns_at_once() {
        let done = ReadBackDone::new(true);
        done.wait();
        let done = ReadBackDone::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| done.set());
            done.wait();
        });
        assert!(done.is_set());
    }

    /// A read-back that ends by panicking (or is dropped) still lets a waiting reader go on.
    #[test]
    fn a_read_back_that_panics_still_ends_the_wait() {
        let done = ReadBackDone::new(false);
        std::thread::scope(|scope| {
            let read_back = scope.spawn(|| {
                let _over = done.set_on_drop();
                panic!("read-back failed");
            });
            done.wait();
            assert!(read_back.join().is_err());
        });
        assert!(done.is_set());
    }

    /// Orders that need sending go out in as few chunks as they fill, however far apart they
    /// are in the source: here two changed orders 250,000 rows apart, one chunk. The progress
    /// bar hears of the rows read meanwhile.
    #[test]
    fn orders_far_apart_share_a_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let rows = 250_002;
        let (path, csv, state) = accepted_file(dir.path(), (0..rows).map(|i| format!("{i:06}")));
        let date = today();
        let changed = csv
            .replacen(
                &format!("A-000001,{date},INVOICE,1.00"),
                &format!("A-000001,{date},INVOICE,2.00"),
                1,
            )
            .replacen(
                &format!("A-250001,{date},INVOICE,1.00"),
                &format!("A-250001,{date},INVOICE,2.00"),
                1,
            );
        std::fs::write(&path, changed).unwrap();
        let reports = Mutex::new(Vec::new());
        let on_rows = |rows| reports.lock().unwrap().push(rows);
        let (chunks, stats) = read_file(&path, &state, &ReadBackDone::new(true), 100, &on_rows);
        assert_eq!(stats.unchanged, rows - 2);
        let sizes: Vec<usize> = chunks.iter().map(|chunk| chunk.orders.len()).collect();
        assert_eq!(sizes, [2], "one chunk of two orders");
        let expected: Vec<u64> = (1..=rows / PROGRESS_ROWS)
            .map(|n| n * PROGRESS_ROWS)
            .collect();
        assert_eq!(reports.into_inner().unwrap(), expected);
    }
}
