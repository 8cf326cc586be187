-- kksync: where the status read-back's maxAge starts, without a scan of every order.
--
-- At most one row. `oldest` is a date (yyyy-MM-dd) no open order (a status not in
-- PAID/CANCELLED/REFUNDED/DISAPPEARED/LEGACY) is older than; NULL: there is no open order.
-- A sync sets it exactly at its end (a scan in a write transaction), and every write that
-- gives an order an open status lowers it to that order's date if older (the journal of a
-- send, the read-back), so it is never later than the oldest open order. No row: nothing is
-- known, and the read-back scans the orders as before.
CREATE TABLE IF NOT EXISTS kksync_oldest_open (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    oldest TEXT,
    -- The run whose end set it.
    run    INTEGER
);

-- Runs that keep the bound (every run of a kksync that knows this table) say so. A run of an
-- older kksync, which could open orders without lowering the bound, leaves it NULL, and a
-- bound set before such a run is not used.
ALTER TABLE kksync_runs ADD COLUMN keeps_oldest_open INTEGER;
