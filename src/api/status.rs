//! The two fields of an order the client reads back from the API: `number` and
//! `paymentStatus`.
//!
//! Both `POST /orders` and `GET /orders` answer with every field of every order (about 900
//! bytes each), and the client needs two of them. serde_json would tokenise all the others
//! only to throw them away (about a sixth of a first run's CPU), so [`read_object`] walks the
//! object's top level itself and jumps over the values it does not read. At the top level it
//! checks the whole grammar: keys, colons, commas, strings, and scalars exactly (`true`,
//! `false`, `null`, the number syntax). Nested objects and lists are jumped over by matching
//! brackets (their kind included) and strings; what is between their brackets is not checked,
//! since the client never looks at it, and it cannot move where a nested value ends.
//!
//! Whenever it is not sure (an escape in a key or in a value it reads, a repeated key, a value
//! of an unexpected type, no `number`, anything malformed) it hands the object to serde_json,
//! whose answer — or error — is then the answer. So both agree on every object serde_json
//! accepts, and a unit test checks that on random objects. And whether the object arrived in
//! one block or in pieces changes nothing: a walk that runs out of bytes says so
//! ([`Object::Incomplete`]) and is done again from the start once more bytes are there.

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
    let mut walk = Walk::new(bytes);
    if let Some(found) = walk.status() {
        return Object::Read(found, walk.at);
    }
    if walk.ran_out {
        return Object::Incomplete;
    }
    // Find where the object ends, so that serde_json reads just it.
    let mut walk = Walk::new(bytes);
    let end = match walk.skip_value() {
        Some(()) => walk.at,
        None if walk.ran_out => return Object::Incomplete,
        // Brackets that do not match: serde_json reads up to there, and says so.
        None => walk.at.min(bytes.len()),
    };
    match serde_json::from_slice(&bytes[..end]) {
        Ok(status) => Object::Read(status, end),
        Err(error) => Object::Invalid(error.to_string()),
    }
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
/// it expects, and sets `ran_out` when that is because they ended: no index ever goes out of
/// range, and a cut-off object is told apart from a malformed one.
struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
    ran_out: bool,
}

