-- kksync: the orders table a SQLite source is read from and written back to.
--
-- Column names are the API's order fields in snake_case; nested address fields are prefixed
-- with billing_ / shipping_. Dates may be stored as ISO yyyy-MM-dd or dd-MM-yyyy; amounts as
-- TEXT decimals (e.g. '149.90') so no binary floating point touches money. List columns use the
-- same text form as CSV: items as 'number:name|number:name', the *_numbers columns '|'-separated.
--
-- kksync writes only the three result columns at the end: payment_status (as reported by the
-- API), sync_error (empty/NULL when the row synced) and synced_at (UTC, RFC 3339).
-- `kksync init-db PATH` runs this file; it is idempotent.

CREATE TABLE IF NOT EXISTS orders (
    number TEXT PRIMARY KEY NOT NULL,
    date TEXT,
    due_date TEXT,
    type TEXT,
    amount TEXT,
    currency TEXT,
    exchange_rate TEXT,
    customer_email TEXT,
    customer_number TEXT,
    language TEXT,
    payment_method TEXT,
    payment_method_description TEXT,
    status_description TEXT,
    marketplace_number TEXT,
    initial_dunning_level INTEGER,
    items TEXT,
    item_numbers TEXT,
    invoice_numbers TEXT,
    shipping_numbers TEXT,
    proforma_numbers TEXT,
    billing_gender TEXT,
    billing_company TEXT,
    billing_first_name TEXT,
    billing_last_name TEXT,
    billing_street TEXT,
    billing_post_code TEXT,
    billing_city TEXT,
    billing_country_code TEXT,
    billing_phone TEXT,
    shipping_gender TEXT,
    shipping_company TEXT,
    shipping_first_name TEXT,
    shipping_last_name TEXT,
    shipping_street TEXT,
    shipping_post_code TEXT,
    shipping_city TEXT,
    shipping_country_code TEXT,
    shipping_phone TEXT,
    payment_status TEXT,
    sync_error TEXT,
    synced_at TEXT
);
