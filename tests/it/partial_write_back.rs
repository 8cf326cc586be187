//! The partial write-back (only the rows whose results may have changed are rewritten) must
//! leave exactly the file and summary a full write-back leaves.
//!
//! Each run is made three times from the same state: on `a.csv`, whose header has the result
//! columns (the partial write-back, after the send phase), on `b.csv`, the same file without
//! them, which only the full write-back can write, and on `c.csv`, a copy of `a.csv` whose
//! partial write-back trails the send phase. All must end byte for byte the same.

use serde_json::json;

use crate::util::{
    KEY, TestDir, change_amounts, control, orders_csv, sandbox, set_faults, summary, sync,
    sync_with_env,
};
use kksync::sandbox::{SandboxConfig, SandboxHandle};

/// Rewrites every non-empty line of `text` (no field holds a line end here) with `change`,
/// keeping line ends and empty lines as they are.
fn map_records(text: &str, change: impl Fn(Vec<&str>) -> Vec<&str>) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let end = &line[body.len()..];
        if !body.is_empty() {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(body.as_bytes());
            let record = reader.records().next().unwrap().unwrap();
            let mut writer = csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new());
            writer
                .write_record(change(record.iter().collect()))
                .unwrap();
            let written = String::from_utf8(writer.into_inner().unwrap()).unwrap();
            out.push_str(written.trim_end_matches('\n'));
        }
        out.push_str(end);
    }
    out
}

/// `text` without its last two columns (the result columns kksync appended).
fn without_result_columns(text: &str) -> String {
    map_records(text, |mut fields| {
        fields.truncate(fields.len() - 2);
        fields
    })
}

/// A row that failed keeps the status it had, which the copy without result columns does not
/// have: blanked for the comparison.
fn without_status_of_failed_rows(text: &str) -> String {
    map_records(text, |mut fields| {
        let len = fields.len();
        if fields[0] != "number" && !fields[len - 1].is_empty() {
            fields[len - 2] = "";
        }
        fields
    })
}

/// Copies `a.csv`'s state store to `to`'s.
fn copy_state(dir: &TestDir, to: &str) {
    let copy = dir.path(&format!("{to}.kksync.db"));
    let _ = std::fs::remove_file(&copy);
    let connection = rusqlite::Connection::open(dir.path("a.csv.kksync.db")).unwrap();
    connection
        .execute("VACUUM INTO ?1", [copy.to_string_lossy()])
        .unwrap();
}

/// The environment that makes a run's write-back trail its send phase from the first chunk
/// (rows are handed over however few; the reader waits for the read-back after one row, so
/// that every row after it is settled while the orders go out).
const TRAILING: [(&str, &str); 4] = [
    ("KOMFORTKASSE_API_KEY", KEY),
    ("RUST_LOG", "kksync=debug"),
    ("KKSYNC_TEST_TRAIL_AFTER_ROWS", "0"),
    ("KKSYNC_TEST_MAX_PENDING", "1"),
];

