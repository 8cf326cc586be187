//! One sync run: read → validate → chunk → rate limit → send with retries → write back.
//!
//! The stages are connected by bounded channels, so memory stays flat whatever the size of the
//! source: the reader runs on a blocking thread, at most `concurrency` chunks are in flight, and
//! results are written back in source order as soon as their chunk is done.

pub mod limit;
pub mod read;
pub mod retry;
pub mod send;
pub mod summary;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use self::limit::Limiter;
use self::read::{Batch, read_batches};
use self::retry::RetryPolicy;
use self::send::{OrderOutcome, SendCounters, Sender, StopReason, chunk_body};
pub use self::summary::Summary;
use crate::api::ApiClient;
use crate::config::SyncConfig;
use crate::error::Error;
use crate::order::{PreparedOrder, Rules};
use crate::source::{self, FinishedRow, ResultSink, RowResult, SourceError};

/// What one batch came to.
struct Processed {
    rows: Vec<FinishedRow>,
    sent: u64,
    accepted: u64,
    not_sent: u64,
    statuses: BTreeMap<String, u64>,
    failures: Vec<String>,
    dry_run_body: Option<Bytes>,
    estimated_rows: Option<u64>,
}

/// Runs `kksync sync` and returns its summary. Fatal problems (source unreadable, 401, API
/// unreachable, write-back failed) are errors; everything acknowledged before them is still
/// written back.
pub async fn run(config: &SyncConfig) -> Result<Summary, Error> {
    let (summary, result) = run_with_summary(config).await;
    result.map(|()| summary)
}

/// As [`run`], but the summary of what was done comes back with a fatal error too (for the run
/// report and metrics of a failed run).
pub async fn run_with_summary(config: &SyncConfig) -> (Summary, Result<(), Error>) {
    let started = Instant::now();
    let mut summary = Summary {
        dry_run: config.dry_run,
        ..Summary::default()
    };
    let result = run_into(config, &mut summary).await;
    summary.wall_time = started.elapsed();
    (summary, result)
}

async fn run_into(config: &SyncConfig, summary: &mut Summary) -> Result<(), Error> {
    let rules = Rules::for_today(crate::dates::berlin_today());
    let concurrency = config.send.concurrency;
    // A dry run writes nothing, so it does not need to keep other runs out.
    let _lock = if config.dry_run {
        None
    } else {
        Some(crate::run_lock::acquire(&config.source.path)?)
    };
    let sender = build_sender(config)?;
    tracing::info!(
        source = %config.source.path.display(),
        format = ?config.source.format,
        api_url = config.api.as_ref().map(|api| api.base_url.as_str()).unwrap_or("-"),
        dry_run = config.dry_run,
        chunk_size = config.send.chunk_size,
        rate = config.send.rate_per_second,
        concurrency,
        "sync started"
    );
    let signals = sender
        .clone()
        .map(|sender| tokio::spawn(stop_on_signal(sender, config.send.stop_timeout)));

    let settings = config.source.clone();
    let read_only = config.dry_run;
    let (mut source, sink) =
        tokio::task::spawn_blocking(move || source::open(&settings, read_only))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;

    // Stage 1: read and validate on a blocking thread.
    let (batch_tx, mut batch_rx) = mpsc::channel::<Batch>(concurrency + 1);
    let chunk_size = config.send.chunk_size;
    let reader = tokio::task::spawn_blocking(move || {
        read_batches(source.as_mut(), &rules, chunk_size, &batch_tx)
    });

    // Stage 3: write back on a blocking thread, in source order.
    let (write_tx, write_rx) = mpsc::channel::<Vec<FinishedRow>>(2);
    let writer = sink.map(|sink| tokio::task::spawn_blocking(move || write_back(sink, write_rx)));

    // Stage 2: send, `concurrency` chunks at a time; `buffered` yields them in source order.
    let progress = progress_bar(config.progress);
    let batches = futures::stream::poll_fn(move |cx| batch_rx.poll_recv(cx));
    let mut processed = batches
        .map(|batch| process(sender.as_deref(), batch))
        .buffered(concurrency);

    let mut changed = false;
    let mut chunks = 0u64;
    while let Some(batch) = processed.next().await {
        if let Some(body) = &batch.dry_run_body
            && print_line(body).is_err()
        {
            break; // Broken pipe: the reader of the preview has gone away.
        }
        changed |= batch.rows.iter().any(|r| r.result != RowResult::Untouched);
        tally(summary, &batch);
        chunks += u64::from(!batch.rows.is_empty());
        if let Some(total) = batch.estimated_rows
            && progress.length().is_none()
            && !progress.is_hidden()
        {
            progress.set_length(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:20} {human_pos}/~{human_len} rows {per_sec} ETA {eta} {msg}",
            ) {
                progress.set_style(style);
            }
        }
        progress.inc(batch.rows.len() as u64);
        progress.set_message(format!("{chunks} chunks, {} rejected", summary.rejected));
        if writer.is_some() && write_tx.send(batch.rows).await.is_err() {
            break; // The writer failed; its error is reported below.
        }
    }
    drop(processed);
    drop(write_tx);
    progress.finish_and_clear();
    if let Some(signals) = signals {
        signals.abort();
    }

    let read_stats = reader.await.map_err(|e| Error::Internal(e.to_string()))?;
    let written = match writer {
        Some(writer) => Some(writer.await.map_err(|e| Error::Internal(e.to_string()))?),
        None => None,
    };
    let read_stats = complete_write_back(read_stats, written, changed)?;
    summary.add_read_stats(read_stats);
    if let Some(sender) = &sender {
        summary.add_send_counters(sender.counters());
        if let Some(error) = stop_error(sender.stop_reason(), sender.counters()) {
            return Err(error);
        }
    }
    Ok(())
}

