//! `kksync ordersync`: tells Komfortkasse which orders are still open (`POST /ordersync`).
//!
//! The call is destructive: every open order at Komfortkasse that is missing from the list
//! becomes `LEGACY` and gets no more reminders, collection or refunds. So the list is only sent
//! when it is trustworthy: the whole source was read, every row named its order, the list is
//! not empty (never, not even with `--force`), and it is not more than `--max-shrink` percent
//! shorter than the list of the last ordersync (recorded in the state store).
//!
//! The list holds every order number of the source whose last known status is not final
//! (open, not yet synced, or a status newer than this client): a number too many does no harm,
//! a number too few turns an order into `LEGACY`.

use std::sync::Arc;

use bytes::Bytes;
use rusqlite::OptionalExtension;

use crate::api::ApiClient;
use crate::api::stream::{StreamError, for_each_order_status};
use crate::config::SyncConfig;
use crate::error::Error;
use crate::pipeline::limit::Limiter;
use crate::pipeline::retry::RetryPolicy;
use crate::pipeline::send::{CallFailure, SendCounters, Sender};
use crate::source;
use crate::state::orders::{OPEN_FOR_ORDERSYNC, is_final};
use crate::state::{StateDb, StateError};

/// What `ordersync` needs besides the sync options.
#[derive(Debug, Clone)]
pub struct OrderSyncConfig {
    /// Source, API, state and dry-run settings.
    pub sync: SyncConfig,
    /// Refuse a list shorter than the last one by more than this share (0.10 = 10%).
    pub max_shrink: f64,
    /// Override the partial-read and shrink guards.
    pub force: bool,
}

/// What an ordersync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderSyncOutcome {
    /// Order numbers in the list.
    pub numbers: u64,
    /// Rows read.
    pub rows: u64,
    /// How many orders became `LEGACY` (the API's answer), or in a dry run would become.
    pub legacy: u64,
    /// Whether it was a dry run.
    pub dry_run: bool,
}

/// Why the list was not sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Some rows could not be read as orders.
    #[error(
        "{0} row(s) of the source name no order; their orders would become LEGACY (fix them, or --force)"
    )]
    PartialRead(u64),
    /// Nothing is open.
    #[error("the list of open orders is empty; refusing to mark every open order LEGACY")]
    Empty,
    /// The list shrank too much.
    #[error(
        "the list has {now} open orders, {last} at the last ordersync: more than {percent}% fewer (check the source, or --force)"
    )]
    Shrunk {
        /// Now.
        now: u64,
        /// Last time.
        last: u64,
        /// The threshold.
        percent: f64,
    },
}

