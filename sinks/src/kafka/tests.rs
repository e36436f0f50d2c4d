//! The Kafka sink against a real broker (tansu) on 127.0.0.1, read back with an rdkafka
//! consumer. tansu is slow (~150 records/s here), so the counts stay small.

use std::collections::BTreeSet;
use std::time::Duration;

use herald_core::Event;
use herald_core::config::BuildContext;
use herald_core::health::Health;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::sink::{CreateTopic, KafkaSpec, Mode};
use super::topics::RECHECK;
use crate::testing::kafka::Broker;
use crate::testing::{Pipeline, build, deliver, load, user_event};

const READ: Duration = Duration::from_secs(30);

#[tokio::test]
async fn structured_records_are_the_event_keyed_by_the_template() {
    let broker = Broker::start().await;
    broker.create_topic("edu.events", 1).await;
    let config = load(&format!(
        "sinks:\n  bus: {{ type: kafka, brokers: \"{}\", topic: edu.events, key: \"{{{{ subject }}}}\" }}\n",
        broker.brokers()
    ))
    .unwrap();
    let sink = build(&config, "bus");
    let sent: Vec<Event> = (1..=3).map(user_event).collect();
    for e in &sent {
        deliver(&config, sink.as_ref(), "bus", e).await.unwrap();
    }
    let records = broker.consume("edu.events", 3, READ).await;
    for (record, event) in records.iter().zip(&sent) {
        let value: Event = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(&value, event);
        assert_eq!(record.key_text(), event.subject);
        assert_eq!(
            record.header("content-type"),
            Some("application/cloudevents+json; charset=UTF-8")
        );
    }
}

