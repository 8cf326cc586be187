//! A local imitation of the Komfortkasse API v2 for tests and load runs (`kksync sandbox`).
//!
//! Everything lives under `/api/v2` and follows `shared/reference/komfortkasse-api-v2.md`
//! (the §0.1 error table wins). On top of the API the sandbox offers:
//!
//! * **Real locks**: a write request try-locks every order number it touches and holds the locks
//!   while it is processed (including injected latency); a conflicting request gets 400
//!   `Could not acquire lock`.
//! * **Deterministic fault injection** (module `faults`): resets, stalls, 500s, lock errors and latency
//!   decided by a hash of the seed and the request itself.
//! * **Payments** ([`SandboxHandle::tick`]): each round pays, part-pays or cancels a
//!   seed-determined share (`pay_rate`) of the open orders and advances refunds one step.
//! * **Refund providers** (module `providers`): AfterPay (Riverty) under `/afterpay` and Ratepay
//!   under `/ratepay`, with the same faults and their own `/_sandbox/...` controls.
//! * **Control endpoints** under `/_sandbox` (no auth): `GET stats`, `POST stats/reset`,
//!   `POST tick`, `POST lock/{n}`, `POST unlock/{n}`, `POST reject/{n}` (`{"reason":"…"}`,
//!   `null` clears), `POST pay/{n}` (`{"amount":"12.34"}`), `GET orders/{n}`, `GET faults`,
//!   `PUT faults`.
//!
//! Paths outside `/api` and `/_sandbox` redirect to `/login`; unknown paths under `/api` answer
//! 404 with an empty HTML page, as the real service does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod afterpay;
mod control;
mod error;
mod faults;
mod hash;
mod lock;
mod order;
mod providers;
mod ratepay;
mod routes;
mod server;
mod stats;
mod store;

pub use stats::{FaultCounts, POST_ORDERS_CAP, PostOrdersEntry, StatsSnapshot};

/// How `POST /orders` treats a body with some invalid orders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PartialMode {
    /// Check the whole array first; answer 400 with the first bad order's message, store nothing.
    #[default]
    Reject,
    /// Store the valid orders and leave the bad ones out of the 200 reply.
    Skip,
}

/// The state of the sandbox shop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ShopState {
    /// Normal operation.
    #[default]
    Active,
    /// Every call answers 400 `API not active, contact support`.
    ApiInactive,
    /// Every write answers 400 `Update not allowed for non-API Shop`.
    ReadOnly,
    /// Every call answers 400 `Shop not active`.
    Inactive,
}

/// Everything the sandbox can be configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// The one valid `X-Komfortkasse-API-Key`.
    pub api_key: String,
    /// Seed for faults, payments, reference numbers and refund start states.
    pub seed: u64,
    /// Share of open orders that get a payment outcome per tick (0..=1).
    pub pay_rate: f64,
    /// Tick automatically at this interval.
    pub pay_interval: Option<Duration>,
    /// Share of requests answered with an injected 400 `Could not acquire lock`.
    pub lock_error_rate: f64,
    /// Share of requests answered with 500 `Internal server error`.
    pub server_error_rate: f64,
    /// Share of requests whose connection is dropped without an answer.
    pub reset_rate: f64,
    /// Fixed latency added to every answer.
    pub latency: Duration,
    /// Extra latency, uniform in `0..latency_jitter`.
    pub latency_jitter: Duration,
    /// Share of requests stalled for `stall_duration` before being answered normally.
    pub stall_rate: f64,
    /// How long a stall lasts.
    pub stall_duration: Duration,
    /// How `POST /orders` treats partly invalid bodies.
    pub partial_mode: PartialMode,
    /// The shop state.
    pub shop_state: ShopState,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            api_key: "sandbox-key".to_owned(),
            seed: 0,
            pay_rate: 0.0,
            pay_interval: None,
            lock_error_rate: 0.0,
            server_error_rate: 0.0,
            reset_rate: 0.0,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            stall_rate: 0.0,
            stall_duration: Duration::from_secs(30),
            partial_mode: PartialMode::Reject,
            shop_state: ShopState::Active,
        }
    }
}