/// Runs `kksync ordersync`.
pub async fn run(config: &OrderSyncConfig) -> Result<OrderSyncOutcome, Error> {
    let sync = &config.sync;
    let _lock = match sync.dry_run {
        true => None,
        false => Some(crate::run_lock::acquire(&sync.source.path)?),
    };
    let settings = sync.state.clone();
    let dry_run = sync.dry_run;
    let state = tokio::task::spawn_blocking(move || match dry_run {
        true => StateDb::open_existing_read_only(&settings.path)
            .and_then(|db| db.map_or_else(StateDb::in_memory, Ok)),
        false => StateDb::open(&settings.path, settings.shared),
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    let state = Arc::new(std::sync::Mutex::new(state));

    let source_settings = sync.source.clone();
    let store = Arc::clone(&state);
    let (numbers, rows, unnamed) = tokio::task::spawn_blocking(move || {
        let db = store
            .lock()
            .map_err(|_| Error::Internal("state store unusable".into()))?;
        open_numbers(&source_settings, &db)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;

    let last = {
        let db = state
            .lock()
            .map_err(|_| Error::Internal("state store unusable".into()))?;
        last_ordersync(&db)?
    };
    check_guards(numbers.len() as u64, unnamed, last, config)?;
    let Some(api) = &sync.api else {
        return Err(Error::Config(crate::config::ConfigError::MissingApiKey));
    };
    let client = ApiClient::new(api, 1).map_err(Error::UnexpectedApi)?;
    let sender = Sender::new(
        client,
        Arc::new(Limiter::new(sync.send.rate_per_second, sync.send.burst)),
        RetryPolicy::default(),
        sync.send.deadline,
        1,
        Arc::new(SendCounters::default()),
    );
    let mut outcome = OrderSyncOutcome {
        numbers: numbers.len() as u64,
        rows,
        legacy: 0,
        dry_run,
    };
    if dry_run {
        outcome.legacy = would_become_legacy(&sender, numbers).await?;
        return Ok(outcome);
    }
    let run_id = {
        let db = state
            .lock()
            .map_err(|_| Error::Internal("state store unusable".into()))?;
        db.begin_run(
            "ordersync",
            &sync.source.path.display().to_string(),
            &serde_json::json!({"force": config.force, "max_shrink": config.max_shrink}),
        )?
    };
    let body =
        Bytes::from(serde_json::to_vec(&numbers).map_err(|e| Error::Internal(e.to_string()))?);
    let sent = sender
        .call(|| sender.client().order_sync(body.clone()))
        .await;
    let result = match sent {
        Ok(legacy) => {
            outcome.legacy = legacy;
            Ok(())
        }
        Err(failure) => Err(call_error(&sender, failure)),
    };
    let db = state
        .lock()
        .map_err(|_| Error::Internal("state store unusable".into()))?;
    if result.is_ok() {
        db.connection()
            .execute(
                "INSERT INTO kksync_ordersyncs (run_id, at, numbers, legacy, forced) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    run_id,
                    crate::state::now_rfc3339(),
                    i64::try_from(outcome.numbers).unwrap_or(i64::MAX),
                    i64::try_from(outcome.legacy).unwrap_or(i64::MAX),
                    config.force
                ],
            )
            .map_err(db.error("recording the ordersync"))?;
    }
    let exit_code = result.as_ref().map_or_else(Error::exit_code, |()| 0);
    db.finish_run(
        run_id,
        &serde_json::json!({"rows_read": rows, "numbers": outcome.numbers, "legacy": outcome.legacy}),
        exit_code,
    )?;
    result.map(|()| outcome)
}

fn call_error(sender: &Sender, failure: CallFailure) -> Error {
    if let Some(error) = crate::pipeline::stop_error(sender.stop_reason(), sender.counters()) {
        return error;
    }
    match failure {
        CallFailure::GaveUp(last_error) => Error::ApiUnreachable { last_error },
        CallFailure::Rejected(message) => Error::UnexpectedApi(crate::api::ApiError::Unexpected(
            format!("POST /ordersync was refused: {message}"),
        )),
        CallFailure::Stopped => Error::Interrupted { signal: "a stop" },
    }
}

/// Reads the whole source: the sorted, de-duplicated numbers of the orders that are not in a
/// final state, the rows read, and how many rows named no order.
fn open_numbers(
    settings: &crate::config::SourceSettings,
    db: &StateDb,
) -> Result<(Vec<String>, u64, u64), Error> {
    let (mut source, _) = source::open(settings, true)?;
    let mut numbers = Vec::new();
    let (mut rows, mut unnamed) = (0u64, 0u64);
    while let Some(row) = source.next_row()? {
        rows += 1;
        let Some(number) = row.number(source.layout()) else {
            unnamed += 1;
            continue;
        };
        let known = db.known(number)?.and_then(|k| k.payment_status);
        let status = known
            .as_deref()
            .or_else(|| source.previous_status(&row.record));
        if status.is_none_or(|s| !is_final(s)) {
            numbers.push(number.to_string());
        }
    }
    numbers.sort_unstable();
    numbers.dedup();
    Ok((numbers, rows, unnamed))
}

fn last_ordersync(db: &StateDb) -> Result<Option<u64>, StateError> {
    db.connection()
        .query_row(
            "SELECT numbers FROM kksync_ordersyncs ORDER BY id DESC LIMIT 1",
            [],
            |row| row.get::<_, i64>(0),
        )
        .optional()
        .map(|n| n.map(|n| u64::try_from(n).unwrap_or(0)))
        .map_err(db.error("reading the last ordersync"))
}

/// The guards, in the order a user would fix them.
fn check_guards(
    now: u64,
    unnamed: u64,
    last: Option<u64>,
    config: &OrderSyncConfig,
) -> Result<(), Refusal> {
    if now == 0 {
        return Err(Refusal::Empty);
    }
    if config.force {
        return Ok(());
    }
    if unnamed > 0 {
        return Err(Refusal::PartialRead(unnamed));
    }
    if let Some(last) = last {
        let percent = config.max_shrink * 100.0;
        if (now as f64) < (last as f64) * (1.0 - config.max_shrink) {
            return Err(Refusal::Shrunk { now, last, percent });
        }
    }
    Ok(())
}

/// Counts Komfortkasse's open orders that are not in `numbers` (sorted).
async fn would_become_legacy(sender: &Sender, numbers: Vec<String>) -> Result<u64, Error> {
    let numbers = Arc::new(numbers);
    let statuses = OPEN_FOR_ORDERSYNC.join(",");
    let result = sender
        .call(|| {
            let numbers = Arc::clone(&numbers);
            let query = [
                ("paymentStatus", statuses.clone()),
                // Every open order, however old.
                ("maxAge", "36500".to_string()),
            ];
            async move {
                let response = sender.client().get_orders(&query).await?;
                use futures::TryStreamExt;
                let body = response.bytes_stream().map_err(std::io::Error::other);
                let reader =
                    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
                let counted = tokio::task::spawn_blocking(move || {
                    let mut missing = 0u64;
                    for_each_order_status(std::io::BufReader::new(reader), |order| {
                        if numbers.binary_search(&order.number).is_err() {
                            missing += 1;
                        }
                        Ok::<(), ()>(())
                    })
                    .map(|_| missing)
                })
                .await
                .map_err(|e| crate::api::ApiError::Unexpected(e.to_string()))?;
                match counted {
                    Ok(missing) => Ok(missing),
                    Err(StreamError::Io(error)) => {
                        Err(crate::api::ApiError::Network(error.to_string()))
                    }
                    Err(StreamError::Syntax(message)) => Err(crate::api::ApiError::Unexpected(
                        format!("GET /orders: {message}"),
                    )),
                    Err(StreamError::Consumer(())) => Ok(0),
                }
            }
        })
        .await;
    result.map_err(|failure| call_error(sender, failure))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(force: bool) -> OrderSyncConfig {
        let args = <crate::cli::SyncArgs as clap::FromArgMatches>::from_arg_matches(
            &<crate::cli::Cli as clap::CommandFactory>::command()
                .find_subcommand("sync")
                .unwrap()
                .clone()
                .get_matches_from(["sync", "--source", "x.csv", "--dry-run"]),
        )
        .unwrap();
        OrderSyncConfig {
            sync: SyncConfig::from_args_with_env(&args, &|_| None).unwrap(),
            max_shrink: 0.10,
            force,
        }
    }

    #[test]
    fn an_empty_list_is_refused_even_when_forced() {
        assert_eq!(check_guards(0, 0, None, &config(true)), Err(Refusal::Empty));
    }

    #[test]
    fn a_partial_read_is_refused_unless_forced() {
        assert_eq!(
            check_guards(50, 2, None, &config(false)),
            Err(Refusal::PartialRead(2))
        );
        assert_eq!(check_guards(50, 2, None, &config(true)), Ok(()));
    }

    #[test]
    fn a_shrink_beyond_the_threshold_is_refused_unless_forced() {
        assert_eq!(check_guards(90, 0, Some(100), &config(false)), Ok(()));
        assert!(matches!(
            check_guards(89, 0, Some(100), &config(false)),
            Err(Refusal::Shrunk {
                now: 89,
                last: 100,
                ..
            })
        ));
        assert_eq!(check_guards(89, 0, Some(100), &config(true)), Ok(()));
        assert_eq!(check_guards(500, 0, Some(100), &config(false)), Ok(()));
    }
}
