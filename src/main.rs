//! The `kksync` binary: parse the command line, run the library, turn the outcome into a
//! message and an exit code.

use std::io::Write as _;
use std::process::ExitCode;

use kksync::cli::{Cli, Command, ConfigAction, LogFormat, OrdersyncArgs, RunsArgs, SyncArgs};
use kksync::config_file::CliFailure;
use kksync::error::exit_code;

fn main() -> ExitCode {
    let cli = match kksync::config_file::parse_cli(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(CliFailure::Clap(error)) => error.exit(),
        Err(CliFailure::Config(error)) => {
            eprintln!("kksync: error: {error}");
            return ExitCode::from(exit_code::USAGE as u8);
        }
    };
    init_logging(&cli);
    // A sync keeps its CPU work on its reader and writer threads; running its async part (the
    // pipeline and the HTTP connections) on one thread saves cross-thread wake-ups per request.
    // The sandbox and the demo serve many connections: all cores.
    let mut builder = match &cli.command {
        Command::Sync(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kksync: cannot start the async runtime: {error}");
            return ExitCode::from(exit_code::FATAL as u8);
        }
    };
    let code = match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kksync: error: {error}");
            error.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn run(command: Command) -> Result<i32, kksync::Error> {
    match command {
        Command::Sync(args) => sync(&args).await,
        Command::Ordersync(args) => ordersync(&args).await,
        Command::Runs(args) => runs(&args),
        Command::InitDb(args) => {
            kksync::source::init_db(&args.path)?;
            eprintln!("kksync: {} has the orders table", args.path.display());
            kksync::refunds::init_db(&args.path)?;
            eprintln!("kksync: {} has the refunds table", args.path.display());
            Ok(exit_code::OK)
        }
        Command::Sandbox(args) => {
            kksync::sandbox::run(args).await?;
            Ok(exit_code::OK)
        }
        Command::Demo(args) => kksync::demo::run(args).await,
        Command::Refunds(args) => refunds(&args).await,
        Command::Completions { shell } => {
            kksync::cli::write_completions(shell, &mut std::io::stdout());
            Ok(exit_code::OK)
        }
        Command::Config {
            action: ConfigAction::Show(args),
        } => {
            print!("{}", kksync::config_file::show(&args));
            Ok(exit_code::OK)
        }
        Command::Man => {
            kksync::cli::write_man(&mut std::io::stdout()).map_err(|source| kksync::Error::Io {
                context: "writing the man page".into(),
                source,
            })?;
            Ok(exit_code::OK)
        }
    }
}

/// A sync: the summary goes to stderr, and the report and metrics files are written for every
/// run that got going, failed or not. The exit code they and the run history record is the one
/// the process exits with, also when writing one of them fails.
async fn sync(args: &SyncArgs) -> Result<i32, kksync::Error> {
    let config = kksync::config::SyncConfig::from_args(args)?;
    let started_at = time::OffsetDateTime::now_utc();
    let finish = |summary: &kksync::pipeline::Summary, result: &Result<(), kksync::Error>| {
        if result.is_ok() || summary.rows_read > 0 {
            eprint!("{summary}");
        }
        let error = match result {
            Ok(()) => None,
            Err(error) => {
                eprintln!("kksync: error: {error}");
                Some(error.to_string())
            }
        };
        let code = kksync::pipeline::exit_code(summary, result);
        write_outputs(args, &config, started_at, summary, code, error)
    };
    let (_, _, code) = kksync::pipeline::run_and_finish(&config, finish).await;
    Ok(code)
}

/// Writes `--report` and `--metrics-textfile` and returns the exit code: `code`, or 1 when one
/// of them cannot be written after an otherwise successful run. A file already written with the
/// old code is then written again, so that whatever was written records the code the process
/// exits with.
fn write_outputs(
    args: &SyncArgs,
    config: &kksync::config::SyncConfig,
    started_at: time::OffsetDateTime,
    summary: &kksync::pipeline::Summary,
    code: i32,
    error: Option<String>,
) -> i32 {
    let outputs = [(&args.report, true), (&args.metrics_textfile, false)];
    let write = |code: i32, only_written: Option<&[bool; 2]>| {
        let report =
            kksync::report::RunReport::new(config, started_at, summary, code, error.clone());
        let mut written = [false; 2];
        for (i, (path, json)) in outputs.iter().enumerate() {
            let Some(path) = path else { continue };
            if only_written.is_some_and(|before| !before[i]) {
                continue;
            }
            let result = if *json {
                report.write_json(path)
            } else {
                report.write_metrics(path)
            };
            match result {
                Ok(()) => written[i] = true,
                Err(error) => eprintln!("kksync: error: {error}"),
            }
        }
        written
    };
    let written = write(code, None);
    let wanted = outputs.map(|(path, _)| path.is_some());
    // Monitoring that silently lacks its data would hide the next failure.
    if written == wanted || !matches!(code, exit_code::OK | exit_code::ROWS_REJECTED) {
        return code;
    }
    if written.contains(&true) {
        write(exit_code::FATAL, Some(&written));
    }
    exit_code::FATAL
}

/// `kksync ordersync`: the outcome on stderr.
async fn ordersync(args: &OrdersyncArgs) -> Result<i32, kksync::Error> {
    let sync = kksync::config::SyncConfig::from_args(&args.sync)?;
    if sync.api.is_none() {
        // Even a dry run asks the API which orders would become LEGACY.
        return Err(kksync::config::ConfigError::MissingApiKey.into());
    }
    let config = kksync::ordersync::OrderSyncConfig {
        sync,
        max_shrink: kksync::config::parse_percent("max-shrink", &args.max_shrink)?,
        force: args.force,
    };
    let outcome = kksync::ordersync::run(&config).await?;
    if outcome.dry_run {
        eprintln!(
            "kksync ordersync dry run: {} rows read, {} open orders in the list; {} open order(s) at Komfortkasse would become LEGACY",
            outcome.rows, outcome.numbers, outcome.legacy
        );
    } else {
        eprintln!(
            "kksync ordersync: {} rows read, {} open orders sent; {} order(s) became LEGACY",
            outcome.rows, outcome.numbers, outcome.legacy
        );
    }
    Ok(exit_code::OK)
}

/// `kksync runs`: the run history, as a table or JSON.
fn runs(args: &RunsArgs) -> Result<i32, kksync::Error> {
    let source = args
        .source
        .clone()
        .ok_or(kksync::config::ConfigError::MissingSource)?;
    let format = kksync::config::resolve_format(&source, args.source_format)?;
    let path = args
        .state
        .clone()
        .unwrap_or_else(|| kksync::state::default_path(&source, format));
    let runs = match kksync::state::StateDb::open_existing_read_only(&path)? {
        Some(db) => db.runs(args.limit)?,
        None => Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &runs)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        write_runs_table(&mut out, &runs)
    };
    written.map_err(|source| kksync::Error::Io {
        context: "writing the run list".into(),
        source,
    })?;
    Ok(exit_code::OK)
}