#[tokio::test]
async fn binary_records_are_the_data_with_ce_headers() {
    let broker = Broker::start().await;
    broker.create_topic("edu.binary", 1).await;
    let config = load(&format!(
        "sinks:\n  bus: {{ type: kafka, brokers: \"{}\", topic: edu.binary, key: \"{{{{ data.id }}}}\", mode: binary }}\n",
        broker.brokers()
    ))
    .unwrap();
    let sink = build(&config, "bus");
    let event = user_event(42);
    deliver(&config, sink.as_ref(), "bus", &event)
        .await
        .unwrap();
    let records = broker.consume("edu.binary", 1, READ).await;
    let r = &records[0];
    assert_eq!(
        r.json(),
        json!({"primaryEmail": "user42@example.edu", "id": "42"})
    );
    assert_eq!(r.key_text().as_deref(), Some("42"));
    assert_eq!(r.header("ce_specversion"), Some("1.0"));
    assert_eq!(r.header("ce_id"), Some("chan/42"));
    assert_eq!(r.header("ce_source"), Some("directory"));
    assert_eq!(r.header("ce_type"), Some("directory.users.add"));
    assert_eq!(r.header("ce_subject"), Some("users/42"));
    assert_eq!(r.header("ce_time"), Some(event.time_text().as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("meta.resourceState"), Some("add"));
}

#[tokio::test]
async fn a_templated_topic_is_created_on_first_use_with_create_topic() {
    let broker = Broker::start().await;
    let config = load(&format!(
        "sinks:\n  bus: {{ type: kafka, brokers: \"{}\", topic: \"edu.{{{{ source }}}}\", create_topic: {{ partitions: 2 }} }}\n",
        broker.brokers()
    ))
    .unwrap();
    assert_eq!(broker.partitions("edu.directory").await, None);
    let sink = build(&config, "bus");
    deliver(&config, sink.as_ref(), "bus", &user_event(1))
        .await
        .unwrap();
    assert_eq!(broker.partitions("edu.directory").await, Some(2));
    let records = broker.consume("edu.directory", 1, READ).await;
    assert_eq!(records[0].json()["id"], "chan/1");
}

fn spec(broker: &Broker, topic: &str, create_topic: Option<CreateTopic>) -> KafkaSpec {
    KafkaSpec {
        name: "bus".into(),
        brokers: broker.brokers(),
        literal_topic: Some(topic.into()),
        mode: Mode::Structured,
        // Give up on a record quickly, so the test sees the failure.
        properties: vec![("message.timeout.ms".into(), "3000".into())],
        create_topic,
    }
}

/// A build context reporting to `health`, as the gateway's is.
fn context(health: &Health) -> BuildContext {
    BuildContext {
        health: health.owned(),
        stop: CancellationToken::new(),
    }
}

async fn readiness(
    health: &Health,
    want: impl Fn(&Result<(), String>) -> bool,
) -> Result<(), String> {
    crate::testing::eventually("the readiness check", Duration::from_secs(20), || {
        let now = health.check();
        want(&now).then_some(now)
    })
    .await
}

#[tokio::test]
async fn a_missing_topic_is_reported_at_start_and_delivery_waits_for_it() {
    let broker = Broker::start().await;
    let health = Health::default();
    let sink = spec(&broker, "edu.missing", None)
        .build_with(&context(&health), RECHECK)
        .unwrap();
    // Reported without any delivery: the check runs when the sink starts.
    let reason = readiness(&health, Result::is_err).await.unwrap_err();
    assert_eq!(
        reason,
        "kafka:bus: topic `edu.missing` does not exist on the brokers"
    );

    let config = load(&format!(
        "sinks:\n  bus: {{ type: kafka, brokers: \"{}\", topic: edu.missing }}\n",
        broker.brokers()
    ))
    .unwrap();
    let err = deliver(&config, sink.as_ref(), "bus", &user_event(1))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");

    // Once an operator creates it, the retry goes through and the sink is ready again.
    broker.create_topic("edu.missing", 1).await;
    crate::testing::eventually_async(
        "a delivery to the new topic",
        Duration::from_secs(20),
        || async {
            deliver(&config, sink.as_ref(), "bus", &user_event(1))
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(health.check(), Ok(()));
    assert_eq!(broker.consume("edu.missing", 1, READ).await.len(), 1);
}

#[tokio::test]
async fn create_topic_creates_a_missing_topic_at_start() {
    let broker = Broker::start().await;
    let health = Health::default();
    let _sink = spec(
        &broker,
        "edu.created",
        Some(CreateTopic {
            partitions: 3,
            replication_factor: None,
        }),
    )
    .build_with(&context(&health), RECHECK)
    .unwrap();
    let partitions = crate::testing::eventually_async(
        "the topic's partitions",
        Duration::from_secs(20),
        || async { broker.partitions("edu.created").await },
    )
    .await;
    assert_eq!(partitions, 3);
    assert_eq!(health.check(), Ok(()));
}

/// Creating the topic turns readiness green by itself, deliveries or not; removing the sink
/// (its context stopped, its checks released) ends the looking.
#[tokio::test]
async fn a_missing_topic_is_looked_at_again_until_it_exists() {
    let broker = Broker::start().await;
    let health = Health::default();
    let _sink = spec(&broker, "edu.later", None)
        .build_with(&context(&health), Duration::from_millis(200))
        .unwrap();
    let reason = readiness(&health, Result::is_err).await.unwrap_err();
    assert_eq!(
        reason,
        "kafka:bus: topic `edu.later` does not exist on the brokers"
    );
    broker.create_topic("edu.later", 1).await;
    readiness(&health, Result::is_ok).await.unwrap();

    // A sink that goes away (as a reload removes it) takes its check with it.
    let removed = context(&health);
    let _gone = spec(&broker, "edu.never", None)
        .build_with(&removed, Duration::from_millis(200))
        .unwrap();
    readiness(&health, Result::is_err).await.unwrap_err();
    removed.stop.cancel();
    removed.health.release();
    assert_eq!(health.check(), Ok(()));
}

#[tokio::test]
async fn a_broker_restart_loses_nothing() {
    let mut broker = Broker::start().await;
    broker.create_topic("edu.restart", 1).await;
    let pipeline = Pipeline::start(&format!(
        "  bus:\n    type: kafka\n    brokers: \"{}\"\n    topic: edu.restart\n    key: \"{{{{ id }}}}\"\n    properties: {{ message.timeout.ms: 4000, reconnect.backoff.max.ms: 500 }}\n    delivery: {{ timeout: 10s, initial_backoff: 100ms, max_backoff: 1s, max_attempts: 1000 }}\n",
        broker.brokers()
    ));
    pipeline.commit((0..20).map(user_event)).await;
    pipeline.settled(Duration::from_secs(30)).await;
    assert_eq!(broker.consume("edu.restart", 20, READ).await.len(), 20);

    broker.stop().await;
    pipeline.commit((20..40).map(user_event)).await;
    // The deliveries fail (retryable) while the broker is down, and wait in the journal: every
    // one has been tried and is still pending, none dead.
    crate::testing::eventually_async("a failed attempt on each delivery", READ, || async {
        let attempts = pipeline.attempts("bus").await;
        (attempts.len() == 20 && attempts.iter().all(|n| *n >= 1)).then_some(())
    })
    .await;
    assert_eq!(pipeline.stats().pending.get("bus"), Some(&20));
    assert!(pipeline.dead_letters().is_empty());

    // The broker comes back empty (memory storage): its operator recreates the topic.
    broker.restart().await;
    broker.create_topic("edu.restart", 1).await;
    pipeline.settled(Duration::from_secs(60)).await;
    assert!(pipeline.dead_letters().is_empty());
    let records = broker.consume("edu.restart", 20, READ).await;
    let keys: BTreeSet<String> = records.iter().filter_map(|r| r.key_text()).collect();
    let expected: BTreeSet<String> = (20..40).map(|n| format!("chan/{n}")).collect();
    assert_eq!(
        keys, expected,
        "every event delivered during the outage arrived"
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_a_retryable_error() {
    let config = load(
        "sinks:\n  bus: { type: kafka, brokers: \"127.0.0.1:9\", topic: t, properties: { message.timeout.ms: 1000 } }\n",
    )
    .unwrap();
    let sink = build(&config, "bus");
    let err = deliver(&config, sink.as_ref(), "bus", &user_event(1))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.message().starts_with("Kafka: "), "{err}");
}

#[test]
fn config_mistakes_are_reported_where_they_are() {
    let err = load(concat!(
        "sinks:\n",
        "  a: { type: kafka, brokers: [], topic: t }\n",
        "  b: { type: kafka, brokers: \"localhost\", topic: t }\n",
        "  c: { type: kafka, brokers: \"k:9092\", topic: \"has space\" }\n",
        "  d: { type: kafka, brokers: \"k:9092\", topic: t, mode: avro }\n",
        "  e: { type: kafka, brokers: \"k:9092\", topic: t, properties: { lingr.ms: 5 } }\n",
        "  f: { type: kafka, brokers: \"k:9092\", topic: t, properties: { acks: most } }\n",
        "  g: { type: kafka, brokers: \"k:9092\", topic: t, properties: { bootstrap.servers: x } }\n",
        "  h: { type: kafka, brokers: \"k:9092\", topic: t, create_topic: { partitions: 0 } }\n",
        "  i: { type: kafka, brokers: \"k:9092\", topic: \"{{ nope\" }\n",
        "  j: { type: kafka, brokers: \"k:9092\", topic: t, properties: { acks: 1 } }\n",
        "  k: { type: kafka, brokers: \"k:9092\", topic: t, properties: { acks: 1, enable.idempotence: false } }\n",
    ))
    .unwrap_err();
    for expected in [
        "routes.yaml:2:30: sink `a`: broker list is empty; set `brokers: host:9092`",
        "routes.yaml:3:30: sink `b`: broker `localhost` is not `host:port`",
        "routes.yaml:4:47: sink `c`: topic `has space` is not a Kafka topic name",
        "routes.yaml:5:56: sink `d`: mode `avro` is not `structured` or `binary`",
        "routes.yaml:6:64: sink `e`: `properties.lingr.ms`: no such property in librdkafka",
        "routes.yaml:7:70: sink `f`: `properties.acks`: Invalid value",
        "routes.yaml:8:64: sink `g`: `properties.bootstrap.servers`: set it with the sink's `brokers` key",
        // At the value itself, inside `create_topic`.
        "routes.yaml:9:78: sink `h`: `create_topic.partitions` must be at least 1",
        "routes.yaml:10:47: sink `i`: template `topic`: syntax error",
        "routes.yaml:11:62: sink `j`: the producer is idempotent, which needs `acks: all`; set `enable.idempotence: false` to use `acks: 1`",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("sink `k`"), "{err}");
}

#[test]
fn binary_values_are_data_as_it_came_and_nothing_for_null() {
    use herald_core::event::Data;
    let mut event = user_event(1);
    let text = r#"{"id":"1","n":1e2,"e":"\u00e9"}"#;
    event.data = Data::from_json(text.to_owned()).unwrap();
    let (value, headers) = super::sink::binary(&event);
    assert_eq!(
        value,
        text.as_bytes(),
        "the text as sent, not re-serialized"
    );
    assert!(headers.iter().any(|(name, _)| name == "content-type"));
    for null in [Data::from_json("null".to_owned()).unwrap(), Data::default()] {
        event.data = null;
        let (value, headers) = super::sink::binary(&event);
        assert!(value.is_empty());
        assert!(!headers.iter().any(|(name, _)| name == "content-type"));
    }
}

#[test]
fn describe_and_defaults() {
    let config = load(
        "sinks:\n  bus: { type: kafka, brokers: [\"k1:9092\", \"k2:9092\"], topic: edu.events, properties: { sasl.password: hunter2 } }\n",
    )
    .unwrap();
    let sink = config.sink("bus").unwrap();
    assert_eq!(
        sink.spec.describe(),
        "k1:9092,k2:9092 → topic edu.events (structured CloudEvents)"
    );
    assert!(!format!("{:?}", sink.spec).contains("hunter2"));
    assert!(sink.policy.concurrency >= 64, "records are batched");
}

#[test]
fn the_producer_is_idempotent_with_acks_all_unless_overridden() {
    let mut s = KafkaSpec {
        name: "bus".into(),
        brokers: "k:9092".into(),
        literal_topic: None,
        mode: Mode::Structured,
        properties: vec![],
        create_topic: None,
    };
    let c = s.client_config();
    assert_eq!(c.get("enable.idempotence"), Some("true"));
    assert_eq!(c.get("acks"), Some("all"));
    s.properties = vec![("linger.ms".into(), "50".into())];
    assert_eq!(s.client_config().get("linger.ms"), Some("50"));
}
