//! The records the local engine appends to its log, and their binary layout (all integers
//! little-endian; `str` is a u16 length and UTF-8 bytes):
//!
//! | kind | payload |
//! |---|---|
//! | `EVENT` (1) | committed_at i64, flags u8, [from u64 if `ROUTED`], dedup hash u64, n u16, n × (sink str, route str), the CloudEvents JSON to the end |
//! | `OUTCOME` (2) | event seq u64, what u8 (0 delivered, 1 retry, 2 dead), sink str, route str; a retry adds next_at i64, the attempt's time i64 and error (u32 length + UTF-8) |
//! | `FORGOTTEN` (3) | committed_at i64: an event `herald forget` removed, in its place |
//!
//! An `EVENT` flagged `UNROUTED` waits for enrichment (its deliveries are empty); one
//! flagged `ROUTED` is the routed copy of the unrouted event `from` (its JSON with the
//! `enriched` object), and its deliveries belong to it; one flagged `REPLAYED` was queued
//! again from a dead letter and takes no part in duplicate suppression.

use super::super::JournalError;
use super::super::records::{Attempt, Millis};

pub const EVENT: u8 = 1;
pub const OUTCOME: u8 = 2;
pub const FORGOTTEN: u8 = 3;

pub const UNROUTED: u8 = 1;
pub const ROUTED: u8 = 2;
pub const REPLAYED: u8 = 4;

/// The duplicate-suppression hash of `(source, id)`: 64-bit FNV-1a, stable across versions
/// because it is stored in the records. A hit is always confirmed against the stored event,
/// so a collision costs a read, never a wrongly dropped event.
pub fn dedup_hash(source: &str, id: &str) -> u64 {
    // Three plain loops rather than one over chained iterators, which did not compile to
    // a tight loop: this runs on the writer's thread for every event.
    fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
    fnv(
        fnv(fnv(0xcbf2_9ce4_8422_2325, source.as_bytes()), &[0]),
        id.as_bytes(),
    )
}

/// The head of an `EVENT` record: everything but the JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventHead<'a> {
    pub committed_at: Millis,
    pub flags: u8,
    pub from: Option<u64>,
    pub hash: u64,
    /// `(sink, route)`, each once, borrowed from the record.
    pub deliveries: Vec<(&'a str, &'a str)>,
}

pub fn encode_event(
    buf: &mut Vec<u8>,
    committed_at: Millis,
    flags: u8,
    from: Option<u64>,
    hash: u64,
    deliveries: &[(&str, &str)],
    json: &str,
) {
    buf.extend_from_slice(&committed_at.to_le_bytes());
    let flags = if from.is_some() {
        flags | ROUTED
    } else {
        flags
    };
    buf.push(flags);
    if let Some(from) = from {
        buf.extend_from_slice(&from.to_le_bytes());
    }
    buf.extend_from_slice(&hash.to_le_bytes());
    let n = u16::try_from(deliveries.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&n.to_le_bytes());
    for (sink, route) in deliveries.iter().take(usize::from(n)) {
        put_str(buf, sink);
        put_str(buf, route);
    }
    buf.extend_from_slice(json.as_bytes());
}

/// The head of an `EVENT` record and where its JSON starts.
pub fn decode_event_head(seq: u64, payload: &[u8]) -> Result<(EventHead<'_>, usize), JournalError> {
    let mut r = Reader::new(seq, payload);
    let committed_at = r.i64()?;
    let flags = r.u8()?;
    let from = if flags & ROUTED != 0 {
        Some(r.u64()?)
    } else {
        None
    };
    let hash = r.u64()?;
    let n = r.u16()?;
    let mut deliveries = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let sink = r.str()?;
        let route = r.str()?;
        deliveries.push((sink, route));
    }
    Ok((
        EventHead {
            committed_at,
            flags,
            from,
            hash,
            deliveries,
        },
        r.at,
    ))
}

/// How an attempt ended, as an `OUTCOME` record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    Retry { next_at: Millis, attempt: Attempt },
    Dead,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeRecord<'a> {
    pub seq: u64,
    pub sink: &'a str,
    pub route: &'a str,
    pub settled: Settled,
}

