use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use serde_json::json;

use super::*;
use crate::queue::QueueAdmin;
use crate::rules::{Condition, FieldPath, Op, Route, RouteTable};

fn routes() -> Arc<ArcSwap<RouteTable>> {
    let adds = Route {
        name: "adds".into(),
        condition: Condition::Field(FieldPath::Type, Op::Eq(Some("add".into()))),
        sinks: vec!["chat".into(), "audit".into()],
        continue_matching: false,
    };
    let rest = Route {
        name: "rest".into(),
        condition: Condition::always(),
        sinks: vec!["audit".into()],
        continue_matching: false,
    };
    Arc::new(ArcSwap::from_pointee(RouteTable::new(
        vec![adds, rest],
        vec![],
    )))
}

fn queue(dir: &std::path::Path) -> QueueConfig {
    QueueConfig {
        path: dir.to_path_buf(),
        ..QueueConfig::default()
    }
}

fn sinks() -> Vec<String> {
    vec!["chat".into(), "audit".into()]
}

fn event(id: &str, ty: &str) -> Event {
    Event::new(id, "directory", ty, Utc::now(), json!({"n": id}))
}

#[tokio::test]
async fn events_are_committed_once_and_routed_durably() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    assert_eq!(journal.commit(event("1", "add")).await, Ok(Committed::New));
    assert_eq!(
        journal.commit(event("2", "delete")).await,
        Ok(Committed::New)
    );
    assert_eq!(
        journal.commit(event("1", "add")).await,
        Ok(Committed::Duplicate),
        "same (source, id)"
    );
    assert_eq!(journal.committed_so_far().await, Ok(()));

    let chat = journal.scan_pending("chat", None, 10).await.unwrap();
    assert_eq!(chat.len(), 1);
    assert_eq!(
        (&*chat[0].key.route, chat[0].event.id.as_str()),
        ("adds", "1")
    );
    let audit = journal.scan_pending("audit", None, 10).await.unwrap();
    let got: Vec<_> = audit
        .iter()
        .map(|i| (&*i.key.route, i.event.id.as_str()))
        .collect();
    assert_eq!(got, [("adds", "1"), ("rest", "2")]);
    let held = |items: &[PendingItem]| -> Vec<(DeliveryKey, Event, String)> {
        items
            .iter()
            .map(|i| (i.key.clone(), (*i.event).clone(), i.json.to_string()))
            .collect()
    };
    let fresh = held(&audit);
    for (_, event, json) in &fresh {
        assert_eq!(json, &event.to_json(), "the JSON is the event's own");
    }
    let stats = journal.stats().unwrap();
    assert_eq!(stats.undelivered_events, 2);
    assert_eq!(stats.pending.get("audit"), Some(&2));
    journal.close().await;
    drop(journal);

    // Reopened: the same pending deliveries (now read from disk, not from memory), and
    // duplicates are still recognised.
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    let reread = journal.scan_pending("audit", None, 10).await.unwrap();
    assert_eq!(held(&reread), fresh);
    assert_eq!(
        journal.commit(event("2", "delete")).await,
        Ok(Committed::Duplicate)
    );
    journal.close().await;
}

#[tokio::test]
async fn a_held_events_data_is_the_text_in_its_json() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    let body = r#"{"kind": "admin#directory#user", "id": "7", "name": {"fullName": "A \"B\""}}"#;
    let mut kept = event("7", "add");
    kept.data = crate::event::Data::from_json(body.to_owned()).unwrap();
    let as_tree = event("8", "add");
    assert_eq!(journal.commit(kept.clone()).await, Ok(Committed::New));
    assert_eq!(journal.commit(as_tree.clone()).await, Ok(Committed::New));
    let items = journal.scan_pending("audit", None, 10).await.unwrap();
    let [text, tree] = &items[..] else {
        panic!("two deliveries, got {}", items.len())
    };
    // Kept as text: shared with the JSON the sinks are given, and read the same.
    assert!(text.event.data.is_shared());
    assert_eq!(text.event.data.text(), kept.data.text());
    assert_eq!(*text.event, kept);
    let json = text.json.to_string();
    let at = json.find(r#""data":"#).unwrap() + r#""data":"#.len();
    assert!(json[at..].starts_with(kept.data.text().unwrap()));
    assert_eq!(text.event.data["name"]["fullName"], "A \"B\"");
    // Built as a tree: nothing to share.
    assert!(!tree.event.data.is_shared());
    assert_eq!(*tree.event, as_tree);
    journal.close().await;
}

