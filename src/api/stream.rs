//! Reading a large `GET /orders` reply as a stream: one order at a time, memory bounded by
//! the largest single order, whatever the number of orders.

use std::io::Read;

pub use super::status::OrderStatus;
use super::status::{Object, read_object};

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
/// The bytes are read in blocks and each order is read where it lies in the block by
/// [`read_object`], which looks only at `number` and `paymentStatus` and jumps over the rest.
/// That is several times faster than serde_json on a 400-byte-per-order reply, and memory stays
/// bounded by a block plus the largest single order (an order cut by a block's end waits for
/// the next block).
pub fn for_each_order_status<R: Read, E>(
    mut reader: R,
    mut each: impl FnMut(OrderStatus) -> Result<(), E>,
) -> Result<u64, StreamError<E>> {
    let mut scanner = Scanner::default();
    let mut block = vec![0u8; 64 * 1024];
    loop {
        let read = match reader.read(&mut block) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(StreamError::Io(error)),
        };
        scanner.feed(&block[..read], &mut each)?;
    }
    scanner.finish(&mut each)
}

/// Reads every order of a JSON array held in memory (the reply to `POST /orders`).
pub fn order_statuses(body: &[u8]) -> Result<Vec<OrderStatus>, String> {
    let mut statuses = Vec::new();
    let mut scanner = Scanner::default();
    let mut each = |status| {
        statuses.push(status);
        Ok::<(), std::convert::Infallible>(())
    };
    let read = scanner
        .feed(body, &mut each)
        .and_then(|()| scanner.finish(&mut each));
    match read {
        Ok(_) => Ok(statuses),
        Err(StreamError::Io(error)) => Err(error.to_string()),
        Err(StreamError::Syntax(message)) => Err(message),
        Err(StreamError::Consumer(never)) => match never {},
    }
}

/// Where the scanner is in `[ {..}, {..} ]`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    #[default]
    Start,
    /// After `[` (`first`: `]` may close an empty array) or `,`: an order comes next.
    BeforeElement { first: bool },
    /// After an order: `,` or `]` comes next.
    AfterElement,
    /// After the closing `]`: only whitespace may follow.
    Done,
}

#[derive(Default)]
struct Scanner {
    state: State,
    /// The start of an order that the previous block cut off.
    pending: Vec<u8>,
    /// How long `pending` must be before it is read again.
    retry_len: usize,
    count: u64,
}

impl Scanner {
    fn feed<E>(
        &mut self,
        bytes: &[u8],
        each: &mut impl FnMut(OrderStatus) -> Result<(), E>,
    ) -> Result<(), StreamError<E>> {
        // Orders are read where they lie in `bytes`; only an order cut by the block's end is
        // copied, and the next block appended to it.
        let mut joined = std::mem::take(&mut self.pending);
        let continued = !joined.is_empty();
        if continued {
            joined.extend_from_slice(bytes);
        }
        // An order larger than a block is tried again only once its bytes have doubled, so
        // that reading it stays linear in its size.
        if continued && joined.len() < self.retry_len {
            self.pending = joined;
            return Ok(());
        }
        let data: &[u8] = if continued { &joined } else { bytes };
        if let Some(cut) = self.scan(data, each)? {
            if continued {
                joined.drain(..cut);
                self.pending = joined;
            } else {
                self.pending = bytes[cut..].to_vec();
            }
            self.retry_len = 2 * self.pending.len();
        }
        Ok(())
    }

    /// Reads `data`; returns where an order starts that `data` ends within.
    fn scan<E>(
        &mut self,
        data: &[u8],
        each: &mut impl FnMut(OrderStatus) -> Result<(), E>,
    ) -> Result<Option<usize>, StreamError<E>> {
        let syntax = |message: &str| Err(StreamError::Syntax(message.into()));
        let mut at = 0;
        while let Some(&byte) = data.get(at) {
            // JSON whitespace only (`is_ascii_whitespace` would also let a form feed pass).
            if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                at += 1;
                continue;
            }
            match (self.state, byte) {
                (State::Start, b'[') => self.state = State::BeforeElement { first: true },
                (State::Start, _) => return syntax("the reply is not a JSON array"),
                (State::BeforeElement { first: true }, b']') => self.state = State::Done,
                (State::BeforeElement { .. }, b'{') => match read_object(&data[at..]) {
                    Object::Read(status, len) => {
                        self.count += 1;
                        each(status).map_err(StreamError::Consumer)?;
                        self.state = State::AfterElement;
                        at += len;
                        continue;
                    }
                    Object::Incomplete => return Ok(Some(at)),
                    Object::Invalid(message) => return Err(StreamError::Syntax(message)),
                },
                (State::BeforeElement { .. }, _) => return syntax("an order is not a JSON object"),
                (State::AfterElement, b',') => self.state = State::BeforeElement { first: false },
                (State::AfterElement, b']') => self.state = State::Done,
                (State::AfterElement, _) => return syntax("orders are not separated by commas"),
                (State::Done, _) => return syntax("text after the list of orders"),
            }
            at += 1;
        }
        Ok(None)
    }

    /// The input ended: reads what was held back, and checks that the array was complete.
    fn finish<E>(
        mut self,
        each: &mut impl FnMut(OrderStatus) -> Result<(), E>,
    ) -> Result<u64, StreamError<E>> {
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() && self.scan(&pending, each)?.is_some() {
            return Err(StreamError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the list of orders ends early",
            )));
        }
        match self.state {
            State::Done => Ok(self.count),
            State::Start => Err(StreamError::Syntax("empty reply".into())),
            _ => Err(StreamError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the list of orders ends early",
            ))),
        }
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

    /// Where the blocks are cut changes nothing: every reply gives the same orders (or the
    /// same refusal, with only the orders before the bad one, `Z` here, reaching the consumer)
    /// whether read whole or a few bytes at a time.
    #[test]
    fn the_answer_does_not_depend_on_where_blocks_end() {
        let bodies: [&[u8]; 6] = [
            br#"[{"number":"A","x":1.5e-3,"y":[true,false,null,{"z":"}]"}],"paymentStatus":"PAID"}, {"number":"B"}]"#,
            br#"[{"number":"A","x":1","y":"}"}]"#,
            br#"[{"number":"A1","x":null"paymentStatus":"PAID"}]"#,
            br#"[{"number":"Z","paymentStatus":"UNPAID"},{"items":[{"q":1}},"number":"B","paymentStatus":"PAID"}],"number":"A"}]"#,
            br#"[{"number":"A\"","paymentStatus":"PAID"} , {"number":"B","paymentStatus":null}]"#,
            br#"[{"number":"Z","paymentStatus":"PAID"},{"number":"B","x":[}}]"#,
        ];
        for body in bodies {
            let whole = order_statuses(body);
            for size in 1..=9 {
                let mut seen = Vec::new();
                let streamed = for_each_order_status(Trickle(body, size), |status| {
                    seen.push(status);
                    Ok::<(), ()>(())
                });
                let text = String::from_utf8_lossy(body);
                match &whole {
                    Ok(statuses) => {
                        assert!(streamed.is_ok(), "{text} in pieces of {size}: {streamed:?}");
                        assert_eq!(&seen, statuses, "{text} in pieces of {size}");
                    }
                    Err(_) => {
                        assert!(streamed.is_err(), "{text} in pieces of {size}");
                        assert!(
                            seen.iter().all(|s| s.number == "Z"),
                            "{text} in pieces of {size}: {seen:?}"
                        );
                    }
                }
            }
        }
        assert!(order_statuses(bodies[0]).is_ok());
        assert!(order_statuses(bodies[4]).is_ok());
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
