//! One sync run, in three phases, each with memory that does not grow with the source:
//!
//! 0. **read-back**: open orders the state store knows get their current `paymentStatus` from
//!    `GET /orders`, streamed into the store ([`readback`]); it runs alongside phase 1, and
//!    never overwrites a status that a send of the same run reported (that one is newer);
//! 1. **send**: the source is read and validated on a blocking thread; orders that are new,
//!    changed or failed transiently ([`plan`]) go out in chunks, `concurrency` at a time, and
//!    every chunk's answer is committed to the state store (the journal) as soon as it arrives;
//! 2. **write-back**: the source is read again and every row gets its result from the store
//!    ([`writeback`]). A partial write-back of a large CSV runs behind phase 1 instead, from
//!    the end of the read-back on, rewriting each row once its chunk is journaled ([`trail`]).
//!
//! Because the journal is committed before the write-back, a run killed at any moment loses
//! nothing: the next run finds the statuses in the store, does not resend what was
//! acknowledged, and writes everything back.

pub mod limit;
pub mod plan;
pub mod read;
pub mod readback;
pub mod retry;
pub mod seen;
pub mod send;
pub mod summary;
pub mod trail;
pub mod writeback;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use self::limit::Limiter;
use self::read::{Chunk, ReadBackDone, ReadContext, ReadError, read_chunks};
use self::readback::{ReadBackError, read_back};
use self::retry::RetryPolicy;
use self::send::{OrderOutcome, SendCounters, Sender, StopReason, chunk_body};
pub use self::summary::Summary;
use self::trail::{AbandonOnDrop, Trail};
use self::writeback::{Touched, WriteBackError, WriteBackStats, trail_back, write_back};
use crate::api::ApiClient;
use crate::config::SyncConfig;
use crate::error::Error;
use crate::order::{PreparedOrder, Rules};
use crate::source;
use crate::state::orders::JournalEntry;
use crate::state::{StateDb, StateError};

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
    let (summary, result, _) = run_and_finish(config, exit_code).await;
    (summary, result)
}

/// The exit code a run's outcome implies: the error's, else the summary's.
pub fn exit_code(summary: &Summary, result: &Result<(), Error>) -> i32 {
    match result {
        Ok(()) => summary.exit_code(),
        Err(error) => error.exit_code(),
    }
}

/// As [`run_with_summary`], and `finish` has the last word on the exit code: it is called once
/// the run is over (the summary complete, the lock still held), does what is left to do (the
/// report and metrics files) and returns the code the process will exit with, which is the
/// one recorded in the run history (`kksync runs`). Also returns that code.
pub async fn run_and_finish(
    config: &SyncConfig,
    finish: impl FnOnce(&Summary, &Result<(), Error>) -> i32,
) -> (Summary, Result<(), Error>, i32) {
    let started = Instant::now();
    let mut summary = Summary {
        dry_run: config.dry_run,
        ..Summary::default()
    };
    let mut recording = None;
    let result = run_into(config, &mut summary, &mut recording).await;
    summary.wall_time = started.elapsed();
    let code = finish(&summary, &result);
    if let Some(recording) = recording {
        let counts = summary.counts_json();
        let recorded = blocking(&recording.state, |db| {
            db.finish_run(recording.id, &counts, code)
        });
        if let Err(error) = recorded {
            tracing::warn!(%error, "could not record the end of the run");
        }
        // The lock is released only now, after the run is recorded.
        drop(recording);
    }
    (summary, result, code)
}

/// A run being recorded in the run history; it holds the source's lock.
struct Recording {
    state: Arc<Mutex<StateDb>>,
    id: i64,
    _lock: crate::run_lock::RunLock,
}

