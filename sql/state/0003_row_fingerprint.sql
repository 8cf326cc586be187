-- kksync's state store, migration 3: a fingerprint of the source row's order fields as they
-- were when the API last accepted the order, so an unchanged row is recognised without
-- validating and serializing it again. (Migration 2 belongs to the refunds.)
ALTER TABLE kksync_order_state ADD COLUMN row_fingerprint INTEGER;