pub fn encode_outcome(buf: &mut Vec<u8>, seq: u64, sink: &str, route: &str, settled: &Settled) {
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.push(match settled {
        Settled::Delivered => 0,
        Settled::Retry { .. } => 1,
        Settled::Dead => 2,
    });
    put_str(buf, sink);
    put_str(buf, route);
    if let Settled::Retry { next_at, attempt } = settled {
        buf.extend_from_slice(&next_at.to_le_bytes());
        buf.extend_from_slice(&attempt.at.to_le_bytes());
        let error = attempt.error.as_bytes();
        let len = u32::try_from(error.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&error[..len as usize]);
    }
}

pub fn decode_outcome(seq: u64, payload: &[u8]) -> Result<OutcomeRecord<'_>, JournalError> {
    let mut r = Reader::new(seq, payload);
    let event = r.u64()?;
    let what = r.u8()?;
    let sink = r.str()?;
    let route = r.str()?;
    let settled = match what {
        0 => Settled::Delivered,
        1 => {
            let next_at = r.i64()?;
            let at = r.i64()?;
            let len = r.u32()? as usize;
            let error = String::from_utf8_lossy(r.take(len)?).into_owned();
            Settled::Retry {
                next_at,
                attempt: Attempt { at, error },
            }
        }
        2 => Settled::Dead,
        other => return Err(r.bad(format_args!("unknown outcome {other}"))),
    };
    Ok(OutcomeRecord {
        seq: event,
        sink,
        route,
        settled,
    })
}

pub fn encode_forgotten(buf: &mut Vec<u8>, committed_at: Millis) {
    buf.extend_from_slice(&committed_at.to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    // Sink and route names are short (config keys); a longer one is cut at a char boundary.
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.extend_from_slice(&(end as u16).to_le_bytes());
    buf.extend_from_slice(&s.as_bytes()[..end]);
}

/// Reads a payload; running short is `Corrupt`, naming the record.
pub(super) struct Reader<'a> {
    seq: u64,
    bytes: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(seq: u64, bytes: &'a [u8]) -> Self {
        Reader { seq, bytes, at: 0 }
    }
    pub fn bad(&self, why: impl std::fmt::Display) -> JournalError {
        JournalError::corrupt(format!("record {} of the log", self.seq), why)
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], JournalError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.bad(format_args!(
                "it ends at byte {} where {n} more were expected",
                self.bytes.len()
            )));
        };
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], JournalError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, JournalError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, JournalError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, JournalError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, JournalError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, JournalError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn str(&mut self) -> Result<&'a str, JournalError> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| self.bad("a name is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_duplicate_hash_is_fnv1a_as_stored() {
        // FNV-1a of `directory\0c1/7`, as every version has written it into its records.
        assert_eq!(dedup_hash("directory", "c1/7"), 0xffe5_ee94_da03_73ee);
        assert_ne!(
            dedup_hash("directory", "c1/7"),
            dedup_hash("directoryc", "1/7")
        );
    }

    #[test]
    fn an_event_head_reads_back_as_written() {
        let mut buf = Vec::new();
        let deliveries = [("file", "all"), ("hook", "adds")];
        encode_event(
            &mut buf,
            42,
            REPLAYED,
            Some(7),
            99,
            &deliveries,
            "{\"a\":1}",
        );
        let (head, at) = decode_event_head(3, &buf).unwrap();
        assert_eq!(head.committed_at, 42);
        assert_eq!(head.from, Some(7));
        assert_eq!(head.flags, REPLAYED | ROUTED);
        assert_eq!(head.hash, 99);
        assert_eq!(head.deliveries[1], ("hook", "adds"));
        assert_eq!(&buf[at..], b"{\"a\":1}");
        // Cut anywhere in the head: Corrupt, never a panic.
        for cut in 0..at {
            assert!(decode_event_head(3, &buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn outcomes_read_back_as_written() {
        let retry = Settled::Retry {
            next_at: 5,
            attempt: Attempt {
                at: 4,
                error: "503 Service Unavailable".into(),
            },
        };
        for settled in [Settled::Delivered, retry, Settled::Dead] {
            let mut buf = Vec::new();
            encode_outcome(&mut buf, 12, "hook", "adds", &settled);
            let read = decode_outcome(1, &buf).unwrap();
            assert_eq!(read.seq, 12);
            assert_eq!((read.sink, read.route), ("hook", "adds"));
            assert_eq!(read.settled, settled);
        }
    }

    #[test]
    fn the_dedup_hash_separates_source_from_id() {
        assert_ne!(dedup_hash("ab", "c"), dedup_hash("a", "bc"));
        assert_eq!(dedup_hash("s", "1"), dedup_hash("s", "1"));
    }
}
