-- kksync's state store, migration 4: which run's send reported payment_status (NULL when it
-- was learnt from a read-back). The read-back of a run runs alongside its sends and must not
-- overwrite their answers, which are newer than its snapshot.
ALTER TABLE kksync_order_state ADD COLUMN status_run INTEGER;
