-- kksync's state store, migration 2: the refund journal of `kksync refunds`.
--
-- One row per refund kksync decided to send, keyed by provider and the shop's external
-- reference. The row is written (and committed, synchronous=FULL) *before* the refund is sent,
-- so a run killed between sending and writing the result back leaves a `pending` row that the
-- next run reconciles with the provider instead of sending a second refund.
CREATE TABLE IF NOT EXISTS kksync_refund_intents (
    -- komfortkasse | afterpay | ratepay
    provider           TEXT NOT NULL,
    external_reference TEXT NOT NULL,
    order_number       TEXT NOT NULL,
    -- What the provider's URL names: the order number (Komfortkasse, AfterPay) or the Ratepay
    -- transaction id, as sent, so a replay goes to the same place even if the row changed.
    target             TEXT NOT NULL,
    -- pending:  recorded before sending; the outcome is not known yet (or the run died)
    -- done:     the provider confirmed the refund (refund_id is set)
    -- rejected: the provider refused it; nothing was created, a later run may try again
    -- doubt:    a refund may exist but kksync cannot tell; it sends nothing until a human decides
    state              TEXT NOT NULL,
    -- xxh3-64 of the row's refund fields, to notice a row edited after its refund was sent.
    fingerprint        INTEGER NOT NULL,
    -- The exact JSON body sent (Ratepay replays it byte for byte under the same key).
    request            TEXT NOT NULL,
    -- Ratepay only: the Idempotency-Key and the generation it was derived from (bumped only
    -- after the provider refused a request, i.e. when nothing was created under the old key).
    idempotency_key    TEXT,
    key_generation     INTEGER NOT NULL DEFAULT 0,
    -- What the provider reported.
    refund_id          TEXT,
    reference_number   TEXT,
    status             TEXT,
    -- The last error (rejection, given up, in doubt).
    error              TEXT,
    -- RFC 3339, UTC: recorded, first sent, last changed.
    created_at         TEXT NOT NULL,
    sent_at            TEXT,
    updated_at         TEXT NOT NULL,
    -- Requests sent for this refund, over all runs.
    attempts           INTEGER NOT NULL DEFAULT 0,
    -- The run that last touched this row (kksync_runs.id).
    last_run           INTEGER,
    PRIMARY KEY (provider, external_reference)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS kksync_refund_intents_order
    ON kksync_refund_intents (provider, order_number);
