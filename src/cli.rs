//! Command-line types only (clap derive). Doc comments become `--help`; checking and turning
//! values into settings happens in `config.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The production API, used unless `--api-url` or `KKSYNC_API_URL` says otherwise.
pub const DEFAULT_API_URL: &str = "https://ssl.komfortkasse.eu/api/v2";

/// kksync keeps an online shop's orders in sync with the Komfortkasse payment service.
///
/// It reads orders from a CSV export or a SQLite database, sends them in rate-limited chunks
/// and writes the resulting payment statuses back into the source.
#[derive(Debug, Parser)]
#[command(name = "kksync", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// More log detail (-v debug, -vv trace). `RUST_LOG` overrides both -v and -q.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Less log detail (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub quiet: u8,

    /// Read options from this TOML file (default: /etc/kksync/kksync.toml if it exists).
    /// Precedence: flags, then environment (KKSYNC_*), then this file, then defaults.
    #[arg(long, env = "KKSYNC_CONFIG", value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,

    /// Log lines as human-readable text or as JSON objects (one per line, for log shippers).
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "KKSYNC_LOG_FORMAT",
        global = true
    )]
    pub log_format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable; coloured only on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send orders to Komfortkasse and write the payment statuses back into the source.
    Sync(SyncArgs),
    /// Tell Komfortkasse which orders are still open (`POST /ordersync`). Destructive: open
    /// orders missing from the list become LEGACY, so it refuses a partial read, an empty list
    /// and a list that shrank by more than --max-shrink since the last time (unless --force).
    Ordersync(OrdersyncArgs),
    /// List past runs recorded in the state store (newest first).
    Runs(RunsArgs),
    /// Create the `orders` and `refunds` tables (sql/schema.sql, sql/refunds.sql) in a SQLite
    /// database; safe to run again.
    InitDb(InitDbArgs),
    /// Run the local imitation of the Komfortkasse API (for demos, tests and dry runs).
    Sandbox(crate::sandbox::SandboxArgs),
    /// Sync the bundled example orders against an in-process sandbox and show the result.
    Demo(DemoArgs),
    /// Send each refund of a CSV or SQLite source exactly once (Komfortkasse, AfterPay, Ratepay)
    /// and write the results back.
    Refunds(RefundsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout.
    Man,
    /// Inspect the configuration.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// `kksync config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the effective configuration of `kksync sync` with these options (secrets redacted).
    Show(SyncArgs),
}

/// Where the orders come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceFormat {
    /// A CSV file with a header row (`,` or `;` separated).
    Csv,
    /// A SQLite database with an `orders` table (see `kksync init-db`).
    Sqlite,
}

