//! The refunded lines of AfterPay (Riverty) and Ratepay refunds.
//!
//! A source cell holds a JSON array of objects in the provider's own field names (AfterPay:
//! camelCase `productId`, `grossUnitPrice`, ...; Ratepay: snake_case `gross_unit_price`, ...).
//! Unknown fields are refused, so a typo is reported instead of silently dropped. Money is read
//! as decimals, never as floating point, and must have at most two decimal places.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::json::{JsonDecimal, decimal_places};

/// The most lines one AfterPay refund may carry (the vendor's pages say 200 and 500; the lower
/// one is used).
pub const AFTERPAY_MAX_ITEMS: usize = 200;

/// One refunded line of an AfterPay refund (`RefundOrderItem`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AfterPayItem {
    /// Merchant SKU (required, ≤ 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    /// Item group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Product name (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `PhysicalArticle`, `DigitalArticle`, `GiftCard`, `Discount`, `ShippingFee`, `Surcharge`,
    /// `Info`, `Subscription`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub item_type: Option<String>,
    /// Net price of one unit (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_unit_price: Option<JsonDecimal>,
    /// Gross price of one unit (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_unit_price: Option<JsonDecimal>,
    /// Number of units (required, > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<JsonDecimal>,
    /// Unit, e.g. pieces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_code: Option<String>,
    /// `HighCategory`, `LowCategory`, `NullCategory`, `NoCategory`, `MiddleCategory`,
    /// `OtherCategory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_category: Option<String>,
    /// Tax rate in percent (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_percent: Option<JsonDecimal>,
    /// Tax amount per unit (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_amount: Option<JsonDecimal>,
    /// `Refund` (goodwill) or `Return` (goods sent back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_type: Option<String>,
    /// Line number, as in the vendor's example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_number: Option<u32>,
    /// Product image URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// Google product category id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_product_category_id: Option<u64>,
    /// Google product category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_product_category: Option<String>,
}

/// One line of a Ratepay refund (`ItemDto`, also used for `special_items`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RatepayItem {
    /// SKU; may not be all whitespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub article_number: Option<String>,
    /// Category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Quantity (> 0; 1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<JsonDecimal>,
    /// Unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Tax rate in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_rate: Option<JsonDecimal>,
    /// Gross price of one unit (required; negative only for `RETURN_FEE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_unit_price: Option<JsonDecimal>,
    /// Gross discount per unit (≤ 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_unit_discount: Option<JsonDecimal>,
    /// (`gross_unit_price` + `gross_unit_discount`) × `quantity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_total_price: Option<JsonDecimal>,
    /// Net price of one unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_unit_price: Option<JsonDecimal>,
    /// Net discount per unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_unit_discount: Option<JsonDecimal>,
    /// Net total of the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_total_price: Option<JsonDecimal>,
    /// Line type, e.g. `RETURN_FEE` (refunds only, negative price).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub item_type: Option<String>,
}

/// One VAT amount of a Ratepay refund (`VatDto`; shape from the vendor's example).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RatepayVat {
    /// Net amount at this rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_amount: Option<JsonDecimal>,
    /// Tax amount at this rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_amount: Option<JsonDecimal>,
    /// The rate in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_rate: Option<JsonDecimal>,
}

const AFTERPAY_TYPES: [&str; 8] = [
    "PhysicalArticle",
    "DigitalArticle",
    "GiftCard",
    "Discount",
    "ShippingFee",
    "Surcharge",
    "Info",
    "Subscription",
];
const AFTERPAY_VAT_CATEGORIES: [&str; 6] = [
    "HighCategory",
    "LowCategory",
    "NullCategory",
    "NoCategory",
    "MiddleCategory",
    "OtherCategory",
];

/// Parses a JSON array cell; `column` names it in messages.
pub fn parse_list<T: for<'de> Deserialize<'de>>(
    column: &str,
    text: &str,
) -> Result<Vec<T>, String> {
    serde_json::from_str::<Vec<T>>(text).map_err(|error| {
        format!("{column} is not a JSON array of line objects ({error}); see README \"Refunds\"")
    })
}

/// Checks one money value: at most two decimal places.
fn money(problems: &mut Vec<String>, path: &str, value: Option<JsonDecimal>) -> Option<Decimal> {
    let value = value?.0;
    if decimal_places(value) > 2 {
        problems.push(format!("{path} {value} has more than two decimal places"));
    }
    Some(value)
}

fn required<T>(problems: &mut Vec<String>, path: &str, value: Option<T>) -> Option<T> {
    if value.is_none() {
        problems.push(format!("{path} is missing"));
    }
    value
}

fn text_limit(problems: &mut Vec<String>, path: &str, value: Option<&str>, max: usize) {
    if let Some(value) = value
        && value.chars().count() > max
    {
        problems.push(format!("{path} is longer than {max} characters"));
    }
}

