//! Crash safety proven, not assumed (issue 18, docs/architecture.md §10.3): cuts at every
//! offset of the last batch and anywhere in the last segment, flipped bytes, a full disk,
//! failed syncs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::format::{Frame, HEADER_LEN, RECORD_HEADER_LEN, batch_starts_at};
use super::io::FileOps;
use super::*;

/// Writes and truncations as usual, syncs skipped: the crashes here are simulated by cutting
/// files, so the syncs would only cost time.
struct NoSync;

impl FileOps for NoSync {
    fn sync_data(&mut self, _: &File) -> io::Result<()> {
        Ok(())
    }
    fn sync_dir(&mut self, _: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// What [`Faulty`] does and has done.
#[derive(Default)]
struct Faults {
    /// Bytes the disk still takes; `None`: unlimited.
    space: Option<u64>,
    fail_sync: bool,
    fail_set_len: bool,
    writes: usize,
    syncs: usize,
    dir_syncs: usize,
}

/// Real writes that fail like a full disk once `space` runs out (after writing what fits,
/// as write(2) does), and syncs that fail on demand; syncs are counted but not done.
#[derive(Clone, Default)]
struct Faulty(Arc<Mutex<Faults>>);

impl Faulty {
    fn with<T>(&self, f: impl FnOnce(&mut Faults) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
}

const ENOSPC: i32 = 28;

impl FileOps for Faulty {
    fn write_at(&mut self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let space = self.with(|f| {
            f.writes += 1;
            f.space
        });
        match space {
            Some(left) if (left as usize) < buf.len() => {
                file.write_all_at(&buf[..left as usize], offset)?;
                self.with(|f| f.space = Some(0));
                Err(io::Error::from_raw_os_error(ENOSPC))
            }
            _ => {
                file.write_all_at(buf, offset)?;
                self.with(|f| f.space = f.space.map(|s| s - buf.len() as u64));
                Ok(())
            }
        }
    }
    fn sync_data(&mut self, _: &File) -> io::Result<()> {
        self.with(|f| {
            f.syncs += 1;
            if f.fail_sync {
                Err(io::Error::from_raw_os_error(5))
            } else {
                Ok(())
            }
        })
    }
    fn set_len(&mut self, file: &File, len: u64) -> io::Result<()> {
        if self.with(|f| f.fail_set_len) {
            return Err(io::Error::from_raw_os_error(5));
        }
        file.set_len(len)
    }
    fn sync_dir(&mut self, _: &Path) -> io::Result<()> {
        self.with(|f| f.dir_syncs += 1);
        Ok(())
    }
}

type Batch = Vec<(u8, Vec<u8>)>;

/// Zeros written ahead in these tests: enough to cover several small batches.
const AHEAD: usize = 300;

fn options(segment_bytes: u64) -> Options {
    Options {
        segment_bytes,
        ahead: AHEAD,
    }
}

fn open(dir: &Path, segment_bytes: u64) -> Result<(Log, Recovery), JournalError> {
    Log::open_with(dir, options(segment_bytes), Box::new(NoSync))
}

fn append(log: &mut Log, batch: &Batch) -> Result<Range<u64>, JournalError> {
    let entries: Vec<Entry<'_>> = batch
        .iter()
        .map(|(kind, payload)| Entry {
            kind: *kind,
            payload,
        })
        .collect();
    log.append(&entries)
}

fn read_all(log: &Log) -> Result<Vec<Record>, JournalError> {
    log.records_after(0)?.collect()
}

/// The records `batches` become when appended from seq 1.
fn expected(batches: &[Batch]) -> Vec<Record> {
    batches
        .iter()
        .flatten()
        .zip(1..)
        .map(|((kind, payload), seq)| Record {
            seq,
            kind: *kind,
            payload: payload.clone(),
        })
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

fn batch(n: u8, records: usize, len: usize) -> Batch {
    (0..records)
        .map(|i| (n, vec![n.wrapping_add(i as u8); len]))
        .collect()
}

/// Where a batch landed: its segment (by index in `segment_files`) and byte range, and
/// the start of each of its records.
#[derive(Clone, Debug)]
struct Placed {
    segment: usize,
    start: u64,
    end: u64,
    records: Vec<u64>,
}

/// Appends `batches` to a new log in `dir` and says where each one is.
fn write_all(dir: &Path, segment_bytes: u64, batches: &[Batch]) -> Vec<Placed> {
    let (mut log, _) = open(dir, segment_bytes).unwrap();
    let mut placed = Vec::new();
    for b in batches {
        append(&mut log, b).unwrap();
        let segment = log.segments() - 1;
        let end = log.active_len;
        let size: u64 = b
            .iter()
            .map(|(_, p)| (RECORD_HEADER_LEN + p.len()) as u64)
            .sum();
        let start = end - size;
        let mut records = Vec::new();
        let mut at = start;
        for (_, p) in b {
            records.push(at);
            at += (RECORD_HEADER_LEN + p.len()) as u64;
        }
        placed.push(Placed {
            segment,
            start,
            end,
            records,
        });
    }
    placed
}

fn assert_corrupt_at(result: Result<impl std::fmt::Debug, JournalError>, file: &Path, at: u64) {
    match result {
        Err(JournalError::Corrupt { what, detail }) => {
            assert_eq!(what, format!("segment {}", file.display()));
            assert!(
                detail.starts_with(&format!("at byte {at}: ")),
                "{detail} (expected byte {at})"
            );
        }
        other => panic!(
            "expected Corrupt in {} at {at}, got {other:?}",
            file.display()
        ),
    }
}

fn flip(path: &Path, at: u64, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= mask;
    fs::write(path, bytes).unwrap();
}

// ---- group commit ------------------------------------------------------------------------

#[test]
fn a_batch_is_one_write_and_one_fdatasync_and_comes_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::default();
    let (mut log, recovery) =
        Log::open_with(dir.path(), Options::default(), Box::new(faulty.clone())).unwrap();
    assert_eq!(recovery.next_seq, 1);
    assert_eq!(recovery.last_seq(), None);
    assert_eq!(recovery.torn, None);
    // The first segment: its header written and synced, then the directory.
    assert_eq!(faulty.with(|f| (f.writes, f.syncs, f.dir_syncs)), (1, 1, 1));

    let batches = [batch(1, 3, 10), batch(2, 1, 0), batch(3, 5, 100)];
    assert_eq!(append(&mut log, &batches[0]).unwrap(), 1..4);
    assert_eq!(append(&mut log, &batches[1]).unwrap(), 4..5);
    assert_eq!(append(&mut log, &batches[2]).unwrap(), 5..10);
    assert_eq!(
        log.append(&[]).unwrap(),
        10..10,
        "an empty batch writes nothing"
    );
    assert_eq!(faulty.with(|f| (f.writes, f.syncs, f.dir_syncs)), (4, 4, 1));
    assert_eq!(read_all(&log).unwrap(), expected(&batches));

    drop(log);
    let (log, recovery) = open(dir.path(), 1 << 20).unwrap();
    assert_eq!(
        recovery,
        Recovery {
            first_seq: 1,
            next_seq: 10,
            segments: 1,
            torn: None
        }
    );
    assert_eq!(recovery.last_seq(), Some(9));
    assert_eq!(read_all(&log).unwrap(), expected(&batches));
    let after: Vec<u64> = log
        .records_after(4)
        .unwrap()
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(after, (5..10).collect::<Vec<_>>());
    assert_eq!(log.records_after(9).unwrap().count(), 0);
}

#[test]
fn segments_roll_past_the_size_limit_and_never_split_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), 400).unwrap();
    // 3 × (18 + 50) = 204 bytes a batch: two do not fit in 400 with the header.
    let batches: Vec<Batch> = (1..=5).map(|n| batch(n, 3, 50)).collect();
    for b in &batches {
        append(&mut log, b).unwrap();
    }
    // A batch larger than the limit goes whole into a segment of its own.
    let big = batch(6, 2, 500);
    append(&mut log, &big).unwrap();
    let files = segment_files(dir.path());
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "00000000000000000001.seg",
            "00000000000000000004.seg",
            "00000000000000000007.seg",
            "00000000000000000010.seg",
            "00000000000000000013.seg",
            "00000000000000000016.seg",
        ]
    );
    assert_eq!(
        fs::metadata(&files[5]).unwrap().len(),
        24 + 2 * 518 + AHEAD as u64,
        "the big batch and the zeros written ahead after it"
    );
    let mut all = batches.clone();
    all.push(big);
    assert_eq!(read_all(&log).unwrap(), expected(&all));
    drop(log);
    let (log, recovery) = open(dir.path(), 400).unwrap();
    assert_eq!((recovery.segments, recovery.next_seq), (6, 18));
    assert_eq!(read_all(&log).unwrap(), expected(&all));
}

