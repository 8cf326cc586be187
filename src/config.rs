//! Checked settings built from the raw command line (`cli.rs`). Nothing after this module
//! re-checks a value: durations are `Duration`, counts are non-zero, the source kind is resolved.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use crate::cli::{SourceFormat, SyncArgs};
use crate::secret::Secret;

/// Environment variable holding the API key.
pub const API_KEY_ENV: &str = "KOMFORTKASSE_API_KEY";
/// Name of the systemd credential (`LoadCredential=komfortkasse-api-key:...`).
pub const API_KEY_CREDENTIAL: &str = "komfortkasse-api-key";
/// The API's documented maximum number of orders per `POST /orders`.
pub const MAX_CHUNK_SIZE: usize = 100;
/// The longest time the rate limiter may need to refill a full burst, in years.
pub const MAX_LIMITER_WINDOW_YEARS: u64 = 500;
/// [`MAX_LIMITER_WINDOW_YEARS`] as a duration: well inside the limiter's clock (whole
/// nanoseconds in a `u64`, about 584 years).
pub const MAX_LIMITER_WINDOW: Duration =
    Duration::from_secs(MAX_LIMITER_WINDOW_YEARS * 365 * 86_400);

/// A configuration problem; `main` turns it into exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No API key was found in any of the three places.
    #[error(
        "no API key: set {API_KEY_ENV}, pass --api-key-file PATH, or provide the systemd credential \
         `{API_KEY_CREDENTIAL}` (LoadCredential=, read from $CREDENTIALS_DIRECTORY)"
    )]
    MissingApiKey,
    /// The API key file could not be read or is empty.
    #[error("cannot read the API key from {path}: {reason}")]
    ApiKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key that is sent as an HTTP header holds characters a header cannot carry (a second
    /// line, a control character); it would fail on the first request.
    #[error(
        "the key from {origin} contains characters not allowed in an HTTP header (a second line or a control character); it must be the key alone, on one line"
    )]
    KeyNotHeaderSafe {
        /// Where it came from (`file PATH`, `environment variable NAME`, `systemd credential
        /// NAME`); never the key itself.
        origin: String,
    },
    /// The API URL is unusable or would send the key in plain text.
    #[error("invalid --api-url {url:?}: {reason}")]
    ApiUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// No source was given anywhere.
    #[error(
        "no source: pass --source PATH, set KKSYNC_SOURCE, or put `source = \"PATH\"` in the config file"
    )]
    MissingSource,
    /// The config file cannot be read or has an unknown or unusable entry.
    #[error("config file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The source kind cannot be told from the file name.
    #[error(
        "cannot tell the format of {0}: use a .csv, .db, .sqlite or .sqlite3 name, or --source-format csv|sqlite"
    )]
    UnknownSourceFormat(PathBuf),
    /// An option has a value out of range.
    #[error("invalid --{option} {value:?}: {reason}")]
    Option {
        /// The option name without dashes.
        option: &'static str,
        /// The value as given.
        value: String,
        /// What is allowed.
        reason: String,
    },
}

/// The resolved source: where it is and how to read it.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// The file.
    pub path: PathBuf,
    /// CSV or SQLite.
    pub format: SourceFormat,
    /// CSV delimiter override.
    pub delimiter: Option<u8>,
    /// Column names that differ from the defaults.
    pub columns: crate::order::ColumnNames,
}

/// How to reach the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Base URL, e.g. `https://ssl.komfortkasse.eu/api/v2`.
    pub base_url: Url,
    /// The API key (redacted in `Debug`).
    pub api_key: Secret,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

/// How to send: chunking, rate, concurrency and the retry budget.
#[derive(Debug, Clone)]
pub struct SendSettings {
    /// Requests per second.
    pub rate_per_second: f64,
    /// Burst size of the limiter.
    pub burst: NonZeroU32,
    /// Orders per request (1..=100).
    pub chunk_size: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Per-chunk retry budget.
    pub deadline: Duration,
    /// After SIGTERM/SIGINT: how long requests in flight may take before they are abandoned.
    pub stop_timeout: Duration,
}

