//! The boundary's contract, through `Arc<dyn Queue>` on the local engine.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use herald_testkit::wait::eventually_async;
use serde_json::json;

use super::*;
use crate::rules::{Condition, Route};

fn routes() -> Arc<ArcSwap<RouteTable>> {
    let all = Route {
        name: "all".into(),
        condition: Condition::always(),
        sinks: vec!["chat".into()],
        continue_matching: false,
    };
    Arc::new(ArcSwap::from_pointee(RouteTable::new(vec![all], vec![])))
}

fn open_in(dir: &std::path::Path) -> Arc<dyn Queue> {
    let config = QueueConfig {
        path: dir.to_path_buf(),
        ..QueueConfig::default()
    };
    open(&config, routes(), &["chat".into(), "audit".into()]).unwrap()
}

fn event(id: &str) -> Event {
    Event::new(id, "directory", "add", Utc::now(), json!({"n": id}))
}

const SHORT: Duration = Duration::from_millis(200);

fn deliveries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(r, s)| ((*r).to_owned(), (*s).to_owned()))
        .collect()
}

#[tokio::test]
async fn an_unrouted_event_is_routed_later_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open_in(dir.path());
    let a = Claim::new("a", Duration::from_secs(30));

    assert_eq!(queue.commit_unrouted(event("1")).await, Ok(Committed::New));
    assert_eq!(
        queue.commit_unrouted(event("1")).await,
        Ok(Committed::Duplicate),
        "the duplicate check applies to unrouted events too"
    );
    let stats = QueueAdmin::stats(&*queue).await.unwrap();
    assert_eq!(stats.undelivered_events, 1, "it counts as undelivered");
    assert!(stats.pending.is_empty(), "and has no deliveries yet");
    assert_eq!(queue.sweep().await, Ok(0), "retention keeps it");

    let claimed = queue.claim_unrouted(a, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event.id, "1");
    let seq = claimed[0].seq;
    assert!(
        queue.claim_unrouted(a, 10).await.unwrap().len() == 1,
        "the holder may claim its own again"
    );
    let b = Claim::new("b", Duration::from_secs(30));
    assert!(
        queue.claim_unrouted(b, 10).await.unwrap().is_empty(),
        "another holder may not while the lease runs"
    );
    assert_eq!(
        queue
            .route_later("b", seq, RouteLater::default())
            .await
            .unwrap(),
        RoutedLater::NotHeld { holder: "a".into() }
    );

    let mut tap = queue.tap();
    let mut enriched = event("1");
    enriched.data = json!({"n": "1", "enriched": true}).into();
    let routed = RouteLater {
        event: Some(enriched.clone()),
        deliveries: deliveries(&[("all", "chat"), ("all", "audit"), ("all", "chat")]),
    };
    assert_eq!(
        queue.route_later("a", seq, routed.clone()).await.unwrap(),
        RoutedLater::Routed { deliveries: 2 }
    );
    assert_eq!(
        queue.route_later("a", seq, routed).await.unwrap(),
        RoutedLater::AlreadyRouted,
        "routed once, however often it is asked"
    );
    assert!(queue.claim_unrouted(b, 10).await.unwrap().is_empty());

    let tapped = tap.try_recv().unwrap();
    assert_eq!(*tapped.event, enriched);
    assert_eq!(tapped.deliveries.len(), 3);
    let pending = queue
        .scan_pending("chat", Claim::new(queue.holder(), queue.lease()), None, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].event.data, enriched.data,
        "the stored event was replaced"
    );
    let stats = QueueAdmin::stats(&*queue).await.unwrap();
    assert_eq!(stats.undelivered_events, 1);
    assert_eq!(stats.pending.get("audit"), Some(&1));
    queue.close().await;
    drop(queue);

    // Durable: after a restart it is still routed, and not unrouted any more.
    let queue = open_in(dir.path());
    assert!(queue.claim_unrouted(a, 10).await.unwrap().is_empty());
    let pending = queue
        .scan_pending("audit", Claim::new(queue.holder(), queue.lease()), None, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    queue.close().await;
}

