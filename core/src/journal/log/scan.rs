//! Reading segments back: the recovery scan of the last segment (with the torn-tail rule)
//! and the record iterator behind [`super::Log::records_after`]. docs/architecture.md §10.3.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::format::{
    BadHeader, FIRST, Frame, HEADER_LEN, LAST, RECORD_HEADER_LEN, batch_starts_at, decode_header,
};
use super::io::FileOps;
use super::{Record, Torn};
use crate::journal::JournalError;

/// Read buffer of a segment reader: large enough for sequential reads to be cheap, small
/// enough not to matter in memory.
const READ_BUFFER: usize = 64 * 1024;

/// `Corrupt` naming the segment file and the byte offset in it.
pub(super) fn corrupt_at(path: &Path, offset: u64, why: impl fmt::Display) -> JournalError {
    JournalError::corrupt(
        format!("segment {}", path.display()),
        format_args!("at byte {offset}: {why}"),
    )
}

pub(super) fn io_error(doing: &str, path: &Path, e: io::Error) -> JournalError {
    JournalError::io(format!("{doing} {}", path.display()), e)
}

/// What is wrong with the bytes at an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Damage {
    // Damage a torn write can leave (the torn-tail rule applies to these).
    /// The file ends inside the record's frame or payload.
    CutShort { left: u64, needed: u64 },
    /// A length larger than any record this code writes.
    Length(u32),
    /// The record's checksum does not match its bytes.
    Checksum,
    // Records whose checksum matches but that this code cannot have written there: never a
    // torn write, always corruption (or a foreign file).
    /// Flag bits this version does not know.
    Flags(u8),
    /// A seq out of order.
    Seq { expected: u64, found: u64 },
    /// A record that does not open a batch where one must start, or opens one inside another.
    Batch { first_expected: bool },
    /// The segment ends inside a batch.
    Unfinished,
}

impl Damage {
    /// Whether a write cut short or torn by a crash can have left it.
    fn torn_write_can_leave(&self) -> bool {
        matches!(
            self,
            Damage::CutShort { .. } | Damage::Length(_) | Damage::Checksum | Damage::Unfinished
        )
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::CutShort { left, needed } => write!(
                f,
                "a record cut short ({left} bytes left in the file, the record needs {needed})"
            ),
            Damage::Length(len) => write!(f, "a record length of {len} bytes is impossible"),
            Damage::Checksum => write!(f, "the record's checksum does not match"),
            Damage::Flags(flags) => write!(f, "unknown record flags {flags:#04x}"),
            Damage::Seq { expected, found } => {
                write!(f, "seq {found} where seq {expected} must follow")
            }
            Damage::Batch {
                first_expected: true,
            } => write!(f, "a record outside any batch"),
            Damage::Batch {
                first_expected: false,
            } => write!(f, "a batch opened inside another"),
            Damage::Unfinished => write!(f, "the segment ends inside a batch"),
        }
    }
}

/// One step of a sequential read.
pub(super) enum Step {
    Record {
        at: u64,
        frame: Frame,
        payload: Vec<u8>,
    },
    /// The end, exactly at a record boundary.
    End,
    Damaged {
        at: u64,
        damage: Damage,
    },
}

/// Reads a segment's records in order, from just after its header to `end`.
pub(super) struct SegmentReader {
    file: BufReader<File>,
    offset: u64,
    end: u64,
}

impl SegmentReader {
    /// Positions a reader after the header, which the caller has checked.
    pub fn new(file: File, end: u64) -> io::Result<SegmentReader> {
        let mut file = BufReader::with_capacity(READ_BUFFER, file);
        file.seek(SeekFrom::Start(HEADER_LEN as u64))?;
        Ok(SegmentReader {
            file,
            offset: HEADER_LEN as u64,
            end,
        })
    }

