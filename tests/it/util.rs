//! Test helpers: a temporary folder, the sandbox in-process, and the real `kksync` binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kksync::sandbox::{SandboxConfig, SandboxHandle, serve};

pub const KEY: &str = "test-api-key";

/// A temporary folder that lists itself when a test fails.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("kksync-it-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write fixture");
        path
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read back")
    }

    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Starts a sandbox on a free loopback port with the test key.
pub async fn sandbox(config: SandboxConfig) -> SandboxHandle {
    let config = SandboxConfig {
        api_key: KEY.to_string(),
        ..config
    };
    serve("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("sandbox starts")
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `kksync` with the given arguments and environment (nothing inherited that could leak a
/// key from the developer's shell).
pub async fn kksync(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kksync"));
    command
        .args(args)
        .env_remove("KOMFORTKASSE_API_KEY")
        .env_remove("KKSYNC_API_URL")
        .env_remove("CREDENTIALS_DIRECTORY");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KKSYNC_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("kksync runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `kksync sync` against a sandbox with the right key and fast settings, plus extra arguments.
pub async fn sync(source: &Path, sandbox: &SandboxHandle, extra: &[&str]) -> Run {
    sync_with_env(source, sandbox, extra, &[("KOMFORTKASSE_API_KEY", KEY)]).await
}

/// `kksync sync` against a sandbox with fast settings, extra arguments and exactly the
/// environment `env` (so the API key is whatever `env` or `extra` gives, or missing).
pub async fn sync_with_env(
    source: &Path,
    sandbox: &SandboxHandle,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let url = sandbox.base_url();
    let source = source.to_string_lossy().into_owned();
    let mut args = vec![
        "sync",
        "--source",
        &source,
        "--api-url",
        &url,
        "--rate",
        "1000",
        "--burst",
        "10",
    ];
    args.extend_from_slice(extra);
    kksync(&args, env).await
}

/// A date a few days ago, as the API writes it.
pub fn recent_date(days_ago: i64) -> String {
    let date = kksync::dates::berlin_today() - time::Duration::days(days_ago);
    kksync::dates::format_api_date(date)
}

/// A CSV with `rows` valid orders, in the German dialect or the plain one.
pub fn orders_csv(rows: usize, german: bool) -> String {
    let d = if german { ';' } else { ',' };
    let mut csv = String::new();
    if german {
        csv.push('\u{feff}');
    }
    csv.push_str(&format!(
        "number{d}date{d}type{d}amount{d}currency{d}billing.lastName{d}billing.countryCode{d}lagerort\n"
    ));
    for i in 0..rows {
        let amount = if german {
            format!("{},{:02}", 10 + i, i % 100)
        } else {
            format!("{}.{:02}", 10 + i, i % 100)
        };
        csv.push_str(&format!(
            "T-{i:05}{d}{date}{d}PREPAYMENT{d}{amount}{d}EUR{d}Müller{d}DE{d}Regal {i}\n",
            date = recent_date(3)
        ));
    }
    csv
}

/// Parses a written-back CSV into header + rows.
pub fn parse_csv(text: &str, delimiter: u8) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.expect("row").iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

/// The value of `column` in every row.
pub fn column(header: &[String], rows: &[Vec<String>], name: &str) -> Vec<String> {
    let index = header
        .iter()
        .position(|h| h.trim_start_matches('\u{feff}') == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    rows.iter()
        .map(|r| r.get(index).cloned().unwrap_or_default())
        .collect()
}

/// `paymentStatus` of every row of a written-back CSV.
pub fn statuses(text: &str, delimiter: u8) -> Vec<String> {
    let (header, rows) = parse_csv(text, delimiter);
    column(&header, &rows, "paymentStatus")
}

/// POSTs to the sandbox's API as the shop (or a plugin) would, with the key; asserts success.
pub async fn api_post(sandbox: &SandboxHandle, path: &str, body: Option<serde_json::Value>) {
    let url = format!("{}/{}", sandbox.base_url(), path.trim_start_matches('/'));
    let mut request = reqwest::Client::new()
        .post(&url)
        .header("X-Komfortkasse-API-Key", KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("API request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
}

/// POSTs to a sandbox control endpoint.
/// Puts a 9 in front of the amounts of these (prepayment) orders.
pub fn change_amounts(text: &mut String, numbers: &[&str]) {
    for number in numbers {
        let at = text.find(&format!("{number},")).unwrap();
        let amount = at + text[at..].find(",PREPAYMENT,").unwrap() + ",PREPAYMENT,".len();
        text.insert(amount, '9');
    }
}

/// Changes the sandbox's faults and latency while it runs (`PUT /_sandbox/faults`).
pub async fn set_faults(sandbox: &SandboxHandle, faults: serde_json::Value) {
    let url = format!("{}/faults", sandbox.control_url());
    let response = reqwest::Client::new()
        .put(&url)
        .json(&faults)
        .send()
        .await
        .expect("faults");
    assert!(response.status().is_success());
}

pub async fn control(sandbox: &SandboxHandle, path: &str, body: serde_json::Value) {
    let url = format!("{}/{}", sandbox.control_url(), path.trim_start_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("control request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
}

/// Runs `kksync sync`, pausing 2 s at `point`; `meanwhile` runs once it is paused. Returns the
/// exit code and stderr.
pub fn sync_changing_the_source_at(
    source: &Path,
    base_url: &str,
    point: &str,
    meanwhile: impl FnOnce(),
) -> (i32, String) {
    let mut child = paused_sync(source, base_url, point)
        .env("KKSYNC_TEST_PAUSE_SECONDS", "2")
        .spawn()
        .expect("kksync starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    let mut meanwhile = Some(meanwhile);
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("stderr line");
        if line.contains(&format!("paused at {point}"))
            && let Some(change) = meanwhile.take()
        {
            change();
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let status = child.wait().expect("reaped");
    assert!(meanwhile.is_none(), "never paused at {point}:\n{seen}");
    (status.code().unwrap_or(-1), seen)
}

/// `kksync sync` against a sandbox with the right key and fast settings, pausing at `point`
/// (an hour, unless `KKSYNC_TEST_PAUSE_SECONDS` says otherwise), logging warnings only to a
/// pipe, where the caller watches for `paused at`.
pub fn paused_sync(source: &Path, base_url: &str, point: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kksync"));
    command
        .args(["sync", "--source"])
        .arg(source)
        .args(["--api-url", base_url, "--rate", "1000", "--burst", "10"])
        .env("KOMFORTKASSE_API_KEY", KEY)
        .env("KKSYNC_TEST_PAUSE_AT", point)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// The summary a run printed, without its wall time.
pub fn summary(stderr: &str) -> String {
    let start = stderr.find("kksync sync summary").expect("a summary");
    stderr[start..]
        .lines()
        .filter(|line| !line.contains("wall time"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Valid orders with these numbers and this amount, dated two days ago, inserted into a
/// SQLite source in one transaction.
pub fn insert_orders(
    shop: &rusqlite::Connection,
    numbers: impl IntoIterator<Item = String>,
    amount: &str,
) {
    let date = recent_date(2);
    shop.execute_batch("BEGIN").unwrap();
    for number in numbers {
        shop.execute(
            "INSERT INTO orders (number, date, type, amount, currency, billing_country_code) VALUES (?1, ?2, 'INVOICE', ?3, 'EUR', 'DE')",
            rusqlite::params![number, date, amount],
        )
        .unwrap();
    }
    shop.execute_batch("COMMIT").unwrap();
}

/// A SQLite source made by `kksync init-db` at `path`, holding [`insert_orders`]; a
/// connection to it.
pub fn sqlite_orders(
    path: &Path,
    numbers: impl IntoIterator<Item = String>,
    amount: &str,
) -> rusqlite::Connection {
    kksync::source::init_db(path).unwrap();
    let shop = rusqlite::Connection::open(path).unwrap();
    insert_orders(&shop, numbers, amount);
    shop
}