impl<'a> Walk<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Walk {
            bytes,
            at: 0,
            ran_out: false,
        }
    }

    /// The fast path: the status of the object, or `None` for "ask serde_json".
    fn status(&mut self) -> Option<OrderStatus> {
        self.expect(b'{')?;
        let mut number: Option<&str> = None;
        let mut status: Option<Option<&str>> = None;
        loop {
            self.whitespace();
            let key = self.plain_string()?;
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            match key {
                b"number" if number.is_none() => number = Some(self.plain_text()?),
                b"paymentStatus" if status.is_none() => {
                    status = Some(if self.peek()? == b'n' {
                        self.literal(b"null")?;
                        None
                    } else {
                        Some(self.plain_text()?)
                    });
                }
                b"number" | b"paymentStatus" => return None, // repeated: serde_json says so
                _ => self.skip_value()?,
            }
            self.whitespace();
            match self.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        Some(OrderStatus {
            number: number?.to_owned(),
            payment_status: status.flatten().map(str::to_owned),
        })
    }

    fn peek(&mut self) -> Option<u8> {
        let byte = self.bytes.get(self.at).copied();
        self.ran_out |= byte.is_none();
        byte
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
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

    /// How far the next `"` or `\\` is.
    fn quote_or_backslash(&mut self) -> Option<usize> {
        let found = quote_or_backslash(self.bytes.get(self.at..).unwrap_or_default());
        self.ran_out |= found.is_none();
        found
    }

    /// A string without escapes: its raw bytes, between the quotes. (A control character in
    /// a key would make the JSON invalid; for keys the client does not read, it is let pass.)
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let end = self.quote_or_backslash()?;
        let text = &self.bytes[self.at..self.at + end];
        if self.bytes[self.at + end] != b'"' {
            return None;
        }
        self.at += end + 1;
        Some(text)
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
            let found = self.quote_or_backslash()?;
            let quote = self.bytes[self.at + found] == b'"';
            // Past a closing quote, or past a backslash and the byte it escapes.
            self.at += found + if quote { 1 } else { 2 };
            if quote {
                return Some(());
            }
        }
    }

    /// `true`, `false` or `null`.
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        if rest.starts_with(word) {
            self.at += word.len();
            Some(())
        } else {
            // A literal cut by the end of the bytes may be completed by the next block.
            self.ran_out |= word.starts_with(rest);
            None
        }
    }

    /// One or more digits.
    fn digits(&mut self) -> Option<()> {
        if !self.peek()?.is_ascii_digit() {
            return None;
        }
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        Some(())
    }

    /// A JSON number: `-? (0 | [1-9][0-9]*) (\.[0-9]+)? ([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            self.digits()?;
        }
        // A number that reaches the end of the bytes may go on in the next block.
        self.peek().map(|_| ())
    }

    /// Jumps over any value: a string, a scalar, or an object or list (by matching brackets
    /// and strings; what lies between them is not checked).
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.at += 1;
                self.skip_string_rest()
            }
            b'{' | b'[' => self.skip_nested(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// Jumps over an object or list, checking that each closing bracket matches its opening
    /// one: a stack of one bit per level (set for `[`), in a register for the first 128 levels
    /// and on the heap beyond (serde_json skips any depth).
    fn skip_nested(&mut self) -> Option<()> {
        let (mut kinds, mut depth) = (0u128, 0u32);
        let mut deeper: Vec<u128> = Vec::new();
        loop {
            match self.next()? {
                b'"' => self.skip_string_rest()?,
                open @ (b'{' | b'[') => {
                    if depth > 0 && depth % 128 == 0 {
                        deeper.push(kinds);
                        kinds = 0;
                    }
                    kinds = (kinds << 1) | u128::from(open == b'[');
                    depth += 1;
                }
                close @ (b'}' | b']') => {
                    if (kinds & 1 == 1) != (close == b']') {
                        return None;
                    }
                    kinds >>= 1;
                    depth -= 1;
                    if depth == 0 {
                        return Some(());
                    }
                    if depth % 128 == 0 {
                        kinds = deeper.pop().unwrap_or_default();
                    }
                }
                _ => {}
            }
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
        let mut walk = Walk::new(object);
        let status = walk.status().expect("fast path");
        assert_eq!(walk.at, object.len());
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
    /// Found by review: malformed objects the first version read without asking serde_json.
    #[test]
    fn malformed_scalars_and_mismatched_brackets_are_not_read() {
        for case in [
            &br#"{"number":"A1","x":null"paymentStatus":"PAID"}"#[..],
            br#"{"x":0"number":"A","number":"B"}"#,
            br#"{"number":"A","x":1","y":"}"}"#,
            br#"{"number":"A","x":tru}"#,
            br#"{"number":"A","x":01}"#,
            br#"{"number":"A","x":1.}"#,
            br#"{"number":"A","x":-}"#,
            br#"{"number":"A","x":[}}"#,
            br#"{"number":"A","a":{"q":1]}"#,
            br#"{"items":[{"q":1}},"number":"B","paymentStatus":"PAID"}],"number":"A"}"#,
        ] {
            let text = String::from_utf8_lossy(case);
            assert!(serde(case).is_err(), "{text}");
            assert!(
                !matches!(read_object(case), Object::Read(..)),
                "{text}: {:?}",
                read_object(case)
            );
        }
        // Any depth is skipped, as serde_json skips it, and a mismatch deep down is found.
        let deep = format!(
            r#"{{"number":"A","x":{}{}1{}{}}}"#,
            "[".repeat(150),
            r#"{"a":"#.repeat(150),
            "}".repeat(150),
            "]".repeat(150)
        );
        assert_eq!(order_status(deep.as_bytes()), serde(deep.as_bytes()));
        assert!(matches!(read_object(deep.as_bytes()), Object::Read(..)));
        let wrong = deep.replacen('}', "]", 1);
        assert!(serde(wrong.as_bytes()).is_err());
        assert!(!matches!(read_object(wrong.as_bytes()), Object::Read(..)));
    }

    /// Every prefix of an object is incomplete, never read and never invalid.
    #[test]
    fn every_cut_of_an_object_is_incomplete() {
        let object = br#"{"number":"A-1","amount":-12.5e+2,"ok":true,"no":false,"n":null,"s":"a\"b\u00fc","items":[{"x":[1,{}]}],"paymentStatus":"PAID"}"#;
        assert!(matches!(read_object(object), Object::Read(..)));
        for cut in 0..object.len() {
            assert_eq!(
                read_object(&object[..cut]),
                Object::Incomplete,
                "{}",
                String::from_utf8_lossy(&object[..cut])
            );
        }
    }

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
            if Walk::new(&bytes).status().is_some() {
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
