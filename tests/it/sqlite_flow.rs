//! SQLite round trip: init-db, sync, results in payment_status / sync_error / synced_at.

use kksync::sandbox::SandboxConfig;
use rusqlite::Connection;

use crate::util::{
    KEY, TestDir, kksync, recent_date, sandbox, sqlite_orders, summary, sync,
    sync_changing_the_source_at, sync_with_env,
};

/// number, payment_status, sync_error, synced_at
type ResultRow = (String, Option<String>, Option<String>, Option<String>);

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_round_trip_writes_statuses_in_place() {
    let dir = TestDir::new();
    let db = dir.path("shop.db");
    let db_arg = db.to_string_lossy().into_owned();
    kksync(&["init-db", &db_arg], &[]).await.expect_code(0);
    kksync(&["init-db", &db_arg], &[]).await.expect_code(0);

    let connection = Connection::open(&db).unwrap();
    let iso_date = kksync::dates::berlin_today() - time::Duration::days(4);
    for i in 0..230 {
        // Half the rows use ISO dates, half the API's format.
        let date = if i % 2 == 0 {
            iso_date.to_string()
        } else {
            recent_date(4)
        };
        connection
            .execute(
                "INSERT INTO orders (number, date, type, amount, currency, billing_last_name, billing_country_code) \
                 VALUES (?1, ?2, 'INVOICE', ?3, 'EUR', 'Schmidt', 'DE')",
                rusqlite::params![format!("S-{i}"), date, format!("{}.{:02}", i, i % 100)],
            )
            .unwrap();
    }
    connection
        .execute(
            "UPDATE orders SET amount = 'zwölf' WHERE number = 'S-7'",
            [],
        )
        .unwrap();
    let sandbox = sandbox(SandboxConfig {
        pay_rate: 0.5,
        seed: 3,
        ..SandboxConfig::default()
    })
    .await;

    sync(&db, &sandbox, &[]).await.expect_code(3);
    sandbox.tick();
    sync(&db, &sandbox, &[]).await.expect_code(3);

    let mut statement = connection
        .prepare("SELECT number, payment_status, sync_error, synced_at FROM orders ORDER BY rowid")
        .unwrap();
    let rows: Vec<ResultRow> = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 230);
    for (number, status, error, synced_at) in &rows {
        if number == "S-7" {
            assert_eq!(status, &None);
            let error = error.as_deref().unwrap_or_default();
            assert!(
                error.starts_with("row 8: amount \"zwölf\" is not a decimal number"),
                "{error}"
            );
        } else {
            assert_eq!(
                status.as_deref(),
                sandbox.order_status(number).as_deref(),
                "{number}"
            );
            assert_eq!(error, &None, "{number}");
            assert!(synced_at.is_some(), "{number}");
        }
    }
    assert!(
        rows.iter().any(|r| r.1.as_deref() == Some("PAID")),
        "some payments arrived"
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shop_transaction_holding_the_database_only_delays_the_write_back() {
    let dir = TestDir::new();
    let db = dir.path("shop.db");
    kksync::source::init_db(&db).unwrap();
    let date = recent_date(1);
    let shop = Connection::open(&db).unwrap();
    for i in 0..50 {
        shop.execute(
            "INSERT INTO orders (number, date, type, amount, currency, billing_country_code) VALUES (?1, ?2, 'COD', '9.99', 'EUR', 'DE')",
            rusqlite::params![format!("B-{i}"), date],
        )
        .unwrap();
    }
    let sandbox = sandbox(SandboxConfig::default()).await;
    // The shop holds the write lock while kksync starts; it lets go a moment later.
    shop.execute_batch(
        "BEGIN IMMEDIATE; UPDATE orders SET status_description = 'packing' WHERE number = 'B-0';",
    )
    .unwrap();
    let run = {
        let db = db.clone();
        let sandbox_url = sandbox.base_url();
        tokio::spawn(async move {
            let source = db.to_string_lossy().into_owned();
            kksync(
                &[
                    "sync",
                    "--source",
                    &source,
                    "--api-url",
                    &sandbox_url,
                    "--rate",
                    "1000",
                ],
                &[("KOMFORTKASSE_API_KEY", crate::util::KEY)],
            )
            .await
        })
    };
    // The state store lives in the same database, so kksync waits for the shop before it
    // records anything, and sends nothing it could not record.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        sandbox.order_count(),
        0,
        "nothing is sent while the state cannot be written"
    );
    shop.execute_batch("COMMIT").unwrap();
    run.await.unwrap().expect_code(0);
    let synced: i64 = shop
        .query_row(
            "SELECT count(*) FROM orders WHERE payment_status = 'UNPAID'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(synced, 50);
    let kept: String = shop
        .query_row(
            "SELECT status_description FROM orders WHERE number = 'B-0'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, "packing", "the shop's own write survives");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn text_that_is_not_utf8_is_rejected_not_sent_altered() {
    let dir = TestDir::new();
    let db = dir.path("shop.db");
    let db_arg = db.to_string_lossy().into_owned();
    kksync(&["init-db", &db_arg], &[]).await.expect_code(0);
    let connection = Connection::open(&db).unwrap();
    for (number, city) in [
        ("U-1", "'München'"),
        ("U-2", "CAST(X'4DFC6E6368656E' AS TEXT)"),
    ] {
        connection
            .execute(
                &format!(
                    "INSERT INTO orders (number, date, type, amount, currency, billing_city, billing_country_code) \
                     VALUES (?1, ?2, 'INVOICE', '9.99', 'EUR', {city}, 'DE')"
                ),
                rusqlite::params![number, recent_date(2)],
            )
            .unwrap();
    }
    let sandbox = sandbox(SandboxConfig::default()).await;
    let run = sync(&db, &sandbox, &[]).await;
    run.expect_code(3);
    assert!(
        run.stderr.contains("a value is not valid UTF-8"),
        "the summary groups it under its own reason: {}",
        run.stderr
    );
    assert_eq!(sandbox.order_status("U-1").as_deref(), Some("UNPAID"));
    assert_eq!(sandbox.order_status("U-2"), None, "never sent altered");
    let error: Option<String> = connection
        .query_row(
            "SELECT sync_error FROM orders WHERE number = 'U-2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        error.as_deref(),
        Some("row 2: billing_city is not valid UTF-8")
    );
    sandbox.shutdown().await;
}

/// `synced_at` records the last sync of the row: an order the API accepts again (its amount
/// changed) gets a new time even though its status stayed the same; an order not sent keeps
/// its time. Only the time is written: a shop's trigger on the status does not fire.
#[tokio::test(flavor = "multi_thread")]
async fn a_resent_order_gets_a_new_synced_at_even_with_the_same_status() {
    let dir = TestDir::new();
    let db = dir.path("shop.db");
    kksync::source::init_db(&db).unwrap();
    let shop = Connection::open(&db).unwrap();
    let date = recent_date(2);
    for i in 0..3 {
        shop.execute(
            "INSERT INTO orders (number, date, type, amount, currency, billing_country_code) VALUES (?1, ?2, 'INVOICE', '10.00', 'EUR', 'DE')",
            rusqlite::params![format!("T-{i}"), date],
        )
        .unwrap();
    }
    shop.execute_batch(
        "CREATE TABLE status_log (number TEXT);
         CREATE TRIGGER log_status AFTER UPDATE OF payment_status ON orders
         BEGIN INSERT INTO status_log VALUES (new.number); END;",
    )
    .unwrap();
    let logged = || -> i64 {
        shop.query_row("SELECT count(*) FROM status_log", [], |r| r.get(0))
            .unwrap()
    };
    // Nobody pays: every status stays what the first send reported.
    let sandbox = sandbox(SandboxConfig {
        pay_rate: 0.0,
        ..SandboxConfig::default()
    })
    .await;
    let synced = || -> Vec<(String, String, String)> {
        shop.prepare("SELECT number, payment_status, synced_at FROM orders ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    sync(&db, &sandbox, &[]).await.expect_code(0);
    let first = synced();
    shop.execute(
        "UPDATE orders SET amount = '12.50' WHERE number = 'T-1'",
        [],
    )
    .unwrap();
    let run = sync(&db, &sandbox, &[]).await;
    run.expect_code(0);
    assert!(run.stderr.contains("sent          1"), "{}", run.stderr);
    let second = synced();
    assert_eq!(second[1].1, first[1].1, "the status stayed the same");
    assert!(second[1].2 > first[1].2, "{first:?} then {second:?}");
    assert_eq!(
        (&second[0], &second[2]),
        (&first[0], &first[2]),
        "orders not sent keep their time"
    );
    assert_eq!(logged(), 3, "the status was not written again");
    sandbox.shutdown().await;
}

/// A second run over a SQLite source writes back only the rows whose results may have changed
/// (read again by rowid), and they get what the full write-back gives them (run on a copy whose
/// result columns were dropped): the statuses the read-back found, the resent orders' answers,
/// a fixed row's status, a new validation error, and the status the store knows for a row the
/// shop overwrote by hand. The other rows keep their results and sync times.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_writes_back_only_the_rows_that_may_have_changed() {
    let dir = TestDir::new();
    let db = dir.path("shop.db");
    let shop = sqlite_orders(&db, (0..400).map(|i| format!("Q-{i:03}")), "10.00");
    shop.execute(
        "UPDATE orders SET amount = 'zehn' WHERE number = 'Q-007'",
        [],
    )
    .unwrap();
    let sandbox = sandbox(SandboxConfig {
        pay_rate: 0.0,
        ..SandboxConfig::default()
    })
    .await;
    sync(&db, &sandbox, &[]).await.expect_code(3);
    let results = || -> Vec<ResultRow> {
        shop.prepare(
            "SELECT number, payment_status, sync_error, synced_at FROM orders ORDER BY rowid",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let first = results();
    // The same database, whose result columns the shop dropped: only the full write-back
    // (which adds them again) can write it back.
    let full_db = dir.path("full.db");
    std::fs::copy(&db, &full_db).unwrap();
    let full = Connection::open(&full_db).unwrap();
    full.execute_batch(
        "ALTER TABLE orders DROP COLUMN payment_status;
         ALTER TABLE orders DROP COLUMN sync_error;
         ALTER TABLE orders DROP COLUMN synced_at;",
    )
    .unwrap();

    // Paid at Komfortkasse: every tenth order (the read-back finds them).
    for i in (0..400).step_by(10) {
        crate::util::control(
            &sandbox,
            &format!("pay/Q-{i:03}"),
            serde_json::json!({"amount": "10.00"}),
        )
        .await;
    }
    let changes = "UPDATE orders SET amount = '12.00' WHERE number IN ('Q-001', 'Q-002');
         UPDATE orders SET amount = '10.00' WHERE number = 'Q-007';
         UPDATE orders SET amount = 'elf' WHERE number = 'Q-009';";
    full.execute_batch(changes).unwrap();
    shop.execute_batch(changes).unwrap();
    shop.execute(
        "UPDATE orders SET payment_status = 'PAID' WHERE number = 'Q-015'",
        [],
    )
    .unwrap();
    let env = [("KOMFORTKASSE_API_KEY", KEY), ("RUST_LOG", "kksync=debug")];
    let run = sync_with_env(&db, &sandbox, &[], &env).await;
    run.expect_code(3);
    let full_run = sync(&full_db, &sandbox, &[]).await;
    full_run.expect_code(3);
    // Both leave the same results and report the same. (An error is written beside the status a
    // row has, which the copy lost with its columns.)
    let without_times = |connection: &Connection| -> Vec<(String, Option<String>, Option<String>)> {
        connection
            .prepare(
                "SELECT number, CASE WHEN sync_error IS NULL THEN payment_status END, sync_error
                 FROM orders ORDER BY rowid",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(without_times(&shop), without_times(&full));
    assert_eq!(summary(&run.stderr), summary(&full_run.stderr));
    // Not every row: the forty paid, two resent, two re-validated and one overwritten.
    let written = run
        .stderr
        .lines()
        .find(|line| line.contains("writing back the rows that may have changed"))
        .unwrap_or_else(|| panic!("no partial write-back:\n{}", run.stderr));
    assert!(written.contains("rows=45"), "{written}");

    let second = results();
    for (before, (number, status, error, synced_at)) in first.iter().zip(&second) {
        let i: usize = number[2..].parse().unwrap();
        if number == "Q-009" {
            // The error joins the status the order had.
            assert_eq!(status.as_deref(), Some("UNPAID"), "{number}");
            let error = error.as_deref().unwrap_or_default();
            assert!(error.starts_with("row 10: amount \"elf\""), "{error}");
            continue;
        }
        let expected = if i.is_multiple_of(10) {
            "PAID"
        } else {
            "UNPAID"
        };
        assert_eq!(status.as_deref(), Some(expected), "{number}");
        assert_eq!(error, &None, "{number}");
        let rewritten = i.is_multiple_of(10) || matches!(i, 1 | 2 | 7 | 15);
        if rewritten {
            assert_ne!(synced_at, &before.3, "{number} was synced again");
        } else {
            assert_eq!((status, synced_at), (&before.1, &before.3), "{number}");
        }
    }
    sandbox.shutdown().await;
}

/// Rows the shop adds while a run that writes back only chosen rows goes on get their results
/// as the full write-back gives them: an order it replaced (`INSERT OR REPLACE` gives the row a
/// new rowid and empty results) gets the status the store knows; an order new to the store is
/// left for the next run to send.
#[tokio::test(flavor = "multi_thread")]
async fn rows_the_shop_adds_during_a_run_get_their_results() {
    let dir = TestDir::new();
    let db = dir.path("shop.db");
    let shop = sqlite_orders(&db, (0..50).map(|i| format!("A-{i:02}")), "10.00");
    let date = recent_date(3);
    let insert = "INSERT OR REPLACE INTO orders (number, date, type, amount, currency, billing_country_code) VALUES (?1, ?2, 'INVOICE', '10.00', 'EUR', 'DE')";
    let sandbox = sandbox(SandboxConfig {
        pay_rate: 0.0,
        ..SandboxConfig::default()
    })
    .await;
    sync(&db, &sandbox, &[]).await.expect_code(0);

    let (path, url) = (db.clone(), sandbox.base_url());
    let (code, stderr) = tokio::task::spawn_blocking(move || {
        sync_changing_the_source_at(&path, &url, "before-write-back", || {
            let shop = Connection::open(&path).unwrap();
            shop.execute(insert, rusqlite::params!["A-03", date])
                .unwrap();
            shop.execute(insert, rusqlite::params!["A-NEW", date])
                .unwrap();
        })
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let result = |number: &str| -> (i64, Option<String>) {
        shop.query_row(
            "SELECT rowid, payment_status FROM orders WHERE number = ?1",
            [number],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    assert_eq!(result("A-03"), (51, Some("UNPAID".into())));
    assert_eq!(result("A-NEW"), (52, None));
    assert_eq!(sandbox.order_status("A-NEW"), None);
    sandbox.shutdown().await;
}
