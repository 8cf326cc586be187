//! One refunds run: lock the source → open the journal → for each batch of rows: decide what
//! each row needs (nothing, a send, a reconciliation, a status refresh) → do it, a few refunds
//! at a time → write the batch's results back → finish the write-back and the run record.
//!
//! Source and journal I/O happen on the runtime's thread between the network stages: a
//! refunds file is small (a night's returns), and every journal write must be committed before
//! the next step anyway.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use time::Date;
use tokio_util::sync::CancellationToken;

use super::afterpay::{AfterPay, AfterPayClient};
use super::config::RefundsConfig;
use super::error::RefundsError;
use super::journal::{Confirmed, Intent, IntentState, Journal};
use super::komfortkasse::{self, KkClient, Komfortkasse};
use super::model::{self, Layout, Provider, Refund, RefundKey, ResultColumn, RowView};
use super::outcome::{Done, Outcome, StopReason};
use super::ratepay::{Ratepay, RatepayClient};
use super::retry::{RequestCounters, Retrier};
use super::source::{self, FinishedRow, RefundColumns, RefundSink, RowUpdate};
use super::summary::RefundSummary;
use crate::error::Error;
use crate::pipeline::limit::Limiter;
use crate::pipeline::retry::RetryPolicy;
use crate::source::SourceRow;
use crate::state::{StateDb, StateError};

/// Rows decided, sent and written back together (one SQLite transaction).
const BATCH_ROWS: usize = 32;

/// What every refund of a run shares.
pub struct Ctx {
    journal: Mutex<Journal>,
    /// Today in Europe/Berlin (the planned date must lie after it).
    pub today: Date,
    /// Days to a default planned date.
    pub waiting_days: u32,
    pause_at: Option<String>,
}

impl Ctx {
    /// Runs `f` on the journal. Never held across an `.await`.
    pub fn journal<T>(
        &self,
        f: impl FnOnce(&Journal) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let journal = match self.journal.lock() {
            Ok(journal) => journal,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&journal)
    }

