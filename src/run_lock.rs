//! One run per source at a time: an exclusive lock on a file beside the source, held for the
//! whole run and released by the operating system when the process ends, however it ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// The lock file of a source: `orders.csv` → `orders.csv.kksync.lock` in the same folder.
pub fn lock_path(source: &Path) -> PathBuf {
    let mut name = source
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".kksync.lock");
    source.with_file_name(name)
}

/// Takes the lock or fails at once with [`Error::AlreadyRunning`]. The lock file is left in
/// place afterwards: removing it could let two runs lock two different files.
///
/// A source that does not exist is refused here, before the lock file (or, after it, a state
/// store or an empty SQLite database) is created beside a mistyped name.
pub fn acquire(source: &Path) -> Result<RunLock, Error> {
    if let Err(error) = std::fs::metadata(source) {
        return Err(Error::Source(crate::source::SourceError::Io {
            path: source.to_path_buf(),
            action: "opening",
            source: error,
        }));
    }
    let path = lock_path(source);
    let io = |source| Error::Io {
        context: format!("opening the lock file {}", path.display()),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(Error::AlreadyRunning { path }),
        Err(TryLockError::Error(error)) => Err(io(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_source_is_refused_without_leaving_a_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("typo.db");
        let error = acquire(&source).unwrap_err();
        assert!(matches!(error, Error::Source(_)), "{error}");
        assert!(error.to_string().contains("typo.db"), "{error}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_second_lock_on_the_same_source_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("orders.csv");
        std::fs::write(&source, "number\n").unwrap();
        assert_eq!(
            lock_path(&source),
            dir.path().join("orders.csv.kksync.lock")
        );
        let first = acquire(&source).unwrap();
        assert!(matches!(
            acquire(&source),
            Err(Error::AlreadyRunning { .. })
        ));
        drop(first);
        assert!(acquire(&source).is_ok());
    }
}
