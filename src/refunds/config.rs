//! Checked settings of `kksync refunds`, built from [`crate::cli::RefundsArgs`].
//!
//! Credentials come, per provider, from a `--*-file`, an environment variable or a systemd
//! credential (`$CREDENTIALS_DIRECTORY`), never from the command line. A provider without
//! credentials is not an error until the source has a refund for it: that row then records
//! what is missing and the run exits with 2.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use super::ratepay::Credentials;
use crate::cli::{RefundsArgs, SourceFormat};
use crate::config::{ConfigError, parse_api_url, parse_duration};
use crate::secret::Secret;

use super::model::Provider;

/// Default AfterPay (Riverty) host (production; the partner test host is
/// `https://api.bnpl-pt.riverty.io`).
pub const DEFAULT_AFTERPAY_URL: &str = "https://api.bnpl.riverty.io";
/// Default Ratepay payment API base (production; integration:
/// `https://api-integration.ratepay.com/transaction/management`).
pub const DEFAULT_RATEPAY_URL: &str = "https://api.ratepay.com/transaction/management";
/// Default Ratepay token endpoint.
pub const DEFAULT_RATEPAY_TOKEN_URL: &str = "https://oauth.ratepay.com/oauth/token";

/// Environment variable with the AfterPay API key.
pub const AFTERPAY_KEY_ENV: &str = "AFTERPAY_API_KEY";
/// systemd credential with the AfterPay API key.
pub const AFTERPAY_KEY_CREDENTIAL: &str = "afterpay-api-key";
/// Environment variable with the Ratepay client secret.
pub const RATEPAY_SECRET_ENV: &str = "RATEPAY_CLIENT_SECRET";
/// systemd credential with the Ratepay client secret.
pub const RATEPAY_SECRET_CREDENTIAL: &str = "ratepay-client-secret";
/// The test hook's environment variable (see [`RefundsConfig::pause_at`]).
pub const PAUSE_ENV: &str = "KKSYNC_TEST_PAUSE_AT";

/// Everything `kksync refunds` needs, checked.
#[derive(Debug, Clone)]
pub struct RefundsConfig {
    /// The refunds source.
    pub source: PathBuf,
    /// CSV or SQLite.
    pub format: SourceFormat,
    /// CSV delimiter override.
    pub delimiter: Option<u8>,
    /// The state store (journal and run history).
    pub state: PathBuf,
    /// Days from today to a Komfortkasse refund's default planned date.
    pub waiting_days: u32,
    /// Komfortkasse API base.
    pub komfortkasse_url: Url,
    /// Its key, if one was found.
    pub komfortkasse_key: Option<Secret>,
    /// AfterPay API base.
    pub afterpay_url: Url,
    /// Its key, if one was found.
    pub afterpay_key: Option<Secret>,
    /// Ratepay payment API base.
    pub ratepay_url: Url,
    /// Its OAuth client credentials, if found.
    pub ratepay: Option<Credentials>,
    /// Requests per second, per provider.
    pub rate_per_second: f64,
    /// Limiter burst.
    pub burst: NonZeroU32,
    /// Refunds in flight at once.
    pub concurrency: usize,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Retry budget of one request.
    pub deadline: Duration,
    /// Timeout of one attempt.
    pub request_timeout: Duration,
    /// After SIGTERM/SIGINT, how long refunds in flight may take.
    pub stop_timeout: Duration,
    /// AfterPay: how long a request that may have been processed gets before the read-back.
    pub afterpay_settle: Duration,
    /// Validate and print; send and write nothing.
    pub dry_run: bool,
    /// Test hook: the process sleeps at this point (`refund-sent`: after a provider created a
    /// refund, before the journal records it; `refund-recorded`: before the write-back), so an
    /// end-to-end test can SIGKILL it there. Read from `KKSYNC_TEST_PAUSE_AT`; not an option.
    pub pause_at: Option<String>,
}