#[tokio::test]
async fn paging_resumes_after_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    for i in 0..5 {
        journal.commit(event(&i.to_string(), "x")).await.unwrap();
    }
    let first = journal.scan_pending("audit", None, 2).await.unwrap();
    let next = journal
        .scan_pending("audit", first.last().map(|i| i.key.clone()), 10)
        .await
        .unwrap();
    let ids: Vec<_> = first
        .iter()
        .chain(&next)
        .map(|i| i.event.id.clone())
        .collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4"]);
    journal.close().await;
}

#[tokio::test]
async fn delivered_events_leave_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let q = QueueConfig {
        retention: Duration::ZERO,
        ..queue(dir.path())
    };
    // One batch per segment: deletion takes whole segments.
    let one_batch_each = super::log::Options {
        segment_bytes: 1,
        ahead: 64,
    };
    let journal = Journal::open_with(&q, routes(), &sinks(), one_batch_each).unwrap();
    journal.commit(event("1", "delete")).await.unwrap();
    journal.commit(event("2", "delete")).await.unwrap();
    let item = journal
        .scan_pending("audit", None, 1)
        .await
        .unwrap()
        .remove(0);
    journal.record(item.key, Outcome::Delivered).await.unwrap();
    assert_eq!(journal.stats().unwrap().undelivered_events, 1);

    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        journal.sweep().await.unwrap(),
        1,
        "only the delivered event's segment goes"
    );
    assert_eq!(
        journal.commit(event("1", "delete")).await,
        Ok(Committed::New),
        "its duplicate window ended"
    );
    assert_eq!(
        journal.commit(event("2", "delete")).await,
        Ok(Committed::Duplicate),
        "still undelivered"
    );
    journal.close().await;
}

#[tokio::test]
async fn dead_letters_keep_every_attempt_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    journal.commit(event("1", "add")).await.unwrap();
    let item = journal
        .scan_pending("chat", None, 1)
        .await
        .unwrap()
        .remove(0);
    let retry = Outcome::Retry {
        attempt: Attempt {
            at: 1,
            error: "503 busy".into(),
        },
        next_at: 0,
    };
    journal.record(item.key.clone(), retry).await.unwrap();
    let dead = Outcome::Dead {
        attempt: Some(Attempt {
            at: 2,
            error: "400 bad".into(),
        }),
        reason: "permanent error".into(),
    };
    journal.record(item.key.clone(), dead).await.unwrap();

    let letters = journal.dead_letters(&DeadFilter::default()).unwrap();
    assert_eq!(letters.len(), 1);
    match &letters[0].kind {
        DeadKind::Delivery {
            route,
            sink,
            reason,
            attempts,
            event,
        } => {
            assert_eq!(
                (route.as_str(), sink.as_str(), reason.as_str()),
                ("adds", "chat", "permanent error")
            );
            let errors: Vec<_> = attempts.iter().map(|a| a.error.as_str()).collect();
            assert_eq!(errors, ["503 busy", "400 bad"]);
            assert_eq!(event.id, "1");
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
    assert!(
        journal
            .scan_pending("chat", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        journal
            .dead_letters(&DeadFilter {
                sink: Some("audit".into()),
                ..Default::default()
            })
            .unwrap()
            .len(),
        0
    );

    let report = journal
        .replay(&DeadFilter::default(), &sinks())
        .await
        .unwrap();
    assert_eq!(report.replayed, [letters[0].id]);
    assert!(
        journal
            .dead_letters(&DeadFilter::default())
            .unwrap()
            .is_empty()
    );
    let again = journal.scan_pending("chat", None, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].state,
        PendingState::default(),
        "a replay starts with a fresh budget"
    );
    journal.close().await;
}

#[tokio::test]
async fn rejected_inputs_are_kept_and_not_replayable() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    let input = RejectedInput {
        source: "classroom".into(),
        reason: "`message.data` is not base64".into(),
        received: Utc::now(),
        meta: Default::default(),
        body: "{...}".into(),
    };
    journal.reject(input.clone()).await.unwrap();
    let letters = journal.dead_letters(&DeadFilter::default()).unwrap();
    assert_eq!(letters[0].kind, DeadKind::Rejected { input });
    let report = journal
        .replay(&DeadFilter::default(), &sinks())
        .await
        .unwrap();
    assert!(report.replayed.is_empty());
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(journal.purge(&DeadFilter::default()).unwrap(), 1);
    journal.close().await;
}

