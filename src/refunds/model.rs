//! A refund as a source row carries it: the columns, how a row is validated, and the request
//! body each provider gets.
//!
//! Validation happens before anything is sent and reports every problem of a row at once
//! (`row 4: amount "0" must be greater than zero; captureNumber is missing (required for
//! afterpay)`).

use std::fmt;

use rust_decimal::Decimal;
use serde::Serialize;
use time::Date;

use super::items::{self, AfterPayItem, RatepayItem, RatepayVat};
use super::json::{Amount2, JsonDecimal, decimal_places};

/// Who refunds the money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Komfortkasse: a bank transfer to the customer (prepayment, invoice, COD orders).
    Komfortkasse,
    /// AfterPay (Riverty): a credit against a captured BNPL invoice.
    AfterPay,
    /// Ratepay: a refund of a captured BNPL transaction.
    Ratepay,
}

impl Provider {
    /// Every provider.
    pub const ALL: [Provider; 3] = [
        Provider::Komfortkasse,
        Provider::AfterPay,
        Provider::Ratepay,
    ];

    /// The name used in the source, the journal and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Komfortkasse => "komfortkasse",
            Provider::AfterPay => "afterpay",
            Provider::Ratepay => "ratepay",
        }
    }

    /// Parses a provider name, ignoring case; `riverty` is AfterPay's new name.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "komfortkasse" => Some(Provider::Komfortkasse),
            "afterpay" | "riverty" => Some(Provider::AfterPay),
            "ratepay" => Some(Provider::Ratepay),
            _ => None,
        }
    }

    /// Currencies a refund with this provider may be in; `None`: any ISO 4217 code (checked
    /// against the order's currency when the order is read).
    pub fn currencies(self) -> Option<&'static [&'static str]> {
        match self {
            Provider::Komfortkasse => None,
            // Riverty's documented currencies.
            Provider::AfterPay => Some(&["EUR", "NOK", "SEK", "DKK", "CHF"]),
            // Not documented; Ratepay serves Germany, Austria, the Netherlands and Switzerland.
            Provider::Ratepay => Some(&["EUR", "CHF"]),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! columns {
    ($name:ident, $doc:literal, $( $variant:ident = $csv:literal / $sql:literal ),* $(,)?) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(missing_docs)]
        pub enum $name { $( $variant ),* }

        impl $name {
            /// Every column, in documentation order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant ),* ];

            /// The CSV header (camelCase).
            pub fn csv_name(self) -> &'static str {
                match self { $( $name::$variant => $csv ),* }
            }

            /// The SQLite column (snake_case).
            pub fn sql_name(self) -> &'static str {
                match self { $( $name::$variant => $sql ),* }
            }
        }
    };
}

columns! {
    Column, "An input column of a refunds source.",
    OrderNumber = "orderNumber" / "order_number",
    ExternalReference = "externalReference" / "external_reference",
    Amount = "amount" / "amount",
    Currency = "currency" / "currency",
    Provider = "provider" / "provider",
    PlannedDate = "plannedDate" / "planned_date",
    CaptureNumber = "captureNumber" / "capture_number",
    TransactionId = "transactionId" / "transaction_id",
    Items = "items" / "items",
    SpecialItems = "specialItems" / "special_items",
    Vats = "vats" / "vats",
}

columns! {
    ResultColumn, "A result column kksync writes back into a refunds source.",
    RefundId = "refundId" / "refund_id",
    ReferenceNumber = "refundReferenceNumber" / "refund_reference_number",
    Status = "refundStatus" / "refund_status",
    Error = "refundError" / "refund_error",
    SentAt = "refundSentAt" / "refund_sent_at",
}

/// Columns a source must have.
pub const REQUIRED_COLUMNS: [Column; 5] = [
    Column::OrderNumber,
    Column::ExternalReference,
    Column::Amount,
    Column::Currency,
    Column::Provider,
];

/// Header names are matched ignoring case and `_`, `-`, `.` and spaces, so `orderNumber`,
/// `order_number` and `Order Number` are the same column.
pub fn normalize_header(name: &str) -> String {
    name.trim_start_matches('\u{feff}')
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Which position of a row holds which column.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    inputs: Vec<Option<usize>>,
    results: Vec<Option<usize>>,
}

