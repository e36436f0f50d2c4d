//! The append-only segment log under the `local` engine (docs/architecture.md §10.3): records
//! and segments, group commit, recovery. It knows nothing of events: the ledger
//! (`../ledger`) gives the records their meaning and keeps the index of what is pending.
//!
//! **Segments.** The log is a directory of files `NNNNNNNNNNNNNNNNNNNN.seg`, each named by the
//! seq of its first record (20 digits), each opening with a 24-byte header (magic, format
//! version, first seq, crc32c). Records are length-prefixed and checksummed (crc32c), with a
//! kind byte for the caller, batch flags and a u64 seq one more than the previous record's,
//! across segments (the layout is in `format.rs`). A batch is never split across segments: a
//! new segment is started before a batch that would take the active one past
//! [`Options::segment_bytes`] (so only a single batch larger than that makes a larger file).
//!
//! **Group commit.** [`Log::append`] takes a whole batch, encodes it into one buffer, writes it
//! with one positioned write at the end of the active segment and makes it durable with one
//! `fdatasync`; it returns only then, with the seqs the batch got. A batch that reaches past
//! what the file holds is written with [`Options::ahead`] zeros after it, which the next batches
//! overwrite: the file grows once per MiB, not with every commit (an `fdatasync` of a file
//! that grew also writes its size and new blocks' metadata; docs/architecture.md §10.3,
//! "Zeros written ahead"). Starting a segment costs
//! a header write, an fdatasync and an fsync of the directory more. The journal's writer thread
//! (`writer.rs`) calls it once per group commit. Its cost per group commit: the encoding (one
//! copy of the payloads and a crc32c over them, hardware-accelerated) plus one `pwrite` and
//! one `fdatasync` — the durable floor of the benchmark (`bench/src/durable_floor.rs`).
//!
//! **In memory**: the list of segments (first seq and path each), the active segment's file
//! and length, the next seq, and the encoding buffer (as large as the largest recent batch;
//! dropped when past 4 MiB). Nothing per record: recovery streams the records through a 64 KiB
//! read buffer ([`Log::records_after`]), and the caller decides what it keeps.
//!
//! **Recovery** ([`Log::open`]) lists the segments, checks every header, and scans the last
//! segment to find its end: the end of the file, or zeros from a batch boundary to it (the
//! zeros written ahead; zeros with anything after them are damage). A torn tail of the last segment — what a crash in the middle of
//! its last write leaves — is cut off (the file is truncated to the end of its last whole
//! batch) and reported in [`Recovery::torn`]; every other damage is `JournalError::Corrupt`
//! naming the file and the byte offset. The rule that tells them apart: damage a torn write
//! can leave (a record cut short by the end of the file, an impossible length, a checksum
//! that does not match, a batch without its last record at the end of the file) is a torn
//! tail only in the last segment and only when **no whole, checksummed record opening a batch
//! starts anywhere after it** in that segment. Batches are written one at a time, each after
//! the previous one's fdatasync returned, so a batch followed by the start of another was
//! acknowledged: damage in it is corruption. Records are then read back with
//! [`Log::records_after`] (from a checkpoint, once the engine keeps them), which checks
//! every record it reads, earlier segments included, and ends with `Corrupt` at the first
//! damage instead of skipping it. A batch is returned whole or not at all.
//!
//! **Full disk.** A write that fails (ENOSPC, EFBIG, EIO) fails the batch with
//! `JournalError::Io` saying so; the segment is truncated back to where the batch started, so
//! the log is as before it and takes the next batch once there is room. A failed
//! `fdatasync` also fails the batch and truncates it away, but then the log refuses every
//! further write until it is opened again: after a failed fsync the kernel may have dropped
//! the dirty pages, so a retried fsync could succeed without the data being on disk.
//!
//! **Deletion** of whole segments ([`Log::delete_before`]) is the caller's decision: when
//! every delivery in them is settled and they are past retention.

mod format;
pub(crate) mod io;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{self, File, TryLockError};
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use format::MAX_PAYLOAD;
pub use scan::Records;