impl RefundsConfig {
    /// Checks the arguments and finds the credentials in the real environment.
    pub fn from_args(args: &RefundsArgs) -> Result<Self, ConfigError> {
        Self::from_args_with_env(args, &|name| std::env::var_os(name).map(PathBuf::from))
    }

    /// As [`RefundsConfig::from_args`], with the environment given (for tests).
    pub fn from_args_with_env(
        args: &RefundsArgs,
        env: &dyn Fn(&str) -> Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let source = args.source.clone().ok_or(ConfigError::Option {
            option: "source",
            value: String::new(),
            reason: "is required: the refunds CSV or SQLite database (or KKSYNC_REFUNDS_SOURCE)"
                .into(),
        })?;
        let format = match args.source_format {
            Some(format) => format,
            None => format_of(&source)?,
        };
        // The state store stays beside the name as given (see `config::real_source_path`).
        let state = args
            .state
            .clone()
            .unwrap_or_else(|| crate::state::default_path(&source, format));
        let source = crate::config::real_source_path(source);
        let komfortkasse_key = match crate::config::load_api_key(args.api_key_file.as_deref(), env)
        {
            Ok((key, _)) => Some(key),
            Err(ConfigError::MissingApiKey) => None,
            Err(error) => return Err(error),
        };
        // Sent as a header, like the Komfortkasse key: refused here if it cannot be one.
        let afterpay_key = crate::config::load_secret(
            args.afterpay_key_file.as_deref(),
            AFTERPAY_KEY_ENV,
            AFTERPAY_KEY_CREDENTIAL,
            env,
        )?
        .map(|(key, origin)| crate::config::check_header_safe(&key, &origin).map(|()| key))
        .transpose()?;
        let ratepay_url = url("ratepay-url", &args.ratepay_url)?;
        let ratepay_secret = load_secret(
            args.ratepay_secret_file.as_deref(),
            RATEPAY_SECRET_ENV,
            RATEPAY_SECRET_CREDENTIAL,
            env,
        )?;
        let client_id = args
            .ratepay_client_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty());
        let token_url = exact_url("ratepay-token-url", &args.ratepay_token_url)?;
        let ratepay = match (client_id, ratepay_secret) {
            (Some(client_id), Some(client_secret)) => Some(Credentials {
                client_id: client_id.to_string(),
                client_secret,
                audience: args
                    .ratepay_audience
                    .clone()
                    .unwrap_or_else(|| args.ratepay_url.trim().trim_end_matches('/').to_string()),
                token_url,
            }),
            _ => None,
        };
        let (rate_per_second, burst) = crate::config::parse_rate_and_burst(&args.rate, args.burst)?;
        Ok(RefundsConfig {
            format,
            state,
            delimiter: args.delimiter.map(delimiter_byte).transpose()?,
            waiting_days: match args.waiting_period {
                1..=365 => args.waiting_period,
                _ => {
                    return Err(option(
                        "waiting-period",
                        &args.waiting_period.to_string(),
                        "must be between 1 and 365 days (the planned date must lie in the future)",
                    ));
                }
            },
            komfortkasse_url: url("api-url", &args.api_url)?,
            komfortkasse_key,
            afterpay_url: url("afterpay-url", &args.afterpay_url)?,
            afterpay_key,
            ratepay_url,
            ratepay,
            rate_per_second,
            burst,
            concurrency: match args.concurrency {
                1..=64 => args.concurrency,
                n => {
                    return Err(option(
                        "concurrency",
                        &n.to_string(),
                        "must be between 1 and 64",
                    ));
                }
            },
            max_attempts: match args.max_attempts {
                1..=100 => args.max_attempts,
                n => {
                    return Err(option(
                        "max-attempts",
                        &n.to_string(),
                        "must be between 1 and 100",
                    ));
                }
            },
            deadline: parse_duration("deadline", &args.deadline)?,
            request_timeout: parse_duration("request-timeout", &args.request_timeout)?,
            stop_timeout: parse_duration("stop-timeout", &args.stop_timeout)?,
            afterpay_settle: parse_duration("afterpay-settle", &args.afterpay_settle)?,
            dry_run: args.dry_run,
            pause_at: env(PAUSE_ENV)
                .map(|v| v.to_string_lossy().trim().to_string())
                .filter(|v| !v.is_empty()),
            source,
        })
    }

    /// Whether the state store is the shop's own database (then its journal mode is left alone).
    pub fn state_is_shared(&self) -> bool {
        self.format == SourceFormat::Sqlite && self.state == self.source
    }

    /// What to tell the user when a provider's credentials are missing.
    pub fn missing_credentials(provider: Provider) -> String {
        match provider {
            Provider::Komfortkasse => format!(
                "no Komfortkasse API key: set {}, pass --api-key-file PATH, or provide the systemd credential `{}`",
                crate::config::API_KEY_ENV,
                crate::config::API_KEY_CREDENTIAL
            ),
            Provider::AfterPay => format!(
                "no AfterPay API key: set {AFTERPAY_KEY_ENV}, pass --afterpay-key-file PATH, or provide the systemd credential `{AFTERPAY_KEY_CREDENTIAL}`"
            ),
            Provider::Ratepay => format!(
                "no Ratepay client credentials: set RATEPAY_CLIENT_ID (or --ratepay-client-id) and the secret in {RATEPAY_SECRET_ENV}, --ratepay-secret-file PATH or the systemd credential `{RATEPAY_SECRET_CREDENTIAL}`"
            ),
        }
    }

    /// The effective options for the run history (no secrets, only whether they were found).
    pub fn options_json(&self) -> serde_json::Value {
        serde_json::json!({
            "source": self.source.display().to_string(),
            "format": format!("{:?}", self.format).to_lowercase(),
            "state": self.state.display().to_string(),
            "waiting_period_days": self.waiting_days,
            "komfortkasse": {"url": self.komfortkasse_url.as_str(), "key": self.komfortkasse_key.is_some()},
            "afterpay": {"url": self.afterpay_url.as_str(), "key": self.afterpay_key.is_some()},
            "ratepay": {"url": self.ratepay_url.as_str(), "credentials": self.ratepay.is_some()},
            "rate": self.rate_per_second,
            "burst": self.burst.get(),
            "concurrency": self.concurrency,
            "max_attempts": self.max_attempts,
            "deadline_s": self.deadline.as_secs_f64(),
            "request_timeout_s": self.request_timeout.as_secs_f64(),
            "afterpay_settle_s": self.afterpay_settle.as_secs_f64(),
            "dry_run": self.dry_run,
        })
    }
}

