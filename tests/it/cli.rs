//! Configuration errors: exit code 2 and a message that says what to do.

use crate::util::{TestDir, kksync, orders_csv, sync_with_env};

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

/// A shop export with its own column names, mapped in the config file; chunk size from the
/// file, the environment and a flag, in that rising order of precedence.
#[tokio::test(flavor = "multi_thread")]
async fn config_file_columns_and_precedence() {
    use kksync::sandbox::SandboxConfig;
    let dir = TestDir::new();
    let date = crate::util::recent_date(2);
    let mut csv = String::from("Bestellnummer;Datum;Zahlart;Betrag;Waehrung;Land;Notiz\n");
    for i in 0..60 {
        csv.push_str(&format!("B{i};{date};prepayment;{i},99;EUR;DE;n{i}\n"));
    }
    let source = dir.write("export.csv", csv);
    let sandbox = crate::util::sandbox(SandboxConfig::default()).await;
    let config = dir.write(
        "kksync.toml",
        format!(
            "source = {source:?}\napi-url = {url:?}\nrate = 1000\nchunk-size = 10\n\n[columns]\nnumber = \"Bestellnummer\"\ndate = \"Datum\"\ntype = \"Zahlart\"\namount = \"Betrag\"\ncurrency = \"Waehrung\"\n\"billing.countryCode\" = \"Land\"\n",
            source = source.to_string_lossy(),
            url = sandbox.base_url()
        ),
    );
    let config_arg = config.to_string_lossy().into_owned();
    let key = ("KOMFORTKASSE_API_KEY", crate::util::KEY);
    let chunk_sizes = |sandbox: &kksync::sandbox::SandboxHandle| {
        let stats = sandbox.stats();
        stats
            .post_orders
            .iter()
            .map(|p| p.orders)
            .collect::<Vec<u64>>()
    };

    kksync(&["--config", &config_arg, "sync"], &[key])
        .await
        .expect_code(0);
    assert_eq!(
        chunk_sizes(&sandbox),
        vec![10; 6],
        "chunk size from the file"
    );
    assert_eq!(sandbox.order_status("B59").as_deref(), Some("UNPAID"));
    let written = dir.read("export.csv");
    assert!(
        written.starts_with(
            "Bestellnummer;Datum;Zahlart;Betrag;Waehrung;Land;Notiz;paymentStatus;syncError\n"
        ),
        "{written}"
    );

    // --full: the second and third runs would otherwise send nothing (nothing changed).
    kksync(
        &["--config", &config_arg, "sync", "--full"],
        &[key, ("KKSYNC_CHUNK_SIZE", "20")],
    )
    .await
    .expect_code(0);
    assert_eq!(
        chunk_sizes(&sandbox)[6..],
        [20, 20, 20],
        "the environment beats the file"
    );

    kksync(
        &[
            "--config",
            &config_arg,
            "sync",
            "--full",
            "--chunk-size",
            "30",
        ],
        &[key, ("KKSYNC_CHUNK_SIZE", "20")],
    )
    .await
    .expect_code(0);
    assert_eq!(
        chunk_sizes(&sandbox)[9..],
        [30, 30],
        "a flag beats the environment"
    );

    let shown = kksync(&["--config", &config_arg, "config", "show"], &[key]).await;
    shown.expect_code(0);
    assert!(shown.stdout.contains("chunk-size = 10"), "{}", shown.stdout);
    assert!(
        shown
            .stdout
            .contains("<redacted>, from environment variable KOMFORTKASSE_API_KEY"),
        "{}",
        shown.stdout
    );
    assert!(!shown.stdout.contains(crate::util::KEY), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("\"billing.countryCode\" = \"Land\""),
        "{}",
        shown.stdout
    );

    let broken = dir.write("broken.toml", "chunk-sise = 5\n");
    let run = kksync(&["--config", &broken.to_string_lossy(), "sync"], &[key]).await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("unknown option `chunk-sise`"),
        "{}",
        run.stderr
    );
    sandbox.shutdown().await;
}

/// A rate too low for the limiter (1e-20 requests per second) panicked with exit 101, from a
/// flag, the environment or the config file alike; now it is a usage error naming --rate.
#[tokio::test(flavor = "multi_thread")]
async fn a_rate_the_limiter_cannot_hold_is_a_usage_error_from_every_source() {
    let dir = TestDir::new();
    let source = dir.write("orders.csv", orders_csv(1, false));
    let source = source.to_string_lossy().into_owned();
    let config = dir.write("kksync.toml", "rate = 1e-20\n");
    let config = config.to_string_lossy().into_owned();
    let key = ("KOMFORTKASSE_API_KEY", crate::util::KEY);
    let url = ("KKSYNC_API_URL", "http://127.0.0.1:9/api/v2");
    let runs = [
        kksync(
            &["sync", "--source", &source, "--rate", "1e-20"],
            &[key, url],
        )
        .await,
        kksync(
            &["sync", "--source", &source],
            &[key, url, ("KKSYNC_RATE", "1e-20")],
        )
        .await,
        kksync(
            &["--config", &config, "sync", "--source", &source],
            &[key, url],
        )
        .await,
        kksync(
            &[
                "sync",
                "--source",
                &source,
                "--rate",
                "0.001",
                "--burst",
                "4294967295",
            ],
            &[key, url],
        )
        .await,
        kksync(
            &["refunds", "--source", &source, "--rate", "1e-20"],
            &[key, url],
        )
        .await,
    ];
    for (i, run) in runs.iter().enumerate() {
        run.expect_code(2);
        assert!(!run.stderr.contains("panicked"), "{i}: {}", run.stderr);
        let option = if i == 3 {
            "invalid --burst"
        } else {
            "invalid --rate"
        };
        assert!(run.stderr.contains(option), "{i}: {}", run.stderr);
    }
}

/// An API key file with a second line was taken whole and failed on the first request as "the
/// API answered unexpectedly" (exit 1); now it is a configuration error (exit 2) naming the
/// file, without the key. A single trailing newline still works.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_file_with_two_lines_is_a_configuration_error_naming_the_file() {
    use kksync::sandbox::SandboxConfig;
    let dir = TestDir::new();
    let source = dir.write("orders.csv", orders_csv(2, false));
    let sandbox = crate::util::sandbox(SandboxConfig::default()).await;
    let two_lines = dir.write("key2", format!("{}\nsekret-line\n", crate::util::KEY));
    let two_lines = two_lines.to_string_lossy().into_owned();
    let run = sync_with_env(&source, &sandbox, &["--api-key-file", &two_lines], &[]).await;
    run.expect_code(2);
    assert!(run.stderr.contains(&two_lines), "{}", run.stderr);
    assert!(
        run.stderr.contains("not allowed in an HTTP header"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("sekret-line"), "{}", run.stderr);
    assert!(!run.stderr.contains(crate::util::KEY), "{}", run.stderr);
    assert_eq!(sandbox.stats().post_orders.len(), 0, "nothing was sent");

    // The same key in the environment: the message names the variable.
    let run = sync_with_env(
        &source,
        &sandbox,
        &[],
        &[("KOMFORTKASSE_API_KEY", "k1\u{1b}[2J")],
    )
    .await;
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("environment variable KOMFORTKASSE_API_KEY"),
        "{}",
        run.stderr
    );

    let one_line = dir.write("key1", format!("{}\n", crate::util::KEY));
    let one_line = one_line.to_string_lossy().into_owned();
    let run = sync_with_env(&source, &sandbox, &["--api-key-file", &one_line], &[]).await;
    run.expect_code(0);
    sandbox.shutdown().await;
}
