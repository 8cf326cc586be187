//! Order JSON: parsing and validating submitted orders, and writing stored ones back out.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use time::Date;

use super::error::ApiError;

/// Payment status of an order (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum PaymentStatus {
    Unpaid,
    Paid,
    PaidPartial,
    Cancelled,
    Refunded,
    RefundedPartial,
    Collection,
    Disappeared,
    Legacy,
}

impl PaymentStatus {
    pub(crate) const ALL: [PaymentStatus; 9] = [
        Self::Unpaid,
        Self::Paid,
        Self::PaidPartial,
        Self::Cancelled,
        Self::Refunded,
        Self::RefundedPartial,
        Self::Collection,
        Self::Disappeared,
        Self::Legacy,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unpaid => "UNPAID",
            Self::Paid => "PAID",
            Self::PaidPartial => "PAID_PARTIAL",
            Self::Cancelled => "CANCELLED",
            Self::Refunded => "REFUNDED",
            Self::RefundedPartial => "REFUNDED_PARTIAL",
            Self::Collection => "COLLECTION",
            Self::Disappeared => "DISAPPEARED",
            Self::Legacy => "LEGACY",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Bit for status filters.
    pub(crate) fn bit(self) -> u16 {
        1 << (self as u8)
    }

    /// Open orders: the ones payments can still arrive for and `/ordersync` may retire.
    pub(crate) fn is_open(self) -> bool {
        matches!(self, Self::Unpaid | Self::PaidPartial)
    }
}

/// The four `include*` flags.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Include {
    pub(crate) postings: bool,
    pub(crate) refunds: bool,
    pub(crate) reminders: bool,
    pub(crate) collection: bool,
}

impl Include {
    pub(crate) fn all() -> Self {
        Self {
            postings: true,
            refunds: true,
            reminders: true,
            collection: true,
        }
    }

    pub(crate) fn from_query(query: &[(String, String)]) -> Self {
        let mut include = Self::default();
        for (key, value) in query {
            let on = flag(value);
            match key.as_str() {
                "includePostings" => include.postings = on,
                "includeRefunds" => include.refunds = on,
                "includePaymentReminders" => include.reminders = on,
                "includeCollectionHistory" => include.collection = on,
                _ => {}
            }
        }
        include
    }
}

/// A boolean query flag: `true` (any case) or `1`.
pub(crate) fn flag(value: &str) -> bool {
    value.eq_ignore_ascii_case("true") || value == "1"
}

/// An object key, borrowed from the body when it has no escapes.
enum Key<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key::Owned(v))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The entries of one JSON object, values left raw.
pub(crate) struct Entries<'a>(Vec<(Key<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(entry) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

impl<'a> Entries<'a> {
    /// Parses one object; `None` if `text` is not a JSON object.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| *v)
    }

    /// The body `number` if it is a non-empty string.
    pub(crate) fn number(&self) -> Option<Cow<'a, str>> {
        match text(self.get("number")) {
            Field::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// A field as seen by the "missing or empty" rule.
pub(crate) enum Field<'a> {
    Missing,
    Text(Cow<'a, str>),
    Other(&'a RawValue),
}

/// Classifies a raw field: absent, `null` and blank strings are missing.
pub(crate) fn text(raw: Option<&RawValue>) -> Field<'_> {
    let Some(raw) = raw else {
        return Field::Missing;
    };
    let src = raw.get();
    if src == "null" {
        return Field::Missing;
    }
    if src.starts_with('"') {
        return match serde_json::from_str::<Cow<str>>(src) {
            Ok(s) if s.trim().is_empty() => Field::Missing,
            Ok(s) => Field::Text(s),
            Err(_) => Field::Other(raw),
        };
    }
    Field::Other(raw)
}

/// Parses a JSON number as a decimal (`None` for strings, booleans, objects, …).
pub(crate) fn json_decimal(raw: &RawValue) -> Option<Decimal> {
    let src = raw.get().trim();
    if !src.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    if src.contains(['e', 'E']) {
        Decimal::from_scientific(src).ok()
    } else {
        Decimal::from_str(src).ok()
    }
}

/// Writes an amount as a two-decimal JSON number.
pub(crate) fn write_amount(out: &mut String, amount: Decimal) {
    let _ = write!(out, "{:.2}", amount.round_dp(2));
}

/// Writes a JSON string.
pub(crate) fn write_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

/// Fields the server sets; ignored on input.
const READ_ONLY: [&str; 7] = [
    "referenceNumber",
    "paymentStatus",
    "postings",
    "refunds",
    "paymentReminders",
    "collectionHistory",
    "initialDunningLevel",
];

/// A submitted order that passed validation.
#[derive(Debug)]
pub(crate) struct ValidOrder {
    pub(crate) number: String,
    /// The submitted object without read-only fields, `amount` as two decimals, `number` first
    /// when the body had none.
    pub(crate) json: String,
    pub(crate) date: Date,
    pub(crate) amount: Decimal,
    pub(crate) currency: [u8; 3],
    pub(crate) country: [u8; 2],
    pub(crate) dunning: Option<u8>,
}

/// What validation needs to know about the store and the clock.
pub(crate) struct Context<'c> {
    pub(crate) today: Date,
    pub(crate) max_due: Date,
    pub(crate) exists: &'c dyn Fn(&str) -> bool,
    pub(crate) rejection: &'c dyn Fn(&str) -> Option<String>,
}

