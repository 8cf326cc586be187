-- kksync's state store, migration 6: an index of the open orders whose status moved past the
-- first one (UNPAID). Every run's status read-back asks for them by name; without the index
-- that meant a scan of every order (0.2 s at a million orders) before the first request.
-- Only these orders are in it, a small share of an active shop's, so keeping it costs little.
--
-- Its WHERE must match the query in `StateDb::open_orders_past_first_status` term for term
-- (SQLite uses a partial index only for queries that imply its condition): the final
-- statuses of `FINAL_STATUSES`, then the first status. Changing that list means a migration
-- that drops and recreates this index; a unit test checks the query uses it.
CREATE INDEX IF NOT EXISTS kksync_order_state_moved_open
    ON kksync_order_state (number)
    WHERE payment_status IS NOT NULL
      AND payment_status NOT IN ('PAID','CANCELLED','REFUNDED','DISAPPEARED','LEGACY','UNPAID');
