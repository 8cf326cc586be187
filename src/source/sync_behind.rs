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
//! is therefore kept, and once it failed every later write, flush and [`SyncBehind::finish`]
//! fails, so the rewrite is never renamed over the source. (A write that started a failed
//! sync still reports the bytes it wrote: a writer told they were not written would write
//! them again, see [`Write::write`].)
//!
//! Where the file system offers it, the bytes go to the disk directly instead (see
//! [`super::direct`]): then there is nothing to sync behind, and the caller's final fsync
//! writes only the file's length and flushes the disk's cache.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::thread::JoinHandle;

use tempfile::NamedTempFile;

use super::direct::DirectFile;

/// Bytes written between two syncs of what was written so far.
const SYNC_EVERY: u64 = 32 << 20;

/// Writes a temporary file and syncs it behind the writer (see the module). `&SyncBehind`
/// writes too, for the few bytes a CSV writer must not quote (see
/// `csv::write_blank_lines`), which can only reach it through `get_ref`.
#[derive(Debug)]
pub(crate) struct SyncBehind(RefCell<Behind>);

impl SyncBehind {
    /// Writes to `temp` (empty), directly where the file system allows.
    pub(crate) fn new(temp: NamedTempFile) -> Self {
        SyncBehind(RefCell::new(Behind::new(temp)))
    }

    /// Waits for the sync under way (or writes the direct tail) and returns the file, or the
    /// error a sync met. The caller still syncs the whole file (the tail written since is not
    /// on disk yet).
    pub(crate) fn finish(self) -> io::Result<NamedTempFile> {
        self.0.into_inner().finish()
    }

    /// Copies at most `limit` bytes of `reader` (fewer at its end) into the file; returns how
    /// many. Direct writes read them straight into their buffer, without a buffer in between
    /// (the CSV patch's copy took 169 instead of 230 `perf` samples of an incremental run of a
    /// million orders).
    pub(crate) fn copy_from(&mut self, reader: &mut impl Read, limit: u64) -> io::Result<u64> {
        self.0.get_mut().copy_from(reader, limit)
    }
}

impl Write for SyncBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.get_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.get_mut().flush()
    }
}

impl Write for &SyncBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .try_borrow_mut()
            .map_err(io::Error::other)?
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.try_borrow_mut().map_err(io::Error::other)?.flush()
    }
}

/// What [`SyncBehind`] holds.
#[derive(Debug)]
struct Behind {
    temp: NamedTempFile,
    /// Bytes written since the last sync began.
    unsynced: u64,
    /// The sync running in the helper thread, if any.
    syncing: Option<JoinHandle<io::Result<()>>>,
    /// The first failure of a sync, returned by every call after it.
    failed: Option<(io::ErrorKind, String)>,
    every: u64,
    /// Direct writes, while the file system takes them.
    direct: Option<DirectFile>,
}

impl Behind {
    fn new(temp: NamedTempFile) -> Self {
        let direct = DirectFile::open(temp.path());
        Behind {
            direct,
            ..Self::buffered(temp)
        }
    }

    /// Writes to `temp` through the page cache.
    fn buffered(temp: NamedTempFile) -> Self {
        Behind {
            temp,
            unsynced: 0,
            syncing: None,
            failed: None,
            every: SYNC_EVERY,
            direct: None,
        }
    }

    fn finish(mut self) -> io::Result<NamedTempFile> {
        let refused = match &mut self.direct {
            Some(direct) => match direct.finish() {
                Ok(()) => None,
                // A file under the buffer's size meets its first direct write here.
                Err(error) if refused_at_once(direct, &error) => Some(error),
                Err(error) => return Err(error),
            },
            None => None,
        };
        if let Some(error) = refused {
            self.fall_back_to_buffered(&error)?;
        }
        self.wait();
        self.check()?;
        Ok(self.temp)
    }