async fn run_into(
    config: &SyncConfig,
    summary: &mut Summary,
    recording: &mut Option<Recording>,
) -> Result<(), Error> {
    // A dry run writes nothing, so it does not need to keep other runs out.
    let lock = if config.dry_run {
        None
    } else {
        Some(crate::run_lock::acquire(&config.source.path)?)
    };
    let sender = build_sender(config)?;
    tracing::info!(
        source = %config.source.path.display(),
        format = ?config.source.format,
        state = %config.state.path.display(),
        api_url = config.api.as_ref().map(|api| api.base_url.as_str()).unwrap_or("-"),
        dry_run = config.dry_run,
        full = config.incremental.full,
        chunk_size = config.send.chunk_size,
        rate = config.send.rate_per_second,
        concurrency = config.send.concurrency,
        "sync started"
    );
    // A SQLite database kksync cannot read orders from is refused before kksync's tables are
    // added to it (it may be the wrong file). A CSV's state is a file of its own, so there the
    // run is opened and recorded first, and the failure shows in `kksync runs`.
    if config.source.format == crate::cli::SourceFormat::Sqlite {
        let settings = config.source.clone();
        tokio::task::spawn_blocking(move || source::open(&settings, true).map(drop))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
    }
    let state = open_state(config).await?;
    let run_id = match lock {
        None => None,
        Some(lock) => {
            let id = blocking(&state, |db| {
                db.begin_run(
                    "sync",
                    &config.source.path.display().to_string(),
                    &options_json(config),
                )
            })?;
            *recording = Some(Recording {
                state: Arc::clone(&state),
                id,
                _lock: lock,
            });
            Some(id)
        }
    };
    let signals = sender
        .clone()
        .map(|sender| tokio::spawn(stop_on_signal(sender, config.send.stop_timeout)));
    let result = phases(config, summary, sender.as_ref(), &state, run_id).await;
    if let Some(signals) = signals {
        signals.abort();
    }
    result
}

/// Opens the state store: for writing, or for a dry run read-only (or, when there is none
/// yet, a throw-away one in memory, so a dry run creates no file).
async fn open_state(config: &SyncConfig) -> Result<Arc<Mutex<StateDb>>, Error> {
    let settings = config.state.clone();
    let dry_run = config.dry_run;
    let db = tokio::task::spawn_blocking(move || {
        if dry_run {
            match StateDb::open_existing_read_only(&settings.path)? {
                Some(db) => Ok(db),
                None => StateDb::in_memory(),
            }
        } else {
            StateDb::open(&settings.path, settings.shared)
        }
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    Ok(Arc::new(Mutex::new(db)))
}

/// Runs `f` on the state store, on this thread (short operations only).
fn blocking<T>(
    state: &Mutex<StateDb>,
    f: impl FnOnce(&mut StateDb) -> Result<T, StateError>,
) -> Result<T, Error> {
    let mut db = state.lock().map_err(|_| {
        Error::Internal("the state store is unusable after an internal error".into())
    })?;
    Ok(f(&mut db)?)
}

/// Sets the bound of the oldest open order on a connection of its own, beside the write-back
/// (`StateDb::refresh_oldest_open`), then empties the store's WAL there (`StateDb::empty_wal`);
/// `None` where the store allows no second writer (then the next run scans, as without a
/// bound, and the WAL is copied back at close).
fn refresh_oldest_open(
    state: &Mutex<StateDb>,
    run: i64,
) -> Option<tokio::task::JoinHandle<Result<(), StateError>>> {
    let writer = match state.lock().ok()?.open_writer() {
        Ok(writer) => writer?,
        Err(error) => {
            tracing::debug!(%error, "the oldest open order is not bounded in this run");
            return None;
        }
    };
    Some(tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        writer.refresh_oldest_open(run)?;
        // The run's last status is written: the journal of the send phase is copied back, and
        // the WAL emptied, while the source is written, not at close.
        writer.empty_wal();
        Ok(())
    }))
}

/// The options worth keeping in the run history (no secrets).
fn options_json(config: &SyncConfig) -> serde_json::Value {
    serde_json::json!({
        "source": config.source.path.display().to_string(),
        "format": format!("{:?}", config.source.format).to_lowercase(),
        "state": config.state.path.display().to_string(),
        "api_url": config.api.as_ref().map(|api| api.base_url.to_string()),
        "full": config.incremental.full,
        "resend_open_after_seconds": config.incremental.resend_open_after.map(|d| d.as_secs()),
        "read_back_all": config.incremental.read_back_all,
        "chunk_size": config.send.chunk_size,
        "rate": config.send.rate_per_second,
        "concurrency": config.send.concurrency,
        "deadline_seconds": config.send.deadline.as_secs(),
    })
}

