//! The postgres engine's queue operations on a real PostgreSQL (docs/architecture.md §10.1,
//! §10.2): group commit and duplicates across gateways, claims and leases, outcomes guarded
//! by the holder, dead letters, state, leaders, backpressure, LISTEN/NOTIFY.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use herald_core::config::QueueConfig;
use herald_core::event::Event;
use herald_core::ingest::{Committed, RejectedInput};
use herald_core::queue::{
    Attempt, Claim, DeadFilter, DeadKind, Lead, OnRecordedAll, Outcome, Queue, QueueError,
    now_millis,
};
use herald_core::rules::{Condition, Route, RouteTable};
use herald_queue_postgres::{PgQueue, Registration};
use herald_testkit::postgres::Postgres;
use serde_json::json;

fn routes() -> Arc<ArcSwap<RouteTable>> {
    let all = Route {
        name: "all".into(),
        condition: Condition::always(),
        sinks: vec!["chat".into()],
        continue_matching: false,
    };
    Arc::new(ArcSwap::from_pointee(RouteTable::new(vec![all], vec![])))
}

fn event(id: &str) -> Event {
    Event::new(id, "directory", "add", Utc::now(), json!({"n": id}))
}

async fn open(url: &str, queue: &QueueConfig) -> Arc<dyn Queue> {
    let spec = common::spec_in(
        std::path::Path::new("/"),
        &format!("url: '{url}', lease: 1s"),
    );
    let q = PgQueue::open(
        &spec,
        queue,
        routes(),
        &["chat".into()],
        Registration::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(q)
}

const LEASE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_shared_claimed_once_and_recorded_by_their_holder() {
    let url = Postgres::shared().database("pgq_claims");
    let a = open(&url, &QueueConfig::default()).await;
    let b = open(&url, &QueueConfig::default()).await;
    assert_ne!(a.holder(), b.holder());
    assert!(a.renews_claims());

    // Concurrent commits share transactions; a duplicate is recognised by the other gateway.
    let commits = (0..50).map(|i| {
        let a = a.clone();
        async move { a.commit(event(&format!("e{i}"))).await }
    });
    for r in futures_util::future::join_all(commits).await {
        assert_eq!(r.unwrap(), Committed::New);
    }
    assert_eq!(b.commit(event("e7")).await.unwrap(), Committed::Duplicate);
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.undelivered_events, 50);
    assert_eq!(stats.pending.get("chat"), Some(&50));

    // A claims a page; B sees none of it.
    let page = a
        .scan_pending("chat", Claim::new(a.holder(), LEASE), None, 20)
        .await
        .unwrap();
    assert_eq!(page.len(), 20);
    assert_eq!(page[0].event.id, "e0");
    assert!(page.iter().all(|i| i.claimed), "due: claimed by the scan");
    let rest = b
        .scan_pending("chat", Claim::new(b.holder(), LEASE), None, 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 30);
    assert!(rest.iter().all(|i| i.key.seq > page[19].key.seq));

    // A delivers the first; renews the second; lets the third lapse, which B then takes
    // over and delivers; A's late outcome for it changes nothing.
    a.record(page[0].key.clone(), Outcome::Delivered)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let lost = a
        .renew(Claim::new(a.holder(), LEASE), &[page[1].key.clone()])
        .await
        .unwrap();
    assert!(lost.is_empty());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let taken = b
        .scan_pending("chat", Claim::new(b.holder(), LEASE), None, 100)
        .await
        .unwrap();
    let seqs: Vec<u64> = taken.iter().map(|i| i.key.seq).collect();
    assert!(!seqs.contains(&page[0].key.seq), "delivered");
    assert!(!seqs.contains(&page[1].key.seq), "renewed by A");
    assert!(seqs.contains(&page[2].key.seq), "lapsed: taken over");
    let lost = a
        .renew(Claim::new(a.holder(), LEASE), &[page[2].key.clone()])
        .await
        .unwrap();
    assert_eq!(lost, vec![page[2].key.clone()]);
    let retry = Outcome::Retry {
        attempt: Attempt {
            at: now_millis(),
            error: "late".into(),
        },
        next_at: now_millis(),
    };
    a.record(page[2].key.clone(), retry).await.unwrap();
    b.record(page[2].key.clone(), Outcome::Delivered)
        .await
        .unwrap();
    let stats = a.stats().await.unwrap();
    assert_eq!(stats.pending.get("chat"), Some(&48));
    assert_eq!(stats.undelivered_events, 48);

    // Released claims are free at once.
    let b_keys: Vec<_> = taken.iter().map(|i| i.key.clone()).collect();
    b.release(b.holder(), &b_keys).await.unwrap();
    let again = a
        .scan_pending("chat", Claim::new(a.holder(), LEASE), None, 100)
        .await
        .unwrap();
    assert!(again.iter().any(|i| i.key == b_keys[1]));
    a.close().await;
    b.close().await;
}

