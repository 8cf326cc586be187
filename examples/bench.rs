//! Throughput benchmark of `kksync sync` against the local sandbox (a cargo example, not a test).
//!
//! ```text
//! cargo build --release                      # builds target/release/kksync
//! cargo run --release --example bench -- [--rows 100000,1000000] [--concurrency 8] [--keep]
//!                                        [--incremental PERCENT] [--sqlite [--wal]]
//!                                        [--repeat R] [--compare PATH] [--full-too]
//!                                        [--kksync PATH] [-- EXTRA SYNC ARGS...]
//! ```
//!
//! For each row count N it
//! 1. writes a CSV of N valid orders with the `gen_orders` generator (seed 42, `,`, `dd-MM-yyyy`)
//!    into a temporary directory,
//! 2. picks a free local port and starts the sandbox as a separate process,
//!    `kksync sandbox --listen 127.0.0.1:PORT --api-key bench-key`, waiting until its stdout or
//!    stderr prints a line containing `listening on`,
//! 3. runs, with `KOMFORTKASSE_API_KEY=bench-key` and the temporary directory as working
//!    directory,
//!    `kksync sync --source FILE --api-url http://127.0.0.1:PORT/api/v2 --rate 1000000
//!    --burst 1000 --concurrency C [EXTRA SYNC ARGS...]`,
//!    and measures that process alone (wall time; user + system CPU time and peak RSS from
//!    `wait4`),
//! 4. kills the sandbox.
//!
//! With `--sqlite` the CSV is imported into a database made by `kksync init-db` (each column
//! into the column of the same name in snake_case; `--wal` switches it to WAL) and that is
//! the source instead.
//!
//! With `--incremental PERCENT` it then changes the amount of that share of the rows (evenly
//! spread), lets the sandbox pay some orders (`POST /_sandbox/tick`, `--pay-rate 0.05`), and
//! measures a second, incremental `kksync sync` of the same file: it reads back the statuses
//! of the orders that left `UNPAID` with `GET /orders`, sends only the changed orders and
//! rewrites only the rows whose results changed. The extra table row `N incr` shows its
//! figures plus the `POST /orders` requests and orders the sandbox received.
//!
//! With `--repeat R` the incremental run is measured R times on that one setup: before each,
//! the source and its state (every file whose name starts with the source's) are restored to
//! what they were before the first, against the same sandbox, which already holds the changes
//! (resending them changes nothing there). `--compare PATH` alternates with a second kksync
//! binary on the same setup (rows labelled `incr B`), so two builds are compared under the same
//! conditions. `--full-too` also measures `kksync sync --full` in each round on that setup
//! (rows labelled `full`): the resend of every order that the incremental run replaces, over
//! the existing state and with the same day's changes.
//!
//! It prints one table row per N (rows, wall s, orders/s, client CPU µs/order, peak RSS MiB)
//! and exits non-zero as soon as a sync exits with anything but 0, after printing the end of its
//! output. The logs of both processes (`sandbox-N.*.log`, `sync-N.*.log`) and the CSV files stay
//! in the temporary directory with `--keep`; otherwise it is removed.

#[path = "common/gen.rs"]
mod order_gen;

use std::error::Error;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;

const API_KEY: &str = "bench-key";
const API_KEY_ENV: &str = "KOMFORTKASSE_API_KEY";
const SANDBOX_STARTUP: Duration = Duration::from_secs(30);

