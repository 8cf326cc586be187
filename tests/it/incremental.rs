//! Incremental sync, status read-back and crash safety (issue 4).

use std::io::{BufRead, BufReader};
use std::path::Path;

use kksync::sandbox::{SandboxConfig, SandboxHandle};
use serde_json::json;

use crate::util::{
    TestDir, api_post, change_amounts, column, control, insert_orders, orders_csv, parse_csv,
    paused_sync, sandbox, sqlite_orders, statuses, sync,
};

fn orders_received(sandbox: &SandboxHandle) -> u64 {
    sandbox.stats().orders_received
}

fn route_count(sandbox: &SandboxHandle, route: &str) -> u64 {
    sandbox
        .stats()
        .requests_by_route
        .get(route)
        .copied()
        .unwrap_or(0)
}

async fn reset_stats(sandbox: &SandboxHandle) {
    control(sandbox, "stats/reset", json!({})).await;
}

/// During the day: one customer pays T-00003 in full (`amount`), one pays T-00007 in part, and
/// T-00011 is cancelled; the request counts start afresh.
async fn pay_and_cancel(sandbox: &SandboxHandle, amount: &str) {
    control(sandbox, "pay/T-00003", json!({ "amount": amount })).await;
    control(sandbox, "pay/T-00007", json!({"amount": "1.00"})).await;
    reset_stats(sandbox).await;
    api_post(sandbox, "order/T-00011/cancel", None).await;
}

