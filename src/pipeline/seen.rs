//! The duplicate check of one run ("duplicate `number` within one run"), in fixed memory.
//!
//! A set of every order number would grow with the source (about 18 MiB per million orders
//! even as 64-bit hashes). Instead a Bloom filter of fixed size answers "certainly new" for
//! almost every number. Its rare "maybe seen" is settled exactly in one of two ways:
//! - when the numbers have ascended so far (the usual export, sorted by number), a number equal
//!   to the previous one is a duplicate and a greater one is new;
//! - otherwise the row is *deferred*: the reader settles it after the pass with a second read of
//!   the source, looking only at rows with a deferred number (see `read`).
//!
//! The filter is *blocked*: all bits of one number lie in one 64-byte block (a cache line), so a
//! check costs one memory access instead of one per bit, which at a million rows was most of
//! its time. Blocks raise the false-alarm rate a little; 8 MiB keep it below the unblocked 4 MiB
//! filter's at ten million numbers.
//!
//! Memory is the filter (8 MiB) plus the deferred rows, which are the duplicates themselves and
//! about one false alarm in a million numbers at a million orders.

use xxhash_rust::xxh3::xxh3_128;

/// Bits in the filter: 2^26 = 8 MiB.
const BITS_LOG2: u32 = 26;
/// Bits per block: 512 = one 64-byte cache line.
const BLOCK_LOG2: u32 = 9;
/// Bits set per number, all in its block: at 1 million numbers the false-alarm rate is about
/// 1e-6, at 10 million about 4%.
const PROBES: u32 = 6;

/// What the filter can tell about a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen before in this run.
    New,
    /// Seen before: the row is a duplicate.
    Duplicate,
    /// Perhaps seen before; only a look at the earlier rows can tell.
    Maybe,
}

/// Numbers whose bits wait to be set while the numbers ascend, at most (16 bytes each).
const WAITING: usize = 32_768;

/// Order numbers seen in this run.
pub struct SeenNumbers {
    bits: Vec<u64>,
    /// The previous number checked.
    last: Option<String>,
    /// Every number so far was at least the one before.
    ascending: bool,
    /// Hashes of numbers not yet in `bits`. While the numbers ascend the filter is never asked
    /// (a greater number is new, an equal one a duplicate), so their bits are set later, a
    /// batch at a time in the order of their blocks: one pass over the filter instead of a
    /// cache miss per number, which was a tenth of the reader's time. The first number out of
    /// order sets them all before it asks the filter.
    waiting: Vec<u128>,
    /// How many hashes may wait ([`WAITING`]; 0 sets every number's bits at once).
    waiting_cap: usize,
}

impl Default for SeenNumbers {
    fn default() -> Self {
        SeenNumbers {
            // Zeroed memory from the allocator: pages cost nothing until a bit is set.
            bits: vec![0; 1 << (BITS_LOG2 - 6)],
            last: None,
            ascending: true,
            waiting: Vec::new(),
            waiting_cap: WAITING,
        }
    }
}

impl std::fmt::Debug for SeenNumbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenNumbers")
            .field("ascending", &self.ascending)
            .finish_non_exhaustive()
    }
}

impl SeenNumbers {
    /// A filter that has seen everything: every check it cannot settle is deferred (tests).
    #[cfg(test)]
    pub fn saturated() -> Self {
        let mut seen = SeenNumbers::default();
        seen.bits.fill(u64::MAX);
        seen
    }

    /// Records `number` and says whether it was seen before.
    pub fn check(&mut self, number: &str) -> Seen {
        let hash = xxh3_128(number.as_bytes());
        let previous = self.last.as_deref().map(|last| number.cmp(last));
        let still_ascending = self.ascending && previous.is_none_or(|order| order.is_ge());
        let maybe_seen = if still_ascending && self.waiting_cap > 0 {
            // Not asked: the answer below does not depend on it.
            if self.waiting.len() >= self.waiting_cap {
                self.set_waiting();
            }
            self.waiting.push(hash);
            true
        } else {
            self.set_waiting();
            self.insert(hash)
        };
        let answer = match (maybe_seen, previous) {
            (_, Some(std::cmp::Ordering::Equal)) => Seen::Duplicate,
            (false, _) | (true, None) => Seen::New,
            // Every earlier number is at most the previous one, which is smaller.
            (true, Some(std::cmp::Ordering::Greater)) if self.ascending => Seen::New,
            (true, _) => Seen::Maybe,
        };
        // A repeat of the previous number keeps the order (every earlier number is still at
        // most the previous one); only a smaller number breaks it.
        if previous.is_some_and(|order| order.is_lt()) {
            self.ascending = false;
        }
        match &mut self.last {
            Some(last) => {
                last.clear();
                last.push_str(number);
            }
            None => self.last = Some(number.to_string()),
        }
        answer
    }

