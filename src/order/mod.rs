//! The order as the API knows it: the fields a source row may carry, how a flat row becomes a
//! validated `Order` JSON object, and the problems a row can have.
//!
//! Validation happens here, before anything is sent, and reports every problem of a row at
//! once (`row 17: date "31-02-2024" is not a valid date; amount "-5,00" must not be negative`).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
#[cfg(test)]
use serde::{Serialize, ser::Serializer};
use time::Date;

use crate::dates;

mod json;

macro_rules! fields {
    ($( $variant:ident = $api:literal / $sql:literal ),* $(,)?) => {
        /// A writable field of the API's `Order`, as a column of a flat source row.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(missing_docs)]
        pub enum Field { $( $variant ),* }

        impl Field {
            /// Every field, in the order of the API reference.
            pub const ALL: &'static [Field] = &[ $( Field::$variant ),* ];

            /// The column name in a CSV export: the API's field name, nested with a dot.
            pub fn csv_name(self) -> &'static str {
                match self { $( Field::$variant => $api ),* }
            }

            /// The column name in the SQLite `orders` table (snake_case).
            pub fn sql_name(self) -> &'static str {
                match self { $( Field::$variant => $sql ),* }
            }
        }
    };
}

fields! {
    Number = "number" / "number",
    Date = "date" / "date",
    DueDate = "dueDate" / "due_date",
    Type = "type" / "type",
    Amount = "amount" / "amount",
    Currency = "currency" / "currency",
    ExchangeRate = "exchangeRate" / "exchange_rate",
    CustomerEmail = "customerEmail" / "customer_email",
    CustomerNumber = "customerNumber" / "customer_number",
    Language = "language" / "language",
    PaymentMethod = "paymentMethod" / "payment_method",
    PaymentMethodDescription = "paymentMethodDescription" / "payment_method_description",
    StatusDescription = "statusDescription" / "status_description",
    MarketplaceNumber = "marketplaceNumber" / "marketplace_number",
    InitialDunningLevel = "initialDunningLevel" / "initial_dunning_level",
    Items = "items" / "items",
    ItemNumbers = "itemNumbers" / "item_numbers",
    InvoiceNumbers = "invoiceNumbers" / "invoice_numbers",
    ShippingNumbers = "shippingNumbers" / "shipping_numbers",
    ProformaNumbers = "proformaNumbers" / "proforma_numbers",
    BillingGender = "billing.gender" / "billing_gender",
    BillingCompany = "billing.company" / "billing_company",
    BillingFirstName = "billing.firstName" / "billing_first_name",
    BillingLastName = "billing.lastName" / "billing_last_name",
    BillingStreet = "billing.street" / "billing_street",
    BillingPostCode = "billing.postCode" / "billing_post_code",
    BillingCity = "billing.city" / "billing_city",
    BillingCountryCode = "billing.countryCode" / "billing_country_code",
    BillingPhone = "billing.phone" / "billing_phone",
    ShippingGender = "shipping.gender" / "shipping_gender",
    ShippingCompany = "shipping.company" / "shipping_company",
    ShippingFirstName = "shipping.firstName" / "shipping_first_name",
    ShippingLastName = "shipping.lastName" / "shipping_last_name",
    ShippingStreet = "shipping.street" / "shipping_street",
    ShippingPostCode = "shipping.postCode" / "shipping_post_code",
    ShippingCity = "shipping.city" / "shipping_city",
    ShippingCountryCode = "shipping.countryCode" / "shipping_country_code",
    ShippingPhone = "shipping.phone" / "shipping_phone",
}

const BILLING: [Field; 9] = [
    Field::BillingGender,
    Field::BillingCompany,
    Field::BillingFirstName,
    Field::BillingLastName,
    Field::BillingStreet,
    Field::BillingPostCode,
    Field::BillingCity,
    Field::BillingCountryCode,
    Field::BillingPhone,
];
const SHIPPING: [Field; 9] = [
    Field::ShippingGender,
    Field::ShippingCompany,
    Field::ShippingFirstName,
    Field::ShippingLastName,
    Field::ShippingStreet,
    Field::ShippingPostCode,
    Field::ShippingCity,
    Field::ShippingCountryCode,
    Field::ShippingPhone,
];

/// Column names of a source that differ from kksync's defaults (`[columns]` in the config
/// file), by the API's field name: real shop exports do not use our names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnNames {
    renamed: std::collections::BTreeMap<&'static str, String>,
}

impl ColumnNames {
    /// Builds the mapping from `field = "column"` pairs; the field may be given by its API name
    /// (`billing.countryCode`) or its SQLite name (`billing_country_code`).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let mut renamed = std::collections::BTreeMap::new();
        for (field, column) in pairs {
            let known = Field::ALL
                .iter()
                .find(|f| f.csv_name() == field || f.sql_name() == field);
            let Some(known) = known else {
                return Err(format!("unknown order field `{field}` in [columns]"));
            };
            renamed.insert(known.csv_name(), column);
        }
        Ok(ColumnNames { renamed })
    }

    /// The CSV header naming this field.
    pub fn csv(&self, field: Field) -> &str {
        self.renamed
            .get(field.csv_name())
            .map_or(field.csv_name(), String::as_str)
    }

    /// The SQLite column holding this field.
    pub fn sql(&self, field: Field) -> &str {
        self.renamed
            .get(field.csv_name())
            .map_or(field.sql_name(), String::as_str)
    }

    /// The renamed fields, as `(API field, column)`.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.renamed
            .iter()
            .map(|(field, column)| (*field, column.as_str()))
    }
}

