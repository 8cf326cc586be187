-- kksync's state store, migration 5: until this version, the 400s that refuse the whole shop
-- (API access off, shop inactive, read-only shop) and the 400 for `initialDunningLevel` on an
-- order that exists already were recorded as final rejections of each order, so those orders
-- were never sent again unless their row changed. They are resent now: the first kind stops
-- the run instead, the second is resent as an update. Marking them transient makes the next
-- run send them.
UPDATE kksync_order_state
SET error_transient = 1
WHERE error_transient = 0
  AND last_error IN (
      'rejected by the API: API not active, contact support',
      'rejected by the API: Shop not active',
      'rejected by the API: Update not allowed for non-API Shop',
      'rejected by the API: Parameter initialDunningLevel can only be given when creating a new order'
  );