fn missing(name: &str) -> ApiError {
    ApiError::bad_request(format!("Missing parameter {name}"))
}

fn upper_code<const N: usize>(field: &Field<'_>) -> Option<[u8; N]> {
    let Field::Text(s) = field else {
        return None;
    };
    let bytes = s.as_bytes();
    if bytes.len() != N || !bytes.iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    let mut code = [0u8; N];
    code.copy_from_slice(bytes);
    Some(code)
}

/// Validates one order in the documented order of checks.
pub(crate) fn validate(
    entries: &Entries<'_>,
    path_number: Option<&str>,
    ctx: &Context<'_>,
) -> Result<ValidOrder, ApiError> {
    let body_number = text(entries.get("number"));
    if path_number.is_none() && matches!(body_number, Field::Missing) {
        return Err(missing("number"));
    }
    let date = text(entries.get("date"));
    if matches!(date, Field::Missing) {
        return Err(missing("date"));
    }
    let kind = text(entries.get("type"));
    if matches!(kind, Field::Missing) {
        return Err(missing("type"));
    }
    let amount_raw = entries.get("amount");
    if matches!(text(amount_raw), Field::Missing) {
        return Err(missing("amount"));
    }
    let currency = text(entries.get("currency"));
    if matches!(currency, Field::Missing) {
        return Err(missing("currency"));
    }
    let billing_raw = entries.get("billing");
    if matches!(text(billing_raw), Field::Missing) {
        return Err(missing("billing"));
    }
    let billing = billing_raw.and_then(|raw| Entries::parse(raw.get()));
    let country = match &billing {
        Some(billing) => text(billing.get("countryCode")),
        None => Field::Other(RawValue::NULL),
    };
    if billing.is_some() && matches!(country, Field::Missing) {
        return Err(missing("billing.countryCode"));
    }
    let date = match &date {
        Field::Text(s) => crate::dates::parse_api_date(s),
        _ => None,
    }
    .ok_or_else(|| ApiError::bad_request("Parameter date is not valid"))?;
    let due = match text(entries.get("dueDate")) {
        // An empty string is not a date; only leaving the field out means "no due date".
        Field::Missing if entries.get("dueDate").is_some() => {
            return Err(ApiError::bad_request("Parameter dueDate is not valid"));
        }
        Field::Missing => None,
        Field::Text(s) => Some(
            crate::dates::parse_api_date(&s)
                .ok_or_else(|| ApiError::bad_request("Parameter dueDate is not valid"))?,
        ),
        Field::Other(_) => return Err(ApiError::bad_request("Parameter dueDate is not valid")),
    };
    let number: String = match (path_number, &body_number) {
        (Some(path), _) => path.to_owned(),
        (None, Field::Text(s)) => s.clone().into_owned(),
        (None, _) => return Err(ApiError::invalid_request()),
    };
    let exists = (ctx.exists)(&number);
    if !exists && date > ctx.today {
        return Err(ApiError::bad_request(
            "Parameter date must not be in the future",
        ));
    }
    if due.is_some_and(|due| due > ctx.max_due) {
        return Err(ApiError::bad_request(
            "Parameter dueDate must not be more than 6 months in the future",
        ));
    }
    if let Some(path) = path_number {
        let differs = match &body_number {
            Field::Missing => false,
            Field::Text(s) => s != path,
            Field::Other(_) => true,
        };
        if differs {
            return Err(ApiError::bad_request(
                "Parameter number and number in object do not match",
            ));
        }
    }
    let dunning = match entries.get("initialDunningLevel") {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => Some(
            raw.get()
                .trim()
                .parse::<u8>()
                .map_err(|_| ApiError::invalid_request())?,
        ),
    };
    if exists && dunning.is_some_and(|level| level != 0) {
        return Err(ApiError::bad_request(
            "Parameter initialDunningLevel can only be given when creating a new order",
        ));
    }
    let kind_ok = matches!(&kind, Field::Text(s) if matches!(&**s, "INVOICE" | "PREPAYMENT" | "COD" | "OTHER"));
    let amount = amount_raw
        .and_then(json_decimal)
        .filter(|a| !a.is_sign_negative() || a.is_zero());
    let currency = upper_code::<3>(&currency);
    let country = upper_code::<2>(&country);
    let number_ok = !matches!(body_number, Field::Other(_));
    let (Some(amount), Some(currency), Some(country), true, true, true) = (
        amount,
        currency,
        country,
        kind_ok,
        number_ok,
        optional_fields_conform(entries),
    ) else {
        return Err(ApiError::invalid_request());
    };
    if let Some(reason) = (ctx.rejection)(&number) {
        return Err(ApiError::bad_request(format!(
            "Could not update order ({reason})"
        )));
    }
    let amount = amount.round_dp(2);
    let mut json = String::with_capacity(entries_len(entries) + 16);
    json.push('{');
    let mut first = true;
    if matches!(body_number, Field::Missing) {
        json.push_str("\"number\":");
        write_str(&mut json, &number);
        first = false;
    }
    for (key, value) in &entries.0 {
        let key = key.as_str();
        if READ_ONLY.contains(&key) || (key == "number" && matches!(body_number, Field::Missing)) {
            continue;
        }
        if !first {
            json.push(',');
        }
        first = false;
        write_str(&mut json, key);
        json.push(':');
        if key == "amount" {
            write_amount(&mut json, amount);
        } else {
            json.push_str(value.get());
        }
    }
    json.push('}');
    Ok(ValidOrder {
        number,
        json,
        date,
        amount,
        currency,
        country,
        dunning,
    })
}