use self::io::{Direct, FileOps};
use format::{FIRST, HEADER_LEN, LAST, encode_header, encode_record};
use scan::{LastScan, ToRead, check_header, header_torn, io_error, scan_last};

use super::JournalError;

/// The lock file in the log's directory, held while a [`Log`] is open.
const LOCK_FILE: &str = "LOCK";
const SEGMENT_SUFFIX: &str = ".seg";
/// An encoding buffer larger than this is not kept for the next batch.
const KEEP_BUFFER: usize = 4 * 1024 * 1024;

/// How the log is laid out.
#[derive(Clone, Debug)]
pub struct Options {
    /// A new segment is started before a batch that would take the active one past this.
    pub segment_bytes: u64,
    /// Zeros written past a batch that reaches the end of what the file holds (module docs):
    /// 1 MiB; the tests make it small, to keep their files small.
    pub ahead: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 * 1024 * 1024,
            ahead: 1024 * 1024,
        }
    }
}

/// Where a batch starts: its segment (by first seq), its byte offset there, and its first
/// record's seq. [`Log::append`] reports it; [`View::records_from`] reads from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
    pub seq: u64,
}

/// What readers need to read the log while its writer appends: the segments and where the
/// durable records end. A snapshot ([`Log::view`]); records appended later are not in it.
#[derive(Clone, Debug, Default)]
pub struct View {
    segments: std::sync::Arc<Vec<(u64, PathBuf)>>,
    active_len: u64,
    next_seq: u64,
}

impl View {
    /// The records from the batch at `from` on, with a seq above `after`, checked as they are
    /// read (like [`Log::records_after`]).
    pub fn records_from(&self, from: Position, after: u64) -> Result<Records, JournalError> {
        let i = self
            .segments
            .iter()
            .position(|(first, _)| *first == from.segment)
            .ok_or_else(|| {
                JournalError::corrupt(
                    format!("segment {}", from.segment),
                    "the log no longer has it, yet a record in it is wanted",
                )
            })?;
        let count = self.segments.len();
        let segments = self.segments[i..]
            .iter()
            .enumerate()
            .map(|(j, (first, path))| ToRead {
                first_seq: *first,
                path: path.clone(),
                end: (i + j + 1 == count).then_some(self.active_len),
            })
            .collect();
        Ok(Records::starting_at(
            segments,
            (from.offset, from.seq),
            after,
            self.next_seq,
        ))
    }

    /// The seq the next record will get: records below it are readable.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// A record to append: the caller's kind byte and its payload.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

/// A record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// A torn tail cut off by recovery: bytes of a batch whose write never completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Torn {
    pub file: PathBuf,
    /// Where the segment was cut: the end of its last whole batch (0 when the segment's
    /// header was incomplete and the file was removed).
    pub offset: u64,
    /// How many bytes were dropped.
    pub dropped: u64,
    /// What was found there, and at which offset.
    pub why: String,
}

/// What [`Log::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The seq of the oldest record still in the log (segments before it were deleted).
    pub first_seq: u64,
    /// The seq the next appended record gets.
    pub next_seq: u64,
    pub segments: usize,
    pub torn: Option<Torn>,
}

impl Recovery {
    /// The last record's seq; `None` when no record was ever appended.
    pub fn last_seq(&self) -> Option<u64> {
        self.next_seq.checked_sub(1).filter(|&s| s > 0)
    }
}

struct Segment {
    first_seq: u64,
    path: PathBuf,
}