/// Where the state store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// The SQLite file.
    pub path: PathBuf,
    /// Whether it is the shop's own database (the SQLite source itself).
    pub shared: bool,
}

impl StateSettings {
    /// The state store of `source`: `--state` if given, else beside or inside the source.
    pub fn for_source(source: &SourceSettings, state: Option<&Path>) -> Self {
        let path = state.map_or_else(
            || crate::state::default_path(&source.path, source.format),
            Path::to_path_buf,
        );
        let shared = source.format == SourceFormat::Sqlite && path == source.path;
        StateSettings { path, shared }
    }
}

/// Everything `kksync sync` needs, checked.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The source.
    pub source: SourceSettings,
    /// The API; `None` only for a dry run without a key.
    pub api: Option<ApiSettings>,
    /// Sending settings.
    pub send: SendSettings,
    /// Read and validate only.
    pub dry_run: bool,
    /// What to send.
    pub incremental: crate::pipeline::plan::Incremental,
    /// Where the state store is.
    pub state: StateSettings,
    /// Show a progress bar (only honoured on a terminal).
    pub progress: bool,
}

impl SyncConfig {
    /// Checks the raw arguments and resolves the API key from the environment, a file or a
    /// systemd credential.
    pub fn from_args(args: &SyncArgs) -> Result<Self, ConfigError> {
        Self::from_args_with_env(args, &|name| std::env::var_os(name).map(PathBuf::from))
    }

    /// As [`SyncConfig::from_args`], with the environment given (for tests).
    pub fn from_args_with_env(
        args: &SyncArgs,
        env: &dyn Fn(&str) -> Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let path = args.source.clone().ok_or(ConfigError::MissingSource)?;
        let mut source = SourceSettings {
            format: resolve_format(&path, args.source_format)?,
            path: path.clone(),
            columns: args.columns.clone(),
            delimiter: args.delimiter.map(delimiter_byte).transpose()?,
        };
        // The sidecar state store stays beside the name as given (see `real_source_path`).
        let state = StateSettings::for_source(&source, args.state.as_deref());
        source.path = real_source_path(path);
        let (rate_per_second, burst) = parse_rate_and_burst(&args.rate, args.burst)?;
        let send = SendSettings {
            rate_per_second,
            burst,
            chunk_size: check_range("chunk-size", args.chunk_size, 1, MAX_CHUNK_SIZE)?,
            concurrency: check_range("concurrency", args.concurrency, 1, 1024)?,
            deadline: parse_duration("deadline", &args.deadline)?,
            stop_timeout: parse_duration("stop-timeout", &args.stop_timeout)?,
        };
        let request_timeout = parse_duration("request-timeout", &args.request_timeout)?;
        let base_url = parse_api_url(&args.api_url)?;
        let api = match load_api_key(args.api_key_file.as_deref(), env) {
            Ok((api_key, _origin)) => Some(ApiSettings {
                base_url,
                api_key,
                request_timeout,
            }),
            // A dry run sends nothing, so it does not need a key.
            Err(ConfigError::MissingApiKey) if args.dry_run => None,
            Err(error) => return Err(error),
        };
        Ok(SyncConfig {
            source,
            api,
            send,
            dry_run: args.dry_run,
            incremental: crate::pipeline::plan::Incremental {
                full: args.full,
                resend_open_after: args
                    .resend_open_after
                    .as_deref()
                    .map(|d| parse_duration("resend-open-after", d))
                    .transpose()?,
                read_back_all: args.read_back_all,
            },
            state,
            progress: !args.no_progress,
        })
    }
}

/// A percentage such as `10` or `10%` (0 to 100), as a share (0.10).
pub fn parse_percent(option: &'static str, value: &str) -> Result<f64, ConfigError> {
    let number = value.trim().trim_end_matches('%').trim();
    match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p / 100.0),
        _ => Err(option_error(
            option,
            value,
            "must be a percentage from 0 to 100",
        )),
    }
}

