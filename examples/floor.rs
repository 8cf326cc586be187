//! What the building blocks alone cost per order (a cargo example, not a test): the floor under
//! any `kksync sync` built on them.
//!
//! ```text
//! cargo run --release --example floor -- [--rows 1000000] [--changed-statuses 5]
//! ```
//!
//! It generates the benchmark's CSV (`gen_orders`, seed 42) into a temporary directory and
//! measures, as CPU time of this process (user + system, from `getrusage`):
//! 1. one pass of the `csv` crate over the file: `read_byte_record` and nothing else;
//! 2. one SQLite upsert per order, 100 per transaction, into the smallest state table that
//!    could serve an incremental sync (number, payload fingerprint, status), WAL with
//!    `synchronous=NORMAL` as kksync uses.
//!
//! A sync reads the source once to send and once to write back, and records each acknowledged
//! order in the state store before the write-back, so two passes plus one upsert are a floor
//! for its CPU per order — before any validation, JSON, HTTP or reply parsing. Even a design
//! that wrote back in the same pass could not go below one pass plus one upsert.
//!
//! For an incremental run it then measures, as wall time, what such a run cannot avoid: the
//! CSV pass (to find what changed), reading that state table in number order (to compare),
//! journaling the statuses that changed at the API (`--changed-statuses` percent of the
//! orders; it can run beside the first two) and the atomic rewrite of the file (after all of
//! them). Their critical path is the floor of an incremental run's wall time on this machine.

#[path = "common/gen.rs"]
mod order_gen;

use std::error::Error;
use std::fs::File;
use std::time::Instant;

use clap::Parser;

/// Measure the per-order cost of reading a CSV and of a SQLite upsert.
#[derive(Debug, Parser)]
#[command(name = "floor")]
struct Args {
    /// Orders to generate and measure.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Percent of the orders whose status changed at the API since the last run.
    #[arg(long, default_value_t = 5.0)]
    changed_statuses: f64,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    if args.rows == 0 {
        return Err("--rows must be at least 1".into());
    }
    if !(args.changed_statuses > 0.0 && args.changed_statuses <= 100.0) {
        return Err("--changed-statuses must be more than 0 and at most 100".into());
    }
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("orders.csv");
    let config = order_gen::Config::benchmark(args.rows);
    let written = order_gen::generate(&config, File::create(&source)?)?;
    if written.rows != args.rows || written.invalid != 0 {
        return Err("the generator did not write the valid rows asked for".into());
    }
    let rows = args.rows as f64;

    let (csv_cpu, csv_wall) = measure(|| {
        let mut reader = csv::ReaderBuilder::new().from_path(&source)?;
        let mut record = csv::ByteRecord::new();
        let mut read = 0u64;
        while reader.read_byte_record(&mut record)? {
            read += 1;
        }
        if read != args.rows {
            return Err(format!("read {read} rows, expected {}", args.rows).into());
        }
        Ok(())
    })?;

    let db_path = dir.path().join("state.db");
    let (sqlite_cpu, sqlite_wall) = measure(|| upserts(&db_path, args.rows))?;

    let per_row = |seconds: f64| seconds * 1e6 / rows;
    println!("{} orders", args.rows);
    println!(
        "csv pass            {:>6.2} µs CPU/order  ({:.2} s wall)",
        per_row(csv_cpu),
        csv_wall
    );
    println!(
        "SQLite upsert       {:>6.2} µs CPU/order  ({:.2} s wall)",
        per_row(sqlite_cpu),
        sqlite_wall
    );
    println!(
        "1 pass + upsert     {:>6.2} µs CPU/order",
        per_row(csv_cpu + sqlite_cpu)
    );
    println!(
        "2 passes + upsert   {:>6.2} µs CPU/order",
        per_row(2.0 * csv_cpu + sqlite_cpu)
    );

    // What an incremental run cannot avoid, with the statuses of `--changed-statuses` of the
    // orders changed at the API since the last run (the benchmark's sandbox pays 5% a tick).
    // The upserts above stand for the first run, long over when the next one starts: what they
    // left unwritten goes to the disk first, so the rewrite below does not wait for it.
    flush_to_disk();
    let (_, scan_wall) = measure(|| scan(&db_path, args.rows))?;
    let changed = ((args.rows as f64) * args.changed_statuses / 100.0).round() as usize;
    let (_, journal_wall) = measure(|| journal_statuses(&db_path, args.rows, changed))?;
    let (_, rewrite_wall) = measure(|| rewrite(&source))?;
    let floor = (csv_wall + scan_wall).max(journal_wall) + rewrite_wall;
    println!("incremental run, wall:");
    println!("  csv pass                 {csv_wall:>6.2} s");
    println!("  state table, in order    {scan_wall:>6.2} s");
    println!(
        "  journal {:.0}% statuses     {journal_wall:>6.2} s  (beside the two above)",
        args.changed_statuses
    );
    println!("  rewrite the file         {rewrite_wall:>6.2} s  (copy, fsync, rename)");
    println!("  floor                    {floor:>6.2} s");
    Ok(())
}