/// The first SIGTERM or SIGINT stops the run gracefully: no new chunk or retry starts, requests
/// in flight get `grace` to finish, and what they acknowledge is written back. A second signal,
/// or the end of the grace period, abandons them.
async fn stop_on_signal(sender: Arc<Sender>, grace: std::time::Duration) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Both handlers are installed before the first signal can arrive.
        let (Ok(mut term), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!(
                "cannot install signal handlers; SIGTERM will end the run without a write-back"
            );
            return;
        };
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::warn!(
            "{first}: stopping; requests in flight have {}s to finish",
            grace.as_secs()
        );
        sender.interrupt(first);
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
        sender.interrupt("SIGINT");
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    sender.abort();
}

/// The sender, unless this is a dry run (which needs no API at all).
fn build_sender(config: &SyncConfig) -> Result<Option<Arc<Sender>>, Error> {
    let (Some(api), false) = (&config.api, config.dry_run) else {
        return Ok(None);
    };
    let concurrency = config.send.concurrency;
    let client = ApiClient::new(api, concurrency).map_err(Error::UnexpectedApi)?;
    let limiter = Arc::new(Limiter::new(config.send.rate_per_second, config.send.burst));
    let counters = Arc::new(SendCounters::default());
    let policy = RetryPolicy::default();
    Ok(Some(Arc::new(Sender::new(
        client,
        limiter,
        policy,
        config.send.deadline,
        concurrency,
        counters,
    ))))
}

fn print_line(body: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(body)?;
    out.write_all(b"\n")
}

/// Commits the write-back only when the whole source was read: a CSV cut short would lose its
/// remaining rows. Otherwise the source is left as it was.
fn complete_write_back(
    read: Result<read::ReadStats, SourceError>,
    written: Option<Result<Box<dyn ResultSink>, SourceError>>,
    changed: bool,
) -> Result<read::ReadStats, Error> {
    match (read, written) {
        (_, Some(Err(error))) => Err(error.into()),
        (Ok(stats), Some(Ok(sink))) if stats.complete => {
            sink.finish(changed)?;
            Ok(stats)
        }
        (Ok(stats), Some(Ok(sink))) => {
            sink.finish(false)?;
            Ok(stats)
        }
        (Ok(stats), None) => Ok(stats),
        (Err(error), Some(Ok(sink))) => {
            sink.finish(false)?;
            Err(error.into())
        }
        (Err(error), None) => Err(error.into()),
    }
}