async fn phases(
    config: &SyncConfig,
    summary: &mut Summary,
    sender: Option<&Arc<Sender>>,
    state: &Arc<Mutex<StateDb>>,
    run_id: Option<i64>,
) -> Result<(), Error> {
    let today = crate::dates::berlin_today();
    let rules = Rules::for_today(today);
    let progress = progress_bar(config.progress);

    // Phases 0 and 1 run side by side: sending does not depend on the statuses read back
    // (only `--resend-open-after` looks at them, and a stale one there costs at most one
    // harmless resend), and the store keeps the answer of a send over an older read-back.
    let phase_started = Instant::now();
    if run_id.is_some() {
        blocking(state, |db| db.reset_row_errors())?;
    }
    progress.set_message("reading back statuses and sending");
    // The reader needs to know when the statuses in the store stop changing (see `Touched`).
    let read_back_done = Arc::new(ReadBackDone::new(sender.is_none() || run_id.is_none()));
    let reading_back = async {
        // Tells the reader, which may be waiting for it, once the read-back is over, also when
        // this future is dropped or unwinds.
        let over = read_back_done.set_on_drop();
        let mut done = match (sender, run_id) {
            (Some(sender), Some(run)) => {
                let all = config.incremental.read_back_all;
                Some(read_back(sender, state, today, run, all).await)
            }
            _ => None,
        };
        if let Some(Ok(read_back)) = &mut done {
            read_back_done.set_changed(std::mem::take(&mut read_back.changed));
        }
        drop(over);
        if done.is_some()
            && let Ok(mut db) = state.lock()
        {
            db.checkpoint_in_background();
        }
        tracing::debug!(
            elapsed_ms = phase_started.elapsed().as_millis() as u64,
            "read-back done"
        );
        done
    };
    // The partial write-back of a CSV source runs behind the send phase where it can.
    let trail = (run_id.is_some()
        && sender.is_some()
        && config.source.format == crate::cli::SourceFormat::Csv)
        .then(|| Arc::new(Trail::default()));
    // However this function ends, the trailing writer does not wait for ever.
    let _abandon = trail.as_deref().map(AbandonOnDrop);
    let sending = send_phase(
        config,
        summary,
        sender.map(Arc::as_ref),
        state,
        run_id,
        Checks {
            rules: &rules,
            read_back_done: Arc::clone(&read_back_done),
            trail: trail.clone(),
        },
        &progress,
    );
    let (read_back_result, sent) = tokio::join!(reading_back, sending);
    let mut read_back_failure = None;
    // The store failed under the read-back: the run fails, but only after what was sent has
    // been counted and written back.
    let mut read_back_store_error = None;
    match read_back_result {
        None => {}
        Some(Ok(read_back)) => {
            summary.read_back_orders = read_back.orders_seen;
            summary.refreshed = read_back.refreshed;
        }
        Some(Err(ReadBackError::State(error))) => {
            read_back_store_error = Some(error);
        }
        Some(Err(ReadBackError::Api(message) | ReadBackError::Refused(message))) => {
            tracing::error!(%message, "statuses could not be read back; the run goes on");
            read_back_failure = Some(message);
        }
    }
    if let Some(sender) = sender {
        summary.add_send_counters(sender.counters());
    }
    let (mut read_stats, read_identity, trailing) = sent?;
    summary.add_read_stats(&read_stats);
    let mut touched = std::mem::take(&mut read_stats.touched);
    // The rows the reader passed while the read-back ran, if it never saw it end (what it
    // changed: `None` when it failed, and any order may have changed).
    touched.resolve(read_back_done.changed().as_deref());
    tracing::debug!(
        elapsed_ms = phase_started.elapsed().as_millis() as u64,
        "read-back and sending done"
    );
    let phase_started = Instant::now();
    // No status changes in this run from here on: the next run's read-back learns where to
    // start from a scan now, beside the write-back, instead of scanning before it can start.
    let bounding = run_id.and_then(|run| refresh_oldest_open(state, run));

    // Phase 2: write every row's result back; not after a 401 or an answer that was not the
    // API's, which stop the run at once (the journal keeps what was learnt for the next run).
    let stopped_at_once = sender.is_some_and(|s| {
        matches!(
            s.stop_reason(),
            Some(
                StopReason::Unauthorized(_)
                    | StopReason::ShopRefused(_)
                    | StopReason::Unexpected(_)
            )
        )
    });
    if run_id.is_some() && read_stats.complete && !stopped_at_once {
        crate::pause::point("before-write-back");
        progress.set_position(0);
        progress.set_message("writing back");
        let behind = trail.as_deref().map(|trail| Behind {
            trail,
            writer: trailing,
        });
        let written = write_back_phase(
            config,
            state,
            progress.clone(),
            run_id,
            read_identity,
            touched,
            behind,
        )
        .await?;
        summary.add_write_back(written);
        tracing::debug!(
            elapsed_ms = phase_started.elapsed().as_millis() as u64,
            "write-back done"
        );
    }
    if let Some(bounding) = bounding {
        match bounding.await {
            Ok(Ok(())) => {}
            // The bound the run started with stays, lowered by what the run opened: still a
            // bound, only perhaps an early one.
            Ok(Err(error)) => tracing::warn!(%error, "the oldest open order was not bounded"),
            Err(error) => tracing::warn!(%error, "the oldest open order was not bounded"),
        }
    }
    progress.finish_and_clear();

    if let Some(sender) = sender
        && let Some(error) = stop_error(sender.stop_reason(), sender.counters())
    {
        return Err(error);
    }
    if let Some(error) = read_back_store_error {
        return Err(error.into());
    }
    match read_back_failure {
        Some(last_error) => Err(Error::ReadBackFailed { last_error }),
        None => Ok(()),
    }
}

