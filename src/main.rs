//! The `kksync` binary: parse the command line, run the library, turn the outcome into a
//! message and an exit code.

use std::process::ExitCode;

use clap::Parser;
use kksync::cli::{Cli, Command};
use kksync::error::exit_code;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
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
        Command::Sync(args) => {
            let config = kksync::config::SyncConfig::from_args(&args)?;
            let summary = kksync::pipeline::run(&config).await?;
            eprint!("{summary}");
            Ok(summary.exit_code())
        }
        Command::InitDb(args) => {
            kksync::source::init_db(&args.path)?;
            eprintln!("kksync: {} has the orders table", args.path.display());
            Ok(exit_code::OK)
        }
        Command::Sandbox(args) => {
            kksync::sandbox::run(args).await?;
            Ok(exit_code::OK)
        }
        Command::Demo(args) => kksync::demo::run(args).await,
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the default level (info for kksync, warn for the rest).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kksync=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