fn option(option: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Option {
        option,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn format_of(path: &Path) -> Result<SourceFormat, ConfigError> {
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
        Err(option(
            "delimiter",
            &c.to_string(),
            "must be a single ASCII character other than a quote or newline",
        ))
    }
}

/// A provider base URL: https, or plain http only for loopback hosts (the key would travel
/// unencrypted otherwise).
fn url(name: &'static str, text: &str) -> Result<Url, ConfigError> {
    parse_api_url(text).map_err(|error| match error {
        ConfigError::ApiUrl { url, reason } => option(name, &url, &reason),
        other => other,
    })
}

/// An endpoint URL used as given (no trailing slash added), under the same scheme rules.
fn exact_url(name: &'static str, text: &str) -> Result<Url, ConfigError> {
    url(name, text)?;
    Url::parse(text.trim()).map_err(|e| option(name, text, &e.to_string()))
}

/// A secret from `--*-file`, else the environment variable, else the systemd credential.
fn load_secret(
    file: Option<&Path>,
    env_name: &str,
    credential: &str,
    env: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    crate::config::load_secret(file, env_name, credential, env)
        .map(|found| found.map(|(secret, _origin)| secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> RefundsArgs {
        let mut argv = vec!["kksync", "refunds", "--source", "refunds.csv"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv) {
            Ok(crate::cli::Cli {
                command: crate::cli::Command::Refunds(args),
                ..
            }) => args,
            other => panic!("unexpected parse result: {other:?}"),
        }
    }

    #[test]
    fn credentials_come_from_env_files_and_systemd_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(AFTERPAY_KEY_CREDENTIAL), "ap-secret-1\n").unwrap();
        std::fs::write(dir.path().join("rp"), "rp-secret-2").unwrap();
        let creds = dir.path().to_path_buf();
        let env = move |name: &str| match name {
            "CREDENTIALS_DIRECTORY" => Some(creds.clone()),
            "KOMFORTKASSE_API_KEY" => Some(PathBuf::from("kk-secret-3")),
            _ => None,
        };
        let rp_file = dir.path().join("rp").display().to_string();
        let config = RefundsConfig::from_args_with_env(
            &args(&[
                "--ratepay-client-id",
                "shop-1",
                "--ratepay-secret-file",
                &rp_file,
            ]),
            &env,
        )
        .unwrap();
        assert_eq!(
            config.afterpay_key.as_ref().unwrap().expose(),
            "ap-secret-1"
        );
        assert_eq!(
            config.komfortkasse_key.as_ref().unwrap().expose(),
            "kk-secret-3"
        );
        let ratepay = config.ratepay.as_ref().unwrap();
        assert_eq!(ratepay.client_secret.expose(), "rp-secret-2");
        assert_eq!(ratepay.audience, DEFAULT_RATEPAY_URL);
        assert_eq!(ratepay.token_url.as_str(), DEFAULT_RATEPAY_TOKEN_URL);
        let shown = format!("{config:?} {}", config.options_json());
        for secret in ["ap-secret-1", "rp-secret-2", "kk-secret-3"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(config.state, PathBuf::from("refunds.csv.kksync.db"));
        assert_eq!(config.waiting_days, 7);
    }

    #[test]
    fn missing_credentials_are_not_an_error_until_needed() {
        let config = RefundsConfig::from_args_with_env(&args(&[]), &|_| None).unwrap();
        assert!(config.komfortkasse_key.is_none() && config.afterpay_key.is_none());
        assert!(config.ratepay.is_none());
        let message = RefundsConfig::missing_credentials(Provider::AfterPay);
        assert!(message.contains("AFTERPAY_API_KEY") && message.contains("--afterpay-key-file"));
    }

    #[test]
    fn urls_and_options_are_checked() {
        for bad in [
            &["--afterpay-url", "http://api.bnpl.riverty.io"][..],
            &["--ratepay-url", "http://example.com/x"],
            &["--ratepay-token-url", "ftp://127.0.0.1/t"],
            &["--waiting-period", "0"],
            &["--max-attempts", "0"],
            &["--rate", "0"],
            &["--deadline", "soon"],
        ] {
            let error = RefundsConfig::from_args_with_env(&args(bad), &|_| None);
            assert!(error.is_err(), "{bad:?}");
        }
        let error = RefundsConfig::from_args_with_env(
            &args(&["--afterpay-url", "http://api.bnpl.riverty.io"]),
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("--afterpay-url") && error.contains("unencrypted"),
            "{error}"
        );
        let config = RefundsConfig::from_args_with_env(
            &args(&[
                "--afterpay-url",
                "http://127.0.0.1:9/afterpay",
                "--state",
                "/tmp/s.db",
                "--waiting-period",
                "14",
            ]),
            &|_| None,
        )
        .unwrap();
        assert_eq!(config.afterpay_url.as_str(), "http://127.0.0.1:9/afterpay/");
        assert_eq!(config.state, PathBuf::from("/tmp/s.db"));
        assert_eq!(config.waiting_days, 14);
    }

    #[test]
    fn the_pause_hook_is_read_from_the_environment_only() {
        let env = |name: &str| (name == PAUSE_ENV).then(|| PathBuf::from("refund-sent"));
        let config = RefundsConfig::from_args_with_env(&args(&[]), &env).unwrap();
        assert_eq!(config.pause_at.as_deref(), Some("refund-sent"));
    }
}
