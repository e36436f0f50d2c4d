//! A real Kafka broker on 127.0.0.1 for the Kafka sink's tests: herald-testkit's tansu (in
//! memory, restartable on the same port), and an rdkafka consumer that reads records back.

use std::time::{Duration, Instant};

use herald_testkit::tansu::Tansu;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// tansu (from herald-testkit) with a way to read records back.
pub struct Broker {
    tansu: Tansu,
}

impl std::ops::Deref for Broker {
    type Target = Tansu;
    fn deref(&self) -> &Tansu {
        &self.tansu
    }
}

impl std::ops::DerefMut for Broker {
    fn deref_mut(&mut self) -> &mut Tansu {
        &mut self.tansu
    }
}

/// One record as a consumer reads it.
#[derive(Clone, Debug)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn key_text(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).expect("the record's value is JSON")
    }
}

impl Broker {
    pub async fn start() -> Broker {
        Broker {
            tansu: Tansu::start().await,
        }
    }

    /// The number of partitions of `topic`, if it exists.
    pub async fn partitions(&self, topic: &str) -> Option<usize> {
        let (brokers, topic) = (self.brokers(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = consumer_config(&brokers).create().ok()?;
            let metadata = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .ok()?;
            let t = metadata.topics().iter().find(|t| t.name() == topic)?;
            (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
        })
        .await
        .expect("the metadata task")
    }

    /// Reads `topic` from the beginning until `n` records came (at most `limit`).
    pub async fn consume(&self, topic: &str, n: usize, limit: Duration) -> Vec<Record> {
        let (brokers, topic) = (self.brokers(), topic.to_owned());
        tokio::task::spawn_blocking(move || consume(&brokers, &topic, n, limit))
            .await
            .expect("the consumer task")
    }
}

fn consumer_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "herald-tests")
        .set("enable.auto.commit", "false");
    config
}

fn consume(brokers: &str, topic: &str, n: usize, limit: Duration) -> Vec<Record> {
    let deadline = Instant::now() + limit;
    let consumer: BaseConsumer = consumer_config(brokers)
        .create()
        .expect("an rdkafka consumer");
    let partitions = loop {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5));
        if let Ok(metadata) = metadata
            && let Some(t) = metadata.topics().iter().find(|t| t.name() == topic)
            && t.error().is_none()
            && !t.partitions().is_empty()
        {
            break t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>();
        }
        assert!(Instant::now() < deadline, "topic `{topic}` never appeared");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assign a partition");
    }
    consumer.assign(&assignment).expect("assign the partitions");
    let mut records = Vec::new();
    while records.len() < n {
        assert!(
            Instant::now() < deadline,
            "timed out: {} of {n} records read from `{topic}`",
            records.len()
        );
        // Errors (end of partition, a broker not ready yet) just mean "poll again".
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            records.push(Record {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                headers: m
                    .headers()
                    .map(|h| {
                        (0..h.count())
                            .map(|i| {
                                let header = h.get(i);
                                (
                                    header.key.to_owned(),
                                    String::from_utf8_lossy(header.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    records
}
