//! The few file operations that make the log durable, behind a trait so tests can make them
//! fail (a full disk, a failed fdatasync) or skip the syncs (a crash is simulated there by
//! cutting the files, not by losing power). docs/architecture.md §10.3.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Writes, syncs and truncations of segment files and the log's directory.
pub(crate) trait FileOps: Send {
    /// Writes all of `buf` at `offset`. It may fail part way (ENOSPC, EFBIG); the log then
    /// truncates back to `offset`.
    fn write_at(&mut self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    /// fdatasync: the written bytes and the file's length are on disk when it returns.
    fn sync_data(&mut self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    fn set_len(&mut self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    /// fsync of the directory, so a created or removed segment's name is on disk.
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The real thing.
pub(crate) struct Direct;

impl FileOps for Direct {}