#[test]
fn a_second_open_of_the_same_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _) = open(dir.path(), 1 << 20).unwrap();
    assert!(matches!(
        open(dir.path(), 1 << 20),
        Err(JournalError::Locked { .. })
    ));
}

#[test]
fn a_record_larger_than_the_limit_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), 1 << 20).unwrap();
    let huge = vec![0u8; MAX_PAYLOAD + 1];
    let e = log
        .append(&[Entry {
            kind: 1,
            payload: &huge,
        }])
        .unwrap_err();
    assert!(e.to_string().contains("larger than the log takes"), "{e}");
    assert_eq!(log.next_seq(), 1);
    assert_eq!(append(&mut log, &batch(1, 1, 1)).unwrap(), 1..2);
}

// ---- recovery ----------------------------------------------------------------------------

#[test]
fn a_partial_batch_at_the_end_is_a_torn_tail_and_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let batches = [batch(1, 2, 10), batch(2, 3, 10)];
    let placed = write_all(dir.path(), 1 << 20, &batches);
    let file = &segment_files(dir.path())[0];
    // Cut after the second batch's second record: two whole records, no LAST.
    let cut = placed[1].records[2];
    fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let (mut log, recovery) = open(dir.path(), 1 << 20).unwrap();
    let torn = recovery.torn.expect("a torn tail");
    assert_eq!(
        (&torn.file, torn.offset, torn.dropped),
        (file, placed[1].start, cut - placed[1].start)
    );
    assert!(torn.why.contains("ends inside a batch"), "{}", torn.why);
    assert_eq!(recovery.next_seq, 3);
    assert_eq!(fs::metadata(file).unwrap().len(), placed[1].start);
    assert_eq!(read_all(&log).unwrap(), expected(&batches[..1]));
    // The log goes on from there.
    assert_eq!(append(&mut log, &batches[1]).unwrap(), 3..6);
    assert_eq!(read_all(&log).unwrap(), expected(&batches));
}

