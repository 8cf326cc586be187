//! The TOML config file and how it completes the command line.
//!
//! Precedence is flags, then environment (`KKSYNC_*`), then the file, then defaults. clap
//! already orders flags, environment and defaults; the file slots in by adding, for every
//! option it sets that came neither from a flag nor from the environment, that option to the
//! command line and parsing again, so file values go through the very same checks as flags.
//!
//! ```toml
//! source = "/var/lib/kksync/orders.csv"
//! rate = 2
//! chunk-size = 100
//! deadline = "10m"
//! api-key-file = "/etc/kksync/api-key"
//!
//! [columns]            # API field = column in your export / table
//! number = "Bestellnummer"
//! "billing.countryCode" = "Land"
//! ```

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command, ConfigAction, SyncArgs};
use crate::config::{ConfigError, load_api_key};
use crate::order::ColumnNames;

/// Used when `--config` is not given and the file exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/kksync/kksync.toml";

/// Why the command line could not be turned into a [`Cli`].
#[derive(Debug)]
pub enum CliFailure {
    /// clap's own error (usage, `--help`, `--version`): clap prints it and chooses the exit code.
    Clap(clap::Error),
    /// The config file is unusable.
    Config(ConfigError),
}

/// Parses the command line, completed from the config file.
pub fn parse_cli(argv: Vec<OsString>) -> Result<Cli, CliFailure> {
    parse_cli_with_default(argv, Path::new(DEFAULT_CONFIG_PATH))
}

/// As [`parse_cli`], with the default config path given (for tests).
pub fn parse_cli_with_default(argv: Vec<OsString>, default_path: &Path) -> Result<Cli, CliFailure> {
    let command = Cli::command();
    let matches = command
        .clone()
        .try_get_matches_from(&argv)
        .map_err(CliFailure::Clap)?;
    let Some(sync_matches) = sync_matches(&matches) else {
        return Cli::from_arg_matches(&matches).map_err(CliFailure::Clap);
    };
    let explicit = matches.get_one::<PathBuf>("config").cloned();
    let path = match explicit {
        Some(path) => Some(path),
        None => default_path.exists().then(|| default_path.to_path_buf()),
    };
    let Some(path) = path else {
        return Cli::from_arg_matches(&matches).map_err(CliFailure::Clap);
    };
    let fail = |reason: String| {
        CliFailure::Config(ConfigError::ConfigFile {
            path: path.clone(),
            reason,
        })
    };
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| fail(e.message().to_string()))?;
    let columns = match table.remove("columns") {
        None => ColumnNames::default(),
        Some(toml::Value::Table(columns)) => {
            let pairs = columns.into_iter().map(|(field, column)| match column {
                toml::Value::String(column) => Ok((field, column)),
                other => Err(format!(
                    "[columns] {field} must be a string, not {}",
                    other.type_str()
                )),
            });
            let pairs = pairs.collect::<Result<Vec<_>, _>>().map_err(fail)?;
            ColumnNames::from_pairs(pairs).map_err(fail)?
        }
        Some(_) => return Err(fail("`columns` must be a table: [columns]".into())),
    };
    // `kksync refunds` takes its options from the `[refunds]` table only: its source, state
    // and rates are not the orders'.
    let refunds = table.remove("refunds");
    let running = matches.subcommand_name().unwrap_or("sync");
    let table = match (running, refunds) {
        ("refunds", Some(toml::Value::Table(refunds))) => refunds,
        ("refunds", None) => toml::Table::new(),
        (_, Some(toml::Value::Table(_)) | None) => table,
        (_, Some(_)) => return Err(fail("`refunds` must be a table: [refunds]".into())),
    };
    let mut argv = argv;
    argv.extend(file_arguments(&table, running, sync_matches).map_err(fail)?);
    let matches = command
        .try_get_matches_from(&argv)
        .map_err(CliFailure::Clap)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(CliFailure::Clap)?;
    if let Some(args) = sync_args_mut(&mut cli.command) {
        args.columns = columns;
        args.config_file = Some(path);
    }
    Ok(cli)
}