/// Which column of a source row holds which field.
#[derive(Debug, Clone)]
pub struct Layout {
    columns: Vec<Option<usize>>,
    /// The columns that hold a field, as runs of neighbouring columns `(first, last)`, in
    /// column order: the row fingerprint hashes each run's bytes in one piece.
    spans: Vec<(usize, usize)>,
    /// A hash of which column holds which field: the row fingerprint starts from it, so the
    /// same bytes under other headers (a corrected mapping) count as changed.
    mapping: u64,
}

impl Layout {
    /// Builds the layout from column names, matching each field by `name_of(field)`.
    pub fn from_columns<'a, 'n>(
        columns: impl IntoIterator<Item = &'a str> + Clone,
        name_of: impl Fn(Field) -> &'n str,
    ) -> Self {
        let columns = Field::ALL
            .iter()
            .map(|&field| {
                let wanted = name_of(field);
                columns
                    .clone()
                    .into_iter()
                    .position(|name| name.trim() == wanted)
            })
            .collect::<Vec<_>>();
        let spans = spans_of(columns.iter().flatten().copied());
        let mapping: Vec<u8> = columns
            .iter()
            .flat_map(|column| {
                column
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(u32::MAX)
                    .to_le_bytes()
            })
            .collect();
        let mapping = xxhash_rust::xxh3::xxh3_64(&mapping);
        Layout {
            columns,
            spans,
            mapping,
        }
    }

    /// The column that holds `field`, if any.
    pub(crate) fn column(&self, field: Field) -> Option<usize> {
        self.columns.get(field as usize).copied().flatten()
    }

    /// The last column that holds a field, if any does.
    pub(crate) fn last_column(&self) -> Option<usize> {
        self.spans.last().map(|&(_, last)| last)
    }

    /// Whether the source has a column for this field.
    pub fn has(&self, field: Field) -> bool {
        self.column(field).is_some()
    }
}

/// The columns, sorted, as runs of neighbours `(first, last)`.
fn spans_of(columns: impl Iterator<Item = usize>) -> Vec<(usize, usize)> {
    let mut sorted: Vec<usize> = columns.collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for column in sorted {
        match spans.last_mut() {
            Some((_, last)) if *last + 1 == column => *last = column,
            _ => spans.push((column, column)),
        }
    }
    spans
}

/// One row's values, looked up by field.
#[derive(Clone, Copy)]
pub struct RowView<'a> {
    /// The row's values.
    pub record: &'a crate::source::TextRecord,
    /// Which value is which field.
    pub layout: &'a Layout,
}

impl<'a> RowView<'a> {
    /// The trimmed value of a field, `None` when the column is missing or the cell empty.
    pub fn get(&self, field: Field) -> Option<&'a str> {
        let value = trim(self.record.get(self.layout.column(field)?)?);
        (!value.is_empty()).then_some(value)
    }
}

/// `str::trim`, with a shortcut for the usual value, which starts and ends with a visible
/// ASCII character and so has nothing to trim (`trim` would decode a character at each end).
fn trim(value: &str) -> &str {
    match value.as_bytes() {
        [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => value,
        [only] if only.is_ascii_graphic() => value,
        _ => value.trim(),
    }
}

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issue {
    /// Required but empty or absent.
    Missing,
    /// Not a real calendar date in a known format.
    InvalidDate,
    /// `date` after today.
    DateInFuture,
    /// `dueDate` more than six months ahead.
    DueDateTooFar,
    /// Not a decimal number.
    NotANumber,
    /// A negative amount.
    Negative,
    /// More than two decimal places.
    TooManyDecimals,
    /// Not greater than zero.
    NotPositive,
    /// Not a non-negative whole number.
    NotAWholeNumber,
    /// Not one of the order types.
    UnknownType,
    /// Not a three-letter ISO 4217 code.
    InvalidCurrency,
    /// Not a two-letter ISO 3166 code.
    InvalidCountry,
    /// Shipping fields given without a shipping country.
    ShippingCountryMissing,
    /// The order number was already seen in this run.
    Duplicate,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Issue::Missing => "is missing",
            Issue::InvalidDate => "is not a valid date (use dd-MM-yyyy, dd.MM.yyyy or yyyy-MM-dd)",
            Issue::DateInFuture => "is in the future",
            Issue::DueDateTooFar => "is more than 6 months in the future",
            Issue::NotANumber => "is not a decimal number",
            Issue::Negative => "must not be negative",
            Issue::TooManyDecimals => "has more than two decimal places",
            Issue::NotPositive => "must be greater than zero",
            Issue::NotAWholeNumber => "is not a whole number of 0 or more",
            Issue::UnknownType => "is not one of INVOICE, PREPAYMENT, COD, OTHER",
            Issue::InvalidCurrency => "is not a three-letter currency code (e.g. EUR)",
            Issue::InvalidCountry => "is not a two-letter country code (e.g. DE)",
            Issue::ShippingCountryMissing => {
                "is missing (required when a shipping address is given)"
            }
            Issue::Duplicate => "appears more than once in this run; only its first row is sent",
        })
    }
}

/// One problem of a row: the field, the value as found, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field's API name (`date`, `billing.countryCode`, ...).
    pub field: &'static str,
    /// The offending value, if there was one.
    pub value: Option<String>,
    /// What is wrong.
    pub issue: Issue,
}

impl Problem {
    fn new(field: Field, value: Option<&str>, issue: Issue) -> Self {
        Problem {
            field: field.csv_name(),
            value: value.map(str::to_string),
            issue,
        }
    }

    /// A short reason without the value, used to group rejections in the summary.
    pub fn reason(&self) -> String {
        format!("{} {}", self.field, self.issue)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{} {:?} {}", self.field, value, self.issue),
            None => write!(f, "{} {}", self.field, self.issue),
        }
    }
}

