//! The ledger against a model: random sequences of events (to one or two sinks, some
//! unrouted), outcomes (delivered, retried, given up), routing of unrouted events,
//! checkpoints, restarts (from the checkpoint, or from the whole log when it is removed) and
//! small segments that roll and get deleted. After every step the index must say exactly
//! what the model says is pending, with the same retry counts; after a restart too. The
//! sinks mostly keep one to three deliveries in memory, so most of the time their backlog
//! is in the log only and read back a part at a time (`Op::Refill`), and outcomes often name deliveries
//! not read back yet (as a start reading outcomes again does).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::codec::{self, Settled};
use super::*;
use crate::journal::records::Attempt;

#[derive(Clone, Debug)]
enum Op {
    /// An event to these of the sinks `a` and `b` (bit 0: a, bit 1: b, bit 2: a by a second
    /// route; 0: no delivery).
    Event(u8),
    Unrouted,
    /// Route the n-th unrouted event (mod their number) to these sinks.
    Route(usize, u8),
    /// Settle or retry the n-th pending delivery (mod their number).
    Delivered(usize),
    Retry(usize),
    Dead(usize),
    Checkpoint,
    Restart {
        keep_checkpoint: bool,
    },
    /// Read back the next part of a sink's deliveries kept in the log only.
    Refill(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8).prop_map(Op::Event),
        1 => Just(Op::Unrouted),
        1 => (any::<usize>(), 0u8..8).prop_map(|(n, s)| Op::Route(n, s)),
        4 => any::<usize>().prop_map(Op::Delivered),
        2 => any::<usize>().prop_map(Op::Retry),
        1 => any::<usize>().prop_map(Op::Dead),
        1 => Just(Op::Checkpoint),
        1 => any::<bool>().prop_map(|keep_checkpoint| Op::Restart { keep_checkpoint }),
        2 => any::<bool>().prop_map(Op::Refill),
    ]
}

/// `(sink, seq, route)` → attempts so far.
type Model = BTreeMap<(String, u64, String), u32>;

fn pairs(sinks: u8) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if sinks & 1 != 0 {
        out.push(("a", "r"));
    }
    if sinks & 4 != 0 {
        out.push(("a", "r2"));
    }
    if sinks & 2 != 0 {
        out.push(("b", "r"));
    }
    out
}

fn event_record(sinks: u8, flags: u8, from: Option<u64>, n: u64) -> Vec<u8> {
    let json = format!(
        r#"{{"specversion":"1.0","id":"{n}","source":"s","type":"t","time":"2026-12-07T00:00:00Z","datacontenttype":"application/json","data":null}}"#
    );
    let mut buf = Vec::new();
    codec::encode_event(&mut buf, 1, flags, from, n, &pairs(sinks), &json);
    buf
}

/// `sink`'s pending deliveries with their attempts: those in memory, then those in the log
/// only (read here without changing the index).
fn pending_of(ledger: &Ledger, sink: &str) -> Vec<(u64, u32)> {
    let index = ledger.shared().index();
    let mut found: Vec<(u64, u32)> = index
        .scan(sink, None, usize::MAX)
        .iter()
        .map(|f| (f.seq, f.state.attempts))
        .collect();
    if let Some(from) = index.spilled_from(sink) {
        for record in ledger.log().records_after(from - 1).unwrap() {
            let record = record.unwrap();
            if record.kind != codec::EVENT {
                continue;
            }
            let (head, _) = codec::decode_event_head(record.seq, &record.payload).unwrap();
            for (s, route) in head.deliveries {
                if s == sink && index.is_pending(sink, record.seq, route) {
                    let attempts = index.state(sink, record.seq, route).attempts;
                    found.push((record.seq, attempts));
                }
            }
        }
    }
    found
}

fn check(ledger: &Ledger, model: &Model, unrouted: &[u64]) -> Result<(), TestCaseError> {
    for sink in ["a", "b"] {
        let found = pending_of(ledger, sink);
        let expected: Vec<(u64, u32)> = model
            .iter()
            .filter(|((s, _, _), _)| s == sink)
            .map(|((_, seq, _), attempts)| (*seq, *attempts))
            .collect();
        prop_assert_eq!(found, expected, "sink {}", sink);
    }
    let index = ledger.shared().index();
    let waiting: Vec<u64> = index.unrouted.keys().copied().collect();
    prop_assert_eq!(waiting, unrouted.to_vec());
    // Never fewer than the model: an outcome for an event not read back yet counts it off
    // when it is.
    prop_assert!(index.undelivered_events >= undelivered(model, unrouted));
    Ok(())
}

