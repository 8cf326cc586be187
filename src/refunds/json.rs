//! Money in JSON without floating point: decimals are read from the number's text and written
//! as number text, never through `f64`.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{Deserializer, Error as _};
use serde::ser::{Error as _, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A decimal that is read from a JSON number (or a string holding one, decimal comma allowed)
/// and written as a JSON number with the digits it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct JsonDecimal(pub Decimal);

/// Parses the text of a JSON value as a decimal: a number (`12.5`, `1e2`) or a string
/// (`"12,50"`, `"12.50"`).
pub fn decimal_from_json(raw: &str) -> Option<Decimal> {
    let raw = raw.trim();
    if raw.starts_with('"') {
        let text: String = serde_json::from_str(raw).ok()?;
        return crate::order::parse_decimal(text.trim()).ok();
    }
    if !raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    if raw.contains(['e', 'E']) {
        Decimal::from_scientific(raw).ok()
    } else {
        Decimal::from_str(raw).ok()
    }
}

/// The JSON number text of a decimal, without trailing zeros (`12.50` → `12.5`, `5.0` → `5`).
pub fn number_text(value: Decimal) -> String {
    value.normalize().to_string()
}

/// The JSON number text of an amount with exactly two decimals (`22.38`, `5.00`), rounded
/// commercially (half away from zero) should a value ever have more.
pub fn amount_text(value: Decimal) -> String {
    let rounded =
        value.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    format!("{rounded:.2}")
}

impl<'de> Deserialize<'de> for JsonDecimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <Box<RawValue>>::deserialize(deserializer)?;
        decimal_from_json(raw.get())
            .map(JsonDecimal)
            .ok_or_else(|| D::Error::custom(format!("{} is not a decimal number", raw.get())))
    }
}

impl Serialize for JsonDecimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(number_text(self.0)).map_err(S::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// An amount written with exactly two decimals, as Komfortkasse documents (`0.00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount2(pub Decimal);

impl Serialize for Amount2 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(amount_text(self.0)).map_err(S::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// How many decimal places a value really has (`12.50` has one).
pub fn decimal_places(value: Decimal) -> u32 {
    value.normalize().scale()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Line {
        price: JsonDecimal,
    }

    #[test]
    fn decimals_round_trip_without_floating_point() {
        let line: Line = serde_json::from_str(r#"{"price": 0.1}"#).unwrap();
        assert_eq!(line.price.0, Decimal::new(1, 1));
        let line: Line = serde_json::from_str(r#"{"price": "12,50"}"#).unwrap();
        assert_eq!(serde_json::to_string(&line).unwrap(), r#"{"price":12.5}"#);
        let line: Line = serde_json::from_str(r#"{"price": 1e2}"#).unwrap();
        assert_eq!(line.price.0, Decimal::from(100));
        assert!(serde_json::from_str::<Line>(r#"{"price": true}"#).is_err());
        assert!(serde_json::from_str::<Line>(r#"{"price": "abc"}"#).is_err());
    }

    #[test]
    fn amounts_have_two_decimals() {
        assert_eq!(
            serde_json::to_string(&Amount2(Decimal::new(5, 0))).unwrap(),
            "5.00"
        );
        assert_eq!(amount_text(Decimal::new(22_385, 3)), "22.39");
        assert_eq!(decimal_places(Decimal::new(1250, 2)), 1);
    }
}