/// A row that cannot be sent, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The row (CSV: spreadsheet row, header = 1; SQLite: rowid).
    pub row: u64,
    /// The problems, at least one.
    pub problems: Vec<Problem>,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "row {}: ", self.row)?;
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// The dates validation is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Today in Europe/Berlin; `date` must not be after it.
    pub today: Date,
    /// Latest allowed `dueDate` (today + 6 months).
    pub latest_due_date: Date,
}

impl Rules {
    /// Rules for a run starting on `today`.
    pub fn for_today(today: Date) -> Self {
        Rules {
            today,
            latest_due_date: dates::add_months(today, 6),
        }
    }
}

/// A validated order, serialized once, ready to be put into any chunk.
#[derive(Debug, Clone)]
pub struct PreparedOrder {
    /// The order number (the key the API replies with).
    pub number: String,
    /// The order as a JSON object.
    pub json: Vec<u8>,
    /// The order's date (for choosing `maxAge` when statuses are read back).
    pub date: Date,
    /// xxh3-64 of the payload as an update sends it (without `initialDunningLevel`, which
    /// only a creation carries), so the first send and later unchanged ones compare equal.
    pub fingerprint: u64,
    /// [`row_fingerprint`] of the row it was made from.
    pub row_fingerprint: u64,
    /// Where `,"initialDunningLevel":…` starts in `json`, when the payload has it: a creation
    /// may carry it, an update may not.
    pub creation_only_at: Option<usize>,
}

impl PreparedOrder {
    /// The order as an update sends it, without `initialDunningLevel`; `None` when the
    /// payload has nothing only a creation may carry.
    pub fn without_creation_fields(&self) -> Option<PreparedOrder> {
        let at = self.creation_only_at?;
        let mut json = self.json.get(..at)?.to_vec();
        json.push(b'}');
        Some(PreparedOrder {
            number: self.number.clone(),
            json,
            creation_only_at: None,
            ..*self
        })
    }
}

/// xxh3-64 of the row's order fields: the bytes of every column kksync reads, where each of
/// them ends and which field each column holds, not the result columns or the columns carried
/// through. Equal fingerprints
/// mean equal fields, hence equal payloads, so an unchanged row need not be validated and
/// serialized again: a row the API accepted stays valid (its date does not move into the
/// future, its due date only gets nearer).
///
/// The columns are hashed as they stand, run by run of neighbouring columns (usually one run:
/// the order's columns side by side), two hash calls a run instead of one small piece per
/// field. Spaces around a value or moved columns change the fingerprint though not the
/// payload: such a row takes the slow path once, and its new fingerprint is stored (see
/// `pipeline::read`). Fingerprints stored by earlier versions, which hashed the trimmed
/// fields one by one, are replaced the same way, in the first run after an upgrade.
pub fn row_fingerprint(view: RowView<'_>) -> u64 {
    /// Field lengths hashed per call.
    const LENGTHS: usize = 64;
    let ends = view.record.ends();
    let text = view.record.as_str().as_bytes();
    let mut hash = view.layout.mapping;
    for &(first, last) in &view.layout.spans {
        // A short row (fewer fields than the header) lacks the last columns.
        let last = last.min(ends.len().saturating_sub(1));
        let mut start = match first.checked_sub(1) {
            Some(previous) => match ends.get(previous) {
                Some(&end) => end,
                None => break,
            },
            None => 0,
        };
        let Some(fields) = ends.get(first..=last) else {
            break;
        };
        for group in fields.chunks(LENGTHS) {
            let mut lengths = [0u8; 4 * LENGTHS];
            let mut at = start;
            for (slot, &end) in lengths.chunks_exact_mut(4).zip(group) {
                let length = u32::try_from(end.saturating_sub(at)).unwrap_or(u32::MAX);
                slot.copy_from_slice(&length.to_le_bytes());
                at = end;
            }
            hash = xxhash_rust::xxh3::xxh3_64_with_seed(&lengths[..4 * group.len()], hash);
            let bytes = text.get(start..at).unwrap_or_default();
            hash = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, hash);
            start = at;
        }
    }
    hash
}

/// Validates one row and serializes it as the API's `Order` JSON.
///
/// `created_before` is true when the row already carries a payment status from an earlier run:
/// the order then exists at Komfortkasse, and `initialDunningLevel` may only be sent on creation
/// (the API answers 400 otherwise), so it is left out.
pub fn prepare(
    view: RowView<'_>,
    row: u64,
    rules: &Rules,
    created_before: bool,
) -> Result<PreparedOrder, RowError> {
    let mut problems = Vec::new();
    let payload = build_payload(view, rules, created_before, &mut problems);
    match payload {
        Some(payload) if problems.is_empty() => {
            // The JSON is about as long as the row's text plus the field names.
            let mut json = Vec::with_capacity(view.record.as_str().len() + 384);
            let (fingerprint, creation_only_at) = json::write_order(&mut json, &payload);
            Ok(PreparedOrder {
                number: payload.number.to_string(),
                json,
                date: payload.date.0,
                fingerprint,
                row_fingerprint: 0,
                creation_only_at,
            })
        }
        _ => Err(RowError { row, problems }),
    }
}