/// The matches of the subcommand that takes sync options, if that is what runs.
fn sync_matches(matches: &ArgMatches) -> Option<&ArgMatches> {
    match matches.subcommand()? {
        ("sync" | "ordersync" | "runs" | "refunds", matches) => Some(matches),
        ("config", config) => match config.subcommand()? {
            ("show", show) => Some(show),
            _ => None,
        },
        _ => None,
    }
}

fn sync_args_mut(command: &mut Command) -> Option<&mut SyncArgs> {
    match command {
        Command::Sync(args)
        | Command::Config {
            action: ConfigAction::Show(args),
        } => Some(args),
        Command::Ordersync(args) => Some(&mut args.sync),
        _ => None,
    }
}

/// `--option=value` for every file entry that neither a flag nor the environment has set.
/// One file serves every command: entries the running command does not take (e.g.
/// `max-shrink` for `sync`) are skipped; entries no command takes are an error.
fn file_arguments(
    table: &toml::Table,
    running: &str,
    given: &ArgMatches,
) -> Result<Vec<OsString>, String> {
    let cli = Cli::command();
    let find = |name: &str| {
        let name = if name == "config" { "sync" } else { name };
        cli.find_subcommand(name)
            .cloned()
            .ok_or_else(|| format!("internal: no {name} command"))
    };
    let sync = find(running)?;
    // The top-level entries serve sync, ordersync and runs; `[refunds]` only refunds.
    let all = match running {
        "refunds" => vec![],
        _ => vec![find("sync")?, find("ordersync")?, find("runs")?],
    };
    let mut extra = Vec::new();
    for (key, value) in table {
        if key == "api-key" || key == "api_key" {
            return Err("the API key is never read from the config file; use api-key-file, KOMFORTKASSE_API_KEY or a systemd credential".into());
        }
        let long = key.replace('_', "-");
        let takes = |command: &clap::Command| {
            command
                .get_arguments()
                .any(|a| a.get_long() == Some(long.as_str()))
        };
        let Some(arg) = sync
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            if all.iter().any(takes) {
                continue;
            }
            return Err(format!("unknown option `{key}`"));
        };
        if matches!(
            given.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        match (value, takes_value) {
            (toml::Value::Boolean(true), false) => extra.push(OsString::from(format!("--{long}"))),
            (toml::Value::Boolean(false), false) => {}
            (toml::Value::String(text), true) => {
                extra.push(OsString::from(format!("--{long}={text}")))
            }
            (toml::Value::Integer(n), true) => extra.push(OsString::from(format!("--{long}={n}"))),
            (toml::Value::Float(x), true) => extra.push(OsString::from(format!("--{long}={x}"))),
            (other, _) => return Err(format!("`{key}` cannot be {}", other.type_str())),
        }
    }
    Ok(extra)
}

/// The effective configuration of a sync with these options, as TOML, secrets redacted.
pub fn show(args: &SyncArgs) -> String {
    show_with_env(args, &|name| std::env::var_os(name).map(PathBuf::from))
}