    /// Test hook (`KKSYNC_TEST_PAUSE_AT`): prints `kksync: paused at <point>` and sleeps at the
    /// named point so an end-to-end test can SIGKILL the process exactly there. Does nothing
    /// unless the variable names this point. Async: it runs among the refunds in flight.
    pub async fn pause_point(&self, point: &str) {
        if self.pause_at.as_deref() == Some(point) {
            eprintln!("kksync: paused at {point}");
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

/// The providers that have credentials, and which ones were stopped in this run.
struct Providers {
    komfortkasse: Option<Komfortkasse>,
    afterpay: Option<AfterPay>,
    ratepay: Option<Ratepay>,
    stopped: Mutex<HashMap<Provider, StopReason>>,
}

impl Providers {
    fn configured(&self, provider: Provider) -> bool {
        match provider {
            Provider::Komfortkasse => self.komfortkasse.is_some(),
            Provider::AfterPay => self.afterpay.is_some(),
            Provider::Ratepay => self.ratepay.is_some(),
        }
    }

    fn is_stopped(&self, provider: Provider) -> bool {
        self.stopped
            .lock()
            .map(|s| s.contains_key(&provider))
            .unwrap_or(false)
    }

    fn stop(&self, provider: Provider, reason: StopReason) {
        if let Ok(mut stopped) = self.stopped.lock() {
            stopped.entry(provider).or_insert(reason);
        }
    }
}

/// What a row needs.
enum Plan {
    /// Nothing to send: write this and count it.
    Write(RowUpdate, Count),
    /// Send the refund (or reconcile the intent the journal has for it).
    Send(Box<Refund>, Option<Box<Intent>>),
    /// Read a confirmed Komfortkasse refund's status again.
    Refresh(RefundKey),
}

/// What became of one row: its update and how it counts.
type Executed = Result<(RowUpdate, Count), StateError>;

/// How a row counts in the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Count {
    Created(Provider),
    Found,
    Refreshed,
    Unchanged,
    Rejected(String),
    GaveUp,
    InDoubt,
    MissingCredentials,
    NotSent,
    WouldSend,
    RefreshFailed,
}

/// Runs `kksync refunds`. The summary comes back with a fatal error too.
pub async fn run(config: &RefundsConfig) -> (RefundSummary, Result<(), Error>) {
    let mut summary = RefundSummary {
        dry_run: config.dry_run,
        ..RefundSummary::default()
    };
    let result = run_into(config, &mut summary).await;
    (summary, result)
}

/// The journal. A dry run writes nothing: it reads an existing journal if there is one, else
/// uses an empty one in a scratch folder that is removed at the end.
fn open_journal(
    config: &RefundsConfig,
) -> Result<(Journal, Option<tempfile::TempDir>), RefundsError> {
    if !config.dry_run {
        let db = StateDb::open(&config.state, config.state_is_shared())?;
        return Ok((Journal::new(db)?, None));
    }
    if let Some(db) = StateDb::open_existing_read_only(&config.state)?
        && let Ok(journal) = Journal::new(db)
        && journal.get(Provider::Komfortkasse, "").is_ok()
    {
        return Ok((journal, None));
    }
    let scratch = tempfile::Builder::new()
        .prefix("kksync-dry-run-")
        .tempdir()
        .map_err(RefundsError::Scratch)?;
    let db = StateDb::open(&scratch.path().join("journal.db"), false)?;
    Ok((Journal::new(db)?, Some(scratch)))
}

async fn run_into(config: &RefundsConfig, summary: &mut RefundSummary) -> Result<(), Error> {
    // Checked first, so a mistyped path leaves no lock file or state store behind.
    if !config.source.exists() {
        return Err(crate::source::SourceError::Io {
            path: config.source.clone(),
            action: "opening",
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }
        .into());
    }
    let _lock = if config.dry_run {
        None
    } else {
        Some(crate::run_lock::acquire(&config.source)?)
    };
    let (mut journal, _scratch) = open_journal(config)?;
    let run_id = if config.dry_run {
        None
    } else {
        let id = journal
            .db()
            .begin_run(
                "refunds",
                &config.source.display().to_string(),
                &config.options_json(),
            )
            .map_err(RefundsError::from)?;
        journal.set_run(id);
        Some(id)
    };
    let counters = Arc::new(RequestCounters::default());
    let draining = CancellationToken::new();
    let abort = CancellationToken::new();
    let providers = build_providers(config, &counters, &abort)?;
    let ctx = Ctx {
        journal: Mutex::new(journal),
        today: crate::dates::berlin_today(),
        waiting_days: config.waiting_days,
        pause_at: config.pause_at.clone(),
    };
    let signal: SignalSlot = Arc::new(Mutex::new(None));
    let signals = (!config.dry_run).then(|| {
        tokio::spawn(stop_on_signal(
            Arc::clone(&signal),
            draining.clone(),
            abort.clone(),
            config.stop_timeout,
        ))
    });
    tracing::info!(
        source = %config.source.display(),
        state = %config.state.display(),
        dry_run = config.dry_run,
        "refunds started"
    );

    let result = process_source(config, &ctx, &providers, &draining, summary).await;
    if let Some(signals) = signals {
        signals.abort();
    }
    summary.requests = counters.requests.load(Ordering::Relaxed);
    summary.retries = counters.retries.load(Ordering::Relaxed);

    let result = result.and_then(|()| {
        if draining.is_cancelled() {
            let signal = signal.lock().ok().and_then(|s| *s).unwrap_or("SIGTERM");
            return Err(Error::Interrupted { signal });
        }
        let stopped = providers
            .stopped
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        match stopped.into_iter().next() {
            Some((_, StopReason::Unauthorized(message))) => {
                Err(RefundsError::Unauthorized(message).into())
            }
            Some((provider, StopReason::Unavailable(message))) => {
                Err(RefundsError::ProviderStopped(format!("{provider}: {message}")).into())
            }
            None => Ok(()),
        }
    });
    if let Some(id) = run_id {
        let code = match &result {
            Ok(()) => summary.exit_code(),
            Err(error) => error.exit_code(),
        };
        let recorded = ctx.journal(|j| j.db().finish_run(id, &summary.to_json(), code));
        if let Err(error) = recorded {
            tracing::warn!(%error, "cannot record the end of the run");
        }
    }
    result
}

fn build_providers(
    config: &RefundsConfig,
    counters: &Arc<RequestCounters>,
    abort: &CancellationToken,
) -> Result<Providers, Error> {
    let retrier = || {
        Retrier::new(
            Limiter::new(config.rate_per_second, config.burst),
            // Refunds are few and each waits for its own retries: short pauses, bounded by
            // --max-attempts and --deadline.
            RetryPolicy {
                min_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(5),
                jitter: true,
            },
            config.max_attempts,
            config.deadline,
            Arc::clone(counters),
            abort.clone(),
        )
    };
    let client_error = |e: String| Error::from(RefundsError::Client(e));
    let komfortkasse = match &config.komfortkasse_key {
        Some(key) => Some(Komfortkasse {
            client: KkClient::new(config.komfortkasse_url.clone(), key, config.request_timeout)
                .map_err(client_error)?,
            retrier: retrier(),
        }),
        None => None,
    };
    let afterpay = match &config.afterpay_key {
        Some(key) => Some(AfterPay {
            client: AfterPayClient::new(config.afterpay_url.clone(), key, config.request_timeout)
                .map_err(client_error)?,
            retrier: retrier(),
            settle: config.afterpay_settle,
        }),
        None => None,
    };
    let ratepay = match &config.ratepay {
        Some(credentials) => Some(Ratepay {
            client: RatepayClient::new(
                config.ratepay_url.clone(),
                credentials.clone(),
                config.request_timeout,
            )
            .map_err(client_error)?,
            retrier: retrier(),
        }),
        None => None,
    };
    Ok(Providers {
        komfortkasse,
        afterpay,
        ratepay,
        stopped: Mutex::new(HashMap::new()),
    })
}

/// Reads, processes and writes back every batch. The CSV is replaced only when it was read to
/// the end and something changed.
async fn process_source(
    config: &RefundsConfig,
    ctx: &Ctx,
    providers: &Providers,
    draining: &CancellationToken,
    summary: &mut RefundSummary,
) -> Result<(), Error> {
    let (mut source, sink) = source::open(
        &config.source,
        config.format,
        config.delimiter,
        config.dry_run,
    )?;
    let mut sink: Option<Box<dyn RefundSink>> = sink;
    let layout = source.layout().clone();
    let mut seen = HashSet::new();
    let mut changed = false;
    let mut complete = false;
    let outcome = async {
        loop {
            let mut batch = Vec::with_capacity(BATCH_ROWS);
            while batch.len() < BATCH_ROWS {
                match source.next_row()? {
                    Some(row) => batch.push(row),
                    None => break,
                }
            }
            if batch.is_empty() {
                if let Some(sink) = sink.as_mut() {
                    sink.write_trailing_blank_lines(source.trailing_blank_lines())?;
                }
                // Only a file written to its end may replace the source.
                complete = true;
                return Ok::<(), Error>(());
            }
            summary.rows += batch.len() as u64;
            let finished = process_batch(
                config, ctx, providers, draining, &layout, &mut seen, batch, summary,
            )
            .await?;
            changed |= finished.iter().any(|r| r.update != RowUpdate::Untouched);
            if finished
                .iter()
                .any(|r| matches!(r.update, RowUpdate::Refund(_)))
            {
                ctx.pause_point("refund-recorded").await;
            }
            if let Some(sink) = sink.as_mut() {
                sink.write(&finished)?;
            }
        }
    }
    .await;
    // A CSV cut short would lose its remaining rows: it is replaced only when read to the end.
    // What was confirmed is in the journal either way, and the next run writes it back.
    if let Some(sink) = sink {
        sink.finish(changed && complete)?;
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn process_batch(
    config: &RefundsConfig,
    ctx: &Ctx,
    providers: &Providers,
    draining: &CancellationToken,
    layout: &Layout,
    seen: &mut HashSet<String>,
    batch: Vec<SourceRow>,
    summary: &mut RefundSummary,
) -> Result<Vec<FinishedRow>, Error> {
    // Decide what each row needs (journal reads only; no network).
    let mut plans = Vec::with_capacity(batch.len());
    for row in &batch {
        plans.push(plan_row(
            config, ctx, providers, draining, layout, seen, row,
        )?);
    }
    // Send, refresh or reconcile, a few at a time. Unordered, so one refund waiting out its
    // backoff does not hold back the others; the results are put back in row order.
    let mut results: Vec<(usize, Executed)> =
        futures::stream::iter(batch.iter().zip(plans).enumerate())
            .map(|(i, (row, plan))| async move {
                (
                    i,
                    execute(ctx, providers, draining, layout, row, plan).await,
                )
            })
            .buffer_unordered(config.concurrency)
            .collect()
            .await;
    results.sort_by_key(|(i, _)| *i);
    let results = results.into_iter().map(|(_, result)| result);
    let mut finished = Vec::with_capacity(batch.len());
    for (row, result) in batch.into_iter().zip(results) {
        let (update, count_as) = result.map_err(RefundsError::from)?;
        count(summary, count_as);
        finished.push(FinishedRow {
            source: row,
            update,
        });
    }
    Ok(finished)
}

fn count(summary: &mut RefundSummary, count: Count) {
    match count {
        Count::Created(provider) => *summary.created.entry(provider).or_default() += 1,
        Count::Found => summary.found += 1,
        Count::Refreshed => summary.refreshed += 1,
        Count::Unchanged => summary.unchanged += 1,
        Count::Rejected(reason) => summary.reject(reason),
        Count::GaveUp => summary.gave_up += 1,
        Count::InDoubt => summary.in_doubt += 1,
        Count::MissingCredentials => summary.missing_credentials += 1,
        Count::NotSent => summary.not_sent += 1,
        Count::WouldSend => summary.would_send += 1,
        Count::RefreshFailed => summary.refresh_failed += 1,
    }
}

/// The result columns of a confirmed refund.
fn columns(confirmed: &Confirmed, sent_at: &str) -> RefundColumns {
    RefundColumns {
        refund_id: confirmed.refund_id.clone(),
        reference_number: confirmed.reference_number.clone().unwrap_or_default(),
        status: confirmed.status.clone(),
        sent_at: sent_at.to_string(),
    }
}

/// The update that makes a row show `wanted`, or `Untouched` when it already does.
fn show(view: RowView<'_>, wanted: RefundColumns) -> RowUpdate {
    let current = |c: ResultColumn| view.result(c).unwrap_or("");
    let same = current(ResultColumn::RefundId) == wanted.refund_id
        && current(ResultColumn::ReferenceNumber) == wanted.reference_number
        && current(ResultColumn::Status) == wanted.status
        && current(ResultColumn::SentAt) == wanted.sent_at
        && current(ResultColumn::Error).is_empty();
    if same {
        RowUpdate::Untouched
    } else {
        RowUpdate::Refund(wanted)
    }
}

fn intent_columns(intent: &Intent) -> RefundColumns {
    RefundColumns {
        refund_id: intent.refund_id.clone().unwrap_or_default(),
        reference_number: intent.reference_number.clone().unwrap_or_default(),
        status: intent.status.clone().unwrap_or_default(),
        sent_at: intent.sent_at.clone().unwrap_or_default(),
    }
}

fn plan_row(
    config: &RefundsConfig,
    ctx: &Ctx,
    providers: &Providers,
    draining: &CancellationToken,
    layout: &Layout,
    seen: &mut HashSet<String>,
    row: &SourceRow,
) -> Result<Plan, Error> {
    let write = |update, count_as| Ok(Plan::Write(update, count_as));
    if let Some(defect) = &row.defect {
        return write(
            RowUpdate::Failed(defect.message.clone()),
            Count::Rejected(defect.reason.into()),
        );
    }
    let view = RowView {
        record: &row.record,
        layout,
    };
    let key = match model::key_of(view, row.row) {
        Ok(key) => key,
        Err(problems) => {
            return write(
                RowUpdate::Failed(problems.to_string()),
                Count::Rejected(problems.reason()),
            );
        }
    };
    if !seen.insert(key.external_reference.clone()) {
        return write(
            RowUpdate::Failed(format!(
                "row {}: externalReference {:?} appears more than once; only its first row is refunded",
                row.row, key.external_reference
            )),
            Count::Rejected("externalReference appears more than once".into()),
        );
    }
    let (intent, others) = ctx
        .journal(|j| {
            Ok((
                j.get(key.provider, &key.external_reference)?,
                j.other_providers(key.provider, &key.external_reference)?,
            ))
        })
        .map_err(RefundsError::from)?;
    if let Some((other, state)) = others.first() {
        return write(
            RowUpdate::Failed(format!(
                "row {}: externalReference {:?} already names a refund with {other} ({state}); a reference names one refund, so nothing is sent to {}",
                row.row, key.external_reference, key.provider
            )),
            Count::Rejected("externalReference already used with another provider".into()),
        );
    }
    let row_refund_id = view.result(ResultColumn::RefundId);
    let refresh_or_keep = |status: &str, wanted: RefundColumns| -> Result<Plan, Error> {
        if key.provider == Provider::Komfortkasse
            && !komfortkasse::is_final(status)
            && providers.configured(Provider::Komfortkasse)
            && !config.dry_run
            && !draining.is_cancelled()
        {
            return Ok(Plan::Refresh(key.clone()));
        }
        let update = show(view, wanted);
        let count_as = Count::Unchanged;
        Ok(Plan::Write(update, count_as))
    };
    match (&intent, row_refund_id) {
        // Confirmed: nothing is ever sent again; a Komfortkasse status that can still change
        // is read again.
        (Some(intent), _) if intent.state == IntentState::Done => {
            let status = intent.status.clone().unwrap_or_default();
            return refresh_or_keep(&status, intent_columns(intent));
        }
        // The row names a refund (written back by an earlier run whose journal is gone, or
        // entered by a human to resolve a doubt): it is done.
        (_, Some(refund_id)) => {
            let status = view.result(ResultColumn::Status).unwrap_or("").to_string();
            if !config.dry_run {
                let confirmed = Confirmed {
                    refund_id: refund_id.to_string(),
                    reference_number: view
                        .result(ResultColumn::ReferenceNumber)
                        .map(str::to_string),
                    status: status.clone(),
                };
                ctx.journal(|j| {
                    j.mark_done(
                        key.provider,
                        &key.external_reference,
                        &key.order_number,
                        &confirmed,
                    )
                })
                .map_err(RefundsError::from)?;
            }
            let sent_at = view.result(ResultColumn::SentAt).unwrap_or("").to_string();
            let wanted = RefundColumns {
                refund_id: refund_id.to_string(),
                reference_number: view
                    .result(ResultColumn::ReferenceNumber)
                    .unwrap_or("")
                    .to_string(),
                status: status.clone(),
                sent_at,
            };
            return refresh_or_keep(&status, wanted);
        }
        (Some(intent), None) if intent.state == IntentState::Doubt => {
            return write(
                RowUpdate::Failed(intent.error.clone().unwrap_or_else(|| "in doubt".into())),
                Count::InDoubt,
            );
        }
        _ => {}
    }
    let refund = match model::validate(view, row.row, ctx.today) {
        Ok(refund) => refund,
        Err(problems) => {
            let mut message = problems.to_string();
            if intent
                .as_ref()
                .is_some_and(|i| i.state == IntentState::Pending)
            {
                message.push_str(
                    " (an earlier request for this refund has no known outcome yet; kksync checks it once the row is valid again)",
                );
            }
            return write(
                RowUpdate::Failed(message),
                Count::Rejected(problems.reason()),
            );
        }
    };
    // A dry run needs no credentials: it shows what would be sent.
    if config.dry_run {
        print_dry_run(&refund, ctx);
        return write(RowUpdate::Untouched, Count::WouldSend);
    }
    if !providers.configured(refund.provider) {
        return write(
            RowUpdate::Failed(RefundsConfig::missing_credentials(refund.provider)),
            Count::MissingCredentials,
        );
    }
    if draining.is_cancelled() || providers.is_stopped(refund.provider) {
        return write(RowUpdate::Untouched, Count::NotSent);
    }
    Ok(Plan::Send(Box::new(refund), intent.map(Box::new)))
}

/// A dry run prints what would be sent, one JSON object per line.
fn print_dry_run(refund: &Refund, ctx: &Ctx) {
    let planned = refund.planned_date(ctx.today, ctx.waiting_days);
    let body: serde_json::Value =
        serde_json::from_str(&refund.body(planned)).unwrap_or(serde_json::Value::Null);
    let line = serde_json::json!({
        "row": refund.row,
        "provider": refund.provider,
        "orderNumber": refund.order_number,
        "externalReference": refund.external_reference,
        "body": body,
    });
    println!("{line}");
}

async fn execute(
    ctx: &Ctx,
    providers: &Providers,
    draining: &CancellationToken,
    layout: &Layout,
    row: &SourceRow,
    plan: Plan,
) -> Executed {
    let view = RowView {
        record: &row.record,
        layout,
    };
    // A stop that came after the batch was planned: nothing new starts.
    if draining.is_cancelled() && !matches!(plan, Plan::Write(..)) {
        return Ok((RowUpdate::Untouched, Count::NotSent));
    }
    let (provider, outcome) = match plan {
        Plan::Write(update, count_as) => return Ok((update, count_as)),
        Plan::Refresh(key) => {
            let Some(kk) = &providers.komfortkasse else {
                return Ok((RowUpdate::Untouched, Count::Unchanged));
            };
            // A status that could not be read again leaves the refund as it is: the row says
            // so, but it is not a rejected refund.
            return Ok(match kk.refresh(ctx, &key).await? {
                Outcome::Refreshed(done) => (
                    show(view, columns(&done.confirmed, &done.sent_at)),
                    Count::Refreshed,
                ),
                Outcome::Stop(reason) => {
                    providers.stop(Provider::Komfortkasse, reason);
                    (RowUpdate::Untouched, Count::NotSent)
                }
                Outcome::NotSent => (RowUpdate::Untouched, Count::NotSent),
                Outcome::Rejected(message) | Outcome::GaveUp(message) | Outcome::Doubt(message) => {
                    (RowUpdate::Failed(message), Count::RefreshFailed)
                }
                Outcome::Created(done) | Outcome::Found(done) => (
                    show(view, columns(&done.confirmed, &done.sent_at)),
                    Count::Refreshed,
                ),
            });
        }
        Plan::Send(refund, intent) => {
            let intent = intent.as_deref();
            let outcome = match refund.provider {
                Provider::Komfortkasse => match &providers.komfortkasse {
                    Some(kk) => kk.refund(ctx, &refund).await?,
                    None => Outcome::NotSent,
                },
                Provider::AfterPay => match &providers.afterpay {
                    Some(ap) => ap.refund(ctx, &refund, intent).await?,
                    None => Outcome::NotSent,
                },
                Provider::Ratepay => match &providers.ratepay {
                    Some(rp) => rp.refund(ctx, &refund, intent).await?,
                    None => Outcome::NotSent,
                },
            };
            (refund.provider, outcome)
        }
    };
    let show_done = |done: &Done| show(view, columns(&done.confirmed, &done.sent_at));
    Ok(match outcome {
        Outcome::Created(done) => (show_done(&done), Count::Created(provider)),
        Outcome::Found(done) => (show_done(&done), Count::Found),
        Outcome::Refreshed(done) => (show_done(&done), Count::Refreshed),
        Outcome::Rejected(message) => {
            let mut reason = reason_of(&message);
            if !reason.to_lowercase().contains(provider.as_str()) {
                reason = format!("{provider}: {reason}");
            }
            (RowUpdate::Failed(message), Count::Rejected(reason))
        }
        Outcome::GaveUp(message) => (RowUpdate::Failed(message), Count::GaveUp),
        Outcome::Doubt(message) => (RowUpdate::Failed(message), Count::InDoubt),
        Outcome::Stop(reason) => {
            tracing::error!(%provider, ?reason, "provider stopped for this run");
            providers.stop(provider, reason);
            (RowUpdate::Untouched, Count::NotSent)
        }
        Outcome::NotSent => (RowUpdate::Untouched, Count::NotSent),
    })
}

/// Groups provider rejections: the first part of the message, without order numbers.
fn reason_of(message: &str) -> String {
    let reason = message.split(" (").next().unwrap_or(message);
    if reason.chars().count() > 80 {
        reason.chars().take(80).collect::<String>() + "…"
    } else {
        reason.to_string()
    }
}

/// The signal that started a graceful stop, once one came.
type SignalSlot = Arc<Mutex<Option<&'static str>>>;

/// The first SIGTERM or SIGINT stops the run gracefully: no new refund starts, refunds in
/// flight get `grace` to finish (their results are recorded and written back). A second
/// signal, or the end of the grace period, abandons them; what they sent is reconciled by the
/// next run.
async fn stop_on_signal(
    slot: SignalSlot,
    draining: CancellationToken,
    abort: CancellationToken,
    grace: Duration,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        if let Ok(mut slot) = slot.lock() {
            *slot = Some(first);
        }
        tracing::warn!(
            "{first}: stopping; refunds in flight have {}s to finish",
            grace.as_secs()
        );
        draining.cancel();
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        if let Ok(mut slot) = slot.lock() {
            *slot = Some("SIGINT");
        }
        draining.cancel();
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    abort.cancel();
}
