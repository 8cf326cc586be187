//! The partial write-back, run behind the send phase instead of after it.
//!
//! A partial write-back ([`CsvPatch`](crate::source::csv_patch::CsvPatch)) copies the source
//! into a temporary file and rewrites the rows the send phase listed. Run after the send phase,
//! it adds a second pass over the file to the run (0.7–1 s for a million rows). Most of it can
//! run beside the send phase, on the other core: a row's result is final once
//! - the status read-back is over (it may change any status; before that, the reader keeps the
//!   rows it passes in a list waiting for its verdict and hands nothing over), and
//! - the chunk holding its order, and every chunk before it, is journaled (the send loop takes
//!   answers in order), and
//! - its validation error, if any, is recorded, and no duplicate check before it is deferred to
//!   the second pass.
//!
//! The reader hands the listed rows over as it lists them, and every chunk carries the offset
//! before which all rows are settled once it is journaled (see `Chunk::settled_before`). The
//! writer rewrites the rows before that offset and waits for more. Nothing changes for a crash:
//! the temporary file replaces the source only at the end, after everything is journaled, as
//! before; a killed run leaves the source as it was.
//!
//! Any doubt ends the trail (abandoned), and the run writes back as it did without it: the
//! whole file, since rows handed over are no longer in the list.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, PoisonError};

/// Rows a run reads before its rows are handed to a trailing write-back: by then a first run
/// (every row sent) shows that patching is not worth it, and a small file is written back
/// after the send phase as before.
pub const MIN_ROWS: u64 = 65_536;

/// What the trailing writer is to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Rewrite these rows (offset, row), ascending: their results are final.
    Rows(Vec<(u64, u64)>),
    /// The send phase is over: rewrite these rows, the last ones, then finish the file.
    Finish(Vec<(u64, u64)>),
    /// Stop, and leave the source alone.
    Abandon,
}

/// Where the send phase and the writer behind it meet.
#[derive(Debug, Default)]
pub struct Trail {
    shared: Mutex<Shared>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Shared {
    /// Rows handed over and not yet taken, ascending by offset.
    rows: VecDeque<(u64, u64)>,
    /// The offset of the last row handed over (rows must come in order).
    last: Option<u64>,
    /// Rows starting before this offset have their final results.
    settled_before: u64,
    /// Rows were handed over (taken from the list, whether or not the writer got them).
    started: bool,
    /// The send phase is over: the last rows.
    finish: Option<Vec<(u64, u64)>>,
    abandoned: bool,
}

impl Trail {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether rows were handed over: the list of rows to rewrite is no longer whole, so only
    /// this trail or a write-back of the whole file can end the run.
    pub fn started(&self) -> bool {
        self.shared().started
    }

    /// Whether the trail has ended without a file.
    pub fn abandoned(&self) -> bool {
        self.shared().abandoned
    }

    /// Hands rows over, ascending by offset and after any handed before (else the trail is
    /// abandoned).
    pub fn hand_over(&self, rows: Vec<(u64, u64)>) {
        let mut shared = self.shared();
        if rows.is_empty() {
            return;
        }
        if !shared.started {
            tracing::debug!("the write-back trails the send phase");
            shared.started = true;
        }
        if shared.abandoned || shared.finish.is_some() {
            return;
        }
        let ascending = rows.windows(2).all(|pair| pair[0].0 < pair[1].0);
        let after_last = match (shared.last, rows.first()) {
            (Some(last), Some(&(first, _))) => first > last,
            _ => true,
        };
        if !ascending || !after_last {
            tracing::debug!("rows out of order: the write-back no longer trails the send phase");
            shared.abandoned = true;
            self.wake.notify_all();
            return;
        }
        shared.last = rows.last().map(|&(offset, _)| offset);
        shared.rows.extend(rows);
        self.wake.notify_all();
    }

    /// Every row starting before `offset` has its final result.
    pub fn settle_before(&self, offset: u64) {
        let mut shared = self.shared();
        if offset > shared.settled_before {
            shared.settled_before = offset;
            self.wake.notify_all();
        }
    }

