//! The state store: what kksync knows between runs, in SQLite.
//!
//! Per order, the fingerprint of the payload the API last accepted, the last known
//! `paymentStatus` and the last error ([`orders`]); per run, when, what and how it ended
//! ([`runs`]). Statuses the API returns are committed here *before* they are written back into
//! the source, so a run killed at any moment loses nothing: the next run writes them back.
//!
//! For a SQLite source the tables live in the shop's database (prefixed `kksync_`); for a CSV
//! source in a sidecar file beside it (`orders.csv.kksync.db`), unless `--state` says otherwise.
//! The schema is created and upgraded by the numbered migrations in `sql/state/`.

pub mod lookahead;
pub mod orders;
pub mod runs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::cli::SourceFormat;

/// WAL pages (4 KiB each) a run may write before a commit checkpoints: 256 MiB.
const WAL_PAGES_BEFORE_CHECKPOINT: i64 = 65_536;

/// The migrations, in order. A migration is applied once, in its own transaction, and recorded
/// in `kksync_migrations`; never edit one that has shipped, add a new one.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../sql/state/0001_orders_and_runs.sql")),
    (2, include_str!("../../sql/state/0002_refunds.sql")),
    (3, include_str!("../../sql/state/0003_row_fingerprint.sql")),
    (4, include_str!("../../sql/state/0004_status_run.sql")),
    (
        5,
        include_str!("../../sql/state/0005_shop_wide_rejections_are_transient.sql"),
    ),
    (
        6,
        include_str!("../../sql/state/0006_moved_open_orders_index.sql"),
    ),
    (
        7,
        include_str!("../../sql/state/0007_oldest_open_bound.sql"),
    ),
    (
        8,
        include_str!("../../sql/state/0008_timestamps_as_integers.sql"),
    ),
];

/// How long to wait for another writer (the shop, or a concurrent reader's lock).
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`StateDb::empty_wal`] waits for a lock: for readers of an older snapshot to finish
/// (the write-back's read transactions are short) or a writer.
const WAL_EMPTYING_WAIT: Duration = Duration::from_millis(100);

/// The state store could not be used.
#[derive(Debug, thiserror::Error)]
#[error("state store {}: {action}: {source}", .path.display())]
pub struct StateError {
    /// The database file.
    pub path: PathBuf,
    /// What was being done.
    pub action: &'static str,
    /// The underlying error.
    pub source: rusqlite::Error,
}

/// Where the state of a source lives when `--state` does not say: in the database itself for
/// SQLite, beside the file for CSV.
pub fn default_path(source: &Path, format: SourceFormat) -> PathBuf {
    match format {
        SourceFormat::Sqlite => source.to_path_buf(),
        SourceFormat::Csv => {
            let mut name = source.as_os_str().to_owned();
            name.push(".kksync.db");
            PathBuf::from(name)
        }
    }
}

/// An open state store.
pub struct StateDb {
    path: PathBuf,
    connection: Connection,
    /// The store is in WAL mode (a sidecar of kksync's own, or a shop's database the shop put
    /// in WAL mode): a second connection may read while the first writes.
    wal: bool,
    /// A checkpoint running on a connection and thread of its own.
    checkpoint: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StateDb {
    fn drop(&mut self) {
        // The connection's own checkpoint at close runs after, and finds little left.
        if let Some(checkpoint) = self.checkpoint.take() {
            let _ = checkpoint.join();
        }
    }
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb").field("path", &self.path).finish()
    }
}