#[tokio::test]
async fn a_full_queue_refuses_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let q = QueueConfig {
        max_events: Some(2),
        ..queue(dir.path())
    };
    let journal = Journal::open(&q, routes(), &sinks()).unwrap();
    journal.commit(event("1", "x")).await.unwrap();
    journal.commit(event("2", "x")).await.unwrap();
    match journal.commit(event("3", "x")).await {
        Err(IngestError::Full(why)) => assert!(why.contains("max_events is 2"), "{why}"),
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(journal.ready().unwrap_err().contains("queue full"));
    assert_eq!(
        journal.room(),
        Err(JournalError::Full(Limit::Events {
            undelivered: 2,
            max: 2
        }))
    );
    journal.close().await;
}

#[tokio::test]
async fn a_second_gateway_on_the_same_journal_is_told_it_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    match Journal::open(&queue(dir.path()), routes(), &sinks()) {
        Err(e @ JournalError::Locked { .. }) => {
            assert!(e.is_unavailable());
            assert!(e.to_string().contains("in use by another process"), "{e}");
        }
        Err(other) => panic!("expected Locked, got {other:?}"),
        Ok(_) => panic!("expected Locked, got an open journal"),
    }
    journal.close().await;
}

#[tokio::test]
async fn a_shut_down_journal_says_closed() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    journal.close().await;
    let key = DeliveryKey {
        sink: "audit".into(),
        seq: 1,
        route: "rest".into(),
    };
    assert_eq!(
        journal.record(key, Outcome::Delivered).await,
        Err(JournalError::Closed)
    );
    assert_eq!(journal.sweep().await, Err(JournalError::Closed));
    assert_eq!(journal.committed_so_far().await, Err(JournalError::Closed));
    assert!(matches!(
        journal.commit(event("1", "x")).await,
        Err(IngestError::Unavailable(_))
    ));
}

/// Writes `bytes` as the raw record `key` of `table`, as a damaged file would hold it.
fn damage(dir: &std::path::Path, table: store::RawTable, key: u64, bytes: &[u8]) {
    let db = store::open(dir).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(table).unwrap().insert(key, bytes).unwrap();
    txn.commit().unwrap();
}