#[test]
fn a_new_segment_whose_header_never_became_whole_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let batches = [batch(1, 2, 10)];
    write_all(dir.path(), 1 << 20, &batches);
    let left = dir.path().join("00000000000000000003.seg");
    fs::write(&left, &format::encode_header(3)[..10]).unwrap();
    let (mut log, recovery) = open(dir.path(), 1 << 20).unwrap();
    let torn = recovery.torn.expect("reported");
    assert_eq!((&torn.file, torn.offset, torn.dropped), (&left, 0, 10));
    assert_eq!((recovery.next_seq, recovery.segments), (3, 1));
    assert!(!left.exists());
    assert_eq!(read_all(&log).unwrap(), expected(&batches));
    append(&mut log, &batch(2, 1, 1)).unwrap();

    // The only segment of a new log, cut inside its header: started again, same seq.
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("00000000000000000001.seg");
    fs::write(&first, &format::encode_header(1)[..23]).unwrap();
    let (log, recovery) = open(dir.path(), 1 << 20).unwrap();
    assert!(recovery.torn.is_some());
    assert_eq!(fs::metadata(&first).unwrap().len(), HEADER_LEN as u64);
    assert_eq!(log.next_seq(), 1);
}

#[test]
fn damage_in_the_header_of_a_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), 200, &[batch(1, 2, 50), batch(2, 2, 50)]);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2);
    for file in &files {
        flip(file, 3, 0x40);
        assert_corrupt_at(open(dir.path(), 200), file, 0);
        flip(file, 3, 0x40);
    }
    // A header whose seq is not the file name's.
    let wrong = dir.path().join("00000000000000000002.seg");
    fs::rename(&files[0], &wrong).unwrap();
    assert_corrupt_at(open(dir.path(), 200), &wrong, 12);
    fs::rename(&wrong, &files[0]).unwrap();
    // A name that is not a seq.
    fs::write(dir.path().join("7.seg"), b"").unwrap();
    assert!(matches!(
        open(dir.path(), 200),
        Err(JournalError::Corrupt { what, .. }) if what.ends_with("7.seg")
    ));
}

