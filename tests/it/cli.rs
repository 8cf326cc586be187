//! Configuration errors: exit code 2 and a message that says what to do.

use crate::util::{TestDir, kksync, orders_csv};

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_key_names_the_three_ways_to_give_one() {
    let dir = TestDir::new();
    let path = dir.write("orders.csv", orders_csv(1, false));
    let run = kksync(
        &[
            "sync",
            "--source",
            &path.to_string_lossy(),
            "--api-url",
            "http://127.0.0.1:9/api/v2",
        ],
        &[],
    )
    .await;
    run.expect_code(2);
    for way in [
        "KOMFORTKASSE_API_KEY",
        "--api-key-file",
        "komfortkasse-api-key",
    ] {
        assert!(run.stderr.contains(way), "{}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_to_a_remote_host_is_refused() {
    let dir = TestDir::new();
    let path = dir.write("orders.csv", orders_csv(1, false));
    let run = kksync(
        &[
            "sync",
            "--source",
            &path.to_string_lossy(),
            "--api-url",
            "http://ssl.komfortkasse.eu/api/v2",
        ],
        &[("KOMFORTKASSE_API_KEY", "k")],
    )
    .await;
    run.expect_code(2);
    assert!(run.stderr.contains("unencrypted"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_is_not_accepted_on_the_command_line() {
    let run = kksync(&["sync", "--source", "x.csv", "--api-key", "secret"], &[]).await;
    run.expect_code(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_source_is_fatal() {
    let dir = TestDir::new();
    let path = dir.path("nope.csv");
    let run = kksync(
        &["sync", "--source", &path.to_string_lossy(), "--dry-run"],
        &[],
    )
    .await;
    run.expect_code(1);
    assert!(run.stderr.contains("nope.csv"), "{}", run.stderr);
}
