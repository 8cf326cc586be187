//! Writes a deterministic CSV export of realistic German shop orders, for demos, tests and the
//! throughput benchmark.
//!
//! ```text
//! cargo run --release --example gen_orders -- --rows 1000000 --out /tmp/orders.csv
//! cargo run --release --example gen_orders -- --rows 500 --out examples/orders.csv \
//!     --delimiter ';' --decimal-comma --bom --invalid-every 83 --long-lived
//! ```
//!
//! Columns and text forms are described in `examples/README.md`. The same arguments on the same
//! day give the same bytes; `--today` pins the day for fully reproducible output.

#[path = "common/gen.rs"]
mod order_gen;

use std::error::Error;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use time::{Date, OffsetDateTime};

/// Generate a CSV file of realistic (fake) German shop orders.
#[derive(Debug, Parser)]
#[command(name = "gen_orders")]
struct Args {
    /// Number of order rows to write (the header row is extra).
    #[arg(long)]
    rows: u64,

    /// Output file; `-` writes to standard output.
    #[arg(long)]
    out: PathBuf,

    /// Seed of the random data; the same seed gives the same file (on the same day).
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Field delimiter: `;` (German spreadsheet exports) or `,`.
    #[arg(long, default_value = ",", value_parser = parse_delimiter)]
    delimiter: u8,

    /// Write amounts with a decimal comma (`22,38`) instead of a point (`22.38`).
    #[arg(long)]
    decimal_comma: bool,

    /// Give every K-th row one realistic defect, cycling through ten kinds.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    invalid_every: Option<u64>,

    /// Start the file with a UTF-8 byte order mark, as spreadsheet programs do.
    #[arg(long)]
    bom: bool,

    /// Write every date as dd-MM-yyyy (otherwise about 5 % of the rows use yyyy-MM-dd).
    #[arg(long)]
    strict: bool,

    /// For files committed to the repository: dates within the last 60 days only, and the
    /// time-relative defects placed ten years ahead so they are still defects months later.
    #[arg(long)]
    long_lived: bool,

    /// Generate as if today were this day (yyyy-MM-dd); default: today's UTC date.
    #[arg(long, value_parser = parse_iso_date)]
    today: Option<Date>,
}

fn parse_delimiter(text: &str) -> Result<u8, String> {
    match text {
        ";" => Ok(b';'),
        "," => Ok(b','),
        other => Err(format!("expected ';' or ',', got {other:?}")),
    }
}

fn parse_iso_date(text: &str) -> Result<Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, format).map_err(|e| format!("expected yyyy-MM-dd: {e}"))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let config = order_gen::Config {
        rows: args.rows,
        seed: args.seed,
        delimiter: args.delimiter,
        decimal_comma: args.decimal_comma,
        invalid_every: args.invalid_every,
        bom: args.bom,
        strict_dates: args.strict,
        long_lived: args.long_lived,
        // UTC is never ahead of Berlin, so no order date is in the future for the API either.
        today: args
            .today
            .unwrap_or_else(|| OffsetDateTime::now_utc().date()),
    };

    let started = Instant::now();
    let summary = if args.out.as_os_str() == "-" {
        order_gen::generate(&config, io::stdout().lock())?
    } else {
        let file = File::create(&args.out)
            .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
        order_gen::generate(&config, file)?
    };
    eprintln!(
        "wrote {} orders ({} with a defect) to {} in {:.2} s",
        summary.rows,
        summary.invalid,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