/// The open log; one writer (it holds the directory's lock).
pub struct Log {
    dir: PathBuf,
    options: Options,
    ops: Box<dyn FileOps>,
    _lock: File,
    /// Oldest first; the last one is the active segment, never empty of a header.
    segments: VecDeque<Segment>,
    active: File,
    /// The end of the active segment's last durable batch.
    active_len: u64,
    /// The active segment's file length: from `active_len` to here it holds zeros written
    /// ahead.
    written_end: u64,
    next_seq: u64,
    buf: Vec<u8>,
    /// Why writes are refused until the log is opened again.
    poisoned: Option<String>,
    /// Where the last appended batch starts.
    last_batch: Option<Position>,
    /// `segments` as readers get them ([`Log::view`]), rebuilt when a segment comes or goes.
    listed: std::sync::Arc<Vec<(u64, PathBuf)>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("active_len", &self.active_len)
            .field("next_seq", &self.next_seq)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens the log in `dir` (created when missing), recovering it as the module docs say.
    /// `Locked` when another [`Log`] has it open.
    pub fn open(dir: &Path, options: Options) -> Result<(Log, Recovery), JournalError> {
        Log::open_with(dir, options, Box::new(Direct))
    }

    pub(crate) fn open_with(
        dir: &Path,
        options: Options,
        mut ops: Box<dyn FileOps>,
    ) -> Result<(Log, Recovery), JournalError> {
        fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;
        let lock = lock(dir)?;
        let mut segments = list_segments(dir)?;
        let mut torn = None;
        let mut tail_may_be_torn = true;
        // The seq a new first segment starts at: 1, or that of a segment never written to.
        let mut fresh_seq = 1;
        // Every header but the last segment's is checked before anything is cut or removed.
        for segment in segments.iter().rev().skip(1) {
            let mut file =
                File::open(&segment.path).map_err(|e| io_error("opening", &segment.path, e))?;
            check_header(&segment.path, &mut file, segment.first_seq)?;
        }
        // The last segment: a header the crash left incomplete, a torn tail, or whole.
        let scanned: Option<(File, LastScan)> = loop {
            let Some(last) = segments.back() else {
                break None;
            };
            let path = last.path.clone();
            let first_seq = last.first_seq;
            let mut file = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_error("opening", &path, e))?;
            let len = file
                .metadata()
                .map_err(|e| io_error("reading", &path, e))?
                .len();
            if tail_may_be_torn && header_torn(&path, &mut file, len)? {
                // Created but never written to: its header is synced before any record.
                drop(file);
                fs::remove_file(&path).map_err(|e| io_error("removing", &path, e))?;
                ops.sync_dir(dir).map_err(|e| io_error("syncing", dir, e))?;
                torn = Some(Torn {
                    file: path,
                    offset: 0,
                    dropped: len,
                    why: "the segment's header is incomplete: it was being created".into(),
                });
                segments.pop_back();
                fresh_seq = first_seq;
                // The segment before it was whole when this one was started.
                tail_may_be_torn = false;
                continue;
            }
            check_header(&path, &mut file, first_seq)?;
            let last_scan = scan_last(&path, &file, first_seq, tail_may_be_torn, ops.as_mut())?;
            break Some((file, last_scan));
        };
        let (active, active_len, next_seq) = match scanned {
            Some((file, last_scan)) => {
                if let Some(t) = last_scan.torn {
                    torn = Some(t);
                }
                (file, last_scan.end, last_scan.next_seq)
            }
            // A new log, or one whose only segment was never written to.
            None => {
                let (path, file) = create_segment(dir, fresh_seq, ops.as_mut())?;
                segments.push_back(Segment {
                    first_seq: fresh_seq,
                    path,
                });
                (file, HEADER_LEN as u64, fresh_seq)
            }
        };
        let active_path = segments.back().map_or(dir, |s| s.path.as_path());
        let written_end = active
            .metadata()
            .map_err(|e| io_error("reading", active_path, e))?
            .len()
            .max(active_len);
        let first_seq = segments.front().map_or(next_seq, |s| s.first_seq);
        let recovery = Recovery {
            first_seq,
            next_seq,
            segments: segments.len(),
            torn,
        };
        let log = Log {
            dir: dir.to_path_buf(),
            options,
            ops,
            _lock: lock,
            segments,
            active,
            active_len,
            written_end,
            next_seq,
            buf: Vec::new(),
            poisoned: None,
            last_batch: None,
            listed: Default::default(),
        };
        let mut log = log;
        log.relist();
        Ok((log, recovery))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The seq the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The seq of the oldest record still in the log.
    pub fn first_seq(&self) -> u64 {
        self.segments.front().map_or(self.next_seq, |s| s.first_seq)
    }

    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Why the log refuses writes until it is opened again (a failed fdatasync), if it does.
    pub fn refusing(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Where the batch the last [`Log::append`] wrote starts.
    pub fn last_batch(&self) -> Option<Position> {
        self.last_batch
    }

    /// Where reading starts for a log just opened: the first batch of its first segment.
    pub fn start(&self) -> Position {
        let segment = self.first_seq();
        Position {
            segment,
            offset: HEADER_LEN as u64,
            seq: segment,
        }
    }

    /// The first seq of each segment, oldest first.
    pub fn segment_seqs(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.first_seq).collect()
    }

