//! Retries, deadlines, bisection of rejected chunks, 401 and an unreachable API.

use kksync::sandbox::SandboxConfig;
use serde_json::json;

use crate::util::{
    KEY, TestDir, api_post, column, control, kksync, orders_csv, parse_csv, sandbox, statuses,
    sync, sync_with_env,
};

#[tokio::test(flavor = "multi_thread")]
async fn lock_errors_are_retried_until_success() {
    let dir = TestDir::new();
    let path = dir.write("orders.csv", orders_csv(300, true));
    let sandbox = sandbox(SandboxConfig {
        lock_error_rate: 0.5,
        seed: 11,
        ..SandboxConfig::default()
    })
    .await;

    let run = sync(&path, &sandbox, &[]).await;
    run.expect_code(0);

    let stats = sandbox.stats();
    assert!(stats.faults.lock > 0, "the sandbox injected lock errors");
    assert_eq!(
        stats.requests_total,
        3 + stats.faults.lock,
        "one retry per lock error, nothing else"
    );
    assert!(
        statuses(&dir.read("orders.csv"), b';')
            .iter()
            .all(|s| s == "UNPAID")
    );
    assert!(
        run.stderr
            .contains(&format!("({} retries)", stats.faults.lock)),
        "{}",
        run.stderr
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_resets_and_stalls_are_retried() {
    let dir = TestDir::new();
    let path = dir.write("orders.csv", orders_csv(400, false));
    let config = SandboxConfig {
        server_error_rate: 0.2,
        reset_rate: 0.2,
        stall_rate: 0.2,
        stall_duration: std::time::Duration::from_secs(3),
        seed: 5,
        ..SandboxConfig::default()
    };
    let sandbox = sandbox(config).await;

    sync(
        &path,
        &sandbox,
        &["--chunk-size", "20", "--request-timeout", "1s"],
    )
    .await
    .expect_code(0);

    let stats = sandbox.stats();
    assert!(stats.faults.server_error + stats.faults.reset + stats.faults.stall > 0);
    assert!(
        statuses(&dir.read("orders.csv"), b',')
            .iter()
            .all(|s| s == "UNPAID")
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_lock_fails_only_its_chunk_at_the_deadline() {
    let dir = TestDir::new();
    let path = dir.write("orders.csv", orders_csv(300, true));
    let sandbox = sandbox(SandboxConfig::default()).await;
    control(&sandbox, "lock/T-00150", json!({})).await;

    let run = sync(&path, &sandbox, &["--deadline", "2s"]).await;
    run.expect_code(3);

    let (header, rows) = parse_csv(&dir.read("orders.csv"), b';');
    let errors = column(&header, &rows, "syncError");
    let statuses = column(&header, &rows, "paymentStatus");
    for i in 0..300 {
        if (100..200).contains(&i) {
            assert!(
                errors[i].starts_with("gave up after "),
                "row {i}: {}",
                errors[i]
            );
            assert!(
                errors[i].ends_with("attempts: 400 Could not acquire lock"),
                "row {i}: {}",
                errors[i]
            );
            assert_eq!(statuses[i], "");
        } else {
            assert_eq!(
                (errors[i].as_str(), statuses[i].as_str()),
                ("", "UNPAID"),
                "row {i}"
            );
        }
    }
    sandbox.shutdown().await;
}

/// A chunk that never got a rate-limit permit before its deadline was reported as "gave up
/// after 0 attempts: no answer before the deadline" and counted as sent. Its rows now say it
/// was not sent and why, the summary does not count it as sent, and the next run sends it.
#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_the_rate_limit_starved_is_not_sent_and_is_sent_next_run() {
    let dir = TestDir::new();
    let path = dir.write("orders.csv", orders_csv(10, false));
    let sandbox = sandbox(SandboxConfig::default()).await;
    let (source, url) = (path.to_string_lossy().into_owned(), sandbox.base_url());
    let starved = [
        "sync",
        "--source",
        &source,
        "--api-url",
        &url,
        "--rate",
        "0.0000000001",
        "--deadline",
        "2s",
        "--chunk-size",
        "5",
        "--concurrency",
        "1",
    ];
    let run = kksync(&starved, &[("KOMFORTKASSE_API_KEY", KEY)]).await;
    run.expect_code(3);
    assert_eq!(
        sandbox.stats().post_orders.len(),
        1,
        "only the first chunk got a permit"
    );
    let sent = run
        .stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("sent "))
        .map(str::trim);
    assert_eq!(sent, Some("5"), "{}", run.stderr);

    let (header, rows) = parse_csv(&dir.read("orders.csv"), b',');
    let errors = column(&header, &rows, "syncError");
    let statuses = column(&header, &rows, "paymentStatus");
    for i in 0..10 {
        let expected = if i < 5 {
            ("", "UNPAID")
        } else {
            (
                "not sent: the rate limit allowed no attempt before the deadline",
                "",
            )
        };
        assert_eq!(
            (errors[i].as_str(), statuses[i].as_str()),
            expected,
            "row {i}"
        );
    }

    // Transient: the next run sends exactly those five.
    sync(&path, &sandbox, &[]).await.expect_code(0);
    let posts = sandbox.stats().post_orders;
    assert_eq!(posts.iter().map(|p| p.orders).collect::<Vec<_>>(), [5, 5]);
    let (header, rows) = parse_csv(&dir.read("orders.csv"), b',');
    assert!(
        column(&header, &rows, "syncError")
            .iter()
            .all(String::is_empty)
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_bad_order_among_a_hundred_is_isolated() {
    let dir = TestDir::new();
    let path = dir.write("orders.csv", orders_csv(100, true));
    let sandbox = sandbox(SandboxConfig::default()).await;
    control(
        &sandbox,
        "reject/T-00042",
        json!({"reason": "status no longer allows changes"}),
    )
    .await;

    sync(&path, &sandbox, &[]).await.expect_code(3);

    let (header, rows) = parse_csv(&dir.read("orders.csv"), b';');
    let errors = column(&header, &rows, "syncError");
    for (i, error) in errors.iter().enumerate() {
        if i == 42 {
            assert_eq!(
                error,
                "rejected by the API: Could not update order (status no longer allows changes)"
            );
        } else {
            assert_eq!(error, "", "row {i}");
        }
    }
    assert_eq!(sandbox.order_count(), 99);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_that_exists_already_is_resent_without_initial_dunning_level() {
    let dir = TestDir::new();
    let date = crate::util::recent_date(1);
    let mut csv =
        String::from("number,date,type,amount,currency,billing.countryCode,initialDunningLevel\n");
    for i in 0..10 {
        csv.push_str(&format!(
            "D-{i},{date},INVOICE,5.00,EUR,DE,{}\n",
            if i == 4 || i == 7 { "2" } else { "" }
        ));
    }
    let path = dir.write("orders.csv", &csv);
    let sandbox = sandbox(SandboxConfig::default()).await;
    // The shop sent D-4 before, by other means (or kksync's answer was lost): it exists
    // already, and the API refuses initialDunningLevel on it. D-7 is new and keeps it.
    let existing = json!([{"number": "D-4", "date": date, "type": "INVOICE", "amount": 5.0, "currency": "EUR", "billing": {"countryCode": "DE"}}]);
    api_post(&sandbox, "orders", Some(json!(existing))).await;

    let run = sync(&path, &sandbox, &[]).await;
    run.expect_code(0);
    let (header, rows) = parse_csv(&dir.read("orders.csv"), b',');
    assert!(
        column(&header, &rows, "syncError")
            .iter()
            .all(String::is_empty),
        "{}",
        run.stderr
    );
    assert!(
        column(&header, &rows, "paymentStatus")
            .iter()
            .all(|s| s == "UNPAID")
    );
    assert_eq!(sandbox.order_count(), 10);
    let stored = sandbox_order(&sandbox, "D-7").await;
    assert_eq!(stored["initialDunningLevel"], 2, "{stored}");

    // Converged: a second run sends nothing.
    let before = sandbox.stats().orders_received;
    sync(&path, &sandbox, &[]).await.expect_code(0);
    assert_eq!(sandbox.stats().orders_received, before);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_a_plugin_sent_before_cost_no_halving_of_the_orders_without_dunning_level() {
    let dir = TestDir::new();
    let date = crate::util::recent_date(1);
    let mut csv =
        String::from("number,date,type,amount,currency,billing.countryCode,initialDunningLevel\n");
    let mut existing = Vec::new();
    for i in 0..100 {
        let dunning = i % 10 == 3;
        csv.push_str(&format!(
            "P-{i},{date},INVOICE,5.00,EUR,DE,{}\n",
            if dunning { "1" } else { "" }
        ));
        if dunning {
            existing.push(json!({"number": format!("P-{i}"), "date": date, "type": "INVOICE", "amount": 5.0, "currency": "EUR", "billing": {"countryCode": "DE"}}));
        }
    }
    let path = dir.write("orders.csv", &csv);
    let sandbox = sandbox(SandboxConfig::default()).await;
    // A shop plugin sent the ten orders with a dunning level before.
    api_post(&sandbox, "orders", Some(json!(existing))).await;
    let before = sandbox.stats().post_orders.len();

    sync(&path, &sandbox, &[]).await.expect_code(0);
    // 1 refused chunk, 1 for the 90 others, 19 halving the ten, 10 resent as updates.
    let requests = sandbox.stats().post_orders.len() - before;
    assert!(requests <= 31, "{requests} POST /orders requests");
    assert!(
        statuses(&dir.read("orders.csv"), b',')
            .iter()
            .all(|s| s == "UNPAID")
    );
    sandbox.shutdown().await;
}

/// The order as the sandbox stores it (`GET /order/{number}`).
async fn sandbox_order(
    sandbox: &kksync::sandbox::SandboxHandle,
    number: &str,
) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{}/order/{number}", sandbox.base_url()))
        .header("X-Komfortkasse-API-Key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shop_whose_api_access_is_off_stops_the_run_and_is_synced_once_it_is_on() {
    let dir = TestDir::new();
    let original = orders_csv(300, true);
    let path = dir.write("orders.csv", &original);
    let sandbox = sandbox(SandboxConfig {
        shop_state: kksync::sandbox::ShopState::ApiInactive,
        ..SandboxConfig::default()
    })
    .await;

    let run = sync(&path, &sandbox, &["--concurrency", "4"]).await;
    run.expect_code(1);
    assert!(
        run.stderr.contains("API not active, contact support"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        original.as_bytes(),
        "source byte-identical: no order is marked rejected"
    );
    // No halving: the requests in flight when the first answer came, nothing after.
    let requests = sandbox.stats().requests_total;
    assert!((1..=5).contains(&requests), "{requests} requests");

    let response = reqwest::Client::new()
        .put(format!("{}/faults", sandbox.control_url()))
        .json(&json!({"shop_state": "active"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    sync(&path, &sandbox, &[]).await.expect_code(0);
    assert!(
        statuses(&dir.read("orders.csv"), b';')
            .iter()
            .all(|s| s == "UNPAID")
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthorized_stops_at_once_and_leaves_the_source_byte_identical() {
    let dir = TestDir::new();
    let original = orders_csv(500, true);
    let path = dir.write("orders.csv", &original);
    let sandbox = sandbox(SandboxConfig::default()).await;

    let run = sync_with_env(
        &path,
        &sandbox,
        &["--concurrency", "4"],
        &[("KOMFORTKASSE_API_KEY", "wrong-key")],
    )
    .await;
    run.expect_code(1);

    assert!(
        run.stderr.contains("Invalid authentication header"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("wrong-key"),
        "the key never appears in output"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        original.as_bytes(),
        "source byte-identical"
    );
    assert_eq!(
        dir.files(),
        [
            "orders.csv",
            "orders.csv.kksync.db",
            // The index of the rows read, when the reader got to the end before the stop.
            "orders.csv.kksync.db.rows",
            "orders.csv.kksync.lock"
        ]
        .iter()
        .filter(|f| dir.path(f).exists())
        .map(|f| f.to_string())
        .collect::<Vec<_>>(),
        "no temporary file left"
    );
    // The requests already in flight when the first 401 arrived may complete, but no new ones.
    let requests = sandbox.stats().requests_total;
    assert!((1..=4).contains(&requests), "{requests} requests");
    assert_eq!(sandbox.stats().orders_stored, 0);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_api_fails_the_run() {
    let dir = TestDir::new();
    let original = orders_csv(30, false);
    let path = dir.write("orders.csv", &original);
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let source = path.to_string_lossy().into_owned();
    let url = format!("http://127.0.0.1:{port}/api/v2");

    let run = kksync(
        &[
            "sync",
            "--source",
            &source,
            "--api-url",
            &url,
            "--rate",
            "100",
            "--deadline",
            "1s",
            "--chunk-size",
            "10",
        ],
        &[("KOMFORTKASSE_API_KEY", KEY)],
    )
    .await;
    run.expect_code(1);
    assert!(
        run.stderr.contains("could not be reached"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_left_out_of_a_200_reply_is_not_counted_as_synced() {
    let dir = TestDir::new();
    let path = dir.write("orders.csv", orders_csv(20, false));
    // In "skip" mode the sandbox stores the valid orders and silently leaves the bad one out of
    // its 200 reply, one of the two behaviours the vendor does not rule out.
    let config = SandboxConfig {
        partial_mode: kksync::sandbox::PartialMode::Skip,
        ..SandboxConfig::default()
    };
    let sandbox = sandbox(config).await;
    control(&sandbox, "reject/T-00007", json!({"reason": "skipped"})).await;

    sync(&path, &sandbox, &[]).await.expect_code(3);

    let (header, rows) = parse_csv(&dir.read("orders.csv"), b',');
    let errors = column(&header, &rows, "syncError");
    let statuses = column(&header, &rows, "paymentStatus");
    assert_eq!(
        errors[7],
        "not confirmed by the API: the order is missing from its reply"
    );
    assert_eq!(statuses[7], "");
    assert_eq!(errors.iter().filter(|e| !e.is_empty()).count(), 1);
    sandbox.shutdown().await;
}