/// The cause of an old double delivery in the cluster test: a delivery a scan returns
/// unclaimed because it is not due by the database's clock can be due by the gateway's a
/// moment later. It is not the scanner's: the gateway that scans once it is due claims it,
/// and the first scanner's outcome for it changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_not_yet_due_is_returned_unclaimed_and_claimed_once_due() {
    let url = Postgres::shared().database("pgq_due_soon");
    let a = open(&url, &QueueConfig::default()).await;
    let b = open(&url, &QueueConfig::default()).await;
    a.commit(event("soon")).await.unwrap();
    let key = a
        .scan_pending("chat", Claim::new(a.holder(), LEASE), None, 10)
        .await
        .unwrap()
        .remove(0)
        .key;
    let retry = |next_at| Outcome::Retry {
        attempt: Attempt {
            at: now_millis(),
            error: "503".into(),
        },
        next_at,
    };
    a.record(key.clone(), retry(now_millis() + 400))
        .await
        .unwrap();
    let early = a
        .scan_pending("chat", Claim::new(a.holder(), LEASE), None, 10)
        .await
        .unwrap();
    assert_eq!(early.len(), 1);
    assert!(!early[0].claimed, "not due yet: not claimed");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let due = b
        .scan_pending("chat", Claim::new(b.holder(), LEASE), None, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert!(due[0].claimed, "due: claimed by B's scan");
    let again = a
        .scan_pending("chat", Claim::new(a.holder(), LEASE), None, 10)
        .await
        .unwrap();
    assert!(again.is_empty(), "B's claim hides it from A: {again:?}");
    // A acting on its early, unclaimed copy changes nothing; B's outcome ends it.
    a.record(key.clone(), Outcome::Delivered).await.unwrap();
    assert_eq!(a.stats().await.unwrap().pending.get("chat"), Some(&1));
    b.record(key, Outcome::Delivered).await.unwrap();
    assert_eq!(a.stats().await.unwrap().pending.get("chat"), None);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_dead_letters_replay_purge_state_and_leaders() {
    let url = Postgres::shared().database("pgq_dead");
    let q = open(&url, &QueueConfig::default()).await;
    q.commit(event("x")).await.unwrap();
    let claim = Claim::new(q.holder(), LEASE);
    let item = q
        .scan_pending("chat", claim, None, 10)
        .await
        .unwrap()
        .remove(0);
    let later = now_millis() + 60_000;
    for n in 0..22 {
        q.record(
            item.key.clone(),
            Outcome::Retry {
                attempt: Attempt {
                    at: n,
                    error: format!("e{n}"),
                },
                next_at: later,
            },
        )
        .await
        .unwrap();
    }
    // Not due: listed, not claimed, with its retry state.
    let listed = q.scan_pending("chat", claim, None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        !listed[0].claimed,
        "not due by the database's clock: the worker must not attempt it"
    );
    assert_eq!(listed[0].state.attempts, 22);
    assert_eq!(listed[0].state.errors.len(), 20);
    assert_eq!(listed[0].state.errors[0].error, "e0");
    assert_eq!(listed[0].state.errors[19].error, "e21");
    assert!(listed[0].state.next_at >= later - 1000);
    // The console's "next retry" and its list of the gateways sharing the queue.
    let next = q.next_retries().await.unwrap();
    assert!(
        next.get("chat").is_some_and(|at| (at - later).abs() < 1000),
        "{next:?} vs {later}"
    );
    let gateways = q.gateways().await.unwrap();
    assert!(
        gateways.iter().any(|g| g.holder == q.holder()),
        "{:?}",
        gateways.iter().map(|g| &g.holder).collect::<Vec<_>>()
    );
    q.record(
        item.key.clone(),
        Outcome::Dead {
            attempt: Some(Attempt {
                at: 99,
                error: "gone".into(),
            }),
            reason: "23 attempts".into(),
        },
    )
    .await
    .unwrap();
    q.reject(RejectedInput {
        source: "directory".into(),
        reason: "not JSON".into(),
        received: Utc::now(),
        meta: Default::default(),
        body: "nul \0 inside".into(),
    })
    .await
    .unwrap();
    let dead = q.dead_letters(&DeadFilter::default()).await.unwrap();
    assert_eq!(dead.len(), 2);
    match &dead[0].kind {
        DeadKind::Delivery {
            sink,
            reason,
            attempts,
            event,
            ..
        } => {
            assert_eq!(sink, "chat");
            assert_eq!(reason, "23 attempts");
            assert_eq!(attempts.len(), 21);
            assert_eq!(event.id, "x");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(dead[1].kind, DeadKind::Rejected { .. }));
    assert_eq!(
        q.dead_letter(dead[0].id).await.unwrap(),
        Some(dead[0].clone())
    );
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.undelivered_events, stats.dead_letters), (0, 2));

    // Replay: the event (still within the retention) gets a fresh delivery.
    let report = q
        .replay(&DeadFilter::default(), &["chat".into()])
        .await
        .unwrap();
    assert_eq!(report.replayed, vec![dead[0].id]);
    assert_eq!(report.skipped.len(), 1);
    let fresh = q.scan_pending("chat", claim, None, 10).await.unwrap();
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].state.attempts, 0);
    assert_eq!(fresh[0].event.id, "x");
    assert_eq!(q.purge(&DeadFilter::default()).await.unwrap(), 1);
    // Burying the sink's backlog.
    assert_eq!(q.bury("chat", "sink removed").await.unwrap(), 1);
    assert_eq!(q.stats().await.unwrap().undelivered_events, 0);

    // State.
    q.put_state("google/a", Some(b"1")).await.unwrap();
    q.put_state("google/b", Some(b"2")).await.unwrap();
    q.put_state("other", Some(b"3")).await.unwrap();
    q.put_state("google/a", Some(b"one")).await.unwrap();
    assert_eq!(
        q.get_state("google/a").await.unwrap(),
        Some(b"one".to_vec())
    );
    let listed = q.list_state("google/").await.unwrap();
    assert_eq!(listed.len(), 2);
    q.put_state("google/a", None).await.unwrap();
    assert_eq!(q.get_state("google/a").await.unwrap(), None);

    // Leaders.
    let a = Claim::new("a", LEASE);
    let b = Claim::new("b", LEASE);
    assert!(q.try_lead("google", a).await.unwrap().is_leader());
    assert!(
        matches!(q.try_lead("google", b).await.unwrap(), Lead::Follower { leader, .. } if leader == "a")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(q.try_lead("google", b).await.unwrap().is_leader());
    q.resign("google", "b").await.unwrap();
    assert!(q.try_lead("google", a).await.unwrap().is_leader());
    q.close().await;
    assert!(q.commit(event("late")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_and_wake_ups_across_gateways() {
    let url = Postgres::shared().database("pgq_full");
    let config = QueueConfig {
        max_events: Some(3),
        ..QueueConfig::default()
    };
    let a = open(&url, &config).await;
    let b = open(&url, &config).await;
    let woken = b.notify_for("chat");
    let wait = tokio::spawn(async move { woken.notified().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        a.commit(event(&format!("f{i}"))).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("B woken by A's commit (NOTIFY)")
        .unwrap();
    assert!(matches!(a.room(), Err(QueueError::Full(_))));
    assert!(a.commit(event("f3")).await.is_err());
    assert!(
        a.ready().unwrap_err().contains("queue full"),
        "{:?}",
        a.ready()
    );
    // B sees the shared backlog after its next count.
    herald_testkit::wait::eventually_async(
        "B counts the shared backlog",
        Duration::from_secs(5),
        || async { b.room().is_err().then_some(()) },
    )
    .await;
    a.close().await;
    b.close().await;
}

/// The enrichment task of every gateway is woken when an unrouted event is committed, and
/// when claims on unrouted events are given back (another gateway may lead enrichment now),
/// so an event waits for no poll (docs/architecture.md §11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_commits_and_releases_wake_the_other_gateway() {
    let url = Postgres::shared().database("pgq_unrouted_wake");
    let a = open(&url, &QueueConfig::default()).await;
    let b = open(&url, &QueueConfig::default()).await;
    let woken = b.notify_unrouted();
    // Let B's listening connection start (a NOTIFY before its LISTEN reaches nobody).
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.commit_unrouted(event("w1")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken.notified())
        .await
        .expect("B woken by A's unrouted commit");
    // A routed commit does not wake enrichment.
    a.commit(event("w2")).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), woken.notified())
            .await
            .is_err(),
        "woken by a routed commit"
    );
    let claimed = a
        .claim_unrouted(Claim::new(a.holder(), LEASE), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    a.release_unrouted(a.holder(), &[claimed[0].seq])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken.notified())
        .await
        .expect("B woken by A's release");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_events_are_claimed_taken_over_after_the_lease_and_routed_once() {
    use herald_core::queue::{RouteLater, RoutedLater};
    let url = Postgres::shared().database("pgq_unrouted");
    let a = open(&url, &QueueConfig::default()).await;
    let b = open(&url, &QueueConfig::default()).await;

    // Committed unrouted: undelivered, no deliveries, a duplicate recognised by the other.
    for i in 0..3 {
        let id = format!("u{i}");
        assert_eq!(a.commit_unrouted(event(&id)).await.unwrap(), Committed::New);
    }
    assert_eq!(
        b.commit_unrouted(event("u1")).await.unwrap(),
        Committed::Duplicate
    );
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.undelivered_events, 3);
    assert_eq!(stats.pending.get("chat").copied().unwrap_or(0), 0);

    // A claims two, B gets the third only.
    let held = a
        .claim_unrouted(Claim::new(a.holder(), LEASE), 2)
        .await
        .unwrap();
    let ids: Vec<&str> = held.iter().map(|i| i.event.id.as_str()).collect();
    assert_eq!(ids, ["u0", "u1"]);
    assert!(held[0].lease_until > now_millis());
    let other = b
        .claim_unrouted(Claim::new(b.holder(), LEASE), 10)
        .await
        .unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].event.id, "u2");
    assert!(
        b.claim_unrouted(Claim::new(b.holder(), LEASE), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // B cannot route A's while A's lease runs.
    let to_chat = RouteLater {
        event: None,
        deliveries: vec![("all".into(), "chat".into()), ("all".into(), "chat".into())],
    };
    assert_eq!(
        b.route_later(b.holder(), held[0].seq, to_chat.clone())
            .await
            .unwrap(),
        RoutedLater::NotHeld {
            holder: a.holder().to_owned()
        }
    );

    // A routes u0 with an enriched event (one delivery: the pair counted once); a second
    // call, by anyone, finds it routed.
    let mut enriched = (*held[0].event).clone();
    enriched.data = json!({"n": "u0", "enriched": true}).into();
    let routed = RouteLater {
        event: Some(enriched),
        ..to_chat.clone()
    };
    assert_eq!(
        a.route_later(a.holder(), held[0].seq, routed)
            .await
            .unwrap(),
        RoutedLater::Routed { deliveries: 1 }
    );
    assert_eq!(
        a.route_later(a.holder(), held[0].seq, to_chat.clone())
            .await
            .unwrap(),
        RoutedLater::AlreadyRouted
    );
    assert_eq!(
        b.route_later(b.holder(), held[0].seq, to_chat.clone())
            .await
            .unwrap(),
        RoutedLater::AlreadyRouted
    );
    let page = b
        .scan_pending("chat", Claim::new(b.holder(), LEASE), None, 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].event.data["enriched"], json!(true));

    // A renews u1 while it holds it, then stops renewing: after the lease B takes it over,
    // A's renewal reports it lost, B routes it; A's late routing changes nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        a.renew_unrouted(Claim::new(a.holder(), LEASE), &[held[1].seq])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        b.claim_unrouted(Claim::new(b.holder(), LEASE), 10)
            .await
            .unwrap()
            .is_empty(),
        "renewed by A"
    );
    // B's own lapsed claim on u2 may come back to it meanwhile; it waits for u1.
    let u1 = held[1].seq;
    herald_testkit::wait::eventually_async("B to take u1 over", Duration::from_secs(10), || {
        let b = b.clone();
        async move {
            let items = b
                .claim_unrouted(Claim::new(b.holder(), LEASE), 10)
                .await
                .ok()?;
            items.iter().any(|i| i.seq == u1).then_some(())
        }
    })
    .await;
    assert_eq!(
        a.renew_unrouted(Claim::new(a.holder(), LEASE), &[held[1].seq])
            .await
            .unwrap(),
        vec![held[1].seq]
    );
    assert_eq!(
        b.route_later(b.holder(), held[1].seq, to_chat.clone())
            .await
            .unwrap(),
        RoutedLater::Routed { deliveries: 1 }
    );
    assert_eq!(
        a.route_later(a.holder(), held[1].seq, to_chat.clone())
            .await
            .unwrap(),
        RoutedLater::AlreadyRouted
    );

    // B releases u2: A may claim it at once; routed to nothing, it is delivered.
    b.release_unrouted(b.holder(), &[other[0].seq])
        .await
        .unwrap();
    let again = a
        .claim_unrouted(Claim::new(a.holder(), LEASE), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        a.route_later(a.holder(), again[0].seq, RouteLater::default())
            .await
            .unwrap(),
        RoutedLater::Routed { deliveries: 0 }
    );
    let stats = a.stats().await.unwrap();
    assert_eq!(stats.undelivered_events, 2, "u0 and u1 wait for chat");
    assert_eq!(stats.pending.get("chat"), Some(&2));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_routing_of_one_event_routes_it_exactly_once() {
    use herald_core::queue::{RouteLater, RoutedLater};
    let url = Postgres::shared().database("pgq_route_once");
    let a = open(&url, &QueueConfig::default()).await;
    let b = open(&url, &QueueConfig::default()).await;
    for i in 0..20 {
        a.commit_unrouted(event(&format!("r{i}"))).await.unwrap();
    }
    let items = a
        .claim_unrouted(Claim::new(a.holder(), LEASE), 20)
        .await
        .unwrap();
    assert_eq!(items.len(), 20);
    // Both route every event at once after A's lease ran out (as a late holder would).
    tokio::time::sleep(LEASE + Duration::from_millis(200)).await;
    let to_chat = RouteLater {
        event: None,
        deliveries: vec![("all".into(), "chat".into())],
    };
    let mut calls = Vec::new();
    for item in &items {
        for q in [a.clone(), b.clone()] {
            let routed = to_chat.clone();
            let seq = item.seq;
            calls.push(tokio::spawn(async move {
                let holder = q.holder().to_owned();
                q.route_later(&holder, seq, routed).await
            }));
        }
    }
    let mut routed = 0;
    let mut already = 0;
    for call in calls {
        match call.await.unwrap().unwrap() {
            RoutedLater::Routed { deliveries: 1 } => routed += 1,
            RoutedLater::AlreadyRouted => already += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((routed, already), (20, 20));
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.pending.get("chat"), Some(&20));
    a.close().await;
    b.close().await;
}

/// `herald forget` on postgres (docs/architecture.md §11): every event, dead letter, rejected
/// input and cache entry naming the user goes, the other user's stay, and a second run finds
/// nothing. Unlike the local engine's, it works while gateways run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_removes_exactly_what_names_the_user() {
    let url = Postgres::shared().database("pgq_forget");
    let q = open(&url, &QueueConfig::default()).await;
    let roster = |id: &str, user: &str| {
        Event::new(
            id,
            "classroom",
            "add",
            Utc::now(),
            json!({"collection": "courses.students", "resourceId": {"courseId": "c1", "userId": user}}),
        )
    };
    for (id, user) in [("1", "u1"), ("2", "u1"), ("3", "u1"), ("4", "u2")] {
        assert_eq!(q.commit(roster(id, user)).await.unwrap(), Committed::New);
    }
    let page = q
        .scan_pending("chat", Claim::new(q.holder(), LEASE), None, 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 4);
    let dead = Outcome::Dead {
        attempt: None,
        reason: "permanent error".into(),
    };
    q.record(page[0].key.clone(), dead).await.unwrap(); // u1's first: a dead letter
    q.record(page[1].key.clone(), Outcome::Delivered)
        .await
        .unwrap(); // u1's second: delivered; the third stays pending
    for (user, body) in [("u1", "{\"userId\": \"u1\"}"), ("u2", "garbage u2")] {
        let input = RejectedInput {
            source: "classroom".into(),
            reason: format!("bad {user}"),
            received: Utc::now(),
            meta: Default::default(),
            body: body.into(),
        };
        q.reject(input).await.unwrap();
    }
    for key in ["enrich/user/u1", "enrich/students/c1/u1", "enrich/user/u2"] {
        q.put_state(key, Some(b"{}")).await.unwrap();
    }

    let report = q.forget("u1").await.unwrap();
    assert_eq!(report.cache_entries, 2, "{report:?}");
    assert_eq!(report.dead_letters, 1, "{report:?}");
    assert_eq!(report.rejected, 1, "{report:?}");
    assert_eq!(report.deliveries_dropped, 1, "u1's pending one: {report:?}");
    assert_eq!(report.events, 3, "u1's three stored events: {report:?}");

    let stats = q.stats().await.unwrap();
    assert_eq!(stats.pending.get("chat").copied().unwrap_or(0), 1, "u2's");
    let letters = q.dead_letters(&DeadFilter::default()).await.unwrap();
    assert_eq!(letters.len(), 1, "u2's rejected input stays");
    let left: Vec<String> = q
        .list_state("enrich/")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, ["enrich/user/u2"]);
    let again = q.forget("u1").await.unwrap();
    assert_eq!(again, Default::default(), "nothing left the second time");
    // u1's event ids are free again: the duplicate keys went with the events.
    assert_eq!(q.commit(roster("2", "u1")).await.unwrap(), Committed::New);
}