    /// Rewrites the segments holding records `replace` returns a new `(kind, payload)` for
    /// (`herald forget`: an event replaced by a tombstone), and writes on. Each such
    /// segment is written whole to a new file, every record its own batch and with its seq,
    /// synced and renamed over the old one; a crash leaves the old segment or the new one.
    /// Returns how many records were replaced. The log stays open.
    pub fn rewrite(
        &mut self,
        mut replace: impl FnMut(&Record) -> Option<(u8, Vec<u8>)>,
    ) -> Result<usize, JournalError> {
        let mut replaced = 0;
        let count = self.segments.len();
        for (i, segment) in self.segments.iter().enumerate() {
            let end_seq = self
                .segments
                .get(i + 1)
                .map_or(self.next_seq, |next| next.first_seq);
            let to_read = ToRead {
                first_seq: segment.first_seq,
                path: segment.path.clone(),
                end: (i + 1 == count).then_some(self.active_len),
            };
            let records = Records::new(
                std::collections::VecDeque::from([to_read]),
                segment.first_seq.saturating_sub(1),
                end_seq,
            );
            let mut buf = encode_header(segment.first_seq).to_vec();
            let mut changed = 0;
            for record in records {
                let record = record?;
                match replace(&record) {
                    Some((kind, payload)) => {
                        encode_record(&mut buf, kind, FIRST | LAST, record.seq, &payload);
                        changed += 1;
                    }
                    None => encode_record(
                        &mut buf,
                        record.kind,
                        FIRST | LAST,
                        record.seq,
                        &record.payload,
                    ),
                }
            }
            if changed == 0 {
                continue;
            }
            let tmp = segment.path.with_extension("rewrite");
            let write = || -> std::io::Result<()> {
                let mut file = File::create(&tmp)?;
                std::io::Write::write_all(&mut file, &buf)?;
                file.sync_all()?;
                fs::rename(&tmp, &segment.path)?;
                File::open(&self.dir)?.sync_all()
            };
            write().map_err(|e| io_error("rewriting", &segment.path, e))?;
            replaced += changed;
            if i + 1 == count {
                self.active = File::options()
                    .read(true)
                    .write(true)
                    .open(&segment.path)
                    .map_err(|e| io_error("opening", &segment.path, e))?;
                self.active_len = buf.len() as u64;
                self.written_end = self.active_len;
            }
        }
        self.last_batch = None;
        Ok(replaced)
    }

    /// A snapshot for readers (see [`View`]).
    pub fn view(&self) -> View {
        View {
            segments: self.listed.clone(),
            active_len: self.active_len,
            next_seq: self.next_seq,
        }
    }

    fn relist(&mut self) {
        self.listed = std::sync::Arc::new(
            self.segments
                .iter()
                .map(|s| (s.first_seq, s.path.clone()))
                .collect(),
        );
    }

