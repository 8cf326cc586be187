//! The two fields of an order the client reads back from the API: `number` and
//! `paymentStatus`.
//!
//! Both `POST /orders` and `GET /orders` answer with every field of every order (about 400
//! bytes each), and the client needs two of them. serde_json would tokenise all the others
//! only to throw them away (about a sixth of a first run's CPU), so [`order_status`] walks the
//! object's top level itself and jumps over the values it does not read: strings with
//! `memchr`, nested objects and lists by bracket depth. It checks the grammar of what it walks
//! (keys, colons, commas, strings, brackets); scalars it skips are only checked for their
//! first character, since the client never looks at them.
//!
//! Whenever it is not sure (an escape in a key or in a value it reads, a repeated key, a value
//! of an unexpected type, no `number`, anything malformed) it hands the object to serde_json,
//! whose answer — or error — is then the answer. So both agree on every object serde_json
//! accepts, and a unit test checks that on random objects.

use serde::Deserialize;

/// What the API reports for one order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrderStatus {
    /// The order number.
    pub number: String,
    /// The current payment status (`UNPAID`, `PAID`, ... or a value newer than this client);
    /// absent in a malformed reply.
    #[serde(rename = "paymentStatus", default)]
    pub payment_status: Option<String>,
}

/// Reads `number` and `paymentStatus` from one complete JSON object.
#[cfg(test)]
pub fn order_status(object: &[u8]) -> Result<OrderStatus, String> {
    match read_object(object) {
        Object::Read(status, len) if len == object.len() => Ok(status),
        _ => serde_json::from_slice(object).map_err(|e| e.to_string()),
    }
}

/// What [`read_object`] found at the start of its bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Object {
    /// An order's status, and how many bytes its object took.
    Read(OrderStatus, usize),
    /// The bytes end before the object does.
    Incomplete,
    /// The object is not an order (serde_json's message).
    Invalid(String),
}

/// Reads the JSON object that `bytes` start with (more may follow it).
pub fn read_object(bytes: &[u8]) -> Object {
    if let Some(found) = quick_status(bytes) {
        return Object::Read(found.0, found.1);
    }
    // Find where the object ends, so that serde_json reads just it.
    let mut walk = Walk { bytes, at: 0 };
    if walk.skip_value().is_none() {
        // Counting brackets cannot fail on an object except by running out of bytes.
        return if bytes.first() == Some(&b'{') {
            Object::Incomplete
        } else {
            Object::Invalid("an order is not a JSON object".into())
        };
    }
    match serde_json::from_slice(&bytes[..walk.at]) {
        Ok(status) => Object::Read(status, walk.at),
        Err(error) => Object::Invalid(error.to_string()),
    }
}

/// The fast path: the status and the object's length, or `None` for "ask serde_json".
fn quick_status(bytes: &[u8]) -> Option<(OrderStatus, usize)> {
    let mut walk = Walk { bytes, at: 0 };
    walk.expect(b'{')?;
    let mut number: Option<&str> = None;
    let mut status: Option<Option<&str>> = None;
    loop {
        walk.whitespace();
        let key = walk.plain_string()?;
        walk.whitespace();
        walk.expect(b':')?;
        walk.whitespace();
        match key {
            b"number" if number.is_none() => number = Some(walk.plain_text()?),
            b"paymentStatus" if status.is_none() => {
                status = Some(if walk.bytes[walk.at..].starts_with(b"null") {
                    walk.at += 4;
                    None
                } else {
                    Some(walk.plain_text()?)
                });
            }
            b"number" | b"paymentStatus" => return None, // repeated: serde_json says so
            _ => walk.skip_value()?,
        }
        walk.whitespace();
        match walk.next()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    let status = OrderStatus {
        number: number?.to_owned(),
        payment_status: status.flatten().map(str::to_owned),
    };
    Some((status, walk.at))
}

/// Where the next `"` or `\\` is. Most strings in an order are a few bytes long, too short
/// for `memchr`'s set-up to pay off, so this looks at eight bytes at a time with plain integer
/// arithmetic: a byte equal to the one sought becomes zero after an XOR, and
/// `(x - 0x01..) & !x & 0x80..` flags zero bytes. Flags can be wrong only above a true zero
/// byte, so the lowest flag is always right.
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let chunks = bytes.chunks_exact(8);
    let tail = bytes.len() - chunks.remainder().len();
    for (n, chunk) in chunks.enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let hits = zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')));
        if hits != 0 {
            return Some(n * 8 + (hits.trailing_zeros() / 8) as usize);
        }
    }
    bytes[tail..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|at| tail + at)
}

