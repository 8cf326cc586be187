//! Running unattended: one run per source, and a graceful stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use kksync::sandbox::SandboxConfig;

use crate::util::{KEY, TestDir, column, orders_csv, parse_csv, sandbox, sync, sync_with_env};

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_on_the_same_source_is_refused_at_once() {
    let dir = TestDir::new();
    let original = orders_csv(10, false);
    let path = dir.write("orders.csv", &original);
    let sandbox = sandbox(SandboxConfig::default()).await;
    // Another run holds the lock.
    let _held = kksync::run_lock::acquire(&path).unwrap();

    let run = sync(&path, &sandbox, &[]).await;
    run.expect_code(4);

    assert!(run.stderr.contains("another kksync run"), "{}", run.stderr);
    assert_eq!(sandbox.stats().requests_total, 0);
    assert_eq!(dir.read("orders.csv"), original);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_writes_back_what_was_acknowledged_and_a_rerun_completes() {
    let dir = TestDir::new();
    let path = dir.write("orders.csv", orders_csv(2000, true));
    // Slow answers, so the run is still busy when the signal comes.
    let sandbox = sandbox(SandboxConfig {
        latency: Duration::from_millis(150),
        ..SandboxConfig::default()
    })
    .await;
    let source = path.to_string_lossy().into_owned();
    let url = sandbox.base_url();
    let args = [
        "sync",
        "--source",
        &source,
        "--api-url",
        &url,
        "--rate",
        "1000",
        "--chunk-size",
        "20",
        "--concurrency",
        "2",
    ];
    let child = Command::new(env!("CARGO_BIN_EXE_kksync"))
        .args(args)
        .env("KOMFORTKASSE_API_KEY", KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while sandbox.order_count() < 200 {
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
    assert!(
        stderr.contains("interrupted by SIGTERM") && stderr.contains("run kksync again"),
        "{stderr}"
    );

    // Not torn: every row is there. Every status written back was acknowledged by the API, and
    // every order the API stored before the stop has its status (nothing acknowledged is lost).
    let (header, rows) = parse_csv(&dir.read("orders.csv"), b';');
    assert_eq!(rows.len(), 2000);
    let numbers = column(&header, &rows, "number");
    let statuses = column(&header, &rows, "paymentStatus");
    let written = statuses.iter().filter(|s| !s.is_empty()).count();
    assert!((200..2000).contains(&written), "{written} statuses written");
    for (number, status) in numbers.iter().zip(&statuses) {
        let stored = sandbox.order_status(number);
        if status.is_empty() {
            assert_eq!(
                stored, None,
                "{number} was stored but its status is missing"
            );
        } else {
            assert_eq!(stored.as_deref(), Some(status.as_str()), "{number}");
        }
    }

    // The re-run completes.
    sync(&path, &sandbox, &["--chunk-size", "100"])
        .await
        .expect_code(0);
    let (header, rows) = parse_csv(&dir.read("orders.csv"), b';');
    assert!(
        column(&header, &rows, "paymentStatus")
            .iter()
            .all(|s| s == "UNPAID")
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn report_and_metrics_describe_the_run_and_logs_can_be_json() {
    let dir = TestDir::new();
    let mut csv = orders_csv(30, false);
    csv.push_str("BAD-1,31-02-2024,INVOICE,1.00,EUR,Schulz,DE,x\n");
    let path = dir.write("orders.csv", csv);
    let sandbox = sandbox(SandboxConfig::default()).await;
    let report = dir.path("report.json");
    let metrics = dir.path("kksync.prom");
    let (report_arg, metrics_arg) = (
        report.to_string_lossy().into_owned(),
        metrics.to_string_lossy().into_owned(),
    );

    let args = [
        "--report",
        &report_arg,
        "--metrics-textfile",
        &metrics_arg,
        "--log-format",
        "json",
        "-v",
    ];
    // No RUST_LOG: -v chooses the level.
    let env = [("KOMFORTKASSE_API_KEY", KEY), ("RUST_LOG", "")];
    let run = sync_with_env(&path, &sandbox, &args, &env).await;
    run.expect_code(3);

    let report: serde_json::Value = serde_json::from_str(&dir.read("report.json")).unwrap();
    assert_eq!(report["exit_code"], 3);
    assert_eq!(report["counts"]["rows_read"], 31);
    assert_eq!(report["counts"]["accepted"], 30);
    assert_eq!(report["counts"]["rejected"], 1);
    assert_eq!(report["payment_statuses"]["UNPAID"], 30);
    assert_eq!(
        report["rejected_by_reason"]["date is not a valid date (use dd-MM-yyyy, dd.MM.yyyy or yyyy-MM-dd)"],
        1
    );
    assert_eq!(report["options"]["chunk_size"], 100);
    assert!(
        !dir.read("report.json").contains(KEY),
        "no secret in the report"
    );

    let metrics = dir.read("kksync.prom");
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("kksync_"), "{line}");
        value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
    }
    assert!(metrics.contains("kksync_last_run_exit_code 3"));
    assert!(metrics.contains("kksync_last_run_rows{outcome=\"accepted\"} 30"));
    assert!(
        metrics.contains("kksync_last_run_orders_by_payment_status{payment_status=\"UNPAID\"} 30")
    );
    // Written atomically: no temporary file left beside them.
    assert!(
        dir.files().iter().all(|f| !f.ends_with(".tmp")),
        "{:?}",
        dir.files()
    );

    // With --log-format json every log line is a JSON object; the summary is plain text after
    // them. Not a terminal, so no progress output either.
    let log_lines: Vec<&str> = run
        .stderr
        .lines()
        .take_while(|l| l.starts_with('{'))
        .collect();
    assert!(!log_lines.is_empty(), "{}", run.stderr);
    for line in log_lines {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert!(
        !run.stderr.contains("rows ("),
        "no progress bar without a terminal: {}",
        run.stderr
    );
    assert!(!run.stderr.contains(KEY));
    sandbox.shutdown().await;
}

/// A report or metrics file that cannot be written makes the run exit 1; the other file and
/// the run history used to record the exit code from before (0), so monitoring saw a success.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_report_or_metrics_file_is_recorded_as_the_exit_code() {
    let dir = TestDir::new();
    let path = dir.write("orders.csv", orders_csv(5, false));
    let sandbox = sandbox(SandboxConfig::default()).await;
    let missing = dir.path("missing-folder");
    let runs = |n: usize| {
        let source = path.to_string_lossy().into_owned();
        async move {
            let run = crate::util::kksync(&["runs", "--source", &source, "--json"], &[]).await;
            run.expect_code(0);
            let runs: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            assert_eq!(runs.as_array().map(Vec::len), Some(n), "{runs}");
            runs[0]["exit_code"].clone()
        }
    };

    // The report fails: the metrics and the run history say 1.
    let metrics = dir.path("kksync.prom").to_string_lossy().into_owned();
    let bad_report = missing.join("r.json").to_string_lossy().into_owned();
    let run = sync(
        &path,
        &sandbox,
        &["--report", &bad_report, "--metrics-textfile", &metrics],
    )
    .await;
    run.expect_code(1);
    assert!(run.stderr.contains("r.json"), "{}", run.stderr);
    let written = dir.read("kksync.prom");
    assert!(
        written.contains("kksync_last_run_exit_code 1\n"),
        "{written}"
    );
    assert_eq!(runs(1).await, 1);

    // The metrics fail after the report was written: the report is written again with 1.
    let report = dir.path("report.json").to_string_lossy().into_owned();
    let bad_metrics = missing.join("m.prom").to_string_lossy().into_owned();
    let run = sync(
        &path,
        &sandbox,
        &["--report", &report, "--metrics-textfile", &bad_metrics],
    )
    .await;
    run.expect_code(1);
    let written: serde_json::Value = serde_json::from_str(&dir.read("report.json")).unwrap();
    assert_eq!(written["exit_code"], 1, "{written}");
    assert_eq!(runs(2).await, 1);

    // Both written: both and the history say 0.
    let run = sync(
        &path,
        &sandbox,
        &["--report", &report, "--metrics-textfile", &metrics],
    )
    .await;
    run.expect_code(0);
    let written: serde_json::Value = serde_json::from_str(&dir.read("report.json")).unwrap();
    assert_eq!(written["exit_code"], 0, "{written}");
    assert!(
        dir.read("kksync.prom")
            .contains("kksync_last_run_exit_code 0\n")
    );
    assert_eq!(runs(3).await, 0);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_and_man_page_are_generated() {
    let run = crate::util::kksync(&["completions", "bash"], &[]).await;
    run.expect_code(0);
    assert!(run.stdout.contains("kksync") && run.stdout.contains("--chunk-size"));
    let run = crate::util::kksync(&["man"], &[]).await;
    run.expect_code(0);
    assert!(
        run.stdout.contains(".TH kksync"),
        "{}",
        &run.stdout[..run.stdout.len().min(200)]
    );
}

/// `systemd-analyze verify` on the shipped units, pointed at the binary under test. It needs
/// systemd's tools; where they are missing the test says so and checks nothing.
#[tokio::test(flavor = "multi_thread")]
async fn systemd_units_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: unit files not verified");
        return;
    };
    assert!(probe.status.success());
    let dir = TestDir::new();
    let units = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/systemd");
    let service = std::fs::read_to_string(format!("{units}/kksync.service")).unwrap();
    let service = service.replace("/usr/bin/kksync", env!("CARGO_BIN_EXE_kksync"));
    dir.write("kksync.service", service);
    dir.write(
        "kksync.timer",
        std::fs::read(format!("{units}/kksync.timer")).unwrap(),
    );
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path("kksync.service"))
        .arg(dir.path("kksync.timer"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "{stderr}"
    );
}