fn one_of(problems: &mut Vec<String>, path: &str, value: Option<&str>, allowed: &[&str]) {
    if let Some(value) = value
        && !allowed.contains(&value)
    {
        problems.push(format!(
            "{path} {value:?} is not one of {}",
            allowed.join(", ")
        ));
    }
}

/// Checks AfterPay lines and returns their gross total (Σ `grossUnitPrice` × `quantity`).
pub fn check_afterpay(items: &[AfterPayItem], problems: &mut Vec<String>) -> Decimal {
    if items.is_empty() {
        problems.push("items must list at least one refunded line".into());
    }
    if items.len() > AFTERPAY_MAX_ITEMS {
        problems.push(format!("items has more than {AFTERPAY_MAX_ITEMS} lines"));
    }
    let mut total = Decimal::ZERO;
    for (i, item) in items.iter().enumerate() {
        let path = |field: &str| format!("items[{i}].{field}");
        let product = required(problems, &path("productId"), item.product_id.as_deref());
        if product.is_some_and(|p| p.trim().is_empty()) {
            problems.push(format!("{} is empty", path("productId")));
        }
        text_limit(problems, &path("productId"), product, 100);
        required(problems, &path("description"), item.description.as_deref());
        text_limit(problems, &path("unitCode"), item.unit_code.as_deref(), 50);
        text_limit(problems, &path("imageUrl"), item.image_url.as_deref(), 2048);
        one_of(
            problems,
            &path("type"),
            item.item_type.as_deref(),
            &AFTERPAY_TYPES,
        );
        one_of(
            problems,
            &path("vatCategory"),
            item.vat_category.as_deref(),
            &AFTERPAY_VAT_CATEGORIES,
        );
        one_of(
            problems,
            &path("refundType"),
            item.refund_type.as_deref(),
            &["Refund", "Return"],
        );
        let net = required(problems, &path("netUnitPrice"), item.net_unit_price);
        let net = money(problems, &path("netUnitPrice"), net);
        let gross = required(problems, &path("grossUnitPrice"), item.gross_unit_price);
        let gross = money(problems, &path("grossUnitPrice"), gross);
        let vat = required(problems, &path("vatAmount"), item.vat_amount);
        let vat = money(problems, &path("vatAmount"), vat);
        required(problems, &path("vatPercent"), item.vat_percent);
        let quantity = required(problems, &path("quantity"), item.quantity).map(|q| q.0);
        if quantity.is_some_and(|q| q <= Decimal::ZERO) {
            problems.push(format!("{} must be greater than zero", path("quantity")));
        }
        if let (Some(net), Some(gross), Some(vat)) = (net, gross, vat)
            && gross.saturating_sub(net).saturating_sub(vat).abs() > Decimal::new(1, 2)
        {
            problems.push(format!(
                "items[{i}]: grossUnitPrice {gross} is not netUnitPrice {net} + vatAmount {vat}"
            ));
        }
        if let (Some(gross), Some(quantity)) = (gross, quantity) {
            total = total.saturating_add(gross.saturating_mul(quantity));
        }
    }
    total.round_dp(2)
}

/// Checks Ratepay lines (`items` or `special_items`) and returns their gross total.
pub fn check_ratepay(column: &str, items: &[RatepayItem], problems: &mut Vec<String>) -> Decimal {
    let mut total = Decimal::ZERO;
    for (i, item) in items.iter().enumerate() {
        let path = |field: &str| format!("{column}[{i}].{field}");
        if item
            .article_number
            .as_deref()
            .is_some_and(|a| a.trim().is_empty())
        {
            problems.push(format!("{} must not be blank", path("article_number")));
        }
        let price = required(problems, &path("gross_unit_price"), item.gross_unit_price);
        let price = money(problems, &path("gross_unit_price"), price);
        let discount = money(
            problems,
            &path("gross_unit_discount"),
            item.gross_unit_discount,
        )
        .unwrap_or_default();
        if discount > Decimal::ZERO {
            problems.push(format!(
                "{} must be negative (or 0)",
                path("gross_unit_discount")
            ));
        }
        for (name, value) in [
            ("net_unit_price", item.net_unit_price),
            ("net_unit_discount", item.net_unit_discount),
            ("net_total_price", item.net_total_price),
        ] {
            money(problems, &path(name), value);
        }
        let is_return_fee = item.item_type.as_deref() == Some("RETURN_FEE");
        if is_return_fee && price.is_some_and(|p| p >= Decimal::ZERO) {
            problems.push(format!(
                "{} of a RETURN_FEE line must be negative",
                path("gross_unit_price")
            ));
        }
        let quantity = item.quantity.map_or(Decimal::ONE, |q| q.0);
        if quantity <= Decimal::ZERO {
            problems.push(format!("{} must be greater than zero", path("quantity")));
        }
        let Some(price) = price else { continue };
        let computed = price
            .saturating_add(discount)
            .saturating_mul(quantity)
            .round_dp(2);
        let line = match money(problems, &path("gross_total_price"), item.gross_total_price) {
            Some(given) if given != computed => {
                problems.push(format!(
                    "{} {given} is not (gross_unit_price + gross_unit_discount) × quantity = {computed}",
                    path("gross_total_price")
                ));
                given
            }
            Some(given) => given,
            None => computed,
        };
        total = total.saturating_add(line);
    }
    total
}

