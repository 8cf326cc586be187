//! The counts of a refunds run and the exit code they mean.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::model::Provider;
use crate::error::exit_code;

/// What a refunds run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefundSummary {
    /// Rows read.
    pub rows: u64,
    /// Refunds created in this run, per provider.
    pub created: BTreeMap<Provider, u64>,
    /// Refunds that existed already (found at the provider or replayed); nothing new created.
    pub found: u64,
    /// Confirmed Komfortkasse refunds whose status was read again.
    pub refreshed: u64,
    /// Rows already done in an earlier run (nothing to do).
    pub unchanged: u64,
    /// Rows refused by validation or by the provider, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Refunds given up on after retries (reconciled by the next run).
    pub gave_up: u64,
    /// Refunds in doubt (a human decides).
    pub in_doubt: u64,
    /// Rows for a provider without credentials.
    pub missing_credentials: u64,
    /// Rows not processed because the run stopped or a provider could not be used.
    pub not_sent: u64,
    /// Dry run: valid rows that would be sent.
    pub would_send: u64,
    /// Confirmed refunds whose status could not be read again (noted in the row; not a
    /// rejection).
    pub refresh_failed: u64,
    /// Requests sent (every attempt).
    pub requests: u64,
    /// Retries among them.
    pub retries: u64,
    /// Dry run: nothing was sent or written.
    pub dry_run: bool,
}

impl RefundSummary {
    /// Counts a rejection under its reason.
    pub fn reject(&mut self, reason: String) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    /// Rows that need attention.
    pub fn problems(&self) -> u64 {
        self.rejected.values().sum::<u64>() + self.gave_up + self.in_doubt
    }

    /// The exit code of a run that ended without a fatal error: 2 when credentials were
    /// missing for some rows, 3 when rows were rejected, given up on or are in doubt, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.missing_credentials > 0 {
            exit_code::USAGE
        } else if self.problems() > 0 {
            exit_code::ROWS_REJECTED
        } else {
            exit_code::OK
        }
    }

    /// The counts as JSON, for the run history.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Display for RefundSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let created: u64 = self.created.values().sum();
        writeln!(
            f,
            "kksync refunds{}: {} rows",
            if self.dry_run { " (dry run)" } else { "" },
            self.rows
        )?;
        let per_provider: Vec<String> = self
            .created
            .iter()
            .map(|(p, n)| format!("{p} {n}"))
            .collect();
        writeln!(
            f,
            "  created   {created}{}",
            if per_provider.is_empty() {
                String::new()
            } else {
                format!(" ({})", per_provider.join(", "))
            }
        )?;
        writeln!(
            f,
            "  existing  {} (found at the provider, not sent again)",
            self.found
        )?;
        writeln!(f, "  refreshed {} (status read again)", self.refreshed)?;
        if self.refresh_failed > 0 {
            writeln!(
                f,
                "  not refreshed {} (status could not be read; tried again next run)",
                self.refresh_failed
            )?;
        }
        writeln!(f, "  unchanged {}", self.unchanged)?;
        let rejected: u64 = self.rejected.values().sum();
        writeln!(f, "  rejected  {rejected}")?;
        for (reason, count) in &self.rejected {
            writeln!(f, "    {count:>5}  {reason}")?;
        }
        if self.gave_up > 0 {
            writeln!(
                f,
                "  gave up   {} (the next run checks before sending)",
                self.gave_up
            )?;
        }
        if self.in_doubt > 0 {
            writeln!(
                f,
                "  in doubt  {} (see refundError: a human decides)",
                self.in_doubt
            )?;
        }
        if self.missing_credentials > 0 {
            writeln!(f, "  no credentials {}", self.missing_credentials)?;
        }
        if self.dry_run {
            writeln!(f, "  would send {}", self.would_send)?;
        }
        if self.not_sent > 0 {
            writeln!(f, "  not sent  {}", self.not_sent)?;
        }
        writeln!(
            f,
            "  requests  {} ({} retries)",
            self.requests, self.retries
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_sync_conventions() {
        let mut summary = RefundSummary::default();
        assert_eq!(summary.exit_code(), 0);
        summary.in_doubt = 1;
        assert_eq!(summary.exit_code(), 3);
        summary.missing_credentials = 1;
        assert_eq!(summary.exit_code(), 2);
        summary.reject("amount must be greater than zero".into());
        let text = summary.to_string();
        assert!(text.contains("rejected  1"), "{text}");
    }
}