fn write_runs_table(
    out: &mut dyn std::io::Write,
    runs: &[kksync::state::runs::RunRecord],
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>5}  {:<10} {:<20}  {:<20}  {:>4}  counts",
        "id", "command", "started (UTC)", "ended (UTC)", "exit"
    )?;
    for run in runs {
        let ended = run.ended_at.as_deref().unwrap_or("unfinished (killed?)");
        let exit = run.exit_code.map_or("-".to_string(), |c| c.to_string());
        let counts = run.counts.as_ref().map_or(String::new(), |c| {
            let pick = [
                "rows_read",
                "orders_sent",
                "accepted",
                "rejected",
                "refreshed",
                "numbers",
                "legacy",
            ];
            pick.iter()
                .filter_map(|k| c.get(k).map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(" ")
        });
        writeln!(
            out,
            "{:>5}  {:<10} {:<20}  {:<20}  {:>4}  {}",
            run.id, run.command, run.started_at, ended, exit, counts
        )?;
    }
    Ok(())
}

/// Refunds: the summary goes to stderr; exit 0 all done, 3 some rows rejected or in doubt,
/// 2 missing credentials, 1 fatal, 4 already running, 5 interrupted.
async fn refunds(args: &kksync::cli::RefundsArgs) -> Result<i32, kksync::Error> {
    let config = kksync::refunds::RefundsConfig::from_args(args)?;
    let (summary, result) = kksync::refunds::run(&config).await;
    if result.is_ok() || summary.rows > 0 {
        eprint!("{summary}");
    }
    result.map(|()| summary.exit_code())
}

/// Logs go to stderr: text (coloured only on a terminal) or JSON lines. `RUST_LOG` overrides
/// the level chosen with -v/-q (default: info for kksync, warnings for its libraries).
fn init_logging(cli: &Cli) {
    let level = match i16::from(cli.verbose) - i16::from(cli.quiet) {
        ..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = from_env
        .and_then(|directives| tracing_subscriber::EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(format!("warn,kksync={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}