/// The write-back trailing the send phase: where it takes its rows from, and its thread.
struct Behind<'t> {
    trail: &'t Trail,
    writer: Option<TrailingWriter>,
}

/// Phase 2. The write-back trailing the send phase is finished when rows were handed to it and
/// the whole list is worth patching, as it would be without a trail; otherwise, or when it was
/// abandoned, the source is written back after the send phase: the rows listed, or the whole
/// file once rows left the list for the trail.
async fn write_back_phase(
    config: &SyncConfig,
    state: &Arc<Mutex<StateDb>>,
    bar: ProgressBar,
    run_id: Option<i64>,
    read_identity: Option<source::FileIdentity>,
    mut touched: Touched,
    behind: Option<Behind<'_>>,
) -> Result<WriteBackStats, Error> {
    let started = behind.as_ref().is_some_and(|b| b.trail.started());
    if let Some(Behind { trail, writer }) = behind {
        match writer {
            // A list given up misses rows: not patched.
            Some(writer) if started && touched.complete() && touched.worth_patching() => {
                trail.finish(touched.take_rows());
                let written = writer
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map_err(write_back_error)?;
                if let Some(mut written) = written {
                    written.add(touched.into_settled());
                    return Ok(written);
                }
            }
            writer => {
                trail.abandon();
                if let Some(writer) = writer {
                    // It drops its copy (and may have started one): the write-back below
                    // removes stale copies when it makes its own.
                    let _ = writer.await;
                }
            }
        }
    }
    let touched = (!started).then_some(touched);
    let settings = config.source.clone();
    let store = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        write_back(
            &settings,
            &store,
            read_identity.as_ref(),
            touched,
            run_id,
            &|rows| bar.inc(rows),
        )
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(write_back_error)
}

fn write_back_error(error: WriteBackError) -> Error {
    match error {
        WriteBackError::Source(e) => Error::Source(e),
        WriteBackError::State(e) => Error::State(e),
        WriteBackError::Poisoned => Error::Internal(error.to_string()),
    }
}

/// The write-back trailing the send phase ([`writeback::trail_back`]).
type TrailingWriter = tokio::task::JoinHandle<Result<Option<WriteBackStats>, WriteBackError>>;

/// What the reader checks rows against.
struct Checks<'a> {
    /// Validation rules of today.
    rules: &'a Rules,
    /// Set once the read-back is over (see `ReadContext::read_back_done`).
    read_back_done: Arc<ReadBackDone>,
    /// Where the write-back trailing the send phase takes its rows from.
    trail: Option<Arc<Trail>>,
}