fn option_error(option: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Option {
        option,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The real file behind a source path (symlinks and `..` resolved), when it exists: the run
/// lock and the atomic rename must be those of the real file, or a second name for it (a
/// symlink) would run beside a running sync, and the rename would replace the symlink with a
/// regular file. The format is still told from the name as given, and the default sidecar
/// state store stays beside that name: a symlink re-pointed at each new export
/// (`current.csv -> exports/<date>.csv`) keeps one state, and state stores made before this
/// resolution existed are still found.
pub fn real_source_path(path: PathBuf) -> PathBuf {
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// The source format: as given, or from the file extension.
pub fn resolve_format(
    path: &Path,
    given: Option<SourceFormat>,
) -> Result<SourceFormat, ConfigError> {
    if let Some(format) = given {
        return Ok(format);
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => Ok(SourceFormat::Csv),
        Some("db" | "sqlite" | "sqlite3") => Ok(SourceFormat::Sqlite),
        _ => Err(ConfigError::UnknownSourceFormat(path.to_path_buf())),
    }
}

fn delimiter_byte(c: char) -> Result<u8, ConfigError> {
    if c.is_ascii() && c != '"' && c != '\n' && c != '\r' {
        Ok(c as u8)
    } else {
        Err(option_error(
            "delimiter",
            &c.to_string(),
            "must be a single ASCII character other than a quote or newline",
        ))
    }
}

/// `--rate` and `--burst`, checked together: the limiter counts in whole nanoseconds, so the
/// time a full burst takes to refill (`burst / rate`) must fit its clock
/// ([`MAX_LIMITER_WINDOW`]); a rate of 1e-20 would otherwise panic when the limiter is built.
pub fn parse_rate_and_burst(rate: &str, burst: u32) -> Result<(f64, NonZeroU32), ConfigError> {
    let max_window = MAX_LIMITER_WINDOW.as_secs_f64();
    // Accept a decimal comma too, as German users type it.
    let parsed = match rate.trim().replace(',', ".").parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e9 && 1.0 / r <= max_window => r,
        _ => {
            return Err(option_error(
                "rate",
                rate,
                &format!(
                    "must be a number of requests per second from one every {} years to 1000000000, e.g. 2 or 0.5",
                    MAX_LIMITER_WINDOW_YEARS
                ),
            ));
        }
    };
    let burst =
        NonZeroU32::new(burst).ok_or_else(|| option_error("burst", "0", "must be at least 1"))?;
    if f64::from(burst.get()) / parsed > max_window {
        return Err(option_error(
            "burst",
            &burst.to_string(),
            &format!(
                "is too large for --rate {rate}: refilling the burst (burst / rate) must take at most {MAX_LIMITER_WINDOW_YEARS} years"
            ),
        ));
    }
    Ok((parsed, burst))
}

fn check_range(
    option: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(option_error(
            option,
            &value.to_string(),
            &format!("must be between {min} and {max}"),
        ))
    }
}

/// Parses `90s`, `10m`, `1h 30m`, `500ms`; a bare number means seconds.
pub fn parse_duration(option: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let text = text.trim();
    let parsed = match text.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err(option_error(option, text, "must be longer than zero")),
        Err(reason) => Err(option_error(
            option,
            text,
            &format!("{reason} (use e.g. 90s or 10m)"),
        )),
    }
}