fn build_payload<'a>(
    view: RowView<'a>,
    rules: &Rules,
    created_before: bool,
    problems: &mut Vec<Problem>,
) -> Option<OrderPayload<'a>> {
    let mut check = Checker { view, problems };
    let number = check.required(Field::Number);
    let date = check.date_not_after(Field::Date, true, rules.today, Issue::DateInFuture);
    let due_date = check.date_not_after(
        Field::DueDate,
        false,
        rules.latest_due_date,
        Issue::DueDateTooFar,
    );
    let order_type = check
        .required(Field::Type)
        .and_then(|v| check.order_type(v));
    let amount = check
        .required(Field::Amount)
        .and_then(|v| check.amount(Field::Amount, v));
    let currency = check
        .required(Field::Currency)
        .and_then(|v| check.code(Field::Currency, v, 3, Issue::InvalidCurrency));
    let exchange_rate = check
        .optional(Field::ExchangeRate)
        .and_then(|v| check.positive_decimal(Field::ExchangeRate, v));
    let dunning = check
        .optional(Field::InitialDunningLevel)
        .and_then(|v| check.whole_number(Field::InitialDunningLevel, v));
    let billing = check.address(&BILLING, true);
    let shipping = check.address(&SHIPPING, false);
    let view = check.view;
    Some(OrderPayload {
        number: number?,
        date: ApiDate(date?),
        due_date: due_date.map(ApiDate),
        order_type: order_type?,
        amount: Money(amount?),
        currency: currency?,
        exchange_rate: exchange_rate.map(PlainDecimal),
        customer_email: view.get(Field::CustomerEmail),
        customer_number: view.get(Field::CustomerNumber),
        language: view.get(Field::Language),
        payment_method: view.get(Field::PaymentMethod),
        payment_method_description: view.get(Field::PaymentMethodDescription),
        status_description: view.get(Field::StatusDescription),
        marketplace_number: view.get(Field::MarketplaceNumber),
        items: view.get(Field::Items).map(parse_items),
        item_numbers: view.get(Field::ItemNumbers).map(split_list),
        invoice_numbers: view.get(Field::InvoiceNumbers).map(split_list),
        shipping_numbers: view.get(Field::ShippingNumbers).map(split_list),
        proforma_numbers: view.get(Field::ProformaNumbers).map(split_list),
        billing: billing.flatten()?,
        shipping: shipping.flatten(),
        initial_dunning_level: if created_before { None } else { dunning },
    })
}

struct Checker<'a, 'p> {
    view: RowView<'a>,
    problems: &'p mut Vec<Problem>,
}

impl<'a> Checker<'a, '_> {
    fn problem(&mut self, field: Field, issue: Issue) {
        let value = self.view.get(field);
        self.problems.push(Problem::new(field, value, issue));
    }

    fn required(&mut self, field: Field) -> Option<&'a str> {
        let value = self.view.get(field);
        if value.is_none() {
            self.problems
                .push(Problem::new(field, None, Issue::Missing));
        }
        value
    }

    fn optional(&mut self, field: Field) -> Option<&'a str> {
        self.view.get(field)
    }

    fn fail<T>(&mut self, field: Field, issue: Issue) -> Option<T> {
        self.problem(field, issue);
        None
    }

    fn date(&mut self, field: Field, value: &str) -> Option<Date> {
        dates::parse_shop_date(value).or_else(|| self.fail(field, Issue::InvalidDate))
    }

    /// A date field that must be a real date no later than `latest`.
    fn date_not_after(
        &mut self,
        field: Field,
        required: bool,
        latest: Date,
        issue: Issue,
    ) -> Option<Date> {
        let value = if required {
            self.required(field)
        } else {
            self.optional(field)
        };
        let date = value.and_then(|v| self.date(field, v));
        if date.is_some_and(|d| d > latest) {
            self.problem(field, issue);
        }
        date
    }

    fn order_type(&mut self, value: &str) -> Option<OrderType> {
        OrderType::parse(value).or_else(|| self.fail(Field::Type, Issue::UnknownType))
    }

    fn amount(&mut self, field: Field, value: &str) -> Option<Decimal> {
        match parse_decimal(value) {
            Err(issue) => self.fail(field, issue),
            Ok(amount) if amount.is_sign_negative() && !amount.is_zero() => {
                self.fail(field, Issue::Negative)
            }
            Ok(amount) if amount.normalize().scale() > 2 => {
                self.fail(field, Issue::TooManyDecimals)
            }
            Ok(amount) => Some(amount),
        }
    }

    fn positive_decimal(&mut self, field: Field, value: &str) -> Option<Decimal> {
        match parse_decimal(value) {
            Err(issue) => self.fail(field, issue),
            Ok(number) if number <= Decimal::ZERO => self.fail(field, Issue::NotPositive),
            Ok(number) => Some(number),
        }
    }

    fn whole_number(&mut self, field: Field, value: &str) -> Option<u32> {
        value
            .parse::<u32>()
            .ok()
            .or_else(|| self.fail(field, Issue::NotAWholeNumber))
    }

    fn code(
        &mut self,
        field: Field,
        value: &'a str,
        len: usize,
        issue: Issue,
    ) -> Option<Cow<'a, str>> {
        if value.len() == len && value.bytes().all(|b| b.is_ascii_alphabetic()) {
            Some(uppercase(value))
        } else {
            self.fail(field, issue)
        }
    }

    /// Builds an address. Billing is required (with its country); a shipping address is
    /// optional, but once any of its fields is given its country is required too.
    fn address(&mut self, fields: &[Field; 9], required: bool) -> Option<Option<Address<'a>>> {
        let any_given = fields.iter().any(|&f| self.view.get(f).is_some());
        if !required && !any_given {
            return Some(None);
        }
        let country_field = fields[7];
        let country = match self.view.get(country_field) {
            Some(value) => self.code(country_field, value, 2, Issue::InvalidCountry),
            None if required => self.fail(country_field, Issue::Missing),
            None => self.fail(country_field, Issue::ShippingCountryMissing),
        };
        let get = |i: usize| self.view.get(fields[i]);
        let address = Address {
            gender: get(0),
            company: get(1),
            first_name: get(2),
            last_name: get(3),
            street: get(4),
            post_code: get(5),
            city: get(6),
            country_code: country?,
            phone: get(8),
        };
        Some(Some(address))
    }
}

