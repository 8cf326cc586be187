//! The source is never damaged: an unreadable CSV is refused before anything is written back,
//! a file replaced during the run is not overwritten, and the rewrite keeps the file's owner.

use kksync::sandbox::{SandboxConfig, SandboxHandle};

use crate::util::{KEY, TestDir, kksync, orders_csv, sandbox, sync};

async fn ordersync(source: &std::path::Path, sandbox: &SandboxHandle) -> crate::util::Run {
    let source = source.to_string_lossy().into_owned();
    let url = sandbox.base_url();
    let args = [
        "ordersync",
        "--source",
        &source,
        "--api-url",
        &url,
        "--rate",
        "1000",
    ];
    kksync(&args, &[("KOMFORTKASSE_API_KEY", KEY)]).await
}

fn temp_files(dir: &TestDir) -> Vec<String> {
    dir.files()
        .into_iter()
        .filter(|name| name.ends_with(".kksync-tmp"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unclosed_quote_is_fatal_and_leaves_the_file_untouched() {
    let dir = TestDir::new();
    // Row 96 (order T-00094) opens a quote that is never closed: csv alone would read the
    // five rows after it into its last field.
    let text = orders_csv(100, true).replace(";Regal 94\n", ";\"Am Markt 5\n");
    let source = dir.write("orders.csv", &text);
    let sandbox = sandbox(SandboxConfig::default()).await;

    // Small chunks: the orders before it are sent (and journaled) while the file is read.
    let run = sync(&source, &sandbox, &["--chunk-size", "10"]).await;
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("row 96: a quoted field is not closed before the end of the file"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(&source).unwrap(),
        text.as_bytes(),
        "no write-back"
    );
    assert!(temp_files(&dir).is_empty(), "{:?}", dir.files());
    assert_eq!(sandbox.order_status("T-00000").as_deref(), Some("UNPAID"));
    for number in ["T-00094", "T-00095", "T-00099"] {
        assert_eq!(sandbox.order_status(number), None, "{number} not sent");
    }

    // ordersync would turn the swallowed orders into LEGACY: it must not send its list.
    let run = ordersync(&source, &sandbox).await;
    run.expect_code(1);
    assert!(run.stderr.contains("row 96"), "{}", run.stderr);
    let requests = sandbox.stats().requests_by_route;
    assert_eq!(requests.get("POST /ordersync"), None, "{requests:?}");
    assert_eq!(std::fs::read(&source).unwrap(), text.as_bytes());
    sandbox.shutdown().await;
}