impl StateDb {
    /// Opens (creating if needed) the state store at `path` and brings its schema up to date.
    ///
    /// `shared` says the file is the shop's own database: its journal mode is then left as the
    /// shop set it. A sidecar file of kksync's own uses WAL, so readers do not block the
    /// writer and a committed journal entry survives a crash of kksync.
    pub fn open(path: &Path, shared: bool) -> Result<Self, StateError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection =
            Connection::open_with_flags(path, flags).map_err(error(path, "opening"))?;
        let mut db = StateDb {
            path: path.to_path_buf(),
            connection,
            wal: !shared,
            checkpoint: None,
        };
        db.connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(db.error("setting the busy timeout"))?;
        if !shared {
            let mode: String = db
                .connection
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(db.error("switching to WAL"))?;
            // A file system without shared memory keeps the rollback journal: no second
            // connection may then read while the first writes.
            db.wal = mode.eq_ignore_ascii_case("wal");
            // In WAL mode, NORMAL keeps every commit through a crash of kksync (SIGKILL, OOM);
            // only a power loss may drop the last commits, and then the next run resends
            // those orders (create-or-update, so harmless) instead of losing anything. FULL
            // would cost an fsync per chunk.
            db.connection
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(db.error("setting synchronous=NORMAL"))?;
            // A checkpoint runs inside the commit that crosses the limit, with two fsyncs,
            // while that stage holds the store: the reader waited for them. A status read-back
            // dirties nearly every page of the table (the paid orders are spread over all
            // numbers), so the default limit (4 MiB) checkpointed the table once per few
            // thousand statuses. Up to 256 MiB of WAL, the run commits without checkpointing;
            // the checkpoint at close then writes each page once.
            db.connection
                .pragma_update(None, "wal_autocheckpoint", WAL_PAGES_BEFORE_CHECKPOINT)
                .map_err(db.error("setting wal_autocheckpoint"))?;
        }
        if shared {
            db.wal = db.use_wal_of_the_shop()?;
        }
        db.migrate()?;
        Ok(db)
    }

    /// Whether the shop's database is in WAL mode (see [`commits_normal_in_wal`]).
    fn use_wal_of_the_shop(&self) -> Result<bool, StateError> {
        commits_normal_in_wal(&self.connection).map_err(self.error("reading the journal mode"))
    }

    /// A throw-away store in memory, for a dry run of a source that has no state yet.
    pub fn in_memory() -> Result<Self, StateError> {
        let path = PathBuf::from(":memory:");
        let connection = Connection::open_in_memory().map_err(error(&path, "opening"))?;
        let mut db = StateDb {
            path,
            connection,
            wal: false,
            checkpoint: None,
        };
        db.migrate()?;
        Ok(db)
    }

    /// Opens an existing state store for reading only (dry runs, `kksync runs`); `None` when
    /// there is none yet. Nothing is created or migrated.
    pub fn open_existing_read_only(path: &Path) -> Result<Option<Self>, StateError> {
        if !path.exists() {
            return Ok(None);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection =
            Connection::open_with_flags(path, flags).map_err(error(path, "opening read-only"))?;
        let db = StateDb {
            path: path.to_path_buf(),
            connection,
            wal: false,
            checkpoint: None,
        };
        db.connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(db.error("setting the busy timeout"))?;
        if db.applied_version()? == 0 {
            return Ok(None);
        }
        Ok(Some(db))
    }

    /// A second, read-only connection to a store in WAL mode, for a stage that reads order state
    /// while another stage writes it: it reads the last commit without waiting for the writer,
    /// where sharing this connection would wait for the writer's whole statement. `None` for a
    /// store that is not in WAL mode (a shop's database keeps the journal mode the shop chose;
    /// an in-memory store has no second connection).
    pub fn open_reader(&self) -> Result<Option<StateDb>, StateError> {
        self.open_second(OpenFlags::SQLITE_OPEN_READ_ONLY, "opening a reader")
    }

    /// A second connection that may write, on a store in WAL mode (`None` otherwise): for
    /// work beside the run's own writes ([`StateDb::refresh_oldest_open`], then
    /// [`StateDb::empty_wal`]). It reads with a small cache: what it does reads the
    /// table once, in order, which a small cache serves as well as the default one would, in
    /// a quarter of the memory beside the run's own.
    pub fn open_writer(&self) -> Result<Option<StateDb>, StateError> {
        let Some(writer) = self.open_second(
            OpenFlags::SQLITE_OPEN_READ_WRITE,
            "opening a second connection",
        )?
        else {
            return Ok(None);
        };
        writer
            .connection
            .pragma_update(None, "cache_size", -512)
            .map_err(writer.error("sizing the cache"))?;
        Ok(Some(writer))
    }

    /// Copies the whole WAL into the database and empties the file, unless readers of an
    /// older snapshot are still there after [`WAL_EMPTYING_WAIT`] (then it copies what it can
    /// and leaves the rest to the checkpoint at close). Called on a second connection once a
    /// run has written its last status: closing the store after a read-back otherwise cost
    /// 0.1 s after the write-back (copying, an fsync, freeing ~140 MB of WAL for a million
    /// orders); now that happens beside it. It holds the store's write lock while it copies,
    /// which by then only the record of the run's end waits for. Nothing depends on it.
    pub fn empty_wal(&self) {
        let emptied = self
            .connection
            .busy_timeout(WAL_EMPTYING_WAIT)
            .and_then(|()| {
                self.connection
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                        row.get::<_, i64>(0)
                    })
            })
            .map(|busy| busy == 0);
        tracing::debug!(?emptied, "emptying the WAL beside the write-back");
        let _ = self.connection.busy_timeout(BUSY_TIMEOUT);
    }

    /// A second connection to a store in WAL mode, with `flags`; `None` for another store.
    /// The WAL was set up by the first connection, which also checkpoints it.
    fn open_second(
        &self,
        flags: OpenFlags,
        action: &'static str,
    ) -> Result<Option<StateDb>, StateError> {
        if !self.wal {
            return Ok(None);
        }
        let connection =
            Connection::open_with_flags(&self.path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(self.error(action))?;
        let second = StateDb {
            path: self.path.clone(),
            connection,
            wal: false,
            checkpoint: None,
        };
        second
            .connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(second.error("setting the busy timeout"))?;
        Ok(Some(second))
    }

    /// Starts copying the WAL back into the database on a connection and thread of its own
    /// (a store in WAL mode only), unless such a copy is still running. A phase that dirtied much
    /// of the table calls this so that the checkpoint at close, which the run waits for,
    /// finds little left: a status read-back of a million orders dirties nearly every page.
    /// A checkpoint that fails or finds the database busy leaves the work to the one at
    /// close; nothing depends on it.
    pub fn checkpoint_in_background(&mut self) {
        if !self.wal || self.checkpoint.as_ref().is_some_and(|c| !c.is_finished()) {
            return;
        }
        if let Some(finished) = self.checkpoint.take() {
            let _ = finished.join();
        }
        let path = self.path.clone();
        let started = std::thread::Builder::new()
            .name("kksync-checkpoint".into())
            .spawn(move || {
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let checkpoint = Connection::open_with_flags(&path, flags).and_then(|db| {
                    db.busy_timeout(BUSY_TIMEOUT)?;
                    // PASSIVE: copies what it can without waiting for readers or writers.
                    db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                });
                if let Err(error) = checkpoint {
                    tracing::debug!(%error, "background checkpoint did not run; the one at close will");
                }
            });
        // A thread that cannot be started (an error, not a panic) leaves the work to the
        // checkpoint at close.
        match started {
            Ok(checkpoint) => self.checkpoint = Some(checkpoint),
            Err(error) => tracing::debug!(%error, "no thread for a background checkpoint"),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for the modules that own the tables.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The connection, mutably (transactions).
    pub fn connection_mut(&mut self) -> &mut Connection {
        &mut self.connection
    }

    /// Maps a SQLite error to a [`StateError`] saying what was being done.
    pub(crate) fn error(
        &self,
        action: &'static str,
    ) -> impl FnOnce(rusqlite::Error) -> StateError + use<> {
        error(&self.path, action)
    }

    fn applied_version(&self) -> Result<i64, StateError> {
        let exists: bool = self
            .connection
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kksync_migrations')",
                [],
                |row| row.get(0),
            )
            .map_err(self.error("reading the schema"))?;
        if !exists {
            return Ok(0);
        }
        self.connection
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM kksync_migrations",
                [],
                |row| row.get(0),
            )
            .map_err(self.error("reading the schema version"))
    }

    fn migrate(&mut self) -> Result<(), StateError> {
        self.connection
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS kksync_migrations (
                     version    INTEGER PRIMARY KEY,
                     applied_at TEXT NOT NULL
                 )",
            )
            .map_err(self.error("creating kksync_migrations"))?;
        let path = self.path.clone();
        for &(version, sql) in MIGRATIONS {
            // The check is repeated inside the transaction: two runs may start at once.
            let tx = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(error(&path, "starting a migration"))?;
            let applied: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM kksync_migrations WHERE version = ?1)",
                    [version],
                    |row| row.get(0),
                )
                .map_err(error(&path, "reading the schema version"))?;
            if applied {
                continue;
            }
            tx.execute_batch(sql)
                .map_err(error(&path, "applying a migration"))?;
            tx.execute(
                "INSERT INTO kksync_migrations (version, applied_at) VALUES (?1, ?2)",
                rusqlite::params![version, now_rfc3339()],
            )
            .map_err(error(&path, "recording a migration"))?;
            tx.commit()
                .map_err(error(&path, "committing a migration"))?;
            tracing::debug!(version, path = %path.display(), "state store migrated");
        }
        Ok(())
    }
}

