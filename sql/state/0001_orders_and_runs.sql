-- kksync's state store, migration 1: what the API last accepted per order, and the run history.
-- For a SQLite source these tables live in the shop's own database (all prefixed kksync_);
-- for a CSV source in a sidecar file next to it (orders.csv.kksync.db).

-- One row per order number kksync has sent or learnt a status for.
CREATE TABLE IF NOT EXISTS kksync_order_state (
    number               TEXT PRIMARY KEY,
    -- xxh3-64 of the exact JSON payload the API last accepted (NULL: never accepted).
    accepted_fingerprint INTEGER,
    -- When that payload was accepted (RFC 3339, UTC).
    accepted_at          TEXT,
    -- The order's date (yyyy-MM-dd), to choose maxAge for the status read-back.
    order_date           TEXT,
    -- The last known paymentStatus and when it was learnt (RFC 3339, UTC).
    payment_status       TEXT,
    status_at            TEXT,
    -- The last failure (NULL after a success), the payload it concerned, and whether it was
    -- transient (gave up at the deadline: resend) or final (rejected: resend once changed).
    last_error           TEXT,
    error_fingerprint    INTEGER,
    error_transient      INTEGER NOT NULL DEFAULT 0,
    -- Failed attempts since the last success.
    attempts             INTEGER NOT NULL DEFAULT 0,
    -- The run that last touched this row.
    last_run             INTEGER
) WITHOUT ROWID;

-- One row per run of a command that changes things (sync, ordersync, refunds).
CREATE TABLE IF NOT EXISTS kksync_runs (
    id          INTEGER PRIMARY KEY,
    command     TEXT NOT NULL,
    source      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    -- NULL while running, or when the run was killed.
    ended_at    TEXT,
    -- The effective options (JSON object, no secrets).
    options     TEXT NOT NULL,
    -- The counts at the end (JSON object).
    counts      TEXT,
    exit_code   INTEGER
);

-- One row per POST /ordersync that was sent, for the shrink guard.
CREATE TABLE IF NOT EXISTS kksync_ordersyncs (
    id       INTEGER PRIMARY KEY,
    run_id   INTEGER,
    at       TEXT NOT NULL,
    numbers  INTEGER NOT NULL,
    legacy   INTEGER,
    forced   INTEGER NOT NULL DEFAULT 0
);