    /// Positions a reader at `offset`, the start of a batch the caller knows of.
    pub fn at(file: File, offset: u64, end: u64) -> io::Result<SegmentReader> {
        let mut file = BufReader::with_capacity(READ_BUFFER, file);
        file.seek(SeekFrom::Start(offset))?;
        Ok(SegmentReader { file, offset, end })
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record, or the end: the end of the segment, or zeros from here to it (the
    /// log writes zeros ahead of its records; no record is all zeros, its checksum covers
    /// its 14 bytes after the checksum). Other bytes that are not a record are damage.
    pub fn step(&mut self) -> io::Result<Step> {
        let at = self.offset;
        let left = self.end.saturating_sub(at);
        if left == 0 {
            return Ok(Step::End);
        }
        let damaged = |damage| Ok(Step::Damaged { at, damage });
        let mut header = [0u8; RECORD_HEADER_LEN];
        let head = &mut header[..left.min(RECORD_HEADER_LEN as u64) as usize];
        self.file.read_exact(head)?;
        if head.iter().all(|&b| b == 0) && self.zeros(at + head.len() as u64)? {
            return Ok(Step::End);
        }
        if left < RECORD_HEADER_LEN as u64 {
            return damaged(Damage::CutShort {
                left,
                needed: RECORD_HEADER_LEN as u64,
            });
        }
        let frame = Frame::parse(&header);
        if !frame.length_possible() {
            return damaged(Damage::Length(frame.len));
        }
        let needed = RECORD_HEADER_LEN as u64 + u64::from(frame.len);
        if left < needed {
            return damaged(Damage::CutShort { left, needed });
        }
        let mut payload = vec![0u8; frame.len as usize];
        self.file.read_exact(&mut payload)?;
        if !frame.checks(&header, &payload) {
            return damaged(Damage::Checksum);
        }
        if !frame.flags_known() {
            return damaged(Damage::Flags(frame.flags));
        }
        self.offset += needed;
        Ok(Step::Record { at, frame, payload })
    }

    /// Whether the bytes from `from` to the end are all zeros (read beside the buffered
    /// reader, which the caller leaves once they are).
    fn zeros(&self, from: u64) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let file = self.file.get_ref();
        let mut chunk = vec![0u8; READ_BUFFER];
        let mut at = from;
        while at < self.end {
            let want = (self.end - at).min(READ_BUFFER as u64) as usize;
            let n = file.read_at(&mut chunk[..want], at)?;
            if n == 0 {
                return Ok(false);
            }
            if chunk[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }
}

/// The order records must come in: seqs one apart, batches opened and closed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chain {
    pub next_seq: u64,
    pub in_batch: bool,
    /// Where the open batch started (the offset to truncate to when it is torn).
    pub batch_at: u64,
}

impl Chain {
    pub fn new(first_seq: u64) -> Chain {
        Chain {
            next_seq: first_seq,
            in_batch: false,
            batch_at: HEADER_LEN as u64,
        }
    }

    /// Takes the record at `at`; `Ok(true)` when it closes its batch.
    fn accept(&mut self, at: u64, frame: &Frame) -> Result<bool, Damage> {
        if frame.seq != self.next_seq {
            return Err(Damage::Seq {
                expected: self.next_seq,
                found: frame.seq,
            });
        }
        let first = frame.flags & FIRST != 0;
        if first == self.in_batch {
            return Err(Damage::Batch {
                first_expected: !self.in_batch,
            });
        }
        if first {
            self.batch_at = at;
        }
        self.next_seq += 1;
        self.in_batch = frame.flags & LAST == 0;
        Ok(!self.in_batch)
    }
}

/// Reads and checks a segment's header against the seq its name gives.
pub(super) fn check_header(path: &Path, file: &mut File, named: u64) -> Result<(), JournalError> {
    let mut header = [0u8; HEADER_LEN];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut header))
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => corrupt_at(path, 0, "the segment header is cut short"),
            _ => io_error("reading", path, e),
        })?;
    let first = decode_header(&header).map_err(|e| corrupt_at(path, 0, e))?;
    if first != named {
        return Err(corrupt_at(
            path,
            12,
            format_args!("the header names seq {first}, the file name seq {named}"),
        ));
    }
    Ok(())
}

/// A segment whose header never became whole: the log was creating it when it stopped.
pub(super) fn header_torn(path: &Path, file: &mut File, len: u64) -> Result<bool, JournalError> {
    if len < HEADER_LEN as u64 {
        return Ok(true);
    }
    if len > HEADER_LEN as u64 {
        // Records follow: the header was synced before the first of them was written.
        return Ok(false);
    }
    let mut header = [0u8; HEADER_LEN];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut header))
        .map_err(|e| io_error("reading", path, e))?;
    Ok(matches!(
        decode_header(&header),
        Err(BadHeader::Magic | BadHeader::Checksum)
    ))
}