#[test]
fn a_flipped_byte_before_another_batch_is_corrupt_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let placed = write_all(dir.path(), 1 << 20, &[batch(1, 3, 20), batch(2, 1, 5)]);
    let file = &segment_files(dir.path())[0];
    // The last byte of the first batch's middle record's payload.
    let at = placed[0].records[2] - 1;
    flip(file, at, 0x01);
    assert_corrupt_at(open(dir.path(), 1 << 20), file, placed[0].records[1]);
    // A length made impossible in the last segment, with a batch after it: corrupt too.
    flip(file, at, 0x01);
    flip(file, placed[0].records[1] + 7, 0x80);
    let e = open(dir.path(), 1 << 20).map(|_| ()).unwrap_err();
    assert!(
        e.to_string().contains("a whole batch follows at byte"),
        "{e}"
    );
}

#[test]
fn a_flipped_byte_in_an_earlier_segment_is_corrupt_when_its_records_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let placed = write_all(dir.path(), 200, &[batch(1, 2, 50), batch(2, 2, 50)]);
    let files = segment_files(dir.path());
    assert_eq!((placed[0].segment, placed[1].segment), (0, 1));
    // In the last batch of a segment that is not the last one: acknowledged, not torn.
    flip(&files[0], placed[0].records[1] + 30, 0x10);
    let (log, _) = open(dir.path(), 200).unwrap();
    let mut records = log.records_after(0).unwrap();
    assert_eq!(records.next().unwrap().unwrap().seq, 1);
    assert_corrupt_at(records.next().unwrap(), &files[0], placed[0].records[1]);
    assert!(records.next().is_none(), "nothing is read past the damage");
    // Reading from after the damaged segment works.
    assert_eq!(log.records_after(2).unwrap().count(), 2);
}

#[test]
fn damage_in_the_last_batch_of_the_log_is_a_torn_tail() {
    // The one case checksums cannot tell apart: nothing was written after the last batch,
    // so damage in it looks exactly like a torn write. It is cut off and reported.
    let dir = tempfile::tempdir().unwrap();
    let placed = write_all(dir.path(), 1 << 20, &[batch(1, 1, 20), batch(2, 2, 20)]);
    let file = &segment_files(dir.path())[0];
    flip(file, placed[1].records[1] + 20, 0xff);
    let (_, recovery) = open(dir.path(), 1 << 20).unwrap();
    let torn = recovery.torn.expect("reported");
    assert_eq!(torn.offset, placed[1].start);
    assert!(torn.why.contains("checksum"), "{}", torn.why);
    assert_eq!(recovery.next_seq, 2);
}

#[test]
fn a_record_with_a_good_checksum_in_the_wrong_place_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let placed = write_all(dir.path(), 1 << 20, &[batch(1, 1, 8), batch(2, 1, 8)]);
    let file = &segment_files(dir.path())[0];
    // The first batch again at the end: whole and checksummed, but seq 1 after seq 2.
    let mut bytes = fs::read(file).unwrap();
    let first = bytes[placed[0].start as usize..placed[0].end as usize].to_vec();
    bytes.truncate(placed[1].end as usize);
    bytes.extend_from_slice(&first);
    fs::write(file, bytes).unwrap();
    let e = open(dir.path(), 1 << 20).map(|_| ()).unwrap_err();
    assert_corrupt_at(Err::<(), _>(e.clone()), file, placed[1].end);
    assert!(
        e.to_string().contains("seq 1 where seq 3 must follow"),
        "{e}"
    );
}

#[test]
fn a_segment_before_the_last_cut_short_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let batches: Vec<Batch> = (1..=3).map(|n| batch(n, 2, 50)).collect();
    let placed = write_all(dir.path(), 200, &batches);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3);
    // Cut inside its batch: the segment was synced before the next was started.
    let cut = placed[0].records[1] + 5;
    fs::File::options()
        .write(true)
        .open(&files[0])
        .unwrap()
        .set_len(cut)
        .unwrap();
    let (log, _) = open(dir.path(), 200).unwrap();
    let read = read_all(&log);
    assert_corrupt_at(read, &files[0], placed[0].records[1]);
}

#[test]
fn records_after_a_checkpoint_outside_the_log_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), 1 << 20).unwrap();
    append(&mut log, &batch(1, 3, 1)).unwrap();
    let e = log.records_after(4).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("the log ends at seq 3"), "{e}");
}

#[test]
fn a_gap_between_segments_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_all(
        dir.path(),
        200,
        &(1..=3).map(|n| batch(n, 2, 50)).collect::<Vec<_>>(),
    );
    let files = segment_files(dir.path());
    fs::remove_file(&files[1]).unwrap();
    let (log, _) = open(dir.path(), 200).unwrap();
    let read = read_all(&log);
    assert_corrupt_at(read, &files[2], 0);
}

