//! The run history (`kksync_runs`): a row is written when a run starts and completed when it
//! ends, so a run that was killed shows as unfinished.

use serde::Serialize;

use super::{StateDb, StateError, now_rfc3339};

/// One past (or running, or killed) run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    /// Its id in the store.
    pub id: i64,
    /// `sync`, `ordersync`, `refunds`.
    pub command: String,
    /// The source it worked on.
    pub source: String,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// When it ended; `None` while running or when it was killed.
    pub ended_at: Option<String>,
    /// The effective options (no secrets).
    pub options: serde_json::Value,
    /// The counts at the end.
    pub counts: Option<serde_json::Value>,
    /// Its exit code; `None` while running or when it was killed.
    pub exit_code: Option<i32>,
}

impl StateDb {
    /// Records the start of a run and returns its id.
    pub fn begin_run(
        &self,
        command: &str,
        source: &str,
        options: &serde_json::Value,
    ) -> Result<i64, StateError> {
        self.connection()
            .execute(
                "INSERT INTO kksync_runs (command, source, started_at, options, keeps_oldest_open)
                 VALUES (?1, ?2, ?3, ?4, 1)",
                rusqlite::params![command, source, now_rfc3339(), options.to_string()],
            )
            .map_err(self.error("recording the start of the run"))?;
        Ok(self.connection().last_insert_rowid())
    }

    /// Records how a run ended.
    pub fn finish_run(
        &self,
        id: i64,
        counts: &serde_json::Value,
        exit_code: i32,
    ) -> Result<(), StateError> {
        self.connection()
            .execute(
                "UPDATE kksync_runs SET ended_at = ?2, counts = ?3, exit_code = ?4 WHERE id = ?1",
                rusqlite::params![id, now_rfc3339(), counts.to_string(), exit_code],
            )
            .map_err(self.error("recording the end of the run"))?;
        Ok(())
    }

    /// The newest `limit` runs, newest first.
    pub fn runs(&self, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        let mut statement = self
            .connection()
            .prepare(
                "SELECT id, command, source, started_at, ended_at, options, counts, exit_code
                 FROM kksync_runs ORDER BY id DESC LIMIT ?1",
            )
            .map_err(self.error("reading the run history"))?;
        let rows = statement
            .query_map([limit], |row| {
                let options: String = row.get(5)?;
                let counts: Option<String> = row.get(6)?;
                Ok(RunRecord {
                    id: row.get(0)?,
                    command: row.get(1)?,
                    source: row.get(2)?,
                    started_at: row.get(3)?,
                    ended_at: row.get(4)?,
                    // A row written by kksync always holds JSON; anything else is shown as null
                    // rather than failing the listing.
                    options: serde_json::from_str(&options).unwrap_or(serde_json::Value::Null),
                    counts: counts.and_then(|c| serde_json::from_str(&c).ok()),
                    exit_code: row.get(7)?,
                })
            })
            .map_err(self.error("reading the run history"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.error("reading the run history"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_listed_unfinished_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s.db"), false).unwrap();
        let options = serde_json::json!({"full": false});
        let first = db.begin_run("sync", "orders.csv", &options).unwrap();
        let second = db.begin_run("sync", "orders.csv", &options).unwrap();
        db.finish_run(second, &serde_json::json!({"rows_read": 5}), 3)
            .unwrap();
        let runs = db.runs(10).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].id, second);
        assert_eq!(runs[0].exit_code, Some(3));
        assert_eq!(runs[0].counts, Some(serde_json::json!({"rows_read": 5})));
        assert_eq!(runs[1].id, first);
        assert_eq!(runs[1].ended_at, None);
        assert_eq!(runs[1].options, options);
    }
}
