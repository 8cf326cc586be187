//! The order payload as JSON, written directly.
//!
//! Every order of every run is serialized once, and through serde_json that was the largest
//! single cost of a run: serde_json looks up every byte of every key and value in its escape
//! table. Here the keys are constants that need no escaping, and a value is copied as it is
//! after one check that compiles to vector instructions; only a value that does contain `"`,
//! `\` or a control character is escaped, by serde_json itself. The output is byte for byte
//! what `serde_json::to_writer` gives for the same payload (the derived `Serialize` impls stay
//! as the reference the tests compare against).

use std::io::Write;

use super::{Address, ApiDate, Item, Money, OrderPayload, OrderType, PlainDecimal};
use crate::dates;

/// Writes `payload` as a JSON object into `out`. Returns the xxh3-64 fingerprint of the
/// payload as an update would send it, i.e. without `initialDunningLevel`, and where in `out`
/// that field starts, if the payload has it (it comes last).
pub(super) fn write_order(out: &mut Vec<u8>, payload: &OrderPayload<'_>) -> (u64, Option<usize>) {
    let mut object = Object::open(out);
    object.str("number", payload.number);
    object.date("date", payload.date);
    if let Some(due) = payload.due_date {
        object.date("dueDate", due);
    }
    object.str("type", order_type_name(payload.order_type));
    object.key("amount");
    write_money(object.out, payload.amount);
    object.str("currency", &payload.currency);
    if let Some(rate) = payload.exchange_rate {
        object.key("exchangeRate");
        write_plain_decimal(object.out, rate);
    }
    object.opt_str("customerEmail", payload.customer_email);
    object.opt_str("customerNumber", payload.customer_number);
    object.opt_str("language", payload.language);
    object.opt_str("paymentMethod", payload.payment_method);
    object.opt_str(
        "paymentMethodDescription",
        payload.payment_method_description,
    );
    object.opt_str("statusDescription", payload.status_description);
    object.opt_str("marketplaceNumber", payload.marketplace_number);
    if let Some(items) = &payload.items {
        object.key("items");
        write_items(object.out, items);
    }
    for (name, list) in [
        ("itemNumbers", &payload.item_numbers),
        ("invoiceNumbers", &payload.invoice_numbers),
        ("shippingNumbers", &payload.shipping_numbers),
        ("proformaNumbers", &payload.proforma_numbers),
    ] {
        if let Some(list) = list {
            object.key(name);
            write_str_list(object.out, list);
        }
    }
    object.key("billing");
    write_address(object.out, &payload.billing);
    if let Some(shipping) = &payload.shipping {
        object.key("shipping");
        write_address(object.out, shipping);
    }
    // `initialDunningLevel` comes last, so the update's payload is everything before it.
    let start = object.start;
    let creation_only = match payload.initial_dunning_level {
        None => None,
        Some(level) => {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            hasher.update(&object.out[start..]);
            hasher.update(b"}");
            let at = object.out.len();
            object.key("initialDunningLevel");
            // Writing into a Vec cannot fail.
            let _ = write!(object.out, "{level}");
            Some((hasher.digest(), at))
        }
    };
    object.close();
    match creation_only {
        Some((fingerprint, at)) => (fingerprint, Some(at)),
        None => (xxhash_rust::xxh3::xxh3_64(&out[start..]), None),
    }
}

/// A JSON object being written: keys are `&'static str` names that need no escaping.
struct Object<'o> {
    out: &'o mut Vec<u8>,
    /// Where the object starts in `out`.
    start: usize,
    empty: bool,
}

impl<'o> Object<'o> {
    fn open(out: &'o mut Vec<u8>) -> Self {
        let start = out.len();
        out.push(b'{');
        Object {
            out,
            start,
            empty: true,
        }
    }

    fn key(&mut self, name: &'static str) {
        debug_assert!(is_plain(name), "{name}");
        if !std::mem::take(&mut self.empty) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, name: &'static str, value: &str) {
        self.key(name);
        write_str(self.out, value);
    }

    fn opt_str(&mut self, name: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(name, value);
        }
    }

    fn date(&mut self, name: &'static str, date: ApiDate) {
        self.key(name);
        match dates::api_date_bytes(date.0) {
            Some(bytes) => {
                self.out.push(b'"');
                self.out.extend_from_slice(&bytes);
                self.out.push(b'"');
            }
            None => write_str(self.out, &dates::format_api_date(date.0)),
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// Whether a string goes into JSON as it is: no `"`, `\` or control character (the only
/// characters serde_json escapes). No early exit, so the loop is vectorized.
fn is_plain(value: &str) -> bool {
    value.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    })
}

/// A JSON string: copied when plain, escaped by serde_json otherwise.
fn write_str(out: &mut Vec<u8>, value: &str) {
    if is_plain(value) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        // Serializing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

fn write_str_list(out: &mut Vec<u8>, values: &[&str]) {
    out.push(b'[');
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, value);
    }
    out.push(b']');
}

fn write_items(out: &mut Vec<u8>, items: &[Item<'_>]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut object = Object::open(out);
        object.opt_str("number", item.number);
        object.opt_str("name", item.name);
        object.close();
    }
    out.push(b']');
}

fn write_address(out: &mut Vec<u8>, address: &Address<'_>) {
    let mut object = Object::open(out);
    object.opt_str("gender", address.gender);
    object.opt_str("company", address.company);
    object.opt_str("firstName", address.first_name);
    object.opt_str("lastName", address.last_name);
    object.opt_str("street", address.street);
    object.opt_str("postCode", address.post_code);
    object.opt_str("city", address.city);
    object.str("countryCode", &address.country_code);
    object.opt_str("phone", address.phone);
    object.close();
}

fn order_type_name(order_type: OrderType) -> &'static str {
    match order_type {
        OrderType::Invoice => "INVOICE",
        OrderType::Prepayment => "PREPAYMENT",
        OrderType::Cod => "COD",
        OrderType::Other => "OTHER",
    }
}

/// An amount as a JSON number with exactly two decimals (`149.90`), never through `f64`.
pub(super) fn write_money(out: &mut Vec<u8>, money: Money) {
    // Integer formatting of the cents is much cheaper than Decimal's Display.
    let rounded = money.0.round_dp(2);
    let mut cents = rounded;
    cents.rescale(2);
    // Writing into a Vec cannot fail.
    let _ = if cents != rounded || cents.scale() != 2 {
        // Near the top of Decimal's range two more digits do not fit; Display still works.
        write!(out, "{rounded:.2}")
    } else {
        let mantissa = cents.mantissa();
        let sign = if mantissa < 0 { "-" } else { "" };
        let (units, fraction) = (mantissa.unsigned_abs() / 100, mantissa.unsigned_abs() % 100);
        write!(out, "{sign}{units}.{fraction:02}")
    };
}

/// A decimal as a JSON number without rounding (`exchangeRate`). Decimal's Display writes
/// `-?digits(.digits)?`, which is a JSON number.
fn write_plain_decimal(out: &mut Vec<u8>, value: PlainDecimal) {
    let _ = write!(out, "{}", value.0.normalize());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_are_exactly_those_serde_json_copies_unchanged() {
        for b in 0u8..=0x7f {
            let text = format!("a{}b", char::from(b));
            let escaped = serde_json::to_string(&text).unwrap();
            assert_eq!(
                is_plain(&text),
                escaped == format!("\"{text}\""),
                "byte {b:#x}"
            );
        }
        assert!(is_plain("Größe € \u{2028} \u{feff}"));
    }
}