/// Options of `kksync sync`.
#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// The orders: `*.csv` is read as CSV; `*.db`, `*.sqlite`, `*.sqlite3` as SQLite.
    #[arg(long, env = "KKSYNC_SOURCE", value_name = "PATH")]
    pub source: Option<PathBuf>,

    /// Read the source as this format, whatever its file name.
    #[arg(long, value_enum, env = "KKSYNC_SOURCE_FORMAT", value_name = "FORMAT")]
    pub source_format: Option<SourceFormat>,

    /// Base URL of the Komfortkasse API. Plain http:// is accepted only for loopback hosts.
    #[arg(long, env = "KKSYNC_API_URL", default_value = DEFAULT_API_URL, value_name = "URL")]
    pub api_url: String,

    /// Read the API key from this file (instead of KOMFORTKASSE_API_KEY or the systemd
    /// credential `komfortkasse-api-key`). The key is never accepted on the command line.
    #[arg(long, env = "KKSYNC_API_KEY_FILE", value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// Requests per second (a decimal, e.g. 0.5 or 2.5); every attempt counts, retries included.
    #[arg(long, env = "KKSYNC_RATE", default_value = "2", value_name = "R")]
    pub rate: String,

    /// How many requests may be sent at once before the rate applies.
    #[arg(long, env = "KKSYNC_BURST", default_value_t = 1, value_name = "N")]
    pub burst: u32,

    /// Orders per `POST /orders` request (1..=100).
    #[arg(
        long,
        env = "KKSYNC_CHUNK_SIZE",
        default_value_t = 100,
        value_name = "N"
    )]
    pub chunk_size: usize,

    /// Requests in flight at once.
    #[arg(
        long,
        env = "KKSYNC_CONCURRENCY",
        default_value_t = 4,
        value_name = "N"
    )]
    pub concurrency: usize,

    /// How long one chunk may be retried before its rows are marked as failed (e.g. 90s, 10m).
    #[arg(
        long,
        env = "KKSYNC_DEADLINE",
        default_value = "10m",
        value_name = "DURATION"
    )]
    pub deadline: String,

    /// How long one request may take before it is abandoned and retried (e.g. 30s, 10m).
    #[arg(
        long,
        env = "KKSYNC_REQUEST_TIMEOUT",
        default_value = "10m",
        value_name = "DURATION"
    )]
    pub request_timeout: String,

    /// After SIGTERM or SIGINT, how long requests in flight may take before they are abandoned
    /// (keep it below systemd's TimeoutStopSec). A second signal abandons them at once.
    #[arg(
        long,
        env = "KKSYNC_STOP_TIMEOUT",
        default_value = "30s",
        value_name = "DURATION"
    )]
    pub stop_timeout: String,

    /// Read and validate, print what would be sent; send nothing and write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Send every valid order, not only new and changed ones (migrations, or after the
    /// state store was lost).
    #[arg(long)]
    pub full: bool,

    /// Also resend orders that are still open once their last accepted send is this old
    /// (e.g. 7d; the vendor advises resending open orders now and then).
    #[arg(long, env = "KKSYNC_RESEND_OPEN_AFTER", value_name = "DURATION")]
    pub resend_open_after: Option<String>,

    /// Read back the status of every order in the age window, not only of those that left
    /// UNPAID: also learns of a paid or cancelled order reopened at Komfortkasse, at the cost
    /// of a reply as large as the window (e.g. once a week).
    #[arg(long)]
    pub read_back_all: bool,

    /// The state store (default: the SQLite source itself, or `<source>.kksync.db` beside a
    /// CSV source).
    #[arg(long, env = "KKSYNC_STATE", value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// CSV field delimiter (default: detected from the header, `,` or `;`).
    #[arg(long, env = "KKSYNC_DELIMITER", value_name = "CHAR")]
    pub delimiter: Option<char>,

    /// Show no progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,

    /// Write a JSON report of the run (options, counts, rejections by reason, timings) here.
    #[arg(long, env = "KKSYNC_REPORT", value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Write Prometheus metrics of the run here, for node_exporter's textfile collector.
    #[arg(long, env = "KKSYNC_METRICS_TEXTFILE", value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,

    /// Column names that differ from the defaults (`[columns]` of the config file).
    #[arg(skip)]
    pub columns: crate::order::ColumnNames,

    /// The config file these options were completed from, if any.
    #[arg(skip)]
    pub config_file: Option<PathBuf>,
}

/// Options of `kksync ordersync`.
#[derive(Debug, Clone, Args)]
pub struct OrdersyncArgs {
    /// The same source, API and state options as `kksync sync` (`--dry-run` shows how many
    /// orders would become LEGACY, from `GET /orders`, and sends nothing).
    #[command(flatten)]
    pub sync: SyncArgs,

    /// Refuse when the list is this many percent shorter than at the last ordersync.
    #[arg(
        long,
        env = "KKSYNC_MAX_SHRINK",
        default_value = "10",
        value_name = "PERCENT"
    )]
    pub max_shrink: String,

    /// Send even when the source had unreadable rows or the list shrank too much (never an
    /// empty list).
    #[arg(long)]
    pub force: bool,
}

/// Options of `kksync runs`.
#[derive(Debug, Clone, Args)]
pub struct RunsArgs {
    /// The source whose runs to list (its state store is found as `kksync sync` finds it).
    #[arg(long, env = "KKSYNC_SOURCE", value_name = "PATH")]
    pub source: Option<PathBuf>,

    /// Read the source as this format, whatever its file name.
    #[arg(long, value_enum, env = "KKSYNC_SOURCE_FORMAT", value_name = "FORMAT")]
    pub source_format: Option<SourceFormat>,

    /// The state store, if not the default one of the source.
    #[arg(long, env = "KKSYNC_STATE", value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// How many runs to list.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: u32,

    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `kksync init-db`.
#[derive(Debug, Clone, Args)]
pub struct InitDbArgs {
    /// The SQLite database file (created if missing).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// Options of `kksync demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Folder to run the demo in (default: a new folder under the system's temp folder).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Writes a shell completion script for `kksync`.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "kksync", out);
}

/// Writes the man page (roff).
pub fn write_man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(out)
}