/// Runs `a.csv` as it is, `b.csv` (the same rows without result columns, the same state) and
/// `c.csv` (a copy of `a.csv` and its state, written back behind the send phase, a chunk per
/// order); asserts all end the same and returns a's text. `trails`: c.csv's run sends orders,
/// so its write-back follows their chunks (with none, it has nothing to follow).
async fn run_both(
    dir: &TestDir,
    sandbox: &kksync::sandbox::SandboxHandle,
    code: i32,
    trails: bool,
) -> String {
    let a = dir.path("a.csv");
    let text = dir.read("a.csv");
    dir.write("b.csv", without_result_columns(&text));
    dir.write("c.csv", &text);
    copy_state(dir, "b.csv");
    copy_state(dir, "c.csv");
    let env = [("KOMFORTKASSE_API_KEY", KEY), ("RUST_LOG", "kksync=debug")];
    let run_a = sync_with_env(&a, sandbox, &[], &env).await;
    run_a.expect_code(code);
    assert!(
        run_a
            .stderr
            .contains("writing back the rows that may have changed"),
        "a.csv took the partial write-back:\n{}",
        run_a.stderr
    );
    let run_b = sync(&dir.path("b.csv"), sandbox, &[]).await;
    run_b.expect_code(code);
    let (after_a, after_b) = (dir.read("a.csv"), dir.read("b.csv"));
    let after_a = without_status_of_failed_rows(&after_a);
    let differing: Vec<(&str, &str)> = after_a
        .split('\n')
        .zip(after_b.split('\n'))
        .filter(|(a, b)| a != b)
        .collect();
    assert!(differing.is_empty(), "a.csv | b.csv: {differing:#?}");
    assert_eq!(after_a, after_b);
    assert_eq!(summary(&run_a.stderr), summary(&run_b.stderr));

    // Slow answers: the writer behind the send phase must wait for each chunk's journal.
    set_faults(sandbox, json!({"latency_ms": 100})).await;
    let run_c = sync_with_env(
        &dir.path("c.csv"),
        sandbox,
        &["--chunk-size", "1", "--concurrency", "1"],
        &TRAILING,
    )
    .await;
    set_faults(sandbox, json!({"latency_ms": 0})).await;
    run_c.expect_code(code);
    assert_eq!(
        run_c
            .stderr
            .contains("the write-back trails the send phase"),
        trails,
        "c.csv's write-back trailed the send phase:\n{}",
        run_c.stderr
    );
    assert_eq!(dir.read("c.csv"), dir.read("a.csv"));
    // One request per order: only the count of requests differs.
    let without_requests = |stderr: &str| {
        summary(stderr)
            .lines()
            .filter(|line| !line.trim_start().starts_with("requests"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        without_requests(&run_c.stderr),
        without_requests(&run_a.stderr)
    );
    dir.read("a.csv")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_write_back_leaves_what_a_full_one_leaves() {
    let dir = TestDir::new();
    let date = crate::util::recent_date(3);
    // CRLF line ends and empty lines, which the partial write-back copies as they are; two
    // rows with an impossible date.
    let original = orders_csv(300, false)
        .replace('\n', "\r\n")
        .replacen("\r\nT-00010", "\r\n\r\n\r\nT-00010", 1)
        .replacen(&format!("T-00007,{date}"), "T-00007,31-02-2024", 1)
        .replacen(&format!("T-00008,{date}"), "T-00008,31-02-2024", 1);
    let a = dir.write("a.csv", &original);
    let sandbox = sandbox(SandboxConfig::default()).await;
    sync(&a, &sandbox, &[]).await.expect_code(3);

    // Between the runs: payments, a rejection, changed amounts, a fixed row (T-00007), a row
    // still broken (T-00008) and a newly broken one (T-00050).
    control(&sandbox, "pay/T-00003", json!({"amount": "13.03"})).await;
    control(&sandbox, "pay/T-00004", json!({"amount": "1.00"})).await;
    control(&sandbox, "reject/T-00020", json!({"reason": "skipped"})).await;
    let mut text = dir
        .read("a.csv")
        .replacen("T-00007,31-02-2024", &format!("T-00007,{date}"), 1)
        .replacen(&format!("T-00050,{date}"), "T-00050,30-02-2024", 1);
    change_amounts(&mut text, &["T-00020", "T-00030", "T-00031", "T-00299"]);
    dir.write("a.csv", &text);
    let second = run_both(&dir, &sandbox, 3, true).await;
    assert!(second.contains("T-00003,") && second.contains(",PAID,"));
    assert!(second.contains("\r\n\r\n\r\nT-00010"));

    // Nothing changed in the file; one more payment. The rejected and the broken rows keep
    // their errors.
    control(&sandbox, "pay/T-00005", json!({"amount": "15.05"})).await;
    let third = run_both(&dir, &sandbox, 3, false).await;
    assert_eq!(third.matches("skipped").count(), 1, "{third}");
}

/// `a.csv` with 200 orders, synced once; then T-00001, T-00100 and T-00199 are paid in part.
async fn synced_then_three_paid(dir: &TestDir) -> (std::path::PathBuf, SandboxHandle) {
    let a = dir.write("a.csv", orders_csv(200, false));
    let sandbox = sandbox(SandboxConfig::default()).await;
    sync(&a, &sandbox, &[]).await.expect_code(0);
    for number in ["T-00001", "T-00100", "T-00199"] {
        control(
            &sandbox,
            &format!("pay/{number}"),
            json!({"amount": "1.00"}),
        )
        .await;
    }
    (a, sandbox)
}

/// `a.csv` records the three partial payments of [`synced_then_three_paid`], every other order
/// unpaid.
fn assert_three_paid(dir: &TestDir) {
    let statuses = crate::util::statuses(&dir.read("a.csv"), b',');
    for (i, status) in statuses.iter().enumerate() {
        let paid = [1, 100, 199].contains(&i);
        assert_eq!(
            status,
            if paid { "PAID_PARTIAL" } else { "UNPAID" },
            "T-{i:05}"
        );
    }
}

/// Rows the reader passes while the read-back is still applying statuses are written back
/// once it is over, if their orders changed; the others are left alone.
#[tokio::test(flavor = "multi_thread")]
async fn rows_read_while_the_read_back_ran_get_its_statuses() {
    let dir = TestDir::new();
    let (a, sandbox) = synced_then_three_paid(&dir).await;
    let env = [
        ("KOMFORTKASSE_API_KEY", KEY),
        ("KKSYNC_TEST_PAUSE_AT", "applying-read-back"),
        ("KKSYNC_TEST_PAUSE_SECONDS", "1"),
    ];
    let run = sync_with_env(&a, &sandbox, &[], &env).await;
    run.expect_code(0);
    assert!(run.stderr.contains("paused at applying-read-back"));
    assert_three_paid(&dir);
    // The summary counts each row once, with its status after the write-back.
    let lines: Vec<&str> = run.stderr.lines().map(str::trim).collect();
    assert!(lines.contains(&"3  PAID_PARTIAL"), "{}", run.stderr);
    assert!(lines.contains(&"197  UNPAID"), "{}", run.stderr);
}

/// With more rows read during the read-back than may wait for its verdict, the reader waits
/// for the read-back; the write-back is still partial, every status arrives, and the changed
/// orders before and after the wait still go out in as few requests as they fill.
#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_waits_for_the_read_back_still_writes_back_only_what_changed() {
    let dir = TestDir::new();
    let (a, sandbox) = synced_then_three_paid(&dir).await;
    // Changed amounts before the wait (row 6) and after it.
    let mut text = dir.read("a.csv");
    change_amounts(&mut text, &["T-00005", "T-00150"]);
    dir.write("a.csv", &text);
    control(&sandbox, "stats/reset", json!({})).await;
    let env = [
        ("KOMFORTKASSE_API_KEY", KEY),
        ("KKSYNC_TEST_PAUSE_AT", "applying-read-back"),
        ("KKSYNC_TEST_PAUSE_SECONDS", "1"),
        ("KKSYNC_TEST_MAX_PENDING", "20"),
        ("RUST_LOG", "kksync=debug"),
    ];
    let run = sync_with_env(&a, &sandbox, &[], &env).await;
    run.expect_code(0);
    assert!(
        run.stderr.contains("waiting for the status read-back"),
        "{}",
        run.stderr
    );
    let posts = sandbox
        .stats()
        .requests_by_route
        .get("POST /orders")
        .copied();
    assert_eq!(posts, Some(1), "two changed orders, one request");
    // The 20 rows read before the wait, the orders paid and the orders sent: not every row.
    let patched = run
        .stderr
        .lines()
        .find(|line| line.contains("writing back the rows that may have changed"))
        .unwrap_or_else(|| panic!("no partial write-back: {}", run.stderr));
    let rows: usize = patched
        .rsplit("rows=")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(usize::MAX);
    assert!(rows <= 25, "{patched}");
    assert_three_paid(&dir);
}

/// `a.csv` with `rows` orders, synced once; its text.
async fn synced_once(dir: &TestDir, rows: usize) -> (SandboxHandle, String) {
    let a = dir.write("a.csv", orders_csv(rows, false));
    let sandbox = sandbox(SandboxConfig::default()).await;
    sync(&a, &sandbox, &[]).await.expect_code(0);
    let text = dir.read("a.csv");
    (sandbox, text)
}

/// `a.csv` and `b.csv`, the same `text` with the same state (synced once as `a.csv`), run with
/// one order per chunk: a's write-back trails the send phase to its end, b's comes after it.
/// Both must end the same, with exit code `code`.
async fn trailing_and_after(dir: &TestDir, sandbox: &SandboxHandle, text: &str, code: i32) {
    dir.write("a.csv", text);
    dir.write("b.csv", text);
    copy_state(dir, "b.csv");
    let one_by_one = ["--chunk-size", "1", "--concurrency", "1"];
    let run_a = sync_with_env(&dir.path("a.csv"), sandbox, &one_by_one, &TRAILING).await;
    let env = [("KOMFORTKASSE_API_KEY", KEY)];
    let run_b = sync_with_env(&dir.path("b.csv"), sandbox, &one_by_one, &env).await;
    run_a.expect_code(code);
    run_b.expect_code(code);
    assert_eq!(dir.read("a.csv"), dir.read("b.csv"));
    for step in [
        "the write-back trails the send phase",
        "writing back the last rows behind the send phase",
    ] {
        assert!(run_a.stderr.contains(step), "{step}:\n{}", run_a.stderr);
    }
}

/// A row whose duplicate check waits for the second pass (its number is out of order) is
/// rewritten with the last rows; the writer has not passed it, so the file is still patched.
/// A quoted number elsewhere stays quoted: a fallback to the full write-back would unquote it.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_settled_by_the_second_pass_keeps_the_write_back_behind_the_send_phase() {
    let dir = TestDir::new();
    let (sandbox, mut text) = synced_once(&dir, 300).await;
    // T-00003 once more after T-00100, and changed orders after it.
    let line = |number: &str| {
        let line = text.lines().find(|l| l.starts_with(number)).unwrap();
        format!("{line}\n")
    };
    let (third, hundredth) = (line("T-00003,"), line("T-00100,"));
    text = text.replacen(&hundredth, &format!("{hundredth}{third}"), 1);
    change_amounts(&mut text, &["T-00150", "T-00200", "T-00250"]);
    text = text.replacen("\nT-00280,", "\n\"T-00280\",", 1);
    // The repeated row is rejected.
    trailing_and_after(&dir, &sandbox, &text, 3).await;
    assert!(dir.read("a.csv").contains("\n\"T-00280\","));
    assert!(dir.read("a.csv").contains("appears more than once"));
}

/// A cluster of changed orders in the middle of the file does not end the trail: as without
/// one, the whole list decides at the end, and a twentieth of the rows is patched.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_of_changes_keeps_the_write_back_behind_the_send_phase() {
    let dir = TestDir::new();
    let (sandbox, mut text) = synced_once(&dir, 2000).await;
    let numbers: Vec<String> = (200..300).map(|i| format!("T-{i:05}")).collect();
    let numbers: Vec<&str> = numbers.iter().map(String::as_str).collect();
    change_amounts(&mut text, &numbers);
    text = text.replacen("\nT-01500,", "\n\"T-01500\",", 1);
    trailing_and_after(&dir, &sandbox, &text, 0).await;
    assert!(dir.read("a.csv").contains("\n\"T-01500\","));
}

/// Many rows rewritten behind the send phase at once (the orders paid meanwhile, with the last
/// rows) are looked up in several read transactions, one per hundred rows, so that the store's
/// WAL can be emptied beside them; the file ends as the write-back after the send phase leaves
/// it.
#[tokio::test(flavor = "multi_thread")]
async fn many_rows_rewritten_at_once_behind_the_send_phase_end_as_after_it() {
    let dir = TestDir::new();
    let (sandbox, mut text) = synced_once(&dir, 1000).await;
    for i in (10..1000).step_by(5) {
        control(
            &sandbox,
            &format!("pay/T-{i:05}"),
            json!({"amount": "1.00"}),
        )
        .await;
    }
    // A changed order near the end: its chunk hands the rows before it over at once.
    change_amounts(&mut text, &["T-00990"]);
    trailing_and_after(&dir, &sandbox, &text, 0).await;
    let paid = dir.read("a.csv").matches("PAID_PARTIAL").count();
    assert_eq!(paid, 198, "rows recording PAID_PARTIAL");
}
