//! Status read-back: orders that were not sent but may have changed at Komfortkasse (paid,
//! cancelled, ...) get their current `paymentStatus` from `GET /orders`, read as a stream.
//!
//! `maxAge` just covers the oldest open order the state store knows. The `paymentStatus`
//! filter asks for every documented status except `UNPAID`: every order starts there and most
//! open orders stay there, so leaving it out keeps the reply to the orders that moved (a
//! million-order migration answers with the few thousand paid since, not a million). A filter
//! selects by *current* status, so it would hide an order going back to `UNPAID`; the open
//! orders the store knows in another status are therefore watched by name, and any of them
//! missing from the reply is asked for again: one by one (`GET /order/{number}`) when they are
//! few, else with `paymentStatus=UNPAID`. Should the store watch too many for memory, the API
//! refuse the filter, or the user ask for it (`--read-back-all`), one request without a filter
//! reads everything, as the vendor's own plugin does.
//!
//! What this cannot see: an order moving from `UNPAID` to a status the vendor has not
//! documented, and an order in a final status (`PAID`, `CANCELLED`, ...) reopened at
//! Komfortkasse (`setunpaid`): final orders are not watched, as their status no longer changes
//! by itself. `--read-back-all` sees both, as does a `--full` run, which sends every order and
//! learns every status from the replies.
//!
//! Every order in a reply that the store knows is updated when its status differs; orders the
//! store does not know are ignored.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use time::Date;
use tokio::sync::mpsc;

use super::send::{CallFailure, Sender};
use crate::api::ApiError;
use crate::api::stream::{OrderStatus, StreamError, for_each_order_status};
use crate::state::orders::{API_STATUSES, FIRST_STATUS};
use crate::state::{StateDb, StateError};

/// Statuses are applied to the store in transactions of this many orders.
const APPLY_BATCH: usize = 5000;
/// Statuses collected before they are sorted and applied.
const APPLY_COLLECT: usize = 50_000;
/// The reply goes to the parsing thread in blocks of about this size.
const BLOCK: usize = 1 << 20;
/// Open orders past `UNPAID` the read-back watches by name, at most (their numbers are held in
/// memory); with more, it reads every status without a filter.
const MAX_WATCHED: usize = 50_000;
/// Watched orders missing from the filtered reply that are asked for one by one, at most; more
/// are read with a second, `UNPAID` list.
const MAX_LOOKUPS: usize = 20;

/// Changed orders the read-back remembers, at most (8 bytes each and the set's overhead);
/// beyond, it no longer tells which ones changed.
const MAX_CHANGED: usize = 250_000;

/// What the read-back did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// `maxAge` asked for; `None` when no order needed reading back (no request was sent).
    pub max_age_days: Option<i64>,
    /// Orders in the replies.
    pub orders_seen: u64,
    /// Orders of the store whose status changed.
    pub refreshed: u64,
    /// Which ones.
    pub changed: ChangedOrders,
}

/// The orders whose status the read-back changed in the store, by a hash of their number: the
/// reader, which runs alongside, learns from it which of the rows it passed meanwhile may need
/// a new status (see `Touched`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedOrders {
    hashes: HashSet<u64>,
    /// More changed than are remembered: any order may have.
    overflowed: bool,
}

impl ChangedOrders {
    /// Bits of [`ChangedOrders::hash`]: enough to make two numbers sharing one rare (a row
    /// pending for the read-back keeps it in 40 bits).
    pub const HASH_BITS: u32 = 40;

    /// The hash the set keeps of an order number.
    pub fn hash(number: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64(number.as_bytes()) >> (64 - Self::HASH_BITS)
    }

    /// Whether the order with this number hash may have changed (a hash shared by two numbers
    /// errs on the safe side).
    pub fn may_contain(&self, hash: u64) -> bool {
        self.overflowed || self.hashes.contains(&hash)
    }

    pub(crate) fn add(&mut self, number: &str) {
        if self.overflowed {
            return;
        }
        self.hashes.insert(Self::hash(number));
        if self.hashes.len() > MAX_CHANGED {
            self.overflowed = true;
            self.hashes = HashSet::new();
        }
    }
}

/// Shared between the attempts of a read-back: one dropped at its deadline may have applied
/// some statuses already.
type Changed = Arc<Mutex<ChangedOrders>>;

/// The read-back failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    /// The API could not be read (given up at the deadline, an unreadable reply, or the run is
    /// stopping).
    #[error("status read-back (GET /orders) failed: {0}")]
    Api(String),
    /// The API refused the request for good (its message).
    #[error("status read-back (GET /orders) refused: {0}")]
    Refused(String),
    /// The state store could not be updated.
    #[error(transparent)]
    State(#[from] StateError),
}

