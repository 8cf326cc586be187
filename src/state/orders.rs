//! Per-order state (`kksync_order_state`): the fingerprint of the payload the API last
//! accepted, the last known `paymentStatus` and the last error; and, for one run, the rows that
//! failed validation (a temporary table, so their number does not cost memory).

use rusqlite::types::ValueRef;
use rusqlite::{OptionalExtension, params};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

use super::{StateDb, StateError, now_unix};

/// Statuses after which the payment status no longer changes by itself, so the read-back does
/// not ask for them. `PAID` is final for the payment; a refund changes it, and the refund run
/// records that itself. Everything else, including values newer than this client, is open.
pub const FINAL_STATUSES: &[&str] = &["PAID", "CANCELLED", "REFUNDED", "DISAPPEARED", "LEGACY"];

/// The `paymentStatus` values the API documents (reference §5.2).
pub const API_STATUSES: [&str; 9] = [
    "UNPAID",
    "PAID",
    "PAID_PARTIAL",
    "CANCELLED",
    "REFUNDED",
    "REFUNDED_PARTIAL",
    "COLLECTION",
    "DISAPPEARED",
    "LEGACY",
];

/// The status every new order starts in, and in which most open orders stay.
pub const FIRST_STATUS: &str = "UNPAID";

/// Statuses Komfortkasse counts as open for `/ordersync` (the vendor is silent; these are the
/// ones that are still being worked on).
pub const OPEN_FOR_ORDERSYNC: &[&str] = &["UNPAID", "PAID_PARTIAL", "COLLECTION"];

/// Whether a status no longer changes by itself.
pub fn is_final(status: &str) -> bool {
    FINAL_STATUSES.contains(&status)
}

/// Open orders past [`FIRST_STATUS`]: the condition of the partial index of migration 8
/// (first made by migration 6), which it must imply term for term (`FINAL_STATUSES`, then
/// `FIRST_STATUS`).
///
/// One comparison per status, not `NOT IN (...)`: SQLite evaluates an index's condition for
/// the old and the new row of every write that changes `payment_status`, and an `IN` list
/// there made each statement build two temporary tables of the list. Applying 50,000 read-back
/// statuses to a million orders took 0.53-0.86 s of CPU with the `IN` list, 0.33-0.38 s with
/// these comparisons, about as much as without the index (a copy of the store, Python's
/// sqlite3).
const MOVED_OPEN: &str = "payment_status IS NOT NULL \
     AND payment_status <> 'PAID' AND payment_status <> 'CANCELLED' \
     AND payment_status <> 'REFUNDED' AND payment_status <> 'DISAPPEARED' \
     AND payment_status <> 'LEGACY' AND payment_status <> 'UNPAID'";

/// `'A','B'` for an SQL `IN` list of these constants.
fn quoted(statuses: &[&str]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What the store knows about one order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Fingerprint of the payload the API last accepted.
    pub accepted_fingerprint: Option<u64>,
    /// When that was.
    pub accepted_at: Option<OffsetDateTime>,
    /// The last known `paymentStatus`.
    pub payment_status: Option<String>,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// The payload that failure concerned.
    pub error_fingerprint: Option<u64>,
    /// Whether that failure was transient (resend) or final (resend only once changed).
    pub error_transient: bool,
    /// Fingerprint of the source row's order fields when the API last accepted the order.
    pub row_fingerprint: Option<u64>,
    /// The run whose send reported `payment_status` (`None` when a read-back learnt it).
    pub status_run: Option<i64>,
}

/// The condition under which the bound `b` (a row of `kksync_oldest_open`) is one: no run of an
/// older kksync, which does not lower it, came after the run that set it.
const BOUND_IS_KEPT: &str = "NOT EXISTS (
    SELECT 1 FROM kksync_runs WHERE id > b.run AND keeps_oldest_open IS NOT 1)";

/// Lowers the bound of the oldest open order (`kksync_oldest_open`) to `date`, if there is one
/// and it is later: an order of that date has just been given an open status.
fn lower_oldest_open(connection: &rusqlite::Connection, date: &str) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "UPDATE kksync_oldest_open SET oldest = ?1 WHERE oldest IS NULL OR oldest > ?1",
        )?
        .execute([date])
        .map(drop)
}

/// What one send taught about one order, to be committed before the write-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalEntry {
    /// The API stored the payload and reported this status.
    Accepted {
        /// Order number.
        number: String,
        /// Fingerprint of the payload sent.
        fingerprint: u64,
        /// The order's date.
        date: Date,
        /// `paymentStatus` from the reply.
        status: String,
        /// Fingerprint of the source row's order fields.
        row_fingerprint: u64,
    },
    /// The API rejected the payload, or the chunk was given up on.
    Failed {
        /// Order number.
        number: String,
        /// Fingerprint of the payload sent.
        fingerprint: u64,
        /// The text for `syncError`.
        error: String,
        /// Whether a resend of the same payload may succeed.
        transient: bool,
    },
}