#[tokio::test]
async fn an_unrouted_event_routed_to_nothing_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open_in(dir.path());
    queue.commit_unrouted(event("1")).await.unwrap();
    let a = Claim::new("a", Duration::from_secs(30));
    let seq = queue.claim_unrouted(a, 1).await.unwrap()[0].seq;
    assert_eq!(
        queue
            .route_later("a", seq, RouteLater::default())
            .await
            .unwrap(),
        RoutedLater::Routed { deliveries: 0 }
    );
    let stats = QueueAdmin::stats(&*queue).await.unwrap();
    assert_eq!((stats.undelivered_events, stats.undelivered_bytes), (0, 0));
    queue.close().await;
}

#[tokio::test]
async fn a_lapsed_lease_returns_the_claim_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open_in(dir.path());
    queue.commit_unrouted(event("1")).await.unwrap();
    queue.commit_unrouted(event("2")).await.unwrap();

    let a = Claim::new("a", SHORT);
    let claimed = queue.claim_unrouted(a, 1).await.unwrap();
    assert_eq!(claimed.len(), 1, "limit");
    let first = claimed[0].seq;
    let b = Claim::new("b", Duration::from_secs(30));
    let other = queue.claim_unrouted(b, 10).await.unwrap();
    assert_eq!(
        other
            .iter()
            .map(|i| i.event.id.as_str())
            .collect::<Vec<_>>(),
        ["2"],
        "b gets what a does not hold"
    );

    // a stops renewing (it died): after its lease, b gets the event.
    let taken = eventually_async("a's lease to run out", Duration::from_secs(5), || {
        let queue = queue.clone();
        async move {
            let items = queue.claim_unrouted(b, 10).await.unwrap();
            items.iter().any(|i| i.seq == first).then_some(items)
        }
    })
    .await;
    assert!(taken.iter().any(|i| i.event.id == "1"));
    assert_eq!(
        queue.renew_unrouted(a, &[first]).await.unwrap(),
        vec![first],
        "a learns it lost the claim"
    );
    assert_eq!(
        queue
            .route_later("a", first, RouteLater::default())
            .await
            .unwrap(),
        RoutedLater::NotHeld { holder: "b".into() }
    );
    assert_eq!(
        queue
            .route_later("b", first, RouteLater::default())
            .await
            .unwrap(),
        RoutedLater::Routed { deliveries: 0 }
    );

    // A release hands a claim over at once.
    let second = other[0].seq;
    queue.release_unrouted("b", &[second]).await.unwrap();
    let again = queue.claim_unrouted(a, 10).await.unwrap();
    assert_eq!(again.iter().map(|i| i.seq).collect::<Vec<_>>(), [second]);
    assert!(queue.renew_unrouted(a, &[second]).await.unwrap().is_empty());
    queue.close().await;
}

#[tokio::test]
async fn one_leader_at_a_time_until_its_lease_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open_in(dir.path());
    let me = queue.holder().to_owned();
    let lead = queue
        .try_lead("google", Claim::new(&me, queue.lease()))
        .await
        .unwrap();
    assert!(lead.is_leader(), "alone, this gateway leads");
    queue.resign("google", &me).await.unwrap();

    let a = Claim::new("a", SHORT);
    let b = Claim::new("b", Duration::from_secs(30));
    assert!(queue.try_lead("google", a).await.unwrap().is_leader());
    assert!(
        matches!(queue.try_lead("google", b).await.unwrap(), Lead::Follower { leader, .. } if leader == "a")
    );
    assert!(
        queue.try_lead("other", b).await.unwrap().is_leader(),
        "leaderships are by name"
    );
    assert!(
        queue.try_lead("google", a).await.unwrap().is_leader(),
        "the leader renews"
    );
    eventually_async("a's leadership to lapse", Duration::from_secs(5), || {
        let queue = queue.clone();
        async move {
            queue
                .try_lead("google", b)
                .await
                .unwrap()
                .is_leader()
                .then_some(())
        }
    })
    .await;
    assert!(!queue.try_lead("google", a).await.unwrap().is_leader());
    queue.resign("google", "a").await.unwrap();
    assert!(
        !queue.try_lead("google", a).await.unwrap().is_leader(),
        "only the leader can resign"
    );
    queue.resign("google", "b").await.unwrap();
    assert!(queue.try_lead("google", a).await.unwrap().is_leader());
    queue.close().await;
}

