//! The end-of-run summary printed on stderr, and the exit code it implies.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::error::exit_code;

/// Counts of one run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Rows read from the source.
    pub rows_read: u64,
    /// Rows that passed validation.
    pub rows_valid: u64,
    /// Orders sent (each once, however many attempts it took).
    pub orders_sent: u64,
    /// Orders the API stored and confirmed.
    pub accepted: u64,
    /// Rows rejected by validation or by the API, or given up on.
    pub rejected: u64,
    /// Rows not sent because the run stopped.
    pub not_sent: u64,
    /// Rejections grouped by reason.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// HTTP requests (every attempt).
    pub requests: u64,
    /// Retries among them.
    pub retries: u64,
    /// Chunks that gave up at their deadline.
    pub chunks_gave_up: u64,
    /// Chunks answered with 200.
    pub chunks_ok: u64,
    /// Accepted orders per `paymentStatus`.
    pub statuses: BTreeMap<String, u64>,
    /// Wall time of the run.
    pub wall_time: Duration,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl Summary {
    /// 0 when every row synced (or, in a dry run, validated), 3 when some were rejected.
    pub fn exit_code(&self) -> i32 {
        if self.rejected > 0 || self.not_sent > 0 {
            exit_code::ROWS_REJECTED
        } else {
            exit_code::OK
        }
    }

    pub(crate) fn add_read_stats(&mut self, stats: super::read::ReadStats) {
        self.rows_read = stats.rows;
        self.rows_valid = stats.valid;
        self.rejected += stats.rows - stats.valid;
        for (reason, count) in stats.invalid_by_reason {
            *self.rejected_by_reason.entry(reason).or_default() += count;
        }
    }

    pub(crate) fn add_send_counters(&mut self, counters: &super::send::SendCounters) {
        use std::sync::atomic::Ordering::Relaxed;
        self.requests = counters.requests.load(Relaxed);
        self.retries = counters.retries.load(Relaxed);
        self.chunks_ok = counters.chunks_ok.load(Relaxed);
        self.chunks_gave_up = counters.chunks_gave_up.load(Relaxed);
    }

    pub(crate) fn reject(&mut self, reason: String) {
        self.rejected += 1;
        *self.rejected_by_reason.entry(reason).or_default() += 1;
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = if self.dry_run {
            "kksync dry run (nothing sent, nothing written)"
        } else {
            "kksync sync summary"
        };
        writeln!(f, "{title}")?;
        writeln!(f, "  rows read     {}", self.rows_read)?;
        writeln!(f, "  valid         {}", self.rows_valid)?;
        writeln!(f, "  sent          {}", self.orders_sent)?;
        writeln!(f, "  accepted      {}", self.accepted)?;
        writeln!(f, "  rejected      {}", self.rejected)?;
        for (reason, count) in &self.rejected_by_reason {
            writeln!(f, "    {count:>6}  {reason}")?;
        }
        if self.not_sent > 0 {
            writeln!(
                f,
                "  not sent      {} (the run stopped; a re-run sends them)",
                self.not_sent
            )?;
        }
        writeln!(
            f,
            "  requests      {} ({} retries)",
            self.requests, self.retries
        )?;
        writeln!(f, "  wall time     {:.2}s", self.wall_time.as_secs_f64())?;
        if !self.statuses.is_empty() {
            writeln!(f, "  paymentStatus")?;
            for (status, count) in &self.statuses {
                writeln!(f, "    {count:>6}  {status}")?;
            }
        }
        Ok(())
    }
}
