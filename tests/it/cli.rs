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

#[tokio::test(flavor = "multi_thread")]
async fn garbage_input_gets_an_error_not_a_panic() {
    let dir = TestDir::new();
    let cases: [(&str, &[u8]); 4] = [
        ("empty.csv", b""),
        ("binary.csv", b"\x00\xff\xfe;;\n\x01\x02\"unclosed\n"),
        ("only-header.csv", b"number;amount\n"),
        (
            "ragged.csv",
            b"number,date\n1\n2,01-01-2026,extra,fields\n\"3\",\"\"\"\n",
        ),
    ];
    for (name, bytes) in cases {
        let path = dir.write(name, bytes);
        let run = kksync(
            &["sync", "--source", &path.to_string_lossy(), "--dry-run"],
            &[],
        )
        .await;
        assert!(
            [0, 1, 3].contains(&run.code),
            "{name}: exit {}\n{}",
            run.code,
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{name}: {}", run.stderr);
    }
}
