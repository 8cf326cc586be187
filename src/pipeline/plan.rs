//! Which orders a run sends: incremental by default, everything with `--full`.

use std::time::Duration;

use crate::state::orders::{Known, is_final};

/// How a run chooses what to send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Incremental {
    /// Resend every valid order (migrations; after restoring a backup of the service).
    pub full: bool,
    /// Resend orders that are still open once their last accepted send is this old (the
    /// vendor's advice to resend open orders periodically).
    pub resend_open_after: Option<Duration>,
    /// Read back every status without a `paymentStatus` filter (see `readback`).
    pub read_back_all: bool,
}

/// Why an order is sent, or that it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Never accepted by the API.
    New,
    /// Its payload differs from the one last accepted.
    Changed,
    /// Its last send failed transiently (gave up, unconfirmed): the same payload is tried again.
    Retry,
    /// `--full`.
    Full,
    /// Still open and last sent longer ago than `--resend-open-after`.
    ResendOpen,
    /// Unchanged since the API accepted it, or unchanged since the API rejected it for good.
    Skip,
}

impl Decision {
    /// Whether the order goes into a chunk.
    pub fn sends(self) -> bool {
        self != Decision::Skip
    }
}

/// Decides for one order with payload `fingerprint`, given what the state store knows.
pub fn decide(
    known: Option<&Known>,
    fingerprint: u64,
    policy: Incremental,
    now: time::OffsetDateTime,
) -> Decision {
    if policy.full {
        return Decision::Full;
    }
    let Some(known) = known else {
        return Decision::New;
    };
    if known.last_error.is_some() && known.error_fingerprint == Some(fingerprint) {
        // A final rejection of this very payload stands until the row changes.
        return if known.error_transient {
            Decision::Retry
        } else {
            Decision::Skip
        };
    }
    if known.accepted_fingerprint != Some(fingerprint) {
        return Decision::Changed;
    }
    let open = known.payment_status.as_deref().is_none_or(|s| !is_final(s));
    if let (Some(after), true) = (policy.resend_open_after, open) {
        // Unknown when (stored by an older kksync, unreadable): resent, which is harmless.
        let due = known.accepted_at.is_none_or(|sent| now - sent >= after);
        if due {
            return Decision::ResendOpen;
        }
    }
    Decision::Skip
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: time::OffsetDateTime = datetime!(2026-11-23 02:00 UTC);

    fn accepted(fingerprint: u64, status: &str) -> Known {
        Known {
            accepted_fingerprint: Some(fingerprint),
            accepted_at: Some(datetime!(2026-11-20 02:00 UTC)),
            payment_status: Some(status.into()),
            ..Known::default()
        }
    }

    #[test]
    fn new_and_changed_orders_are_sent_unchanged_ones_are_not() {
        let policy = Incremental::default();
        assert_eq!(decide(None, 1, policy, NOW), Decision::New);
        let known = accepted(1, "UNPAID");
        assert_eq!(decide(Some(&known), 1, policy, NOW), Decision::Skip);
        assert_eq!(decide(Some(&known), 2, policy, NOW), Decision::Changed);
    }

    #[test]
    fn a_final_rejection_is_resent_only_once_the_row_changed() {
        let policy = Incremental::default();
        let rejected = Known {
            last_error: Some("rejected by the API: Invalid request".into()),
            error_fingerprint: Some(5),
            ..accepted(1, "UNPAID")
        };
        assert_eq!(decide(Some(&rejected), 5, policy, NOW), Decision::Skip);
        assert_eq!(decide(Some(&rejected), 6, policy, NOW), Decision::Changed);
        // Changed back to what the API accepted before: nothing to send.
        assert_eq!(decide(Some(&rejected), 1, policy, NOW), Decision::Skip);
        let gave_up = Known {
            error_transient: true,
            ..rejected
        };
        assert_eq!(decide(Some(&gave_up), 5, policy, NOW), Decision::Retry);
    }

    #[test]
    fn full_resends_everything_and_open_orders_are_resent_when_due() {
        let full = Incremental {
            full: true,
            ..Incremental::default()
        };
        assert_eq!(
            decide(Some(&accepted(1, "PAID")), 1, full, NOW),
            Decision::Full
        );
        let weekly = Incremental {
            resend_open_after: Some(Duration::from_secs(7 * 86_400)),
            ..Incremental::default()
        };
        let daily = Incremental {
            resend_open_after: Some(Duration::from_secs(86_400)),
            ..Incremental::default()
        };
        let open = accepted(1, "UNPAID");
        assert_eq!(decide(Some(&open), 1, weekly, NOW), Decision::Skip);
        assert_eq!(decide(Some(&open), 1, daily, NOW), Decision::ResendOpen);
        assert_eq!(
            decide(Some(&accepted(1, "PAID")), 1, daily, NOW),
            Decision::Skip
        );
    }
}