fn uppercase(value: &str) -> Cow<'_, str> {
    if value.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(value.to_ascii_uppercase())
    } else {
        Cow::Borrowed(value)
    }
}

/// Parses a decimal as shops write it: `22.38`, `22,38`, `1.234,56`, `1,234.56`.
///
/// When both separators appear, the last one is the decimal separator and the other groups
/// thousands. A lone comma is a decimal comma (German exports); several commas without a dot
/// are ambiguous and refused.
pub fn parse_decimal(text: &str) -> Result<Decimal, Issue> {
    // Fast path, no allocation: plain `1234.56` as most exports and every SQLite TEXT amount have.
    let plain = text
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_digit() || b == b'.' || (i == 0 && b == b'-'));
    if plain
        && text.bytes().filter(|&b| b == b'.').count() <= 1
        && text.bytes().any(|b| b.is_ascii_digit())
    {
        return Decimal::from_str(text).map_err(|_| Issue::NotANumber);
    }
    let compact: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{a0}')
        .collect();
    let (last_dot, last_comma) = (compact.rfind('.'), compact.rfind(','));
    let normalized = match (last_dot, last_comma) {
        // Both separators: the last one is the decimal mark, the other groups thousands, and a
        // misplaced group (`1.23,45`) is a typo, not 123.45.
        (Some(dot), Some(comma)) if comma > dot => {
            if !thousands_grouped(&compact[..comma], '.') {
                return Err(Issue::NotANumber);
            }
            compact.replace('.', "").replace(',', ".")
        }
        (Some(dot), Some(_)) => {
            if !thousands_grouped(&compact[..dot], ',') {
                return Err(Issue::NotANumber);
            }
            compact.replace(',', "")
        }
        (None, Some(_)) if compact.matches(',').count() == 1 => compact.replace(',', "."),
        (None, Some(_)) => return Err(Issue::NotANumber),
        _ => compact,
    };
    let digits = normalized.strip_prefix('-').unwrap_or(&normalized);
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.matches('.').count() <= 1
        && digits.bytes().any(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(Issue::NotANumber);
    }
    Decimal::from_str(&normalized).map_err(|_| Issue::NotANumber)
}

/// Whether the integer part of an amount groups its digits by three (`1.234.567`, `-12,345`).
fn thousands_grouped(integer: &str, separator: char) -> bool {
    let digits = integer.strip_prefix('-').unwrap_or(integer);
    let mut groups = digits.split(separator);
    let first_ok = groups
        .next()
        .is_some_and(|g| (1..=3).contains(&g.len()) && g.bytes().all(|b| b.is_ascii_digit()));
    first_ok && groups.all(|g| g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit()))
}

fn split_list(text: &str) -> Vec<&str> {
    text.split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// `items` text form: `number:name|number:name`; split at the first `:`, so names may hold colons.
fn parse_items(text: &str) -> Vec<Item<'_>> {
    split_list(text)
        .into_iter()
        .map(|entry| match entry.split_once(':') {
            Some((number, name)) => Item {
                number: non_empty(number.trim()),
                name: non_empty(name.trim()),
            },
            None => Item {
                number: Some(entry),
                name: None,
            },
        })
        .collect()
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// The API's order types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize), serde(rename_all = "UPPERCASE"))]
pub enum OrderType {
    /// Pay on invoice (Rechnung).
    Invoice,
    /// Prepayment by bank transfer (Vorkasse).
    Prepayment,
    /// Cash on delivery (Nachnahme).
    Cod,
    /// Anything else.
    Other,
}

impl OrderType {
    /// Parses a type, ignoring case.
    pub fn parse(text: &str) -> Option<Self> {
        [
            ("INVOICE", Self::Invoice),
            ("PREPAYMENT", Self::Prepayment),
            ("COD", Self::Cod),
            ("OTHER", Self::Other),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, t)| t)
    }
}

/// An amount, serialized as a JSON number with exactly two decimals (`149.90`).
#[derive(Debug, Clone, Copy)]
struct Money(Decimal);

#[cfg(test)]
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Integer formatting of the cents is much cheaper than Decimal's Display, and this runs
        // once per order.
        let rounded = self.0.round_dp(2);
        let mut cents = rounded;
        cents.rescale(2);
        if cents != rounded || cents.scale() != 2 {
            // Near the top of Decimal's range two more digits do not fit; Display still works.
            return raw_number(format!("{rounded:.2}"), serializer);
        }
        let mantissa = cents.mantissa();
        let sign = if mantissa < 0 { "-" } else { "" };
        let (units, fraction) = (mantissa.unsigned_abs() / 100, mantissa.unsigned_abs() % 100);
        raw_number(format!("{sign}{units}.{fraction:02}"), serializer)
    }
}

/// A decimal serialized as a JSON number without rounding (`exchangeRate`).
#[derive(Debug, Clone, Copy)]
struct PlainDecimal(Decimal);

#[cfg(test)]
impl Serialize for PlainDecimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        raw_number(self.0.normalize().to_string(), serializer)
    }
}

/// Writes `text` as a JSON number token, so decimals are never routed through `f64`.
#[cfg(test)]
fn raw_number<S: Serializer>(text: String, serializer: S) -> Result<S::Ok, S::Error> {
    let raw = serde_json::value::RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
    raw.serialize(serializer)
}

#[derive(Debug, Clone, Copy)]
struct ApiDate(Date);