#[tokio::test]
async fn damaged_records_are_corrupt_naming_the_record_and_the_rest_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    journal.commit(event("1", "x")).await.unwrap();
    journal.commit(event("2", "x")).await.unwrap();
    journal
        .reject(RejectedInput {
            source: "s".into(),
            reason: "not JSON".into(),
            received: Utc::now(),
            meta: Default::default(),
            body: "?".into(),
        })
        .await
        .unwrap();
    journal.close().await;
    drop(journal);
    damage(dir.path(), store::DEAD, 99, br#"{"id": "secret-ish"}"#);

    // A byte flipped in the first event's record, which a later batch follows: not a torn
    // tail but damage to acknowledged data. The journal refuses to start, naming the file
    // and the offset, rather than skipping the event.
    let segment = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let pristine = bytes.clone();
    let at = bytes.windows(3).position(|w| w == b"\"1\"").unwrap();
    bytes[at + 1] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let Err(e) = Journal::open(&queue(dir.path()), routes(), &sinks()) else {
        panic!("a journal with a damaged acknowledged record opened");
    };
    match &e {
        JournalError::Corrupt { what, .. } => {
            assert!(what.contains(&segment.display().to_string()), "{e}");
            assert!(e.to_string().contains("at byte 24"), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    std::fs::write(&segment, &pristine).unwrap();

    // Opened again: the events are read from the log.
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    let items = journal.scan_pending("audit", None, 10).await.unwrap();
    let ids: Vec<_> = items.iter().map(|i| i.event.id.as_str()).collect();
    assert_eq!(ids, ["1", "2"]);

    let letters = journal.dead_letters(&DeadFilter::default()).unwrap();
    assert_eq!(letters.len(), 1, "the readable dead letter is still listed");
    let e = journal.dead_letter(99).unwrap_err();
    match &e {
        JournalError::Corrupt { what, .. } => assert_eq!(what, "dead letter 99"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!e.is_unavailable());
    assert!(!e.to_string().contains("secret-ish"), "{e}");
    assert_eq!(journal.dead_letter(1000).unwrap(), None);
    assert_eq!(
        journal.dead_letter(letters[0].id).unwrap().as_ref(),
        Some(&letters[0])
    );
    journal.close().await;
}

#[tokio::test]
async fn a_second_process_cannot_open_a_journal_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    match open_for_admin(dir.path()) {
        Err(JournalError::Locked { path }) => assert!(path.ends_with(FILE_NAME)),
        Err(other) => panic!("expected Locked, got {other:?}"),
        Ok(_) => panic!("expected Locked, got an open journal"),
    }
    journal.close().await;
}

#[tokio::test]
async fn concurrent_commits_are_grouped() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500 {
        let j = journal.clone();
        tasks.spawn(async move { j.commit(event(&i.to_string(), "x")).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), Ok(Committed::New));
    }
    assert_eq!(journal.stats().unwrap().undelivered_events, 500);
    journal.close().await;
}

#[tokio::test]
async fn a_backlog_older_than_the_memory_window_is_read_from_disk_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap());
    let total = super::recent::RECENT_EVENTS + 10;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let j = journal.clone();
        tasks.spawn(async move { j.commit(event(&format!("{i:05}"), "x")).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), Ok(Committed::New));
    }
    // The oldest pending events fell out of memory: the pages are read from disk, and the
    // newest ones from memory, all in seq order with their own JSON.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = journal.scan_pending("audit", after, 256).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for item in &page {
            assert_eq!(&*item.json, item.event.to_json());
            seen.push(item.key.seq);
        }
    }
    assert_eq!(seen.len(), total);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in seq order");
    journal.close().await;
}

#[tokio::test]
async fn state_values_survive_a_restart_and_health_feeds_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    journal.put_state("google/channel/a", Some(b"one")).unwrap();
    journal.put_state("google/channel/b", Some(b"two")).unwrap();
    journal.put_state("other", Some(b"x")).unwrap();
    journal.put_state("google/channel/b", None).unwrap();
    journal.health().fail("google", "channel `a` expired");
    assert_eq!(journal.ready(), Err("google: channel `a` expired".into()));
    journal.close().await;
    drop(journal);

    let admin = open_for_admin(dir.path()).unwrap();
    assert_eq!(
        admin.list_state("google/").unwrap(),
        vec![("google/channel/a".to_owned(), b"one".to_vec())]
    );
    assert_eq!(admin.get_state("other").unwrap(), Some(b"x".to_vec()));
}

#[tokio::test]
async fn an_outcome_handed_over_reports_its_commit_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    journal.commit(event("1", "x")).await.unwrap();
    let item = journal
        .scan_pending("audit", None, 1)
        .await
        .unwrap()
        .remove(0);

    let (tx, rx) = std::sync::mpsc::channel();
    let then = {
        let tx = tx.clone();
        OnRecorded::new(move |result| tx.send(result).unwrap())
    };
    journal
        .record_then(item.key.clone(), Outcome::Delivered, then)
        .await
        .unwrap();
    let reported = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(reported, Ok(()));
    assert!(
        journal
            .scan_pending("audit", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(journal.stats().unwrap().undelivered_events, 0);

    // After the writer stopped, the outcome cannot be committed: `then` hears so, once.
    journal.close().await;
    let then = OnRecorded::new(move |result| tx.send(result).unwrap());
    let sent = journal
        .record_then(item.key, Outcome::Delivered, then)
        .await;
    assert_eq!(sent, Err(JournalError::Closed));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        Err(JournalError::Closed)
    );
    assert!(rx.try_recv().is_err(), "called once");
}

#[tokio::test]
async fn forget_removes_exactly_what_names_the_user_on_a_stopped_journal() {
    forget_case().await;
}

#[tokio::test]
async fn forget_removes_exactly_what_names_the_user_with_backlogs_in_the_log_only() {
    // Each sink keeps one delivery in memory: the rest, and the rebuilt index's after the
    // rewrite, are in the log only, where an outcome left naming a forgotten event would
    // settle a delivery that is not there.
    ledger::index::set_spill_at(1);
    forget_case().await;
}