    /// Sets the bits of the numbers waiting, in the order of their blocks.
    fn set_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let mut waiting = std::mem::take(&mut self.waiting);
        waiting.sort_unstable_by_key(|&hash| first_word(hash));
        for &hash in &waiting {
            self.insert(hash);
        }
        waiting.clear();
        self.waiting = waiting;
    }

    /// Sets the bits of a number's hash; whether all of them were set already.
    fn insert(&mut self, hash: u128) -> bool {
        let first_word = first_word(hash);
        let mut bits = (hash >> 64) as u64;
        let mut all_set = true;
        for _ in 0..PROBES {
            let bit = bits & ((1 << BLOCK_LOG2) - 1);
            bits >>= BLOCK_LOG2;
            let word = first_word + (bit >> 6) as usize;
            let mask = 1u64 << (bit & 63);
            match self.bits.get_mut(word) {
                Some(word) => {
                    all_set &= *word & mask != 0;
                    *word |= mask;
                }
                None => all_set = false,
            }
        }
        all_set
    }
}

/// The first word of the hash's block: the low half picks the block, the high half the bits
/// in it (9 bits each).
fn first_word(hash: u128) -> usize {
    let blocks = 1u64 << (BITS_LOG2 - BLOCK_LOG2);
    ((hash as u64 & (blocks - 1)) << (BLOCK_LOG2 - 6)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_whose_bits_wait_get_the_same_answers_as_numbers_set_at_once() {
        // Ascending runs with repeats, broken once (and the waiting list filled several
        // times before), then a shuffled tail that repeats numbers of both parts.
        let mut numbers: Vec<String> = (0..100_000).map(|i| format!("N{i:07}")).collect();
        numbers.insert(500, "N0000499".into());
        numbers.extend((0..50_000u64).map(|i| {
            let n = i.wrapping_mul(0x9E37_79B9) % 200_000;
            format!("N{n:07}")
        }));
        let mut waiting = SeenNumbers {
            waiting_cap: 1000,
            ..SeenNumbers::default()
        };
        let mut at_once = SeenNumbers {
            waiting_cap: 0,
            ..SeenNumbers::default()
        };
        let mut answers = std::collections::HashMap::new();
        for number in &numbers {
            let answer = waiting.check(number);
            assert_eq!(answer, at_once.check(number), "{number}");
            *answers.entry(format!("{answer:?}")).or_insert(0) += 1;
        }
        assert_eq!(waiting.bits, at_once.bits);
        // All three answers occurred, so each path was compared.
        assert_eq!(answers.len(), 3, "{answers:?}");
    }

    #[test]
    fn repeats_are_duplicates_and_new_numbers_are_new() {
        let mut seen = SeenNumbers::default();
        assert_eq!(seen.check("A1"), Seen::New);
        assert_eq!(seen.check("A1"), Seen::Duplicate);
        assert_eq!(seen.check("A2"), Seen::New);
        // Not adjacent and out of order: the filter knows it, but cannot prove it.
        assert_eq!(seen.check("A1"), Seen::Maybe);
        assert_eq!(seen.check("B7"), Seen::New);
    }

    #[test]
    fn ascending_numbers_are_never_deferred_even_when_the_filter_is_full() {
        let mut seen = SeenNumbers::saturated();
        for i in 0..1000 {
            assert_eq!(seen.check(&format!("N{i:05}")), Seen::New);
        }
        assert_eq!(seen.check("N00999"), Seen::Duplicate);
        // An adjacent repeat does not break the order.
        assert_eq!(seen.check("N01000"), Seen::New);
        // Out of order once: from now on a "maybe" stays a maybe.
        assert_eq!(seen.check("N00001"), Seen::Maybe);
        assert_eq!(seen.check("N99999"), Seen::Maybe);
    }

    #[test]
    fn a_million_distinct_numbers_in_random_order_raise_few_false_alarms() {
        let mut seen = SeenNumbers::default();
        let mut maybes = 0;
        // Shuffled by multiplying with an odd constant modulo 2^20.
        for i in 0u64..1_000_000 {
            let n = i.wrapping_mul(0x9E37_79B9) & 0xF_FFFF;
            if seen.check(&format!("ORD-{n:07}")) != Seen::New {
                maybes += 1;
            }
        }
        assert!(maybes < 20, "{maybes} false alarms");
    }
}