    /// See [`SyncBehind::copy_from`].
    fn copy_from(&mut self, reader: &mut impl Read, limit: u64) -> io::Result<u64> {
        let mut copied = 0;
        while copied < limit {
            self.check()?;
            let Some(direct) = &mut self.direct else {
                break;
            };
            let wanted = usize::try_from(limit - copied).unwrap_or(usize::MAX);
            let error = match direct.gather_from(reader, wanted) {
                Ok(0) => return Ok(copied),
                Ok(read) => {
                    copied += read as u64;
                    continue;
                }
                Err(error) => error,
            };
            if !refused_at_once(direct, &error) {
                return Err(error);
            }
            self.fall_back_to_buffered(&error)?;
        }
        if copied < limit {
            copied += io::copy(&mut reader.take(limit - copied), self)?;
        }
        Ok(copied)
    }

    /// The first failure of a sync, if any.
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    /// Starts syncing what was written so far, unless a sync is still running (then the next
    /// write that passes the mark tries again).
    fn sync_behind(&mut self) {
        if self.syncing.as_ref().is_some_and(|s| !s.is_finished()) {
            return;
        }
        self.wait();
        let started = self.temp.as_file().try_clone().and_then(|file| {
            std::thread::Builder::new()
                .name("kksync-sync".into())
                .spawn(move || file.sync_data())
        });
        match started {
            Ok(syncing) => self.syncing = Some(syncing),
            Err(error) => self.fail(&error),
        }
        self.unsynced = 0;
    }

    /// Waits for the sync under way, if any, and keeps its error.
    fn wait(&mut self) {
        match self.syncing.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => {}
            Some(Ok(Err(error))) => self.fail(&error),
            Some(Err(_)) => self.fail(&io::Error::other("the syncing thread panicked")),
        }
    }

    fn fail(&mut self, error: &io::Error) {
        if self.failed.is_none() {
            self.failed = Some((error.kind(), format!("syncing the new file: {error}")));
        }
    }

    /// The file system refused the first direct write: what was gathered goes through the
    /// page cache instead, and so does all that follows.
    fn fall_back_to_buffered(&mut self, refused: &io::Error) -> io::Result<()> {
        tracing::debug!(error = %refused, "direct writes refused; writing through the page cache");
        let pending = self.direct.take().map(|d| d.pending().to_vec());
        self.temp.write_all(&pending.unwrap_or_default())
    }
}

/// The file system refused the first direct write (EINVAL): it takes direct opens but not
/// writes (or not with this alignment), and nothing reached the file yet.
fn refused_at_once(direct: &DirectFile, error: &io::Error) -> bool {
    direct.untouched() && error.raw_os_error() == Some(libc::EINVAL)
}