fn write_back(
    mut sink: Box<dyn ResultSink>,
    mut rows: mpsc::Receiver<Vec<FinishedRow>>,
) -> Result<Box<dyn ResultSink>, SourceError> {
    while let Some(batch) = rows.blocking_recv() {
        sink.write(&batch)?;
    }
    Ok(sink)
}

fn progress_bar(wanted: bool) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {human_pos} rows {msg} [{elapsed}]")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

async fn process(sender: Option<&Sender>, batch: Batch) -> Processed {
    let orders: Vec<&PreparedOrder> = batch.orders.iter().map(|(_, order)| order).collect();
    let (outcomes, dry_run_body) = match sender {
        Some(sender) => (sender.send_chunk(&orders).await, None),
        None => (
            vec![OrderOutcome::NotSent; orders.len()],
            (!orders.is_empty()).then(|| chunk_body(&orders)),
        ),
    };
    let mut results = batch.results;
    let mut processed = Processed {
        rows: Vec::new(),
        sent: 0,
        accepted: 0,
        not_sent: 0,
        statuses: BTreeMap::new(),
        failures: Vec::new(),
        dry_run_body,
        estimated_rows: batch.estimated_rows,
    };
    for ((index, _), outcome) in batch.orders.iter().zip(outcomes) {
        let result = match outcome {
            OrderOutcome::Stored(status) => {
                processed.sent += 1;
                processed.accepted += 1;
                count_status(&mut processed.statuses, &status);
                RowResult::Synced { status }
            }
            OrderOutcome::Failed(error) => {
                processed.sent += 1;
                processed.failures.push(reason_of(&error));
                RowResult::Failed { error }
            }
            OrderOutcome::NotSent => {
                if sender.is_some() {
                    processed.not_sent += 1;
                }
                RowResult::Untouched
            }
        };
        if let Some(slot) = results.get_mut(*index) {
            *slot = Some(result);
        }
    }
    processed.rows = batch
        .rows
        .into_iter()
        .zip(results)
        .map(|(source, result)| FinishedRow {
            source,
            result: result.unwrap_or(RowResult::Untouched),
        })
        .collect();
    processed
}

/// Counts a status, allocating its name only the first time it is seen.
fn count_status(counts: &mut BTreeMap<String, u64>, status: &str) {
    match counts.get_mut(status) {
        Some(count) => *count += 1,
        None => {
            counts.insert(status.to_string(), 1);
        }
    }
}

/// Groups API failures: the attempt count of "gave up after N attempts" would split groups.
fn reason_of(error: &str) -> String {
    match error
        .strip_prefix("gave up after ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((_, last_error)) => format!("gave up: {last_error}"),
        None => error.to_string(),
    }
}

fn tally(summary: &mut Summary, batch: &Processed) {
    summary.orders_sent += batch.sent;
    summary.accepted += batch.accepted;
    summary.not_sent += batch.not_sent;
    for (status, count) in &batch.statuses {
        *summary.statuses.entry(status.clone()).or_default() += count;
    }
    for reason in &batch.failures {
        summary.reject(reason.clone());
    }
}

/// Turns the sender's state at the end of a run into the run's error, if it must fail.
pub fn stop_error(reason: Option<StopReason>, counters: &SendCounters) -> Option<Error> {
    match reason {
        Some(StopReason::Unauthorized(message)) => Some(Error::Unauthorized { message }),
        Some(StopReason::Unexpected(error)) => Some(Error::UnexpectedApi(error)),
        Some(StopReason::Unreachable(last_error)) => Some(Error::ApiUnreachable { last_error }),
        Some(StopReason::Interrupted(signal)) => Some(Error::Interrupted { signal }),
        None => {
            let ok = counters.chunks_ok.load(Ordering::Relaxed);
            let gave_up = counters.chunks_gave_up.load(Ordering::Relaxed);
            (ok == 0 && gave_up > 0).then(|| Error::ApiUnreachable {
                last_error: "every chunk gave up at its deadline".into(),
            })
        }
    }
}
