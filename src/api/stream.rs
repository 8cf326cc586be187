//! Reading a large `GET /orders` reply as a stream: one order at a time, memory bounded by
//! the largest single order, whatever the number of orders.

use std::io::Read;

use serde::Deserialize;

/// The part of an order a status read-back needs; every other field is skipped unparsed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrderStatus {
    /// The order number.
    pub number: String,
    /// The current payment status (absent in a malformed reply).
    #[serde(rename = "paymentStatus", default)]
    pub payment_status: Option<String>,
}

/// Reading the stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError<E> {
    /// The connection failed while the body was read (worth a retry).
    #[error("the reply was cut off: {0}")]
    Io(std::io::Error),
    /// The body is not a JSON array of orders.
    #[error("the reply is not a list of orders: {0}")]
    Syntax(String),
    /// The consumer refused an order.
    #[error(transparent)]
    Consumer(E),
}

/// Calls `each` for every order of the JSON array read from `reader`, in order; returns how
/// many there were.
///
/// The bytes are read in blocks; a small scanner finds where each element of the top-level
/// array ends (tracking strings, escapes and nesting), and serde_json parses that element from
/// memory. That is several times faster than serde_json's byte-by-byte reader on a
/// 400-byte-per-order reply, and memory stays bounded by the largest single order.
pub fn for_each_order_status<R: Read, E>(
    mut reader: R,
    mut each: impl FnMut(OrderStatus) -> Result<(), E>,
) -> Result<u64, StreamError<E>> {
    let mut scanner = Scanner::default();
    let mut block = vec![0u8; 64 * 1024];
    let mut count = 0u64;
    loop {
        let read = match reader.read(&mut block) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(StreamError::Io(error)),
        };
        scanner
            .feed(&block[..read], |element| {
                let order: OrderStatus = serde_json::from_slice(element)
                    .map_err(|e| StreamError::Syntax(e.to_string()))?;
                count += 1;
                each(order).map_err(StreamError::Consumer)
            })
            .map_err(|error| match error {
                ScanError::Syntax(message) => StreamError::Syntax(message),
                ScanError::Element(error) => error,
            })?;
    }
    match scanner.state {
        State::Done | State::Trailing => Ok(count),
        State::Start => Err(StreamError::Syntax("empty reply".into())),
        _ => Err(StreamError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the list of orders ends early",
        ))),
    }
}

/// Where the scanner is in `[ {..}, {..} ]`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    #[default]
    Start,
    /// After `[` or `,`: an element (or `]` after `[`) comes next.
    BeforeElement,
    /// Inside an element.
    InElement,
    /// After an element: `,` or `]` comes next.
    AfterElement,
    /// After the closing `]`.
    Done,
    /// Only whitespace may follow.
    Trailing,
}

#[derive(Default)]
struct Scanner {
    state: State,
    /// The element read so far (it may span blocks).
    element: Vec<u8>,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// `[` was just read: `]` may close an empty array.
    empty_allowed: bool,
}

enum ScanError<E> {
    Syntax(String),
    Element(E),
}