// ---- deletion ----------------------------------------------------------------------------

#[test]
fn delete_before_removes_whole_old_segments_and_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let batches: Vec<Batch> = (1..=4).map(|n| batch(n, 2, 50)).collect();
    write_all(dir.path(), 200, &batches);
    // Segments start at seqs 1, 3, 5, 7.
    let (mut log, _) = open(dir.path(), 200).unwrap();
    assert_eq!(log.delete_before(1).unwrap(), 0);
    assert_eq!(
        log.delete_before(4).unwrap(),
        1,
        "seq 3 and 4 are still needed"
    );
    assert_eq!(log.first_seq(), 3);
    assert!(
        log.records_after(0).is_err(),
        "the deleted records are gone"
    );
    assert_eq!(
        log.records_after(2).unwrap().count(),
        6,
        "the rest are all there"
    );
    assert_eq!(log.delete_before(u64::MAX).unwrap(), 2);
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "the active segment stays"
    );
    drop(log);
    let (log, recovery) = open(dir.path(), 200).unwrap();
    assert_eq!((recovery.first_seq, recovery.next_seq), (7, 9));
    assert_eq!(log.records_after(6).unwrap().count(), 2);
}

// ---- full disk, failed syncs ---------------------------------------------------------------

#[test]
fn a_full_disk_fails_the_batch_and_the_log_takes_the_next_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::default();
    let (mut log, _) = Log::open_with(dir.path(), options(800), Box::new(faulty.clone())).unwrap();
    let batches: Vec<Batch> = (1..=4).map(|n| batch(n, 2, 100)).collect();
    append(&mut log, &batches[0]).unwrap();
    let file = segment_files(dir.path())[0].clone();
    let before = log.active_len;
    // Room for half of the next batch: written in part, then ENOSPC.
    faulty.with(|f| f.space = Some(150));
    let e = append(&mut log, &batches[1]).unwrap_err();
    assert!(matches!(e, JournalError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("No space left on device"), "{e}");
    assert!(e.to_string().contains("the log is as before it"), "{e}");
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        before,
        "cut back to the end of the records"
    );
    assert!(append(&mut log, &batches[1]).is_err(), "still full");
    // Space is back.
    faulty.with(|f| f.space = None);
    assert_eq!(append(&mut log, &batches[1]).unwrap(), 3..5);
    // A full disk while starting a segment: the new file is removed, the batch fails.
    append(&mut log, &batches[2]).unwrap();
    faulty.with(|f| f.space = Some(10));
    assert!(append(&mut log, &batches[3]).is_err());
    assert_eq!(segment_files(dir.path()).len(), 1);
    faulty.with(|f| f.space = None);
    assert_eq!(append(&mut log, &batches[3]).unwrap(), 7..9);
    assert_eq!(segment_files(dir.path()).len(), 2);
    drop(log);
    let (log, recovery) = open(dir.path(), 800).unwrap();
    assert_eq!(recovery.torn, None);
    assert_eq!(read_all(&log).unwrap(), expected(&batches));
}

#[test]
fn a_failed_fdatasync_fails_the_batch_and_refuses_writes_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::default();
    let (mut log, _) =
        Log::open_with(dir.path(), options(1 << 20), Box::new(faulty.clone())).unwrap();
    append(&mut log, &batch(1, 1, 10)).unwrap();
    faulty.with(|f| f.fail_sync = true);
    assert!(append(&mut log, &batch(2, 1, 10)).is_err());
    faulty.with(|f| f.fail_sync = false);
    let e = append(&mut log, &batch(2, 1, 10)).unwrap_err();
    assert!(e.to_string().contains("opened again"), "{e}");
    drop(log);
    let (mut log, recovery) = open(dir.path(), 1 << 20).unwrap();
    assert_eq!((recovery.next_seq, recovery.torn), (2, None));
    assert_eq!(append(&mut log, &batch(2, 1, 10)).unwrap(), 2..3);

    // A failed write that cannot be cut off again: refused too, and recovery cuts it.
    let faulty = Faulty::default();
    drop(log);
    let (mut log, _) =
        Log::open_with(dir.path(), options(1 << 20), Box::new(faulty.clone())).unwrap();
    faulty.with(|f| {
        f.space = Some(20);
        f.fail_set_len = true;
    });
    let e = append(&mut log, &batch(3, 2, 10)).unwrap_err();
    assert!(e.to_string().contains("could not be cut off"), "{e}");
    faulty.with(|f| *f = Faults::default());
    assert!(append(&mut log, &batch(3, 1, 1)).is_err());
    drop(log);
    let (log, recovery) = open(dir.path(), 1 << 20).unwrap();
    // The 20 bytes written, and the zeros written ahead after them.
    let torn = recovery.torn.expect("the partial batch is a torn tail");
    assert!(torn.dropped >= 20, "{torn:?}");
    assert_eq!(read_all(&log).unwrap().len(), 2);
}