/// One list read back: its counts, and the watched orders it did not contain.
struct Listed {
    orders_seen: u64,
    refreshed: u64,
    missing: HashSet<String>,
}

/// Reads back the statuses of the open orders the store knows, for run `run` (whose own sends
/// keep their answers); with `all`, every status in the window, without a filter.
pub async fn read_back(
    sender: &Sender,
    state: &Arc<Mutex<StateDb>>,
    today: Date,
    run: i64,
    all: bool,
) -> Result<ReadBack, ReadBackError> {
    let Some(oldest) = with_own_reader(state, move |db| db.oldest_open_order(run)).await? else {
        return Ok(ReadBack::default());
    };
    // One day of margin: "days old" may be counted from the other end of the day.
    let max_age = ((today - oldest).whole_days() + 1).max(1);
    let changed = Changed::default();
    let mut done = ReadBack {
        max_age_days: Some(max_age),
        ..ReadBack::default()
    };
    let reading = Reading {
        sender,
        state,
        max_age,
        run,
        changed: &changed,
    };
    let result = reading.all_or_moved(all, &mut done).await;
    done.changed = std::mem::take(&mut *changed.lock().unwrap_or_else(PoisonError::into_inner));
    result.map(|()| done)
}

/// One read-back's requests, and where their answers go.
struct Reading<'a> {
    sender: &'a Sender,
    state: &'a Arc<Mutex<StateDb>>,
    max_age: i64,
    run: i64,
    changed: &'a Changed,
}

impl Reading<'_> {
    /// The requests of [`read_back`] (every status with `all`), counted into `done`.
    async fn all_or_moved(&self, all: bool, done: &mut ReadBack) -> Result<(), ReadBackError> {
        let (state, max_age) = (self.state, self.max_age);
        let watched = match all {
            true => None,
            false => with_store(state, |db| db.open_orders_past_first_status(MAX_WATCHED)).await?,
        };
        let Some(watched) = watched else {
            tracing::info!(max_age, "reading back all statuses (GET /orders)");
            done.add(&self.list(None, HashSet::new()).await?);
            return Ok(());
        };
        let moved: Vec<&str> = API_STATUSES
            .into_iter()
            .filter(|status| *status != FIRST_STATUS)
            .collect();
        tracing::info!(
            max_age,
            watched = watched.len(),
            "reading back statuses (GET /orders)"
        );
        let watched = watched.into_iter().collect();
        let listed = match self.list(Some(moved.join(",")), watched).await {
            Ok(listed) => listed,
            Err(ReadBackError::Refused(message)) => {
                tracing::warn!(%message, "GET /orders refused the status filter; reading back all statuses");
                done.add(&self.list(None, HashSet::new()).await?);
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        done.add(&listed);
        let mut missing = self.not_sent(listed.missing).await?;
        if missing.len() > MAX_LOOKUPS {
            tracing::info!(
                missing = missing.len(),
                "reading back orders that went back to {FIRST_STATUS}"
            );
            let first = Some(FIRST_STATUS.to_string());
            let watched = missing.into_iter().collect();
            let listed = self.list(first, watched).await?;
            done.add(&listed);
            // In neither list: gone from the API, or in a status the vendor has not documented.
            missing = self.not_sent(listed.missing).await?;
            if missing.len() > MAX_LOOKUPS {
                tracing::warn!(
                    orders = missing.len(),
                    "open orders missing from the API's lists; their last known statuses are kept"
                );
                return Ok(());
            }
        }
        for number in missing {
            let (seen, refreshed) = self.look_up(number).await?;
            done.orders_seen += seen;
            done.refreshed += refreshed;
        }
        Ok(())
    }

    /// The watched orders no send of this run reported: a send's status is newer than anything
    /// read back.
    async fn not_sent(&self, numbers: HashSet<String>) -> Result<Vec<String>, ReadBackError> {
        let run = self.run;
        with_store(self.state, move |db| {
            let mut missing = Vec::new();
            for number in numbers {
                if !db.status_from_run(&number, run)? {
                    missing.push(number);
                }
            }
            missing.sort_unstable();
            Ok(missing)
        })
        .await
    }

    /// `GET /orders` with `maxAge` and, if given, a `paymentStatus` filter; every status in the
    /// reply is applied to the store. Returns the orders of `watched` the reply did not contain.
    async fn list(
        &self,
        statuses: Option<String>,
        watched: HashSet<String>,
    ) -> Result<Listed, ReadBackError> {
        let Reading {
            sender,
            state,
            max_age,
            run,
            changed,
        } = *self;
        let mut query = vec![("maxAge", max_age.to_string())];
        if let Some(statuses) = statuses {
            query.push(("paymentStatus", statuses));
        }
        let outcome = sender
            .call(|| {
                let target = (Arc::clone(state), Arc::clone(changed));
                read_once(sender, target, &query, watched.clone(), run)
            })
            .await;
        match outcome {
            Ok(listed) => listed,
            Err(failure) => Err(failure_error(failure)),
        }
    }

    /// `GET /order/{number}` for one watched order; returns (orders seen, statuses changed).
    async fn look_up(&self, number: String) -> Result<(u64, u64), ReadBackError> {
        let Reading {
            sender,
            state,
            run,
            changed,
            ..
        } = *self;
        let reply = sender
            .call(|| sender.client().get_order(&number))
            .await
            .map_err(failure_error)?;
        let Some(body) = reply else {
            tracing::debug!(
                number,
                "the API does not know this order (404); its status is kept"
            );
            return Ok((0, 0));
        };
        let order: OrderStatus = serde_json::from_slice(&body).map_err(|error| {
            ReadBackError::Api(format!(
                "GET /order/{number}: the reply is not an order ({error})"
            ))
        })?;
        let Some(status) = order.payment_status else {
            return Ok((1, 0));
        };
        let changed = Arc::clone(changed);
        let refreshed = with_store(state, move |db| {
            let mut changed = changed.lock().unwrap_or_else(PoisonError::into_inner);
            let statuses = [(order.number.as_str(), status.as_str())];
            db.apply_read_back(statuses, run, &mut |number| changed.add(number))
        })
        .await?;
        Ok((1, refreshed))
    }
}

impl ReadBack {
    fn add(&mut self, listed: &Listed) {
        self.orders_seen += listed.orders_seen;
        self.refreshed += listed.refreshed;
    }
}

/// Runs `f` on the state store on a blocking thread.
async fn with_store<T: Send + 'static>(
    state: &Arc<Mutex<StateDb>>,
    f: impl FnOnce(&mut StateDb) -> Result<T, StateError> + Send + 'static,
) -> Result<T, ReadBackError> {
    let store = Arc::clone(state);
    tokio::task::spawn_blocking(move || match store.lock() {
        Ok(mut db) => f(&mut db).map_err(ReadBackError::State),
        Err(_) => Err(ReadBackError::Api(
            "the state store is unusable after an internal error".into(),
        )),
    })
    .await
    .map_err(|e| ReadBackError::Api(e.to_string()))?
}

