//! The temporary file of an atomic rewrite, put on disk while it is being written.
//!
//! A rewrite must be on disk before it is renamed over the source, so it ends with an fsync.
//! Left to the end, that fsync waits for the whole file: a quarter of a second for a CSV of a
//! million orders (384 MB), on top of the time it took to write. [`SyncBehind`] has a helper
//! thread sync the data written so far every [`SYNC_EVERY`] bytes, so the disk writes
//! overlap the rewrite and the final fsync waits only for the tail.
//!
//! The helper syncs through a second handle of the same open file, so a write error the
//! kernel reports to it would not be reported again to the final fsync: the helper's result
//! is therefore checked, at the next sync and in [`SyncBehind::finish`], and fails the rewrite.

use std::io::{self, Write};
use std::thread::JoinHandle;

use tempfile::NamedTempFile;

/// Bytes written between two syncs of what was written so far.
const SYNC_EVERY: u64 = 32 << 20;

/// Writes a temporary file and syncs it behind the writer (see the module).
#[derive(Debug)]
pub(crate) struct SyncBehind {
    temp: NamedTempFile,
    /// Bytes written since the last sync began.
    unsynced: u64,
    /// The sync running in the helper thread, if any.
    syncing: Option<JoinHandle<io::Result<()>>>,
    every: u64,
}

impl SyncBehind {
    /// Writes to `temp`.
    pub(crate) fn new(temp: NamedTempFile) -> Self {
        SyncBehind {
            temp,
            unsynced: 0,
            syncing: None,
            every: SYNC_EVERY,
        }
    }

    /// The file, for writes that bypass the writer (a few bytes: they are not counted).
    pub(crate) fn as_file(&self) -> &std::fs::File {
        self.temp.as_file()
    }

    /// Waits for the sync under way and returns the file, or the error that sync met. The
    /// caller still syncs the whole file (the tail written since is not on disk yet).
    pub(crate) fn finish(mut self) -> io::Result<NamedTempFile> {
        self.wait()?;
        Ok(self.temp)
    }

    /// Starts syncing what was written so far, unless a sync is still running (then the next
    /// write that passes the mark tries again).
    fn sync_behind(&mut self) -> io::Result<()> {
        if self.syncing.as_ref().is_some_and(|s| !s.is_finished()) {
            return Ok(());
        }
        self.wait()?;
        let file = self.temp.as_file().try_clone()?;
        self.syncing = Some(std::thread::spawn(move || file.sync_data()));
        self.unsynced = 0;
        Ok(())
    }

    /// Waits for the sync under way, if any, and returns its error.
    fn wait(&mut self) -> io::Result<()> {
        match self.syncing.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(error))) => Err(error),
            Some(Err(_)) => Err(io::Error::other("syncing the new file failed")),
        }
    }
}

impl Write for SyncBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.temp.write(buf)?;
        self.unsynced += written as u64;
        if self.unsynced >= self.every {
            self.sync_behind()?;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_start_behind_the_writer_and_the_file_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut behind = SyncBehind::new(NamedTempFile::new_in(dir.path()).unwrap());
        behind.every = 1000;
        let chunk = [7u8; 300];
        for _ in 0..3 {
            behind.write_all(&chunk).unwrap();
        }
        assert!(behind.syncing.is_none(), "900 bytes: no sync yet");
        behind.write_all(&chunk).unwrap();
        assert!(behind.syncing.is_some(), "1200 bytes: a sync began");
        assert_eq!(behind.unsynced, 0);
        for _ in 0..10 {
            behind.write_all(&chunk).unwrap();
        }
        let temp = behind.finish().unwrap();
        assert_eq!(std::fs::read(temp.path()).unwrap(), [7u8; 4200]);
    }
}