    /// The send phase is over; `rest` are the rows it listed and did not hand over.
    pub fn finish(&self, rest: Vec<(u64, u64)>) {
        let mut shared = self.shared();
        shared.finish = Some(rest);
        self.wake.notify_all();
    }

    /// Ends the trail: the writer stops and drops its file.
    pub fn abandon(&self) {
        let mut shared = self.shared();
        shared.abandoned = true;
        self.wake.notify_all();
    }

    /// Waits for work: rows handed over whose results are final, or the end. Rows handed over
    /// but not settled are rewritten with the last ones.
    pub fn next(&self) -> Next {
        let mut shared = self.shared();
        loop {
            if shared.abandoned {
                return Next::Abandon;
            }
            if let Some(rest) = shared.finish.take() {
                let mut rows: Vec<(u64, u64)> = std::mem::take(&mut shared.rows).into();
                rows.extend(rest);
                // The last rows include the deferred ones, which may come before rows handed
                // over (never before a settled one: see `Chunk::settled_before`).
                rows.sort_unstable();
                tracing::debug!(
                    rows = rows.len(),
                    "writing back the last rows behind the send phase"
                );
                shared.abandoned = true;
                return Next::Finish(rows);
            }
            let settled_before = shared.settled_before;
            let ready = shared
                .rows
                .iter()
                .take_while(|(offset, _)| *offset < settled_before)
                .count();
            if ready > 0 {
                return Next::Rows(shared.rows.drain(..ready).collect());
            }
            shared = self
                .wake
                .wait(shared)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Abandons the trail when dropped, unless [`Trail::finish`] was called: whatever ends the send
/// phase early (an error, a panic), the writer does not wait for ever.
pub struct AbandonOnDrop<'a>(pub &'a Trail);

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        let mut shared = self.0.shared();
        if shared.finish.is_none() {
            shared.abandoned = true;
            self.0.wake.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_given_out_once_settled_and_the_rest_at_the_finish() {
        let trail = Trail::default();
        trail.hand_over(vec![(10, 1), (20, 2), (30, 3)]);
        assert!(trail.started());
        trail.settle_before(25);
        assert_eq!(trail.next(), Next::Rows(vec![(10, 1), (20, 2)]));
        // A lower offset later (a chunk journaled out of its turn) settles nothing more.
        trail.settle_before(5);
        trail.hand_over(vec![(40, 4)]);
        trail.finish(vec![(50, 5), (35, 7)]);
        assert_eq!(
            trail.next(),
            Next::Finish(vec![(30, 3), (35, 7), (40, 4), (50, 5)])
        );
        assert_eq!(trail.next(), Next::Abandon);
    }

    #[test]
    fn rows_out_of_order_abandon_the_trail() {
        let trail = Trail::default();
        trail.hand_over(vec![(10, 1), (20, 2)]);
        trail.hand_over(vec![(15, 9)]);
        assert_eq!(trail.next(), Next::Abandon);
        let trail = Trail::default();
        trail.hand_over(vec![(20, 2), (10, 1)]);
        assert!(trail.abandoned());
        // Rows left the list: the run must not patch from what remains of it.
        assert!(trail.started());
    }

    #[test]
    fn the_writer_waits_until_rows_settle_and_a_dropped_guard_ends_it() {
        let trail = Trail::default();
        let (taken_tx, taken) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                loop {
                    match trail.next() {
                        Next::Rows(rows) => taken_tx.send(rows).unwrap(),
                        Next::Finish(_) => unreachable!("never finished"),
                        Next::Abandon => return,
                    }
                }
            });
            let guard = AbandonOnDrop(&trail);
            trail.hand_over(vec![(1, 1), (2, 2)]);
            trail.settle_before(2);
            assert_eq!(taken.recv().unwrap(), vec![(1, 1)]);
            drop(guard);
            writer.join().unwrap();
        });
        drop(taken_tx);
        // The unsettled row was never given out.
        assert!(taken.recv().is_err());
    }
}