#[test]
fn zeros_are_written_ahead_so_most_commits_do_not_grow_the_file() {
    const AHEAD: u64 = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let options = Options {
            segment_bytes: 64 << 20,
            ahead: AHEAD as usize,
        };
        Log::open_with(dir.path(), options, Box::new(NoSync)).unwrap()
    };
    let (mut log, _) = open();
    let file = segment_files(dir.path())[0].clone();
    let len = || fs::metadata(&file).unwrap().len();
    assert_eq!(len(), HEADER_LEN as u64);

    // The first batch writes its records and the zeros after them, in its one write.
    append(&mut log, &batch(1, 2, 100)).unwrap();
    let end = log.active_len;
    assert_eq!(len(), end + AHEAD);
    // The next ones overwrite those zeros: the file does not grow.
    for n in 2..10 {
        append(&mut log, &batch(n, 3, 1000)).unwrap();
        assert_eq!(len(), end + AHEAD, "batch {n}");
    }

    // Opened again: the zeros are the end, not a torn tail, and writing goes on where the
    // records end.
    let records_end = log.active_len;
    drop(log);
    let (mut log, recovery) = open();
    assert_eq!((recovery.next_seq, recovery.torn), (27, None));
    assert_eq!(log.active_len, records_end);
    append(&mut log, &batch(10, 1, 10)).unwrap();
    assert_eq!(len(), end + AHEAD);
    let mut all: Vec<Batch> = vec![batch(1, 2, 100)];
    all.extend((2..10).map(|n| batch(n, 3, 1000)));
    all.push(batch(10, 1, 10));
    assert_eq!(read_all(&log).unwrap(), expected(&all));

    // A batch past the zeros writes as many again after itself.
    append(&mut log, &batch(11, 1, AHEAD as usize)).unwrap();
    assert_eq!(len(), log.active_len + AHEAD);
    drop(log);
    let (log, recovery) = open();
    assert_eq!(recovery.torn, None);
    all.push(batch(11, 1, AHEAD as usize));
    assert_eq!(read_all(&log).unwrap(), expected(&all));
}

#[test]
fn segments_of_format_version_1_are_read_and_a_later_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), 1 << 20, &[batch(1, 2, 10)]);
    let file = segment_files(dir.path())[0].clone();
    let with_version = |version: u32| {
        let mut bytes = fs::read(&file).unwrap();
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..20]);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        fs::write(&file, bytes).unwrap();
    };
    // Written before zeros were written ahead: the same records, read as they are.
    with_version(1);
    let (log, recovery) = open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovery.torn, None);
    assert_eq!(read_all(&log).unwrap(), expected(&[batch(1, 2, 10)]));
    drop(log);
    with_version(3);
    let e = open(dir.path(), 1 << 20)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("format version 3; this Herald reads versions 1 to 2"),
        "{e}"
    );
}

#[test]
fn no_record_is_all_zeros() {
    let zeros = [0u8; RECORD_HEADER_LEN];
    assert!(!Frame::parse(&zeros).checks(&zeros, &[]));
    assert!(!batch_starts_at(&[0u8; 64]));
}

// ---- properties --------------------------------------------------------------------------

fn batches() -> impl Strategy<Value = Vec<Batch>> {
    let record = (any::<u8>(), prop::collection::vec(any::<u8>(), 0..48));
    prop::collection::vec(prop::collection::vec(record, 1..5), 1..8)
}

/// Writes the first `cut` bytes of `bytes` as `path`.
fn cut_file(path: &Path, bytes: &[u8], cut: u64) {
    fs::write(path, &bytes[..cut as usize]).unwrap();
}

/// Whether keeping the first `cut` bytes of a segment leaves a torn tail in batch `p`: a part
/// of it, not only zeros (zeros from a batch boundary on are the end of the records).
fn torn(bytes: &[u8], p: &Placed, cut: u64) -> bool {
    p.start < cut
        && cut < p.end
        && bytes[p.start as usize..cut as usize]
            .iter()
            .any(|&b| b != 0)
}