/// A Directory change sent on both channels of an overlap may reach two gateways: the
/// queue tells them which channel it came on first, atomically (docs/architecture.md §7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_channel_of_a_change_is_one_for_every_gateway() {
    let url = Postgres::shared().database("pgq_overlap");
    let a = open(&url, &QueueConfig::default()).await;
    let b = open(&url, &QueueConfig::default()).await;
    let window = Duration::from_secs(600);
    assert_eq!(
        a.first_channel("change-1", "old", window).await.unwrap(),
        None
    );
    assert_eq!(
        b.first_channel("change-1", "new", window).await.unwrap(),
        Some("old".to_owned()),
        "the copy on the other channel, at the other gateway"
    );
    assert_eq!(
        b.first_channel("change-1", "old", window).await.unwrap(),
        None,
        "the same channel again is a new message, not a copy"
    );
    // Ten channels at once from both gateways: exactly one is first, and all agree on it.
    let calls = (0..10).map(|i| {
        let q = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            let channel = format!("c{i}");
            let first = q.first_channel("change-2", &channel, window).await.unwrap();
            (channel, first)
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let firsts: Vec<&String> = answers
        .iter()
        .filter(|(_, first)| first.is_none())
        .map(|(channel, _)| channel)
        .collect();
    assert_eq!(firsts.len(), 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(_, first)| first.as_ref().is_none_or(|f| f == firsts[0])),
        "{answers:?}"
    );
    // Past the window a change is new again.
    assert_eq!(
        a.first_channel("change-1", "newer", Duration::from_millis(1))
            .await
            .unwrap(),
        None
    );
    a.close().await;
    b.close().await;
}

