//! Reading a large `GET /orders` reply as a stream: one order at a time, memory bounded by
//! the largest single order, whatever the number of orders.

use std::fmt;
use std::io::Read;

use serde::Deserialize;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};

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
pub fn for_each_order_status<R: Read, E>(
    reader: R,
    each: impl FnMut(OrderStatus) -> Result<(), E>,
) -> Result<u64, StreamError<E>> {
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let mut consumer = Consumer {
        each,
        count: 0,
        failure: None,
    };
    let result = (&mut consumer).deserialize(&mut deserializer);
    if let Some(error) = consumer.failure.take() {
        return Err(StreamError::Consumer(error));
    }
    result.and_then(|()| deserializer.end()).map_err(|error| {
        match (error.io_error_kind(), error.is_eof()) {
            (Some(kind), _) => StreamError::Io(std::io::Error::new(kind, error.to_string())),
            // A body that ends early was cut off on the way, not written wrong.
            (None, true) => StreamError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                error.to_string(),
            )),
            (None, false) => StreamError::Syntax(error.to_string()),
        }
    })?;
    Ok(consumer.count)
}

struct Consumer<F, E> {
    each: F,
    count: u64,
    failure: Option<E>,
}

impl<'de, F, E> DeserializeSeed<'de> for &mut Consumer<F, E>
where
    F: FnMut(OrderStatus) -> Result<(), E>,
{
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F, E> Visitor<'de> for &mut Consumer<F, E>
where
    F: FnMut(OrderStatus) -> Result<(), E>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of orders")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(order) = seq.next_element::<OrderStatus>()? {
            self.count += 1;
            if let Err(error) = (self.each)(order) {
                self.failure = Some(error);
                return Err(serde::de::Error::custom("stopped by the consumer"));
            }
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