/// Checks Ratepay VAT lines: all three amounts given, at most two decimals.
pub fn check_vats(vats: &[RatepayVat], problems: &mut Vec<String>) {
    for (i, vat) in vats.iter().enumerate() {
        let path = |field: &str| format!("vats[{i}].{field}");
        let net = required(problems, &path("net_amount"), vat.net_amount);
        money(problems, &path("net_amount"), net);
        let tax = required(problems, &path("tax_amount"), vat.tax_amount);
        money(problems, &path("tax_amount"), tax);
        required(problems, &path("tax_rate"), vat.tax_rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VENDOR_AFTERPAY: &str = r#"[{"productId":"0001","groupId":"0011","description":"Item 1 description",
        "netUnitPrice":10.00,"grossUnitPrice":12.00,"quantity":5.0,"vatCategory":"MiddleCategory",
        "vatPercent":20.00,"vatAmount":2.00,"lineNumber":1}]"#;

    #[test]
    fn the_vendor_example_line_is_valid_and_totals_sixty() {
        let items: Vec<AfterPayItem> = parse_list("items", VENDOR_AFTERPAY).unwrap();
        let mut problems = Vec::new();
        assert_eq!(check_afterpay(&items, &mut problems), Decimal::from(60));
        assert!(problems.is_empty(), "{problems:?}");
        let json = serde_json::to_string(&items).unwrap();
        assert!(
            json.contains(r#""grossUnitPrice":12,"quantity":5"#),
            "{json}"
        );
    }

    #[test]
    fn afterpay_lines_report_every_problem() {
        let items: Vec<AfterPayItem> = parse_list(
            "items",
            r#"[{"description":"x","netUnitPrice":"1,005","grossUnitPrice":2,"quantity":0,
                "vatPercent":19,"vatAmount":0.5,"type":"Shoe"}]"#,
        )
        .unwrap();
        let mut problems = Vec::new();
        check_afterpay(&items, &mut problems);
        let text = problems.join("; ");
        for expected in [
            "items[0].productId is missing",
            "items[0].netUnitPrice 1.005 has more than two decimal places",
            "items[0].quantity must be greater than zero",
            "items[0].type \"Shoe\" is not one of",
            "grossUnitPrice 2 is not netUnitPrice",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        let typo = parse_list::<AfterPayItem>("items", r#"[{"productID":"1"}]"#).unwrap_err();
        assert!(typo.contains("unknown field"), "{typo}");
    }

    #[test]
    fn extreme_values_are_reported_not_panicked_on() {
        let max = "79228162514264337593543950335";
        let lines = format!(
            r#"[{{"productId":"x","description":"y","netUnitPrice":-{max},"grossUnitPrice":{max},"quantity":{max},"vatPercent":0,"vatAmount":{max}}}]"#
        );
        let items: Vec<AfterPayItem> = parse_list("items", &lines).unwrap();
        let mut problems = Vec::new();
        check_afterpay(&items, &mut problems);
        let lines = format!(
            r#"[{{"gross_unit_price":{max},"gross_unit_discount":{max},"quantity":{max}}}]"#
        );
        let items: Vec<RatepayItem> = parse_list("items", &lines).unwrap();
        check_ratepay("items", &items, &mut problems);
        assert!(!problems.is_empty());
    }

    #[test]
    fn ratepay_lines_follow_the_vendor_example() {
        let items: Vec<RatepayItem> = parse_list(
            "items",
            r#"[{"article_number":"kitchen-utils-1","gross_total_price":33.8,"gross_unit_discount":-1.55,
                 "gross_unit_price":18.45,"quantity":2,"tax_rate":19,"unit":"piece"}]"#,
        )
        .unwrap();
        let special: Vec<RatepayItem> = parse_list(
            "special_items",
            r#"[{"gross_unit_price":-5.00,"type":"RETURN_FEE"}]"#,
        )
        .unwrap();
        let mut problems = Vec::new();
        let total = check_ratepay("items", &items, &mut problems)
            + check_ratepay("special_items", &special, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(total, Decimal::new(288, 1));

        let bad: Vec<RatepayItem> = parse_list(
            "items",
            r#"[{"gross_unit_price":5,"type":"RETURN_FEE","gross_unit_discount":1,"gross_total_price":7}]"#,
        )
        .unwrap();
        let mut problems = Vec::new();
        check_ratepay("items", &bad, &mut problems);
        let text = problems.join("; ");
        assert!(text.contains("RETURN_FEE line must be negative"), "{text}");
        assert!(
            text.contains("gross_unit_discount must be negative"),
            "{text}"
        );
        assert!(text.contains("gross_total_price 7 is not"), "{text}");
    }
}