fn error(path: &Path, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StateError + use<> {
    let path = path.to_path_buf();
    move |source| StateError {
        path,
        action,
        source,
    }
}

/// Whether a shop's database is in WAL mode, which it keeps either way. If it is, kksync's
/// connections need not wait for each other, and `connection` commits with
/// `synchronous=NORMAL` (a setting of this connection only, not the shop's): in WAL mode that
/// keeps every commit through a crash of kksync, and a power loss may drop only the last ones,
/// whose orders the next run resends and whose results it writes again, where FULL costs an
/// fsync per commit. In the rollback journal modes NORMAL could corrupt the database on a power
/// loss, so there the shop's setting stays.
pub(crate) fn commits_normal_in_wal(connection: &Connection) -> rusqlite::Result<bool> {
    let mode: String = connection.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
    let wal = mode.eq_ignore_ascii_case("wal");
    if wal {
        connection.pragma_update(None, "synchronous", "NORMAL")?;
    }
    Ok(wal)
}

/// The current time as seconds since the Unix epoch, as `kksync_order_state` stores it.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The current time as RFC 3339 (UTC, seconds), as the other state tables store it.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn csv_state_lives_beside_the_file_and_sqlite_state_inside_it() {
        assert_eq!(
            default_path(Path::new("/srv/shop/orders.csv"), SourceFormat::Csv),
            PathBuf::from("/srv/shop/orders.csv.kksync.db")
        );
        assert_eq!(
            default_path(Path::new("/srv/shop/shop.db"), SourceFormat::Sqlite),
            PathBuf::from("/srv/shop/shop.db")
        );
    }

    #[test]
    fn a_shop_database_keeps_its_journal_mode_and_in_wal_mode_commits_without_an_fsync_each() {
        let dir = tempfile::tempdir().unwrap();
        for mode in ["delete", "wal"] {
            let path = dir.path().join(format!("{mode}.db"));
            let shop = Connection::open(&path).unwrap();
            let set: String = shop
                .pragma_update_and_check(None, "journal_mode", mode, |row| row.get(0))
                .unwrap();
            assert_eq!(set, mode);
            let db = StateDb::open(&path, true).unwrap();
            let kept: String = db
                .connection()
                .pragma_query_value(None, "journal_mode", |row| row.get(0))
                .unwrap();
            assert_eq!(kept, mode, "the shop's choice stays");
            // 1 is NORMAL, 2 FULL (SQLite's default, which the shop's connections keep).
            let synchronous: i64 = db
                .connection()
                .pragma_query_value(None, "synchronous", |row| row.get(0))
                .unwrap();
            let shops: i64 = shop
                .pragma_query_value(None, "synchronous", |row| row.get(0))
                .unwrap();
            assert_eq!(shops, 2);
            let reader = db.open_reader().unwrap();
            match mode {
                "wal" => assert!(synchronous == 1 && reader.is_some(), "{mode}"),
                _ => assert!(synchronous == 2 && reader.is_none(), "{mode}"),
            }
        }
    }

    /// Rows of `kksync_order_state` in the database file itself, ignoring the WAL (0 while
    /// even the table is only in the WAL).
    fn rows_in_main_file(path: &Path) -> i64 {
        let uri = format!("file:{}?immutable=1", path.display());
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
        let connection = Connection::open_with_flags(uri, flags).unwrap();
        connection
            .query_row("SELECT count(*) FROM kksync_order_state", [], |row| {
                row.get(0)
            })
            .unwrap_or(0)
    }

    #[test]
    fn a_background_checkpoint_moves_the_wal_into_the_database_while_it_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut db = StateDb::open(&path, false).unwrap();
        db.connection()
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
                 INSERT INTO kksync_order_state (number, payment_status)
                 SELECT 'A' || i, 'UNPAID' FROM n",
            )
            .unwrap();
        // Committed, but only in the WAL: the large autocheckpoint limit holds it there.
        assert_eq!(rows_in_main_file(&path), 0);
        db.checkpoint_in_background();
        if let Some(checkpoint) = db.checkpoint.take() {
            checkpoint.join().unwrap();
        }
        assert_eq!(rows_in_main_file(&path), 500);
        // A store in the shop's own database is left to the shop's settings.
        let shop = dir.path().join("shop.db");
        let mut shared = StateDb::open(&shop, true).unwrap();
        shared.checkpoint_in_background();
        assert!(shared.checkpoint.is_none());
    }

    /// The WAL is emptied beside the run's open connections, unless a reader still reads an
    /// older snapshot: then it is left for the checkpoint at close, and nothing is lost.
    #[test]
    fn the_wal_is_emptied_beside_the_run_unless_a_reader_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let wal = dir.path().join("state.db-wal");
        let wal_size = || std::fs::metadata(&wal).unwrap().len();
        let db = StateDb::open(&path, false).unwrap();
        let insert = |number: &str| {
            db.connection()
                .execute(
                    "INSERT INTO kksync_order_state (number, payment_status) VALUES (?1, 'UNPAID')",
                    [number],
                )
                .unwrap();
        };
        insert("A1");
        let reader = db.open_reader().unwrap().unwrap();
        reader.connection().execute_batch("BEGIN").unwrap();
        assert!(reader.known("A1").unwrap().is_some());
        insert("A2");
        let writer = db.open_writer().unwrap().unwrap();
        writer.empty_wal();
        assert!(
            wal_size() > 0,
            "a reader of an older snapshot keeps the WAL"
        );
        assert!(reader.known("A2").unwrap().is_none());
        reader.connection().execute_batch("COMMIT").unwrap();
        writer.empty_wal();
        assert_eq!(wal_size(), 0);
        assert!(reader.known("A2").unwrap().is_some());
        assert!(db.known("A1").unwrap().is_some());
    }

    /// The reader's connection reads what the writer committed, including while the writer
    /// is in the middle of a transaction of its own; it cannot write.
    #[test]
    fn a_reader_connection_sees_every_commit_and_never_waits_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = StateDb::open(&dir.path().join("state.db"), false).unwrap();
        let reader = db.open_reader().unwrap().unwrap();
        let status = |db: &StateDb| db.known("A1").unwrap().and_then(|k| k.payment_status);
        assert_eq!(status(&reader), None);
        db.apply_read_back([("A1", "PAID")], 1, &mut |_| {})
            .unwrap();
        db.connection()
            .execute(
                "INSERT INTO kksync_order_state (number, payment_status) VALUES ('A1', 'UNPAID')",
                [],
            )
            .unwrap();
        assert_eq!(status(&reader).as_deref(), Some("UNPAID"));
        let writing = db.connection_mut().transaction().unwrap();
        writing
            .execute("UPDATE kksync_order_state SET payment_status = 'PAID'", [])
            .unwrap();
        // Not committed yet: the reader sees the last commit, at once (WAL: it does not wait
        // for the writer even while the writer commits).
        let mode: String = writing
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(status(&reader).as_deref(), Some("UNPAID"));
        writing.commit().unwrap();
        assert_eq!(status(&reader).as_deref(), Some("PAID"));
        assert!(
            reader
                .connection()
                .execute("DELETE FROM kksync_order_state", [])
                .is_err()
        );
        // The shop's own database and a store in memory get none.
        let shop = StateDb::open(&dir.path().join("shop.db"), true).unwrap();
        assert!(shop.open_reader().unwrap().is_none());
        assert!(
            StateDb::in_memory()
                .unwrap()
                .open_reader()
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn migrations_apply_once_and_reopening_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = StateDb::open(&path, false).unwrap();
        db.connection()
            .execute(
                "INSERT INTO kksync_order_state (number, payment_status) VALUES ('A1', 'PAID')",
                [],
            )
            .unwrap();
        drop(db);
        let db = StateDb::open(&path, false).unwrap();
        let status: String = db
            .connection()
            .query_row(
                "SELECT payment_status FROM kksync_order_state WHERE number = 'A1'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(status, "PAID");
        assert_eq!(
            Some(db.applied_version().unwrap()),
            MIGRATIONS.iter().map(|(v, _)| *v).max()
        );
    }

    #[test]
    fn rejections_recorded_before_migration_5_for_the_whole_shop_are_resent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = StateDb::open(&path, false).unwrap();
        // A store as an older version left it: migration 5 not applied, final rejections.
        db.connection()
            .execute_batch(
                "DELETE FROM kksync_migrations WHERE version = 5;
                 INSERT INTO kksync_order_state (number, last_error, error_transient) VALUES
                   ('S', 'rejected by the API: Shop not active', 0),
                   ('D', 'rejected by the API: Parameter initialDunningLevel can only be given when creating a new order', 0),
                   ('F', 'rejected by the API: Parameter date must not be in the future', 0);",
            )
            .unwrap();
        drop(db);
        let db = StateDb::open(&path, false).unwrap();
        let transient = |number: &str| -> i64 {
            db.connection()
                .query_row(
                    "SELECT error_transient FROM kksync_order_state WHERE number = ?1",
                    [number],
                    |row| row.get(0),
                )
                .unwrap()
        };
        assert_eq!((transient("S"), transient("D")), (1, 1));
        assert_eq!(
            transient("F"),
            0,
            "a rejection of the order itself stays final"
        );
    }

    /// A store as a kksync that knew the migrations up to `version` left it.
    fn store_at_version(path: &Path, version: i64) -> Connection {
        let connection = Connection::open(path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE kksync_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
            )
            .unwrap();
        for &(v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v <= version) {
            connection.execute_batch(sql).unwrap();
            connection
                .execute(
                    "INSERT INTO kksync_migrations VALUES (?1, '2026-01-01T00:00:00Z')",
                    [v],
                )
                .unwrap();
        }
        connection
    }

    #[test]
    fn migration_8_turns_the_order_times_into_integers_and_keeps_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let old = store_at_version(&path, 7);
        old.execute_batch(
            "INSERT INTO kksync_order_state VALUES
               ('A1', 7, '2026-11-20T02:00:00Z', '2026-11-01', 'PAID_PARTIAL',
                '2026-11-21T03:04:05Z', NULL, NULL, 0, 0, 3, -9, NULL),
               ('A2', NULL, NULL, NULL, NULL, NULL, 'rejected', 5, 1, 2, 3, NULL, NULL),
               ('A3', 8, 'not a time', '2026-11-02', 'UNPAID', NULL, NULL, NULL, 0, 0, 3, 1, 3);",
        )
        .unwrap();
        drop(old);
        let db = StateDb::open(&path, false).unwrap();
        let stored = |number: &str| -> (String, Option<i64>, Option<i64>) {
            db.connection()
                .query_row(
                    "SELECT typeof(accepted_at), accepted_at, status_at
                     FROM kksync_order_state WHERE number = ?1",
                    [number],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .unwrap()
        };
        let (kind, accepted, status) = stored("A1");
        assert_eq!(kind, "integer");
        assert_eq!(
            accepted,
            Some(datetime!(2026-11-20 02:00 UTC).unix_timestamp())
        );
        assert_eq!(
            status,
            Some(datetime!(2026-11-21 03:04:05 UTC).unix_timestamp())
        );
        let a1 = db.known("A1").unwrap().unwrap();
        assert_eq!(a1.accepted_at, Some(datetime!(2026-11-20 02:00 UTC)));
        assert_eq!(
            (
                a1.accepted_fingerprint,
                a1.payment_status.as_deref(),
                a1.row_fingerprint
            ),
            (Some(7), Some("PAID_PARTIAL"), Some(orders::from_sql(-9)))
        );
        let a2 = db.known("A2").unwrap().unwrap();
        assert_eq!(
            (
                a2.last_error.as_deref(),
                a2.error_fingerprint,
                a2.error_transient
            ),
            (Some("rejected"), Some(5), true)
        );
        // Not a time: unknown, which `--resend-open-after` treats as due.
        assert_eq!(stored("A3").1, None);
        assert_eq!(db.known("A3").unwrap().unwrap().status_run, Some(3));
        // The index of migration 6 is back (its query plan is checked in `orders`).
        let indexes: i64 = db
            .connection()
            .query_row(
                "SELECT count(*) FROM sqlite_master
                 WHERE type = 'index' AND name = 'kksync_order_state_moved_open'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 1);
        // An older kksync still writes text: read as well.
        db.connection()
            .execute(
                "UPDATE kksync_order_state SET accepted_at = '2026-11-22T01:00:00Z' WHERE number = 'A3'",
                [],
            )
            .unwrap();
        assert_eq!(
            db.known("A3").unwrap().unwrap().accepted_at,
            Some(datetime!(2026-11-22 01:00 UTC))
        );
    }

    #[test]
    fn read_only_open_of_a_missing_store_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.db");
        assert!(StateDb::open_existing_read_only(&path).unwrap().is_none());
        assert!(!path.exists());
    }
}
