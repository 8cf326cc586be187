//! Real per-order locks: a write request try-locks every order number it touches.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 64;

/// The set of order numbers currently locked by in-flight requests, plus locks held through the
/// control endpoint.
#[derive(Debug)]
pub(crate) struct LockTable {
    shards: Box<[Mutex<HashSet<Box<str>>>]>,
    control: Mutex<HashSet<String>>,
    control_count: AtomicUsize,
}

/// Releases the locks it holds when dropped.
#[derive(Debug)]
pub(crate) struct LockGuard {
    table: Arc<LockTable>,
    taken: Vec<Box<str>>,
}

fn shard_of(number: &str) -> usize {
    (crate::sandbox::hash::DetHasher::new(0)
        .bytes(number.as_bytes())
        .finish() as usize)
        % SHARDS
}

impl LockTable {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
            control: Mutex::new(HashSet::new()),
            control_count: AtomicUsize::new(0),
        }
    }

    fn control_held(&self, number: &str) -> bool {
        if self.control_count.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.control
            .lock()
            .map(|set| set.contains(number))
            .unwrap_or(false)
    }

    /// Takes every lock without waiting; `None` (and nothing held) if any is busy.
    pub(crate) fn try_lock_all<'a>(
        self: &Arc<Self>,
        numbers: impl IntoIterator<Item = &'a str>,
    ) -> Option<LockGuard> {
        let mut guard = LockGuard {
            table: Arc::clone(self),
            taken: Vec::new(),
        };
        for number in numbers {
            if self.control_held(number) {
                return None;
            }
            let Ok(mut set) = self.shards[shard_of(number)].lock() else {
                return None;
            };
            if set.contains(number) {
                if guard.taken.iter().any(|t| &**t == number) {
                    continue;
                }
                return None;
            }
            set.insert(number.into());
            drop(set);
            guard.taken.push(number.into());
        }
        Some(guard)
    }

    /// Holds a lock on `number` until [`LockTable::control_unlock`].
    pub(crate) fn control_lock(&self, number: &str) {
        if let Ok(mut set) = self.control.lock()
            && set.insert(number.to_owned())
        {
            self.control_count.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Releases a control lock; returns whether it was held.
    pub(crate) fn control_unlock(&self, number: &str) -> bool {
        if let Ok(mut set) = self.control.lock()
            && set.remove(number)
        {
            self.control_count.fetch_sub(1, Ordering::AcqRel);
            return true;
        }
        false
    }

    /// Whether `number` is locked right now (by a request or the control endpoint).
    pub(crate) fn is_locked(&self, number: &str) -> bool {
        self.control_held(number)
            || self.shards[shard_of(number)]
                .lock()
                .map(|set| set.contains(number))
                .unwrap_or(false)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        for number in self.taken.drain(..) {
            if let Ok(mut set) = self.table.shards[shard_of(&number)].lock() {
                set.remove(&number);
            }
        }
    }
}

/// Forced rejections set through `POST /_sandbox/reject/{n}`.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    map: Mutex<HashMap<String, String>>,
    count: AtomicUsize,
}

impl Rejections {
    /// The reason writes touching `number` are rejected with, if any.
    pub(crate) fn reason(&self, number: &str) -> Option<String> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.map.lock().ok()?.get(number).cloned()
    }

    /// Sets (or with `None` clears) the forced rejection of `number`.
    pub(crate) fn set(&self, number: &str, reason: Option<String>) {
        if let Ok(mut map) = self.map.lock() {
            match reason {
                Some(reason) => {
                    map.insert(number.to_owned(), reason);
                }
                None => {
                    map.remove(number);
                }
            }
            self.count.store(map.len(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_locker_fails_and_release_on_drop() {
        let table = Arc::new(LockTable::new());
        let first = table.try_lock_all(["a", "b", "a"]);
        assert!(first.is_some());
        assert!(table.try_lock_all(["c", "b"]).is_none());
        assert!(
            table.try_lock_all(["c"]).is_some(),
            "c was released after the failure"
        );
        drop(first);
        assert!(table.try_lock_all(["a", "b"]).is_some());
        table.control_lock("x");
        assert!(table.try_lock_all(["x"]).is_none());
        assert!(table.control_unlock("x"));
        assert!(table.try_lock_all(["x"]).is_some());
    }
}
