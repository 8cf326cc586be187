//! The reading stage: rows → validated, serialized orders → the ones that need sending, in
//! chunks of at most `chunk_size`. Runs on a blocking thread so parsing overlaps with sending.
//!
//! Only orders travel on from here; rows are not kept. The write-back reads the source again
//! and takes every row's result from the state store, so memory does not depend on how far
//! apart the changed orders are.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::plan::{Decision, Incremental, decide};
use crate::order::{self, Field, Issue, PreparedOrder, Problem, RowError, RowView, Rules};
use crate::source::{OrderSource, SourceError, SourceRow};
use crate::state::orders::Known;
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

/// Rows read before the source's size is estimated.
const SIZE_SAMPLE_ROWS: u64 = 1000;
/// An upper bound on what a size estimate may reserve up front (a wrong guess must not cost much).
const MAX_PRESIZED_ORDERS: usize = 20_000_000;
/// Invalid rows are recorded in the state store in groups of this many.
const ROW_ERRORS_PER_WRITE: usize = 1000;
/// A partial chunk is sent anyway once this many rows were read since its first order, so the
/// progress of a sparse incremental run stays visible and acknowledged work is journaled.
const MAX_ROWS_PER_CHUNK: u64 = 200_000;

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
}

/// Reads the whole source and sends the orders that need sending to `chunks`. Stops early,
/// without error, if the receiving side has gone away.
pub fn read_chunks(
    source: &mut dyn OrderSource,
    context: &ReadContext<'_>,
    chunks: &mpsc::Sender<Chunk>,
) -> Result<ReadStats, ReadError> {
    let mut stats = ReadStats::default();
    // Order numbers already seen in this run, as 64-bit hashes: 8 bytes per order instead of
    // the number itself. SipHash with fixed keys; a false "duplicate" needs a 64-bit collision.
    let mut seen: HashSet<u64, BuildHasherDefault<IdentityHasher>> = HashSet::default();
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let mut invalid: Vec<(u64, String, String)> = Vec::new();
    let mut chunk = Chunk::default();
    let mut chunk_started_at = 0u64;
    let now = time::OffsetDateTime::now_utc();
    let lock = || context.state.lock().map_err(|_| ReadError::Poisoned);
    while let Some(row) = source.next_row()? {
        stats.rows += 1;
        if stats.rows == SIZE_SAMPLE_ROWS
            && let Some(estimate) = source.estimated_rows(stats.rows)
        {
            // Sizing the set once avoids the moment of growth when old and new tables coexist.
            let more = usize::try_from(estimate.saturating_mul(11) / 10)
                .unwrap_or(0)
                .min(MAX_PRESIZED_ORDERS);
            seen.reserve(more.saturating_sub(seen.len()));
        }
        let view = RowView {
            record: &row.record,
            layout: source.layout(),
        };
        let number = row
            .defect
            .is_none()
            .then(|| view.get(Field::Number))
            .flatten();
        let known = match number {
            Some(number) => lock()?.known(number)?,
            None => None,
        };
        let row_fingerprint = number.map(|_| order::row_fingerprint(view));
        // Fast path: the row is exactly as it was when the API accepted it, so neither
        // validation nor serialization can change the answer.
        let unchanged_row = match (&known, row_fingerprint, number) {
            (Some(known), Some(fingerprint), Some(number))
                if known.row_fingerprint == Some(fingerprint) && known.last_error.is_none() =>
            {
                known.accepted_fingerprint.is_some_and(|accepted| {
                    decide(Some(known), accepted, context.policy, now) == Decision::Skip
                }) && seen.insert(hasher.hash_one(number))
            }
            _ => false,
        };
        if unchanged_row {
            stats.valid += 1;
            stats.unchanged += 1;
        } else {
            match check_row(
                source,
                &row,
                context.rules,
                &mut seen,
                &hasher,
                known.as_ref(),
            ) {
                Ok(mut order) => {
                    stats.valid += 1;
                    order.row_fingerprint = row_fingerprint.unwrap_or_default();
                    match decide(known.as_ref(), order.fingerprint, context.policy, now) {
                        Decision::Skip => {
                            stats.unchanged += 1;
                            if known.as_ref().is_some_and(|k| {
                                k.last_error.is_some()
                                    && k.accepted_fingerprint == Some(order.fingerprint)
                            }) {
                                lock()?.clear_error(&order.number)?;
                            }
                        }
                        _ => {
                            if chunk.orders.is_empty() {
                                chunk_started_at = stats.rows;
                            }
                            chunk.orders.push(order);
                        }
                    }
                }
                Err((error, reasons)) => {
                    for reason in &reasons {
                        *stats.invalid_by_reason.entry(reason.clone()).or_default() += 1;
                    }
                    if context.record_invalid {
                        invalid.push((row.row, error, reasons.join("\n")));
                    }
                    if invalid.len() >= ROW_ERRORS_PER_WRITE {
                        lock()?.add_row_errors(&invalid)?;
                        invalid.clear();
                    }
                }
            }
        }
        let full = chunk.orders.len() >= context.chunk_size
            || (!chunk.orders.is_empty() && stats.rows - chunk_started_at >= MAX_ROWS_PER_CHUNK);
        if full {
            chunk.rows_read = stats.rows;
            if stats.rows >= SIZE_SAMPLE_ROWS {
                chunk.estimated_rows = source.estimated_rows(stats.rows);
            }
            if chunks.blocking_send(std::mem::take(&mut chunk)).is_err() {
                return Ok(stats);
            }
        }
    }
    if !invalid.is_empty() {
        lock()?.add_row_errors(&invalid)?;
    }
    chunk.rows_read = stats.rows;
    if chunks.blocking_send(chunk).is_err() {
        return Ok(stats);
    }
    stats.complete = true;
    Ok(stats)
}

/// Validates one row: its prepared order, or its error text with the reasons for the summary.
fn check_row(
    source: &dyn OrderSource,
    row: &SourceRow,
    rules: &Rules,
    seen: &mut HashSet<u64, BuildHasherDefault<IdentityHasher>>,
    hasher: &BuildHasherDefault<DefaultHasher>,
    known: Option<&Known>,
) -> Result<PreparedOrder, (String, Vec<String>)> {
    if let Some(defect) = &row.defect {
        return Err((
            defect.clone(),
            vec!["row has more fields than the header".into()],
        ));
    }
    let view = RowView {
        record: &row.record,
        layout: source.layout(),
    };
    // An order the API already has must not carry `initialDunningLevel` again.
    let created_before = source.previous_status(&row.record).is_some()
        || known.is_some_and(|k| k.accepted_fingerprint.is_some());
    let checked = order::prepare(view, row.row, rules, created_before).and_then(|order| {
        if seen.insert(hasher.hash_one(order.number.as_str())) {
            Ok(order)
        } else {
            Err(RowError {
                row: row.row,
                problems: vec![Problem {
                    field: "number",
                    value: Some(order.number),
                    issue: Issue::Duplicate,
                }],
            })
        }
    });
    checked.map_err(|error| {
        let reasons = error.problems.iter().map(Problem::reason).collect();
        (error.to_string(), reasons)
    })
}

/// The set above stores hashes already; hashing them again would be wasted work.
#[derive(Default)]
struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}
