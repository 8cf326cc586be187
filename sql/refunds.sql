-- kksync: the refunds table `kksync refunds` reads from and writes back to.
--
-- One row per refund (e.g. per RMA). `external_reference` is the shop's own reference and must
-- be unique: it is what makes each refund happen exactly once. Amounts are TEXT decimals
-- ('12.50' or '12,50'); planned_date is yyyy-MM-dd or dd-MM-yyyy. The list columns hold JSON
-- arrays in the provider's own field names (see README "Refunds"):
--   items         AfterPay: refunded lines (productId, description, netUnitPrice, grossUnitPrice,
--                 quantity, vatPercent, vatAmount, ...); Ratepay: ItemDto lines
--   special_items Ratepay: shipping, discounts, RETURN_FEE lines
--   vats          Ratepay: [{"net_amount":..,"tax_amount":..,"tax_rate":..}]
--
-- kksync writes only the five result columns: refund_id, refund_reference_number,
-- refund_status, refund_error (NULL when fine) and refund_sent_at (UTC, RFC 3339).
-- `kksync init-db PATH` runs this file; it is idempotent.

CREATE TABLE IF NOT EXISTS refunds (
    order_number TEXT NOT NULL,
    external_reference TEXT PRIMARY KEY NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    -- komfortkasse | afterpay | ratepay
    provider TEXT NOT NULL,
    -- Komfortkasse only; empty: today + the waiting period (--waiting-period, default 7 days)
    planned_date TEXT,
    -- AfterPay only
    capture_number TEXT,
    -- Ratepay only
    transaction_id TEXT,
    items TEXT,
    special_items TEXT,
    vats TEXT,
    refund_id TEXT,
    refund_reference_number TEXT,
    refund_status TEXT,
    refund_error TEXT,
    refund_sent_at TEXT
);
