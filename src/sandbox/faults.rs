//! Deterministic fault injection.
//!
//! For every `/api/v2` request the sandbox computes
//! `h = hash(seed, method, path+query, body, n)` (see [`super::hash`]), where `n` counts how often
//! this exact request (method, path, query and body) was seen before. Outcomes therefore depend
//! only on the seed and on what each request is, not on how concurrent requests interleave. From
//! `h` a sequence of uniform draws decides, in this order: reset (drop the connection), stall
//! (sleep `stall_duration`, then answer normally), 500, injected lock error, and finally the
//! latency `latency + uniform(0..latency_jitter)`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::hash::{DetHasher, Draws};

/// Fault and payment rates that can be changed at run time (`PUT /_sandbox/faults`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rates {
    pub(crate) pay_rate: f64,
    pub(crate) lock_error_rate: f64,
    pub(crate) server_error_rate: f64,
    pub(crate) reset_rate: f64,
    pub(crate) stall_rate: f64,
    pub(crate) latency: Duration,
    pub(crate) latency_jitter: Duration,
    pub(crate) stall_duration: Duration,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fault {
    /// Drop the connection without an answer.
    Reset,
    /// Sleep this long, then answer normally.
    Stall(Duration),
    /// Answer 500 `Internal server error`.
    ServerError,
    /// Answer 400 `Could not acquire lock` without touching any lock.
    Lock,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Decision {
    pub(crate) fault: Option<Fault>,
    pub(crate) latency: Duration,
}

const SHARDS: usize = 32;

/// Remembers how often each distinct request was seen.
#[derive(Debug)]
pub(crate) struct FaultInjector {
    seed: u64,
    seen: Box<[Mutex<HashMap<u64, u32>>]>,
}

impl FaultInjector {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            seen: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Decides the fate of one request.
    pub(crate) fn decide(
        &self,
        rates: &Rates,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Decision {
        let identity = DetHasher::new(self.seed)
            .bytes(method.as_bytes())
            .bytes(path_and_query.as_bytes())
            .bytes(body)
            .finish();
        let n = match self.seen[(identity % SHARDS as u64) as usize].lock() {
            Ok(mut seen) => {
                let count = seen.entry(identity).or_insert(0);
                let n = *count;
                *count = count.saturating_add(1);
                n
            }
            Err(_) => 0,
        };
        let h = DetHasher::new(self.seed)
            .u64(identity)
            .u64(u64::from(n))
            .finish();
        let mut draws = Draws::new(h);
        let (reset, stall, server, lock, jitter) = (
            draws.next_unit(),
            draws.next_unit(),
            draws.next_unit(),
            draws.next_unit(),
            draws.next_unit(),
        );
        let fault = if reset < rates.reset_rate {
            Some(Fault::Reset)
        } else if stall < rates.stall_rate {
            Some(Fault::Stall(rates.stall_duration))
        } else if server < rates.server_error_rate {
            Some(Fault::ServerError)
        } else if lock < rates.lock_error_rate {
            Some(Fault::Lock)
        } else {
            None
        };
        let latency = rates.latency + rates.latency_jitter.mul_f64(jitter);
        Decision { fault, latency }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates() -> Rates {
        Rates {
            pay_rate: 0.0,
            lock_error_rate: 0.3,
            server_error_rate: 0.3,
            reset_rate: 0.1,
            stall_rate: 0.0,
            latency: Duration::ZERO,
            latency_jitter: Duration::from_millis(10),
            stall_duration: Duration::ZERO,
        }
    }

    #[test]
    fn repeats_of_the_same_request_get_fresh_but_reproducible_draws() {
        let a = FaultInjector::new(7);
        let b = FaultInjector::new(7);
        let seq_a: Vec<_> = (0..50)
            .map(|_| a.decide(&rates(), "POST", "/x", b"{}"))
            .collect();
        let seq_b: Vec<_> = (0..50)
            .map(|_| b.decide(&rates(), "POST", "/x", b"{}"))
            .collect();
        assert_eq!(seq_a, seq_b);
        assert!(seq_a.iter().any(|d| d.fault.is_none()));
        assert!(seq_a.iter().any(|d| d.fault.is_some()));
        assert!(seq_a.iter().all(|d| d.latency <= Duration::from_millis(10)));
    }
}