/// Runs a read-only `f` on a connection of its own where the store allows one (WAL), else on
/// the shared one: a scan of every order (~0.2 s for a million) would otherwise hold the
/// store's lock, which the reader needs to start.
async fn with_own_reader<T: Send + 'static>(
    state: &Arc<Mutex<StateDb>>,
    f: impl FnOnce(&StateDb) -> Result<T, StateError> + Send + 'static,
) -> Result<T, ReadBackError> {
    let own = with_store(state, |db| {
        Ok(db.open_reader().unwrap_or_else(|error| {
            tracing::debug!(%error, "reading the order state on the shared connection");
            None
        }))
    });
    match own.await? {
        Some(own) => tokio::task::spawn_blocking(move || f(&own).map_err(ReadBackError::State))
            .await
            .map_err(|e| ReadBackError::Api(e.to_string()))?,
        None => with_store(state, move |db| f(db)).await,
    }
}

fn failure_error(failure: CallFailure) -> ReadBackError {
    match failure {
        CallFailure::GaveUp(message) => ReadBackError::Api(message),
        CallFailure::Rejected(message) => ReadBackError::Refused(message),
        CallFailure::Stopped => ReadBackError::Api("the run is stopping".into()),
    }
}

/// One attempt: the request, then the body parsed on a blocking thread as it arrives. Network
/// faults are the outer error (retried); a reply that is not a list of orders, and the store
/// failing, are the inner one: they end the read-back but, unlike an unexpected answer to a
/// send, do not stop the run (the sends running alongside go on).
async fn read_once(
    sender: &Sender,
    (state, changed): (Arc<Mutex<StateDb>>, Changed),
    query: &[(&str, String)],
    watched: HashSet<String>,
    run: i64,
) -> Result<Result<Listed, ReadBackError>, ApiError> {
    let response = sender.client().get_orders(query).await?;
    // Should this attempt be dropped (the deadline, a stop), the parsing thread must not go on
    // applying statuses after the read-back has returned: the reader then takes the store's
    // statuses as final for this run.
    let abandoned = Arc::new(AtomicBool::new(false));
    let _abandon_on_drop = AbandonOnDrop(Arc::clone(&abandoned));
    // The body arrives in pieces of a few KiB; handing each to the parsing thread would cost
    // a wake-up per piece, so they are gathered into blocks first.
    let (blocks, receiver) = mpsc::channel::<std::io::Result<Bytes>>(2);
    let parser = tokio::task::spawn_blocking(move || {
        let target = (&*state, &*changed, &*abandoned);
        apply_stream(BlockReader::new(receiver), target, watched, run)
    });
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

/// Sets its flag when dropped.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn apply_stream(
    reader: impl std::io::Read,
    (state, changed, abandoned): (&Mutex<StateDb>, &Mutex<ChangedOrders>, &AtomicBool),
    mut watched: HashSet<String>,
    run: i64,
) -> Result<Listed, StreamError<StateError>> {
    let mut batch: Vec<(String, String)> = Vec::new();
    let mut refreshed = 0u64;
    let apply = |batch: &mut Vec<(String, String)>, refreshed: &mut u64| {
        // In number order, transactions of consecutive numbers: each page of the table is
        // dirtied (and written to the WAL) once per collection instead of once per
        // transaction, and read in order. A number listed twice (the API lists each order
        // once) keeps its last status: reversed, a stable sort puts the last one first.
        batch.reverse();
        batch.sort_by(|a, b| a.0.cmp(&b.0));
        batch.dedup_by(|later, first| later.0 == first.0);
        for slice in batch.chunks(APPLY_BATCH) {
            // Lets a test hold the read-back back while the reader passes every row.
            crate::pause::point("applying-read-back");
            // Checked under the lock: once the flag is set, nothing more is applied.
            if let Ok(mut db) = state.lock()
                && !abandoned.load(Ordering::Acquire)
            {
                let mut changed = changed.lock().unwrap_or_else(PoisonError::into_inner);
                let statuses = slice.iter().map(|(n, s)| (n.as_str(), s.as_str()));
                *refreshed +=
                    db.apply_read_back(statuses, run, &mut |number| changed.add(number))?;
            }
        }
        batch.clear();
        Ok::<(), StateError>(())
    };
    let seen = for_each_order_status(reader, |order| {
        if !watched.is_empty() {
            watched.remove(&order.number);
        }
        if let Some(status) = order.payment_status {
            batch.push((order.number, status));
            if batch.len() >= APPLY_COLLECT {
                apply(&mut batch, &mut refreshed)?;
            }
        }
        Ok(())
    })?;
    apply(&mut batch, &mut refreshed).map_err(StreamError::Consumer)?;
    Ok(Listed {
        orders_seen: seen,
        refreshed,
        missing: watched,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::orders::JournalEntry;

    /// A number the reply lists twice keeps the status listed last, and counts once.
    #[test]
    fn a_number_listed_twice_keeps_its_last_status() {
        let mut db = StateDb::in_memory().unwrap();
        let accepted: Vec<JournalEntry> = (1..=40)
            .map(|i| JournalEntry::Accepted {
                number: format!("A-{i:02}"),
                fingerprint: 1,
                date: time::macros::date!(2026 - 11 - 01),
                status: "UNPAID".into(),
                row_fingerprint: 1,
            })
            .collect();
        db.journal(1, &accepted).unwrap();
        let state = Mutex::new(db);
        // Every order paid, then every one cancelled, in one reply.
        let mut reply = Vec::new();
        for status in ["PAID", "CANCELLED"] {
            for i in 1..=40 {
                reply.push(format!(
                    r#"{{"number":"A-{i:02}","paymentStatus":"{status}"}}"#
                ));
            }
        }
        let reply = format!("[{}]", reply.join(","));
        let changed = Mutex::new(ChangedOrders::default());
        let abandoned = AtomicBool::new(false);
        let listed = apply_stream(
            reply.as_bytes(),
            (&state, &changed, &abandoned),
            HashSet::new(),
            2,
        )
        .unwrap();
        assert_eq!(listed.orders_seen, 80);
        assert_eq!(listed.refreshed, 40, "each order counted once");
        let db = state.lock().unwrap();
        for i in 1..=40 {
            let known = db.known(&format!("A-{i:02}")).unwrap().unwrap();
            assert_eq!(
                known.payment_status.as_deref(),
                Some("CANCELLED"),
                "A-{i:02}"
            );
        }
    }
}