/// Measure `kksync sync` throughput against a local sandbox process.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Row counts to benchmark, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000u64, 1_000_000])]
    rows: Vec<u64>,

    /// `--concurrency` passed to `kksync sync`.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,

    /// Keep the temporary directory with the generated CSV files and the process logs.
    #[arg(long)]
    keep: bool,

    /// The kksync binary; default: target/release/kksync of this crate.
    #[arg(long)]
    kksync: Option<PathBuf>,

    /// After each full run, change this percentage of the rows and measure an incremental run.
    #[arg(long, value_name = "PERCENT")]
    incremental: Option<f64>,

    /// Measure a SQLite source instead: the generated orders are imported into a database
    /// that `kksync init-db` made, in SQLite's default journal mode (`delete`) unless `--wal`.
    #[arg(long)]
    sqlite: bool,

    /// With `--sqlite`: switch the database to WAL before the first run.
    #[arg(long, requires = "sqlite")]
    wal: bool,

    /// With `--incremental`: measure the incremental run this many times on one setup.
    #[arg(long, default_value_t = 1, requires = "incremental")]
    repeat: u32,

    /// With `--incremental`: alternate with this second kksync binary (labelled `B`).
    #[arg(long, value_name = "PATH", requires = "incremental")]
    compare: Option<PathBuf>,

    /// With `--incremental`: in each round, also measure `kksync sync --full` on the same
    /// setup (rows labelled `full`): what the incremental run is the alternative to, a resend of
    /// every order over the existing state, with the same day's changes.
    #[arg(long, requires = "incremental")]
    full_too: bool,

    /// Extra arguments appended to the `kksync sync` command line (after `--`).
    #[arg(last = true)]
    sync_args: Vec<String>,
}

/// Resource use of one finished process.
struct Usage {
    cpu: Duration,
    peak_rss_bytes: u64,
}

struct Measurement {
    label: String,
    rows: u64,
    wall: Duration,
    usage: Option<Usage>,
    /// For an incremental run: `POST /orders` requests and orders the sandbox received.
    sent: Option<(u64, u64)>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let kksync = locate_kksync(args.kksync.as_deref())?;
    let dir = tempfile::Builder::new().prefix("kksync-bench-").tempdir()?;

    let result = run_all(&args, &kksync, dir.path());
    if args.keep {
        let kept = dir.keep();
        eprintln!("kept the CSV files and logs in {}", kept.display());
    } else if result.is_err() {
        eprintln!("(the temporary directory is removed; rerun with --keep to inspect the logs)");
    }
    result
}

