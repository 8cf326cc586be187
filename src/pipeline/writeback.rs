//! The write-back: the source is read again and every row gets its result from the state
//! store (the status the API last reported, or the error that stopped it) or from this run's
//! validation. Rows whose recorded values are already right are left alone, so a run that
//! learnt nothing leaves a CSV byte-identical and a SQLite table unwritten.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::config::SourceSettings;
use crate::order::{Field, RowView};
use crate::source::{
    self, FileIdentity, FinishedRow, OrderSource, RowResult, SourceError, SourceRow,
};
use crate::state::lookahead::Lookahead;
use crate::state::{StateDb, StateError};

/// Rows written per call of the sink (one SQLite transaction).
const ROWS_PER_WRITE: usize = 1000;

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

/// Writes every row's result back into the source. `read` is the identity of the file the send
/// phase read (CSV): this run's validation errors are keyed by row number, so a file that
/// changed since is not written back at all. `on_rows` is told how many rows were done
/// (progress).
pub fn write_back(
    settings: &SourceSettings,
    state: &Arc<Mutex<StateDb>>,
    read: Option<&FileIdentity>,
    on_rows: &dyn Fn(u64),
) -> Result<WriteBackStats, WriteBackError> {
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
    let mut stats = WriteBackStats::default();
    let mut errors = RowErrors::default();
    let mut lookahead = Lookahead::default();
    let mut batch: Vec<FinishedRow> = Vec::with_capacity(ROWS_PER_WRITE);
    let mut first_batch = true;
    while let Some(row) = source.next_row()? {
        stats.rows += 1;
        let db = state.lock().map_err(|_| WriteBackError::Poisoned)?;
        let result = result_of(
            source.as_ref(),
            &row,
            &db,
            &mut lookahead,
            &mut errors,
            &mut stats,
        )?;
        drop(db);
        let result = if unchanged(source.as_ref(), &row, &result) {
            RowResult::Untouched
        } else {
            stats.changed += 1;
            result
        };
        batch.push(FinishedRow {
            source: row,
            result,
        });
        if batch.len() >= ROWS_PER_WRITE {
            sink.write(&batch)?;
            on_rows(batch.len() as u64);
            batch.clear();
            if std::mem::take(&mut first_batch) {
                crate::pause::point("writing-back");
            }
        }
    }
    sink.write(&batch)?;
    on_rows(batch.len() as u64);
    sink.write_trailing_blank_lines(source.trailing_blank_lines())?;
    sink.finish(stats.changed > 0)?;
    Ok(stats)
}

/// A row's result: this run's validation error, else what the store knows about its order.
fn result_of(
    source: &dyn OrderSource,
    row: &SourceRow,
    db: &StateDb,
    lookahead: &mut Lookahead,
    errors: &mut RowErrors,
    stats: &mut WriteBackStats,
) -> Result<RowResult, StateError> {
    if let Some((error, reasons)) = errors.take(db, row.row)? {
        stats.rejected += 1;
        for reason in reasons.split('\n') {
            *stats
                .rejected_by_reason
                .entry(reason.to_string())
                .or_default() += 1;
        }
        return Ok(RowResult::Failed { error });
    }
    let view = RowView {
        record: &row.record,
        layout: source.layout(),
    };
    let Some(number) = view.get(Field::Number) else {
        return Ok(RowResult::Untouched);
    };
    let Some(known) = lookahead.known_ref(db, number)? else {
        return Ok(RowResult::Untouched);
    };
    if let Some(error) = known.last_error.clone() {
        stats.rejected += 1;
        *stats
            .rejected_by_reason
            .entry(reason_of(&error))
            .or_default() += 1;
        return Ok(RowResult::Failed { error });
    }
    match &known.payment_status {
        Some(status) => {
            match stats.statuses.get_mut(status) {
                Some(count) => *count += 1,
                None => {
                    stats.statuses.insert(status.clone(), 1);
                }
            }
            Ok(RowResult::Synced {
                status: status.clone(),
            })
        }
        None => Ok(RowResult::Untouched),
    }
}

/// Whether the source already records this result.
fn unchanged(source: &dyn OrderSource, row: &SourceRow, result: &RowResult) -> bool {
    let status = source.previous_status(&row.record);
    let error = source.previous_error(&row.record);
    match result {
        RowResult::Synced { status: new } => status == Some(new.as_str()) && error.is_none(),
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