/// A cursor over one object's bytes. Every method returns `None` where the bytes are not what
/// it expects, including at the end of the input, so no index ever goes out of range.
struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Walk<'a> {
    fn next(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// A string without escapes: its raw bytes, between the quotes. (A control character in
    /// a key would make the JSON invalid; for keys the client does not read, it is let pass.)
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let rest = self.bytes.get(self.at..)?;
        let end = quote_or_backslash(rest)?;
        if rest[end] != b'"' {
            return None;
        }
        self.at += end + 1;
        Some(&rest[..end])
    }

    /// A string value the client reads, as text: valid UTF-8 without control characters.
    fn plain_text(&mut self) -> Option<&'a str> {
        let text = self.plain_string()?;
        if text.iter().any(|&b| b < 0x20) {
            return None;
        }
        std::str::from_utf8(text).ok()
    }

    /// Jumps over a string whose opening quote was just read.
    fn skip_string_rest(&mut self) -> Option<()> {
        loop {
            let rest = self.bytes.get(self.at..)?;
            let found = quote_or_backslash(rest)?;
            if rest[found] == b'"' {
                self.at += found + 1;
                return Some(());
            }
            self.at += found + 2; // the backslash and the byte it escapes
        }
    }

    /// Jumps over any value: a string, an object or list (by bracket depth, minding strings),
    /// or a scalar (up to the next delimiter).
    fn skip_value(&mut self) -> Option<()> {
        match *self.bytes.get(self.at)? {
            b'"' => {
                self.at += 1;
                self.skip_string_rest()
            }
            b'{' | b'[' => {
                // Depth alone: in JSON that serde_json accepts the brackets match, and where
                // they do not, serde_json is asked anyway.
                let mut depth = 0u32;
                loop {
                    match self.next()? {
                        b'"' => self.skip_string_rest()?,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                }
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                let rest = self.bytes.get(self.at..)?;
                let len = rest
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                    .unwrap_or(rest.len());
                self.at += len;
                Some(())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use serde_json::{Value, json};

    #[test]
    fn the_next_quote_or_backslash_is_found_at_any_position() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.random_range(0..20) {
                    0 => b'"',
                    1 => b'\\',
                    2 => b'"' ^ 0x80,
                    3 => b'"' + 1,
                    _ => rng.random(),
                })
                .collect();
            let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\');
            assert_eq!(quote_or_backslash(&bytes), expected, "{bytes:?}");
        }
    }

    fn serde(object: &[u8]) -> Result<OrderStatus, String> {
        serde_json::from_slice(object).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_the_two_fields_and_skips_the_rest() {
        let object = br#"{ "amount": 12.50, "billing": {"city": "K\u00f6ln", "x": [1, {"y": "}"}]},
            "number" : "A-1", "items": ["a\"]", "b"], "ok": true, "none": null,
            "paymentStatus": "PAID" }"#;
        let (status, len) = quick_status(object).expect("fast path");
        assert_eq!(len, object.len());
        assert_eq!(status.number, "A-1");
        assert_eq!(status.payment_status.as_deref(), Some("PAID"));
        assert_eq!(Ok(status), serde(object));
    }

    #[test]
    fn unsure_cases_are_left_to_serde_json_and_give_its_answer() {
        let cases: &[&[u8]] = &[
            br#"{"number":"A\"1","paymentStatus":"PAID"}"#, // escape in a value it reads
            br#"{"numb\u0065r":"A1"}"#,                     // escape in a key
            br#"{"number":"A1","number":"A2"}"#,            // repeated key
            br#"{"number":7}"#,                             // a number where text belongs
            br#"{"paymentStatus":"PAID"}"#,                 // no number
            br#"{"number":"A1","paymentStatus":null}"#,     // null status (fast path, too)
            br#"{"number":"A1","paymentStatus":3}"#,
            br#"{"number":"A1",}"#,
            br#"{"number":"A1"} x"#,
            br#"{}"#,
            br#"["number","A1"]"#,
            b"{\"number\":\"A\x011\"}",
            b"{\"number\":\"A\xff1\"}",
        ];
        for case in cases {
            assert_eq!(
                order_status(case),
                serde(case),
                "{}",
                String::from_utf8_lossy(case)
            );
        }
    }

    /// Text of up to five pieces; the first eight pieces need no escape in JSON.
    fn random_text(rng: &mut impl Rng) -> String {
        const PIECES: [&str; 12] = [
            "a", "Z", "0", " ", "/", "ü", "€", "}]{[,:", "\"", "\\", "\u{1}", "\n",
        ];
        (0..rng.random_range(0..6))
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect()
    }

    /// Like [`random_text`], but nine times in ten without anything JSON escapes.
    fn mostly_plain_text(rng: &mut impl Rng) -> String {
        if rng.random_range(0..10) == 0 {
            return random_text(rng);
        }
        (0..rng.random_range(0..6))
            .map(|_| ["a", "Z", "0", " ", "/", "ü", "€", "}]{[,:"][rng.random_range(0..8)])
            .collect()
    }

    fn random_value(rng: &mut impl Rng, depth: u32) -> Value {
        match rng.random_range(0..if depth > 2 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.random()),
            2 => json!(rng.random_range(-1000i64..1000) as f64 / 8.0),
            3 => json!(rng.random::<i64>()),
            4 => Value::String(random_text(rng)),
            5 => Value::Array(
                (0..rng.random_range(0..4))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.random_range(0..4))
                    .map(|_| (random_text(rng), random_value(rng, depth + 1)))
                    .collect(),
            ),
        }
    }

    fn random_order(rng: &mut impl Rng) -> Value {
        let mut fields = serde_json::Map::new();
        for _ in 0..rng.random_range(0..8) {
            fields.insert(mostly_plain_text(rng), random_value(rng, 0));
        }
        if rng.random_range(0..10) > 0 {
            let number = if rng.random_range(0..10) > 0 {
                Value::String(mostly_plain_text(rng))
            } else {
                random_value(rng, 0)
            };
            fields.insert("number".into(), number);
        }
        match rng.random_range(0..4) {
            0 => {}
            1 => {
                fields.insert("paymentStatus".into(), random_value(rng, 0));
            }
            _ => {
                fields.insert("paymentStatus".into(), json!("PAID_PARTIAL"));
            }
        }
        Value::Object(fields)
    }

    /// On every object serde_json reads, the fast path gives the same answer; on bytes that
    /// are not JSON at all, nothing panics.
    #[test]
    fn agrees_with_serde_json_on_random_objects_and_survives_random_bytes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(23);
        let mut fast = 0;
        for round in 0..20_000 {
            let order = random_order(&mut rng);
            let mut bytes = if round % 2 == 0 {
                serde_json::to_vec(&order)
            } else {
                serde_json::to_vec_pretty(&order)
            }
            .expect("a Value serialises");
            if quick_status(&bytes).is_some() {
                fast += 1;
            }
            assert_eq!(
                order_status(&bytes),
                serde(&bytes),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            // Damage it: whatever the fast path then says, serde_json must not disagree with
            // an answer it can give itself.
            for _ in 0..rng.random_range(1..4) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => {
                        const BYTES: &[u8] = b"{}[]\",:\\ 0an";
                        bytes[at] = BYTES[rng.random_range(0..BYTES.len())];
                    }
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            if let Ok(expected) = serde(&bytes) {
                assert_eq!(
                    order_status(&bytes),
                    Ok(expected),
                    "{}",
                    String::from_utf8_lossy(&bytes)
                );
            } else {
                let _ = order_status(&bytes);
            }
        }
        // The comparison means something only if most objects took the fast path.
        assert!(fast > 10_000, "only {fast} of 20000 took the fast path");
    }
}
