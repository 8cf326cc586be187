//! A test hook: `KKSYNC_TEST_PAUSE_AT=<point>` makes kksync stop at that point of a run (it
//! sleeps there, after printing `kksync: paused at <point>` on stderr), so the crash tests can
//! SIGKILL it at an exact moment: after a chunk's statuses were journaled, before the
//! write-back, in the middle of the write-back. Without the variable it does nothing. A second
//! hook lowers a limit that only large files reach otherwise.

use std::time::Duration;

/// The environment variable naming the point to pause at.
pub const VARIABLE: &str = "KKSYNC_TEST_PAUSE_AT";
/// How many seconds the pause lasts (default an hour, i.e. until killed); the tests that change
/// the source under a running sync let it go on after a short pause.
pub const SECONDS_VARIABLE: &str = "KKSYNC_TEST_PAUSE_SECONDS";

/// The environment variable that lowers how many rows may wait for the read-back's verdict
/// (`writeback::MAX_PENDING`), so that a test reaches the reader's wait with a small file.
pub const MAX_PENDING_VARIABLE: &str = "KKSYNC_TEST_MAX_PENDING";

/// `default`, unless the environment lowers it ([`MAX_PENDING_VARIABLE`]).
pub fn max_pending(default: usize) -> usize {
    std::env::var(MAX_PENDING_VARIABLE)
        .ok()
        .and_then(|cap| cap.parse().ok())
        .map_or(default, |cap: usize| cap.min(default))
}

/// The environment variable that lowers how many rows a run reads before the write-back
/// trails the send phase (`trail::MIN_ROWS`), so that a test's small file takes that path.
pub const TRAIL_AFTER_ROWS_VARIABLE: &str = "KKSYNC_TEST_TRAIL_AFTER_ROWS";

/// `default`, unless the environment lowers it ([`TRAIL_AFTER_ROWS_VARIABLE`]).
pub fn trail_after_rows(default: u64) -> u64 {
    std::env::var(TRAIL_AFTER_ROWS_VARIABLE)
        .ok()
        .and_then(|rows| rows.parse().ok())
        .map_or(default, |rows: u64| rows.min(default))
}

/// Pauses here if the environment asks for this point. Blocks the calling thread: call it
/// from a blocking thread, and only at rare moments (it reads the environment).
pub fn point(name: &str) {
    if std::env::var(VARIABLE).is_ok_and(|wanted| wanted == name) {
        eprintln!("kksync: paused at {name}");
        let seconds = std::env::var(SECONDS_VARIABLE)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3600);
        std::thread::sleep(Duration::from_secs(seconds));
    }
}