/// What the recovery scan of the last segment found.
pub(super) struct LastScan {
    pub next_seq: u64,
    /// Where its last whole batch ends (zeros written ahead may follow; a torn tail is cut
    /// off).
    pub end: u64,
    pub torn: Option<Torn>,
}

/// Scans the last segment (header already checked). With `tail_may_be_torn`, damage a torn
/// write can leave is a torn tail when no whole batch-opening record follows it in the
/// segment: the segment is truncated to the end of its last whole batch and synced, and the
/// cut reported. Anything else is `Corrupt` at the damaged record's offset.
pub(super) fn scan_last(
    path: &Path,
    file: &File,
    first_seq: u64,
    tail_may_be_torn: bool,
    ops: &mut dyn FileOps,
) -> Result<LastScan, JournalError> {
    let len = file
        .metadata()
        .map_err(|e| io_error("reading", path, e))?
        .len();
    let reading = file.try_clone().map_err(|e| io_error("opening", path, e))?;
    let mut reader = SegmentReader::new(reading, len).map_err(|e| io_error("reading", path, e))?;
    let mut chain = Chain::new(first_seq);
    // The end of the last whole batch, and the seq after it.
    let (mut good, mut good_seq) = (HEADER_LEN as u64, first_seq);
    let (at, damage) = loop {
        match reader.step().map_err(|e| io_error("reading", path, e))? {
            Step::End if chain.in_batch => break (chain.batch_at, Damage::Unfinished),
            Step::End => {
                return Ok(LastScan {
                    next_seq: chain.next_seq,
                    end: reader.offset(),
                    torn: None,
                });
            }
            Step::Record { at, frame, .. } => match chain.accept(at, &frame) {
                Ok(true) => (good, good_seq) = (reader.offset(), chain.next_seq),
                Ok(false) => {}
                Err(damage) => return Err(corrupt_at(path, at, damage)),
            },
            Step::Damaged { at, damage } => break (at, damage),
        }
    };
    if !tail_may_be_torn || !damage.torn_write_can_leave() {
        return Err(corrupt_at(path, at, damage));
    }
    if let Some(batch) = batch_after(path, file, at, len)? {
        return Err(corrupt_at(
            path,
            at,
            format_args!(
                "{damage}, and a whole batch follows at byte {batch}: the damage is not a torn \
                 tail"
            ),
        ));
    }
    ops.set_len(file, good)
        .and_then(|()| ops.sync_data(file))
        .map_err(|e| io_error("cutting the torn tail of", path, e))?;
    Ok(LastScan {
        next_seq: good_seq,
        end: good,
        torn: Some(Torn {
            file: path.to_path_buf(),
            offset: good,
            dropped: len - good,
            why: format!("at byte {at}: {damage}"),
        }),
    })
}

/// The offset of the first whole, checksummed record opening a batch that starts after `at`.
fn batch_after(path: &Path, file: &File, at: u64, len: u64) -> Result<Option<u64>, JournalError> {
    let from = at + 1;
    if from >= len {
        return Ok(None);
    }
    let mut tail = Vec::new();
    let mut reader = file.try_clone().map_err(|e| io_error("opening", path, e))?;
    reader
        .seek(SeekFrom::Start(from))
        .and_then(|_| reader.take(len - from).read_to_end(&mut tail))
        .map_err(|e| io_error("reading", path, e))?;
    Ok((0..tail.len())
        .find(|&i| batch_starts_at(&tail[i..]))
        .map(|i| from + i as u64))
}

/// One segment to read: its first seq, its file, and where reading stops (the durable end of
/// the active segment; `None` for a closed one: its whole length).
pub(super) struct ToRead {
    pub first_seq: u64,
    pub path: PathBuf,
    pub end: Option<u64>,
}

/// The records after a seq, read from the segments and checked as they are read. The first
/// damage ends the iteration with `Corrupt` (file and offset); it never skips a record.
pub struct Records {
    segments: VecDeque<ToRead>,
    /// Where in the first segment to start: the offset of a batch and its first seq.
    start: Option<(u64, u64)>,
    /// The first seq of the segment being read.
    current_first: u64,
    /// Where the batch of the record returned last starts.
    batch: Option<super::Position>,
    current: Option<(PathBuf, SegmentReader)>,
    chain: Chain,
    after: u64,
    end_seq: u64,
    done: bool,
}

