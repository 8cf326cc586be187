//! The source is never damaged: an unreadable CSV is refused before anything is written back,
//! a file replaced during the run is not overwritten, and the rewrite keeps the file's owner.

use std::process::Command;

use kksync::sandbox::{SandboxConfig, SandboxHandle};

use crate::util::{
    KEY, TestDir, column, kksync, orders_csv, parse_csv, sandbox, statuses, sync,
    sync_changing_the_source_at,
};

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

/// A new export (a new file renamed into place, as shops do) between the read and the
/// write-back: the row numbers of this run's validation errors no longer fit, so nothing is
/// written; the next run writes the journaled statuses back into the new file.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_replaced_before_the_write_back_is_not_overwritten() {
    let dir = TestDir::new();
    let source = dir.write("orders.csv", orders_csv(50, false));
    let export = orders_csv(60, false);
    let sandbox = sandbox(SandboxConfig::default()).await;
    let (path, url, new) = (source.clone(), sandbox.base_url(), export.clone());
    let (code, stderr) = tokio::task::spawn_blocking(move || {
        sync_changing_the_source_at(&path, &url, "before-write-back", || {
            let fresh = path.with_file_name("export.tmp");
            std::fs::write(&fresh, new).unwrap();
            std::fs::rename(&fresh, &path).unwrap();
        })
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the source changed during the run; nothing was overwritten"),
        "{stderr}"
    );
    assert_eq!(dir.read("orders.csv"), export, "the new export is kept");
    assert!(temp_files(&dir).is_empty(), "{:?}", dir.files());

    sync(&source, &sandbox, &[]).await.expect_code(0);
    let (header, rows) = parse_csv(&dir.read("orders.csv"), b',');
    assert_eq!(rows.len(), 60);
    assert!(
        column(&header, &rows, "paymentStatus")
            .iter()
            .all(|s| s == "UNPAID")
    );
    sandbox.shutdown().await;
}

/// The shop appends to the file while the write-back is writing its temporary file: the
/// rename would throw the new row away, so it does not happen.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_modified_during_the_write_back_is_not_overwritten() {
    let dir = TestDir::new();
    // More than one batch of 1000 rows, so the write-back pauses in the middle.
    let original = orders_csv(1200, false);
    let source = dir.write("orders.csv", &original);
    let sandbox = sandbox(SandboxConfig::default()).await;
    let (path, url) = (source.clone(), sandbox.base_url());
    let (code, stderr) = tokio::task::spawn_blocking(move || {
        sync_changing_the_source_at(&path, &url, "writing-back", || {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            std::io::Write::write_all(&mut file, b"NEW-1,01-01-2025,INVOICE,1.00,EUR,X,DE,\n")
                .unwrap();
        })
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the source changed during the run"),
        "{stderr}"
    );
    let text = dir.read("orders.csv");
    assert!(
        text.starts_with(&original) && text.ends_with("NEW-1,01-01-2025,INVOICE,1.00,EUR,X,DE,\n")
    );
    assert!(temp_files(&dir).is_empty(), "{:?}", dir.files());
    sandbox.shutdown().await;
}

/// A symlink is another name for the same source: it shares the run lock and the state store,
/// and the rewrite replaces the real file, leaving the symlink a symlink.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_source_shares_the_lock_of_the_real_file_and_keeps_its_own_state() {
    let dir = TestDir::new();
    let source = dir.write("s.csv", orders_csv(20, false));
    let link = dir.path("s2.csv");
    std::os::unix::fs::symlink(&source, &link).unwrap();
    let sandbox = sandbox(SandboxConfig::default()).await;
    let (path, url, second) = (source.clone(), sandbox.base_url(), link.clone());
    let (code, stderr, concurrent) = tokio::task::spawn_blocking(move || {
        let mut concurrent = None;
        let (code, stderr) = sync_changing_the_source_at(&path, &url, "before-write-back", || {
            let output = Command::new(env!("CARGO_BIN_EXE_kksync"))
                .args(["sync", "--source"])
                .arg(&second)
                .args(["--api-url", &url, "--rate", "1000"])
                .env("KOMFORTKASSE_API_KEY", KEY)
                .env("RUST_LOG", "warn")
                .output()
                .expect("second kksync runs");
            concurrent = Some(output);
        });
        (code, stderr, concurrent.expect("ran"))
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        concurrent.status.code(),
        Some(4),
        "the run through the symlink waits for the lock: {}",
        String::from_utf8_lossy(&concurrent.stderr)
    );
    let received = |sandbox: &SandboxHandle| -> u64 {
        sandbox.stats().post_orders.iter().map(|p| p.orders).sum()
    };
    assert_eq!(received(&sandbox), 20);

    // Through the symlink: its state store is beside the name as given, so a symlink that
    // is re-pointed at each new export (current.csv -> exports/<date>.csv) keeps its state.
    sync(&link, &sandbox, &[]).await.expect_code(0);
    assert_eq!(
        received(&sandbox),
        40,
        "the new name's store learns the orders once"
    );
    assert!(dir.path("s2.csv.kksync.db").exists(), "{:?}", dir.files());
    let next = dir.write("s-next.csv", orders_csv(20, false));
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&next, &link).unwrap();
    sync(&link, &sandbox, &[]).await.expect_code(0);
    assert_eq!(
        received(&sandbox),
        40,
        "nothing resent after the symlink moved"
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink stays a symlink"
    );
    assert!(
        !dir.path("s-next.csv.kksync.db").exists(),
        "{:?}",
        dir.files()
    );
    assert!(
        statuses(&dir.read("s-next.csv"), b',')
            .iter()
            .all(|s| s == "UNPAID")
    );
    sandbox.shutdown().await;
}