/// Parses the API URL and refuses plain http:// unless the host is a loopback address.
pub fn parse_api_url(text: &str) -> Result<Url, ConfigError> {
    let refuse = |reason: &str| ConfigError::ApiUrl {
        url: text.to_string(),
        reason: reason.to_string(),
    };
    let mut url = Url::parse(text.trim()).map_err(|e| refuse(&e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(refuse(
                "plain http:// would send the API key unencrypted; use https:// (http:// is allowed only for loopback hosts such as 127.0.0.1 or localhost)",
            ));
        }
        other => {
            return Err(refuse(&format!(
                "unsupported scheme {other:?}; use https://"
            )));
        }
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(refuse("not a base URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse(
            "credentials in the URL are not allowed; the API key is sent as a header",
        ));
    }
    // Joining "orders" onto ".../api/v2" would drop "v2"; a trailing slash makes joins append.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Finds the API key: `--api-key-file`, else `KOMFORTKASSE_API_KEY`, else the systemd credential.
/// Also says where it came from (never what it is).
pub fn load_api_key(
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<(Secret, String), ConfigError> {
    let (key, origin) = load_secret(file, API_KEY_ENV, API_KEY_CREDENTIAL, env)?
        .ok_or(ConfigError::MissingApiKey)?;
    check_header_safe(&key, &origin)?;
    Ok((key, origin))
}

/// Refuses a secret that is sent as an HTTP header but cannot be one (the same rule the HTTP
/// client applies), so that it is a configuration error naming `origin`, not a failed request.
pub fn check_header_safe(secret: &Secret, origin: &str) -> Result<(), ConfigError> {
    match reqwest::header::HeaderValue::from_str(secret.expose()) {
        Ok(_) => Ok(()),
        Err(_) => Err(ConfigError::KeyNotHeaderSafe {
            origin: origin.to_string(),
        }),
    }
}

/// Finds a secret (an API key, a client secret): the file given on the command line, else the
/// environment variable, else the systemd credential of that name in `$CREDENTIALS_DIRECTORY`.
/// Also says where it came from (never what it is); `None` when there is none.
pub fn load_secret(
    file: Option<&Path>,
    env_name: &str,
    credential: &str,
    env: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Option<(Secret, String)>, ConfigError> {
    if let Some(path) = file {
        return Ok(Some((
            read_secret_file(path)?,
            format!("file {}", path.display()),
        )));
    }
    if let Some(value) = env(env_name) {
        let secret = value.to_string_lossy().trim().to_string();
        if !secret.is_empty() {
            return Ok(Some((
                Secret::new(secret),
                format!("environment variable {env_name}"),
            )));
        }
    }
    if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
        let path = dir.join(credential);
        if path.exists() {
            return Ok(Some((
                read_secret_file(&path)?,
                format!("systemd credential {credential}"),
            )));
        }
    }
    Ok(None)
}

/// A secret from a file: its content without surrounding whitespace, never empty.
fn read_secret_file(path: &Path) -> Result<Secret, ConfigError> {
    let fail = |reason: String| ConfigError::ApiKeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(fail("the file is empty".to_string()));
    }
    Ok(Secret::new(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> SyncArgs {
        let mut argv = vec!["kksync", "sync", "--source", "orders.csv"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv) {
            Ok(crate::cli::Cli {
                command: crate::cli::Command::Sync(args),
                ..
            }) => args,
            other => panic!("unexpected parse result: {other:?}"),
        }
    }

    fn env_with_key(name: &str) -> Option<PathBuf> {
        (name == API_KEY_ENV).then(|| PathBuf::from("key-from-env"))
    }

    #[test]
    fn plain_http_is_refused_except_for_loopback() {
        assert!(parse_api_url("http://127.0.0.1:8080/api/v2").is_ok());
        assert!(parse_api_url("http://localhost/api/v2").is_ok());
        assert!(parse_api_url("http://[::1]:9/api/v2").is_ok());
        assert!(parse_api_url("https://ssl.komfortkasse.eu/api/v2").is_ok());
        let error = parse_api_url("http://ssl.komfortkasse.eu/api/v2")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unencrypted"), "{error}");
        assert!(parse_api_url("http://127.0.0.1.evil.example/api").is_err());
        assert!(parse_api_url("ftp://127.0.0.1/").is_err());
    }

    #[test]
    fn api_url_gets_a_trailing_slash_so_joins_append() {
        let url = parse_api_url("https://ssl.komfortkasse.eu/api/v2").unwrap();
        assert_eq!(
            url.join("orders").unwrap().as_str(),
            "https://ssl.komfortkasse.eu/api/v2/orders"
        );
    }

    #[test]
    fn missing_key_names_all_three_ways() {
        let error = SyncConfig::from_args_with_env(&args(&[]), &|_| None)
            .unwrap_err()
            .to_string();
        for way in [API_KEY_ENV, "--api-key-file", "komfortkasse-api-key"] {
            assert!(error.contains(way), "{error}");
        }
    }

    #[test]
    fn dry_run_needs_no_key() {
        let config = SyncConfig::from_args_with_env(&args(&["--dry-run"]), &|_| None).unwrap();
        assert!(config.api.is_none());
    }

    #[test]
    fn key_comes_from_systemd_credential_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(API_KEY_CREDENTIAL), "cred-key\n").unwrap();
        let dir_path = dir.path().to_path_buf();
        let env = move |name: &str| (name == "CREDENTIALS_DIRECTORY").then(|| dir_path.clone());
        let config = SyncConfig::from_args_with_env(&args(&[]), &env).unwrap();
        assert_eq!(config.api.unwrap().api_key.expose(), "cred-key");
    }

    /// A key file with a second line or a control character gave "the API answered
    /// unexpectedly" (exit 1) on the first request; now it is a configuration error that names
    /// where the key came from, never the key. One trailing newline (or CRLF) is fine.
    #[test]
    fn a_key_that_cannot_be_a_header_is_refused_naming_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("creds");
        std::fs::create_dir(&credentials).unwrap();
        for (content, ok) in [
            ("k1\n", true),
            ("k1\r\n", true),
            ("  k1 \n\n", true),
            ("k1\nsekret2\n", false),
            ("k1\rsekret2", false),
            ("k1\x00sekret2", false),
            ("k1\x1bsekret2", false),
            ("k1\x7fsekret2", false),
        ] {
            let file = dir.path().join("key");
            std::fs::write(&file, content).unwrap();
            std::fs::write(credentials.join(API_KEY_CREDENTIAL), content).unwrap();
            let from_env = |name: &str| (name == API_KEY_ENV).then(|| PathBuf::from(content));
            let from_credential =
                |name: &str| (name == "CREDENTIALS_DIRECTORY").then(|| credentials.clone());
            let file_display = file.display().to_string();
            let cases = [
                (load_api_key(Some(&file), &|_| None), file_display.as_str()),
                (load_api_key(None, &from_env), API_KEY_ENV),
                (load_api_key(None, &from_credential), API_KEY_CREDENTIAL),
            ];
            for (result, origin) in cases {
                match result {
                    Ok((key, _)) => {
                        assert!(ok, "{content:?} from {origin} accepted");
                        assert_eq!(key.expose(), "k1");
                    }
                    Err(error) => {
                        assert!(!ok, "{content:?} from {origin}: {error}");
                        assert!(matches!(error, ConfigError::KeyNotHeaderSafe { .. }));
                        let message = error.to_string();
                        assert!(message.contains(origin), "{message}");
                        assert!(
                            message.contains("not allowed in an HTTP header"),
                            "{message}"
                        );
                        assert!(!message.contains("sekret2"), "{message}");
                        assert!(!format!("{error:?}").contains("sekret2"));
                    }
                }
            }
        }
    }

    #[test]
    fn options_are_checked() {
        for bad in [
            &["--chunk-size", "101"][..],
            &["--chunk-size", "0"],
            &["--rate", "0"],
            &["--rate", "fast"],
            &["--deadline", "soon"],
            &["--burst", "0"],
            &["--concurrency", "0"],
        ] {
            assert!(
                SyncConfig::from_args_with_env(&args(bad), &env_with_key).is_err(),
                "{bad:?}"
            );
        }
        let config = SyncConfig::from_args_with_env(
            &args(&["--deadline", "90s", "--rate", "0,5"]),
            &env_with_key,
        )
        .unwrap();
        assert_eq!(config.send.deadline, Duration::from_secs(90));
        assert_eq!(config.send.rate_per_second, 0.5);
        assert_eq!(
            config.api.unwrap().request_timeout,
            Duration::from_secs(600)
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_source_resolves_to_the_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("s.csv");
        std::fs::write(&real, "number\n").unwrap();
        let link = dir.path().join("s2.csv");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut args = args(&[]);
        args.source = Some(link);
        let config = SyncConfig::from_args_with_env(&args, &env_with_key).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        assert_eq!(config.source.path, real);
        assert_eq!(config.state.path, dir.path().join("s2.csv.kksync.db"));
        // A source that does not exist yet is kept as given.
        let config = SyncConfig::from_args_with_env(&self::args(&[]), &env_with_key).unwrap();
        assert_eq!(config.source.path, Path::new("orders.csv"));
    }

    /// A rate whose period does not fit a `Duration` (1e-20/s) or whose burst would not fit
    /// the limiter's nanosecond clock panicked when the limiter was built; now it is a
    /// configuration error naming the option.
    #[test]
    fn rates_and_bursts_the_limiter_cannot_hold_are_refused() {
        for (extra, option) in [
            (&["--rate", "1e-20"][..], "--rate"),
            (&["--rate=-1"], "--rate"),
            (&["--rate", "inf"], "--rate"),
            (&["--rate", "NaN"], "--rate"),
            (&["--rate", "1e10"], "--rate"),
            (&["--rate", "1e-10", "--burst", "2"], "--burst"),
            (&["--rate", "0,001", "--burst", "4294967295"], "--burst"),
        ] {
            let error = SyncConfig::from_args_with_env(&args(extra), &env_with_key)
                .unwrap_err()
                .to_string();
            assert!(error.contains(option), "{extra:?}: {error}");
        }
        // The slowest rate that fits, and the largest burst at the default rate, are fine.
        for extra in [
            &["--rate", "1e-10"][..],
            &["--rate", "2", "--burst", "4294967295"],
        ] {
            let config = SyncConfig::from_args_with_env(&args(extra), &env_with_key).unwrap();
            crate::pipeline::limit::Limiter::new(config.send.rate_per_second, config.send.burst);
        }
    }

    /// Durations humantime cannot hold are refused; the longest it can hold is accepted (every
    /// user of a duration copes with it: tokio and reqwest cap far-future deadlines).
    #[test]
    fn huge_durations_are_refused_or_accepted_without_panicking() {
        for option in [
            "--deadline",
            "--request-timeout",
            "--stop-timeout",
            "--resend-open-after",
        ] {
            let error = SyncConfig::from_args_with_env(
                &args(&[option, "99999999999999999999s"]),
                &env_with_key,
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains(option), "{error}");
            for zero in ["0", "0s"] {
                assert!(
                    SyncConfig::from_args_with_env(&args(&[option, zero]), &env_with_key).is_err()
                );
            }
            assert!(
                SyncConfig::from_args_with_env(
                    &args(&[option, &u64::MAX.to_string()]),
                    &env_with_key
                )
                .is_ok()
            );
        }
    }

    #[test]
    fn format_is_resolved_from_the_extension() {
        assert_eq!(
            resolve_format(Path::new("a.CSV"), None).unwrap(),
            SourceFormat::Csv
        );
        assert_eq!(
            resolve_format(Path::new("a.sqlite3"), None).unwrap(),
            SourceFormat::Sqlite
        );
        assert!(resolve_format(Path::new("a.txt"), None).is_err());
        assert_eq!(
            resolve_format(Path::new("a.txt"), Some(SourceFormat::Csv)).unwrap(),
            SourceFormat::Csv
        );
    }
}