/// Options of `kksync refunds`.
#[derive(Debug, Clone, Args)]
pub struct RefundsArgs {
    /// The refunds: `*.csv` is read as CSV; `*.db`, `*.sqlite`, `*.sqlite3` as SQLite (table
    /// `refunds`, see `kksync init-db`).
    #[arg(long, env = "KKSYNC_REFUNDS_SOURCE", value_name = "PATH")]
    pub source: Option<PathBuf>,

    /// Read the source as this format, whatever its file name.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub source_format: Option<SourceFormat>,

    /// The state store with the refund journal (default: `<source>.kksync.db` beside a CSV, the
    /// database itself for SQLite).
    #[arg(long, env = "KKSYNC_REFUNDS_STATE", value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// Days from today to a Komfortkasse refund's planned date when the row gives none.
    #[arg(
        long,
        env = "KKSYNC_WAITING_PERIOD",
        default_value_t = 7,
        value_name = "DAYS"
    )]
    pub waiting_period: u32,

    /// Base URL of the Komfortkasse API. Plain http:// is accepted only for loopback hosts.
    #[arg(long, env = "KKSYNC_API_URL", default_value = DEFAULT_API_URL, value_name = "URL")]
    pub api_url: String,

    /// Read the Komfortkasse API key from this file (instead of KOMFORTKASSE_API_KEY or the
    /// systemd credential `komfortkasse-api-key`).
    #[arg(long, env = "KKSYNC_API_KEY_FILE", value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// Base URL of the AfterPay (Riverty) API; the partner test host is
    /// https://api.bnpl-pt.riverty.io. Plain http:// only for loopback hosts.
    #[arg(
        long,
        env = "KKSYNC_AFTERPAY_URL",
        default_value = crate::refunds::config::DEFAULT_AFTERPAY_URL,
        value_name = "URL"
    )]
    pub afterpay_url: String,

    /// Read the AfterPay API key from this file (instead of AFTERPAY_API_KEY or the systemd
    /// credential `afterpay-api-key`).
    #[arg(long, env = "KKSYNC_AFTERPAY_KEY_FILE", value_name = "PATH")]
    pub afterpay_key_file: Option<PathBuf>,

    /// AfterPay has no idempotency: after a timeout or a broken connection, wait this long
    /// before reading the order's refunds back and deciding whether to send again.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub afterpay_settle: String,

    /// Base URL of the Ratepay payment API (integration:
    /// https://api-integration.ratepay.com/transaction/management).
    #[arg(
        long,
        env = "KKSYNC_RATEPAY_URL",
        default_value = crate::refunds::config::DEFAULT_RATEPAY_URL,
        value_name = "URL"
    )]
    pub ratepay_url: String,

    /// Ratepay's OAuth token endpoint.
    #[arg(
        long,
        env = "KKSYNC_RATEPAY_TOKEN_URL",
        default_value = crate::refunds::config::DEFAULT_RATEPAY_TOKEN_URL,
        value_name = "URL"
    )]
    pub ratepay_token_url: String,

    /// The token's `audience` (default: the Ratepay URL).
    #[arg(long, env = "KKSYNC_RATEPAY_AUDIENCE", value_name = "URL")]
    pub ratepay_audience: Option<String>,

    /// The Ratepay OAuth client id (not a secret).
    #[arg(long, env = "RATEPAY_CLIENT_ID", value_name = "ID")]
    pub ratepay_client_id: Option<String>,

    /// Read the Ratepay client secret from this file (instead of RATEPAY_CLIENT_SECRET or the
    /// systemd credential `ratepay-client-secret`).
    #[arg(long, env = "KKSYNC_RATEPAY_SECRET_FILE", value_name = "PATH")]
    pub ratepay_secret_file: Option<PathBuf>,

    /// Requests per second to each provider (a decimal); every attempt counts.
    #[arg(long, default_value = "2", value_name = "R")]
    pub rate: String,

    /// Requests allowed at once before the rate applies.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub burst: u32,

    /// Refunds in flight at once.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub concurrency: usize,

    /// Attempts per request, the first included (transient failures only are retried).
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub max_attempts: u32,

    /// How long one request may be retried (e.g. 90s, 2m).
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    pub deadline: String,

    /// How long one attempt may take.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub request_timeout: String,

    /// After SIGTERM or SIGINT, how long refunds in flight may take before they are abandoned.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub stop_timeout: String,

    /// CSV field delimiter (default: detected from the header).
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<char>,

    /// Validate and print each refund's request body on stdout; send and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}