fn undelivered(model: &Model, unrouted: &[u64]) -> u64 {
    let mut events: Vec<u64> = model.keys().map(|(_, seq, _)| *seq).collect();
    events.extend(unrouted);
    events.sort_unstable();
    events.dedup();
    events.len() as u64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_index_says_what_is_pending_through_checkpoints_restarts_and_deletion(
        ops in proptest::collection::vec(op(), 1..120),
        spill_at in prop_oneof![Just(1usize), Just(2), Just(3), Just(index::SPILL_AT)],
    ) {
        index::set_spill_at(spill_at);
        let dir = tempfile::tempdir().unwrap();
        let small = Options {
            segment_bytes: 600,
            ahead: 256,
        };
        let (mut ledger, _) = Ledger::open_with(dir.path(), small.clone()).unwrap();
        let mut model = Model::new();
        let mut unrouted: Vec<u64> = Vec::new();
        let mut n = 0u64;
        for op in ops {
            let next = ledger.next_seq();
            match op {
                Op::Event(sinks) => {
                    n += 1;
                    let payload = event_record(sinks, 0, None, n);
                    ledger.append(&[Entry { kind: codec::EVENT, payload: &payload }]).unwrap();
                    for (sink, route) in pairs(sinks) {
                        model.insert((sink.into(), next, route.into()), 0);
                    }
                }
                Op::Unrouted => {
                    n += 1;
                    let payload = event_record(0, codec::UNROUTED, None, n);
                    ledger.append(&[Entry { kind: codec::EVENT, payload: &payload }]).unwrap();
                    unrouted.push(next);
                }
                Op::Route(i, sinks) => {
                    if unrouted.is_empty() {
                        continue;
                    }
                    let from = unrouted.remove(i % unrouted.len());
                    let payload = event_record(sinks, 0, Some(from), from);
                    ledger.append(&[Entry { kind: codec::EVENT, payload: &payload }]).unwrap();
                    for (sink, route) in pairs(sinks) {
                        model.insert((sink.into(), next, route.into()), 0);
                    }
                }
                Op::Delivered(i) | Op::Retry(i) | Op::Dead(i) => {
                    if model.is_empty() {
                        continue;
                    }
                    let key = model.keys().nth(i % model.len()).cloned().unwrap();
                    let settled = match op {
                        Op::Retry(_) => Settled::Retry {
                            next_at: 5,
                            attempt: Attempt { at: 1, error: "503".into() },
                        },
                        Op::Delivered(_) => Settled::Delivered,
                        _ => Settled::Dead,
                    };
                    let mut payload = Vec::new();
                    codec::encode_outcome(&mut payload, key.1, &key.0, &key.2, &settled);
                    ledger.append(&[Entry { kind: codec::OUTCOME, payload: &payload }]).unwrap();
                    if matches!(settled, Settled::Retry { .. }) {
                        *model.get_mut(&key).unwrap() += 1;
                    } else {
                        model.remove(&key);
                    }
                }
                Op::Checkpoint => {
                    // Retention 0: every settled segment may go.
                    ledger.maintain(0, true).unwrap();
                }
                Op::Restart { keep_checkpoint } => {
                    drop(ledger);
                    if !keep_checkpoint {
                        drop_checkpoint(dir.path()).unwrap();
                    }
                    let (reopened, opened) = Ledger::open_with(dir.path(), small.clone()).unwrap();
                    prop_assert!(opened.recovery.torn.is_none());
                    ledger = reopened;
                }
                Op::Refill(b) => {
                    ledger.shared().refill(if b { "b" } else { "a" }).unwrap();
                }
            }
            check(&ledger, &model, &unrouted)?;
        }
        // Once every delivery is read back, the undelivered counters agree with the model.
        for sink in ["a", "b"] {
            while ledger.shared().refill(sink).unwrap() {}
        }
        check(&ledger, &model, &unrouted)?;
        let index = ledger.shared().index();
        prop_assert_eq!(index.undelivered_events, undelivered(&model, &unrouted));
        prop_assert_eq!(index.slots_end, index.next_seq);
    }
}

/// Fails every fdatasync, as a disk that lost the written pages would.
struct FailingSync;

impl crate::journal::log::io::FileOps for FailingSync {
    fn sync_data(&mut self, _file: &std::fs::File) -> std::io::Result<()> {
        Err(std::io::Error::other("EIO (injected)"))
    }
}

#[test]
fn a_failed_fdatasync_is_said_until_the_log_is_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join(LOG_DIR);
    // The log is created with the real syncs, then opened again with failing ones.
    drop(Ledger::open(dir.path()).unwrap());
    let (log, recovery) =
        Log::open_with(&log_dir, Options::default(), Box::new(FailingSync)).unwrap();
    let (mut ledger, _) = Ledger::from_log(log_dir, log, recovery).unwrap();
    assert_eq!(ledger.shared().refusing(), None);
    let payload = event_record(1, 0, None, 1);
    let entry = [Entry {
        kind: codec::EVENT,
        payload: &payload,
    }];
    assert!(ledger.append(&entry).is_err());
    let why = ledger
        .shared()
        .refusing()
        .expect("the refusal is kept for /readyz");
    assert!(why.contains("fdatasync"), "{why}");
    assert!(
        ledger.append(&entry).is_err(),
        "and it takes no more writes"
    );
    assert!(
        ledger.shared().index().pending().is_empty(),
        "nothing of it is indexed"
    );
}