/// Reads the whole state table in number order, as a sorted source asks for it.
fn scan(path: &std::path::Path, rows: u64) -> Result<(), Box<dyn Error>> {
    let db = rusqlite::Connection::open(path)?;
    let mut statement =
        db.prepare("SELECT number, fingerprint, status FROM state ORDER BY number")?;
    let mut read = statement.query([])?;
    let mut count = 0u64;
    while let Some(row) = read.next()? {
        let (number, _fingerprint, status) = (
            row.get_ref(0)?.as_str()?,
            row.get_ref(1)?.as_i64()?,
            row.get_ref(2)?.as_str_or_null()?,
        );
        count += u64::from(!number.is_empty() && status.is_some());
    }
    if count != rows {
        return Err(format!("scanned {count} rows, expected {rows}").into());
    }
    Ok(())
}

/// Journals a new status for `changed` distinct orders, 5,000 per transaction, as the read-back
/// of the statuses that changed at the API must before the write-back, with kksync's settings
/// for its own store (WAL, `synchronous=NORMAL`, no checkpoint before 256 MiB of WAL).
fn journal_statuses(
    path: &std::path::Path,
    rows: u64,
    changed: usize,
) -> Result<(), Box<dyn Error>> {
    use rand::{SeedableRng, seq::SliceRandom};
    let mut db = rusqlite::Connection::open(path)?;
    db.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 65536;")?;
    // Payments come for any order, in no particular order: each transaction dirties pages all
    // over the table. (Sorted by number, the same updates cost about a quarter: each page is
    // written once.)
    let mut numbers: Vec<u64> = (0..rows).collect();
    numbers.shuffle(&mut rand::rngs::StdRng::seed_from_u64(42));
    numbers.truncate(changed);
    for batch in numbers.chunks(5000) {
        let tx = db.transaction()?;
        {
            let mut update = tx.prepare_cached("UPDATE state SET status = ?2 WHERE number = ?1")?;
            for number in batch {
                update.execute(rusqlite::params![format!("2026-{number:07}"), "PAID"])?;
            }
        }
        tx.commit()?;
    }
    Ok(())
}

/// Replaces the file atomically with a copy of itself: temp file, fsync, rename, fsync folder.
fn rewrite(source: &std::path::Path) -> Result<(), Box<dyn Error>> {
    let dir = source.parent().ok_or("the source has no folder")?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::copy(&mut File::open(source)?, temp.as_file_mut())?;
    temp.as_file().sync_all()?;
    temp.persist(source)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// One upsert per order, 100 per transaction.
fn upserts(path: &std::path::Path, rows: u64) -> Result<(), Box<dyn Error>> {
    let mut db = rusqlite::Connection::open(path)?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE state (number TEXT PRIMARY KEY, fingerprint INTEGER NOT NULL, status TEXT)
             WITHOUT ROWID;",
    )?;
    let mut number = 0u64;
    while number < rows {
        let tx = db.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO state (number, fingerprint, status) VALUES (?1, ?2, ?3)
                 ON CONFLICT (number) DO UPDATE SET
                     fingerprint = excluded.fingerprint, status = excluded.status",
            )?;
            for _ in 0..100.min(rows - number) {
                let fingerprint = number.wrapping_mul(0x9E37_79B9_7F4A_7C15) as i64;
                upsert.execute(rusqlite::params![
                    format!("2026-{number:07}"),
                    fingerprint,
                    "UNPAID"
                ])?;
                number += 1;
            }
        }
        tx.commit()?;
    }
    Ok(())
}

/// Runs `work`; returns the CPU seconds and wall seconds it took.
fn measure(
    work: impl FnOnce() -> Result<(), Box<dyn Error>>,
) -> Result<(f64, f64), Box<dyn Error>> {
    let (cpu_before, wall) = (cpu_seconds(), Instant::now());
    work()?;
    Ok((cpu_seconds() - cpu_before, wall.elapsed().as_secs_f64()))
}

/// Writes every file's pending data to the disk.
#[cfg(unix)]
fn flush_to_disk() {
    // SAFETY: `sync` takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

#[cfg(not(unix))]
fn flush_to_disk() {}

/// User + system CPU time of this process so far.
#[cfg(unix)]
fn cpu_seconds() -> f64 {
    // SAFETY: `rusage` is plain integers and `timeval`s, for which all-zero bytes are valid,
    // and `getrusage` only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[cfg(not(unix))]
fn cpu_seconds() -> f64 {
    0.0
}