async fn forget_case() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    let roster = |id: &str, ty: &str, user: &str| {
        Event::new(
            id,
            "classroom",
            ty,
            Utc::now(),
            json!({"collection": "courses.students", "resourceId": {"courseId": "c1", "userId": user}}),
        )
    };
    // u2's first, so that u1's outcomes come after where the audit sink spills.
    journal.commit(roster("a", "delete", "u2")).await.unwrap(); // audit
    journal.commit(roster("b", "delete", "u2")).await.unwrap(); // audit
    journal.commit(roster("1", "add", "u1")).await.unwrap(); // chat + audit
    journal.commit(roster("2", "delete", "u1")).await.unwrap(); // audit
    journal.commit(roster("3", "add", "u2")).await.unwrap(); // chat + audit
    let chat = journal.scan_pending("chat", None, 10).await.unwrap();
    let dead = Outcome::Dead {
        attempt: None,
        reason: "permanent error".into(),
    };
    journal.record(chat[0].key.clone(), dead).await.unwrap(); // u1's add: a dead letter
    let audit = journal.scan_pending("audit", None, 10).await.unwrap();
    assert_eq!(audit[3].event.id, "2");
    journal
        .record(audit[3].key.clone(), Outcome::Delivered)
        .await
        .unwrap(); // u1's delete: delivered
    for (user, body) in [("u1", "{\"userId\": \"u1\""), ("u2", "garbage u2")] {
        let input = RejectedInput {
            source: "classroom".into(),
            reason: format!("bad {user}"),
            received: Utc::now(),
            meta: Default::default(),
            body: body.into(),
        };
        journal.reject(input).await.unwrap();
    }
    for key in ["enrich/user/u1", "enrich/students/c1/u1", "enrich/user/u2"] {
        QueueAdmin::put_state(&journal, key, Some(b"{}"))
            .await
            .unwrap();
    }
    assert!(
        QueueAdmin::forget(&journal, "u1").await.is_err(),
        "a running journal refuses"
    );
    journal.close().await;
    drop(journal);

    let admin = open_for_admin(dir.path()).unwrap();
    assert!(admin.forget("").is_err());
    let report = admin.forget("u1").unwrap();
    assert_eq!(
        report,
        crate::queue::ForgetReport {
            cache_entries: 2,
            events: 2,
            deliveries_dropped: 1,
            dead_letters: 1,
            rejected: 1,
        }
    );
    let stats = admin.stats().unwrap();
    assert_eq!(stats.undelivered_events, 3, "u2's events");
    assert_eq!(stats.pending.get("chat"), Some(&1));
    assert_eq!(stats.pending.get("audit"), Some(&3));
    assert_eq!(stats.dead_letters, 1, "u2's rejected input");
    let left: Vec<String> = admin
        .list_state("enrich/")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, ["enrich/user/u2"]);
    assert_eq!(
        admin.forget("u1").unwrap(),
        Default::default(),
        "idempotent"
    );
    drop(admin);

    // The gateway starts again on what is left: u1's event ids are free again.
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    let chat = journal.scan_pending("chat", None, 10).await.unwrap();
    assert_eq!(chat.len(), 1);
    assert_eq!(chat[0].event.id, "3");
    assert_eq!(
        journal.commit(roster("1", "add", "u1")).await,
        Ok(Committed::New)
    );
    journal.close().await;
}

// ---- the log engine: upgrade and crash points --------------------------------------------

