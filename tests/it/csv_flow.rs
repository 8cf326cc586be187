//! CSV round trips in both dialects, validation, dry runs.

use kksync::sandbox::SandboxConfig;

use crate::util::{TestDir, column, orders_csv, parse_csv, recent_date, sandbox, sync};

#[tokio::test(flavor = "multi_thread")]
async fn german_csv_round_trip_keeps_bom_columns_and_order() {
    let dir = TestDir::new();
    let path = dir.write("orders.csv", orders_csv(250, true));
    let sandbox = sandbox(SandboxConfig::default()).await;

    sync(&path, &sandbox, &[]).await.expect_code(0);

    let written = dir.read("orders.csv");
    assert!(written.starts_with('\u{feff}'), "BOM kept");
    let (header, rows) = parse_csv(&written, b';');
    assert_eq!(
        header
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}'))
            .collect::<Vec<_>>(),
        [
            "number",
            "date",
            "type",
            "amount",
            "currency",
            "billing.lastName",
            "billing.countryCode",
            "lagerort",
            "paymentStatus",
            "syncError"
        ]
    );
    assert_eq!(rows.len(), 250);
    let numbers = column(&header, &rows, "number");
    assert_eq!(
        numbers,
        (0..250).map(|i| format!("T-{i:05}")).collect::<Vec<_>>(),
        "row order kept"
    );
    assert_eq!(
        column(&header, &rows, "lagerort")[17],
        "Regal 17",
        "unknown column carried through"
    );
    assert_eq!(
        column(&header, &rows, "amount")[3],
        "13,03",
        "values kept as written"
    );
    assert!(
        column(&header, &rows, "paymentStatus")
            .iter()
            .all(|s| s == "UNPAID")
    );
    assert!(
        column(&header, &rows, "syncError")
            .iter()
            .all(String::is_empty)
    );
    for number in &numbers {
        assert_eq!(
            sandbox.order_status(number).as_deref(),
            Some("UNPAID"),
            "{number} stored"
        );
    }
    // 250 orders in chunks of at most 100: three requests.
    let stats = sandbox.stats();
    let sizes: Vec<u64> = stats.post_orders.iter().map(|p| p.orders).collect();
    assert_eq!(sizes.iter().sum::<u64>(), 250);
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 100));
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn comma_csv_second_run_writes_back_changed_statuses() {
    let dir = TestDir::new();
    let path = dir.write("orders.csv", orders_csv(120, false));
    let sandbox = sandbox(SandboxConfig {
        pay_rate: 1.0,
        seed: 9,
        ..SandboxConfig::default()
    })
    .await;

    sync(&path, &sandbox, &["--chunk-size", "50"])
        .await
        .expect_code(0);
    let changed = sandbox.tick();
    assert!(changed > 0);
    sync(&path, &sandbox, &["--chunk-size", "50"])
        .await
        .expect_code(0);

    let (header, rows) = parse_csv(&dir.read("orders.csv"), b',');
    let numbers = column(&header, &rows, "number");
    let statuses = column(&header, &rows, "paymentStatus");
    assert!(statuses.iter().any(|s| s != "UNPAID"), "{statuses:?}");
    for (number, status) in numbers.iter().zip(&statuses) {
        assert_eq!(
            sandbox.order_status(number).as_deref(),
            Some(status.as_str()),
            "{number}"
        );
    }
    // Columns are not added twice on the second run.
    assert_eq!(header.iter().filter(|h| *h == "paymentStatus").count(), 1);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_rows_are_reported_per_row_and_never_sent() {
    let dir = TestDir::new();
    let date = recent_date(2);
    let csv = format!(
        "number;date;dueDate;type;amount;currency;billing.countryCode\n\
         A-1;{date};;INVOICE;10,00;EUR;DE\n\
         A-2;31-02-2024;;INVOICE;10,00;EUR;DE\n\
         A-3;{date};;PAYPAL;10,00;EUR;DE\n\
         A-4;{date};;INVOICE;-5,00;EUR;DE\n\
         A-5;{date};;INVOICE;12,345;EUR;DE\n\
         A-6;{date};;INVOICE;10,00;EURO;DE\n\
         A-7;{date};;INVOICE;10,00;EUR;\n\
         A-1;{date};;INVOICE;11,00;EUR;DE\n\
         A-9;{future};;INVOICE;10,00;EUR;DE\n\
         A-10;{date};{far};INVOICE;10,00;EUR;DE\n\
         A-11;{date};;COD;0;EUR;AT\n",
        future = recent_date(-3),
        far = recent_date(-200),
    );
    let path = dir.write("orders.csv", csv);
    let sandbox = sandbox(SandboxConfig::default()).await;

    let run = sync(&path, &sandbox, &[]).await;
    run.expect_code(3);

    let (header, rows) = parse_csv(&dir.read("orders.csv"), b';');
    let errors = column(&header, &rows, "syncError");
    let expected = [
        "",
        "row 3: date \"31-02-2024\" is not a valid date",
        "row 4: type \"PAYPAL\" is not one of INVOICE, PREPAYMENT, COD, OTHER",
        "row 5: amount \"-5,00\" must not be negative",
        "row 6: amount \"12,345\" has more than two decimal places",
        "row 7: currency \"EURO\" is not a three-letter currency code",
        "row 8: billing.countryCode is missing",
        "row 9: number \"A-1\" appears more than once in this run",
        "row 10: date",
        "row 11: dueDate",
        "",
    ];
    for (i, (error, want)) in errors.iter().zip(expected).enumerate() {
        assert!(
            error.starts_with(want) && (want.is_empty() == error.is_empty()),
            "row {}: {error:?} should start with {want:?}",
            i + 2
        );
    }
    assert!(errors[8].contains("is in the future"), "{}", errors[8]);
    assert!(errors[9].contains("more than 6 months"), "{}", errors[9]);
    // Only the two valid orders reached the API, and the duplicate did not overwrite A-1.
    assert_eq!(sandbox.stats().orders_received, 2);
    assert_eq!(
        sandbox.order_status("A-11").as_deref(),
        Some("PAID"),
        "amount 0 counts as paid"
    );
    assert!(run.stderr.contains("rejected      9"), "{}", run.stderr);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_sends_and_writes_nothing() {
    let dir = TestDir::new();
    let original = orders_csv(130, true);
    let path = dir.write("orders.csv", &original);
    let sandbox = sandbox(SandboxConfig::default()).await;
    let source = path.to_string_lossy().into_owned();
    let url = sandbox.base_url();

    // No key needed for a dry run.
    let run = crate::util::kksync(
        &["sync", "--source", &source, "--api-url", &url, "--dry-run"],
        &[],
    )
    .await;
    run.expect_code(0);

    assert_eq!(dir.read("orders.csv"), original, "source untouched");
    assert_eq!(dir.files(), ["orders.csv"], "no temporary files left");
    assert_eq!(sandbox.stats().requests_total, 0);
    let chunks: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("chunk JSON"))
        .collect();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].as_array().map(Vec::len), Some(100));
    assert_eq!(chunks[0][3]["amount"].to_string(), "13.03");
    assert_eq!(chunks[1][29]["number"], "T-00129");
    // The summary counts the orders printed above (it said "would send 0").
    assert_eq!(would_send(&run.stderr), 130, "{}", run.stderr);

    // After a real run only what changed would be sent, and the count says so.
    crate::util::sync(&path, &sandbox, &[]).await.expect_code(0);
    let synced = dir.read("orders.csv");
    dir.write("orders.csv", synced.replacen(";17,07;", ";17,08;", 1));
    let run = crate::util::kksync(
        &["sync", "--source", &source, "--api-url", &url, "--dry-run"],
        &[],
    )
    .await;
    run.expect_code(0);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert_eq!(would_send(&run.stderr), 1, "{}", run.stderr);
    sandbox.shutdown().await;
}