impl Write for Behind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        if let Some(direct) = &mut self.direct {
            let error = match direct.gather(buf) {
                Ok(taken) => return Ok(taken),
                Err(error) => error,
            };
            if !refused_at_once(direct, &error) {
                return Err(error);
            }
            self.fall_back_to_buffered(&error)?;
        }
        let written = self.temp.write(buf)?;
        self.unsynced += written as u64;
        if self.unsynced >= self.every {
            // A failure shows from the next call on.
            self.sync_behind();
        }
        Ok(written)
    }

    /// Direct writes keep the last partial block until [`SyncBehind::finish`]: a block is
    /// written whole, once.
    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        self.temp.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_start_behind_the_writer_and_the_file_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut behind = Behind::buffered(NamedTempFile::new_in(dir.path()).unwrap());
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

    /// Writes `bytes` in pieces through a writer whose direct writes the file system refuses
    /// (a misaligned buffer stands in for one that takes direct opens but not writes), and
    /// checks that the file holds every byte; `None` where there are no direct writes at all.
    fn written_with_direct_writes_refused(bytes: &[u8], piece: usize) -> Option<()> {
        // In the crate's folder: `/tmp` may be a tmpfs without direct writes.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let mut behind = Behind::new(NamedTempFile::new_in(dir.path()).unwrap());
        let Some(direct) = &mut behind.direct else {
            eprintln!("no direct writes on this file system; nothing to test");
            return None;
        };
        direct.misalign();
        for piece in bytes.chunks(piece) {
            behind.write_all(piece).unwrap();
        }
        let temp = behind.finish().unwrap();
        assert_eq!(std::fs::read(temp.path()).unwrap(), bytes);
        Some(())
    }

    #[test]
    fn a_file_system_refusing_the_first_direct_write_gets_every_byte_through_the_cache() {
        // More than the buffer: refused in a write, with a buffer's worth gathered.
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        written_with_direct_writes_refused(&bytes, 70_001);
    }

    /// Copies `bytes` into a new file in pieces of `piece` bytes with `copy_from`, mixed with
    /// plain writes, and checks the file holds them all; `refuse` misaligns the direct buffer.
    fn copied(bytes: &[u8], piece: u64, refuse: bool) {
        // In the crate's folder: `/tmp` may be a tmpfs without direct writes.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let mut behind = SyncBehind::new(NamedTempFile::new_in(dir.path()).unwrap());
        if refuse && let Some(direct) = &mut behind.0.get_mut().direct {
            direct.misalign();
        }
        let mut reader = bytes;
        behind.write_all(&reader[..3]).unwrap();
        reader = &reader[3..];
        loop {
            let copied = behind.copy_from(&mut reader, piece).unwrap();
            assert!(copied <= piece);
            if copied < piece {
                break;
            }
        }
        assert!(reader.is_empty());
        assert_eq!(behind.copy_from(&mut reader, piece).unwrap(), 0);
        let temp = behind.finish().unwrap();
        assert_eq!(std::fs::read(temp.path()).unwrap(), bytes);
    }

    #[test]
    fn copies_read_straight_into_direct_writes_keep_every_byte() {
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for piece in [1, 4096, 700_001, 5_000_000] {
            copied(
                &bytes[..if piece == 1 { 10_000 } else { bytes.len() }],
                piece,
                false,
            );
        }
        // The first direct write refused on the way: the rest goes through the cache.
        copied(&bytes, 700_001, true);
        // Without direct writes at all.
        let dir = tempfile::tempdir().unwrap();
        let mut behind = Behind::buffered(NamedTempFile::new_in(dir.path()).unwrap());
        assert_eq!(
            behind.copy_from(&mut &bytes[..], u64::MAX).unwrap(),
            3_000_000
        );
        let temp = behind.finish().unwrap();
        assert_eq!(std::fs::read(temp.path()).unwrap(), bytes);
    }

    #[test]
    fn a_small_file_whose_only_direct_write_is_refused_goes_through_the_cache() {
        // Less than the buffer: the first direct write comes with the finish.
        written_with_direct_writes_refused(b"number,amount\nA-1,1.00\n", 7);
    }

    #[test]
    fn a_failed_sync_fails_every_later_call_and_the_finish() {
        let dir = tempfile::tempdir().unwrap();
        let mut behind = Behind::buffered(NamedTempFile::new_in(dir.path()).unwrap());
        behind.every = 10;
        behind.write_all(b"0123456789").unwrap();
        // The sync under way fails (as a disk error would).
        behind.wait();
        let failing = std::thread::spawn(|| Err(io::Error::other("EIO")));
        while !failing.is_finished() {
            std::thread::yield_now();
        }
        behind.syncing = Some(failing);
        behind.unsynced = 0;
        behind.write_all(b"0123456789").unwrap();
        // The write that started the next sync collected the failure: from now on, no call
        // succeeds, however often it is retried.
        for _ in 0..2 {
            assert!(behind.write(b"x").is_err());
            assert!(behind.flush().is_err());
        }
        let error = behind.finish().unwrap_err();
        assert!(error.to_string().contains("EIO"), "{error}");
    }
}
