//! The refund journal (`kksync_refund_intents` in the state store, migration 2).
//!
//! The rule that makes refunds happen exactly once: **an intent is committed before its refund
//! is sent**, and the result is committed before it is written back into the source. A run that
//! dies between sending and writing back leaves a `pending` intent with the exact request it
//! sent; the next run reconciles it with the provider (look up, or replay under the same
//! idempotency key) instead of sending a new refund. Every write is its own committed statement
//! on a store opened with `synchronous=FULL`.

use std::fmt;

use rusqlite::{OptionalExtension, params};

use super::model::Provider;
use crate::state::{StateDb, StateError, now_rfc3339};

/// Where an intent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentState {
    /// Recorded before sending; the outcome is unknown until the provider answers.
    Pending,
    /// The provider confirmed the refund.
    Done,
    /// The provider refused it; nothing was created, so a later run may try again.
    Rejected,
    /// A refund may exist but kksync cannot tell; nothing is sent until a human decides.
    Doubt,
}

impl IntentState {
    fn as_str(self) -> &'static str {
        match self {
            IntentState::Pending => "pending",
            IntentState::Done => "done",
            IntentState::Rejected => "rejected",
            IntentState::Doubt => "doubt",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "done" => IntentState::Done,
            "rejected" => IntentState::Rejected,
            "doubt" => IntentState::Doubt,
            // Anything unknown is treated as the cautious case: reconcile before sending.
            _ => IntentState::Pending,
        }
    }
}

impl fmt::Display for IntentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// Who refunds.
    pub provider: Provider,
    /// The shop's reference.
    pub external_reference: String,
    /// The shop's order number.
    pub order_number: String,
    /// What the provider's URL names (order number, or Ratepay transaction id).
    pub target: String,
    /// Where it stands.
    pub state: IntentState,
    /// Fingerprint of the row when the request was recorded.
    pub fingerprint: i64,
    /// The exact JSON body sent.
    pub request: String,
    /// Ratepay: the `Idempotency-Key` the request is sent with.
    pub idempotency_key: Option<String>,
    /// Ratepay: the generation the key was derived from.
    pub key_generation: i64,
    /// The provider's refund id, once known.
    pub refund_id: Option<String>,
    /// Komfortkasse's `referenceNumber`, once known.
    pub reference_number: Option<String>,
    /// The refund's status, once known.
    pub status: Option<String>,
    /// The last error.
    pub error: Option<String>,
    /// When the intent was (last) recorded.
    pub created_at: String,
    /// When its request was first sent.
    pub sent_at: Option<String>,
    /// Requests sent for it, over all runs.
    pub attempts: i64,
}

/// What a new (or renewed) intent records.
#[derive(Debug, Clone)]
pub struct NewIntent<'a> {
    /// Who refunds.
    pub provider: Provider,
    /// The shop's reference.
    pub external_reference: &'a str,
    /// The order.
    pub order_number: &'a str,
    /// What the provider's URL names.
    pub target: &'a str,
    /// Fingerprint of the row.
    pub fingerprint: i64,
    /// The body about to be sent.
    pub request: &'a str,
    /// Ratepay's key.
    pub idempotency_key: Option<&'a str>,
    /// Its generation.
    pub key_generation: i64,
}

/// What the provider reported for a refund that exists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Confirmed {
    /// The refund id.
    pub refund_id: String,
    /// Komfortkasse's reference number.
    pub reference_number: Option<String>,
    /// Its status.
    pub status: String,
}

/// The journal on an open state store.
pub struct Journal {
    db: StateDb,
    run_id: Option<i64>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("db", &self.db)
            .field("run_id", &self.run_id)
            .finish()
    }
}

const COLUMNS: &str = "provider, external_reference, order_number, state, fingerprint, request, \
    idempotency_key, key_generation, refund_id, reference_number, status, error, created_at, \
    sent_at, attempts, target";

impl Journal {
    /// Wraps an open state store. Its connection commits with `synchronous=FULL`, whatever the
    /// store's default: an intent must survive even a power loss before its refund is sent,
    /// because for AfterPay a lost intent could mean a second refund.
    pub fn new(db: StateDb) -> Result<Self, StateError> {
        db.connection()
            .pragma_update(None, "synchronous", "FULL")
            .map_err(db.error("setting synchronous=FULL for the refund journal"))?;
        Ok(Journal { db, run_id: None })
    }

    /// The state store (run history).
    pub fn db(&self) -> &StateDb {
        &self.db
    }

    /// Remembers which run touches the rows from now on.
    pub fn set_run(&mut self, run_id: i64) {
        self.run_id = Some(run_id);
    }