impl Layout {
    /// Matches header names to the columns (see [`normalize_header`]).
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = &'a str>) -> Self {
        let names: Vec<String> = headers.into_iter().map(normalize_header).collect();
        let position = |wanted: &str| {
            let wanted = normalize_header(wanted);
            names.iter().position(|n| *n == wanted)
        };
        Layout {
            inputs: Column::ALL.iter().map(|c| position(c.csv_name())).collect(),
            results: ResultColumn::ALL
                .iter()
                .map(|c| position(c.csv_name()))
                .collect(),
        }
    }

    /// A column the refunds read or write that appears more than once among `headers`
    /// (compared as [`Layout::from_headers`] matches them): which one holds the value would be
    /// a guess.
    pub fn repeated_column<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
        let names: Vec<String> = headers.into_iter().map(normalize_header).collect();
        let wanted = Column::ALL
            .iter()
            .map(|c| c.csv_name())
            .chain(ResultColumn::ALL.iter().map(|c| c.csv_name()));
        wanted.into_iter().find(|name| {
            names
                .iter()
                .filter(|n| **n == normalize_header(name))
                .count()
                > 1
        })
    }

    /// The position of an input column.
    pub fn input(&self, column: Column) -> Option<usize> {
        self.inputs.get(column as usize).copied().flatten()
    }

    /// The position of a result column.
    pub fn result(&self, column: ResultColumn) -> Option<usize> {
        self.results.get(column as usize).copied().flatten()
    }

    /// The required columns this layout lacks.
    pub fn missing(&self) -> Vec<Column> {
        REQUIRED_COLUMNS
            .into_iter()
            .filter(|c| self.input(*c).is_none())
            .collect()
    }
}

/// One row's values, looked up by column.
#[derive(Clone, Copy)]
pub struct RowView<'a> {
    /// The values.
    pub record: &'a crate::source::TextRecord,
    /// Which is which.
    pub layout: &'a Layout,
}

impl<'a> RowView<'a> {
    /// The trimmed value of an input column; `None` when missing or blank.
    pub fn get(&self, column: Column) -> Option<&'a str> {
        let value = self.record.get(self.layout.input(column)?)?.trim();
        (!value.is_empty()).then_some(value)
    }

    /// The trimmed value of a result column; `None` when missing or blank.
    pub fn result(&self, column: ResultColumn) -> Option<&'a str> {
        let value = self.record.get(self.layout.result(column)?)?.trim();
        (!value.is_empty()).then_some(value)
    }
}

/// Provider-specific parts of a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Details {
    /// Komfortkasse: when the bank transfer should start (`None`: today + waiting period).
    Komfortkasse {
        /// The planned date from the row.
        planned_date: Option<Date>,
    },
    /// AfterPay: the capture refunded against and the refunded lines.
    AfterPay {
        /// `captureNumber`.
        capture_number: String,
        /// The refunded lines.
        items: Vec<AfterPayItem>,
    },
    /// Ratepay: the transaction and the optional lines.
    Ratepay {
        /// `ratepay_transaction_id`.
        transaction_id: String,
        /// Refunded items.
        items: Vec<RatepayItem>,
        /// Refunded special items (shipping, discounts, return fees).
        special_items: Vec<RatepayItem>,
        /// VAT amounts.
        vats: Vec<RatepayVat>,
    },
}

/// A validated refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The row it came from.
    pub row: u64,
    /// Who refunds.
    pub provider: Provider,
    /// The shop's order number.
    pub order_number: String,
    /// The shop's own reference (e.g. the RMA number), unique.
    pub external_reference: String,
    /// The amount, > 0, at most two decimals.
    pub amount: Decimal,
    /// ISO 4217, upper case.
    pub currency: String,
    /// Provider-specific fields.
    pub details: Details,
}

/// What identifies a refund in the journal, readable even from a row that fails validation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefundKey {
    /// Who refunds.
    pub provider: Provider,
    /// The shop's reference.
    pub external_reference: String,
    /// The order.
    pub order_number: String,
}

/// A row that cannot be sent, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblems {
    /// The row (CSV: spreadsheet row, header = 1; SQLite: rowid).
    pub row: u64,
    /// What is wrong, one entry per problem.
    pub problems: Vec<String>,
}

impl RowProblems {
    /// A short reason for grouping in the summary: the first problem without its value.
    pub fn reason(&self) -> String {
        let first = self
            .problems
            .first()
            .map(String::as_str)
            .unwrap_or("invalid");
        match first.find(" \"") {
            Some(start) => match first[start + 2..].find("\" ") {
                Some(end) => format!("{}{}", &first[..start], &first[start + 2 + end + 1..]),
                None => first.to_string(),
            },
            None => first.to_string(),
        }
    }
}