/// The run sent nothing and read the statuses back with one `GET /orders`.
fn assert_only_read_back(sandbox: &SandboxHandle, stderr: &str) {
    assert_eq!(route_count(sandbox, "POST /orders"), 0, "{stderr}");
    assert_eq!(orders_received(sandbox), 0);
    assert_eq!(route_count(sandbox, "GET /orders"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_without_changes_sends_nothing_but_refreshes_statuses() {
    let dir = TestDir::new();
    let source = dir.write("orders.csv", orders_csv(250, false));
    let sandbox = sandbox(SandboxConfig::default()).await;
    sync(&source, &sandbox, &[]).await.expect_code(0);
    assert_eq!(orders_received(&sandbox), 250);

    pay_and_cancel(&sandbox, "13.03").await;

    let run = sync(&source, &sandbox, &[]).await;
    run.expect_code(0);
    assert_only_read_back(&sandbox, &run.stderr);
    let statuses = statuses(&dir.read("orders.csv"), b',');
    assert_eq!(statuses[3], "PAID");
    assert_eq!(statuses[7], "PAID_PARTIAL");
    assert_eq!(statuses[11], "CANCELLED");
    assert_eq!(statuses.iter().filter(|s| *s == "UNPAID").count(), 247);
    assert!(run.stderr.contains("3 statuses changed"), "{}", run.stderr);
    // The list leaves out UNPAID orders: only the three that moved came back.
    assert!(
        run.stderr.contains("read back     3 orders listed"),
        "{}",
        run.stderr
    );
}

/// The same over a SQLite source, whose state lives in the shop's database: nothing is sent, the
/// statuses that changed are read back and written into the three rows, no other row is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_over_a_sqlite_source_without_changes_sends_nothing_but_refreshes_statuses() {
    let dir = TestDir::new();
    let db = dir.path("shop.db");
    let shop = sqlite_orders(&db, (0..250).map(|i| format!("T-{i:05}")), "10.00");
    let sandbox = sandbox(SandboxConfig::default()).await;
    sync(&db, &sandbox, &[]).await.expect_code(0);
    assert_eq!(orders_received(&sandbox), 250);
    let synced_at = |number: &str| -> String {
        shop.query_row(
            "SELECT synced_at FROM orders WHERE number = ?1",
            [number],
            |r| r.get(0),
        )
        .unwrap()
    };
    let untouched = synced_at("T-00004");

    pay_and_cancel(&sandbox, "10.00").await;

    let run = sync(&db, &sandbox, &[]).await;
    run.expect_code(0);
    assert_only_read_back(&sandbox, &run.stderr);
    let statuses: Vec<String> = shop
        .prepare("SELECT payment_status FROM orders ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(statuses[3], "PAID");
    assert_eq!(statuses[7], "PAID_PARTIAL");
    assert_eq!(statuses[11], "CANCELLED");
    assert_eq!(statuses.iter().filter(|s| *s == "UNPAID").count(), 247);
    assert!(run.stderr.contains("3 statuses changed"), "{}", run.stderr);
    assert_eq!(
        synced_at("T-00004"),
        untouched,
        "a row whose status stayed is not written"
    );
}

/// Records `numbers` as last known `PAID_PARTIAL`, in the store and in the CSV, as if a partial
/// payment had been read back before and then reversed at Komfortkasse (they are `UNPAID`
/// there).
fn pretend_partly_paid(dir: &TestDir, numbers: &[String]) {
    let connection = rusqlite::Connection::open(dir.path("orders.csv.kksync.db")).unwrap();
    for number in numbers {
        let updated = connection
            .execute(
                "UPDATE kksync_order_state SET payment_status = 'PAID_PARTIAL' WHERE number = ?1",
                [number],
            )
            .unwrap();
        assert_eq!(updated, 1);
    }
    let (header, mut rows) = parse_csv(&dir.read("orders.csv"), b',');
    let status = header.iter().position(|h| h == "paymentStatus").unwrap();
    for row in rows.iter_mut().filter(|row| numbers.contains(&row[0])) {
        row[status] = "PAID_PARTIAL".into();
    }
    let mut writer = csv::Writer::from_path(dir.path("orders.csv")).unwrap();
    writer.write_record(&header).unwrap();
    rows.iter()
        .for_each(|row| writer.write_record(row).unwrap());
    writer.flush().unwrap();
}

/// The read-back leaves UNPAID orders out of its list; an open order that went back to UNPAID
/// is missing from it, and is asked for by name (a few) or with a second list (many).
#[tokio::test(flavor = "multi_thread")]
async fn orders_that_went_back_to_unpaid_are_read_back_too() {
    for (went_back, lists, lookups) in [(3, 1, 3), (25, 2, 0)] {
        let dir = TestDir::new();
        let source = dir.write("orders.csv", orders_csv(40, false));
        let sandbox = sandbox(SandboxConfig::default()).await;
        sync(&source, &sandbox, &[]).await.expect_code(0);
        let numbers: Vec<String> = (0..went_back).map(|i| format!("T-{:05}", i + 5)).collect();
        pretend_partly_paid(&dir, &numbers);
        assert_eq!(
            statuses(&dir.read("orders.csv"), b',')
                .iter()
                .filter(|s| *s == "PAID_PARTIAL")
                .count(),
            went_back
        );
        reset_stats(&sandbox).await;

        let run = sync(&source, &sandbox, &[]).await;
        run.expect_code(0);
        assert_eq!(
            route_count(&sandbox, "GET /orders"),
            lists,
            "{}",
            run.stderr
        );
        assert_eq!(route_count(&sandbox, "GET /order/{number}"), lookups);
        assert_eq!(route_count(&sandbox, "POST /orders"), 0);
        let statuses = statuses(&dir.read("orders.csv"), b',');
        assert!(statuses.iter().all(|s| s == "UNPAID"), "{statuses:?}");
        assert!(
            run.stderr
                .contains(&format!("({went_back} statuses changed)")),
            "{}",
            run.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_amount_resends_only_that_order_and_full_resends_all() {
    let dir = TestDir::new();
    let source = dir.write("orders.csv", orders_csv(120, false));
    let sandbox = sandbox(SandboxConfig::default()).await;
    sync(&source, &sandbox, &[]).await.expect_code(0);
    reset_stats(&sandbox).await;

    let text = dir.read("orders.csv").replace(",57.47,", ",99.00,");
    std::fs::write(&source, text).unwrap();
    sync(&source, &sandbox, &[]).await.expect_code(0);
    assert_eq!(orders_received(&sandbox), 1);
    assert_eq!(route_count(&sandbox, "POST /orders"), 1);

    reset_stats(&sandbox).await;
    sync(&source, &sandbox, &["--full"]).await.expect_code(0);
    assert_eq!(orders_received(&sandbox), 120);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_rejected_by_validation_is_sent_once_it_is_fixed() {
    let dir = TestDir::new();
    let good = orders_csv(30, false);
    let date = crate::util::recent_date(3);
    // Row 6 (T-00004) gets an impossible date.
    let broken = good.replace(&format!("T-00004,{date},"), "T-00004,31-02-2024,");
    assert_ne!(broken, good);
    let source = dir.write("orders.csv", &broken);
    let sandbox = sandbox(SandboxConfig::default()).await;
    sync(&source, &sandbox, &[]).await.expect_code(3);
    assert_eq!(orders_received(&sandbox), 29);
    let text = dir.read("orders.csv");
    let (header, rows) = parse_csv(&text, b',');
    let errors = column(&header, &rows, "syncError");
    assert!(errors[4].starts_with("row 6: date"), "{:?}", errors[4]);

    // Unchanged: still rejected, nothing sent.
    reset_stats(&sandbox).await;
    sync(&source, &sandbox, &[]).await.expect_code(3);
    assert_eq!(orders_received(&sandbox), 0);

    // Fixed: sent, and the error is gone.
    std::fs::write(&source, text.replace("31-02-2024", &date)).unwrap();
    let run = sync(&source, &sandbox, &[]).await;
    run.expect_code(0);
    assert_eq!(orders_received(&sandbox), 1);
    let text = dir.read("orders.csv");
    let (header, rows) = parse_csv(&text, b',');
    assert_eq!(column(&header, &rows, "syncError")[4], "");
    assert_eq!(column(&header, &rows, "paymentStatus")[4], "UNPAID");
}

/// Starts `kksync sync` paused at `point` (with `env` besides) and kills it (SIGKILL) once it
/// is there; returns what it wrote on stderr.
fn run_and_kill_at(
    source: &Path,
    base_url: &str,
    point: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> String {
    let mut child = paused_sync(source, base_url, point)
        .args(extra)
        .envs(env.iter().copied())
        .spawn()
        .expect("kksync starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("stderr line");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(&format!("paused at {point}")) {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
            return seen;
        }
    }
    let status = child.wait().expect("reaped");
    panic!("kksync ended ({status}) without pausing at {point}:\n{seen}");
}

/// [`run_and_kill_at`] on a blocking thread.
async fn kill_at(source: &Path, sandbox: &SandboxHandle, point: &str, extra: &[&str]) {
    let (path, handle) = (source.to_path_buf(), sandbox.base_url());
    let (point, extra): (String, Vec<String>) =
        (point.into(), extra.iter().map(|s| s.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        run_and_kill_at(&path, &handle, &point, &extra, &[])
    })
    .await
    .unwrap();
}

async fn killed_then_rerun(point: &str, extra: &[&str]) -> (TestDir, SandboxHandle, u64, u64) {
    let dir = TestDir::new();
    let original = orders_csv(2500, false);
    let source = dir.write("orders.csv", &original);
    let sandbox = sandbox(SandboxConfig::default()).await;
    kill_at(&source, &sandbox, point, extra).await;
    assert_eq!(
        dir.read("orders.csv"),
        original,
        "killed: the source is old or new, never torn"
    );
    let first = orders_received(&sandbox);
    reset_stats(&sandbox).await;
    sync(&source, &sandbox, &[]).await.expect_code(0);
    let second = orders_received(&sandbox);
    let text = dir.read("orders.csv");
    let statuses = statuses(&text, b',');
    assert_eq!(statuses.len(), 2500);
    assert!(
        statuses.iter().all(|s| s == "UNPAID"),
        "every status written back"
    );
    assert_eq!(
        dir.files(),
        [
            "orders.csv",
            "orders.csv.kksync.db",
            "orders.csv.kksync.db-shm",
            "orders.csv.kksync.db-wal",
            "orders.csv.kksync.db.rows",
            "orders.csv.kksync.lock"
        ]
        .iter()
        .filter(|f| dir.path(f).exists())
        .map(|f| f.to_string())
        .collect::<Vec<_>>(),
        "no temporary file left"
    );
    (dir, sandbox, first, second)
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_a_chunk_was_acknowledged_the_rerun_does_not_resend_it() {
    let (_dir, _sandbox, first, second) =
        killed_then_rerun("journaled", &["--chunk-size", "50", "--concurrency", "1"]).await;
    assert_eq!(first, 50, "one chunk was sent before the kill");
    assert_eq!(second, 2450, "the acknowledged chunk is not resent");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_between_replies_and_write_back_the_rerun_only_writes_back() {
    let (_dir, _sandbox, first, second) = killed_then_rerun("before-write-back", &[]).await;
    assert_eq!(first, 2500);
    assert_eq!(second, 0, "everything was acknowledged: nothing is resent");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_during_the_write_back_the_rerun_completes_it() {
    let (_dir, _sandbox, first, second) = killed_then_rerun("writing-back", &[]).await;
    assert_eq!(first, 2500);
    assert_eq!(second, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_killed_during_the_write_back_the_rerun_completes_it() {
    let killed = sqlite_killed_then_rerun("writing-back", &[]).await;
    assert!(
        killed.written > 0 && killed.written < 2500,
        "killed halfway: {}",
        killed.written
    );
    assert_eq!(killed.second, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_killed_after_a_chunk_was_acknowledged_the_rerun_does_not_resend_it() {
    let killed =
        sqlite_killed_then_rerun("journaled", &["--chunk-size", "50", "--concurrency", "1"]).await;
    assert_eq!(killed.written, 0, "killed before the write-back");
    assert_eq!(killed.first, 50, "one chunk was sent before the kill");
    assert_eq!(killed.second, 2450, "the acknowledged chunk is not resent");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_killed_between_replies_and_write_back_the_rerun_only_writes_back() {
    let killed = sqlite_killed_then_rerun("before-write-back", &[]).await;
    assert_eq!(killed.written, 0, "killed before the write-back");
    assert_eq!(killed.first, 2500);
    assert_eq!(
        killed.second, 0,
        "everything was acknowledged: nothing is resent"
    );
}

/// The journal failing (here a trigger in the shop's database refuses one order's state, as a
/// full disk would refuse the write) stops the run at once: no further chunk goes out, the run
/// history counts the chunk that went out unjournaled and the rows read, and the rerun resends
/// exactly the orders whose answers were not kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_journal_that_fails_stops_the_run_and_the_rerun_resends_only_what_it_lost() {
    let dir = TestDir::new();
    let db = dir.path("shop.db");
    let sandbox = sandbox(SandboxConfig::default()).await;
    // A first run creates kksync's tables in the database.
    let shop = sqlite_orders(&db, ["J-first".to_string()], "10.00");
    sync(&db, &sandbox, &[]).await.expect_code(0);
    shop.execute_batch(
        "CREATE TRIGGER disk_full BEFORE INSERT ON kksync_order_state WHEN new.number = 'J-150'
         BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .unwrap();
    insert_orders(&shop, (0..300).map(|i| format!("J-{i:03}")), "10.00");
    reset_stats(&sandbox).await;
    let run = sync(&db, &sandbox, &["--concurrency", "1"]).await;
    run.expect_code(1);
    assert!(run.stderr.contains("disk full"), "{}", run.stderr);
    assert_eq!(
        orders_received(&sandbox),
        200,
        "no chunk after the failed one"
    );
    let runs =
        crate::util::kksync(&["runs", "--source", db.to_str().unwrap(), "--json"], &[]).await;
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    let counts = &runs[0]["counts"];
    assert_eq!(counts["orders_sent"], 200, "{counts}");
    assert!(counts["rows_read"].as_u64().unwrap() > 150, "{counts}");

    shop.execute_batch("DROP TRIGGER disk_full").unwrap();
    reset_stats(&sandbox).await;
    sync(&db, &sandbox, &[]).await.expect_code(0);
    assert_eq!(
        orders_received(&sandbox),
        200,
        "the unjournaled chunk and the one after"
    );
    let unpaid: i64 = shop
        .query_row(
            "SELECT COUNT(*) FROM orders WHERE payment_status = 'UNPAID' AND sync_error IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unpaid, 301);
}

/// What a SQLite run killed at a point, then run again, did.
struct Killed {
    /// Rows with a result when it was killed.
    written: i64,
    /// Orders the sandbox received before the kill, and in the rerun.
    first: u64,
    second: u64,
}

/// A SQLite source of 2,500 orders, a run killed (SIGKILL) at `point`, and a rerun, which must
/// leave every row with its status and no error.
async fn sqlite_killed_then_rerun(point: &str, extra: &[&str]) -> Killed {
    let dir = TestDir::new();
    let db = dir.path("shop.db");
    let connection = sqlite_orders(&db, (0..2500).map(|i| format!("S-{i}")), "19.99");
    let count = |sql: &str| -> i64 { connection.query_row(sql, [], |r| r.get(0)).unwrap() };
    let sandbox = sandbox(SandboxConfig::default()).await;
    kill_at(&db, &sandbox, point, extra).await;
    let written = count("SELECT COUNT(*) FROM orders WHERE payment_status IS NOT NULL");
    let first = orders_received(&sandbox);
    reset_stats(&sandbox).await;
    sync(&db, &sandbox, &[]).await.expect_code(0);
    let second = orders_received(&sandbox);
    let complete =
        count("SELECT COUNT(*) FROM orders WHERE payment_status = 'UNPAID' AND sync_error IS NULL");
    assert_eq!(complete, 2500, "every status written back");
    Killed {
        written,
        first,
        second,
    }
}

/// The write-back of the changed rows of a SQLite source (a second run) killed after its first
/// transaction: the rerun sends nothing and writes every status the read-back found.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_killed_during_a_partial_write_back_the_rerun_completes_it() {
    let dir = TestDir::new();
    let db = dir.path("shop.db");
    let connection = sqlite_orders(&db, (0..6000).map(|i| format!("S-{i}")), "19.99");
    let sandbox = sandbox(SandboxConfig {
        pay_rate: 0.2,
        ..SandboxConfig::default()
    })
    .await;
    sync(&db, &sandbox, &[]).await.expect_code(0);
    let changed = sandbox.tick();
    assert!((1000..1500).contains(&changed), "{changed}");
    let expected = |connection: &rusqlite::Connection| -> usize {
        let mut statement = connection
            .prepare("SELECT number, payment_status FROM orders")
            .unwrap();
        let rows = statement
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
            .map(Result::unwrap);
        rows.filter(|(number, status)| sandbox.order_status(number).as_deref() == Some(status))
            .count()
    };
    let (path, handle) = (db.clone(), sandbox.base_url());
    let env = [("RUST_LOG", "kksync=debug")];
    let stderr = tokio::task::spawn_blocking(move || {
        run_and_kill_at(&path, &handle, "writing-back", &[], &env)
    })
    .await
    .unwrap();
    assert!(
        stderr.contains("writing back the rows that may have changed"),
        "{stderr}"
    );
    let right = expected(&connection);
    assert!(
        right > 6000 - changed && right < 6000,
        "killed halfway: {right}"
    );
    reset_stats(&sandbox).await;
    sync(&db, &sandbox, &[]).await.expect_code(0);
    assert_eq!(orders_received(&sandbox), 0);
    assert_eq!(expected(&connection), 6000);
}

/// The partial write-back (a second run, the header has the result columns) killed after it
/// replaced a row: the file is the old one, and the rerun writes everything back.
#[tokio::test(flavor = "multi_thread")]
async fn killed_during_a_partial_write_back_the_rerun_completes_it() {
    killed_during_a_partial_write_back(false).await;
}

/// The same, with the partial write-back trailing the send phase (three orders changed, sent a
/// chunk each): killed while the orders still go out, the file is the old one.
#[tokio::test(flavor = "multi_thread")]
async fn killed_during_a_write_back_behind_the_send_phase_the_rerun_completes_it() {
    killed_during_a_partial_write_back(true).await;
}

async fn killed_during_a_partial_write_back(trailing: bool) {
    let dir = TestDir::new();
    let source = dir.write("orders.csv", orders_csv(600, false));
    let sandbox = sandbox(SandboxConfig::default()).await;
    sync(&source, &sandbox, &[]).await.expect_code(0);
    for i in (0..600).step_by(7) {
        control(
            &sandbox,
            &format!("pay/T-{i:05}"),
            json!({"amount": "1.00"}),
        )
        .await;
    }
    if trailing {
        // Orders that are not paid: their statuses stay.
        let mut text = dir.read("orders.csv");
        change_amounts(&mut text, &["T-00030", "T-00031", "T-00299"]);
        dir.write("orders.csv", &text);
    }
    let before = dir.read("orders.csv");
    let (path, url) = (source.clone(), sandbox.base_url());
    let stderr = tokio::task::spawn_blocking(move || {
        let (extra, env): (&[&str], &[(&str, &str)]) = match trailing {
            false => (&[], &[]),
            true => (
                &["--chunk-size", "1", "--concurrency", "1"],
                &[
                    ("RUST_LOG", "kksync=debug"),
                    ("KKSYNC_TEST_TRAIL_AFTER_ROWS", "0"),
                    ("KKSYNC_TEST_MAX_PENDING", "1"),
                ],
            ),
        };
        run_and_kill_at(&path, &url, "writing-back", extra, env)
    })
    .await
    .unwrap();
    assert_eq!(
        stderr.contains("the write-back trails the send phase"),
        trailing,
        "{stderr}"
    );
    assert_eq!(dir.read("orders.csv"), before, "old or new, never torn");
    sync(&source, &sandbox, &[]).await.expect_code(0);
    let statuses = statuses(&dir.read("orders.csv"), b',');
    for (i, status) in statuses.iter().enumerate() {
        let expected = if i % 7 == 0 { "PAID_PARTIAL" } else { "UNPAID" };
        assert_eq!(status, expected, "row of T-{i:05}");
    }
    assert!(dir.files().iter().all(|f| !f.contains("kksync-tmp")));
}

/// A final order reopened at Komfortkasse is not watched by the filtered read-back (its status
/// no longer changes by itself); `--read-back-all` reads every status and sees it.
#[tokio::test(flavor = "multi_thread")]
async fn read_back_all_sees_a_paid_order_reopened() {
    let dir = TestDir::new();
    let source = dir.write("orders.csv", orders_csv(20, false));
    let sandbox = sandbox(SandboxConfig::default()).await;
    sync(&source, &sandbox, &[]).await.expect_code(0);
    api_post(&sandbox, "order/T-00004/setpaid", None).await;
    sync(&source, &sandbox, &[]).await.expect_code(0);
    assert_eq!(statuses(&dir.read("orders.csv"), b',')[4], "PAID");

    api_post(&sandbox, "order/T-00004/setunpaid", None).await;
    sync(&source, &sandbox, &[]).await.expect_code(0);
    assert_eq!(
        statuses(&dir.read("orders.csv"), b',')[4],
        "PAID",
        "not watched"
    );
    reset_stats(&sandbox).await;
    let run = sync(&source, &sandbox, &["--read-back-all"]).await;
    run.expect_code(0);
    assert_eq!(statuses(&dir.read("orders.csv"), b',')[4], "UNPAID");
    assert_eq!(route_count(&sandbox, "GET /orders"), 1);
    assert!(
        run.stderr.contains("read back     20 orders listed"),
        "{}",
        run.stderr
    );
}

/// `--resend-open-after 7d` resends exactly the open orders whose payload was accepted more
/// than 7 days ago: not the ones accepted since, nor a paid one accepted as long ago.
#[tokio::test(flavor = "multi_thread")]
async fn resend_open_after_resends_only_open_orders_accepted_long_enough_ago() {
    let dir = TestDir::new();
    let source = dir.write("orders.csv", orders_csv(50, false));
    let sandbox = sandbox(SandboxConfig::default()).await;
    sync(&source, &sandbox, &[]).await.expect_code(0);
    api_post(&sandbox, "order/T-00040/setpaid", None).await;
    sync(&source, &sandbox, &[]).await.expect_code(0);
    // Four orders were accepted ten days ago; T-00040 has been paid since.
    let state = rusqlite::Connection::open(dir.path("orders.csv.kksync.db")).unwrap();
    let long_ago = (time::OffsetDateTime::now_utc() - time::Duration::days(10))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let aged = state
        .execute(
            "UPDATE kksync_order_state SET accepted_at = ?1
             WHERE number IN ('T-00003', 'T-00017', 'T-00031', 'T-00040')",
            [&long_ago],
        )
        .unwrap();
    assert_eq!(aged, 4);
    drop(state);

    reset_stats(&sandbox).await;
    sync(&source, &sandbox, &["--resend-open-after", "7d"])
        .await
        .expect_code(0);
    assert_eq!(orders_received(&sandbox), 3, "the three open ones");
    reset_stats(&sandbox).await;
    sync(&source, &sandbox, &["--resend-open-after", "7d"])
        .await
        .expect_code(0);
    assert_eq!(orders_received(&sandbox), 0, "accepted again just now");
}