#[cfg(test)]
impl Serialize for ApiDate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match dates::api_date_bytes(self.0) {
            Some(bytes) => {
                serializer.serialize_str(std::str::from_utf8(&bytes).unwrap_or_default())
            }
            None => serializer.serialize_str(&dates::format_api_date(self.0)),
        }
    }
}

// The payload is written by `json::write_order`; the derived `Serialize` impls (also of the
// types below) are the reference its tests compare against, byte for byte.
#[cfg_attr(test, derive(Serialize), serde(rename_all = "camelCase"))]
struct OrderPayload<'a> {
    number: &'a str,
    date: ApiDate,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    due_date: Option<ApiDate>,
    #[cfg_attr(test, serde(rename = "type"))]
    order_type: OrderType,
    amount: Money,
    currency: Cow<'a, str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    exchange_rate: Option<PlainDecimal>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    customer_email: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    customer_number: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    language: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    payment_method: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    payment_method_description: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    status_description: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    marketplace_number: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    items: Option<Vec<Item<'a>>>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    item_numbers: Option<Vec<&'a str>>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    invoice_numbers: Option<Vec<&'a str>>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    shipping_numbers: Option<Vec<&'a str>>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    proforma_numbers: Option<Vec<&'a str>>,
    billing: Address<'a>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    shipping: Option<Address<'a>>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    initial_dunning_level: Option<u32>,
}

#[cfg_attr(test, derive(Serialize), serde(rename_all = "camelCase"))]
struct Address<'a> {
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    gender: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    company: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    first_name: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    last_name: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    street: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    post_code: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    city: Option<&'a str>,
    country_code: Cow<'a, str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    phone: Option<&'a str>,
}

