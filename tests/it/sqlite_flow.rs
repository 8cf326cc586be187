//! SQLite round trip: init-db, sync, results in payment_status / sync_error / synced_at.

use kksync::sandbox::SandboxConfig;
use rusqlite::Connection;

use crate::util::{TestDir, kksync, recent_date, sandbox, sync};

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
