//! Status read-back: orders that were not sent but may have changed at Komfortkasse (paid,
//! cancelled, ...) get their current `paymentStatus` from `GET /orders`, read as a stream.
//!
//! One request with `maxAge` just covering the oldest open order the state store knows. No
//! `paymentStatus` filter: it selects by *current* status, so any filter would hide exactly the
//! transitions to the statuses it leaves out (the vendor offers no "changed since"). Every
//! order in the reply that the store knows is updated when its status differs; orders the store
//! does not know are ignored.

use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use time::Date;
use tokio::sync::mpsc;

use super::send::{CallFailure, Sender};
use crate::api::ApiError;
use crate::api::stream::{StreamError, for_each_order_status};
use crate::state::{StateDb, StateError};

/// Statuses are applied to the store in transactions of this many orders.
const APPLY_BATCH: usize = 5000;
/// The reply goes to the parsing thread in blocks of about this size.
const BLOCK: usize = 1 << 20;

/// What the read-back did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// `maxAge` asked for; `None` when no order needed reading back (no request was sent).
    pub max_age_days: Option<i64>,
    /// Orders in the reply.
    pub orders_seen: u64,
    /// Orders of the store whose status changed.
    pub refreshed: u64,
}

/// The read-back failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    /// The API could not be read (given up at the deadline, refused, or the run is stopping).
    #[error("status read-back (GET /orders) failed: {0}")]
    Api(String),
    /// The state store could not be updated.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Reads back the statuses of the open orders the store knows, for run `run` (whose own sends
/// keep their answers).
pub async fn read_back(
    sender: &Sender,
    state: &Arc<Mutex<StateDb>>,
    today: Date,
    run: i64,
) -> Result<ReadBack, ReadBackError> {
    let store = Arc::clone(state);
    let oldest = tokio::task::spawn_blocking(move || match store.lock() {
        Ok(db) => db.oldest_open_order(),
        Err(_) => Ok(None),
    })
    .await
    .map_err(|e| ReadBackError::Api(e.to_string()))??;
    let Some(oldest) = oldest else {
        return Ok(ReadBack::default());
    };
    // One day of margin: "days old" may be counted from the other end of the day.
    let max_age = ((today - oldest).whole_days() + 1).max(1);
    tracing::info!(max_age, "reading back statuses (GET /orders)");
    let outcome = sender
        .call(|| read_once(sender, Arc::clone(state), max_age, run))
        .await;
    match outcome {
        Ok(Ok((orders_seen, refreshed))) => Ok(ReadBack {
            max_age_days: Some(max_age),
            orders_seen,
            refreshed,
        }),
        Ok(Err(error)) => Err(error),
        Err(CallFailure::GaveUp(message) | CallFailure::Rejected(message)) => {
            Err(ReadBackError::Api(message))
        }
        Err(CallFailure::Stopped) => Err(ReadBackError::Api("the run is stopping".into())),
    }
}

/// One attempt: the request, then the body parsed on a blocking thread as it arrives. Network
/// faults are the outer error (retried); a reply that is not a list of orders, and the store
/// failing, are the inner one: they end the read-back but, unlike an unexpected answer to a
/// send, do not stop the run (the sends running alongside go on).
async fn read_once(
    sender: &Sender,
    state: Arc<Mutex<StateDb>>,
    max_age: i64,
    run: i64,
) -> Result<Result<(u64, u64), ReadBackError>, ApiError> {
    let response = sender
        .client()
        .get_orders(&[("maxAge", max_age.to_string())])
        .await?;
    // The body arrives in pieces of a few KiB; handing each to the parsing thread would cost
    // a wake-up per piece, so they are gathered into blocks first.
    let (blocks, receiver) = mpsc::channel::<std::io::Result<Bytes>>(2);
    let parser =
        tokio::task::spawn_blocking(move || apply_stream(BlockReader::new(receiver), &state, run));
    let mut body = response.bytes_stream();
    let mut block = BytesMut::with_capacity(BLOCK);
    loop {
        let piece = body.next().await;
        let done = !matches!(piece, Some(Ok(_)));
        match piece {
            Some(Ok(piece)) => block.extend_from_slice(&piece),
            Some(Err(error)) => {
                // The parser reports it (as a network error) once it reaches it.
                let _ = blocks.send(Err(std::io::Error::other(error))).await;
            }
            None => {}
        }
        if (block.len() >= BLOCK || done) && !block.is_empty() {
            let full = std::mem::replace(&mut block, BytesMut::with_capacity(BLOCK));
            if blocks.send(Ok(full.freeze())).await.is_err() {
                break; // The parser stopped (syntax error, state store failure).
            }
        }
        if done {
            break;
        }
    }
    drop(blocks);
    let parsed = match parser.await {
        Ok(parsed) => parsed,
        Err(error) => {
            return Ok(Err(ReadBackError::Api(format!(
                "the read-back task failed: {error}"
            ))));
        }
    };
    match parsed {
        Ok(counts) => Ok(Ok(counts)),
        Err(StreamError::Consumer(error)) => Ok(Err(ReadBackError::State(error))),
        Err(StreamError::Io(error)) => Err(ApiError::Network(error.to_string())),
        Err(StreamError::Syntax(message)) => Ok(Err(ReadBackError::Api(format!(
            "GET /orders: the reply is not a list of orders ({message})"
        )))),
    }
}

fn apply_stream(
    reader: impl std::io::Read,
    state: &Mutex<StateDb>,
    run: i64,
) -> Result<(u64, u64), StreamError<StateError>> {
    let mut batch: Vec<(String, String)> = Vec::with_capacity(APPLY_BATCH);
    let mut refreshed = 0u64;
    let apply = |batch: &mut Vec<(String, String)>, refreshed: &mut u64| {
        if let Ok(mut db) = state.lock() {
            *refreshed +=
                db.apply_read_back(batch.iter().map(|(n, s)| (n.as_str(), s.as_str())), run)?;
        }
        batch.clear();
        Ok::<(), StateError>(())
    };
    let seen = for_each_order_status(reader, |order| {
        if let Some(status) = order.payment_status {
            batch.push((order.number, status));
            if batch.len() >= APPLY_BATCH {
                apply(&mut batch, &mut refreshed)?;
            }
        }
        Ok(())
    })?;
    apply(&mut batch, &mut refreshed).map_err(StreamError::Consumer)?;
    Ok((seen, refreshed))
}

/// Reads the blocks the async side gathered, on the parsing thread.
struct BlockReader {
    blocks: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl BlockReader {
    fn new(blocks: mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        BlockReader {
            blocks,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for BlockReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.blocks.blocking_recv() {
                Some(block) => self.current = block?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}
