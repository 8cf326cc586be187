//! What a run leaves behind for operators: a JSON report (`--report`) and Prometheus metrics
//! for node_exporter's textfile collector (`--metrics-textfile`). Both are written atomically
//! (temporary file in the same folder, fsync, rename), so a collector never reads half a file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::SourceFormat;
use crate::config::SyncConfig;
use crate::pipeline::Summary;

/// Writing a report or metrics file failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct ReportError {
    /// The file.
    pub path: PathBuf,
    /// The underlying error.
    pub source: std::io::Error,
}

/// One run, as reported.
#[derive(Debug, Serialize)]
pub struct RunReport {
    kksync_version: &'static str,
    started_at: String,
    finished_at: String,
    exit_code: i32,
    error: Option<String>,
    source: String,
    source_format: &'static str,
    dry_run: bool,
    options: ReportOptions,
    counts: ReportCounts,
    rejected_by_reason: BTreeMap<String, u64>,
    payment_statuses: BTreeMap<String, u64>,
    requests: u64,
    retries: u64,
    chunks_ok: u64,
    chunks_gave_up: u64,
    wall_time_seconds: f64,
    #[serde(skip)]
    finished_unix: i64,
}

#[derive(Debug, Serialize)]
struct ReportOptions {
    api_url: Option<String>,
    rate_per_second: f64,
    burst: u32,
    chunk_size: usize,
    concurrency: usize,
    deadline_seconds: u64,
    request_timeout_seconds: Option<u64>,
    stop_timeout_seconds: u64,
}

#[derive(Debug, Serialize)]
struct ReportCounts {
    rows_read: u64,
    rows_valid: u64,
    orders_sent: u64,
    accepted: u64,
    rejected: u64,
    not_sent: u64,
}

impl RunReport {
    /// The report of a run that started at `started_at` and ends now. The API key is not part
    /// of it (nor of anything in `SyncConfig` that is printed).
    pub fn new(
        config: &SyncConfig,
        started_at: OffsetDateTime,
        summary: &Summary,
        exit_code: i32,
        error: Option<String>,
    ) -> Self {
        let finished = OffsetDateTime::now_utc();
        let rfc3339 = |t: OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        RunReport {
            kksync_version: env!("CARGO_PKG_VERSION"),
            started_at: rfc3339(started_at),
            finished_at: rfc3339(finished),
            exit_code,
            error,
            source: config.source.path.display().to_string(),
            source_format: match config.source.format {
                SourceFormat::Csv => "csv",
                SourceFormat::Sqlite => "sqlite",
            },
            dry_run: config.dry_run,
            options: ReportOptions {
                api_url: config.api.as_ref().map(|api| api.base_url.to_string()),
                rate_per_second: config.send.rate_per_second,
                burst: config.send.burst.get(),
                chunk_size: config.send.chunk_size,
                concurrency: config.send.concurrency,
                deadline_seconds: config.send.deadline.as_secs(),
                request_timeout_seconds: config
                    .api
                    .as_ref()
                    .map(|api| api.request_timeout.as_secs()),
                stop_timeout_seconds: config.send.stop_timeout.as_secs(),
            },
            counts: ReportCounts {
                rows_read: summary.rows_read,
                rows_valid: summary.rows_valid,
                orders_sent: summary.orders_sent,
                accepted: summary.accepted,
                rejected: summary.rejected,
                not_sent: summary.not_sent,
            },
            rejected_by_reason: summary.rejected_by_reason.clone(),
            payment_statuses: summary.statuses.clone(),
            requests: summary.requests,
            retries: summary.retries,
            chunks_ok: summary.chunks_ok,
            chunks_gave_up: summary.chunks_gave_up,
            wall_time_seconds: summary.wall_time.as_secs_f64(),
            finished_unix: finished.unix_timestamp(),
        }
    }

    /// Writes the JSON report.
    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| ReportError {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        write_atomically(path, &json)
    }

    /// Writes the metrics in Prometheus' text format.
    pub fn write_metrics(&self, path: &Path) -> Result<(), ReportError> {
        write_atomically(path, self.metrics_text().as_bytes())
    }

    fn metrics_text(&self) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(
                out,
                "# HELP kksync_{name} {help}\n# TYPE kksync_{name} gauge"
            );
            for (labels, value) in samples {
                let _ = writeln!(out, "kksync_{name}{labels} {value}");
            }
        };
        let plain = |value: f64| vec![(String::new(), value)];
        gauge(
            "last_run_timestamp_seconds",
            "When the last run finished (Unix time).",
            &plain(self.finished_unix as f64),
        );
        gauge(
            "last_run_duration_seconds",
            "Wall time of the last run.",
            &plain(self.wall_time_seconds),
        );
        gauge(
            "last_run_exit_code",
            "Exit code of the last run (0 ok, 3 rows rejected, other: failed).",
            &plain(f64::from(self.exit_code)),
        );
        let counts = &self.counts;
        let outcomes = [
            ("read", counts.rows_read),
            ("valid", counts.rows_valid),
            ("sent", counts.orders_sent),
            ("accepted", counts.accepted),
            ("rejected", counts.rejected),
            ("not_sent", counts.not_sent),
        ];
        let rows: Vec<(String, f64)> = outcomes
            .iter()
            .map(|(o, n)| (format!("{{outcome=\"{o}\"}}"), *n as f64))
            .collect();
        gauge("last_run_rows", "Rows of the last run by outcome.", &rows);
        gauge(
            "last_run_requests",
            "HTTP requests of the last run (every attempt).",
            &plain(self.requests as f64),
        );
        gauge(
            "last_run_retries",
            "Retries among those requests.",
            &plain(self.retries as f64),
        );
        let statuses: Vec<(String, f64)> = self
            .payment_statuses
            .iter()
            .map(|(status, n)| {
                (
                    format!("{{payment_status=\"{}\"}}", escape_label(status)),
                    *n as f64,
                )
            })
            .collect();
        gauge(
            "last_run_orders_by_payment_status",
            "Accepted orders of the last run by paymentStatus.",
            &statuses,
        );
        out
    }
}

/// Prometheus label values escape backslash, quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Temporary file in the same folder, fsync, rename, fsync of the folder.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let fail = |source| ReportError {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".kksync-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(fail)?;
    temp.write_all(bytes).map_err(fail)?;
    temp.as_file().sync_all().map_err(fail)?;
    // node_exporter runs as another user: the file must be readable like any other report.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(fail)?;
    }
    temp.persist(path).map_err(|e| fail(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("A\"B\\C\nD"), "A\\\"B\\\\C\\nD");
    }
}