/// Writes a journal as the versions before the log did (the old tables, through the old
/// writer's code, which is kept for this).
fn old_journal(dir: &std::path::Path) {
    let db = store::open(dir).unwrap();
    let table = routes().load_full();
    let txn = db.begin_write().unwrap();
    {
        let mut batch = old_writer::Batch::new(&txn).unwrap();
        let now = now_millis();
        batch.append(&event("1", "add"), &table, now).unwrap(); // chat + audit
        batch.append(&event("2", "delete"), &table, now).unwrap(); // audit
        batch.append_unrouted(&event("3", "add"), now).unwrap();
        let key = |sink: &str, seq, route: &str| DeliveryKey {
            sink: sink.into(),
            seq,
            route: route.into(),
        };
        batch
            .outcome(&key("audit", 1, "adds"), &Outcome::Delivered)
            .unwrap();
        let failed = Attempt {
            at: now,
            error: "503 from the chat server".into(),
        };
        let retry = Outcome::Retry {
            attempt: failed,
            next_at: now + 60_000,
        };
        batch.outcome(&key("chat", 1, "adds"), &retry).unwrap();
        let dead = Outcome::Dead {
            attempt: None,
            reason: "permanent error".into(),
        };
        batch.outcome(&key("audit", 2, "rest"), &dead).unwrap();
        batch.finish().unwrap();
    }
    txn.commit().unwrap();
    store::put_state(&db, "google/registration", Some(b"kept")).unwrap();
}

#[tokio::test]
async fn a_journal_of_the_redb_version_is_converted_at_start_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    old_journal(dir.path());

    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    let chat = journal.scan_pending("chat", None, 10).await.unwrap();
    assert_eq!(chat.len(), 1, "{chat:?}");
    assert_eq!(chat[0].event.id, "1");
    assert_eq!(chat[0].state.attempts, 1, "the retry state came along");
    assert_eq!(chat[0].state.errors[0].error, "503 from the chat server");
    assert!(
        journal
            .scan_pending("audit", None, 10)
            .await
            .unwrap()
            .is_empty(),
        "delivered and dead deliveries stay settled"
    );
    assert_eq!(
        journal.dead_letters(&DeadFilter::default()).unwrap().len(),
        1
    );
    assert_eq!(
        journal.get_state("google/registration").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    let claim = crate::queue::Claim::new("t", Duration::from_secs(30));
    let unrouted = crate::queue::Queue::claim_unrouted(&journal, claim, 10)
        .await
        .unwrap();
    assert_eq!(unrouted.len(), 1, "the unrouted event still waits");
    assert_eq!(unrouted[0].event.id, "3");
    let stats = journal.stats().unwrap();
    assert_eq!(stats.undelivered_events, 2, "{stats:?}");
    assert_eq!(
        journal.commit(event("2", "delete")).await,
        Ok(Committed::Duplicate),
        "the duplicate window came along"
    );
    assert!(
        dir.path().join(upgrade::PRE_LOG_COPY).exists(),
        "the old file is kept"
    );
    journal.close().await;
    drop(journal);

    // Opened again: converted once, the same pending deliveries.
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    assert_eq!(
        journal.scan_pending("chat", None, 10).await.unwrap().len(),
        1
    );
    journal.close().await;
    drop(journal);
    assert!(upgrade::finalize(dir.path()).unwrap());
    assert!(!dir.path().join(upgrade::PRE_LOG_COPY).exists());
    assert!(!upgrade::finalize(dir.path()).unwrap());

    // The copy is the old journal as it was: a downgrade could use it.
}

#[tokio::test]
async fn a_conversion_cut_short_is_done_again_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    old_journal(dir.path());
    // A crash in the middle of writing the new log leaves `log.converting/` behind.
    std::fs::create_dir_all(dir.path().join("log.converting")).unwrap();
    std::fs::write(
        dir.path().join("log.converting/00000000000000000001.seg"),
        b"half",
    )
    .unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    assert_eq!(
        journal.scan_pending("chat", None, 10).await.unwrap().len(),
        1
    );
    assert!(!dir.path().join("log.converting").exists());
    journal.close().await;
}

/// Where the records of a segment's bytes end: walked by their frames (docs/architecture.md
/// §10.3: `crc u32 | len u32 | kind u8 | flags u8 | seq u64 | payload`) up to the zeros
/// written ahead or the end of the file.
fn records_end(bytes: &[u8]) -> u64 {
    let mut at = 24;
    while let Some(head) = bytes.get(at..at + 18)
        && head.iter().any(|&b| b != 0)
    {
        let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
        at += 18 + len;
    }
    at.min(bytes.len()) as u64
}