/// Command-line options of `kksync sandbox`.
#[derive(clap::Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The API key clients must send in X-Komfortkasse-API-Key.
    #[arg(long, default_value = "sandbox-key")]
    pub api_key: String,
    /// Seed for all random decisions (faults, payments, reference numbers).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Share of open orders that get a payment outcome per payment round (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub pay_rate: f64,
    /// Run a payment round automatically at this interval, e.g. "2s".
    #[arg(long)]
    pub pay_interval: Option<String>,
    /// Share of API requests answered with an injected 400 "Could not acquire lock" (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub lock_error_rate: f64,
    /// Share of API requests answered with 500 "Internal server error" (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub server_error_rate: f64,
    /// Share of API requests whose connection is dropped without an answer (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub reset_rate: f64,
    /// Fixed latency added to every API answer, e.g. "20ms".
    #[arg(long, default_value = "0ms")]
    pub latency: String,
    /// Extra random latency, uniform between 0 and this value, e.g. "10ms".
    #[arg(long, default_value = "0ms")]
    pub latency_jitter: String,
    /// Share of API requests that stall for --stall-duration before being answered (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub stall_rate: f64,
    /// How long a stalled request waits, e.g. "30s".
    #[arg(long, default_value = "30s")]
    pub stall_duration: String,
    /// How POST /orders treats a body with invalid orders: reject the whole call, or skip them.
    #[arg(long, value_enum, default_value_t = PartialMode::Reject)]
    pub partial_mode: PartialMode,
    /// State of the sandbox shop (anything but active makes calls fail as documented).
    #[arg(long, value_enum, default_value_t = ShopState::Active)]
    pub shop_state: ShopState,
}