    /// Appends `batch` as one group commit: one write and one fdatasync (module docs). Returns
    /// the seqs its records got, once they are durable. On an error nothing of the batch is
    /// in the log and no seq was used.
    pub fn append(&mut self, batch: &[Entry<'_>]) -> Result<Range<u64>, JournalError> {
        if let Some(why) = &self.poisoned {
            return Err(JournalError::io("appending to the log", why));
        }
        let first = self.next_seq;
        if batch.is_empty() {
            return Ok(first..first);
        }
        if let Some(entry) = batch.iter().find(|e| e.payload.len() > MAX_PAYLOAD) {
            return Err(JournalError::io(
                "appending to the log",
                format_args!(
                    "a record of {} bytes is larger than the log takes ({MAX_PAYLOAD})",
                    entry.payload.len()
                ),
            ));
        }
        self.buf.clear();
        let last = batch.len() - 1;
        for (i, (entry, seq)) in batch.iter().zip(first..).enumerate() {
            let flags = if i == 0 { FIRST } else { 0 } | if i == last { LAST } else { 0 };
            encode_record(&mut self.buf, entry.kind, flags, seq, entry.payload);
        }
        let size = self.buf.len() as u64;
        if self.active_len > HEADER_LEN as u64
            && self.active_len + size > self.options.segment_bytes
        {
            self.roll()?;
        }
        let at = self.active_len;
        if at + size > self.written_end {
            // Zeros ahead, in the same write: the commits after this one overwrite them
            // instead of growing the file (module docs).
            self.buf.resize(self.buf.len() + self.options.ahead, 0);
        }
        let wrote = self.buf.len() as u64;
        let written = self.ops.write_at(&self.active, &self.buf, at);
        let synced = written.and_then(|()| {
            self.ops.sync_data(&self.active).inspect_err(|e| {
                self.poisoned = Some(format!(
                    "an fdatasync of the log failed ({e}); it takes no more writes until it is \
                     opened again"
                ));
            })
        });
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
        if let Err(e) = synced {
            return Err(self.undo(at, e));
        }
        self.active_len = at + size;
        self.written_end = self.written_end.max(at + wrote);
        self.next_seq = first + batch.len() as u64;
        self.last_batch = Some(Position {
            segment: self.segments.back().map_or(first, |s| s.first_seq),
            offset: at,
            seq: first,
        });
        Ok(first..self.next_seq)
    }

    /// Cuts a failed batch off the active segment, so the log is as before it.
    fn undo(&mut self, at: u64, e: std::io::Error) -> JournalError {
        let path = self.active_path().to_path_buf();
        let undone = self
            .ops
            .set_len(&self.active, at)
            .inspect(|()| self.written_end = at)
            .map_err(|cut| {
                self.poisoned = Some(format!(
                    "a failed batch could not be cut off {} ({cut}); the log takes no more \
                     writes until it is opened again",
                    path.display()
                ));
            })
            .is_ok();
        let state = if undone {
            "the batch was not written; the log is as before it"
        } else {
            "the batch could not be cut off again; the log takes no more writes until it is \
             opened again"
        };
        JournalError::io(
            format!("appending a batch to {}", path.display()),
            format_args!("{e}; {state}"),
        )
    }

    fn active_path(&self) -> &Path {
        self.segments
            .back()
            .map_or(self.dir.as_path(), |s| s.path.as_path())
    }

    /// Starts a new segment at the next seq. The active one's batches are all durable.
    fn roll(&mut self) -> Result<(), JournalError> {
        let (path, file) = create_segment(&self.dir, self.next_seq, self.ops.as_mut())
            .inspect_err(|_| {
                if let Some(left) = left_behind(&self.dir, self.next_seq) {
                    self.poisoned = Some(format!(
                        "a segment could not be started nor removed again ({}); the log takes \
                         no more writes until it is opened again",
                        left.display()
                    ));
                }
            })?;
        self.segments.push_back(Segment {
            first_seq: self.next_seq,
            path,
        });
        self.active = file;
        self.active_len = HEADER_LEN as u64;
        self.written_end = HEADER_LEN as u64;
        self.relist();
        Ok(())
    }

    /// The records with a seq above `after` (0: all), read from disk and checked as they are
    /// read, up to the last durable batch. `Corrupt` at once when the log no longer holds
    /// them all (segments deleted) or holds fewer than `after` (the checkpoint is ahead of
    /// the log).
    pub fn records_after(&self, after: u64) -> Result<Records, JournalError> {
        let first = self.first_seq();
        let wanted = after.saturating_add(1);
        if wanted < first {
            return Err(JournalError::corrupt(
                format!("the log in {}", self.dir.display()),
                format_args!(
                    "the records after seq {after} were asked for, but the log starts at seq \
                     {first}"
                ),
            ));
        }
        if wanted > self.next_seq {
            return Err(JournalError::corrupt(
                format!("the log in {}", self.dir.display()),
                format_args!(
                    "the records after seq {after} were asked for, but the log ends at seq {}",
                    self.next_seq.saturating_sub(1)
                ),
            ));
        }
        let from = self
            .segments
            .partition_point(|s| s.first_seq <= wanted)
            .saturating_sub(1);
        let count = self.segments.len();
        let segments = self
            .segments
            .iter()
            .enumerate()
            .skip(from)
            .map(|(i, s)| ToRead {
                first_seq: s.first_seq,
                path: s.path.clone(),
                end: (i + 1 == count).then_some(self.active_len),
            })
            .collect();
        Ok(Records::new(segments, after, self.next_seq))
    }

    /// Deletes every segment all of whose records have a seq below `before` (never the active
    /// segment), oldest first, then syncs the directory. Returns how many were deleted.
    pub fn delete_before(&mut self, before: u64) -> Result<usize, JournalError> {
        let mut deleted = 0;
        while self.segments.len() > 1 && self.segments[1].first_seq <= before {
            let path = &self.segments[0].path;
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    let error = io_error("deleting", path, e);
                    if deleted > 0 {
                        self.relist();
                        let _ = self.ops.sync_dir(&self.dir);
                    }
                    return Err(error);
                }
            }
            self.segments.pop_front();
            deleted += 1;
        }
        if deleted > 0 {
            self.relist();
            self.ops
                .sync_dir(&self.dir)
                .map_err(|e| io_error("syncing", &self.dir, e))?;
        }
        Ok(deleted)
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// Takes the directory's lock file, so one process writes the log.
fn lock(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("opening", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: dir.display().to_string(),
        }),
        Err(TryLockError::Error(e)) => Err(io_error("locking", &path, e)),
    }
}