/// Every cut of the log's last segment, at every byte offset: what was acknowledged before
/// the cut is there, what was not is not, and the journal opens.
#[tokio::test]
async fn every_acknowledged_record_survives_a_cut_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    let segment = dir.path().join("log/00000000000000000001.seg");
    // The end of the records (the file holds zeros written ahead after them).
    let len = || records_end(&std::fs::read(&segment).unwrap());
    // (end of the batch, audit deliveries pending once it is durable)
    let mut acknowledged = vec![(len(), 0usize)];
    let mut pending = 0;
    for i in 0..12 {
        journal
            .commit(event(&i.to_string(), "delete"))
            .await
            .unwrap();
        pending += 1;
        acknowledged.push((len(), pending));
        if i % 3 == 2 {
            let item = journal
                .scan_pending("audit", None, 1)
                .await
                .unwrap()
                .remove(0);
            journal.record(item.key, Outcome::Delivered).await.unwrap();
            pending -= 1;
            acknowledged.push((len(), pending));
        }
    }
    journal.close().await;
    drop(journal);
    let bytes = std::fs::read(&segment).unwrap();
    // Every offset of the records, and into the zeros after them.
    let end = (records_end(&bytes) + 100).min(bytes.len() as u64);
    for cut in 24..=end {
        let copy = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(copy.path().join("log")).unwrap();
        std::fs::write(
            copy.path().join("log/00000000000000000001.seg"),
            &bytes[..cut as usize],
        )
        .unwrap();
        // The checkpoint written at close covers records the cut removed: it must be
        // refused, not trusted.
        std::fs::copy(
            dir.path().join("log/checkpoint"),
            copy.path().join("log/checkpoint"),
        )
        .unwrap();
        let (ledger, _) = ledger::Ledger::open(copy.path())
            .unwrap_or_else(|e| panic!("a cut at byte {cut} does not open: {e}"));
        let expected = acknowledged
            .iter()
            .rev()
            .find(|(end, _)| *end <= cut)
            .map_or(0, |(_, pending)| *pending);
        let found = ledger
            .shared()
            .index()
            .pending()
            .get("audit")
            .copied()
            .unwrap_or(0);
        assert_eq!(found as usize, expected, "cut at byte {cut}");
    }
}

#[tokio::test]
async fn a_duplicate_window_hit_is_confirmed_against_the_stored_event() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    journal.commit(event("first", "x")).await.unwrap();
    // A hash that points at another event (a fingerprint collision, as it were): the new
    // event is stored, never dropped as a duplicate of one it is not.
    let new = event("second", "x");
    let hash = ledger::codec::dedup_hash(&new.source, &new.id);
    journal.shared.index().dedup.insert(hash, 1);
    assert_eq!(journal.commit(new).await, Ok(Committed::New));

    // A real duplicate of an event long out of the window of recent ones is found on disk.
    for i in 0..(recent::RECENT_EVENTS + 10) {
        journal
            .commit(event(&format!("filler-{i}"), "x"))
            .await
            .unwrap();
    }
    assert_eq!(
        journal.commit(event("first", "x")).await,
        Ok(Committed::Duplicate)
    );
    journal.close().await;
    drop(journal);
    // And after a restart, from the checkpoint's window.
    let journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    assert_eq!(
        journal.commit(event("second", "x")).await,
        Ok(Committed::Duplicate)
    );
    journal.close().await;
}

#[tokio::test]
async fn an_idle_journal_still_deletes_what_passes_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let q = QueueConfig {
        retention: Duration::from_millis(300),
        ..queue(dir.path())
    };
    let one_batch_each = super::log::Options {
        segment_bytes: 1,
        ahead: 64,
    };
    let journal = Journal::open_with(&q, routes(), &sinks(), one_batch_each).unwrap();
    journal.commit(event("1", "delete")).await.unwrap();
    let item = journal
        .scan_pending("audit", None, 1)
        .await
        .unwrap()
        .remove(0);
    journal.record(item.key, Outcome::Delivered).await.unwrap();
    assert_eq!(journal.sweep().await.unwrap(), 0, "within the retention");
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Nothing new came in since the last checkpoint: the segment goes all the same.
    assert_eq!(journal.sweep().await.unwrap(), 1);
    journal.close().await;
}

