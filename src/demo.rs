//! `kksync demo`: the README's first command. Starts the sandbox in-process, copies the bundled
//! example orders into a fresh folder and runs two real nightly syncs against it, with customers
//! paying in between, so the written-back statuses can be seen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{DemoArgs, SourceFormat};
use crate::config::{
    ApiSettings, SendSettings, SourceSettings, StateSettings, SyncConfig, parse_api_url,
};
use crate::error::{Error, exit_code};
use crate::sandbox::{SandboxConfig, serve};
use crate::secret::Secret;

/// The bundled example: ~500 German orders, `;`-separated with decimal commas, some invalid.
const EXAMPLE_ORDERS: &[u8] = include_bytes!("../examples/orders.csv");
const DEMO_KEY: &str = "demo-api-key";

/// Runs the demo and returns the exit code (0 when it worked as intended).
pub async fn run(args: DemoArgs) -> Result<i32, Error> {
    let dir = demo_dir(args.dir)?;
    let csv = dir.join("orders.csv");
    std::fs::write(&csv, EXAMPLE_ORDERS).map_err(|source| Error::Io {
        context: format!("writing {}", csv.display()),
        source,
    })?;

    let sandbox_config = SandboxConfig {
        api_key: DEMO_KEY.to_string(),
        seed: 2026,
        pay_rate: 0.6,
        lock_error_rate: 0.1,
        ..SandboxConfig::default()
    };
    let sandbox = serve(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| Error::Internal("bad address".into()))?,
        sandbox_config,
    )
    .await?;
    println!("kksync demo");
    println!(
        "  sandbox   {} (a local imitation of Komfortkasse; 10% injected lock errors)",
        sandbox.base_url()
    );
    println!("  orders    {}", csv.display());
    println!();

    let config = demo_config(&csv, &sandbox.base_url())?;
    println!("Night 1: sending the shop's orders ...");
    let first = crate::pipeline::run(&config).await?;
    eprint!("{first}");

    let paid = sandbox.tick();
    println!();
    println!(
        "During the day {paid} customers paid (or their orders were cancelled) in the sandbox."
    );
    println!("Night 2: syncing again, so the new payment statuses are written back ...");
    let second = crate::pipeline::run(&config).await?;
    eprint!("{second}");
    sandbox.shutdown().await;

    println!();
    print_sample(&csv)?;
    println!();
    println!("The written-back file: {}", csv.display());
    println!(
        "(The invalid example rows are there on purpose: a real sync would exit with code 3 and keep"
    );
    println!(" each row's error in its syncError column. Fix a row and run again to send it.)");
    Ok(exit_code::OK)
}

fn demo_dir(given: Option<PathBuf>) -> Result<PathBuf, Error> {
    let io = |context: String| move |source| Error::Io { context, source };
    match given {
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            Ok(dir)
        }
        None => tempfile::Builder::new()
            .prefix("kksync-demo-")
            .tempdir()
            .map(tempfile::TempDir::keep)
            .map_err(io("creating a demo folder".into())),
    }
}

fn demo_config(csv: &Path, base_url: &str) -> Result<SyncConfig, Error> {
    let base_url = parse_api_url(base_url)?;
    let source = SourceSettings {
        path: csv.to_path_buf(),
        format: SourceFormat::Csv,
        delimiter: None,
        columns: crate::order::ColumnNames::default(),
    };
    Ok(SyncConfig {
        state: StateSettings::for_source(&source, None),
        incremental: Default::default(),
        source,
        api: Some(ApiSettings {
            base_url,
            api_key: Secret::new(DEMO_KEY),
            request_timeout: Duration::from_secs(30),
        }),
        send: SendSettings {
            rate_per_second: 10.0,
            burst: std::num::NonZeroU32::MIN,
            chunk_size: 100,
            concurrency: 4,
            deadline: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(5),
        },
        dry_run: false,
        progress: true,
    })
}

/// Prints a few written-back rows: some synced with different statuses, and the invalid ones.
fn print_sample(csv: &Path) -> Result<(), Error> {
    let fail = |e: csv::Error| Error::Internal(format!("reading back {}: {e}", csv.display()));
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_path(csv)
        .map_err(fail)?;
    let headers = reader.headers().map_err(fail)?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}') == name)
    };
    let columns = [
        column("number"),
        column("amount"),
        column("paymentStatus"),
        column("syncError"),
    ];
    println!("A few written-back rows (number; amount; paymentStatus; syncError):");
    let mut shown_statuses = std::collections::HashSet::new();
    let mut shown_errors = 0;
    for record in reader.records() {
        let record = record.map_err(fail)?;
        let value = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("");
        let (status, error) = (value(columns[2]), value(columns[3]));
        let interesting = if error.is_empty() {
            shown_statuses.insert(status.to_string())
        } else {
            shown_errors < 4
        };
        if interesting {
            shown_errors += usize::from(!error.is_empty());
            println!(
                "  {}; {}; {}; {}",
                value(columns[0]),
                value(columns[1]),
                status,
                error
            );
        }
    }
    Ok(())
}
