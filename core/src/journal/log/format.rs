//! The bytes on disk: the segment header and the record frame (docs/architecture.md §10.3).
//! Pure functions over byte slices; nothing here touches a file.
//!
//! ```text
//! segment header (24 bytes)
//!   0  magic      8 bytes  "HRLDSEG\n"
//!   8  version    u32 LE   2 (1 is read too: the same, with no zeros written ahead)
//!  12  first_seq  u64 LE   the seq of the segment's first record (also in the file name)
//!  20  crc        u32 LE   crc32c of bytes 0..20
//!
//! record (18 bytes + payload)
//!   0  crc        u32 LE   crc32c of bytes 4..18+len (length, kind, flags, seq, payload)
//!   4  len        u32 LE   payload length, at most MAX_PAYLOAD
//!   8  kind       u8       the caller's record kind
//!   9  flags      u8       FIRST (1): opens a batch, LAST (2): closes it; no other bit
//!  10  seq        u64 LE   one more than the previous record's, across segments
//!  18  payload    len bytes
//! ```

use std::fmt;

/// The first bytes of every segment.
pub(super) const MAGIC: [u8; 8] = *b"HRLDSEG\n";
/// The format this code writes. 2: a segment may end in zeros written ahead of its records
/// (docs/architecture.md §10.3), which a reader of version 1 would take for damage; so that
/// a Herald from before them refuses such a segment by its version rather than as corrupt.
pub(super) const VERSION: u32 = 2;
/// The oldest format this code reads (version 1 is version 2 without zeros written ahead).
pub(super) const OLDEST_VERSION: u32 = 1;
pub(super) const HEADER_LEN: usize = 24;
pub(super) const RECORD_HEADER_LEN: usize = 18;
/// The largest payload a record may carry; a larger length on disk is impossible (damage).
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// The record opens a batch.
pub(super) const FIRST: u8 = 1;
/// The record closes a batch: the batch is whole once its LAST record is read.
pub(super) const LAST: u8 = 2;
const KNOWN_FLAGS: u8 = FIRST | LAST;

pub(super) fn encode_header(first_seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BadHeader {
    Magic,
    Checksum,
    Version(u32),
}

impl fmt::Display for BadHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadHeader::Magic => write!(f, "the segment header does not start with the magic"),
            BadHeader::Checksum => write!(f, "the segment header's checksum does not match"),
            BadHeader::Version(v) => write!(
                f,
                "the segment is in format version {v}; this Herald reads versions \
                 {OLDEST_VERSION} to {VERSION}"
            ),
        }
    }
}

/// The first seq a header names.
pub(super) fn decode_header(h: &[u8; HEADER_LEN]) -> Result<u64, BadHeader> {
    if h[..8] != MAGIC {
        return Err(BadHeader::Magic);
    }
    if crc32c::crc32c(&h[..20]) != u32::from_le_bytes(le4(&h[20..24])) {
        return Err(BadHeader::Checksum);
    }
    let version = u32::from_le_bytes(le4(&h[8..12]));
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(BadHeader::Version(version));
    }
    Ok(u64::from_le_bytes(le8(&h[12..20])))
}

/// Appends one record frame to `buf`.
pub(super) fn encode_record(buf: &mut Vec<u8>, kind: u8, flags: u8, seq: u64, payload: &[u8]) {
    let start = buf.len();
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.push(kind);
    buf.push(flags);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A record frame's fixed part, before its payload is read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame {
    pub crc: u32,
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub seq: u64,
}

impl Frame {
    pub fn parse(h: &[u8; RECORD_HEADER_LEN]) -> Frame {
        Frame {
            crc: u32::from_le_bytes(le4(&h[0..4])),
            len: u32::from_le_bytes(le4(&h[4..8])),
            kind: h[8],
            flags: h[9],
            seq: u64::from_le_bytes(le8(&h[10..18])),
        }
    }

    /// Whether the length can have been written by this code.
    pub fn length_possible(&self) -> bool {
        self.len as usize <= MAX_PAYLOAD
    }

    /// Whether `header` (this frame's 18 bytes) and `payload` carry the checksum.
    pub fn checks(&self, header: &[u8; RECORD_HEADER_LEN], payload: &[u8]) -> bool {
        let mut crc = crc32c::crc32c(&header[4..]);
        crc = crc32c::crc32c_append(crc, payload);
        crc == self.crc
    }

    pub fn flags_known(&self) -> bool {
        self.flags & !KNOWN_FLAGS == 0
    }
}

/// Whether a whole, checksummed record that opens a batch starts at `bytes[0]` (and fits in
/// `bytes`). The torn-tail rule looks for one of these after a damaged record (see
/// `scan::classify`).
pub(super) fn batch_starts_at(bytes: &[u8]) -> bool {
    let Some(h) = bytes.get(..RECORD_HEADER_LEN) else {
        return false;
    };
    let mut header = [0u8; RECORD_HEADER_LEN];
    header.copy_from_slice(h);
    let frame = Frame::parse(&header);
    if frame.flags & FIRST == 0 || !frame.flags_known() || !frame.length_possible() {
        return false;
    }
    let end = RECORD_HEADER_LEN + frame.len as usize;
    match bytes.get(RECORD_HEADER_LEN..end) {
        Some(payload) => frame.checks(&header, payload),
        None => false,
    }
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}