#[tokio::test]
async fn events_are_read_back_from_many_segments_for_a_sink_far_behind() {
    let dir = tempfile::tempdir().unwrap();
    let small = super::log::Options {
        segment_bytes: 16 * 1024,
        ahead: 1024,
    };
    let journal =
        Journal::open_with(&queue(dir.path()), routes(), &sinks(), small.clone()).unwrap();
    let mut adds = Vec::new();
    for i in 0..3000 {
        let ty = if i % 7 == 0 { "add" } else { "delete" };
        if ty == "add" {
            adds.push(i.to_string());
        }
        journal.commit(event(&i.to_string(), ty)).await.unwrap();
    }
    journal.close().await;
    drop(journal);
    // Opened again: nothing is in the window of recent events, everything is read from the
    // log's segments (there are dozens), through the kept batch positions.
    let journal = Journal::open_with(&queue(dir.path()), routes(), &sinks(), small).unwrap();
    let segments = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert!(segments > 20, "{segments} segments");
    // A sparse sink: every 7th event.
    let chat: Vec<String> = journal
        .scan_pending("chat", None, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|i| i.event.id.clone())
        .collect();
    assert_eq!(chat, adds);
    // A dense one, page by page.
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = journal
            .scan_pending("audit", after.clone(), 256)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        ids.extend(page.iter().map(|i| i.event.id.clone()));
    }
    let expected: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
    assert_eq!(ids, expected);
    assert!(journal.damaged.lock().unwrap().is_empty());
    journal.close().await;
}

#[test]
fn a_failed_commit_is_unready_until_one_succeeds() {
    let live = Live::default();
    assert_eq!(live.failing(), None);
    let full = JournalError::io(
        "appending a batch",
        std::io::Error::from_raw_os_error(28), // ENOSPC
    );
    live.commit_failed(&full);
    let why = live.failing().expect("not ready");
    assert!(
        why.contains("a commit failed 0s ago") && why.contains("No space left on device"),
        "{why}"
    );
    live.commit_succeeded();
    assert_eq!(live.failing(), None, "ready again after a commit");
}

#[tokio::test]
async fn a_backlog_past_what_a_sink_keeps_in_memory_is_read_back_from_the_log() {
    // Each sink keeps 8 pending deliveries in memory; the rest of its backlog is in the log
    // only and read back as its pages reach it, across a restart too.
    ledger::index::set_spill_at(8);
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
    for i in 0..60 {
        let ty = if i % 3 == 0 { "add" } else { "x" };
        journal.commit(event(&format!("{i:02}"), ty)).await.unwrap();
    }
    let stats = journal.stats().unwrap();
    assert_eq!(
        stats.pending["audit"], 60,
        "those in the log only are counted"
    );
    assert_eq!(stats.pending["chat"], 20);
    assert_eq!(stats.undelivered_events, 60);

    // A retry of one of them, kept through the restart and read back with the rest.
    let first = journal.scan_pending("audit", None, 1).await.unwrap();
    let retry = Outcome::Retry {
        attempt: Attempt {
            at: 1,
            error: "HTTP 503".into(),
        },
        next_at: 2,
    };
    journal.record(first[0].key.clone(), retry).await.unwrap();

    let mut seen = Vec::new();
    let mut after = None;
    let mut restarted = false;
    loop {
        let page = journal
            .scan_pending("audit", after.clone(), 7)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for item in page {
            assert_eq!(&*item.json, item.event.to_json());
            let attempts = if item.event.id == "00" { 1 } else { 0 };
            assert_eq!(item.state.attempts, attempts, "{}", item.event.id);
            seen.push(item.event.id.to_string());
            journal.record(item.key, Outcome::Delivered).await.unwrap();
        }
        if seen.len() >= 30 && !restarted {
            journal.close().await;
            drop(journal);
            journal = Journal::open(&queue(dir.path()), routes(), &sinks()).unwrap();
            restarted = true;
        }
    }
    let expected: Vec<String> = (0..60).map(|i| format!("{i:02}")).collect();
    assert_eq!(seen, expected, "every delivery once, in order");
    let chat: Vec<String> = journal
        .scan_pending("chat", None, 100)
        .await
        .unwrap()
        .iter()
        .map(|item| item.event.id.to_string())
        .collect();
    let every_third: Vec<String> = (0..60).step_by(3).map(|i| format!("{i:02}")).collect();
    assert_eq!(chat, every_third, "the other sink reads its own back");
    let stats = journal.stats().unwrap();
    assert_eq!(stats.pending["audit"], 0);
    assert_eq!(stats.undelivered_events, 20, "the chat deliveries left");
    journal.close().await;
}