/// Appends `batches` to a new log in `dir`: where the last one is, its segment's file and
/// that file's bytes.
fn write_with_last(
    dir: &Path,
    segment_bytes: u64,
    batches: &[Batch],
) -> (Placed, PathBuf, Vec<u8>) {
    let last = write_all(dir, segment_bytes, batches).pop().unwrap();
    let file = segment_files(dir)[last.segment].clone();
    let bytes = fs::read(&file).unwrap();
    (last, file, bytes)
}

/// Opens the log and reads it all back, checking it against the whole batches expected.
fn recovers_exactly(dir: &Path, segment_bytes: u64, batches: &[Batch], whole: usize, torn: bool) {
    let (log, recovery) = open(dir, segment_bytes).unwrap();
    let records = read_all(&log).unwrap();
    assert_eq!(records, expected(&batches[..whole]));
    assert_eq!(recovery.next_seq, records.len() as u64 + 1);
    assert_eq!(recovery.torn.is_some(), torn, "{:?}", recovery.torn);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A crash while the last batch was being written: whatever prefix of its bytes reached
    /// the file, recovery returns the batches before it, or all of them when it is whole.
    #[test]
    fn a_cut_at_every_offset_of_the_last_batch_keeps_exactly_the_whole_batches(
        batches in batches(),
        segment_bytes in 100u64..600,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (last, file, bytes) = write_with_last(dir.path(), segment_bytes, &batches);
        let n = batches.len();
        for cut in last.start..=last.end {
            cut_file(&file, &bytes, cut);
            let whole = if cut == last.end { n } else { n - 1 };
            recovers_exactly(dir.path(), segment_bytes, &batches, whole, torn(&bytes, &last, cut));
        }
    }

    /// A crash while the last batch was being written over the zeros written ahead: whatever
    /// prefix of its bytes reached the disk, with zeros after it, recovery returns the
    /// batches before it (the torn one is cut off), or all of them when it is whole.
    #[test]
    fn a_batch_torn_over_the_zeros_ahead_keeps_exactly_the_whole_batches(
        batches in batches(),
        segment_bytes in 100u64..600,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (last, file, bytes) = write_with_last(dir.path(), segment_bytes, &batches);
        let n = batches.len();
        for written in last.start..=last.end {
            let mut crashed = bytes.clone();
            crashed[written as usize..].fill(0);
            fs::write(&file, &crashed).unwrap();
            // Zeros over bytes that were zeros already change nothing: the batch is whole.
            let intact = bytes[written as usize..last.end as usize].iter().all(|&b| b == 0);
            let whole = if intact { n } else { n - 1 };
            let torn = !intact && torn(&bytes, &last, written);
            recovers_exactly(dir.path(), segment_bytes, &batches, whole, torn);
        }
    }

    /// Zeros where acknowledged batches were, with a whole batch after them, are damage:
    /// `Corrupt` naming the file and the offset, never taken for the end of the log.
    #[test]
    fn zeros_in_place_of_acknowledged_batches_are_corrupt(
        batches in batches().prop_filter("two batches", |b| b.len() >= 2),
        segment_bytes in 100u64..600,
        which in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let placed = write_all(dir.path(), segment_bytes, &batches);
        let files = segment_files(dir.path());
        // A batch followed by another in its segment.
        let followed: Vec<&Placed> = placed
            .windows(2)
            .filter(|w| w[0].segment == w[1].segment)
            .map(|w| &w[0])
            .collect();
        prop_assume!(!followed.is_empty());
        let hit = followed[which.index(followed.len())];
        let file = files[hit.segment].clone();
        let mut bytes = fs::read(&file).unwrap();
        bytes[hit.start as usize..hit.end as usize].fill(0);
        fs::write(&file, &bytes).unwrap();
        let opened = open(dir.path(), segment_bytes).and_then(|(log, _)| read_all(&log));
        let e = opened.unwrap_err().to_string();
        prop_assert!(e.contains(&format!("at byte {}", hit.start)), "{e}");
        prop_assert!(e.contains(&file.display().to_string()), "{e}");
    }

    /// A cut anywhere in the last segment, header included: the batches wholly before the
    /// cut come back, never a part of one.
    #[test]
    fn a_cut_anywhere_in_the_last_segment_keeps_the_batches_before_it(
        batches in batches(),
        segment_bytes in 100u64..600,
        cut in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let placed = write_all(dir.path(), segment_bytes, &batches);
        let files = segment_files(dir.path());
        let file = files.last().unwrap().clone();
        let bytes = fs::read(&file).unwrap();
        let cut = cut.index(bytes.len() + 1) as u64;
        cut_file(&file, &bytes, cut);
        let last = files.len() - 1;
        let whole = placed
            .iter()
            .take_while(|p| p.segment < last || p.end <= cut)
            .count();
        // In the header, or inside a batch with some of its bytes kept: torn. At the end of a
        // batch or in the zeros written ahead after the last one: whole.
        let cut_torn = cut < HEADER_LEN as u64
            || placed
                .iter()
                .filter(|p| p.segment == last)
                .any(|p| torn(&bytes, p, cut));
        recovers_exactly(dir.path(), segment_bytes, &batches, whole, cut_torn);
    }

    /// A flipped byte in a batch that was followed by another (in its segment or by a later
    /// segment) is acknowledged data: `Corrupt` at the damaged record, never skipped.
    #[test]
    fn a_flipped_byte_in_acknowledged_data_is_corrupt_at_its_record(
        batches in batches(),
        segment_bytes in 100u64..600,
        which in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        prop_assume!(batches.len() > 1);
        let dir = tempfile::tempdir().unwrap();
        let placed = write_all(dir.path(), segment_bytes, &batches);
        let files = segment_files(dir.path());
        // Any batch but the last of the log is followed by another.
        let k = which.index(batches.len() - 1);
        let p = &placed[k];
        let at = p.start + byte.index((p.end - p.start) as usize) as u64;
        let record = *p.records.iter().rev().find(|&&r| r <= at).unwrap();
        flip(&files[p.segment], at, mask);
        let result = open(dir.path(), segment_bytes).and_then(|(log, _)| read_all(&log));
        assert_corrupt_at(result, &files[p.segment], record);
    }

    /// A full disk at any point of any batch: that batch fails, the earlier ones stay, and
    /// once there is room again the log takes the next batches and recovers them all.
    #[test]
    fn a_full_disk_anywhere_loses_no_acknowledged_batch(
        batches in batches(),
        segment_bytes in 100u64..600,
        space in 0u64..2000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let faulty = Faulty::default();
        let (mut log, _) =
            Log::open_with(dir.path(), options(segment_bytes), Box::new(faulty.clone())).unwrap();
        faulty.with(|f| f.space = Some(space));
        let mut acknowledged = Vec::new();
        let mut failed = None;
        for b in &batches {
            match append(&mut log, b) {
                Ok(_) => acknowledged.push(b.clone()),
                Err(e) => {
                    assert!(e.to_string().contains("No space left"), "{e}");
                    failed = Some(b.clone());
                    break;
                }
            }
        }
        faulty.with(|f| f.space = None);
        if let Some(b) = failed {
            append(&mut log, &b).unwrap();
            acknowledged.push(b);
        }
        assert_eq!(read_all(&log).unwrap(), expected(&acknowledged));
        drop(log);
        let (log, recovery) = open(dir.path(), segment_bytes).unwrap();
        assert_eq!(recovery.torn, None);
        assert_eq!(read_all(&log).unwrap(), expected(&acknowledged));
    }
}

#[test]
fn the_real_file_operations_sync_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let batches = [batch(1, 2, 10), batch(2, 1, 3)];
    let (mut log, _) = Log::open(dir.path(), options(100)).unwrap();
    for b in &batches {
        append(&mut log, b).unwrap();
    }
    assert_eq!(log.segments(), 2);
    drop(log);
    let (log, recovery) = Log::open(dir.path(), options(100)).unwrap();
    assert_eq!((recovery.next_seq, recovery.torn), (4, None));
    assert_eq!(read_all(&log).unwrap(), expected(&batches));
}

#[test]
fn an_open_that_fails_on_an_earlier_segment_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), 200, &[batch(1, 2, 50), batch(2, 2, 50)]);
    let files = segment_files(dir.path());
    let torn_len = fs::metadata(&files[1]).unwrap().len() - 3;
    fs::File::options()
        .write(true)
        .open(&files[1])
        .unwrap()
        .set_len(torn_len)
        .unwrap();
    flip(&files[0], 5, 0x01);
    assert_corrupt_at(open(dir.path(), 200), &files[0], 0);
    assert_eq!(fs::metadata(&files[1]).unwrap().len(), torn_len);
}