/// Optional string fields of an order (OpenAPI `Order`), checked for their JSON type.
const ORDER_STRINGS: [&str; 7] = [
    "customerEmail",
    "customerNumber",
    "marketplaceNumber",
    "paymentMethod",
    "paymentMethodDescription",
    "statusDescription",
    "language",
];
const ORDER_STRING_LISTS: [&str; 4] = [
    "itemNumbers",
    "invoiceNumbers",
    "shippingNumbers",
    "proformaNumbers",
];
const ADDRESS_STRINGS: [&str; 8] = [
    "gender",
    "company",
    "firstName",
    "lastName",
    "street",
    "postCode",
    "city",
    "phone",
];

/// A check of one field's JSON value.
type FieldCheck<'a> = dyn Fn(&serde_json::Value) -> bool + 'a;

/// The schema checks of the optional fields: what the real service would not store because it
/// does not fit the `Order` model (a number where a string belongs, a shipping address without
/// its country, ...). Anything stored is echoed back, so the sandbox must not accept it.
fn optional_fields_conform(entries: &Entries<'_>) -> bool {
    use serde_json::Value;
    let parse = |key: &str| {
        entries
            .get(key)
            .map(|raw| serde_json::from_str::<Value>(raw.get()))
    };
    let is_string = |v: &Value| v.is_string();
    let string_list = |v: &Value| {
        v.as_array()
            .is_some_and(|items| items.iter().all(is_string))
    };
    let address = |v: &Value, country_required: bool| {
        v.as_object().is_some_and(|fields| {
            let country_ok = match fields.get("countryCode") {
                Some(Value::String(code)) => {
                    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
                }
                None => !country_required,
                Some(_) => false,
            };
            country_ok
                && ADDRESS_STRINGS
                    .iter()
                    .all(|k| fields.get(*k).is_none_or(is_string))
        })
    };
    let item = |v: &Value| {
        v.as_object().is_some_and(|fields| {
            ["number", "name"]
                .iter()
                .all(|k| fields.get(*k).is_none_or(is_string))
        })
    };
    let checks: [(&[&str], &FieldCheck); 6] = [
        (&ORDER_STRINGS, &is_string),
        (&ORDER_STRING_LISTS, &string_list),
        (&["exchangeRate"], &|v| v.is_number()),
        (&["items"], &|v| {
            v.as_array().is_some_and(|items| items.iter().all(item))
        }),
        (&["billing"], &|v| address(v, true)),
        (&["shipping"], &|v| address(v, true)),
    ];
    checks.iter().all(|(keys, check)| {
        keys.iter().all(|key| match parse(key) {
            None => true,
            Some(Ok(value)) => check(&value),
            Some(Err(_)) => false,
        })
    })
}

