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
    /// Rows that carry an error after the run: rejected by validation or by the API, or given
    /// up on (in this run or, unchanged since, in an earlier one).
    pub rejected: u64,
    /// Orders the API refused or that were given up on in this run.
    pub api_failed: u64,
    /// Valid orders not sent because nothing changed since the API last answered for them.
    pub unchanged: u64,
    /// Orders in the status read-back (`GET /orders`).
    pub read_back_orders: u64,
    /// Of those, orders whose status changed since the last run.
    pub refreshed: u64,
    /// Rows whose status or error in the source changed.
    pub rows_written: u64,
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
    /// Rows per `paymentStatus` after the run (in a dry run: empty).
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

    pub(crate) fn add_read_stats(&mut self, stats: &super::read::ReadStats) {
        self.rows_read = stats.rows;
        self.rows_valid = stats.valid;
        self.unchanged = stats.unchanged;
        if self.dry_run {
            // No write-back follows: the rejections are the validation's.
            self.rejected = stats.rows - stats.valid;
            self.rejected_by_reason = stats.invalid_by_reason.clone();
        }
    }

    pub(crate) fn add_write_back(&mut self, stats: super::writeback::WriteBackStats) {
        self.rejected = stats.rejected;
        self.rejected_by_reason = stats.rejected_by_reason;
        self.statuses = stats.statuses;
        self.rows_written = stats.changed;
    }

    /// The counts as a JSON object (run history).
    pub fn counts_json(&self) -> serde_json::Value {
        serde_json::json!({
            "rows_read": self.rows_read,
            "rows_valid": self.rows_valid,
            "unchanged": self.unchanged,
            "orders_sent": self.orders_sent,
            "accepted": self.accepted,
            "api_failed": self.api_failed,
            "rejected": self.rejected,
            "not_sent": self.not_sent,
            "read_back_orders": self.read_back_orders,
            "refreshed": self.refreshed,
            "rows_written": self.rows_written,
            "requests": self.requests,
            "retries": self.retries,
            "wall_time_seconds": self.wall_time.as_secs_f64(),
        })
    }

    pub(crate) fn add_send_counters(&mut self, counters: &super::send::SendCounters) {
        use std::sync::atomic::Ordering::Relaxed;
        self.requests = counters.requests.load(Relaxed);
        self.retries = counters.retries.load(Relaxed);
        self.chunks_ok = counters.chunks_ok.load(Relaxed);
        self.chunks_gave_up = counters.chunks_gave_up.load(Relaxed);
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
        if !self.dry_run {
            writeln!(
                f,
                "  read back     {} orders listed by the API ({} statuses changed)",
                self.read_back_orders, self.refreshed
            )?;
        }
        writeln!(f, "  unchanged     {} (not sent)", self.unchanged)?;
        let sent = if self.dry_run { "would send" } else { "sent" };
        writeln!(f, "  {sent:<13} {}", self.orders_sent)?;
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
