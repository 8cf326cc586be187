//! Request statistics: atomics for the counters and one short Mutex for the maps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Most `post_orders` entries kept; later POST /orders requests are still counted elsewhere.
pub const POST_ORDERS_CAP: usize = 2_000_000;

/// One `POST /orders` request as seen by the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PostOrdersEntry {
    /// Milliseconds since the sandbox started (or since the last stats reset) when it was answered.
    pub t_ms: f64,
    /// Number of elements in the body's JSON array (0 if it was not an array).
    pub orders: u64,
    /// HTTP status of the answer.
    pub status: u16,
}

/// Injected fault counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Connections dropped without an answer.
    pub reset: u64,
    /// Requests stalled for `stall_duration` before being answered.
    pub stall: u64,
    /// Injected 500 `Internal server error` answers.
    pub server_error: u64,
    /// Injected 400 `Could not acquire lock` answers (real lock conflicts are not counted here).
    pub lock: u64,
}

/// A copy of the sandbox statistics; also the JSON of `GET /_sandbox/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Every request under `/api` (including unknown paths and reset connections).
    pub requests_total: u64,
    /// Requests per route template, e.g. `"POST /orders"`; unknown paths count as `"UNMATCHED"`.
    pub requests_by_route: BTreeMap<String, u64>,
    /// Answers per HTTP status, e.g. `"200"`.
    pub responses_by_status: BTreeMap<String, u64>,
    /// Error answers per `error` message.
    pub errors_by_message: BTreeMap<String, u64>,
    /// Sum of the array lengths of all `POST /orders` bodies (faulted and rejected ones included).
    pub orders_received: u64,
    /// Orders written (created or updated) by `POST /orders` and `POST /order/{n}`.
    pub orders_stored: u64,
    /// One entry per `POST /orders` request that got an answer, capped at [`POST_ORDERS_CAP`].
    pub post_orders: Vec<PostOrdersEntry>,
    /// Most `/api/v2` requests in flight at the same time.
    pub max_in_flight: u64,
    /// Injected faults.
    pub faults: FaultCounts,
    /// `POST /orders` requests with more than 100 orders.
    pub oversized_requests: u64,
    /// Answers with a non-2xx status.
    pub rejected_requests: u64,
}

#[derive(Debug, Default)]
struct Maps {
    by_route: HashMap<String, u64>,
    by_status: HashMap<u16, u64>,
    by_message: HashMap<String, u64>,
}

/// The live counters.
#[derive(Debug)]
pub(crate) struct Stats {
    start: Mutex<Instant>,
    requests_total: AtomicU64,
    orders_received: AtomicU64,
    orders_stored: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    oversized: AtomicU64,
    rejected: AtomicU64,
    reset: AtomicU64,
    stall: AtomicU64,
    server_error: AtomicU64,
    lock: AtomicU64,
    maps: Mutex<Maps>,
    post_orders: Mutex<Vec<PostOrdersEntry>>,
}

/// Decrements the in-flight counter when dropped (also when a reset drops the request).
pub(crate) struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which injected fault to count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FaultKind {
    Reset,
    Stall,
    ServerError,
    Lock,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            start: Mutex::new(Instant::now()),
            requests_total: AtomicU64::new(0),
            orders_received: AtomicU64::new(0),
            orders_stored: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            reset: AtomicU64::new(0),
            stall: AtomicU64::new(0),
            server_error: AtomicU64::new(0),
            lock: AtomicU64::new(0),
            maps: Mutex::new(Maps::default()),
            post_orders: Mutex::new(Vec::new()),
        }
    }

    /// Counts a request to `route` and marks it in flight until the guard drops.
    pub(crate) fn begin(&self, route: &str) -> InFlight<'_> {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.max_in_flight.fetch_max(now, Ordering::AcqRel);
        if let Ok(mut maps) = self.maps.lock() {
            match maps.by_route.get_mut(route) {
                Some(n) => *n += 1,
                None => {
                    maps.by_route.insert(route.to_owned(), 1);
                }
            }
        }
        InFlight(self)
    }

    /// Counts an answer.
    pub(crate) fn response(&self, status: u16, message: Option<&str>) {
        if !(200..300).contains(&status) {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut maps) = self.maps.lock() {
            *maps.by_status.entry(status).or_insert(0) += 1;
            if let Some(message) = message {
                match maps.by_message.get_mut(message) {
                    Some(n) => *n += 1,
                    None => {
                        maps.by_message.insert(message.to_owned(), 1);
                    }
                }
            }
        }
    }

    pub(crate) fn fault(&self, kind: FaultKind) {
        let counter = match kind {
            FaultKind::Reset => &self.reset,
            FaultKind::Stall => &self.stall,
            FaultKind::ServerError => &self.server_error,
            FaultKind::Lock => &self.lock,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn orders_received(&self, n: u64) {
        self.orders_received.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn orders_stored(&self, n: u64) {
        self.orders_stored.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn oversized(&self) {
        self.oversized.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn post_orders(&self, orders: u64, status: u16) {
        let t_ms = self
            .start
            .lock()
            .map(|start| start.elapsed().as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        if let Ok(mut list) = self.post_orders.lock()
            && list.len() < POST_ORDERS_CAP
        {
            list.push(PostOrdersEntry {
                t_ms,
                orders,
                status,
            });
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let (requests_by_route, responses_by_status, errors_by_message) = match self.maps.lock() {
            Ok(maps) => (
                maps.by_route.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                maps.by_status
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                maps.by_message
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            ),
            Err(_) => Default::default(),
        };
        StatsSnapshot {
            requests_total: self.requests_total.load(Ordering::Relaxed),
            requests_by_route,
            responses_by_status,
            errors_by_message,
            orders_received: self.orders_received.load(Ordering::Relaxed),
            orders_stored: self.orders_stored.load(Ordering::Relaxed),
            post_orders: self
                .post_orders
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default(),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            faults: FaultCounts {
                reset: self.reset.load(Ordering::Relaxed),
                stall: self.stall.load(Ordering::Relaxed),
                server_error: self.server_error.load(Ordering::Relaxed),
                lock: self.lock.load(Ordering::Relaxed),
            },
            oversized_requests: self.oversized.load(Ordering::Relaxed),
            rejected_requests: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// Zeroes every counter and restarts the `t_ms` clock (requests in flight stay counted).
    pub(crate) fn reset(&self) {
        for counter in [
            &self.requests_total,
            &self.orders_received,
            &self.orders_stored,
            &self.max_in_flight,
            &self.oversized,
            &self.rejected,
            &self.reset,
            &self.stall,
            &self.server_error,
            &self.lock,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        if let Ok(mut maps) = self.maps.lock() {
            *maps = Maps::default();
        }
        if let Ok(mut list) = self.post_orders.lock() {
            *list = Vec::new();
        }
        if let Ok(mut start) = self.start.lock() {
            *start = Instant::now();
        }
    }
}