#[cfg_attr(test, derive(Serialize))]
struct Item<'a> {
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    number: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    name: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn row(pairs: &[(&str, &str)]) -> (crate::source::TextRecord, Layout) {
        let names: Vec<&str> = pairs.iter().map(|p| p.0).collect();
        let layout = Layout::from_columns(names.iter().copied(), Field::csv_name);
        (pairs.iter().map(|p| p.1).collect(), layout)
    }

    fn valid() -> Vec<(&'static str, &'static str)> {
        vec![
            ("number", "2026-0001"),
            ("date", "2026-11-20"),
            ("type", "invoice"),
            ("amount", "1.234,5"),
            ("currency", "eur"),
            ("billing.countryCode", "de"),
            ("billing.lastName", "Müller"),
            ("items", "TS-1:Shirt, size M|SHIP:Versand: Standard"),
            ("invoiceNumbers", "RE-1| RE-2"),
            ("initialDunningLevel", "1"),
            ("lagerort", "B-12"),
        ]
    }

    fn rules() -> Rules {
        Rules::for_today(date!(2026 - 11 - 23))
    }

    #[test]
    fn a_german_row_becomes_the_api_json() {
        let (record, layout) = row(&valid());
        let order = prepare(
            RowView {
                record: &record,
                layout: &layout,
            },
            2,
            &rules(),
            false,
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&order.json).unwrap();
        assert_eq!(order.number, "2026-0001");
        assert_eq!(json["date"], "20-11-2026");
        assert_eq!(json["type"], "INVOICE");
        assert_eq!(json["currency"], "EUR");
        assert_eq!(json["billing"]["countryCode"], "DE");
        assert_eq!(json["items"][1]["name"], "Versand: Standard");
        assert_eq!(json["invoiceNumbers"][1], "RE-2");
        assert_eq!(json["initialDunningLevel"], 1);
        assert!(json.get("shipping").is_none());
        assert!(json.get("lagerort").is_none());
        // The amount is a JSON number with exactly two decimals.
        assert!(
            String::from_utf8(order.json)
                .unwrap()
                .contains(r#""amount":1234.50"#)
        );
    }

    #[test]
    fn initial_dunning_level_is_dropped_for_orders_created_before() {
        let (record, layout) = row(&valid());
        let order = prepare(
            RowView {
                record: &record,
                layout: &layout,
            },
            2,
            &rules(),
            true,
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&order.json).unwrap();
        assert!(json.get("initialDunningLevel").is_none());
    }

    #[test]
    fn the_fingerprint_ignores_the_creation_only_field_and_sees_every_change() {
        let prepared = |pairs: &[(&str, &str)], created_before: bool| {
            let (record, layout) = row(pairs);
            let view = RowView {
                record: &record,
                layout: &layout,
            };
            prepare(view, 2, &rules(), created_before).unwrap()
        };
        let first = prepared(&valid(), false);
        let later = prepared(&valid(), true);
        assert_ne!(
            first.json, later.json,
            "the creation carries initialDunningLevel"
        );
        assert_eq!(first.fingerprint, later.fingerprint);
        let mut changed = valid();
        changed[3].1 = "1234,51";
        assert_ne!(prepared(&changed, true).fingerprint, later.fingerprint);
    }

    #[test]
    fn every_problem_of_a_row_is_reported_with_row_field_and_value() {
        let mut pairs = valid();
        pairs[1].1 = "31-02-2024";
        pairs[3].1 = "-5,00";
        pairs[4].1 = "EURO";
        pairs[5].1 = "";
        pairs.push(("shipping.city", "Köln"));
        let (record, layout) = row(&pairs);
        let error = prepare(
            RowView {
                record: &record,
                layout: &layout,
            },
            17,
            &rules(),
            false,
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(r#"row 17: date "31-02-2024" is not a valid date"#),
            "{text}"
        );
        assert!(
            text.contains(r#"amount "-5,00" must not be negative"#),
            "{text}"
        );
        assert!(
            text.contains(r#"currency "EURO" is not a three-letter currency code"#),
            "{text}"
        );
        assert!(text.contains("billing.countryCode is missing"), "{text}");
        assert!(
            text.contains(
                "shipping.countryCode is missing (required when a shipping address is given)"
            ),
            "{text}"
        );
    }

    #[test]
    fn date_rules_follow_the_reference() {
        let cases = [
            ("date", "24-11-2026", Issue::DateInFuture),
            ("dueDate", "24-05-2027", Issue::DueDateTooFar),
            ("type", "PAYPAL", Issue::UnknownType),
            ("amount", "12,345", Issue::TooManyDecimals),
            ("amount", "12,3,4", Issue::NotANumber),
            ("amount", "1e5", Issue::NotANumber),
            ("billing.countryCode", "DEU", Issue::InvalidCountry),
            ("initialDunningLevel", "-1", Issue::NotAWholeNumber),
        ];
        for (field, value, issue) in cases {
            let mut pairs = valid();
            match pairs.iter_mut().find(|p| p.0 == field) {
                Some(pair) => pair.1 = value,
                None => pairs.push((field, value)),
            }
            let (record, layout) = row(&pairs);
            let error = prepare(
                RowView {
                    record: &record,
                    layout: &layout,
                },
                3,
                &rules(),
                false,
            )
            .unwrap_err();
            assert_eq!(error.problems[0].issue, issue, "{field}={value}: {error}");
        }
        // The boundaries themselves are fine.
        let mut pairs = valid();
        pairs[1].1 = "23-11-2026";
        pairs.push(("dueDate", "23-05-2027"));
        let (record, layout) = row(&pairs);
        assert!(
            prepare(
                RowView {
                    record: &record,
                    layout: &layout
                },
                3,
                &rules(),
                false
            )
            .is_ok()
        );
    }

    /// No input makes validation panic: random field contents, odd Unicode, huge numbers.
    #[test]
    fn random_rows_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let pieces = [
            "",
            " ",
            "-",
            ",",
            ".",
            "0",
            "9",
            "31",
            "02",
            "2024",
            "e",
            "Ä",
            "\u{feff}",
            "|",
            ":",
            "ß€",
            "99999999999999999999999999999999",
        ];
        let names: Vec<&str> = Field::ALL.iter().map(|f| f.csv_name()).collect();
        let layout = Layout::from_columns(names.iter().copied(), Field::csv_name);
        for _ in 0..20_000 {
            let fields: Vec<String> = names
                .iter()
                .map(|_| {
                    let len = rng.random_range(0..6);
                    (0..len)
                        .map(|_| pieces[rng.random_range(0..pieces.len())])
                        .collect::<String>()
                })
                .collect();
            let record: crate::source::TextRecord = fields.iter().map(String::as_str).collect();
            let _ = prepare(
                RowView {
                    record: &record,
                    layout: &layout,
                },
                2,
                &rules(),
                rng.random(),
            );
        }
    }

    #[test]
    fn written_json_is_byte_for_byte_what_serde_json_writes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let text = [
            "",
            "Müller",
            "a\"b",
            "back\\slash",
            "tab\there",
            "line\nbreak",
            "\u{1}\u{1f}",
            "\u{7f}",
            "Größe €",
            "\u{2028}",
            "x|y",
            "SKU-1:Hemd \"M\"",
            "12:",
            ":nur Name",
            "<html>",
            "'",
            "/",
            "𝄞",
        ];
        let pick = |rng: &mut rand::rngs::StdRng, pool: &[&'static str]| {
            pool[rng.random_range(0..pool.len())]
        };
        let names: Vec<&str> = Field::ALL.iter().map(|f| f.csv_name()).collect();
        let layout = Layout::from_columns(names.iter().copied(), Field::csv_name);
        let mut compared = 0;
        for _ in 0..5_000 {
            let fields: Vec<String> = Field::ALL
                .iter()
                .map(|field| {
                    let value = match field {
                        Field::Number => pick(&mut rng, &["N-1", "N \"2\"", "Nr.\\3"]),
                        Field::Date => pick(&mut rng, &["2026-11-20", "01-02-2024"]),
                        Field::DueDate => pick(&mut rng, &["", "2026-12-24", "31-12-2026"]),
                        Field::Type => pick(&mut rng, &["invoice", "PREPAYMENT", "cod", "other"]),
                        Field::Amount => pick(&mut rng, &["0", "1.234,5", "19.99", "7", "-0"]),
                        Field::Currency => pick(&mut rng, &["eur", "CHF"]),
                        Field::ExchangeRate => pick(&mut rng, &["", "1", "0,5", "1.2500"]),
                        Field::InitialDunningLevel => pick(&mut rng, &["", "0", "2"]),
                        Field::BillingCountryCode => pick(&mut rng, &["de", "AT"]),
                        Field::ShippingCountryCode => pick(&mut rng, &["", "ch"]),
                        _ if rng.random_bool(0.3) => "",
                        _ => pick(&mut rng, &text),
                    };
                    value.to_string()
                })
                .collect();
            let record: crate::source::TextRecord = fields.iter().map(String::as_str).collect();
            let view = RowView {
                record: &record,
                layout: &layout,
            };
            let mut problems = Vec::new();
            let created_before = rng.random();
            let Some(payload) = build_payload(view, &rules(), created_before, &mut problems) else {
                continue;
            };
            if !problems.is_empty() {
                continue;
            }
            let mut written = Vec::new();
            let (fingerprint, creation_only_at) = json::write_order(&mut written, &payload);
            let reference = serde_json::to_vec(&payload).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&reference)
            );
            let update = OrderPayload {
                initial_dunning_level: None,
                ..payload
            };
            let update = serde_json::to_vec(&update).unwrap();
            assert_eq!(fingerprint, xxhash_rust::xxh3::xxh3_64(&update));
            if let Some(at) = creation_only_at {
                let mut stripped = written[..at].to_vec();
                stripped.push(b'}');
                assert_eq!(stripped, update);
            } else {
                assert_eq!(written, update);
            }
            compared += 1;
        }
        assert!(compared > 1_000, "only {compared} valid payloads compared");
    }

    /// Cell values that are awkward to trim: empty, blank, one character, padded with ASCII
    /// or Unicode space, non-ASCII at either end.
    const AWKWARD_VALUES: &[&str] = &[
        "",
        " ",
        "a",
        " a",
        "a ",
        "ab",
        "a b",
        "\u{a0}a",
        "a\u{a0}",
        "\u{3000}x\u{3000}",
        "ü",
        "üx ",
        "\tx\n",
        "x\r",
        "~",
        "!x!",
        "1",
        "x",
        " 1",
        "1 ",
        "\u{a0}7\u{a0}",
        "Müller",
        "\u{2003}",
        " Straße 1 ",
    ];

    #[test]
    fn the_trim_shortcut_trims_as_str_trim_does() {
        for text in AWKWARD_VALUES {
            assert_eq!(trim(text), text.trim(), "{text:?}");
        }
    }

    #[test]
    fn row_fingerprints_tell_every_field_and_boundary_apart_and_ignore_other_columns() {
        let fingerprint = |header: &[&str], values: &[&str]| {
            let layout = Layout::from_columns(header.iter().copied(), Field::csv_name);
            let record: crate::source::TextRecord = values.iter().copied().collect();
            row_fingerprint(RowView {
                record: &record,
                layout: &layout,
            })
        };
        // The order's fields with a shop column between and result columns after.
        let header = [
            "number",
            "shopNote",
            "amount",
            "currency",
            "paymentStatus",
            "syncError",
        ];
        let base = fingerprint(&header, &["A1", "x", "10.00", "EUR", "UNPAID", ""]);
        assert_eq!(
            base,
            fingerprint(
                &header,
                &["A1", "other note", "10.00", "EUR", "PAID", "an error"]
            ),
            "the shop's column and the results are not order fields"
        );
        for changed in [
            ["A2", "x", "10.00", "EUR", "UNPAID", ""],
            ["A1", "x", "10.01", "EUR", "UNPAID", ""],
            ["A1", "x", "10.00", "CHF", "UNPAID", ""],
            // The same bytes, another boundary.
            ["A1", "x", "10.00E", "UR", "UNPAID", ""],
            ["A1", "x", " 10.00", "EUR", "UNPAID", ""],
        ] {
            assert_ne!(base, fingerprint(&header, &changed), "{changed:?}");
        }
        // The same bytes under swapped headers are another payload.
        let swapped = [
            "number",
            "shopNote",
            "currency",
            "amount",
            "paymentStatus",
            "syncError",
        ];
        assert_ne!(
            fingerprint(&header, &["A1", "x", "10.00", "10.00", "", ""]),
            fingerprint(&swapped, &["A1", "x", "10.00", "10.00", "", ""])
        );
        // A short row lacks its last fields: not the same as empty ones.
        let short = fingerprint(&header, &["A1", "x", "10.00"]);
        assert_ne!(
            short,
            fingerprint(&header, &["A1", "x", "10.00", "", "", ""])
        );
        assert_ne!(short, base);
    }

    #[test]
    fn money_has_exactly_two_decimals() {
        let json = |text: &str| {
            let money = Money(Decimal::from_str(text).unwrap());
            let mut written = Vec::new();
            json::write_money(&mut written, money);
            let reference = serde_json::to_string(&money).unwrap();
            assert_eq!(String::from_utf8_lossy(&written), reference);
            reference
        };
        assert_eq!(json("0"), "0.00");
        assert_eq!(json("12.3"), "12.30");
        assert_eq!(json("149.90"), "149.90");
        assert_eq!(json("1234567.891"), "1234567.89");
        assert_eq!(json("-0.5"), "-0.50");
        assert_eq!(
            json("79228162514264337593543950335"),
            "79228162514264337593543950335.00"
        );
    }

    #[test]
    fn decimals_in_german_and_english_notation() {
        let d = |s: &str| parse_decimal(s).map(|d| d.to_string());
        assert_eq!(d("22,38"), Ok("22.38".into()));
        assert_eq!(d("22.38"), Ok("22.38".into()));
        assert_eq!(d("1.234,56"), Ok("1234.56".into()));
        assert_eq!(d("1,234.56"), Ok("1234.56".into()));
        assert_eq!(d(" 7 "), Ok("7".into()));
        assert_eq!(d("1,2,3"), Err(Issue::NotANumber));
        assert_eq!(d("1.234.567,89"), Ok("1234567.89".into()));
        assert_eq!(d("-1.234,5"), Ok("-1234.5".into()));
        assert_eq!(d("12,345,678.9"), Ok("12345678.9".into()));
        assert_eq!(d("1.23,45"), Err(Issue::NotANumber));
        assert_eq!(d("1234.567,8"), Err(Issue::NotANumber));
        assert_eq!(d(".5,1"), Err(Issue::NotANumber));
        assert_eq!(d("1,2345.6"), Err(Issue::NotANumber));
        assert_eq!(d(""), Err(Issue::NotANumber));
        assert_eq!(d("-"), Err(Issue::NotANumber));
        assert_eq!(d("abc"), Err(Issue::NotANumber));
        assert_eq!(d("NaN"), Err(Issue::NotANumber));
    }
}
