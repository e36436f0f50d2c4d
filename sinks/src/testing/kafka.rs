//! A real Kafka broker on 127.0.0.1 for the Kafka sink's tests: tansu with in-memory storage
//! (`cargo install tansu --locked --features dynostore`, done by scripts/test.sh), which can be
//! stopped and started again on the same port, and an rdkafka consumer that reads records
//! back. tansu keeps nothing across a restart (memory storage) and creates no topic by itself.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::process::{Child, Command};

/// `tansu`: `$HERALD_TEST_TANSU`, else on PATH, else in cargo's bin directory.
fn tansu() -> PathBuf {
    if let Some(path) = std::env::var_os("HERALD_TEST_TANSU") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .unwrap_or_default();
        cargo_home.join("bin").join("tansu")
    })
}

pub struct Broker {
    pub port: u16,
    child: Option<Child>,
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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut broker = Broker { port, child: None };
        broker.run().await;
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (scripts/test.sh installs it): {e}",
                    tansu().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the broker (as a crash would).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }

    /// Creates `topic` with tansu's own CLI.
    pub async fn create_topic(&self, topic: &str, partitions: u32) {
        let status = Command::new(tansu())
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--partitions", &partitions.to_string(), topic])
            .stdout(Stdio::null())
            .status()
            .await
            .expect("run `tansu topic create`");
        assert!(status.success(), "`tansu topic create {topic}` failed");
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
