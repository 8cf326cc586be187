//! `kksync refunds` end to end: the real binary against the sandbox's Komfortkasse, AfterPay and
//! Ratepay, including a SIGKILL between sending a refund and writing it back.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kksync::sandbox::{SandboxConfig, SandboxHandle};
use serde_json::{Value, json};

use crate::util::{KEY, Run, TestDir, column, kksync, parse_csv, sandbox, set_faults};

const CLIENT_ID: &str = "shop-client-1";
/// A Ratepay transaction id (20–127 characters).
const TX: &str = "tx-0000-1111-2222-3333";

fn root(sandbox: &SandboxHandle) -> String {
    sandbox
        .control_url()
        .trim_end_matches("/_sandbox")
        .to_string()
}

/// The arguments of a refunds run against the sandbox, with fast limits.
fn args(source: &Path, sandbox: &SandboxHandle, extra: &[&str]) -> Vec<String> {
    let root = root(sandbox);
    let mut args: Vec<String> = vec![
        "refunds".into(),
        "--source".into(),
        source.to_string_lossy().into_owned(),
        "--api-url".into(),
        sandbox.base_url(),
        "--afterpay-url".into(),
        format!("{root}/afterpay"),
        "--ratepay-url".into(),
        format!("{root}/ratepay"),
        "--ratepay-token-url".into(),
        format!("{root}/ratepay/oauth/token"),
        "--ratepay-client-id".into(),
        CLIENT_ID.into(),
        "--rate".into(),
        "1000".into(),
        "--burst".into(),
        "20".into(),
        // AfterPay's pause before a read-back, shortened for tests.
        "--afterpay-settle".into(),
        "200ms".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The three providers' credentials (all the sandbox key).
const CREDENTIALS: [(&str, &str); 3] = [
    ("KOMFORTKASSE_API_KEY", KEY),
    ("AFTERPAY_API_KEY", KEY),
    ("RATEPAY_CLIENT_SECRET", KEY),
];

async fn refunds(source: &Path, sandbox: &SandboxHandle, extra: &[&str]) -> Run {
    let args = args(source, sandbox, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kksync(&args, &CREDENTIALS).await
}

/// Runs `kksync refunds` with `KKSYNC_TEST_PAUSE_AT=point`, waits until it reports the pause, and
/// kills it with SIGKILL there.
async fn kill_at(source: &Path, sandbox: &SandboxHandle, point: &str) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kksync"));
    command
        .args(args(source, sandbox, &[]))
        .envs(CREDENTIALS)
        .env("KKSYNC_TEST_PAUSE_AT", point)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let point = point.to_string();
    let (seen, output) = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("kksync starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut seen = false;
        let mut output = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            output.push_str(&line);
            output.push('\n');
            if line.contains(&format!("paused at {point}")) {
                seen = true;
                break;
            }
        }
        // SIGKILL: no destructor, no signal handler, nothing written back.
        let _ = child.kill();
        let _ = child.wait();
        (seen, output)
    })
    .await
    .expect("join");
    assert!(seen, "the run never reached the pause point:\n{output}");
}