impl Records {
    pub(super) fn new(segments: VecDeque<ToRead>, after: u64, end_seq: u64) -> Records {
        let first = segments.front().map_or(end_seq, |s| s.first_seq);
        Records {
            segments,
            start: None,
            current_first: 0,
            batch: None,
            current: None,
            chain: Chain::new(first),
            after,
            end_seq,
            done: false,
        }
    }

    /// Like [`Records::new`], but starting at the batch at `offset` of the first segment,
    /// whose first record has `seq`.
    pub(super) fn starting_at(
        segments: VecDeque<ToRead>,
        (offset, seq): (u64, u64),
        after: u64,
        end_seq: u64,
    ) -> Records {
        let mut records = Records::new(segments, after, end_seq);
        records.start = Some((offset, seq));
        records.chain = Chain::new(seq);
        records
    }

    /// Where the batch of the record returned last starts (the engine keeps some of these
    /// to read from later without reading a whole segment).
    pub fn batch(&self) -> Option<super::Position> {
        self.batch
    }

    fn open(&mut self, next: ToRead) -> Result<(PathBuf, SegmentReader), JournalError> {
        let path = next.path;
        let start = self.start.take();
        if start.is_none() && next.first_seq != self.chain.next_seq {
            return Err(corrupt_at(
                &path,
                0,
                format_args!(
                    "the segment starts at seq {}, but the records before it end at seq {}: \
                     records are missing",
                    next.first_seq,
                    self.chain.next_seq.saturating_sub(1)
                ),
            ));
        }
        let mut file = File::open(&path).map_err(|e| io_error("opening", &path, e))?;
        check_header(&path, &mut file, next.first_seq)?;
        let end = match next.end {
            Some(end) => end,
            None => file
                .metadata()
                .map_err(|e| io_error("reading", &path, e))?
                .len(),
        };
        self.current_first = next.first_seq;
        let reader = match start {
            Some((offset, seq)) => {
                self.chain = Chain::new(seq);
                SegmentReader::at(file, offset, end)
            }
            None => {
                self.chain = Chain::new(next.first_seq);
                SegmentReader::new(file, end)
            }
        }
        .map_err(|e| io_error("reading", &path, e))?;
        Ok((path, reader))
    }

    fn next_record(&mut self) -> Result<Option<Record>, JournalError> {
        loop {
            if self.current.is_none() {
                match self.segments.pop_front() {
                    Some(next) => {
                        let opened = self.open(next)?;
                        self.current = Some(opened);
                    }
                    None if self.chain.next_seq == self.end_seq => return Ok(None),
                    None => {
                        return Err(JournalError::corrupt(
                            "the log's segments",
                            format_args!(
                                "they end at seq {}, the log at seq {}",
                                self.chain.next_seq.saturating_sub(1),
                                self.end_seq.saturating_sub(1)
                            ),
                        ));
                    }
                }
            }
            let Some((path, reader)) = &mut self.current else {
                continue;
            };
            match reader.step().map_err(|e| io_error("reading", path, e))? {
                Step::End if self.chain.in_batch => {
                    return Err(corrupt_at(path, self.chain.batch_at, Damage::Unfinished));
                }
                Step::End => self.current = None,
                Step::Damaged { at, damage } => return Err(corrupt_at(path, at, damage)),
                Step::Record { at, frame, payload } => {
                    self.chain
                        .accept(at, &frame)
                        .map_err(|damage| corrupt_at(path, at, damage))?;
                    if frame.flags & super::format::FIRST != 0 {
                        self.batch = Some(super::Position {
                            segment: self.current_first,
                            offset: at,
                            seq: frame.seq,
                        });
                    }
                    if frame.seq > self.after {
                        return Ok(Some(Record {
                            seq: frame.seq,
                            kind: frame.kind,
                            payload,
                        }));
                    }
                }
            }
        }
    }
}

impl Iterator for Records {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_record();
        if !matches!(next, Ok(Some(_))) {
            self.done = true;
        }
        next.transpose()
    }
}