impl Scanner {
    fn feed<E>(
        &mut self,
        bytes: &[u8],
        mut element: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), ScanError<E>> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                State::Start => match b {
                    b'[' => {
                        self.state = State::BeforeElement;
                        self.empty_allowed = true;
                    }
                    b if b.is_ascii_whitespace() => {}
                    _ => return Err(ScanError::Syntax("the reply is not a JSON array".into())),
                },
                State::BeforeElement => match b {
                    b if b.is_ascii_whitespace() => {}
                    b']' if self.empty_allowed => self.state = State::Done,
                    b'{' => {
                        self.state = State::InElement;
                        self.depth = 0;
                        self.in_string = false;
                        self.escaped = false;
                        self.element.clear();
                        // Re-read this byte as part of the element.
                        continue;
                    }
                    _ => return Err(ScanError::Syntax("an order is not a JSON object".into())),
                },
                State::InElement => {
                    // Copy the run of bytes up to the next byte that matters, then handle it.
                    let start = i;
                    let mut end = None;
                    while i < bytes.len() {
                        if self.in_string && !self.escaped {
                            // Most of an order's bytes are inside strings: jump to the next
                            // quote or backslash.
                            match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                                Some(offset) => i += offset,
                                None => {
                                    i = bytes.len();
                                    break;
                                }
                            }
                        }
                        let c = bytes[i];
                        if self.in_string {
                            if self.escaped {
                                self.escaped = false;
                            } else if c == b'\\' {
                                self.escaped = true;
                            } else if c == b'"' {
                                self.in_string = false;
                            }
                        } else {
                            match c {
                                b'"' => self.in_string = true,
                                b'{' | b'[' => self.depth += 1,
                                b'}' | b']' => {
                                    self.depth = self.depth.saturating_sub(1);
                                    if self.depth == 0 {
                                        end = Some(i);
                                        break;
                                    }
                                }
                                _ => {}
                            }
                        }
                        i += 1;
                    }
                    match end {
                        Some(end) => {
                            self.element.extend_from_slice(&bytes[start..=end]);
                            element(&self.element).map_err(ScanError::Element)?;
                            self.element.clear();
                            self.state = State::AfterElement;
                            i = end + 1;
                        }
                        None => self.element.extend_from_slice(&bytes[start..]),
                    }
                    continue;
                }
                State::AfterElement => match b {
                    b if b.is_ascii_whitespace() => {}
                    b',' => {
                        self.state = State::BeforeElement;
                        self.empty_allowed = false;
                    }
                    b']' => self.state = State::Done,
                    _ => {
                        return Err(ScanError::Syntax(
                            "orders are not separated by commas".into(),
                        ));
                    }
                },
                State::Done | State::Trailing => {
                    if !b.is_ascii_whitespace() {
                        return Err(ScanError::Syntax("text after the list of orders".into()));
                    }
                    self.state = State::Trailing;
                }
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_order_is_seen_once_with_its_status_and_other_fields_are_skipped() {
        let body = br#"[{"number":"A1","paymentStatus":"PAID","billing":{"city":"K\u00f6ln"},"items":[{"number":"x"}]},
                        {"number":"A2","amount":12.5,"paymentStatus":"UNPAID"}]"#;
        let mut seen = Vec::new();
        let count = for_each_order_status(&body[..], |o| {
            seen.push((o.number, o.payment_status));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(count, 2);
        assert_eq!(seen[0], ("A1".into(), Some("PAID".into())));
        assert_eq!(seen[1], ("A2".into(), Some("UNPAID".into())));
    }

    #[test]
    fn a_cut_off_body_is_an_io_error_and_garbage_a_syntax_error() {
        let cut = br#"[{"number":"A1","paymentStatus":"PAID"},{"numb"#;
        let result = for_each_order_status(&cut[..], |_| Ok::<(), ()>(()));
        assert!(matches!(result, Err(StreamError::Io(_))), "{result:?}");
        let html = b"<html>login</html>";
        let result = for_each_order_status(&html[..], |_| Ok::<(), ()>(()));
        assert!(matches!(result, Err(StreamError::Syntax(_))), "{result:?}");
        let object = br#"{"error":"x"}"#;
        let result = for_each_order_status(&object[..], |_| Ok::<(), ()>(()));
        assert!(matches!(result, Err(StreamError::Syntax(_))), "{result:?}");
    }

    /// Hands out a few bytes per read, so elements span many blocks.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(self.0.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn elements_split_across_reads_with_braces_and_quotes_in_strings_are_found() {
        let body = br#" [ {"number":"A\"}1","statusDescription":"{[x]}","paymentStatus":"PAID"} ,
            {"number":"A2","billing":{"street":"Weg \\ 1"},"paymentStatus":"UNPAID"}] "#;
        for size in [1, 3, 7, 64, 4096] {
            let mut seen = Vec::new();
            let count = for_each_order_status(Trickle(body, size), |o| {
                seen.push(o.number);
                Ok::<(), ()>(())
            })
            .unwrap();
            assert_eq!(count, 2, "read size {size}");
            assert_eq!(seen, ["A\"}1", "A2"], "read size {size}");
        }
        assert_eq!(
            for_each_order_status(&b"[]"[..], |_| Ok::<(), ()>(())).unwrap(),
            0
        );
    }

    #[test]
    fn the_consumer_can_stop_the_stream() {
        let body = br#"[{"number":"A1"},{"number":"A2"},{"number":"A3"}]"#;
        let mut calls = 0;
        let result = for_each_order_status(&body[..], |_| {
            calls += 1;
            if calls == 2 { Err("full") } else { Ok(()) }
        });
        assert!(matches!(result, Err(StreamError::Consumer("full"))));
        assert_eq!(calls, 2);
    }
}