/// Errors of the sandbox itself (not API answers).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The listen address is not `host:port`.
    #[error("invalid listen address {0:?}")]
    InvalidAddress(String),
    /// A rate is outside `0..=1`.
    #[error("--{name} must be between 0 and 1, got {value}")]
    InvalidRate {
        /// Option name.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A duration could not be parsed.
    #[error("--{name}: invalid duration {value:?}: {reason}")]
    InvalidDuration {
        /// Option name.
        name: &'static str,
        /// The value given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Any other I/O failure (signals, stdout).
    #[error("sandbox I/O error: {0}")]
    Io(#[from] std::io::Error),
}

fn check_rate(name: &'static str, value: f64) -> Result<f64, SandboxError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(SandboxError::InvalidRate { name, value })
    }
}

fn parse_duration(name: &'static str, value: &str) -> Result<Duration, SandboxError> {
    humantime::parse_duration(value.trim()).map_err(|e| SandboxError::InvalidDuration {
        name,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

impl SandboxArgs {
    /// Checks the options and turns them into a listen address and a configuration.
    pub fn to_config(&self) -> Result<(SocketAddr, SandboxConfig), SandboxError> {
        let addr = self
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| SandboxError::InvalidAddress(self.listen.clone()))?;
        let config = SandboxConfig {
            api_key: self.api_key.clone(),
            seed: self.seed,
            pay_rate: check_rate("pay-rate", self.pay_rate)?,
            pay_interval: self
                .pay_interval
                .as_deref()
                .map(|v| parse_duration("pay-interval", v))
                .transpose()?
                .filter(|d| !d.is_zero()),
            lock_error_rate: check_rate("lock-error-rate", self.lock_error_rate)?,
            server_error_rate: check_rate("server-error-rate", self.server_error_rate)?,
            reset_rate: check_rate("reset-rate", self.reset_rate)?,
            latency: parse_duration("latency", &self.latency)?,
            latency_jitter: parse_duration("latency-jitter", &self.latency_jitter)?,
            stall_rate: check_rate("stall-rate", self.stall_rate)?,
            stall_duration: parse_duration("stall-duration", &self.stall_duration)?,
            partial_mode: self.partial_mode,
            shop_state: self.shop_state,
        };
        Ok((addr, config))
    }
}

/// Settings that can change while the sandbox runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Runtime {
    pub(crate) rates: faults::Rates,
    pub(crate) partial_mode: PartialMode,
    pub(crate) shop_state: ShopState,
}

/// State shared by every request.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) api_key: String,
    pub(crate) runtime: RwLock<Runtime>,
    pub(crate) store: store::Store,
    pub(crate) locks: Arc<lock::LockTable>,
    pub(crate) rejections: lock::Rejections,
    pub(crate) stats: stats::Stats,
    pub(crate) faults: faults::FaultInjector,
    /// AfterPay and Ratepay (refunds), see `providers`.
    pub(crate) providers: providers::ProviderStores,
}

impl Shared {
    fn new(config: &SandboxConfig) -> Self {
        Self {
            api_key: config.api_key.clone(),
            runtime: RwLock::new(Runtime {
                rates: faults::Rates {
                    pay_rate: config.pay_rate,
                    lock_error_rate: config.lock_error_rate,
                    server_error_rate: config.server_error_rate,
                    reset_rate: config.reset_rate,
                    stall_rate: config.stall_rate,
                    latency: config.latency,
                    latency_jitter: config.latency_jitter,
                    stall_duration: config.stall_duration,
                },
                partial_mode: config.partial_mode,
                shop_state: config.shop_state,
            }),
            store: store::Store::new(config.seed),
            locks: Arc::new(lock::LockTable::new()),
            rejections: lock::Rejections::default(),
            stats: stats::Stats::new(),
            faults: faults::FaultInjector::new(config.seed),
            providers: providers::ProviderStores::default(),
        }
    }

    pub(crate) fn runtime(&self) -> Runtime {
        match self.runtime.read() {
            Ok(r) => *r,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// One payment round at today's Berlin date.
    pub(crate) fn tick(&self) -> usize {
        let rate = self.runtime().rates.pay_rate;
        self.store.tick(rate, crate::dates::berlin_today())
    }
}

/// A running sandbox.
#[derive(Debug)]
pub struct SandboxHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    ticker: Option<JoinHandle<()>>,
}

impl SandboxHandle {
    /// The address the sandbox listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT/api/v2` (a wildcard listen address is shown as loopback).
    pub fn base_url(&self) -> String {
        format!("{}/api/v2", self.root_url())
    }

    /// `http://HOST:PORT/_sandbox`.
    pub fn control_url(&self) -> String {
        format!("{}/_sandbox", self.root_url())
    }

    fn root_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// A copy of the statistics.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// The `paymentStatus` of an order, if it exists.
    pub fn order_status(&self, number: &str) -> Option<String> {
        self.shared
            .store
            .read(number, |r| r.status.as_str().to_owned())
    }

    /// How many distinct orders are stored.
    pub fn order_count(&self) -> usize {
        self.shared.store.len()
    }

    /// Applies one payment round (and advances refunds); returns how many orders changed.
    pub fn tick(&self) -> usize {
        self.shared.tick()
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s) and returns.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        let _ = self.server.await;
    }
}

/// Binds `addr`, starts the sandbox in the background and returns at once.
pub async fn serve(addr: SocketAddr, config: SandboxConfig) -> Result<SandboxHandle, SandboxError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SandboxError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| SandboxError::Bind { addr, source })?;
    let shared = Arc::new(Shared::new(&config));
    let shutdown = CancellationToken::new();
    let router = routes::router(Arc::clone(&shared));
    let server = tokio::spawn(server::accept_loop(listener, router, shutdown.clone()));
    let ticker = config.pay_interval.map(|interval| {
        let shared = Arc::clone(&shared);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = timer.tick() => {
                        let changed = shared.tick();
                        tracing::debug!(changed, "sandbox payment round");
                    }
                }
            }
        })
    });
    Ok(SandboxHandle {
        addr: local,
        shared,
        shutdown,
        server,
        ticker,
    })
}

/// `kksync sandbox`: serves until SIGINT/SIGTERM, then shuts down gracefully.
pub async fn run(args: SandboxArgs) -> Result<(), SandboxError> {
    use std::io::Write as _;
    let (addr, config) = args.to_config()?;
    let key = config.api_key.clone();
    let handle = serve(addr, config).await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "kksync sandbox listening on {} (API key: {key})",
            handle.base_url()
        )?;
        stdout.flush()?;
    }
    wait_for_signal().await?;
    tracing::info!("sandbox shutting down");
    handle.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> Result<(), SandboxError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> Result<(), SandboxError> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}
