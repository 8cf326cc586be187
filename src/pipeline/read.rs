//! The reading stage: rows → validated, serialized orders, grouped into batches of at most one
//! chunk of orders. Runs on a blocking thread so parsing overlaps with sending.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use tokio::sync::mpsc;

use crate::order::{self, Issue, PreparedOrder, Problem, RowError, RowView, Rules};
use crate::source::{OrderSource, RowResult, SourceError, SourceRow};

/// Consecutive rows of the source: every row keeps its place for the write-back, the valid
/// ones also carry their prepared order.
#[derive(Debug, Default)]
pub struct Batch {
    /// The rows, in source order.
    pub rows: Vec<SourceRow>,
    /// Results known before sending (invalid rows); `None` for rows with an order.
    pub results: Vec<Option<RowResult>>,
    /// The orders to send, with the index of their row in `rows`.
    pub orders: Vec<(usize, PreparedOrder)>,
    /// The source's estimated total of rows, once known (for the progress bar's ETA).
    pub estimated_rows: Option<u64>,
}

impl Batch {
    fn with_capacity(orders: usize) -> Self {
        Batch {
            rows: Vec::with_capacity(orders),
            results: Vec::with_capacity(orders),
            orders: Vec::with_capacity(orders),
            estimated_rows: None,
        }
    }
}

/// What reading found, for the summary.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Rows read.
    pub rows: u64,
    /// Rows that passed validation.
    pub valid: u64,
    /// Rejected rows, grouped by reason.
    pub invalid_by_reason: BTreeMap<String, u64>,
    /// Whether the whole source was read (not stopped because the receiver went away).
    pub complete: bool,
}

/// Rows read before the source's size is estimated.
const SIZE_SAMPLE_ROWS: u64 = 1000;
/// An upper bound on what a size estimate may reserve up front (a wrong guess must not cost much).
const MAX_PRESIZED_ORDERS: usize = 20_000_000;

/// A batch holds at most this many rows per order slot, so a stretch of invalid rows cannot
/// make one batch grow without bound.
const MAX_ROWS_PER_ORDER_SLOT: usize = 16;

/// Reads the whole source into batches sent to `batches`. Stops early, without error, if the
/// receiving side has gone away.
pub fn read_batches(
    source: &mut dyn OrderSource,
    rules: &Rules,
    chunk_size: usize,
    batches: &mpsc::Sender<Batch>,
) -> Result<ReadStats, SourceError> {
    let mut stats = ReadStats::default();
    // Order numbers already sent in this run, as 64-bit hashes: 8 bytes per order instead of
    // the number itself. SipHash with fixed keys; a false "duplicate" needs a 64-bit collision.
    let mut seen: HashSet<u64, BuildHasherDefault<IdentityHasher>> = HashSet::default();
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let mut batch = Batch::with_capacity(chunk_size);
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
        let checked = match &row.defect {
            Some(defect) => Err(defect.clone()),
            None => {
                let view = RowView {
                    record: &row.record,
                    layout: source.layout(),
                };
                let created_before = source.previous_status(&row.record).is_some();
                order::prepare(view, row.row, rules, created_before)
                    .and_then(|order| {
                        if seen.insert(hasher.hash_one(order.number.as_str())) {
                            Ok(order)
                        } else {
                            let problem = Problem {
                                field: "number",
                                value: Some(order.number),
                                issue: Issue::Duplicate,
                            };
                            Err(RowError {
                                row: row.row,
                                problems: vec![problem],
                            })
                        }
                    })
                    .map_err(|error| {
                        for problem in &error.problems {
                            *stats.invalid_by_reason.entry(problem.reason()).or_default() += 1;
                        }
                        error.to_string()
                    })
            }
        };
        match checked {
            Ok(order) => {
                stats.valid += 1;
                batch.orders.push((batch.rows.len(), order));
                batch.results.push(None);
            }
            Err(error) => {
                if row.defect.is_some() {
                    *stats
                        .invalid_by_reason
                        .entry("row has more fields than the header".into())
                        .or_default() += 1;
                }
                batch.results.push(Some(RowResult::Failed { error }));
            }
        }
        batch.rows.push(row);
        if stats.rows >= SIZE_SAMPLE_ROWS && batch.rows.len() == 1 {
            batch.estimated_rows = source.estimated_rows(stats.rows);
        }
        let full = batch.orders.len() >= chunk_size
            || batch.rows.len() >= chunk_size * MAX_ROWS_PER_ORDER_SLOT;
        if full
            && batches
                .blocking_send(std::mem::replace(
                    &mut batch,
                    Batch::with_capacity(chunk_size),
                ))
                .is_err()
        {
            return Ok(stats);
        }
    }
    if !batch.rows.is_empty() && batches.blocking_send(batch).is_err() {
        return Ok(stats);
    }
    stats.complete = true;
    Ok(stats)
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
