//! The engine against sinks written for these tests (the real sinks are tested against real
//! servers in their own crates), on a real journal.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::json;

use herald_testkit::wait::until;

use super::*;
use crate::config::QueueConfig;
use crate::event::Event;
use crate::ingest::Ingest;
use crate::journal::{DeadFilter, DeadKind, Journal};
use crate::rules::{Condition, Route, RouteTable};
use crate::sink::{Delivery, SinkError};
use crate::template::TemplatesBuilder;

/// How long a test waits for the state it expects.
const WAIT: Duration = Duration::from_secs(20);

/// Records what it receives; fails the first `fail_first` attempts with `error`.
struct Recorder {
    received: Mutex<Vec<(String, Instant)>>,
    attempts: AtomicU32,
    fail_first: u32,
    error: Option<SinkError>,
    panics: bool,
    hangs: bool,
    /// Takes deliveries in batches ([`Sink::batches`]), recording each batch's size.
    batches: bool,
    batch_sizes: Mutex<Vec<usize>>,
    /// A batch waits for a permit of this before it is sent (the test lets them go).
    hold: Option<Arc<tokio::sync::Semaphore>>,
    /// Events whose delivery fails with a permanent error, every time.
    refused: Vec<String>,
}

impl Recorder {
    fn ok() -> Arc<Self> {
        Self::failing(0, None)
    }
    fn failing(fail_first: u32, error: Option<SinkError>) -> Arc<Self> {
        Arc::new(Recorder {
            received: Mutex::new(Vec::new()),
            attempts: AtomicU32::new(0),
            fail_first,
            error,
            panics: false,
            hangs: false,
            batches: false,
            batch_sizes: Mutex::new(Vec::new()),
            hold: None,
            refused: Vec::new(),
        })
    }
    /// A sink that takes batches, the first held until the test adds a permit to `hold`.
    fn batching(hold: Option<Arc<tokio::sync::Semaphore>>, refused: &[&str]) -> Arc<Self> {
        Arc::new(Recorder {
            batches: true,
            hold,
            refused: refused.iter().map(|id| id.to_string()).collect(),
            ..Arc::into_inner(Recorder::ok()).unwrap()
        })
    }
    fn batch_sizes(&self) -> Vec<usize> {
        self.batch_sizes.lock().unwrap().clone()
    }
    fn ids(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[async_trait]
impl Sink for Recorder {
    async fn deliver(&self, d: Delivery<'_>) -> Result<(), SinkError> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.panics {
            panic!("plugin exploded");
        }
        if self.hangs && n == 0 {
            std::future::pending::<()>().await;
        }
        if n < self.fail_first {
            return Err(self
                .error
                .clone()
                .unwrap_or_else(|| SinkError::retryable("503 Service Unavailable")));
        }
        if self.refused.contains(&d.event.id) {
            return Err(SinkError::permanent("422 refused"));
        }
        self.received
            .lock()
            .unwrap()
            .push((d.event.id.clone(), Instant::now()));
        Ok(())
    }

    fn batches(&self) -> bool {
        self.batches
    }

    async fn deliver_batch(&self, deliveries: &[Delivery<'_>]) -> Vec<Result<(), SinkError>> {
        self.batch_sizes.lock().unwrap().push(deliveries.len());
        if let Some(hold) = &self.hold {
            hold.acquire().await.unwrap().forget();
        }
        let mut answers = Vec::new();
        for d in deliveries {
            answers.push(self.deliver(*d).await);
        }
        answers
    }
}

/// A dead letter of a delivery that panicked on each of its `attempts` attempts.
fn assert_gave_up_on_panics(kind: &DeadKind, attempts: u32) {
    match kind {
        DeadKind::Delivery {
            reason,
            attempts: errors,
            ..
        } => {
            assert_eq!(reason, &format!("gave up after {attempts} attempts"));
            assert!(
                errors
                    .iter()
                    .all(|a| a.error == "the sink panicked: plugin exploded"),
                "{errors:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

fn fast_policy() -> DeliveryPolicy {
    DeliveryPolicy {
        concurrency: 4,
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        timeout: Duration::from_millis(300),
        ..DeliveryPolicy::default()
    }
}

struct Setup {
    journal: Arc<Journal>,
    engine: Option<Engine>,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new(sinks: Vec<(&str, Arc<dyn Sink>, DeliveryPolicy)>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = sinks.iter().map(|(n, _, _)| n.to_string()).collect();
        let route = Route {
            name: "all".into(),
            condition: Condition::always(),
            sinks: names.clone(),
            continue_matching: false,
        };
        let routes = Arc::new(ArcSwap::from_pointee(RouteTable::new(vec![route], vec![])));
        let queue = QueueConfig {
            path: dir.path().to_path_buf(),
            ..QueueConfig::default()
        };
        let journal = Arc::new(Journal::open(&queue, routes, &names).unwrap());
        let templates = Arc::new(ArcSwap::from_pointee(TemplatesBuilder::default().build()));
        let running = sinks
            .into_iter()
            .map(|(name, sink, policy)| RunningSink {
                name: name.into(),
                sink,
                policy,
                pace: None,
            })
            .collect();
        let engine = Engine::start(journal.clone(), running, templates, Duration::from_secs(2));
        Setup {
            journal,
            engine: Some(engine),
            _dir: dir,
        }
    }

    async fn send(&self, n: usize) {
        for i in 0..n {
            let e = Event::new(format!("e{i}"), "test", "t", Utc::now(), json!({}));
            self.journal.commit(e).await.unwrap();
        }
    }

    async fn stop(mut self) -> Arc<Journal> {
        if let Some(engine) = self.engine.take() {
            engine.stop().await;
        }
        self.journal.clone()
    }
}

#[tokio::test]
async fn every_event_is_delivered_to_every_sink() {
    let a = Recorder::ok();
    let b = Recorder::ok();
    let setup = Setup::new(vec![
        ("a", a.clone(), fast_policy()),
        ("b", b.clone(), fast_policy()),
    ]);
    setup.send(50).await;
    until("50 deliveries each", WAIT, || {
        a.ids().len() >= 50 && b.ids().len() >= 50
    })
    .await;
    let journal = setup.stop().await;
    for sink in [&a, &b] {
        let mut ids = sink.ids();
        assert_eq!(ids.len(), 50, "no duplicates");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50, "none missing");
    }
    until("the journal to settle", WAIT, || {
        journal.stats().unwrap().undelivered_events == 0
    })
    .await;
}

#[tokio::test]
async fn a_failing_sink_does_not_hold_back_another() {
    let down = Recorder::failing(u32::MAX, None);
    let up = Recorder::ok();
    let policy = DeliveryPolicy {
        max_attempts: 1000,
        ..fast_policy()
    };
    let setup = Setup::new(vec![
        ("down", down.clone(), policy),
        ("up", up.clone(), fast_policy()),
    ]);
    setup.send(30).await;
    until("the healthy sink to get everything", WAIT, || {
        up.ids().len() == 30
    })
    .await;
    assert!(down.ids().is_empty());
    let journal = setup.stop().await;
    assert_eq!(
        up.ids().len(),
        30,
        "each event delivered once: {:?}",
        up.ids()
    );
    let stats = journal.stats().unwrap();
    assert_eq!(
        stats.pending.get("down"),
        Some(&30),
        "the backlog waits in the journal"
    );
    assert_eq!(stats.pending.get("up"), Some(&0));
    assert!(
        journal
            .dead_letters(&DeadFilter::default())
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn retryable_failures_are_retried_until_delivered() {
    let flaky = Recorder::failing(3, None);
    let setup = Setup::new(vec![("flaky", flaky.clone(), fast_policy())]);
    setup.send(1).await;
    until("delivery after retries", WAIT, || flaky.ids().len() == 1).await;
    assert_eq!(flaky.attempts.load(Ordering::SeqCst), 4);
    let journal = setup.stop().await;
    assert!(
        journal
            .dead_letters(&DeadFilter::default())
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn permanent_failures_are_dead_lettered_at_once() {
    let broken = Recorder::failing(u32::MAX, Some(SinkError::permanent("400 invalid_payload")));
    let setup = Setup::new(vec![("broken", broken.clone(), fast_policy())]);
    setup.send(1).await;
    let journal = setup.journal.clone();
    until("a dead letter", WAIT, || {
        !journal
            .dead_letters(&DeadFilter::default())
            .unwrap()
            .is_empty()
    })
    .await;
    assert_eq!(
        broken.attempts.load(Ordering::SeqCst),
        1,
        "no retry of a permanent error"
    );
    let letters = journal.dead_letters(&DeadFilter::default()).unwrap();
    match &letters[0].kind {
        DeadKind::Delivery {
            reason, attempts, ..
        } => {
            assert_eq!(reason, "permanent error");
            assert_eq!(attempts[0].error, "400 invalid_payload");
        }
        other => panic!("{other:?}"),
    }
    setup.stop().await;
}

#[tokio::test]
async fn a_panicking_sink_is_retried_then_dead_lettered_and_the_gateway_lives() {
    let panicky = Arc::new(Recorder {
        panics: true,
        ..Arc::into_inner(Recorder::ok()).unwrap()
    });
    let ok = Recorder::ok();
    // Three attempts each: six failures in a row, so the circuit opens once and probes once.
    let policy = DeliveryPolicy {
        max_attempts: 3,
        ..fast_policy()
    };
    let setup = Setup::new(vec![
        ("panicky", panicky.clone(), policy),
        ("ok", ok.clone(), fast_policy()),
    ]);
    setup.send(2).await;
    let journal = setup.journal.clone();
    until("two dead letters", WAIT, || {
        journal.dead_letters(&DeadFilter::default()).unwrap().len() == 2
    })
    .await;
    assert_eq!(ok.ids().len(), 2);
    let letters = journal.dead_letters(&DeadFilter::default()).unwrap();
    assert_gave_up_on_panics(&letters[0].kind, 3);
    setup.stop().await;
}

#[tokio::test]
async fn an_attempt_that_never_ends_times_out_and_is_retried() {
    let hangs = Arc::new(Recorder {
        hangs: true,
        ..Arc::into_inner(Recorder::ok()).unwrap()
    });
    let setup = Setup::new(vec![("hangs", hangs.clone(), fast_policy())]);
    setup.send(1).await;
    until("delivery on the second attempt", WAIT, || {
        hangs.ids().len() == 1
    })
    .await;
    assert_eq!(hangs.attempts.load(Ordering::SeqCst), 2);
    setup.stop().await;
}

#[tokio::test]
async fn the_rate_limit_spaces_deliveries() {
    let slow = Recorder::ok();
    let policy = DeliveryPolicy {
        rate_per_second: Some(10.0),
        burst: 1,
        ..fast_policy()
    };
    let setup = Setup::new(vec![("slow", slow.clone(), policy)]);
    setup.send(6).await;
    until("six deliveries", WAIT, || slow.ids().len() == 6).await;
    let times: Vec<Instant> = slow
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| *t)
        .collect();
    let span = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    assert!(
        span >= Duration::from_millis(450),
        "6 deliveries at 10/s span at least 0.5s, took {span:?}"
    );
    setup.stop().await;
}

#[tokio::test]
async fn retry_after_pauses_the_sink() {
    let limited = Recorder::failing(
        1,
        Some(SinkError::Retryable {
            message: "429".into(),
            retry_after: Some(Duration::from_millis(600)),
        }),
    );
    let setup = Setup::new(vec![("limited", limited.clone(), fast_policy())]);
    let start = Instant::now();
    setup.send(1).await;
    until("delivery after Retry-After", WAIT, || {
        limited.ids().len() == 1
    })
    .await;
    let at = limited.received.lock().unwrap()[0].1;
    assert!(
        at - start >= Duration::from_millis(600),
        "retried after {:?}",
        at - start
    );
    setup.stop().await;
}

#[tokio::test]
async fn deliveries_pending_at_shutdown_are_sent_after_a_restart() {
    let down = Recorder::failing(u32::MAX, None);
    let dir_setup = Setup::new(vec![(
        "s",
        down.clone(),
        DeliveryPolicy {
            max_attempts: 1000,
            ..fast_policy()
        },
    )]);
    dir_setup.send(5).await;
    let queue_dir = dir_setup.journal.dir().to_path_buf();
    let Setup {
        journal,
        engine,
        _dir,
    } = dir_setup;
    engine.unwrap().stop().await;
    journal.close().await;
    drop(journal);

    let up = Recorder::ok();
    let route = Route {
        name: "all".into(),
        condition: Condition::always(),
        sinks: vec!["s".into()],
        continue_matching: false,
    };
    let routes = Arc::new(ArcSwap::from_pointee(RouteTable::new(vec![route], vec![])));
    let queue = QueueConfig {
        path: queue_dir,
        ..QueueConfig::default()
    };
    let journal = Arc::new(Journal::open(&queue, routes, &["s".to_string()]).unwrap());
    let templates = Arc::new(ArcSwap::from_pointee(TemplatesBuilder::default().build()));
    let engine = Engine::start(
        journal.clone(),
        vec![RunningSink {
            name: "s".into(),
            sink: up.clone(),
            policy: fast_policy(),
            pace: None,
        }],
        templates,
        Duration::from_secs(1),
    );
    until("the backlog after restart", WAIT, || up.ids().len() == 5).await;
    engine.stop().await;
    drop(_dir);
}

#[tokio::test]
async fn a_sink_that_batches_gets_its_backlog_in_batches_each_delivery_answered_alone() {
    // One attempt at a time: while the first batch is held, the backlog gathers.
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let sink = Recorder::batching(Some(hold.clone()), &["e3", "e11"]);
    let policy = DeliveryPolicy {
        concurrency: 1,
        ..fast_policy()
    };
    let setup = Setup::new(vec![("batched", sink.clone(), policy)]);
    setup.send(40).await;
    until("the first batch to be held", WAIT, || {
        !sink.batch_sizes().is_empty()
    })
    .await;
    hold.add_permits(1000);
    let journal = setup.journal.clone();
    until("38 deliveries and 2 dead letters", WAIT, || {
        sink.ids().len() >= 38 && journal.dead_letters(&DeadFilter::default()).unwrap().len() >= 2
    })
    .await;
    let journal = setup.stop().await;

    let mut ids = sink.ids();
    assert_eq!(ids.len(), 38, "each delivered once: {ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 38);
    assert!(!ids.contains(&"e3".to_string()) && !ids.contains(&"e11".to_string()));
    let sizes = sink.batch_sizes();
    assert!(
        sizes.iter().any(|&n| n > 1),
        "the held backlog went out in batches: {sizes:?}"
    );
    assert_eq!(
        sizes.iter().sum::<usize>(),
        40,
        "one attempt each: {sizes:?}"
    );
    let mut refused: Vec<String> = journal
        .dead_letters(&DeadFilter::default())
        .unwrap()
        .into_iter()
        .map(|letter| match letter.kind {
            DeadKind::Delivery { reason, event, .. } => {
                assert_eq!(reason, "permanent error");
                event.id
            }
            other => panic!("{other:?}"),
        })
        .collect();
    refused.sort();
    assert_eq!(refused, ["e11", "e3"]);
    until("the journal to settle", WAIT, || {
        journal.stats().unwrap().undelivered_events == 0
    })
    .await;
}

#[tokio::test]
async fn a_batch_that_panics_fails_every_delivery_in_it_and_the_worker_goes_on() {
    let panicky = Arc::new(Recorder {
        panics: true,
        ..Arc::into_inner(Recorder::batching(None, &[])).unwrap()
    });
    let policy = DeliveryPolicy {
        max_attempts: 2,
        ..fast_policy()
    };
    let setup = Setup::new(vec![("panicky", panicky.clone(), policy)]);
    setup.send(3).await;
    let journal = setup.journal.clone();
    until("three dead letters", WAIT, || {
        journal.dead_letters(&DeadFilter::default()).unwrap().len() == 3
    })
    .await;
    for letter in journal.dead_letters(&DeadFilter::default()).unwrap() {
        assert_gave_up_on_panics(&letter.kind, 2);
    }
    setup.stop().await;
}

#[tokio::test]
async fn a_batch_that_never_ends_times_out_and_is_retried() {
    let hangs = Arc::new(Recorder {
        hangs: true,
        ..Arc::into_inner(Recorder::batching(None, &[])).unwrap()
    });
    let setup = Setup::new(vec![("hangs", hangs.clone(), fast_policy())]);
    setup.send(1).await;
    until("delivery on the second attempt", WAIT, || {
        hangs.ids().len() == 1
    })
    .await;
    assert_eq!(hangs.batch_sizes(), [1, 1]);
    setup.stop().await;
}

#[tokio::test]
async fn a_rate_limit_sends_a_batching_sink_one_delivery_at_a_time() {
    let sink = Recorder::batching(None, &[]);
    let policy = DeliveryPolicy {
        rate_per_second: Some(50.0),
        burst: 1,
        ..fast_policy()
    };
    let setup = Setup::new(vec![("paced", sink.clone(), policy)]);
    setup.send(5).await;
    until("five deliveries", WAIT, || sink.ids().len() == 5).await;
    assert!(sink.batch_sizes().is_empty(), "{:?}", sink.batch_sizes());
    setup.stop().await;
}
