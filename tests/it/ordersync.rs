//! `kksync ordersync` with its guards, and `kksync runs`.

use kksync::sandbox::{SandboxConfig, SandboxHandle};

use crate::util::{KEY, TestDir, kksync, orders_csv, sandbox, sync};

async fn ordersync(
    source: &std::path::Path,
    sandbox: &SandboxHandle,
    extra: &[&str],
) -> crate::util::Run {
    let source = source.to_string_lossy().into_owned();
    let url = sandbox.base_url();
    let mut args = vec![
        "ordersync",
        "--source",
        &source,
        "--api-url",
        &url,
        "--rate",
        "1000",
    ];
    args.extend_from_slice(extra);
    kksync(&args, &[("KOMFORTKASSE_API_KEY", KEY)]).await
}

fn ordersync_requests(sandbox: &SandboxHandle) -> u64 {
    sandbox
        .stats()
        .requests_by_route
        .get("POST /ordersync")
        .copied()
        .unwrap_or(0)
}

/// The CSV without the data rows whose index is in `drop` (0-based).
fn without_rows(text: &str, drop: impl Fn(usize) -> bool) -> String {
    let mut lines = text.lines();
    let mut out = format!("{}\n", lines.next().unwrap_or_default());
    for (i, line) in lines.enumerate() {
        if !drop(i) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn ordersync_marks_vanished_orders_legacy_and_its_guards_refuse_risky_lists() {
    let dir = TestDir::new();
    let source = dir.write("orders.csv", orders_csv(100, false));
    let sandbox = sandbox(SandboxConfig::default()).await;
    sync(&source, &sandbox, &[]).await.expect_code(0);

    // Five orders vanish from the shop: the dry run says so and sends nothing.
    let full = dir.read("orders.csv");
    std::fs::write(&source, without_rows(&full, |i| i < 5)).unwrap();
    let run = ordersync(&source, &sandbox, &["--dry-run"]).await;
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("5 open order(s) at Komfortkasse would become LEGACY"),
        "{}",
        run.stderr
    );
    assert_eq!(ordersync_requests(&sandbox), 0);
    assert_eq!(sandbox.order_status("T-00000").as_deref(), Some("UNPAID"));

    let run = ordersync(&source, &sandbox, &[]).await;
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("95 open orders sent; 5 order(s) became LEGACY"),
        "{}",
        run.stderr
    );
    assert_eq!(sandbox.order_status("T-00000").as_deref(), Some("LEGACY"));
    assert_eq!(sandbox.order_status("T-00005").as_deref(), Some("UNPAID"));

    // 95 → 80 is more than 10% fewer: refused, unless forced.
    std::fs::write(&source, without_rows(&full, |i| i < 20)).unwrap();
    let run = ordersync(&source, &sandbox, &[]).await;
    run.expect_code(6);
    assert!(run.stderr.contains("more than 10% fewer"), "{}", run.stderr);
    assert_eq!(ordersync_requests(&sandbox), 1);
    assert_eq!(sandbox.order_status("T-00010").as_deref(), Some("UNPAID"));
    ordersync(&source, &sandbox, &["--max-shrink", "20"])
        .await
        .expect_code(0);
    assert_eq!(sandbox.order_status("T-00010").as_deref(), Some("LEGACY"));

    // A row that names no order might be an open one: refused.
    let text = dir.read("orders.csv");
    let unnamed = text.replacen("T-00050,", ",", 1);
    std::fs::write(&source, unnamed).unwrap();
    let run = ordersync(&source, &sandbox, &[]).await;
    run.expect_code(6);
    assert!(
        run.stderr.contains("1 row(s) of the source name no order"),
        "{}",
        run.stderr
    );

    // An empty list never goes out, not even forced.
    std::fs::write(&source, without_rows(&full, |_| true)).unwrap();
    let run = ordersync(&source, &sandbox, &["--force"]).await;
    run.expect_code(6);
    assert!(run.stderr.contains("empty"), "{}", run.stderr);
    assert_eq!(ordersync_requests(&sandbox), 2);
    assert_eq!(sandbox.order_status("T-00050").as_deref(), Some("UNPAID"));
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_lists_every_run_with_its_counts_and_exit_code() {
    let dir = TestDir::new();
    let mut text = orders_csv(20, false);
    text.push_str("BAD,not-a-date,PREPAYMENT,1.00,EUR,X,DE,\n");
    let source = dir.write("orders.csv", text);
    let sandbox = sandbox(SandboxConfig::default()).await;
    sync(&source, &sandbox, &[]).await.expect_code(3);
    sync(&source, &sandbox, &[]).await.expect_code(3);
    let source_arg = source.to_string_lossy().into_owned();
    let run = kksync(&["runs", "--source", &source_arg, "--json"], &[]).await;
    run.expect_code(0);
    let runs: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let runs = runs.as_array().expect("array");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["command"], "sync");
    assert_eq!(runs[0]["exit_code"], 3);
    assert_eq!(runs[0]["counts"]["orders_sent"], 0, "the newest run first");
    assert_eq!(runs[1]["counts"]["orders_sent"], 20);
    assert_eq!(runs[1]["counts"]["rejected"], 1);
    assert!(runs[1]["ended_at"].is_string());

    let table = kksync(&["runs", "--source", &source_arg], &[]).await;
    table.expect_code(0);
    assert_eq!(table.stdout.lines().count(), 3, "{}", table.stdout);
}