impl fmt::Display for RowProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "row {}: {}", self.row, self.problems.join("; "))
    }
}

/// Reads the journal key of a row: provider, external reference and order number.
pub fn key_of(view: RowView<'_>, row: u64) -> Result<RefundKey, RowProblems> {
    let mut problems = Vec::new();
    let provider = match view.get(Column::Provider) {
        None => {
            problems.push("provider is missing (komfortkasse, afterpay or ratepay)".to_string());
            None
        }
        Some(text) => Provider::parse(text).or_else(|| {
            problems.push(format!(
                "provider {text:?} is not one of komfortkasse, afterpay, ratepay"
            ));
            None
        }),
    };
    let reference = view.get(Column::ExternalReference);
    if reference.is_none() {
        problems.push("externalReference is missing".to_string());
    }
    let order = view.get(Column::OrderNumber);
    if order.is_none() {
        problems.push("orderNumber is missing".to_string());
    }
    match (provider, reference, order) {
        (Some(provider), Some(reference), Some(order)) if problems.is_empty() => Ok(RefundKey {
            provider,
            external_reference: reference.to_string(),
            order_number: order.to_string(),
        }),
        _ => Err(RowProblems { row, problems }),
    }
}

/// Validates a row; `today` is the Europe/Berlin date the planned date must lie after.
pub fn validate(view: RowView<'_>, row: u64, today: Date) -> Result<Refund, RowProblems> {
    let key = key_of(view, row);
    let mut problems = match &key {
        Ok(_) => Vec::new(),
        Err(error) => error.problems.clone(),
    };
    let provider = key.as_ref().ok().map(|k| k.provider);

    let amount = match view.get(Column::Amount) {
        None => {
            problems.push("amount is missing".into());
            None
        }
        Some(text) => match crate::order::parse_decimal(text) {
            Err(_) => {
                problems.push(format!("amount {text:?} is not a decimal number"));
                None
            }
            Ok(value) if value <= Decimal::ZERO => {
                problems.push(format!("amount {text:?} must be greater than zero"));
                None
            }
            Ok(value) if decimal_places(value) > 2 => {
                problems.push(format!("amount {text:?} has more than two decimal places"));
                None
            }
            Ok(value) => Some(value),
        },
    };

    let currency = match view.get(Column::Currency) {
        None => {
            problems.push("currency is missing".into());
            None
        }
        Some(text) if text.len() != 3 || !text.bytes().all(|b| b.is_ascii_alphabetic()) => {
            problems.push(format!(
                "currency {text:?} is not a three-letter currency code (e.g. EUR)"
            ));
            None
        }
        Some(text) => {
            let code = text.to_ascii_uppercase();
            match provider.and_then(Provider::currencies) {
                Some(allowed) if !allowed.contains(&code.as_str()) => {
                    problems.push(format!(
                        "currency {text:?} is not supported by {} (only {})",
                        provider.map_or("", Provider::as_str),
                        allowed.join(", ")
                    ));
                    None
                }
                _ => Some(code),
            }
        }
    };

    if let Some(reference) = view.get(Column::ExternalReference) {
        // AfterPay carries it as transactionReference (≤ 100), Ratepay as partner_operation_id.
        let max = match provider {
            Some(Provider::AfterPay) => 100,
            _ => 255,
        };
        if reference.chars().count() > max {
            problems.push(format!("externalReference is longer than {max} characters"));
        }
    }

    // Fields of one provider given on a row of another are a mistake, not something to ignore.
    let owner = |column: Column| match column {
        Column::PlannedDate => Some(Provider::Komfortkasse),
        Column::CaptureNumber => Some(Provider::AfterPay),
        Column::TransactionId | Column::SpecialItems | Column::Vats => Some(Provider::Ratepay),
        _ => None,
    };
    if let Some(provider) = provider {
        for column in [
            Column::PlannedDate,
            Column::CaptureNumber,
            Column::TransactionId,
            Column::SpecialItems,
            Column::Vats,
        ] {
            if let Some(owner) = owner(column)
                && owner != provider
                && view.get(column).is_some()
            {
                problems.push(format!(
                    "{} belongs to {owner} refunds; this row's provider is {provider}",
                    column.csv_name()
                ));
            }
        }
        if provider == Provider::Komfortkasse && view.get(Column::Items).is_some() {
            problems.push(
                "items are not sent to komfortkasse (its refund is an amount only); leave the cell empty"
                    .into(),
            );
        }
    }

    let details =
        provider.and_then(|provider| details(provider, view, today, amount, &mut problems));

    match (key, amount, currency, details) {
        (Ok(key), Some(amount), Some(currency), Some(details)) if problems.is_empty() => {
            Ok(Refund {
                row,
                provider: key.provider,
                order_number: key.order_number,
                external_reference: key.external_reference,
                amount,
                currency,
                details,
            })
        }
        _ => Err(RowProblems { row, problems }),
    }
}