/// Phase 1: reads the source, sends the orders that need it and journals every answer. Returns
/// what was read and the identity of the file as it was opened (CSV), which the write-back
/// checks.
async fn send_phase(
    config: &SyncConfig,
    summary: &mut Summary,
    sender: Option<&Sender>,
    state: &Arc<Mutex<StateDb>>,
    run_id: Option<i64>,
    Checks {
        rules,
        read_back_done,
        trail,
    }: Checks<'_>,
    progress: &ProgressBar,
) -> Result<
    (
        read::ReadStats,
        Option<source::FileIdentity>,
        Option<TrailingWriter>,
    ),
    Error,
> {
    let settings = config.source.clone();
    let (mut source, _) = tokio::task::spawn_blocking(move || source::open(&settings, true))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    // Unchanged rows of a CSV are known by their bytes (`source::last_read`), except when
    // every row is sent anyway; a dry run reads the index but leaves it as it is.
    source.use_row_index(
        &source::last_read::index_path(&config.state.path),
        !config.incremental.full,
        run_id.is_some(),
    );
    let identity = source.identity().cloned();
    let writer = match (&trail, &identity) {
        (Some(trail), Some(identity)) => {
            let (settings, identity) = (config.source.clone(), identity.clone());
            let (trail, store) = (Arc::clone(trail), Arc::clone(state));
            Some(tokio::task::spawn_blocking(move || {
                trail_back(&settings, &identity, &trail, &store, run_id)
            }))
        }
        _ => None,
    };
    let reader_trail = trail.clone();
    let concurrency = config.send.concurrency;
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<Chunk>(concurrency + 1);
    let reader_state = Arc::clone(state);
    let (rules, chunk_size, policy) = (*rules, config.send.chunk_size, config.incremental);
    let record_invalid = run_id.is_some();
    let settings = config.source.clone();
    let bar = progress.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let on_rows = move |rows: u64| bar.set_position(rows.max(bar.position()));
        let reopen = || source::open(&settings, true).map(|(source, _)| source);
        let context = ReadContext {
            rules: &rules,
            chunk_size,
            policy,
            state: &reader_state,
            record_invalid,
            reopen: &reopen,
            read_back_done: &read_back_done,
            on_rows: &on_rows,
            trail: reader_trail
                .as_deref()
                .map(|trail| (trail, crate::pause::trail_after_rows(trail::MIN_ROWS))),
        };
        read_chunks(source.as_mut(), &context, &chunk_tx)
    });

    let chunks = futures::stream::poll_fn(move |cx| chunk_rx.poll_recv(cx));
    let first_journaled = AtomicBool::new(false);
    let mut processed = chunks
        .map(|chunk| process(sender, state, run_id, chunk, &first_journaled))
        .buffered(concurrency);
    let mut failure = None;
    let mut chunks_done = 0u64;
    while let Some(done) = processed.next().await {
        let done = match done {
            Ok(done) => done,
            Err(Unjournaled { done, error }) => {
                // The journal failed: nothing more may be sent, since its answer could not be
                // kept. The chunk went out all the same, and counts as sent.
                if let Some(sender) = sender {
                    sender.abort();
                }
                count_chunk(summary, &done);
                failure = Some(error);
                break;
            }
        };
        if let Some(body) = &done.dry_run_body
            && print_line(body).is_err()
        {
            break; // Broken pipe: the reader of the preview has gone away.
        }
        if let Some(trail) = &trail {
            // This chunk and every one before it are journaled.
            trail.settle_before(done.settled_before);
        }
        count_chunk(summary, &done);
        chunks_done += u64::from(done.orders > 0);
        update_progress(progress, &done, chunks_done);
    }
    drop(processed);
    let read = reader.await.map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(error) = failure {
        // The run history shows how far the reader got before it was stopped.
        if let Ok(stats) = &read {
            summary.add_read_stats(stats);
        }
        return Err(error);
    }
    let stats = read.map_err(|error| match error {
        ReadError::Source(e) => Error::Source(e),
        ReadError::State(e) => Error::State(e),
        ReadError::Poisoned => Error::Internal(error.to_string()),
    })?;
    Ok((stats, identity, writer))
}