async fn post(url: &str, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn get(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// A Komfortkasse order (via the API), optionally with a payment.
async fn kk_order(sandbox: &SandboxHandle, number: &str, amount: &str, paid: Option<&str>) {
    let order = json!({
        "number": number,
        "date": crate::util::recent_date(5),
        "type": "PREPAYMENT",
        "amount": amount.parse::<f64>().expect("amount"),
        "currency": "EUR",
        "billing": {"lastName": "Müller", "countryCode": "DE"},
    });
    let url = format!("{}/order/{number}", sandbox.base_url());
    let (status, _) = post(&url, order, &[("X-Komfortkasse-API-Key", KEY)]).await;
    assert_eq!(status, 200, "order {number}");
    if let Some(paid) = paid {
        let url = format!("{}/pay/{number}", sandbox.control_url());
        assert_eq!(post(&url, json!({ "amount": paid }), &[]).await.0, 200);
    }
}

async fn afterpay_order(sandbox: &SandboxHandle, number: &str, capture: &str, amount: &str) {
    let url = format!("{}/afterpay/orders/{number}", sandbox.control_url());
    let body =
        json!({"currency": "EUR", "captures": [{"captureNumber": capture, "amount": amount}]});
    assert_eq!(post(&url, body, &[]).await.0, 200);
}

async fn ratepay_transaction(sandbox: &SandboxHandle, id: &str, captured: &str, legal_block: bool) {
    let url = format!("{}/ratepay/transactions/{id}", sandbox.control_url());
    let body = json!({"currency": "EUR", "captured_amount": captured, "legal_block": legal_block});
    assert_eq!(post(&url, body, &[]).await.0, 200);
}

/// Every refund the sandbox's providers hold.
async fn provider_refunds(sandbox: &SandboxHandle) -> Value {
    get(&format!("{}/refunds", sandbox.control_url())).await
}

async fn count(sandbox: &SandboxHandle, provider: &str) -> usize {
    provider_refunds(sandbox).await[provider]
        .as_array()
        .map_or(0, Vec::len)
}

fn route_count(sandbox: &SandboxHandle, route: &str) -> u64 {
    sandbox
        .stats()
        .requests_by_route
        .get(route)
        .copied()
        .unwrap_or(0)
}

const KK_POST: &str = "POST /order/{number}/refund";
const AP_POST: &str = "POST /afterpay/api/v3/orders/{number}/refunds";
const RP_POST: &str = "POST /ratepay/v2/transactions/{id}/refunds";

/// A CSV cell, quoted when needed.
fn cell(value: &str, delimiter: char) -> String {
    if value.contains([delimiter, '"', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// The columns of the test CSVs: the refund columns plus a column of the shop's own.
const HEADER: [&str; 12] = [
    "orderNumber",
    "externalReference",
    "amount",
    "currency",
    "provider",
    "plannedDate",
    "captureNumber",
    "transactionId",
    "items",
    "specialItems",
    "vats",
    "lager",
];

/// One row of a test CSV.
#[derive(Debug, Clone)]
struct Row([String; 12]);

impl Row {
    fn new(provider: &str, order: &str, reference: &str, amount: &str) -> Row {
        let mut values: [String; 12] = Default::default();
        values[0] = order.into();
        values[1] = reference.into();
        values[2] = amount.into();
        values[3] = "EUR".into();
        values[4] = provider.into();
        Row(values)
    }

    /// Sets a column by its header name.
    fn with(mut self, column: &str, value: &str) -> Row {
        let index = HEADER
            .iter()
            .position(|h| *h == column)
            .unwrap_or_else(|| panic!("no column {column}"));
        self.0[index] = value.into();
        self
    }
}

fn kk(order: &str, reference: &str, amount: &str) -> Row {
    Row::new("komfortkasse", order, reference, amount)
}

fn ap(order: &str, reference: &str, amount: &str, capture: &str) -> Row {
    Row::new("afterpay", order, reference, amount)
        .with("captureNumber", capture)
        .with("items", AP_ITEMS)
}

fn rp(order: &str, reference: &str, amount: &str, transaction: &str) -> Row {
    Row::new("ratepay", order, reference, amount).with("transactionId", transaction)
}

/// A refunds CSV with the header above.
fn refunds_csv(rows: &[Row], delimiter: char) -> String {
    let mut text = HEADER.join(&delimiter.to_string());
    text.push('\n');
    for row in rows {
        let cells: Vec<String> = row.0.iter().map(|v| cell(v, delimiter)).collect();
        text.push_str(&cells.join(&delimiter.to_string()));
        text.push('\n');
    }
    text
}

/// One value per row of a written-back CSV.
fn col(text: &str, delimiter: u8, name: &str) -> Vec<String> {
    let (header, rows) = parse_csv(text, delimiter);
    column(&header, &rows, name)
}

fn date_in(days: i64) -> time::Date {
    kksync::dates::berlin_today() + time::Duration::days(days)
}

const AP_ITEMS: &str = r#"[{"productId":"TS-42","description":"Trail shirt","netUnitPrice":10.00,"grossUnitPrice":11.90,"quantity":2,"vatPercent":19,"vatAmount":1.90,"refundType":"Return"},{"productId":"SHIP","description":"Versand","type":"ShippingFee","netUnitPrice":4.20,"grossUnitPrice":5.00,"quantity":1,"vatPercent":19,"vatAmount":0.80}]"#;

// ---------------------------------------------------------------------------------------------
// Komfortkasse
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn komfortkasse_refunds_are_written_back_and_refreshed_until_final() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    kk_order(&sandbox, "K-1", "50.00", Some("50.00")).await;
    kk_order(&sandbox, "K-2", "20.00", None).await;
    let planned = date_in(30);
    let rows = [
        kk("K-1", "RMA-K1", "12,50").with("lager", "Regal 1"),
        kk("K-2", "RMA-K2", "5")
            .with("currency", "eur")
            .with("provider", "Komfortkasse")
            .with("plannedDate", &planned.to_string())
            .with("lager", "Regal; 2"),
    ];
    let path = dir.write(
        "refunds.csv",
        format!("\u{feff}{}", refunds_csv(&rows, ';')),
    );

    refunds(&path, &sandbox, &[]).await.expect_code(0);
    let text = dir.read("refunds.csv");
    assert!(text.starts_with('\u{feff}'), "BOM kept");
    let ids = col(&text, b';', "refundId");
    assert!(ids.iter().all(|id| !id.is_empty()), "{text}");
    let references = col(&text, b';', "refundReferenceNumber");
    assert!(references.iter().all(|r| r.starts_with("KKBT")), "{text}");
    assert!(col(&text, b';', "refundError").iter().all(String::is_empty));
    assert!(
        col(&text, b';', "refundSentAt")
            .iter()
            .all(|s| s.ends_with('Z'))
    );
    assert_eq!(col(&text, b';', "lager"), ["Regal 1", "Regal; 2"]);
    assert_eq!(
        col(&text, b';', "amount"),
        ["12,50", "5"],
        "other columns untouched"
    );
    for status in col(&text, b';', "refundStatus") {
        assert!(
            matches!(status.as_str(), "NEW" | "BANKDETAILS_MISSING"),
            "{status}"
        );
    }
    // The default planned date is today + 7 days; a given one is sent as given.
    let held = provider_refunds(&sandbox).await["komfortkasse"].clone();
    let held = held.as_array().unwrap();
    assert_eq!(held.len(), 2);
    let by_ref = |r: &str| {
        held.iter()
            .find(|x| x["externalReference"] == r)
            .unwrap()
            .clone()
    };
    let api_date = kksync::dates::format_api_date;
    assert_eq!(by_ref("RMA-K1")["plannedDate"], api_date(date_in(7)));
    assert_eq!(by_ref("RMA-K1")["amount"], json!(12.5));
    assert_eq!(by_ref("RMA-K2")["plannedDate"], api_date(planned));
    assert_eq!(by_ref("RMA-K1")["id"].as_str(), Some(ids[0].as_str()));

    // The bank works through the refunds; later runs read their status, never send again.
    for _ in 0..3 {
        sandbox.tick();
    }
    refunds(&path, &sandbox, &[]).await.expect_code(0);
    let text = dir.read("refunds.csv");
    assert_eq!(col(&text, b';', "refundStatus"), ["PROCESSED", "PROCESSED"]);
    assert_eq!(col(&text, b';', "refundId"), ids);
    assert_eq!(route_count(&sandbox, KK_POST), 2);

    // Final statuses are not read again, and an unchanged file is not rewritten.
    let reads = route_count(&sandbox, "GET /order/{number}");
    refunds(&path, &sandbox, &[]).await.expect_code(0);
    assert_eq!(route_count(&sandbox, "GET /order/{number}"), reads);
    assert_eq!(dir.read("refunds.csv"), text);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn komfortkasse_rows_that_must_not_be_sent_are_rejected_with_reasons() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    kk_order(&sandbox, "K-3", "10.00", None).await;
    kk_order(&sandbox, "K-4", "10.00", Some("35.00")).await;
    let today = date_in(0).to_string();
    let yesterday = kksync::dates::format_api_date(date_in(-1));
    let rows = [
        kk("K-3", "R-zero", "0"),
        kk("K-3", "R-neg", "-1,00"),
        kk("K-3", "R-cap", "20,01"),
        kk("K-3", "R-chf", "1").with("currency", "CHF"),
        kk("K-3", "R-today", "1").with("plannedDate", &today),
        kk("K-3", "R-past", "1").with("plannedDate", &yesterday),
        kk("K-404", "R-unknown", "1"),
        kk("K-3", "R-ok", "20,00"),
        kk("K-3", "R-ok", "1"),
        kk("", "R-noorder", "1"),
        kk("K-4", "R-paid", "30"),
        kk("K-3", "R-items", "1").with("items", "[]"),
    ];
    let path = dir.write("refunds.csv", refunds_csv(&rows, ','));
    let run = refunds(&path, &sandbox, &[]).await;
    run.expect_code(3);
    let errors = col(&dir.read("refunds.csv"), b',', "refundError");
    let expected = [
        "amount \"0\" must be greater than zero",
        "amount \"-1,00\" must be greater than zero",
        "exceeds the most Komfortkasse refunds for order K-3 (20.00",
        "currency CHF differs from the order's currency EUR",
        "must be in the future",
        "must be in the future",
        "order K-404 not found at Komfortkasse",
        "",
        "appears more than once",
        "orderNumber is missing",
        "",
        "items are not sent to komfortkasse",
    ];
    assert_eq!(errors.len(), expected.len());
    for (i, (error, wanted)) in errors.iter().zip(expected).enumerate() {
        if wanted.is_empty() {
            assert_eq!(error, "", "row {}", i + 2);
        } else {
            assert!(
                error.contains(wanted),
                "row {}: {error:?} lacks {wanted:?}",
                i + 2
            );
        }
    }
    // Only the two valid refunds reached Komfortkasse (twice the order amount, and the amount
    // paid where that is higher).
    assert_eq!(route_count(&sandbox, KK_POST), 2);
    assert_eq!(count(&sandbox, "komfortkasse").await, 2);
    assert!(run.stderr.contains("rejected  10"), "{}", run.stderr);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn komfortkasse_lock_errors_resets_and_500s_are_retried() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig {
        seed: 21,
        ..SandboxConfig::default()
    })
    .await;
    let mut rows = Vec::new();
    for i in 0..6 {
        let order = format!("KR-{i}");
        kk_order(&sandbox, &order, "40.00", None).await;
        // A fixed planned date keeps the requests, and so the seeded faults, the same every day.
        rows.push(kk(&order, &format!("RMA-R{i}"), "7,50").with("plannedDate", "2099-01-01"));
    }
    let path = dir.write("refunds.csv", refunds_csv(&rows, ','));
    set_faults(
        &sandbox,
        json!({"lock_error_rate": 0.3, "server_error_rate": 0.15, "reset_rate": 0.1}),
    )
    .await;
    let run = refunds(&path, &sandbox, &["--max-attempts", "12"]).await;
    run.expect_code(0);
    let faults = sandbox.stats().faults;
    assert!(
        faults.lock > 0 && faults.server_error + faults.reset > 0,
        "{faults:?}"
    );
    assert_eq!(count(&sandbox, "komfortkasse").await, 6);
    let text = dir.read("refunds.csv");
    assert!(
        col(&text, b',', "refundId").iter().all(|id| !id.is_empty()),
        "{text}"
    );
    assert!(!run.stderr.contains("(0 retries)"), "{}", run.stderr);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn komfortkasse_existing_reference_resolves_to_the_existing_refund() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    kk_order(&sandbox, "K-5", "30.00", None).await;
    // Someone (another tool, a lost state store) created this refund already.
    let url = format!("{}/order/K-5/refund", sandbox.base_url());
    let body = json!({"externalReference": "RMA-5", "amount": 3.00, "currency": "EUR", "plannedDate": "01-01-2099"});
    let (status, existing) = post(&url, body, &[("X-Komfortkasse-API-Key", KEY)]).await;
    assert_eq!(status, 200);
    let path = dir.write("refunds.csv", refunds_csv(&[kk("K-5", "RMA-5", "3")], ','));
    refunds(&path, &sandbox, &[]).await.expect_code(0);
    let text = dir.read("refunds.csv");
    assert_eq!(
        col(&text, b',', "refundId"),
        [existing["id"].as_str().unwrap()]
    );
    assert_eq!(count(&sandbox, "komfortkasse").await, 1);
    assert_eq!(
        route_count(&sandbox, KK_POST),
        1,
        "kksync did not send it again"
    );
    sandbox.shutdown().await;
}

/// The client side of `Refund already exists: <ref>` (a race the pre-read cannot rule out).
#[tokio::test(flavor = "multi_thread")]
async fn komfortkasse_duplicate_answer_is_recognised_by_the_client() {
    use kksync::refunds::komfortkasse::{Created, KkClient};
    let sandbox = sandbox(SandboxConfig::default()).await;
    kk_order(&sandbox, "K-6", "30.00", None).await;
    let base = kksync::config::parse_api_url(&sandbox.base_url()).unwrap();
    let key = kksync::secret::Secret::new(KEY);
    let client = KkClient::new(base, &key, Duration::from_secs(10)).unwrap();
    let body = r#"{"externalReference":"RMA-6","amount":2.00,"currency":"EUR","plannedDate":"01-01-2099"}"#;
    let first = client.create_refund("K-6", body).await;
    assert!(matches!(first, Ok(Created::Refund(_))), "{first:?}");
    assert_eq!(
        client.create_refund("K-6", body).await,
        Ok(Created::AlreadyExists(
            "Refund already exists: RMA-6".into()
        ))
    );
    let order = client.get_order("K-6").await.unwrap().unwrap();
    assert!(order.refund("RMA-6").is_some());
    assert!(client.get_order("K-nope").await.unwrap().is_none());
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn komfortkasse_sigkill_between_send_and_write_back_leaves_exactly_one_refund() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    kk_order(&sandbox, "K-7", "30.00", None).await;
    let original = refunds_csv(&[kk("K-7", "RMA-7", "9,99").with("lager", "x")], ',');
    let path = dir.write("refunds.csv", &original);

    kill_at(&path, &sandbox, "refund-sent").await;
    assert_eq!(
        count(&sandbox, "komfortkasse").await,
        1,
        "the refund was sent"
    );
    assert_eq!(dir.read("refunds.csv"), original, "but not written back");

    let run = refunds(&path, &sandbox, &[]).await;
    run.expect_code(0);
    let held = provider_refunds(&sandbox).await["komfortkasse"].clone();
    assert_eq!(held.as_array().unwrap().len(), 1, "exactly one refund");
    assert_eq!(route_count(&sandbox, KK_POST), 1, "the re-run looked it up");
    let text = dir.read("refunds.csv");
    assert_eq!(
        col(&text, b',', "refundId"),
        [held[0]["id"].as_str().unwrap()]
    );
    assert!(run.stderr.contains("existing  1"), "{}", run.stderr);
    sandbox.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// AfterPay
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn afterpay_refund_is_written_back_with_its_refund_number() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    afterpay_order(&sandbox, "A-1", "C-1", "100.00").await;
    let rows = [ap("A-1", "RMA-A1", "28,80", "C-1").with("lager", "lager")];
    let path = dir.write("refunds.csv", refunds_csv(&rows, ';'));
    refunds(&path, &sandbox, &[]).await.expect_code(0);
    let text = dir.read("refunds.csv");
    let held = provider_refunds(&sandbox).await["afterpay"].clone();
    let held = held.as_array().unwrap().clone();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["amount"], json!(28.8));
    assert_eq!(held[0]["captureNumber"], "C-1");
    assert_eq!(held[0]["transactionReference"], "RMA-A1");
    assert_eq!(held[0]["refundItems"][0]["productId"], "TS-42");
    let number = held[0]["refundNumber"].as_str().unwrap();
    assert_eq!(col(&text, b';', "refundId"), [number]);
    assert_eq!(col(&text, b';', "refundStatus"), ["REFUNDED"]);
    assert_eq!(
        col(&text, b';', "items"),
        [AP_ITEMS],
        "the items cell is kept"
    );

    // A re-run sends nothing.
    refunds(&path, &sandbox, &[]).await.expect_code(0);
    assert_eq!(route_count(&sandbox, AP_POST), 1);
    assert_eq!(dir.read("refunds.csv"), text);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn afterpay_invalid_rows_and_provider_refusals_are_reported_readably() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    afterpay_order(&sandbox, "A-2", "C-2", "20.00").await;
    let big = AP_ITEMS.replace(r#""quantity":2"#, r#""quantity":20"#);
    let rows = [
        ap("A-2", "AP-nocapture", "28,80", "").with("captureNumber", ""),
        ap("A-2", "AP-noitems", "28,80", "C-2").with("items", ""),
        ap("A-2", "AP-sum", "30,00", "C-2"),
        ap("A-2", "AP-zero", "0", "C-2"),
        ap("A-2", "AP-usd", "28,80", "C-2").with("currency", "USD"),
        ap("A-2", "AP-date", "28,80", "C-2").with("plannedDate", "2099-01-01"),
        ap("A-2", "AP-json", "28,80", "C-2").with("items", "[{\"productID\":1}]"),
        ap("A-2", "AP-capture", "28,80", "C-9"),
        ap("A-2", "AP-over", "243,00", "C-2").with("items", &big),
        ap("A-404", "AP-order", "28,80", "C-2"),
    ];
    let path = dir.write("refunds.csv", refunds_csv(&rows, ';'));
    refunds(&path, &sandbox, &[]).await.expect_code(3);
    let errors = col(&dir.read("refunds.csv"), b';', "refundError");
    let expected = [
        "captureNumber is missing (required for afterpay)",
        "items are missing (required for afterpay",
        "amount 30.00 is not the total of the items",
        "amount \"0\" must be greater than zero",
        "currency \"USD\" is not supported by afterpay",
        "plannedDate belongs to komfortkasse refunds",
        "unknown field `productID`",
        "rejected by AfterPay: 400.201 Capture not found (field captureNumber)",
        "rejected by AfterPay: 400.200 Refund amount exceeds capture amount",
        "AfterPay: order A-404 not found",
    ];
    for (error, wanted) in errors.iter().zip(expected) {
        assert!(error.contains(wanted), "{error:?} lacks {wanted:?}");
    }
    assert_eq!(
        route_count(&sandbox, AP_POST),
        3,
        "invalid rows were never sent"
    );
    assert_eq!(count(&sandbox, "afterpay").await, 0);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn afterpay_resets_and_500s_are_retried_without_refunding_twice() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig {
        seed: 9,
        ..SandboxConfig::default()
    })
    .await;
    let mut rows = Vec::new();
    for i in 0..5 {
        let (order, capture) = (format!("AR-{i}"), format!("CR-{i}"));
        afterpay_order(&sandbox, &order, &capture, "50.00").await;
        rows.push(ap(&order, &format!("RMA-AR{i}"), "28,80", &capture));
    }
    let path = dir.write("refunds.csv", refunds_csv(&rows, ','));
    set_faults(
        &sandbox,
        json!({"server_error_rate": 0.25, "reset_rate": 0.25}),
    )
    .await;
    let run = refunds(&path, &sandbox, &["--max-attempts", "12"]).await;
    run.expect_code(0);
    let faults = sandbox.stats().faults;
    assert!(faults.reset > 0 && faults.server_error > 0, "{faults:?}");
    let held = provider_refunds(&sandbox).await["afterpay"].clone();
    let held = held.as_array().unwrap();
    assert_eq!(held.len(), 5, "one refund per row: {held:#?}");
    let text = dir.read("refunds.csv");
    assert!(
        col(&text, b',', "refundId").iter().all(|id| !id.is_empty()),
        "{text}"
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn afterpay_duplicate_reference_resolves_to_the_existing_refund() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    afterpay_order(&sandbox, "A-3", "C-3", "100.00").await;
    let row = ap("A-3", "RMA-A3", "28,80", "C-3");
    let path = dir.write("refunds.csv", refunds_csv(&[row.clone(), row.clone()], ','));
    refunds(&path, &sandbox, &[]).await.expect_code(3);
    let text = dir.read("refunds.csv");
    assert!(col(&text, b',', "refundError")[1].contains("appears more than once"));
    assert_eq!(count(&sandbox, "afterpay").await, 1);

    // The state store is lost and the row forgot its result: the refund is found by its
    // reference, not sent again.
    std::fs::remove_file(dir.path("refunds.csv.kksync.db")).unwrap();
    let path = dir.write("refunds.csv", refunds_csv(&[row], ','));
    refunds(&path, &sandbox, &[]).await.expect_code(0);
    let held = provider_refunds(&sandbox).await["afterpay"].clone();
    assert_eq!(held.as_array().unwrap().len(), 1);
    let number = held[0]["refundNumber"].as_str().unwrap();
    assert_eq!(col(&dir.read("refunds.csv"), b',', "refundId"), [number]);
    assert_eq!(route_count(&sandbox, AP_POST), 1);

    // The same reference with another provider would be a second refund of the same return.
    let path = dir.write(
        "refunds.csv",
        refunds_csv(&[rp("A-3", "RMA-A3", "28,80", TX)], ','),
    );
    refunds(&path, &sandbox, &[]).await.expect_code(3);
    let errors = col(&dir.read("refunds.csv"), b',', "refundError");
    assert!(
        errors[0].contains("already names a refund with afterpay (done)"),
        "{errors:?}"
    );
    assert_eq!(route_count(&sandbox, RP_POST), 0);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn afterpay_sigkill_between_send_and_write_back_leaves_exactly_one_refund() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    afterpay_order(&sandbox, "A-4", "C-4", "100.00").await;
    let original = refunds_csv(&[ap("A-4", "RMA-A4", "28,80", "C-4")], ',');
    let path = dir.write("refunds.csv", &original);
    kill_at(&path, &sandbox, "refund-sent").await;
    assert_eq!(count(&sandbox, "afterpay").await, 1);
    assert_eq!(dir.read("refunds.csv"), original);

    refunds(&path, &sandbox, &[]).await.expect_code(0);
    let held = provider_refunds(&sandbox).await["afterpay"].clone();
    assert_eq!(
        held.as_array().unwrap().len(),
        1,
        "exactly one refund at AfterPay"
    );
    assert_eq!(route_count(&sandbox, AP_POST), 1);
    let number = held[0]["refundNumber"].as_str().unwrap();
    assert_eq!(col(&dir.read("refunds.csv"), b',', "refundId"), [number]);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_after_recording_writes_back_from_the_journal_without_asking_the_provider() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    afterpay_order(&sandbox, "A-5", "C-5", "100.00").await;
    let original = refunds_csv(&[ap("A-5", "RMA-A5", "28,80", "C-5")], ',');
    let path = dir.write("refunds.csv", &original);
    kill_at(&path, &sandbox, "refund-recorded").await;
    assert_eq!(dir.read("refunds.csv"), original);
    let requests = sandbox.stats().requests_total;

    refunds(&path, &sandbox, &[]).await.expect_code(0);
    assert_eq!(
        sandbox.stats().requests_total,
        requests,
        "the journal knew the result"
    );
    assert_eq!(count(&sandbox, "afterpay").await, 1);
    let text = dir.read("refunds.csv");
    assert_eq!(col(&text, b',', "refundStatus"), ["REFUNDED"]);
    sandbox.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Ratepay
// ---------------------------------------------------------------------------------------------

const RP_ITEMS: &str = r#"[{"article_number":"kitchen-utils-1","name":"fruit knife","quantity":2,"gross_unit_price":18.45,"gross_unit_discount":-1.55,"gross_total_price":33.8,"tax_rate":19,"unit":"piece"}]"#;
const RP_SPECIAL: &str = r#"[{"article_number":"ship","gross_unit_price":4.95,"type":"SHIPPING"},{"article_number":"fee","gross_unit_price":-2.00,"type":"RETURN_FEE"}]"#;
const RP_VATS: &str = r#"[{"net_amount":31.68,"tax_amount":5.07,"tax_rate":19}]"#;

#[tokio::test(flavor = "multi_thread")]
async fn ratepay_refund_is_sent_once_under_a_key_derived_from_the_reference() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    ratepay_transaction(&sandbox, TX, "100.00", false).await;
    let row = rp("R-1", "RMA-R1", "36,75", TX)
        .with("items", RP_ITEMS)
        .with("specialItems", RP_SPECIAL)
        .with("vats", RP_VATS);
    let path = dir.write("refunds.csv", refunds_csv(&[row], ';'));
    refunds(&path, &sandbox, &[]).await.expect_code(0);
    let held = provider_refunds(&sandbox).await["ratepay"].clone();
    let held = held.as_array().unwrap().clone();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["gross_amount"], json!(36.75));
    assert_eq!(held[0]["partner_operation_id"], "RMA-R1");
    let key = kksync::refunds::ratepay::idempotency_key("RMA-R1", 0);
    assert_eq!(held[0]["idempotency_key"].as_str(), Some(key.as_str()));
    let text = dir.read("refunds.csv");
    let id = held[0]["ratepay_refund_id"].as_str().unwrap();
    assert_eq!(col(&text, b';', "refundId"), [id]);
    assert_eq!(col(&text, b';', "refundStatus"), ["REFUNDED"]);
    refunds(&path, &sandbox, &[]).await.expect_code(0);
    assert_eq!(route_count(&sandbox, RP_POST), 1);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ratepay_refusals_map_to_distinct_errors() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    ratepay_transaction(&sandbox, TX, "50.00", false).await;
    let blocked = "tx-legal-block-000000001";
    ratepay_transaction(&sandbox, blocked, "50.00", true).await;
    let unknown = "tx-unknown-00000000000001";
    let rows = [
        rp("R-2", "RP-notx", "10", ""),
        rp("R-2", "RP-decimals", "10,005", TX),
        rp("R-2", "RP-zero", "0,00", TX),
        rp("R-2", "RP-usd", "10", TX).with("currency", "USD"),
        rp("R-2", "RP-date", "10", TX).with("plannedDate", "2099-01-01"),
        rp("R-2", "RP-capture", "10", TX).with("captureNumber", "C-1"),
        rp("R-2", "RP-sum", "10", TX).with("items", RP_ITEMS),
        rp("R-2", "RP-unknown", "10", unknown),
        rp("R-2", "RP-over", "60", TX),
        rp("R-2", "RP-legal", "10", blocked),
    ];
    let path = dir.write("refunds.csv", refunds_csv(&rows, ','));
    refunds(&path, &sandbox, &[]).await.expect_code(3);
    let errors = col(&dir.read("refunds.csv"), b',', "refundError");
    let expected = [
        "transactionId is missing (required for ratepay)",
        "amount \"10,005\" has more than two decimal places",
        "amount \"0,00\" must be greater than zero",
        "currency \"USD\" is not supported by ratepay",
        "plannedDate belongs to komfortkasse refunds",
        "captureNumber belongs to afterpay refunds",
        "amount 10 is not the total of items and specialItems (33.8)",
        "Ratepay transaction tx-unknown-00000000000001 not found (404 RESOURCE_NOT_FOUND)",
        "refund declined by Ratepay (422 UNPROCESSABLE_OPERATION: REFUND_AMOUNT_TOO_HIGH)",
        "refund legally not allowed by Ratepay (451 LEGAL: REFUND_NOT_ALLOWED)",
    ];
    for (error, wanted) in errors.iter().zip(expected) {
        assert!(error.contains(wanted), "{error:?} lacks {wanted:?}");
    }
    assert_eq!(count(&sandbox, "ratepay").await, 0);

    // A refused request created nothing: once the cause is fixed, the row is sent under a new
    // key (the old one would only replay the refusal).
    ratepay_transaction(&sandbox, unknown, "50.00", false).await;
    refunds(&path, &sandbox, &[]).await.expect_code(3);
    let held = provider_refunds(&sandbox).await["ratepay"].clone();
    let held = held.as_array().unwrap();
    assert_eq!(held.len(), 1, "{held:#?}");
    assert_eq!(held[0]["partner_operation_id"], "RP-unknown");
    let key = kksync::refunds::ratepay::idempotency_key("RP-unknown", 1);
    assert_eq!(held[0]["idempotency_key"].as_str(), Some(key.as_str()));
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ratepay_transient_failures_are_retried_under_the_same_key() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig {
        seed: 4,
        ..SandboxConfig::default()
    })
    .await;
    let mut rows = Vec::new();
    for i in 0..5 {
        let id = format!("tx-retry-{i:015}");
        ratepay_transaction(&sandbox, &id, "100.00", false).await;
        rows.push(rp("R-3", &format!("RMA-RR{i}"), "12,34", &id));
    }
    let path = dir.write("refunds.csv", refunds_csv(&rows, ','));
    set_faults(
        &sandbox,
        json!({"server_error_rate": 0.25, "reset_rate": 0.25}),
    )
    .await;
    let run = refunds(&path, &sandbox, &["--max-attempts", "12"]).await;
    run.expect_code(0);
    let faults = sandbox.stats().faults;
    assert!(faults.reset + faults.server_error > 0, "{faults:?}");
    let held = provider_refunds(&sandbox).await["ratepay"].clone();
    let held = held.as_array().unwrap();
    assert_eq!(held.len(), 5);
    for refund in held {
        let reference = refund["partner_operation_id"].as_str().unwrap();
        let key = kksync::refunds::ratepay::idempotency_key(reference, 0);
        assert_eq!(refund["idempotency_key"].as_str(), Some(key.as_str()));
    }
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ratepay_sigkill_between_send_and_write_back_replays_instead_of_refunding_again() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    ratepay_transaction(&sandbox, TX, "100.00", false).await;
    let original = refunds_csv(&[rp("R-4", "RMA-R4", "25", TX)], ',');
    let path = dir.write("refunds.csv", &original);
    kill_at(&path, &sandbox, "refund-sent").await;
    assert_eq!(count(&sandbox, "ratepay").await, 1);
    assert_eq!(dir.read("refunds.csv"), original);

    refunds(&path, &sandbox, &[]).await.expect_code(0);
    let held = provider_refunds(&sandbox).await["ratepay"].clone();
    assert_eq!(
        held.as_array().unwrap().len(),
        1,
        "exactly one refund at Ratepay"
    );
    assert_eq!(
        route_count(&sandbox, RP_POST),
        2,
        "the re-run replayed the request"
    );
    let id = held[0]["ratepay_refund_id"].as_str().unwrap();
    assert_eq!(col(&dir.read("refunds.csv"), b',', "refundId"), [id]);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ratepay_duplicate_reference_resolves_to_the_existing_refund() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    ratepay_transaction(&sandbox, TX, "100.00", false).await;
    // Another tool refunded this return already, with the reference as partner_operation_id.
    let root = root(&sandbox);
    let (_, token) = post(
        &format!("{root}/ratepay/oauth/token"),
        json!({"client_id": "other-tool", "client_secret": KEY, "audience": "x", "grant_type": "client_credentials"}),
        &[],
    )
    .await;
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let (status, existing) = post(
        &format!("{root}/ratepay/v2/transactions/{TX}/refunds"),
        json!({"gross_amount": 25, "partner_operation_id": "RMA-R5"}),
        &[
            ("Authorization", bearer.as_str()),
            ("Idempotency-Key", "another-tools-key"),
        ],
    )
    .await;
    assert_eq!(status, 201);
    let path = dir.write(
        "refunds.csv",
        refunds_csv(&[rp("R-5", "RMA-R5", "25", TX)], ','),
    );
    refunds(&path, &sandbox, &[]).await.expect_code(0);
    let id = existing["ratepay_refund_id"].as_str().unwrap();
    assert_eq!(col(&dir.read("refunds.csv"), b',', "refundId"), [id]);
    assert_eq!(count(&sandbox, "ratepay").await, 1);

    // Lost state store, row without its result: still that refund, nothing new.
    std::fs::remove_file(dir.path("refunds.csv.kksync.db")).unwrap();
    let path = dir.write(
        "refunds.csv",
        refunds_csv(&[rp("R-5", "RMA-R5", "25", TX)], ','),
    );
    refunds(&path, &sandbox, &[]).await.expect_code(0);
    assert_eq!(col(&dir.read("refunds.csv"), b',', "refundId"), [id]);
    assert_eq!(count(&sandbox, "ratepay").await, 1);
    assert_eq!(
        route_count(&sandbox, RP_POST),
        1,
        "only the other tool's request"
    );
    sandbox.shutdown().await;
}

/// The sandbox's idempotency, as the client sees it: replay of the same request, 409 for a
/// different one under the same key.
#[tokio::test(flavor = "multi_thread")]
async fn ratepay_same_key_replays_and_a_different_body_conflicts() {
    use kksync::refunds::error::ProviderError;
    use kksync::refunds::ratepay::{Credentials, RatepayClient, idempotency_key};
    let sandbox = sandbox(SandboxConfig::default()).await;
    ratepay_transaction(&sandbox, TX, "100.00", false).await;
    let root = root(&sandbox);
    let credentials = Credentials {
        client_id: CLIENT_ID.into(),
        client_secret: kksync::secret::Secret::new(KEY),
        audience: format!("{root}/ratepay"),
        token_url: reqwest::Url::parse(&format!("{root}/ratepay/oauth/token")).unwrap(),
    };
    let base = reqwest::Url::parse(&format!("{root}/ratepay/")).unwrap();
    let client = RatepayClient::new(base, credentials, Duration::from_secs(10)).unwrap();
    let key = idempotency_key("RMA-X", 0);
    let body = r#"{"gross_amount":10,"partner_operation_id":"RMA-X"}"#;
    let first = client.create_refund(TX, body, &key).await.unwrap();
    let again = client.create_refund(TX, body, &key).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(count(&sandbox, "ratepay").await, 1);
    let other = r#"{"gross_amount":11,"partner_operation_id":"RMA-X"}"#;
    assert!(matches!(
        client.create_refund(TX, other, &key).await,
        Err(ProviderError::IdempotencyConflict { .. })
    ));
    assert_eq!(count(&sandbox, "ratepay").await, 1);
    sandbox.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// All providers, SQLite, credentials, locking, dry run
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_source_gets_results_per_row_and_the_journal_in_the_same_database() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    kk_order(&sandbox, "S-1", "50.00", None).await;
    afterpay_order(&sandbox, "S-2", "C-S2", "100.00").await;
    ratepay_transaction(&sandbox, TX, "100.00", false).await;
    let db = dir.path("shop.db");
    kksync(&["init-db", &db.to_string_lossy()], &[])
        .await
        .expect_code(0);
    let connection = rusqlite::Connection::open(&db).unwrap();
    let insert = "INSERT INTO refunds (order_number, external_reference, amount, currency, provider,
                  capture_number, transaction_id, items) VALUES (?1, ?2, ?3, 'EUR', ?4, ?5, ?6, ?7)";
    for values in [
        ["S-1", "SQ-1", "10,00", "komfortkasse", "", "", ""],
        ["S-2", "SQ-2", "28.80", "afterpay", "C-S2", "", AP_ITEMS],
        ["S-3", "SQ-3", "5", "ratepay", "", TX, ""],
        ["S-1", "SQ-4", "-5", "komfortkasse", "", "", ""],
    ] {
        let nullable: Vec<Option<&str>> = values
            .iter()
            .map(|v| (!v.is_empty()).then_some(*v))
            .collect();
        connection
            .execute(insert, rusqlite::params_from_iter(nullable))
            .unwrap();
    }
    refunds(&db, &sandbox, &[]).await.expect_code(3);
    let mut statement = connection
        .prepare(
            "SELECT external_reference, refund_id IS NOT NULL AND refund_status IS NOT NULL
                    AND refund_sent_at IS NOT NULL, refund_error FROM refunds ORDER BY rowid",
        )
        .unwrap();
    let rows: Vec<(String, bool, Option<String>)> = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (reference, complete, error) in &rows[..3] {
        assert!(*complete && error.is_none(), "{reference}: {rows:?}");
    }
    assert!(
        rows[3]
            .2
            .as_deref()
            .unwrap()
            .contains("must be greater than zero")
    );
    let done: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM kksync_refund_intents WHERE state = 'done'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(done, 3);
    let (command, exit_code): (String, i64) = connection
        .query_row(
            "SELECT command, exit_code FROM kksync_runs ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((command.as_str(), exit_code), ("refunds", 3));
    let held = provider_refunds(&sandbox).await;
    for provider in ["komfortkasse", "afterpay", "ratepay"] {
        assert_eq!(held[provider].as_array().unwrap().len(), 1, "{provider}");
    }
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_missing_refused_or_in_logs() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    afterpay_order(&sandbox, "A-6", "C-6", "100.00").await;
    let path = dir.write(
        "refunds.csv",
        refunds_csv(&[ap("A-6", "RMA-A6", "28,80", "C-6")], ','),
    );
    let args = args(&path, &sandbox, &["-vv"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // No AfterPay key: the row says how to give one, exit 2, nothing sent.
    let run = kksync(
        &args,
        &[("AFTERPAY_API_KEY", ""), ("KOMFORTKASSE_API_KEY", KEY)],
    )
    .await;
    run.expect_code(2);
    let errors = col(&dir.read("refunds.csv"), b',', "refundError");
    assert!(errors[0].contains("AFTERPAY_API_KEY"), "{errors:?}");
    assert_eq!(count(&sandbox, "afterpay").await, 0);

    // A wrong key: exit 1, and no key in any output, even at trace level.
    let wrong = "wrong-secret-key-4711";
    let env = [("AFTERPAY_API_KEY", wrong), ("RATEPAY_CLIENT_SECRET", KEY)];
    let run = kksync(&args, &env).await;
    run.expect_code(1);
    assert!(
        run.stderr.contains("afterpay refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(wrong) && !run.stdout.contains(wrong));
    assert!(!run.stderr.contains(KEY), "{}", run.stderr);
    assert_eq!(count(&sandbox, "afterpay").await, 0);

    // A key is never accepted on the command line.
    let run = kksync(
        &["refunds", "--source", "x.csv", "--afterpay-key", "k"],
        &[],
    )
    .await;
    run.expect_code(2);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_on_the_same_source_is_refused() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    let path = dir.write("refunds.csv", refunds_csv(&[kk("K-9", "RMA-9", "1")], ','));
    let _held = kksync::run_lock::acquire(&path).unwrap();
    refunds(&path, &sandbox, &[]).await.expect_code(4);
    assert_eq!(sandbox.stats().requests_total, 0);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_validates_and_prints_without_sending_or_writing() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    let original = refunds_csv(&[kk("K-8", "RMA-8", "4,20"), kk("K-8", "RMA-8b", "0")], ',');
    let path = dir.write("refunds.csv", &original);
    let args = args(&path, &sandbox, &["--dry-run"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = kksync(&args, &[]).await;
    run.expect_code(3);
    let line: Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["body"]["amount"], json!(4.2));
    let planned = kksync::dates::format_api_date(date_in(7));
    assert_eq!(line["body"]["plannedDate"], planned);
    assert_eq!(dir.read("refunds.csv"), original);
    assert_eq!(sandbox.stats().requests_total, 0);
    assert_eq!(dir.files(), ["refunds.csv"]);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_refund_in_flight_writes_back_and_a_rerun_completes() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    let mut rows = Vec::new();
    for i in 0..8 {
        let order = format!("KT-{i}");
        kk_order(&sandbox, &order, "40.00", None).await;
        rows.push(kk(&order, &format!("RMA-T{i}"), "5"));
    }
    let path = dir.write("refunds.csv", refunds_csv(&rows, ','));
    // Slow answers, so the run is still busy when the signal comes.
    set_faults(&sandbox, json!({"latency_ms": 150})).await;
    let child = Command::new(env!("CARGO_BIN_EXE_kksync"))
        .args(args(&path, &sandbox, &["--concurrency", "1"]))
        .envs(CREDENTIALS)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while count(&sandbox, "komfortkasse").await == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: sending a signal to our own child process, whose pid we hold.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");

    // Every refund Komfortkasse holds is written back; the rest were not started.
    let held = provider_refunds(&sandbox).await["komfortkasse"].clone();
    let held = held.as_array().unwrap().clone();
    assert!((1..8).contains(&held.len()), "{} refunds", held.len());
    let text = dir.read("refunds.csv");
    let written: Vec<String> = col(&text, b',', "refundId")
        .into_iter()
        .filter(|id| !id.is_empty())
        .collect();
    assert_eq!(written.len(), held.len(), "{text}");

    refunds(&path, &sandbox, &[]).await.expect_code(0);
    assert_eq!(count(&sandbox, "komfortkasse").await, 8);
    assert_eq!(
        route_count(&sandbox, KK_POST),
        8,
        "no refund was sent twice"
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refund_in_doubt_is_never_resent_until_a_human_resolves_it() {
    let dir = TestDir::new();
    let sandbox = sandbox(SandboxConfig::default()).await;
    afterpay_order(&sandbox, "A-7", "C-7", "100.00").await;
    let path = dir.write(
        "refunds.csv",
        refunds_csv(&[ap("A-7", "RMA-A7", "28,80", "C-7")], ','),
    );
    // An earlier run could not tell whether AfterPay booked this refund.
    let state = kksync::state::StateDb::open(&dir.path("refunds.csv.kksync.db"), false).unwrap();
    state
        .connection()
        .execute(
            "INSERT INTO kksync_refund_intents (provider, external_reference, order_number, target,
                 state, fingerprint, request, error, created_at, updated_at)
             VALUES ('afterpay', 'RMA-A7', 'A-7', 'A-7', 'doubt', 0, '{}', 'in doubt: check the portal',
                 '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
            [],
        )
        .unwrap();
    drop(state);

    let run = refunds(&path, &sandbox, &[]).await;
    run.expect_code(3);
    assert!(run.stderr.contains("in doubt  1"), "{}", run.stderr);
    let errors = col(&dir.read("refunds.csv"), b',', "refundError");
    assert_eq!(errors, ["in doubt: check the portal"]);
    assert_eq!(sandbox.stats().requests_total, 0, "nothing was sent");

    // The human found the refund in the portal and entered its number.
    let text = dir.read("refunds.csv");
    let (header, mut rows) = parse_csv(&text, b',');
    let id_column = header.iter().position(|h| h == "refundId").unwrap();
    rows[0][id_column] = "800009999".into();
    let mut resolved = header.join(",");
    resolved.push('\n');
    for row in &rows {
        let cells: Vec<String> = row.iter().map(|v| cell(v, ',')).collect();
        resolved.push_str(&cells.join(","));
        resolved.push('\n');
    }
    dir.write("refunds.csv", resolved);
    refunds(&path, &sandbox, &[]).await.expect_code(0);
    assert_eq!(sandbox.stats().requests_total, 0);
    assert_eq!(col(&dir.read("refunds.csv"), b',', "refundError"), [""]);
    let state = kksync::state::StateDb::open(&dir.path("refunds.csv.kksync.db"), false).unwrap();
    let (stored, id): (String, String) = state
        .connection()
        .query_row(
            "SELECT state, refund_id FROM kksync_refund_intents WHERE external_reference = 'RMA-A7'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((stored.as_str(), id.as_str()), ("done", "800009999"));
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_config_file_refunds_table_sets_refunds_options_and_leaves_sync_alone() {
    let dir = TestDir::new();
    let original = refunds_csv(&[kk("K-9", "RMA-9", "3,00")], ',');
    let path = dir.write("refunds.csv", &original);
    let config = dir.write(
        "kksync.toml",
        format!(
            "source = \"orders.csv\"\nrate = 5\n\n[refunds]\nsource = {:?}\nwaiting-period = 10\n",
            path.to_string_lossy()
        ),
    );
    let config = config.to_string_lossy().into_owned();
    let run = kksync(&["--config", &config, "refunds", "--dry-run"], &[]).await;
    run.expect_code(0);
    let line: Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    let planned = kksync::dates::format_api_date(date_in(10));
    assert_eq!(
        line["body"]["plannedDate"], planned,
        "waiting-period from [refunds]"
    );
    // A flag still beats the file.
    let run = kksync(
        &[
            "--config",
            &config,
            "refunds",
            "--dry-run",
            "--waiting-period",
            "3",
        ],
        &[],
    )
    .await;
    run.expect_code(0);
    let line: Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(
        line["body"]["plannedDate"],
        kksync::dates::format_api_date(date_in(3))
    );
    // An entry refunds does not take is an error, not silently ignored.
    std::fs::write(&config, "[refunds]\nmax-shrink = 5\n").unwrap();
    let run = kksync(&["--config", &config, "refunds", "--dry-run"], &[]).await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("unknown option `max-shrink`"),
        "{}",
        run.stderr
    );
}