/// The release binary: `--kksync`, else `$CARGO_TARGET_DIR/release/kksync`, else
/// `target/release/kksync` next to Cargo.toml.
fn locate_kksync(explicit: Option<&Path>) -> Result<PathBuf, Box<dyn Error>> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
            target
                .join("release")
                .join(format!("kksync{}", std::env::consts::EXE_SUFFIX))
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release` first (or pass --kksync PATH)",
            path.display()
        )
        .into())
    }
}

fn run_all(args: &Args, kksync: &Path, dir: &Path) -> Result<(), Box<dyn Error>> {
    println!(
        "{:>10}  {:>9}  {:>10}  {:>16}  {:>13}",
        "rows", "wall s", "orders/s", "client CPU µs/order", "peak RSS MiB"
    );
    for &rows in &args.rows {
        for m in run_one(args, kksync, dir, rows)? {
            print_row(&m);
        }
    }
    Ok(())
}

fn print_row(m: &Measurement) {
    {
        let wall = m.wall.as_secs_f64();
        let per_second = if wall > 0.0 {
            m.rows as f64 / wall
        } else {
            0.0
        };
        let (cpu, rss) = match &m.usage {
            Some(usage) => (
                format!(
                    "{:.1}",
                    usage.cpu.as_secs_f64() * 1e6 / m.rows.max(1) as f64
                ),
                format!("{:.1}", usage.peak_rss_bytes as f64 / (1024.0 * 1024.0)),
            ),
            None => ("n/a".to_owned(), "n/a".to_owned()),
        };
        let sent = m.sent.map_or(String::new(), |(requests, orders)| {
            format!("  POST /orders: {requests} requests, {orders} orders")
        });
        println!(
            "{:>10}  {:>9.2}  {:>10.0}  {:>19}  {:>13}{sent}",
            m.label, wall, per_second, cpu, rss
        );
    }
}

fn run_one(
    args: &Args,
    kksync: &Path,
    dir: &Path,
    rows: u64,
) -> Result<Vec<Measurement>, Box<dyn Error>> {
    // 1. The input file.
    let source = dir.join(format!("orders-{rows}.csv"));
    let config = order_gen::Config::benchmark(rows);
    let started = Instant::now();
    let file =
        File::create(&source).map_err(|e| format!("cannot create {}: {e}", source.display()))?;
    let summary = order_gen::generate(&config, file)?;
    if summary.invalid != 0 {
        return Err("the generator wrote invalid rows; the benchmark needs valid ones".into());
    }
    eprintln!(
        "generated {} orders ({:.1} MiB) in {:.2} s",
        summary.rows,
        std::fs::metadata(&source)?.len() as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    );

    let source = match args.sqlite {
        false => source,
        true => {
            let started = Instant::now();
            let db = dir.join(format!("orders-{rows}.db"));
            import_into_sqlite(kksync, &source, &db, args.wal)?;
            std::fs::remove_file(&source)?;
            eprintln!(
                "imported them into {} in {:.2} s",
                db.display(),
                started.elapsed().as_secs_f64()
            );
            db
        }
    };

    // 2. The sandbox.
    let addr = format!("127.0.0.1:{}", free_port()?);
    let sandbox = Sandbox::start(kksync, &addr, dir, rows)?;

    // 3. The measured sync.
    let full = measured_sync(args, kksync, dir, &source, &addr, &format!("{rows}"), &[])?;
    let mut measurements = vec![Measurement {
        label: rows.to_string(),
        rows,
        wall: full.0,
        usage: full.1,
        sent: None,
    }];

    // 3b. A day later: some orders changed, some were paid.
    if let Some(percent) = args.incremental {
        let every = (100.0 / percent).round().max(1.0) as u64;
        let changed = match args.sqlite {
            false => change_amounts(&source, every)?,
            true => change_amounts_sqlite(&source, every)?,
        };
        let paid = http(&addr, "POST", "/_sandbox/tick")?;
        eprintln!("changed {changed} orders; sandbox tick: {}", paid.trim());
        let snapshot = Snapshot::take(&source)?;
        let mut binaries = vec![(" incr", kksync, false)];
        if let Some(other) = &args.compare {
            binaries.push((" incr B", other.as_path(), false));
        }
        if args.full_too {
            binaries.push((" full", kksync, true));
        }
        for round in 0..args.repeat {
            for &(tag, binary, full) in &binaries {
                snapshot.restore()?;
                http(&addr, "POST", "/_sandbox/stats/reset")?;
                let label = format!("{rows}-{}-{round}", tag.trim().replace(' ', ""));
                let extra = if full { &["--full"][..] } else { &[][..] };
                let incremental = measured_sync(args, binary, dir, &source, &addr, &label, extra)?;
                let stats: serde_json::Value =
                    serde_json::from_str(&http(&addr, "GET", "/_sandbox/stats")?)?;
                let requests = stats["requests_by_route"]["POST /orders"]
                    .as_u64()
                    .unwrap_or(0);
                let orders = stats["orders_received"].as_u64().unwrap_or(0);
                measurements.push(Measurement {
                    label: format!("{rows}{tag}"),
                    rows,
                    wall: incremental.0,
                    usage: incremental.1,
                    sent: Some((requests, orders)),
                });
            }
        }
    }

    // 4. Stop the sandbox.
    drop(sandbox);
    Ok(measurements)
}

/// Copies of the source and its state files, taken before the first incremental run.
struct Snapshot {
    /// The source's directory and name.
    dir: PathBuf,
    name: String,
    /// (original, copy) pairs.
    files: Vec<(PathBuf, PathBuf)>,
}

impl Snapshot {
    /// Copies every file beside `source` whose name starts with its name (the source, its
    /// state sidecar and any `-wal` file), except the run lock.
    fn take(source: &Path) -> Result<Snapshot, Box<dyn Error>> {
        let dir = source.parent().ok_or("the source has no directory")?;
        let name = source
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("the source's name is not UTF-8")?;
        let copies = dir.join("snapshot");
        std::fs::create_dir_all(&copies)?;
        let mut snapshot = Snapshot {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            files: Vec::new(),
        };
        for (path, file) in snapshot.state_files()? {
            let copy = copies.join(file);
            std::fs::copy(&path, &copy)?;
            snapshot.files.push((path, copy));
        }
        Ok(snapshot)
    }

    /// Puts the copies back, removing state files a run created since (a `-wal`, `-shm`),
    /// and syncs them, so the measured run does not share the disk with their write-out.
    fn restore(&self) -> Result<(), Box<dyn Error>> {
        for (path, _) in self.state_files()? {
            std::fs::remove_file(&path)?;
        }
        for (original, copy) in &self.files {
            std::fs::copy(copy, original)?;
            File::open(original)?.sync_all()?;
        }
        Ok(())
    }

    /// The files beside the source whose name starts with its name, but the run lock: (path,
    /// name).
    fn state_files(&self) -> Result<Vec<(PathBuf, String)>, Box<dyn Error>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(file) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if path.is_file() && file.starts_with(&self.name) && !file.ends_with(".lock") {
                files.push((path, file));
            }
        }
        Ok(files)
    }
}

/// Runs `kksync sync` on `source` and measures it; an exit code other than 0 is an error.
fn measured_sync(
    args: &Args,
    kksync: &Path,
    dir: &Path,
    source: &Path,
    addr: &str,
    label: &str,
    extra: &[&str],
) -> Result<(Duration, Option<Usage>), Box<dyn Error>> {
    let stdout_log = dir.join(format!("sync-{label}.stdout.log"));
    let stderr_log = dir.join(format!("sync-{label}.stderr.log"));
    let mut command = Command::new(kksync);
    command
        .arg("sync")
        .arg("--source")
        .arg(source)
        .arg("--api-url")
        .arg(format!("http://{addr}/api/v2"))
        .args(["--rate", "1000000", "--burst", "1000", "--concurrency"])
        .arg(args.concurrency.to_string())
        .args(&args.sync_args)
        .args(extra)
        .env(API_KEY_ENV, API_KEY)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_log)?)
        .stderr(File::create(&stderr_log)?);
    eprintln!("running {command:?}");
    let started = Instant::now();
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", kksync.display()))?;
    let (status, usage) = wait_measured(child)?;
    let wall = started.elapsed();
    if !status.success() {
        print_tail("sync stdout", &stdout_log);
        print_tail("sync stderr", &stderr_log);
        return Err(format!("`kksync sync` exited with {status} ({label})").into());
    }
    print_tail("sync summary", &stderr_log);
    Ok((wall, usage))
}

/// Adds 1.00 to the amount of every `every`-th row (rewriting the file); returns how many.
fn change_amounts(source: &Path, every: u64) -> Result<u64, Box<dyn Error>> {
    let changed_path = source.with_extension("changed.csv");
    let mut reader = csv::Reader::from_path(source)?;
    let header = reader.headers()?.clone();
    let amount = header
        .iter()
        .position(|h| h == "amount")
        .ok_or("no amount column")?;
    let mut writer = csv::Writer::from_path(&changed_path)?;
    writer.write_record(&header)?;
    let mut changed = 0;
    for (i, record) in reader.records().enumerate() {
        let mut record = record?;
        if (i as u64).is_multiple_of(every) {
            let value: rust_decimal::Decimal = record.get(amount).unwrap_or("0").parse()?;
            let new = (value + rust_decimal::Decimal::ONE).to_string();
            record = record
                .iter()
                .enumerate()
                .map(|(j, field)| if j == amount { new.as_str() } else { field })
                .collect();
            changed += 1;
        }
        writer.write_record(&record)?;
    }
    writer.flush()?;
    std::fs::rename(&changed_path, source)?;
    Ok(changed)
}

/// Adds 1.00 to the amount of every `every`-th row of a SQLite source; returns how many.
fn change_amounts_sqlite(db: &Path, every: u64) -> Result<u64, Box<dyn Error>> {
    let mut connection = rusqlite::Connection::open(db)?;
    let tx = connection.transaction()?;
    let amounts: Vec<(i64, String)> = tx
        .prepare("SELECT rowid, amount FROM orders WHERE (rowid - 1) % ?1 = 0")?
        .query_map([every as i64], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (rowid, amount) in &amounts {
        let value: rust_decimal::Decimal = amount.parse()?;
        let new = (value + rust_decimal::Decimal::ONE).to_string();
        tx.execute(
            "UPDATE orders SET amount = ?1 WHERE rowid = ?2",
            rusqlite::params![new, rowid],
        )?;
    }
    tx.commit()?;
    Ok(amounts.len() as u64)
}

/// Creates `db` with `kksync init-db` and imports the CSV export into its `orders` table: each
/// column goes to the table's column of the same name in snake_case (`billing.firstName` to
/// `billing_first_name`); columns the table lacks (the shop's own) are left out.
fn import_into_sqlite(
    kksync: &Path,
    csv: &Path,
    db: &Path,
    wal: bool,
) -> Result<(), Box<dyn Error>> {
    let status = Command::new(kksync)
        .arg("init-db")
        .arg(db)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("`kksync init-db` exited with {status}").into());
    }
    let mut connection = rusqlite::Connection::open(db)?;
    if wal {
        connection.pragma_update(None, "journal_mode", "WAL")?;
    }
    let table: Vec<String> = connection
        .prepare("SELECT name FROM pragma_table_info('orders')")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut reader = csv::Reader::from_path(csv)?;
    let snake = |name: &str| -> String {
        let mut out = String::new();
        for c in name.chars() {
            match c {
                '.' => out.push('_'),
                c if c.is_ascii_uppercase() => {
                    out.push('_');
                    out.push(c.to_ascii_lowercase());
                }
                c => out.push(c),
            }
        }
        out
    };
    let columns: Vec<(usize, String)> = reader
        .headers()?
        .iter()
        .enumerate()
        .map(|(i, name)| (i, snake(name)))
        .filter(|(_, name)| table.contains(name))
        .collect();
    let insert = format!(
        "INSERT INTO orders ({}) VALUES ({})",
        columns
            .iter()
            .map(|(_, name)| name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        vec!["?"; columns.len()].join(", ")
    );
    let tx = connection.transaction()?;
    {
        let mut statement = tx.prepare(&insert)?;
        for record in reader.records() {
            let record = record?;
            let values = columns.iter().map(|(i, _)| record.get(*i).unwrap_or(""));
            statement.execute(rusqlite::params_from_iter(values))?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// One plain HTTP/1.1 request to the sandbox; returns the body.
fn http(addr: &str, method: &str, path: &str) -> Result<String, Box<dyn Error>> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    if !head.starts_with("HTTP/1.1 2") {
        return Err(format!("{method} {path}: {head}").into());
    }
    // The sandbox may answer chunked; its control answers are small enough for one chunk.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut text = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16)?;
            if size == 0 {
                break;
            }
            text.push_str(tail.get(..size).ok_or("short chunk")?);
            rest = tail.get(size + 2..).unwrap_or("");
        }
        return Ok(text);
    }
    Ok(body.to_string())
}

/// A port that was free a moment ago (the listener is dropped before the sandbox binds it).
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The sandbox process; killed when dropped.
struct Sandbox {
    child: Child,
    forwarders: Vec<JoinHandle<()>>,
}

impl Sandbox {
    fn start(kksync: &Path, addr: &str, dir: &Path, rows: u64) -> Result<Sandbox, Box<dyn Error>> {
        let mut child = Command::new(kksync)
            .args([
                "sandbox",
                "--listen",
                addr,
                "--api-key",
                API_KEY,
                "--pay-rate",
                "0.05",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the sandbox ({}): {e}", kksync.display()))?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut forwarders = Vec::new();
        let stdout_log = dir.join(format!("sandbox-{rows}.stdout.log"));
        let stderr_log = dir.join(format!("sandbox-{rows}.stderr.log"));
        if let Some(out) = child.stdout.take() {
            forwarders.push(forward(out, File::create(&stdout_log)?, ready_tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            forwarders.push(forward(err, File::create(&stderr_log)?, ready_tx));
        }
        let mut sandbox = Sandbox { child, forwarders };

        let deadline = Instant::now() + SANDBOX_STARTUP;
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => return Ok(sandbox),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = sandbox.child.try_wait()? {
                        sandbox.join_forwarders();
                        print_tail("sandbox stdout", &stdout_log);
                        print_tail("sandbox stderr", &stderr_log);
                        return Err(
                            format!("the sandbox exited with {status} before listening").into()
                        );
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "the sandbox printed no `listening on` line within {} s (logs: {})",
                            SANDBOX_STARTUP.as_secs(),
                            dir.display()
                        )
                        .into());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both pipes closed without the line: the process has ended or is ending.
                    let status = sandbox.child.wait()?;
                    sandbox.join_forwarders();
                    print_tail("sandbox stdout", &stdout_log);
                    print_tail("sandbox stderr", &stderr_log);
                    return Err(format!("the sandbox exited with {status} before listening").into());
                }
            }
        }
    }

    fn join_forwarders(&mut self) {
        for handle in self.forwarders.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_forwarders();
    }
}

/// Copies a pipe to a log file line by line, signalling once when a line says `listening on`.
fn forward(
    pipe: impl Read + Send + 'static,
    mut log: File,
    ready: mpsc::Sender<()>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        let mut signalled = false;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let _ = log.write_all(&line);
                    if !signalled && String::from_utf8_lossy(&line).contains("listening on") {
                        signalled = true;
                        let _ = ready.send(());
                    }
                }
            }
        }
    })
}

/// Prints the last lines of a log file to stderr.
fn print_tail(label: &str, path: &Path) {
    const LINES: usize = 20;
    let Ok(text) = std::fs::read(path) else {
        return;
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        eprintln!("--- {label}: no output ---");
        return;
    }
    eprintln!(
        "--- last {} lines of {label} ({}) ---",
        LINES.min(lines.len()),
        path.display()
    );
    for line in &lines[lines.len().saturating_sub(LINES)..] {
        eprintln!("{line}");
    }
}

/// Waits for the child and returns its own resource use (not that of other children).
#[cfg(unix)]
fn wait_measured(child: Child) -> io::Result<(ExitStatus, Option<Usage>)> {
    use std::os::unix::process::ExitStatusExt;

    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain integers and `timeval`s, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, which nothing else waits for (the `Child` handle is
        // never waited on), and both pointers are valid for writes for the whole call.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    // The process is reaped; dropping the handle only closes our ends of its stdio.
    drop(child);

    let timeval = |tv: libc::timeval| {
        Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0))
    };
    // ru_maxrss is in KiB on Linux and the BSDs, in bytes on macOS.
    let rss_unit: u64 = if cfg!(target_os = "macos") { 1 } else { 1024 };
    let usage = Usage {
        cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        peak_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * rss_unit,
    };
    Ok((ExitStatus::from_raw(status), Some(usage)))
}

/// Without `wait4` only the wall time is measured.
#[cfg(not(unix))]
fn wait_measured(mut child: Child) -> io::Result<(ExitStatus, Option<Usage>)> {
    Ok((child.wait()?, None))
}