fn details(
    provider: Provider,
    view: RowView<'_>,
    today: Date,
    amount: Option<Decimal>,
    problems: &mut Vec<String>,
) -> Option<Details> {
    match provider {
        Provider::Komfortkasse => {
            let planned_date = match view.get(Column::PlannedDate) {
                None => None,
                Some(text) => match crate::dates::parse_shop_date(text) {
                    None => {
                        problems.push(format!(
                            "plannedDate {text:?} is not a valid date (use dd-MM-yyyy, dd.MM.yyyy or yyyy-MM-dd)"
                        ));
                        return None;
                    }
                    Some(date) if date <= today => {
                        problems.push(format!(
                            "plannedDate {text:?} must be in the future (after {})",
                            crate::dates::format_api_date(today)
                        ));
                        return None;
                    }
                    Some(date) => Some(date),
                },
            };
            Some(Details::Komfortkasse { planned_date })
        }
        Provider::AfterPay => {
            let capture = view.get(Column::CaptureNumber);
            match capture {
                None => problems.push("captureNumber is missing (required for afterpay)".into()),
                Some(c) if c.chars().count() > 50 => {
                    problems.push("captureNumber is longer than 50 characters".into())
                }
                Some(_) => {}
            }
            let items = match view.get(Column::Items) {
                None => {
                    problems.push(
                        "items are missing (required for afterpay: the refunded lines; without them AfterPay would refund the whole capture)"
                            .into(),
                    );
                    None
                }
                Some(text) => match items::parse_list::<AfterPayItem>("items", text) {
                    Ok(items) => Some(items),
                    Err(error) => {
                        problems.push(error);
                        None
                    }
                },
            };
            let items = items?;
            let total = items::check_afterpay(&items, problems);
            if let Some(amount) = amount
                && total != amount
            {
                problems.push(format!(
                    "amount {amount} is not the total of the items (Σ grossUnitPrice × quantity = {total})"
                ));
            }
            Some(Details::AfterPay {
                capture_number: capture?.to_string(),
                items,
            })
        }
        Provider::Ratepay => {
            let transaction = view.get(Column::TransactionId);
            match transaction {
                None => problems.push("transactionId is missing (required for ratepay)".into()),
                Some(t) if !(20..=127).contains(&t.chars().count()) => problems.push(format!(
                    "transactionId {t:?} is not a Ratepay transaction id (20 to 127 characters)"
                )),
                Some(_) => {}
            }
            let mut parse = |column: Column| -> Option<Vec<RatepayItem>> {
                match view.get(column) {
                    None => Some(Vec::new()),
                    Some(text) => items::parse_list(column.csv_name(), text)
                        .map_err(|error| problems.push(error))
                        .ok(),
                }
            };
            let (lines, special) = (parse(Column::Items), parse(Column::SpecialItems));
            let vats = match view.get(Column::Vats) {
                None => Some(Vec::new()),
                Some(text) => items::parse_list::<RatepayVat>("vats", text)
                    .map_err(|error| problems.push(error))
                    .ok(),
            };
            let (lines, special, vats) = (lines?, special?, vats?);
            let total = items::check_ratepay("items", &lines, problems)
                + items::check_ratepay("specialItems", &special, problems);
            items::check_vats(&vats, problems);
            if let Some(amount) = amount
                && !(lines.is_empty() && special.is_empty())
                && total != amount
            {
                problems.push(format!(
                    "amount {amount} is not the total of items and specialItems ({total})"
                ));
            }
            Some(Details::Ratepay {
                transaction_id: transaction?.to_string(),
                items: lines,
                special_items: special,
                vats,
            })
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KomfortkasseBody<'a> {
    external_reference: &'a str,
    amount: Amount2,
    currency: &'a str,
    planned_date: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AfterPayBody<'a> {
    capture_number: &'a str,
    order_items: &'a [AfterPayItem],
    transaction_reference: &'a str,
}

#[derive(Serialize)]
struct RatepayBody<'a> {
    gross_amount: JsonDecimal,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    items: &'a [RatepayItem],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    special_items: &'a [RatepayItem],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    vats: &'a [RatepayVat],
    partner_operation_id: &'a str,
}

impl Refund {
    /// The journal key.
    pub fn key(&self) -> RefundKey {
        RefundKey {
            provider: self.provider,
            external_reference: self.external_reference.clone(),
            order_number: self.order_number.clone(),
        }
    }

    /// The planned date sent to Komfortkasse: the row's, or `today + waiting_days`.
    pub fn planned_date(&self, today: Date, waiting_days: u32) -> Option<Date> {
        match &self.details {
            Details::Komfortkasse {
                planned_date: Some(date),
            } => Some(*date),
            Details::Komfortkasse { planned_date: None } => {
                today.checked_add(time::Duration::days(i64::from(waiting_days)))
            }
            _ => None,
        }
    }

    /// The JSON body of the provider's create-refund request. For Komfortkasse,
    /// `planned_date` is the date to send (see [`Refund::planned_date`]).
    pub fn body(&self, planned_date: Option<Date>) -> String {
        let json = match &self.details {
            Details::Komfortkasse { .. } => serde_json::to_string(&KomfortkasseBody {
                external_reference: &self.external_reference,
                amount: Amount2(self.amount),
                currency: &self.currency,
                planned_date: planned_date
                    .map(crate::dates::format_api_date)
                    .unwrap_or_default(),
            }),
            Details::AfterPay {
                capture_number,
                items,
            } => serde_json::to_string(&AfterPayBody {
                capture_number,
                order_items: items,
                transaction_reference: &self.external_reference,
            }),
            Details::Ratepay {
                items,
                special_items,
                vats,
                ..
            } => serde_json::to_string(&RatepayBody {
                gross_amount: JsonDecimal(self.amount),
                items,
                special_items,
                vats,
                partner_operation_id: &self.external_reference,
            }),
        };
        // Serializing these plain structs cannot fail; an empty object would be refused by the
        // provider rather than sending something else.
        json.unwrap_or_else(|_| "{}".to_string())
    }

    /// A fingerprint of what the row asks for (with the row's own planned date, not the
    /// default), to notice a row that was edited after its refund was sent.
    pub fn fingerprint(&self) -> i64 {
        let planned = match &self.details {
            Details::Komfortkasse { planned_date } => *planned_date,
            _ => None,
        };
        let text = format!(
            "{}\0{}\0{}",
            self.provider,
            self.order_number,
            self.body(planned)
        );
        // Stored in an INTEGER column: the bits of the hash, reinterpreted.
        xxhash_rust::xxh3::xxh3_64(text.as_bytes()) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const TODAY: Date = date!(2026 - 03 - 10);

    fn row(pairs: &[(&str, &str)]) -> (Layout, crate::source::TextRecord) {
        let layout = Layout::from_headers(pairs.iter().map(|(h, _)| *h));
        let record = pairs.iter().map(|(_, v)| *v).collect();
        (layout, record)
    }

    fn check(pairs: &[(&str, &str)]) -> Result<Refund, RowProblems> {
        let (layout, record) = row(pairs);
        validate(
            RowView {
                record: &record,
                layout: &layout,
            },
            2,
            TODAY,
        )
    }

    fn kk(amount: &str, planned: &str) -> Vec<(&'static str, String)> {
        vec![
            ("order_number", "A-1".into()),
            ("External Reference", "RMA-1".into()),
            ("amount", amount.into()),
            ("currency", "eur".into()),
            ("provider", "Komfortkasse".into()),
            ("plannedDate", planned.into()),
        ]
    }

    fn owned<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[test]
    fn a_komfortkasse_row_with_decimal_comma_and_default_date() {
        let refund = check(&owned(&kk("12,5", ""))).unwrap();
        assert_eq!(refund.amount, Decimal::new(125, 1));
        assert_eq!(refund.currency, "EUR");
        let planned = refund.planned_date(TODAY, 7).unwrap();
        assert_eq!(planned, date!(2026 - 03 - 17));
        assert_eq!(
            refund.body(Some(planned)),
            r#"{"externalReference":"RMA-1","amount":12.50,"currency":"EUR","plannedDate":"17-03-2026"}"#
        );
        let given = check(&owned(&kk("1", "2026-04-01"))).unwrap();
        assert_eq!(given.planned_date(TODAY, 7), Some(date!(2026 - 04 - 01)));
    }

    #[test]
    fn amounts_and_dates_are_checked() {
        for (amount, planned, expected) in [
            ("0", "", "must be greater than zero"),
            ("-3,00", "", "must be greater than zero"),
            ("1.005", "", "more than two decimal places"),
            ("zwölf", "", "not a decimal number"),
            ("1", "10-03-2026", "must be in the future"),
            ("1", "2026-03-09", "must be in the future"),
            ("1", "31-02-2026", "not a valid date"),
        ] {
            let error = check(&owned(&kk(amount, planned))).unwrap_err().to_string();
            assert!(error.contains(expected), "{amount} {planned}: {error}");
            assert!(error.starts_with("row 2: "), "{error}");
        }
    }

    #[test]
    fn provider_specific_fields_are_required_and_not_mixed() {
        let error = check(&[
            ("orderNumber", "A-1"),
            ("externalReference", "R"),
            ("amount", "10"),
            ("currency", "USD"),
            ("provider", "afterpay"),
            ("plannedDate", "2027-01-01"),
        ])
        .unwrap_err()
        .to_string();
        for expected in [
            "captureNumber is missing",
            "items are missing",
            "currency \"USD\" is not supported by afterpay",
            "plannedDate belongs to komfortkasse refunds",
        ] {
            assert!(error.contains(expected), "{expected}: {error}");
        }
        let error = check(&[
            ("orderNumber", "A-1"),
            ("externalReference", "R"),
            ("amount", "10"),
            ("currency", "EUR"),
            ("provider", "ratepay"),
            ("transactionId", "short"),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("is not a Ratepay transaction id"), "{error}");
        let error = check(&[("provider", "paypal")]).unwrap_err().to_string();
        assert!(error.contains("not one of komfortkasse"), "{error}");
        assert!(error.contains("orderNumber is missing"), "{error}");
    }

    #[test]
    fn afterpay_amount_must_equal_its_items_and_the_body_follows_the_vendor_page() {
        let items = r#"[{"productId":"0001","description":"Item 1","netUnitPrice":10.00,"grossUnitPrice":12.00,"quantity":2,"vatPercent":20,"vatAmount":2.00,"refundType":"Return"}]"#;
        let pairs = |amount: &'static str| {
            vec![
                ("orderNumber", "A-1"),
                ("externalReference", "RMA-7"),
                ("amount", amount),
                ("currency", "EUR"),
                ("provider", "Riverty"),
                ("captureNumber", "000000001"),
                ("items", items),
            ]
        };
        let error = check(&pairs("25,00")).unwrap_err().to_string();
        assert!(error.contains("is not the total of the items"), "{error}");
        let refund = check(&pairs("24,00")).unwrap();
        assert_eq!(
            refund.body(None),
            r#"{"captureNumber":"000000001","orderItems":[{"productId":"0001","description":"Item 1","netUnitPrice":10,"grossUnitPrice":12,"quantity":2,"vatPercent":20,"vatAmount":2,"refundType":"Return"}],"transactionReference":"RMA-7"}"#
        );
    }

    #[test]
    fn ratepay_body_has_gross_amount_and_the_reference() {
        let refund = check(&[
            ("orderNumber", "A-1"),
            ("externalReference", "RMA-9"),
            ("amount", "67,60"),
            ("currency", "EUR"),
            ("provider", "ratepay"),
            ("transactionId", "tx-0123456789-abcdefghij"),
            ("items", r#"[{"article_number":"k-1","gross_unit_price":18.45,"gross_unit_discount":-1.55,"quantity":2}]"#),
            ("specialItems", r#"[{"gross_unit_price":33.8,"type":"SHIPPING"}]"#),
            ("vats", r#"[{"net_amount":56.81,"tax_amount":10.79,"tax_rate":19}]"#),
        ])
        .unwrap();
        assert_eq!(
            refund.body(None),
            r#"{"gross_amount":67.6,"items":[{"article_number":"k-1","quantity":2,"gross_unit_price":18.45,"gross_unit_discount":-1.55}],"special_items":[{"gross_unit_price":33.8,"type":"SHIPPING"}],"vats":[{"net_amount":56.81,"tax_amount":10.79,"tax_rate":19}],"partner_operation_id":"RMA-9"}"#
        );
        assert_eq!(refund.fingerprint(), refund.clone().fingerprint());
    }

    #[test]
    fn the_summary_reason_drops_the_value() {
        let problems = RowProblems {
            row: 3,
            problems: vec!["amount \"0\" must be greater than zero".into()],
        };
        assert_eq!(problems.reason(), "amount must be greater than zero");
    }
}