#[tokio::test]
async fn outcomes_are_handed_over_without_waiting_and_admin_works_on_a_stopped_queue() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open_in(dir.path());
    assert_eq!(queue.commit(event("1")).await, Ok(Committed::New));
    let claim = Claim::new(queue.holder(), queue.lease());
    let item = queue
        .scan_pending("chat", claim, None, 10)
        .await
        .unwrap()
        .remove(0);
    assert!(
        queue
            .renew(claim, std::slice::from_ref(&item.key))
            .await
            .unwrap()
            .is_empty()
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    let recording = queue.record_then(
        item.key.clone(),
        Outcome::Dead {
            attempt: None,
            reason: "test".into(),
        },
        OnRecorded::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    assert!(
        recording.is_done(),
        "room in the writer: nothing to wait for"
    );
    assert_eq!(recording.await, Ok(()));
    assert_eq!(rx.await.unwrap(), Ok(()));
    queue.put_state("k", Some(b"v")).await.unwrap();
    queue.close().await;
    drop(queue);

    let admin = open_admin(&QueueConfig {
        path: dir.path().to_path_buf(),
        ..QueueConfig::default()
    })
    .unwrap();
    assert_eq!(admin.engine(), QueueEngine::Local);
    let dead = admin.dead_letters(&DeadFilter::default()).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(admin.get_state("k").await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(
        admin.list_state("").await.unwrap(),
        vec![("k".to_owned(), b"v".to_vec())]
    );
    assert_eq!(
        admin
            .replay(&DeadFilter::default(), &["chat".into()])
            .await
            .unwrap()
            .replayed,
        vec![dead[0].id]
    );
    assert_eq!(admin.stats().await.unwrap().pending.get("chat"), Some(&1));
}

#[tokio::test]
async fn committing_an_unrouted_event_wakes_the_enrichment_task() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open_in(dir.path());
    let woken = queue.notify_unrouted();
    queue.commit_unrouted(event("1")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken.notified())
        .await
        .expect("woken by the commit (the permit is kept until waited on)");
    queue.commit_unrouted(event("1")).await.unwrap();
    let a = Claim::new("a", Duration::from_secs(30));
    let items = queue.claim_unrouted(a, 10).await.unwrap();
    assert_eq!(items.len(), 1, "a duplicate adds nothing");
    queue.release_unrouted("a", &[items[0].seq]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken.notified())
        .await
        .expect("a claim given up wakes the task too");
}

#[tokio::test]
async fn a_batchs_outcomes_are_handed_over_as_one_and_answered_each() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open_in(dir.path());
    for id in ["1", "2", "3"] {
        assert_eq!(queue.commit(event(id)).await, Ok(Committed::New));
    }
    let claim = Claim::new(queue.holder(), queue.lease());
    let keys: Vec<DeliveryKey> = queue
        .scan_pending("chat", claim, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|item| item.key)
        .collect();
    assert_eq!(keys.len(), 3);
    let retry = Outcome::Retry {
        attempt: Attempt {
            at: now_millis(),
            error: "503".into(),
        },
        next_at: now_millis() + 60_000,
    };
    let dead = Outcome::Dead {
        attempt: None,
        reason: "permanent error".into(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let recording = queue.record_all_then(
        vec![
            (keys[0].clone(), Outcome::Delivered),
            (keys[1].clone(), retry),
            (keys[2].clone(), dead),
        ],
        OnRecordedAll::new(3, move |results| {
            let _ = tx.send(results);
        }),
    );
    assert!(recording.is_done(), "one command, taken at once");
    assert_eq!(recording.await, Ok(()));
    assert_eq!(rx.await.unwrap(), vec![Ok(()), Ok(()), Ok(())]);
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.pending.get("chat"), Some(&1), "the retry waits");
    let letters = queue.dead_letters(&DeadFilter::default()).await.unwrap();
    assert_eq!(letters.len(), 1);
    queue.close().await;

    // Once the queue is closed, each is answered `Closed`.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let recording = queue.record_all_then(
        vec![(keys[1].clone(), Outcome::Delivered)],
        OnRecordedAll::new(1, move |results| {
            let _ = tx.send(results);
        }),
    );
    assert_eq!(recording.await, Err(QueueError::Closed));
    assert_eq!(rx.await.unwrap(), vec![Err(QueueError::Closed)]);
}