/// Adds what one chunk did to the summary.
fn count_chunk(summary: &mut Summary, done: &Processed) {
    summary.orders_sent += done.sent;
    summary.accepted += done.accepted;
    summary.api_failed += done.failed;
    summary.not_sent += done.not_sent;
}

fn update_progress(progress: &ProgressBar, done: &Processed, chunks: u64) {
    if let Some(total) = done.estimated_rows
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
    progress.set_position(done.rows_read.max(progress.position()));
    progress.set_message(format!("{chunks} chunks sent"));
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

/// What one chunk came to.
struct Processed {
    orders: usize,
    sent: u64,
    accepted: u64,
    failed: u64,
    not_sent: u64,
    rows_read: u64,
    estimated_rows: Option<u64>,
    /// See [`Chunk::settled_before`].
    settled_before: u64,
    dry_run_body: Option<bytes::Bytes>,
}

/// A chunk whose answers could not be journaled: what it did, and why the journal failed.
struct Unjournaled {
    done: Processed,
    error: Error,
}

/// Sends one chunk (or, in a dry run, serializes it) and journals the answers.
async fn process(
    sender: Option<&Sender>,
    state: &Arc<Mutex<StateDb>>,
    run_id: Option<i64>,
    chunk: Chunk,
    first_journaled: &AtomicBool,
) -> Result<Processed, Unjournaled> {
    let orders: Vec<&PreparedOrder> = chunk.orders.iter().collect();
    let mut processed = Processed {
        orders: orders.len(),
        sent: 0,
        accepted: 0,
        failed: 0,
        not_sent: 0,
        rows_read: chunk.rows_read,
        estimated_rows: chunk.estimated_rows,
        settled_before: chunk.settled_before,
        dry_run_body: None,
    };
    let (Some(sender), Some(run_id)) = (sender, run_id) else {
        // A dry run: these orders are what a real run would send.
        processed.sent = orders.len() as u64;
        processed.dry_run_body = (!orders.is_empty()).then(|| chunk_body(&orders));
        return Ok(processed);
    };
    let outcomes = sender.send_chunk(&orders).await;
    let mut entries = Vec::with_capacity(orders.len());
    for (order, outcome) in chunk.orders.into_iter().zip(outcomes) {
        match outcome {
            OrderOutcome::Stored(status) => {
                processed.sent += 1;
                processed.accepted += 1;
                entries.push(JournalEntry::Accepted {
                    number: order.number,
                    fingerprint: order.fingerprint,
                    date: order.date,
                    status,
                    row_fingerprint: order.row_fingerprint,
                });
            }
            OrderOutcome::Failed { error, transient } => {
                processed.sent += 1;
                processed.failed += 1;
                entries.push(JournalEntry::Failed {
                    number: order.number,
                    fingerprint: order.fingerprint,
                    error,
                    transient,
                });
            }
            OrderOutcome::NotSent => processed.not_sent += 1,
            OrderOutcome::NoAttempt => {
                // Not sent, but failed for this run: the row says why, the next run resends.
                processed.failed += 1;
                entries.push(JournalEntry::Failed {
                    number: order.number,
                    fingerprint: order.fingerprint,
                    error: send::NO_ATTEMPT.to_string(),
                    transient: true,
                });
            }
        }
    }
    if entries.is_empty() {
        return Ok(processed);
    }
    let store = Arc::clone(state);
    let first = !first_journaled.swap(true, Ordering::Relaxed);
    let journaled = tokio::task::spawn_blocking(move || {
        blocking(&store, |db| db.journal(run_id, &entries))?;
        if first {
            crate::pause::point("journaled");
        }
        Ok::<(), Error>(())
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))
    .and_then(|journaled| journaled);
    match journaled {
        Ok(()) => Ok(processed),
        Err(error) => Err(Unjournaled {
            done: processed,
            error,
        }),
    }
}

/// Turns the sender's state at the end of a run into the run's error, if it must fail.
pub fn stop_error(reason: Option<StopReason>, counters: &SendCounters) -> Option<Error> {
    match reason {
        Some(StopReason::Unauthorized(message)) => Some(Error::Unauthorized { message }),
        Some(StopReason::ShopRefused(message)) => Some(Error::ShopRefused { message }),
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
