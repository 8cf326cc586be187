//! The top-level error of a run and the exit codes it maps to.

use crate::api::ApiError;
use crate::source::SourceError;

/// Exit codes, documented in the README.
pub mod exit_code {
    /// Every row synced.
    pub const OK: i32 = 0;
    /// Fatal: the run could not do its job (source unreadable, 401, API unreachable, write-back failed).
    pub const FATAL: i32 = 1;
    /// Usage or configuration error.
    pub const USAGE: i32 = 2;
    /// The run finished, but some rows were rejected; each is recorded in the source.
    pub const ROWS_REJECTED: i32 = 3;
    /// Another run holds the lock on this source; nothing was done.
    pub const ALREADY_RUNNING: i32 = 4;
    /// Stopped by SIGTERM/SIGINT; everything acknowledged was written back, a re-run continues.
    pub const INTERRUPTED: i32 = 5;
    /// `ordersync` refused to send a list that could mark open orders LEGACY by mistake.
    pub const REFUSED: i32 = 6;
}

/// Everything that can stop a command before it finishes its job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or configuration is unusable.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// Reading the source or writing results back failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The API refused the API key; nothing more is sent.
    #[error(
        "the API rejected the API key ({message}); the run was stopped and the source left as it was"
    )]
    Unauthorized {
        /// The API's own error text.
        message: String,
    },
    /// The API refuses every request of the shop; nothing more is sent.
    #[error(
        "the API refused the shop's requests ({message}); the run was stopped and the source left as it was; check the shop's API access in the Komfortkasse merchant area"
    )]
    ShopRefused {
        /// The API's own error text.
        message: String,
    },
    /// The API answered in a way that says the URL or service is wrong (redirect, HTML page...).
    #[error("the API answered unexpectedly: {0}; check --api-url")]
    UnexpectedApi(ApiError),
    /// Every chunk failed past its deadline: the API is down or unreachable.
    #[error("the API could not be reached: every chunk gave up ({last_error})")]
    ApiUnreachable {
        /// The last error seen.
        last_error: String,
    },
    /// Another kksync run holds the lock on this source.
    #[error("another kksync run is working on this source (lock held on {}); nothing was done", .path.display())]
    AlreadyRunning {
        /// The lock file.
        path: std::path::PathBuf,
    },
    /// A signal stopped the run gracefully.
    #[error(
        "interrupted by {signal}: no further chunks were sent, every status the API acknowledged was written back; run kksync again to continue"
    )]
    Interrupted {
        /// SIGTERM or SIGINT.
        signal: &'static str,
    },
    /// `ordersync` refused to send its list (a safety guard).
    #[error("ordersync refused: {0}; nothing was sent")]
    OrderSyncRefused(#[from] crate::ordersync::Refusal),
    /// The state store could not be used.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The status read-back failed past its deadline; everything else was done.
    #[error(
        "statuses could not be read back from the API ({last_error}); sent orders were written back, a re-run reads back again"
    )]
    ReadBackFailed {
        /// The last error seen.
        last_error: String,
    },
    /// The sandbox failed to start or run.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// An I/O error outside the source (e.g. the demo's working folder).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A background task died unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
    /// A refunds run could not go on (state store, provider credentials refused, ...).
    #[error(transparent)]
    Refunds(#[from] crate::refunds::RefundsError),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => exit_code::USAGE,
            Error::AlreadyRunning { .. } => exit_code::ALREADY_RUNNING,
            Error::Interrupted { .. } => exit_code::INTERRUPTED,
            Error::OrderSyncRefused(_) => exit_code::REFUSED,
            Error::Refunds(error) => error.exit_code(),
            _ => exit_code::FATAL,
        }
    }
}