    /// The intent of a refund, if one was ever recorded.
    pub fn get(
        &self,
        provider: Provider,
        external_reference: &str,
    ) -> Result<Option<Intent>, StateError> {
        self.db
            .connection()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM kksync_refund_intents
                     WHERE provider = ?1 AND external_reference = ?2"
                ),
                params![provider.as_str(), external_reference],
                |row| {
                    let provider: String = row.get(0)?;
                    let state: String = row.get(3)?;
                    Ok(Intent {
                        provider: Provider::parse(&provider).unwrap_or(Provider::Komfortkasse),
                        external_reference: row.get(1)?,
                        order_number: row.get(2)?,
                        state: IntentState::parse(&state),
                        fingerprint: row.get(4)?,
                        request: row.get(5)?,
                        idempotency_key: row.get(6)?,
                        key_generation: row.get(7)?,
                        refund_id: row.get(8)?,
                        reference_number: row.get(9)?,
                        status: row.get(10)?,
                        error: row.get(11)?,
                        created_at: row.get(12)?,
                        sent_at: row.get(13)?,
                        attempts: row.get(14)?,
                        target: row.get(15)?,
                    })
                },
            )
            .optional()
            .map_err(self.db.error("reading the refund journal"))
    }

    /// Intents of *other* providers for this reference that are not refusals: a reference
    /// names one refund, so a row that switches provider must not refund a second time.
    pub fn other_providers(
        &self,
        provider: Provider,
        external_reference: &str,
    ) -> Result<Vec<(Provider, IntentState)>, StateError> {
        let mut statement = self
            .db
            .connection()
            .prepare(
                "SELECT provider, state FROM kksync_refund_intents
                 WHERE external_reference = ?1 AND provider <> ?2 AND state <> 'rejected'",
            )
            .map_err(self.db.error("reading the refund journal"))?;
        let rows = statement
            .query_map(params![external_reference, provider.as_str()], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.db.error("reading the refund journal"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(p, s)| Provider::parse(&p).map(|p| (p, IntentState::parse(&s))))
            .collect())
    }

    /// Records (or renews) an intent as `pending` with the request about to be sent. Committed
    /// when this returns: only then may the request go out.
    pub fn record_pending(&self, intent: &NewIntent<'_>) -> Result<(), StateError> {
        let now = now_rfc3339();
        self.db
            .connection()
            .execute(
                "INSERT INTO kksync_refund_intents (provider, external_reference, order_number, target,
                     state, fingerprint, request, idempotency_key, key_generation, created_at, sent_at,
                     updated_at, last_run)
                 VALUES (?1, ?2, ?3, ?10, 'pending', ?4, ?5, ?6, ?7, ?8, ?8, ?8, ?9)
                 ON CONFLICT (provider, external_reference) DO UPDATE SET
                     order_number = excluded.order_number, target = excluded.target, state = 'pending',
                     fingerprint = excluded.fingerprint, request = excluded.request,
                     idempotency_key = excluded.idempotency_key,
                     key_generation = excluded.key_generation, refund_id = NULL,
                     reference_number = NULL, status = NULL, error = NULL,
                     created_at = excluded.created_at, sent_at = excluded.sent_at,
                     updated_at = excluded.updated_at, last_run = excluded.last_run",
                params![
                    intent.provider.as_str(),
                    intent.external_reference,
                    intent.order_number,
                    intent.fingerprint,
                    intent.request,
                    intent.idempotency_key,
                    intent.key_generation,
                    now,
                    self.run_id,
                    intent.target,
                ],
            )
            .map_err(self.db.error("recording a refund intent"))?;
        Ok(())
    }

    /// Adds the requests a send made to the intent's count.
    pub fn add_attempts(
        &self,
        provider: Provider,
        external_reference: &str,
        attempts: u32,
    ) -> Result<(), StateError> {
        self.db
            .connection()
            .execute(
                "UPDATE kksync_refund_intents SET attempts = attempts + ?3
                 WHERE provider = ?1 AND external_reference = ?2",
                params![provider.as_str(), external_reference, attempts],
            )
            .map_err(self.db.error("counting refund requests"))?;
        Ok(())
    }

    /// Records that the provider confirmed the refund; returns when it was sent (RFC 3339).
    pub fn mark_done(
        &self,
        provider: Provider,
        external_reference: &str,
        order_number: &str,
        confirmed: &Confirmed,
    ) -> Result<String, StateError> {
        let now = now_rfc3339();
        // A refund found at the provider without an intent of ours (e.g. a lost state store)
        // gets a row too, so later runs know it.
        self.db
            .connection()
            .execute(
                "INSERT INTO kksync_refund_intents (provider, external_reference, order_number, target,
                     state, fingerprint, request, refund_id, reference_number, status, created_at,
                     sent_at, updated_at, last_run)
                 VALUES (?1, ?2, ?3, ?3, 'done', 0, '', ?4, ?5, ?6, ?7, ?7, ?7, ?8)
                 ON CONFLICT (provider, external_reference) DO UPDATE SET
                     state = 'done', refund_id = excluded.refund_id,
                     reference_number = excluded.reference_number, status = excluded.status,
                     error = NULL, sent_at = COALESCE(kksync_refund_intents.sent_at, excluded.sent_at),
                     updated_at = excluded.updated_at, last_run = excluded.last_run",
                params![
                    provider.as_str(),
                    external_reference,
                    order_number,
                    confirmed.refund_id,
                    confirmed.reference_number,
                    confirmed.status,
                    now,
                    self.run_id,
                ],
            )
            .map_err(self.db.error("recording a confirmed refund"))?;
        Ok(self
            .get(provider, external_reference)?
            .and_then(|i| i.sent_at)
            .unwrap_or(now))
    }

    /// Records a final refusal (nothing was created) or a doubt, with its message.
    pub fn mark(
        &self,
        provider: Provider,
        external_reference: &str,
        state: IntentState,
        error: &str,
    ) -> Result<(), StateError> {
        self.db
            .connection()
            .execute(
                "UPDATE kksync_refund_intents SET state = ?3, error = ?4, updated_at = ?5, last_run = ?6
                 WHERE provider = ?1 AND external_reference = ?2",
                params![
                    provider.as_str(),
                    external_reference,
                    state.as_str(),
                    error,
                    now_rfc3339(),
                    self.run_id
                ],
            )
            .map_err(self.db.error("recording a refund outcome"))?;
        Ok(())
    }

    /// Notes the last error of a pending intent without changing its state (given up for now).
    pub fn note_error(
        &self,
        provider: Provider,
        external_reference: &str,
        error: &str,
    ) -> Result<(), StateError> {
        self.db
            .connection()
            .execute(
                "UPDATE kksync_refund_intents SET error = ?3, updated_at = ?4, last_run = ?5
                 WHERE provider = ?1 AND external_reference = ?2",
                params![
                    provider.as_str(),
                    external_reference,
                    error,
                    now_rfc3339(),
                    self.run_id
                ],
            )
            .map_err(self.db.error("recording a refund error"))?;
        Ok(())
    }

    /// Records a refreshed status of a confirmed refund.
    pub fn update_status(
        &self,
        provider: Provider,
        external_reference: &str,
        status: &str,
    ) -> Result<(), StateError> {
        self.db
            .connection()
            .execute(
                "UPDATE kksync_refund_intents SET status = ?3, updated_at = ?4, last_run = ?5
                 WHERE provider = ?1 AND external_reference = ?2",
                params![
                    provider.as_str(),
                    external_reference,
                    status,
                    now_rfc3339(),
                    self.run_id
                ],
            )
            .map_err(self.db.error("recording a refund status"))?;
        Ok(())
    }

    /// Refund ids of this provider and order that other intents already account for (so a
    /// reconciliation does not claim one of them).
    pub fn claimed_refund_ids(
        &self,
        provider: Provider,
        order_number: &str,
        except_reference: &str,
    ) -> Result<Vec<String>, StateError> {
        let mut statement = self
            .db
            .connection()
            .prepare(
                "SELECT refund_id FROM kksync_refund_intents
                 WHERE provider = ?1 AND order_number = ?2 AND external_reference <> ?3
                   AND refund_id IS NOT NULL",
            )
            .map_err(self.db.error("reading the refund journal"))?;
        let ids = statement
            .query_map(
                params![provider.as_str(), order_number, except_reference],
                |row| row.get::<_, String>(0),
            )
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.db.error("reading the refund journal"))?;
        // AfterPay ids may hold several refund numbers, `|`-separated.
        Ok(ids
            .iter()
            .flat_map(|id| id.split('|').map(str::to_string))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db"), false).unwrap();
        (dir, Journal::new(db).unwrap())
    }

    fn new_intent<'a>(reference: &'a str, request: &'a str) -> NewIntent<'a> {
        NewIntent {
            provider: Provider::Ratepay,
            external_reference: reference,
            order_number: "A-1",
            target: "tx-1",
            fingerprint: 42,
            request,
            idempotency_key: Some("key-0"),
            key_generation: 0,
        }
    }

    #[test]
    fn an_intent_is_pending_until_confirmed_and_survives_reopening() {
        let (dir, journal) = journal();
        assert_eq!(journal.get(Provider::Ratepay, "RMA-1").unwrap(), None);
        journal
            .record_pending(&new_intent("RMA-1", r#"{"gross_amount":1}"#))
            .unwrap();
        journal.add_attempts(Provider::Ratepay, "RMA-1", 2).unwrap();
        drop(journal);
        // Another process (the next run) sees the committed intent.
        let journal =
            Journal::new(StateDb::open(&dir.path().join("state.db"), false).unwrap()).unwrap();
        let intent = journal.get(Provider::Ratepay, "RMA-1").unwrap().unwrap();
        assert_eq!(intent.state, IntentState::Pending);
        assert_eq!(intent.request, r#"{"gross_amount":1}"#);
        assert_eq!(intent.idempotency_key.as_deref(), Some("key-0"));
        assert_eq!(intent.attempts, 2);
        assert_eq!(intent.target, "tx-1");
        let first_sent = intent.sent_at.clone().unwrap();

        let confirmed = Confirmed {
            refund_id: "rp-1".into(),
            reference_number: None,
            status: "REFUNDED".into(),
        };
        let sent_at = journal
            .mark_done(Provider::Ratepay, "RMA-1", "A-1", &confirmed)
            .unwrap();
        assert_eq!(sent_at, first_sent);
        let intent = journal.get(Provider::Ratepay, "RMA-1").unwrap().unwrap();
        assert_eq!(intent.state, IntentState::Done);
        assert_eq!(intent.refund_id.as_deref(), Some("rp-1"));
        // The same reference with another provider is another refund.
        assert_eq!(journal.get(Provider::AfterPay, "RMA-1").unwrap(), None);
    }

    #[test]
    fn the_journal_commits_with_full_sync() {
        let (_dir, journal) = journal();
        let level: i64 = journal
            .db()
            .connection()
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .unwrap();
        assert_eq!(level, 2, "FULL");
    }

    #[test]
    fn a_refund_found_without_an_intent_is_recorded_as_done() {
        let (_dir, journal) = journal();
        let confirmed = Confirmed {
            refund_id: "30001".into(),
            reference_number: Some("KKBT00030001".into()),
            status: "NEW".into(),
        };
        journal
            .mark_done(Provider::Komfortkasse, "RMA-2", "A-2", &confirmed)
            .unwrap();
        let intent = journal
            .get(Provider::Komfortkasse, "RMA-2")
            .unwrap()
            .unwrap();
        assert_eq!(intent.state, IntentState::Done);
        assert_eq!(intent.reference_number.as_deref(), Some("KKBT00030001"));
        journal
            .update_status(Provider::Komfortkasse, "RMA-2", "PROCESSED")
            .unwrap();
        let intent = journal
            .get(Provider::Komfortkasse, "RMA-2")
            .unwrap()
            .unwrap();
        assert_eq!(intent.status.as_deref(), Some("PROCESSED"));
    }

    #[test]
    fn rejections_and_claimed_ids() {
        let (_dir, journal) = journal();
        journal.record_pending(&new_intent("RMA-3", "{}")).unwrap();
        journal
            .mark(Provider::Ratepay, "RMA-3", IntentState::Rejected, "404")
            .unwrap();
        let intent = journal.get(Provider::Ratepay, "RMA-3").unwrap().unwrap();
        assert_eq!(intent.state, IntentState::Rejected);
        assert_eq!(intent.error.as_deref(), Some("404"));
        // Renewing the intent clears the old outcome.
        journal.record_pending(&new_intent("RMA-3", "{}")).unwrap();
        let intent = journal.get(Provider::Ratepay, "RMA-3").unwrap().unwrap();
        assert_eq!((intent.state, intent.error), (IntentState::Pending, None));

        for (reference, id) in [("RMA-4", "800|801"), ("RMA-5", "802")] {
            journal
                .mark_done(
                    Provider::AfterPay,
                    reference,
                    "A-1",
                    &Confirmed {
                        refund_id: id.into(),
                        ..Confirmed::default()
                    },
                )
                .unwrap();
        }
        let mut claimed = journal
            .claimed_refund_ids(Provider::AfterPay, "A-1", "RMA-5")
            .unwrap();
        claimed.sort();
        assert_eq!(claimed, ["800", "801"]);
        assert_eq!(
            journal.other_providers(Provider::Ratepay, "RMA-4").unwrap(),
            [(Provider::AfterPay, IntentState::Done)]
        );
        // A refused intent of another provider does not block the reference.
        journal
            .mark(Provider::Ratepay, "RMA-3", IntentState::Rejected, "422")
            .unwrap();
        assert!(
            journal
                .other_providers(Provider::AfterPay, "RMA-3")
                .unwrap()
                .is_empty()
        );
    }
}