/// Fingerprints stored as SQLite integers (the same 64 bits, reinterpreted).
fn to_sql(fingerprint: u64) -> i64 {
    i64::from_ne_bytes(fingerprint.to_ne_bytes())
}

pub(super) fn from_sql(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// `SELECT` and the columns [`known_from_row`] reads, in its order (a macro, for `concat!`).
macro_rules! known_columns {
    () => {
        "SELECT accepted_fingerprint, accepted_at, payment_status, last_error, \
         error_fingerprint, error_transient, row_fingerprint, status_run"
    };
}
pub(super) use known_columns;
/// The columns of `known_columns!` the send phase's pages read ([`known_for_sending_into`]):
/// only `--resend-open-after` looks at `accepted_at`, only the write-back at `status_run`,
/// and an error's details matter for the few orders that have one (looked up whole). Each
/// column read costs a few hundred instructions, a million times a run.
macro_rules! known_columns_for_sending {
    () => {
        "SELECT accepted_fingerprint, payment_status, last_error, row_fingerprint"
    };
}
pub(super) use known_columns_for_sending;
/// How many columns `known_columns_for_sending!` selects.
pub(super) const KNOWN_COLUMNS_FOR_SENDING: usize = 4;

/// Reads the columns of `known_columns_for_sending!` into `known`; the others are left empty.
pub(super) fn known_for_sending_into(
    known: &mut Known,
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<()> {
    known.accepted_fingerprint = row.get::<_, Option<i64>>(0)?.map(from_sql);
    known.accepted_at = None;
    text_into(&mut known.payment_status, row, 1)?;
    text_into(&mut known.last_error, row, 2)?;
    known.error_fingerprint = None;
    known.error_transient = false;
    known.row_fingerprint = row.get::<_, Option<i64>>(3)?.map(from_sql);
    known.status_run = None;
    Ok(())
}

/// How many columns `known_columns!` selects.
pub(super) const KNOWN_COLUMNS: usize = 8;

/// Reads the columns of `known_columns!` from a result row, starting at column `at`.
pub(super) fn known_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Known> {
    let mut known = Known::default();
    known_into(&mut known, row, at)?;
    Ok(known)
}

/// As [`known_from_row`], into `known`, reusing its strings' memory (the lookahead reads a
/// million rows a run, and allocating three strings per row was a tenth of its time).
pub(super) fn known_into(
    known: &mut Known,
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<()> {
    known.accepted_fingerprint = row.get::<_, Option<i64>>(at)?.map(from_sql);
    known.accepted_at = time_at(row.get_ref(at + 1)?);
    text_into(&mut known.payment_status, row, at + 2)?;
    text_into(&mut known.last_error, row, at + 3)?;
    known.error_fingerprint = row.get::<_, Option<i64>>(at + 4)?.map(from_sql);
    known.error_transient = row.get::<_, i64>(at + 5)? != 0;
    known.row_fingerprint = row.get::<_, Option<i64>>(at + 6)?.map(from_sql);
    known.status_run = row.get(at + 7)?;
    Ok(())
}

/// A time stored in `kksync_order_state`: seconds since the Unix epoch, or RFC 3339 text as a
/// kksync from before migration 8 writes it. Anything else reads as unknown (`None`).
fn time_at(value: ValueRef<'_>) -> Option<OffsetDateTime> {
    match value {
        ValueRef::Integer(seconds) => OffsetDateTime::from_unix_timestamp(seconds).ok(),
        ValueRef::Text(text) => std::str::from_utf8(text)
            .ok()
            .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok()),
        _ => None,
    }
}

/// Sets `slot` to nullable text column `index`, keeping its allocation.
fn text_into(
    slot: &mut Option<String>,
    row: &rusqlite::Row<'_>,
    index: usize,
) -> rusqlite::Result<()> {
    match row.get_ref(index)?.as_str_or_null()? {
        Some(text) => {
            let held = slot.get_or_insert_default();
            held.clear();
            held.push_str(text);
        }
        None => *slot = None,
    }
    Ok(())
}

impl StateDb {
    /// What is known about `number`, if anything.
    pub fn known(&self, number: &str) -> Result<Option<Known>, StateError> {
        let mut statement = self
            .connection()
            .prepare_cached(concat!(
                known_columns!(),
                " FROM kksync_order_state WHERE number = ?1"
            ))
            .map_err(self.error("looking up an order"))?;
        statement
            .query_row([number], |row| known_from_row(row, 0))
            .optional()
            .map_err(self.error("looking up an order"))
    }

    /// Commits what one chunk's send taught, in one transaction.
    pub fn journal(&mut self, run: i64, entries: &[JournalEntry]) -> Result<(), StateError> {
        let path = self.path().to_path_buf();
        let fail = |action| super::error(&path, action);
        let now = now_unix();
        let tx = self
            .connection_mut()
            .transaction()
            .map_err(fail("starting the journal transaction"))?;
        {
            let mut accepted = tx
                .prepare_cached(
                    "INSERT INTO kksync_order_state
                         (number, accepted_fingerprint, accepted_at, order_date, payment_status,
                          status_at, last_error, error_fingerprint, error_transient, attempts, last_run,
                          row_fingerprint, status_run)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?3, NULL, NULL, 0, 0, ?6, ?7, ?6)
                     ON CONFLICT (number) DO UPDATE SET
                         accepted_fingerprint = excluded.accepted_fingerprint,
                         accepted_at = excluded.accepted_at,
                         order_date = excluded.order_date,
                         payment_status = excluded.payment_status,
                         status_at = excluded.status_at,
                         last_error = NULL, error_fingerprint = NULL, error_transient = 0,
                         attempts = 0, last_run = excluded.last_run,
                         row_fingerprint = excluded.row_fingerprint,
                         status_run = excluded.status_run",
                )
                .map_err(fail("journaling"))?;
            let mut failed = tx
                .prepare_cached(
                    "INSERT INTO kksync_order_state
                         (number, last_error, error_fingerprint, error_transient, attempts, last_run)
                     VALUES (?1, ?2, ?3, ?4, 1, ?5)
                     ON CONFLICT (number) DO UPDATE SET
                         last_error = excluded.last_error,
                         error_fingerprint = excluded.error_fingerprint,
                         error_transient = excluded.error_transient,
                         attempts = attempts + 1, last_run = excluded.last_run",
                )
                .map_err(fail("journaling"))?;
            for entry in entries {
                match entry {
                    JournalEntry::Accepted {
                        number,
                        fingerprint,
                        date,
                        status,
                        row_fingerprint,
                    } => accepted.execute(params![
                        number,
                        to_sql(*fingerprint),
                        now,
                        date.to_string(),
                        status,
                        run,
                        to_sql(*row_fingerprint)
                    ]),
                    JournalEntry::Failed {
                        number,
                        fingerprint,
                        error,
                        transient,
                    } => failed.execute(params![
                        number,
                        error,
                        to_sql(*fingerprint),
                        i64::from(*transient),
                        run
                    ]),
                }
                .map_err(fail("journaling"))?;
            }
            let oldest_open = entries
                .iter()
                .filter_map(|entry| match entry {
                    JournalEntry::Accepted { date, status, .. } if !is_final(status) => Some(*date),
                    _ => None,
                })
                .min();
            if let Some(date) = oldest_open {
                lower_oldest_open(&tx, &date.to_string()).map_err(fail("journaling"))?;
            }
        }
        tx.commit().map_err(fail("committing the journal"))
    }

    /// Forgets an order's last error: its current payload is the one the API accepted earlier
    /// (the row was changed back after a rejected edit).
    pub fn clear_error(&self, number: &str) -> Result<(), StateError> {
        self.connection()
            .prepare_cached(
                "UPDATE kksync_order_state
                 SET last_error = NULL, error_fingerprint = NULL, error_transient = 0, attempts = 0
                 WHERE number = ?1",
            )
            .and_then(|mut s| s.execute([number]))
            .map_err(self.error("clearing an error"))?;
        Ok(())
    }

    /// Stores the row fingerprints of orders whose rows changed in a way that leaves their
    /// payload as accepted (spaces, moved columns, a fingerprint of an earlier version), so
    /// that the next run finds them unchanged without validating them again.
    pub fn refresh_row_fingerprints(&mut self, rows: &[(String, u64)]) -> Result<(), StateError> {
        self.execute_each(
            "storing row fingerprints",
            "UPDATE kksync_order_state SET row_fingerprint = ?2 WHERE number = ?1",
            rows,
            |update, (number, fingerprint)| update.execute(params![number, to_sql(*fingerprint)]),
        )
    }

    /// Runs `sql` once for each of `items` (`run` binds and executes it), all in one
    /// transaction.
    fn execute_each<T>(
        &mut self,
        action: &'static str,
        sql: &str,
        items: &[T],
        mut run: impl FnMut(&mut rusqlite::CachedStatement<'_>, &T) -> rusqlite::Result<usize>,
    ) -> Result<(), StateError> {
        let path = self.path().to_path_buf();
        let tx = self.connection_mut().transaction();
        tx.and_then(|tx| {
            {
                let mut statement = tx.prepare_cached(sql)?;
                for item in items {
                    run(&mut statement, item)?;
                }
            }
            tx.commit()
        })
        .map_err(super::error(&path, action))
    }

    /// A date no order whose status may still change by itself is older than (for `maxAge`
    /// of the read-back of run `run`); `None` when there is no such order. The bound the last
    /// sync left (`kksync_oldest_open`, see migration 7) where there is one, else the oldest
    /// such order's date from a scan of every order (0.2 s for a million), leaving out the
    /// orders whose status `run`'s own sends reported: the read-back runs beside them, and
    /// whether it saw them would depend on which came first.
    pub fn oldest_open_order(&self, run: i64) -> Result<Option<Date>, StateError> {
        // Not a bound any more once a run of an older kksync came after it.
        let bound: Option<Option<String>> = self
            .connection()
            .query_row(
                &format!(
                    "SELECT oldest FROM kksync_oldest_open AS b WHERE id = 1 AND {BOUND_IS_KEPT}"
                ),
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.error("finding the oldest open order"))?;
        let oldest = match bound {
            Some(bound) => bound,
            None => self.scan_oldest_open(run)?,
        };
        let format = time::macros::format_description!("[year]-[month]-[day]");
        Ok(oldest.and_then(|d| Date::parse(&d, &format).ok()))
    }

    /// The oldest open order's date, from every order but those `run` sent.
    fn scan_oldest_open(&self, run: i64) -> Result<Option<String>, StateError> {
        let sql = format!(
            "SELECT MIN(order_date) FROM kksync_order_state
             WHERE payment_status IS NOT NULL AND payment_status NOT IN ({})
               AND order_date IS NOT NULL AND status_run IS NOT ?1",
            quoted(FINAL_STATUSES)
        );
        self.connection()
            .query_row(&sql, [run], |row| row.get(0))
            .map_err(self.error("finding the oldest open order"))
    }

    /// Sets the bound of the oldest open order exactly, for the next run's read-back, in one
    /// write transaction: no status can change between the check and the bound.
    ///
    /// A bound is never later than the oldest open order, so while an open order of the
    /// bound's date is left, it is exact as it is: that is looked for first, in number order,
    /// which finds one among the first rows when numbers rise with dates (the usual export)
    /// or when many orders share a date. Only when none is left (the oldest were paid) is every
    /// order scanned for the new oldest: then the look went through every order too.
    pub fn refresh_oldest_open(&mut self, run: i64) -> Result<(), StateError> {
        let path = self.path().to_path_buf();
        let tx = self
            .connection_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(super::error(&path, "bounding the oldest open order"))?;
        let open = format!(
            "payment_status IS NOT NULL AND payment_status NOT IN ({})
             AND order_date IS NOT NULL",
            quoted(FINAL_STATUSES)
        );
        let still_exact = format!(
            "UPDATE kksync_oldest_open AS b SET run = ?1
             WHERE id = 1 AND {BOUND_IS_KEPT}
               AND EXISTS (SELECT 1 FROM kksync_order_state WHERE {open} AND order_date <= b.oldest)"
        );
        let scan = format!(
            "INSERT INTO kksync_oldest_open (id, oldest, run)
             SELECT 1, MIN(order_date), ?1 FROM kksync_order_state WHERE {open}
             ON CONFLICT (id) DO UPDATE SET oldest = excluded.oldest, run = excluded.run"
        );
        tx.execute(&still_exact, [run])
            .and_then(|confirmed| match confirmed {
                0 => tx.execute(&scan, [run]),
                _ => Ok(confirmed),
            })
            .and_then(|_| tx.commit())
            .map_err(super::error(&path, "bounding the oldest open order"))
    }

    /// The open orders whose last known status is not [`FIRST_STATUS`] (at most `limit`;
    /// `None` when there are more). A read-back that leaves out orders in `FIRST_STATUS`
    /// would not see these go back to it, so it looks for them by name.
    ///
    /// The condition is the one of the partial index `kksync_order_state_moved_open`
    /// (migration 6), so the query reads only these orders instead of every one.
    pub fn open_orders_past_first_status(
        &self,
        limit: usize,
    ) -> Result<Option<Vec<String>>, StateError> {
        let sql = format!("SELECT number FROM kksync_order_state WHERE {MOVED_OPEN} LIMIT ?1");
        let over = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let numbers = self
            .connection()
            .prepare(&sql)
            .and_then(|mut statement| {
                statement
                    .query_map([over], |row| row.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.error("listing the open orders"))?;
        Ok((numbers.len() <= limit).then_some(numbers))
    }

    /// Whether a send of run `run` reported `number`'s status (newer than any read-back).
    pub fn status_from_run(&self, number: &str, run: i64) -> Result<bool, StateError> {
        self.connection()
            .prepare_cached(
                "SELECT 1 FROM kksync_order_state WHERE number = ?1 AND status_run IS ?2",
            )
            .and_then(|mut s| s.exists(params![number, run]))
            .map_err(self.error("looking up an order"))
    }

    /// Applies statuses read back from the API, in one transaction with the bound of the
    /// oldest open order they may lower; only orders the store knows are updated, only when
    /// the status differs, and not when a send of run `run` reported it: that answer is newer
    /// than the read-back, which runs alongside the sends. Returns how many changed, and tells
    /// `on_changed` the number of each.
    ///
    /// One `UPDATE` per order, of one row each: SQLite copies every page a statement that may
    /// change several rows is about to change into a statement journal first (inside a
    /// transaction, so that the statement alone can be undone), and a read-back's statuses are
    /// spread over nearly every page of the table. One `UPDATE` joined with the whole batch as
    /// JSON spent a fifth of the read-back on that copy. Without `RETURNING` (a statement
    /// of its own each time): the dates of the few orders given an open status are looked up
    /// after. Should a number appear twice in one batch (the API lists each order once), its
    /// last status is applied.
    pub fn apply_read_back<'a>(
        &mut self,
        statuses: impl IntoIterator<Item = (&'a str, &'a str)>,
        run: i64,
        on_changed: &mut dyn FnMut(&str),
    ) -> Result<u64, StateError> {
        let path = self.path().to_path_buf();
        let fail = |action| super::error(&path, action);
        let now = now_unix();
        let mut changed = 0u64;
        // The statuses and the bound they may lower commit together (a savepoint: the caller
        // may have a transaction open).
        let savepoint = self
            .connection_mut()
            .savepoint()
            .map_err(fail("applying the read-back"))?;
        savepoint
            .prepare_cached(
                "UPDATE kksync_order_state
                 SET payment_status = ?2, status_at = ?3, status_run = NULL
                 WHERE number = ?1 AND payment_status IS NOT ?2 AND status_run IS NOT ?4",
            )
            .and_then(|mut update| {
                // Bound once; each order binds its number and status over the last ones.
                update.raw_bind_parameter(3, now)?;
                update.raw_bind_parameter(4, run)?;
                // The orders this batch gave an open status: one that was final, or unknown,
                // may be older than the bound.
                let mut opened = Vec::new();
                for (number, status) in statuses {
                    update.raw_bind_parameter(1, number)?;
                    update.raw_bind_parameter(2, status)?;
                    if update.raw_execute()? > 0 {
                        changed += 1;
                        on_changed(number);
                        if !is_final(status) {
                            opened.push(number);
                        }
                    }
                }
                Ok(opened)
            })
            .and_then(|opened| {
                let mut date_of = savepoint.prepare_cached(
                    "SELECT order_date FROM kksync_order_state WHERE number = ?1",
                )?;
                let mut oldest: Option<String> = None;
                for number in opened {
                    let date: Option<String> = date_of.query_row([number], |row| row.get(0))?;
                    oldest = oldest.into_iter().chain(date).min();
                }
                match oldest {
                    Some(date) => lower_oldest_open(&savepoint, &date),
                    None => Ok(()),
                }
            })
            .and_then(|()| savepoint.commit())
            .map_err(fail("applying the read-back"))?;
        Ok(changed)
    }

    /// Starts this run's list of rows that failed validation (empty).
    pub fn reset_row_errors(&self) -> Result<(), StateError> {
        self.connection()
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS kksync_row_errors (
                     row INTEGER PRIMARY KEY, error TEXT NOT NULL, reason TEXT NOT NULL
                 );
                 DELETE FROM temp.kksync_row_errors;",
            )
            .map_err(self.error("preparing the row errors"))
    }

    /// Records rows that failed validation: (row, error text, reason for the summary).
    pub fn add_row_errors(&mut self, rows: &[(u64, String, String)]) -> Result<(), StateError> {
        self.execute_each(
            "recording row errors",
            "INSERT OR REPLACE INTO temp.kksync_row_errors (row, error, reason) VALUES (?1, ?2, ?3)",
            rows,
            |insert, (row, error, reason)| {
                let row = i64::try_from(*row).unwrap_or(i64::MAX);
                insert.execute(params![row, error, reason])
            },
        )
    }

    /// Up to `limit` validation errors of this run after row `after`, in row order:
    /// (row, error, reasons separated by newlines).
    pub fn row_errors_after(
        &self,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<(u64, String, String)>, StateError> {
        let after = after.map_or(-1, |r| i64::try_from(r).unwrap_or(i64::MAX));
        let mut statement = self
            .connection()
            .prepare_cached(
                "SELECT row, error, reason FROM temp.kksync_row_errors
                 WHERE row > ?1 ORDER BY row LIMIT ?2",
            )
            .map_err(self.error("reading row errors"))?;
        let rows = statement
            .query_map(params![after, limit], |r| {
                Ok((
                    u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    r.get(1)?,
                    r.get(2)?,
                ))
            })
            .map_err(self.error("reading row errors"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.error("reading row errors"))
    }

    /// The validation error recorded for `row` in this run: (error, reason).
    pub fn row_error(&self, row: u64) -> Result<Option<(String, String)>, StateError> {
        let row = i64::try_from(row).unwrap_or(i64::MAX);
        self.connection()
            .prepare_cached("SELECT error, reason FROM temp.kksync_row_errors WHERE row = ?1")
            .and_then(|mut s| {
                s.query_row([row], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(self.error("reading row errors"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn store() -> (tempfile::TempDir, StateDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s.db"), false).unwrap();
        (dir, db)
    }

    fn accepted(number: &str, fingerprint: u64, status: &str) -> JournalEntry {
        JournalEntry::Accepted {
            number: number.into(),
            fingerprint,
            date: date!(2026 - 10 - 01),
            status: status.into(),
            row_fingerprint: 0,
        }
    }

    #[test]
    fn an_accepted_order_is_known_with_its_fingerprint_and_status() {
        let (_dir, mut db) = store();
        assert_eq!(db.known("A1").unwrap(), None);
        let before = now_unix();
        db.journal(1, &[accepted("A1", u64::MAX - 3, "UNPAID")])
            .unwrap();
        let known = db.known("A1").unwrap().unwrap();
        assert_eq!(known.accepted_fingerprint, Some(u64::MAX - 3));
        assert_eq!(known.payment_status.as_deref(), Some("UNPAID"));
        assert_eq!(known.last_error, None);
        // Both times are stored as integers (migration 8), of when the journal was written.
        let (accepted_at, status_at): (i64, i64) = db
            .connection()
            .query_row(
                "SELECT accepted_at, status_at FROM kksync_order_state WHERE number = 'A1'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert!((before..=now_unix()).contains(&accepted_at));
        assert_eq!(status_at, accepted_at);
        assert_eq!(
            known.accepted_at.map(|at| at.unix_timestamp()),
            Some(accepted_at)
        );
    }

    #[test]
    fn a_failure_keeps_the_last_accepted_payload_and_a_success_clears_the_error() {
        let (_dir, mut db) = store();
        db.journal(1, &[accepted("A1", 1, "UNPAID")]).unwrap();
        let failed = JournalEntry::Failed {
            number: "A1".into(),
            fingerprint: 2,
            error: "rejected by the API: Invalid request".into(),
            transient: false,
        };
        db.journal(2, &[failed]).unwrap();
        let known = db.known("A1").unwrap().unwrap();
        assert_eq!(known.accepted_fingerprint, Some(1));
        assert_eq!(known.error_fingerprint, Some(2));
        assert!(!known.error_transient);
        db.journal(3, &[accepted("A1", 3, "PAID")]).unwrap();
        let known = db.known("A1").unwrap().unwrap();
        assert_eq!(known.last_error, None);
        assert_eq!(known.accepted_fingerprint, Some(3));
    }

    #[test]
    fn read_back_updates_only_known_orders_whose_status_changed() {
        let (_dir, mut db) = store();
        db.journal(
            1,
            &[accepted("A1", 1, "UNPAID"), accepted("A2", 2, "UNPAID")],
        )
        .unwrap();
        let changed = db
            .apply_read_back(
                [("A1", "PAID"), ("A2", "UNPAID"), ("ZZ", "PAID")],
                2,
                &mut |number| assert_eq!(number, "A1"),
            )
            .unwrap();
        assert_eq!(changed, 1);
        assert_eq!(
            db.known("A1").unwrap().unwrap().payment_status.as_deref(),
            Some("PAID")
        );
        assert_eq!(db.known("ZZ").unwrap(), None);
        // A status a send of the same run reported is newer than the read-back: it stays.
        let changed = db
            .apply_read_back([("A2", "CANCELLED")], 1, &mut |_| panic!("unchanged"))
            .unwrap();
        assert_eq!(changed, 0);
        assert_eq!(
            db.known("A2").unwrap().unwrap().payment_status.as_deref(),
            Some("UNPAID")
        );
    }

    /// A journal entry of order `number` of `date`, accepted with `status`.
    fn entry(number: &str, date: Date, status: &str) -> JournalEntry {
        JournalEntry::Accepted {
            number: number.into(),
            fingerprint: 1,
            date,
            status: status.into(),
            row_fingerprint: 0,
        }
    }

    #[test]
    fn the_oldest_open_order_ignores_final_statuses() {
        let (_dir, mut db) = store();
        assert_eq!(db.oldest_open_order(99).unwrap(), None);
        db.journal(
            1,
            &[
                entry("old-paid", date!(2020 - 01 - 01), "PAID"),
                entry("open", date!(2026 - 03 - 05), "UNPAID"),
                entry("newer", date!(2026 - 09 - 05), "PAID_PARTIAL"),
            ],
        )
        .unwrap();
        assert_eq!(
            db.oldest_open_order(99).unwrap(),
            Some(date!(2026 - 03 - 05))
        );
        // Run 1's own read-back leaves out what run 1 sent.
        assert_eq!(db.oldest_open_order(1).unwrap(), None);
    }

    #[test]
    fn the_bound_of_the_oldest_open_order_is_lowered_by_every_order_opened_before_it() {
        let (_dir, mut db) = store();
        db.journal(
            1,
            &[
                entry("a", date!(2026 - 05 - 01), "UNPAID"),
                entry("b", date!(2026 - 02 - 01), "PAID"),
                entry("c", date!(2026 - 06 - 01), "UNPAID"),
            ],
        )
        .unwrap();
        db.refresh_oldest_open(1).unwrap();
        assert_eq!(
            db.oldest_open_order(99).unwrap(),
            Some(date!(2026 - 05 - 01))
        );
        // Paid: the bound stays (an early bound only widens the read-back) until the next
        // refresh, which moves it to the oldest still open.
        db.apply_read_back([("a", "PAID")], 2, &mut |_| {}).unwrap();
        assert_eq!(
            db.oldest_open_order(99).unwrap(),
            Some(date!(2026 - 05 - 01))
        );
        db.refresh_oldest_open(2).unwrap();
        assert_eq!(
            db.oldest_open_order(99).unwrap(),
            Some(date!(2026 - 06 - 01))
        );
        // A final order opened again by the read-back, older than the bound: lowered.
        db.apply_read_back([("b", "PAID_PARTIAL")], 3, &mut |_| {})
            .unwrap();
        assert_eq!(
            db.oldest_open_order(99).unwrap(),
            Some(date!(2026 - 02 - 01))
        );
        // Still the bound run 2's end set, lowered: the check against older kksyncs holds.
        let bound_run: i64 = db
            .connection()
            .query_row("SELECT run FROM kksync_oldest_open", [], |row| row.get(0))
            .unwrap();
        assert_eq!(bound_run, 2);
        // An order sent with an older date: lowered; a final one does not count.
        db.journal(
            4,
            &[
                entry("d", date!(2025 - 12 - 24), "UNPAID"),
                entry("e", date!(2024 - 01 - 01), "CANCELLED"),
            ],
        )
        .unwrap();
        assert_eq!(
            db.oldest_open_order(99).unwrap(),
            Some(date!(2025 - 12 - 24))
        );
        // No open order at all: the bound says so, until one is opened.
        db.apply_read_back(
            [("b", "PAID"), ("c", "PAID"), ("d", "PAID")],
            5,
            &mut |_| {},
        )
        .unwrap();
        db.refresh_oldest_open(5).unwrap();
        assert_eq!(db.oldest_open_order(99).unwrap(), None);
        db.journal(6, &[entry("f", date!(2026 - 07 - 07), "UNPAID")])
            .unwrap();
        assert_eq!(
            db.oldest_open_order(99).unwrap(),
            Some(date!(2026 - 07 - 07))
        );
        // A run of an older kksync after the bound was set (it does not keep it, and may have
        // opened an order it did not lower the bound for): the orders are scanned.
        db.refresh_oldest_open(6).unwrap();
        db.connection()
            .execute(
                "INSERT INTO kksync_runs (id, command, source, started_at, options)
                 VALUES (7, 'sync', 's', 'now', '{}')",
                [],
            )
            .unwrap();
        db.connection()
            .execute(
                "INSERT INTO kksync_order_state (number, order_date, payment_status)
                 VALUES ('old', '2020-01-01', 'UNPAID')",
                [],
            )
            .unwrap();
        assert_eq!(
            db.oldest_open_order(99).unwrap(),
            Some(date!(2020 - 01 - 01))
        );
        // The next sync's end does not take the old bound as exact, though an open order of
        // its date is left: it scans, and the new bound is kept.
        db.refresh_oldest_open(8).unwrap();
        let bound: (String, i64) = db
            .connection()
            .query_row("SELECT oldest, run FROM kksync_oldest_open", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!(bound, ("2020-01-01".to_string(), 8));
    }

    #[test]
    fn a_read_back_batch_that_fails_applies_nothing() {
        let (_dir, mut db) = store();
        db.journal(
            1,
            &[
                entry("a", date!(2026 - 05 - 01), "UNPAID"),
                entry("b", date!(2026 - 06 - 01), "PAID"),
            ],
        )
        .unwrap();
        db.refresh_oldest_open(1).unwrap();
        // The second order of the batch cannot be written (as if the disk were full).
        db.connection()
            .execute_batch(
                "CREATE TEMP TRIGGER refuse BEFORE UPDATE ON kksync_order_state
                 WHEN old.number = 'b' BEGIN SELECT RAISE(ABORT, 'disk gone'); END;",
            )
            .unwrap();
        db.apply_read_back([("a", "PAID"), ("b", "PAID_PARTIAL")], 2, &mut |_| {})
            .unwrap_err();
        let status = |db: &StateDb, number| db.known(number).unwrap().unwrap().payment_status;
        assert_eq!(status(&db, "a").as_deref(), Some("UNPAID"));
        assert_eq!(status(&db, "b").as_deref(), Some("PAID"));
        assert_eq!(
            db.oldest_open_order(99).unwrap(),
            Some(date!(2026 - 05 - 01))
        );
        // Once it can be written, the same batch applies whole and lowers nothing: "b",
        // opened again, is younger than the bound.
        db.connection()
            .execute_batch("DROP TRIGGER temp.refuse")
            .unwrap();
        let changed = db
            .apply_read_back([("a", "PAID"), ("b", "PAID_PARTIAL")], 2, &mut |_| {})
            .unwrap();
        assert_eq!(changed, 2);
        assert_eq!(status(&db, "a").as_deref(), Some("PAID"));
    }

    #[test]
    fn row_errors_are_per_run() {
        let (_dir, mut db) = store();
        db.reset_row_errors().unwrap();
        db.add_row_errors(&[(7, "row 7: bad".into(), "date invalid".into())])
            .unwrap();
        assert_eq!(
            db.row_error(7).unwrap(),
            Some(("row 7: bad".into(), "date invalid".into()))
        );
        db.reset_row_errors().unwrap();
        assert_eq!(db.row_error(7).unwrap(), None);
    }

    #[test]
    fn the_open_orders_past_the_first_status_are_listed_from_their_index() {
        let (_dir, mut db) = store();
        let statuses = ["UNPAID", "PAID_PARTIAL", "PAID", "COLLECTION", "CANCELLED"];
        let entries: Vec<_> = statuses
            .iter()
            .enumerate()
            .map(|(i, status)| accepted(&format!("N{i}"), i as u64, status))
            .collect();
        db.journal(1, &entries).unwrap();
        assert_eq!(
            db.open_orders_past_first_status(10).unwrap(),
            Some(vec!["N1".to_string(), "N3".to_string()])
        );
        // More than the limit: none.
        assert_eq!(db.open_orders_past_first_status(1).unwrap(), None);
        // The condition names exactly the final statuses and the first one.
        let mut excluded = FINAL_STATUSES.to_vec();
        excluded.push(FIRST_STATUS);
        let terms: String = excluded
            .iter()
            .map(|status| format!(" AND payment_status <> '{status}'"))
            .collect();
        assert_eq!(MOVED_OPEN, format!("payment_status IS NOT NULL{terms}"));
        // The query reads the index, not every order.
        let plan: Vec<String> = db
            .connection()
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT number FROM kksync_order_state WHERE {MOVED_OPEN}"
            ))
            .unwrap()
            .query_map([], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("kksync_order_state_moved_open")),
            "{plan:?}"
        );
    }

    #[test]
    fn writing_a_status_builds_no_temporary_table_for_the_index() {
        // The index's condition is checked on every write of a status; an `IN` list in it
        // made SQLite build two temporary tables per statement (`OpenEphemeral`).
        let (_dir, db) = store();
        let opcodes: Vec<String> = db
            .connection()
            .prepare(
                "EXPLAIN UPDATE kksync_order_state SET payment_status = ?2, status_run = NULL
                 WHERE number = ?1",
            )
            .unwrap()
            .query_map(["A1", "PAID"], |row| row.get::<_, String>(1))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        // The index is maintained by this statement (its delete and insert are there).
        assert!(opcodes.iter().any(|op| op == "IdxDelete"), "{opcodes:?}");
        assert!(
            !opcodes.iter().any(|op| op == "OpenEphemeral"),
            "{opcodes:?}"
        );
    }
}