/// As [`show`], with the environment given (for tests).
pub fn show_with_env(args: &SyncArgs, env: &dyn Fn(&str) -> Option<PathBuf>) -> String {
    let mut out = String::from(
        "# kksync: effective configuration (flags > KKSYNC_* environment > config file > defaults)\n",
    );
    let quoted = |text: &str| toml::Value::String(text.to_string()).to_string();
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| quoted(&p.display().to_string()));
    let _ = writeln!(
        out,
        "# config file: {}",
        args.config_file
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string())
    );
    let mut line = |key: &str, value: Option<String>| {
        let _ = match value {
            Some(value) => writeln!(out, "{key} = {value}"),
            None => writeln!(out, "# {key} is not set"),
        };
    };
    line("source", path(&args.source));
    line(
        "source-format",
        args.source_format
            .map(|f| quoted(&format!("{f:?}").to_lowercase())),
    );
    line("api-url", Some(quoted(&args.api_url)));
    line("api-key-file", path(&args.api_key_file));
    line("rate", Some(args.rate.clone()));
    line("burst", Some(args.burst.to_string()));
    line("chunk-size", Some(args.chunk_size.to_string()));
    line("concurrency", Some(args.concurrency.to_string()));
    line("deadline", Some(quoted(&args.deadline)));
    line("request-timeout", Some(quoted(&args.request_timeout)));
    line("stop-timeout", Some(quoted(&args.stop_timeout)));
    line("delimiter", args.delimiter.map(|c| quoted(&c.to_string())));
    line("report", path(&args.report));
    line("metrics-textfile", path(&args.metrics_textfile));
    let key = match load_api_key(args.api_key_file.as_deref(), env) {
        Ok((_, origin)) => format!("# API key: <redacted>, from {origin}"),
        Err(error) => format!("# API key: none ({error})"),
    };
    let _ = writeln!(out, "{key}");
    let columns: Vec<(&str, &str)> = args.columns.iter().collect();
    if !columns.is_empty() {
        let _ = writeln!(out, "\n[columns]");
        for (field, column) in columns {
            let _ = writeln!(out, "{} = {}", quoted(field), quoted(column));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], file: Option<&str>) -> Result<SyncArgs, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kksync.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let argv = std::iter::once("kksync")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        match parse_cli_with_default(argv, &path) {
            Ok(Cli {
                command: Command::Sync(args),
                ..
            }) => Ok(args),
            Ok(other) => Err(format!("{other:?}")),
            Err(CliFailure::Clap(e)) => Err(e.to_string()),
            Err(CliFailure::Config(e)) => Err(e.to_string()),
        }
    }

    // The environment is process-wide, so the environment level of the precedence is checked in
    // the end-to-end tests, which run the binary with their own environment.
    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file = "source = \"from-file.csv\"\nchunk-size = 50\nrate = 0.5\ndry-run = true\n[columns]\nnumber = \"Bestellnr\"\n";
        let args = parse(&["sync", "--chunk-size", "20"], Some(file)).unwrap();
        assert_eq!(args.chunk_size, 20, "flag wins");
        assert_eq!(args.rate, "0.5", "file beats default");
        assert_eq!(args.source.as_deref(), Some(Path::new("from-file.csv")));
        assert!(args.dry_run);
        assert_eq!(args.concurrency, 4, "default when nobody sets it");
        assert_eq!(args.columns.csv(crate::order::Field::Number), "Bestellnr");
        let without_file = parse(&["sync", "--source", "x.csv"], None).unwrap();
        assert_eq!(without_file.chunk_size, 100);
        assert!(without_file.config_file.is_none());
    }

    #[test]
    fn file_values_are_checked_like_flags_and_unknown_entries_refused() {
        assert!(parse(&["sync"], Some("chunk-size = \"many\"")).is_err());
        let error = parse(&["sync"], Some("chunk-sise = 5")).unwrap_err();
        assert!(error.contains("unknown option `chunk-sise`"), "{error}");
        let error = parse(&["sync"], Some("api-key = \"secret\"")).unwrap_err();
        assert!(error.contains("never read from the config file"), "{error}");
        let error = parse(&["sync"], Some("[columns]\nnumbr = \"x\"")).unwrap_err();
        assert!(error.contains("unknown order field"), "{error}");
        assert!(parse(&["sync"], Some("this is not toml")).is_err());
    }

    #[test]
    fn show_redacts_the_key_and_says_where_it_came_from() {
        let args = parse(
            &["sync", "--source", "o.csv"],
            Some("[columns]\n\"billing.countryCode\" = \"Land\"\n"),
        )
        .unwrap();
        let env = |name: &str| {
            (name == crate::config::API_KEY_ENV).then(|| PathBuf::from("super-secret-key"))
        };
        let shown = show_with_env(&args, &env);
        assert!(!shown.contains("super-secret-key"), "{shown}");
        assert!(
            shown.contains("<redacted>, from environment variable KOMFORTKASSE_API_KEY"),
            "{shown}"
        );
        assert!(shown.contains("source = \"o.csv\""), "{shown}");
        assert!(
            shown.contains("\"billing.countryCode\" = \"Land\""),
            "{shown}"
        );
        // What it prints is a valid config file again.
        let reparsed: toml::Table = shown.parse().unwrap();
        assert_eq!(reparsed["chunk-size"].as_integer(), Some(100));
    }
}