/// A batch's outcomes handed over together (the default of `Queue::record_all_then`, one by
/// one): each recorded, and one answer with a result for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batchs_outcomes_are_recorded_each_and_answered_together() {
    let url = Postgres::shared().database("pgq_batch_outcomes");
    let queue = open(&url, &QueueConfig::default()).await;
    for id in ["1", "2", "3"] {
        assert_eq!(queue.commit(event(id)).await.unwrap(), Committed::New);
    }
    let keys: Vec<_> = queue
        .scan_pending("chat", Claim::new(queue.holder(), LEASE), None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|item| item.key)
        .collect();
    assert_eq!(keys.len(), 3);
    let (tx, rx) = tokio::sync::oneshot::channel();
    queue
        .record_all_then(
            vec![
                (keys[0].clone(), Outcome::Delivered),
                (keys[1].clone(), Outcome::Delivered),
                (
                    keys[2].clone(),
                    Outcome::Dead {
                        attempt: None,
                        reason: "permanent error".into(),
                    },
                ),
            ],
            OnRecordedAll::new(3, move |results| {
                let _ = tx.send(results);
            }),
        )
        .await
        .unwrap();
    assert_eq!(rx.await.unwrap(), vec![Ok(()), Ok(()), Ok(())]);
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.pending.get("chat").copied().unwrap_or(0), 0);
    assert_eq!(stats.undelivered_events, 0);
    assert_eq!(
        queue
            .dead_letters(&DeadFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    queue.close().await;
}