/// The segments in `dir`, oldest first. A `.seg` file not named by a seq is `Corrupt`.
fn list_segments(dir: &Path) -> Result<VecDeque<Segment>, JournalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error("listing", dir, e))? {
        let entry = entry.map_err(|e| io_error("listing", dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        let path = entry.path();
        let first_seq = (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| {
                JournalError::corrupt(
                    format!("segment {}", path.display()),
                    "the name is not the 20-digit seq of a segment",
                )
            })?;
        segments.push(Segment { first_seq, path });
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments.into())
}

/// Creates the segment starting at `first_seq`: header written and synced, then the
/// directory synced, so the name is durable before any record goes in. On failure the file
/// is removed again (when it can be).
fn create_segment(
    dir: &Path,
    first_seq: u64,
    ops: &mut dyn FileOps,
) -> Result<(PathBuf, File), JournalError> {
    let path = dir.join(segment_name(first_seq));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_error("creating", &path, e))?;
    let written = ops
        .write_at(&file, &encode_header(first_seq), 0)
        .and_then(|()| ops.sync_data(&file))
        .and_then(|()| ops.sync_dir(dir));
    match written {
        Ok(()) => Ok((path, file)),
        Err(e) => {
            drop(file);
            let _ = fs::remove_file(&path);
            Err(io_error("starting the segment", &path, e))
        }
    }
}

/// The file of a segment that could not be started and is still there.
fn left_behind(dir: &Path, first_seq: u64) -> Option<PathBuf> {
    let path = dir.join(segment_name(first_seq));
    path.exists().then_some(path)
}
