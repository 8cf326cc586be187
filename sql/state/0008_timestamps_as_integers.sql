-- kksync's state store, migration 8: `accepted_at` and `status_at` hold seconds since the Unix
-- epoch (UTC) as integers instead of RFC 3339 text (`datetime(accepted_at, 'unixepoch')`
-- shows them as text).
--
-- Why: the two texts were 40 of a row's ~97 bytes. Every run's status read-back rewrites the
-- rows of the orders whose status moved, spread over nearly every page of the table, and each
-- page it touches is written to the WAL and copied back. As integers (4 bytes each until
-- 2038, 6 after) a million orders take ~16,700 pages instead of ~25,000 (both freshly built).
-- Applying 50,000 statuses to a copy of a million-order store (Python's sqlite3, the index
-- below on both): 0.33-0.38 s of CPU and 62 MB of WAL instead of 0.40-0.45 s and 85 MB.
--
-- A column's type cannot be changed in place (a TEXT column would turn every integer written
-- into it back into text), so the table is rebuilt: same columns in the same order, then the
-- index of migration 6 again, its condition written as one comparison per status instead of
-- `NOT IN (...)` (the same orders; `MOVED_OPEN` in src/state/orders.rs must match it term for
-- term). SQLite checks an index's condition on the old and the new row of every write of
-- `payment_status`, and an `IN` list there built two temporary tables per statement: the
-- statuses above took 0.53-0.86 s with it. A text that is not a valid time becomes NULL
-- (for `--resend-open-after` that means "sent long ago": the order is resent, nothing is
-- lost). A kksync from before this migration that still writes text into the new columns
-- is read correctly: the reader accepts both.
CREATE TABLE kksync_order_state_v8 (
    number               TEXT PRIMARY KEY,
    accepted_fingerprint INTEGER,
    -- When the payload was accepted: seconds since the Unix epoch, UTC.
    accepted_at          INTEGER,
    order_date           TEXT,
    payment_status       TEXT,
    -- When payment_status was learnt: seconds since the Unix epoch, UTC.
    status_at            INTEGER,
    last_error           TEXT,
    error_fingerprint    INTEGER,
    error_transient      INTEGER NOT NULL DEFAULT 0,
    attempts             INTEGER NOT NULL DEFAULT 0,
    last_run             INTEGER,
    row_fingerprint      INTEGER,
    status_run           INTEGER
) WITHOUT ROWID;

INSERT INTO kksync_order_state_v8
    (number, accepted_fingerprint, accepted_at, order_date, payment_status, status_at,
     last_error, error_fingerprint, error_transient, attempts, last_run, row_fingerprint,
     status_run)
SELECT number, accepted_fingerprint, unixepoch(accepted_at), order_date, payment_status,
       unixepoch(status_at), last_error, error_fingerprint, error_transient, attempts,
       last_run, row_fingerprint, status_run
FROM kksync_order_state
ORDER BY number;

DROP TABLE kksync_order_state;
ALTER TABLE kksync_order_state_v8 RENAME TO kksync_order_state;

CREATE INDEX kksync_order_state_moved_open
    ON kksync_order_state (number)
    WHERE payment_status IS NOT NULL
      AND payment_status <> 'PAID' AND payment_status <> 'CANCELLED'
      AND payment_status <> 'REFUNDED' AND payment_status <> 'DISAPPEARED'
      AND payment_status <> 'LEGACY' AND payment_status <> 'UNPAID';