fn entries_len(entries: &Entries<'_>) -> usize {
    entries
        .0
        .iter()
        .map(|(k, v)| k.as_str().len() + v.get().len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn ctx<'c>(
        exists: &'c dyn Fn(&str) -> bool,
        rej: &'c dyn Fn(&str) -> Option<String>,
    ) -> Context<'c> {
        Context {
            today: date!(2026 - 01 - 10),
            max_due: date!(2026 - 07 - 10),
            exists,
            rejection: rej,
        }
    }

    #[test]
    fn normalises_amount_and_drops_read_only_fields() {
        let body = r#"{"number":"A1","date":"01-01-2026","type":"INVOICE","amount":12.5,"currency":"EUR","billing":{"countryCode":"DE"},"paymentStatus":"PAID","initialDunningLevel":2}"#;
        let entries = Entries::parse(body).expect("object");
        let no = |_: &str| false;
        let none = |_: &str| None;
        let order = validate(&entries, None, &ctx(&no, &none)).expect("valid");
        assert_eq!(
            order.json,
            r#"{"number":"A1","date":"01-01-2026","type":"INVOICE","amount":12.50,"currency":"EUR","billing":{"countryCode":"DE"}}"#
        );
        assert_eq!(order.dunning, Some(2));
    }

    #[test]
    fn checks_in_documented_order() {
        let no = |_: &str| false;
        let none = |_: &str| None;
        let c = ctx(&no, &none);
        let msg = |body: &str| {
            let entries = Entries::parse(body).expect("object");
            validate(&entries, None, &c)
                .err()
                .map(|e| e.message.to_string())
        };
        assert_eq!(msg("{}").as_deref(), Some("Missing parameter number"));
        assert_eq!(
            msg(
                r#"{"number":"1","date":"x","type":"COD","amount":1,"currency":"EUR","billing":{}}"#
            )
            .as_deref(),
            Some("Missing parameter billing.countryCode")
        );
        assert_eq!(
            msg(r#"{"number":"1","date":"31-02-2026","type":"COD","amount":1,"currency":"EUR","billing":{"countryCode":"DE"}}"#).as_deref(),
            Some("Parameter date is not valid")
        );
        assert_eq!(
            msg(r#"{"number":"1","date":"01-01-2026","type":"COD","amount":-1,"currency":"EUR","billing":{"countryCode":"DE"}}"#).as_deref(),
            Some("Invalid request")
        );
    }
}