/// The count on the summary's `would send` line.
fn would_send(summary: &str) -> u64 {
    summary
        .lines()
        .find_map(|line| line.trim().strip_prefix("would send"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `would send` line in {summary}"))
}

/// Duplicates far apart in an unsorted file are settled exactly: the first *valid* row of a
/// number is sent, every later valid row with it is rejected, an invalid row does not count.
#[tokio::test(flavor = "multi_thread")]
async fn duplicates_anywhere_in_an_unsorted_file_reject_only_the_later_rows() {
    let dir = TestDir::new();
    let date = recent_date(2);
    let mut csv = String::from("number,date,type,amount,currency,billing.countryCode\n");
    let rows = [
        ("B-2", date.as_str(), "10.00"),
        ("A-1", "31-02-2024", "10.00"),
        ("C-3", date.as_str(), "10.00"),
        ("A-1", date.as_str(), "10.00"),
        ("Z-9", date.as_str(), "10.00"),
        ("B-2", date.as_str(), "0"),
        ("A-1", date.as_str(), "0"),
        ("D-4", date.as_str(), "10.00"),
        ("D-4", date.as_str(), "0"),
    ];
    for (number, date, amount) in rows {
        csv.push_str(&format!("{number},{date},INVOICE,{amount},EUR,DE\n"));
    }
    let path = dir.write("orders.csv", csv);
    let sandbox = sandbox(SandboxConfig::default()).await;

    sync(&path, &sandbox, &[]).await.expect_code(3);

    let (header, rows) = parse_csv(&dir.read("orders.csv"), b',');
    let errors = column(&header, &rows, "syncError");
    let duplicate = "appears more than once in this run";
    let rejected: Vec<(usize, bool)> = errors
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.is_empty())
        .map(|(i, e)| (i + 2, e.contains(duplicate)))
        .collect();
    assert_eq!(
        rejected,
        [(3, false), (7, true), (8, true), (10, true)],
        "{errors:?}"
    );
    assert_eq!(sandbox.stats().orders_received, 5);
    // The rows with amount 0 (which the sandbox counts as paid) were not the ones sent.
    for number in ["A-1", "B-2", "D-4"] {
        assert_eq!(sandbox.order_status(number).as_deref(), Some("UNPAID"));
    }
    sandbox.shutdown().await;
}
