use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use herald_core::config::{BuildContext, SinkSpec};
use herald_core::{Delivery, Event, Sink, SinkError};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::config::{check_topic_name, is_secret};
use super::topics::{RECHECK, Topics};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// The value is the event in the CloudEvents JSON format.
    Structured,
    /// The value is `data`; the attributes are `ce_*` headers (CloudEvents Kafka binding).
    Binary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CreateTopic {
    pub partitions: i32,
    /// `None`: the broker's default.
    pub replication_factor: Option<i32>,
}

#[derive(Clone)]
pub(super) struct KafkaSpec {
    /// The sink's name: its readiness check is `kafka:<name>`.
    pub name: String,
    pub brokers: String,
    /// The topic when it is not a template: checked (or created) at start.
    pub literal_topic: Option<String>,
    pub mode: Mode,
    /// Passed to librdkafka after Herald's defaults.
    pub properties: Vec<(String, String)>,
    pub create_topic: Option<CreateTopic>,
}

impl std::fmt::Debug for KafkaSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaSpec")
            .field("name", &self.name)
            .field("brokers", &self.brokers)
            .field("literal_topic", &self.literal_topic)
            .field("mode", &self.mode)
            .field("properties", &properties)
            .field("create_topic", &self.create_topic)
            .finish()
    }
}

/// How long librdkafka keeps trying one record (reconnecting, retrying) before it reports a
/// failure: within the engine's default 30 s attempt timeout, so the engine sees librdkafka's
/// reason rather than its own timeout.
const MESSAGE_TIMEOUT_MS: &str = "25000";
/// How long a delivery waits for room in librdkafka's local queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

impl KafkaSpec {
    /// The producer's configuration: Herald's defaults (idempotent, `acks=all`), then the
    /// sink's `properties`.
    pub(super) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "herald")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", MESSAGE_TIMEOUT_MS);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// Builds the running sink, reporting topic problems to the context's checks
    /// (`kafka:<name>`) and looking again at missing topics every `recheck` until the
    /// context's `stop`.
    pub(super) fn build_with(
        &self,
        context: &BuildContext,
        recheck: Duration,
    ) -> Result<Arc<KafkaSink>, String> {
        let producer = self.producer()?;
        let topics = Arc::new(Topics::new(
            self.name.clone(),
            self.client_config(),
            self.create_topic,
            context.health.clone(),
            recheck,
        ));
        // Say at start what `herald check` cannot know: whether the topic exists; then keep
        // looking at missing ones, so that readiness turns green once someone creates them.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(Topics::watch(
                Arc::downgrade(&topics),
                self.literal_topic.clone(),
                context.stop.clone(),
            ));
        }
        Ok(Arc::new(KafkaSink {
            spec: self.clone(),
            producer: RwLock::new(Arc::new(producer)),
            last_ack: Mutex::new(Instant::now()),
            stuck_after: 2 * self.message_timeout(),
            topics,
        }))
    }

    /// How long librdkafka tries one record: `message.timeout.ms` (or its alias).
    fn message_timeout(&self) -> Duration {
        let ms = self
            .properties
            .iter()
            .rev()
            .find(|(k, _)| k == "message.timeout.ms" || k == "delivery.timeout.ms")
            .map_or(MESSAGE_TIMEOUT_MS, |(_, v)| v.as_str());
        Duration::from_millis(ms.parse().unwrap_or(25_000))
    }

    fn producer(&self) -> Result<Current, String> {
        let producer = self
            .client_config()
            .create()
            .map_err(|e| format!("cannot create the Kafka producer: {}", self.safe(&e)))?;
        Ok(Current {
            producer,
            since: Instant::now(),
        })
    }

    /// An rdkafka error as text, without the value of a secret property.
    fn safe(&self, e: &KafkaError) -> String {
        match e {
            KafkaError::ClientConfig(_, description, key, _) if is_secret(key) => {
                format!(
                    "property `{key}` is not accepted ({})",
                    description.split('"').next().unwrap_or_default().trim()
                )
            }
            e => e.to_string(),
        }
    }
}

impl SinkSpec for KafkaSpec {
    fn build(&self, context: &BuildContext) -> Result<Arc<dyn Sink>, String> {
        let sink: Arc<dyn Sink> = self.build_with(context, RECHECK)?;
        Ok(sink)
    }

    fn describe(&self) -> String {
        let topic = self.literal_topic.as_deref().unwrap_or("(templated)");
        let mode = match self.mode {
            Mode::Structured => "structured CloudEvents",
            Mode::Binary => "binary CloudEvents",
        };
        let create = match self.create_topic {
            Some(c) => format!(", created with {} partitions if missing", c.partitions),
            None => String::new(),
        };
        format!("{} → topic {topic} ({mode}{create})", self.brokers)
    }
}

pub(super) struct KafkaSink {
    spec: KafkaSpec,
    /// Replaced when it is stuck (see [`KafkaSink::failed`]); the records still in the old
    /// one fail and are retried through the new one.
    producer: RwLock<Arc<Current>>,
    /// When the brokers last acknowledged a record.
    last_ack: Mutex<Instant>,
    /// A producer with no acknowledgement for this long while records fail is replaced.
    stuck_after: Duration,
    topics: Arc<Topics>,
}

/// The producer in use and since when.
pub(super) struct Current {
    producer: FutureProducer,
    since: Instant,
}

#[async_trait]
impl Sink for KafkaSink {
    async fn deliver(&self, d: Delivery<'_>) -> Result<(), SinkError> {
        let topic = d.rendered.get("topic").unwrap_or_default().trim();
        check_topic_name(topic).map_err(SinkError::permanent)?;
        self.topics.ensure(topic).await;
        let key = d.rendered.get("key");
        let (payload, headers) = match self.spec.mode {
            Mode::Structured => (d.json.as_bytes().to_vec(), structured_headers()),
            Mode::Binary => binary(d.event),
        };
        let mut record = FutureRecord::to(topic)
            .payload(&payload)
            .headers(owned(&headers));
        if let Some(key) = key {
            record = record.key(key);
        }
        let current = self.current();
        match current
            .producer
            .send(record, Timeout::After(QUEUE_TIMEOUT))
            .await
        {
            Ok(_) => {
                *self.last_ack.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                self.topics.delivered(topic);
                Ok(())
            }
            Err((e, _)) => Err(self.failed(topic, &current, &e)),
        }
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let current = self.current();
        tokio::task::spawn_blocking(move || {
            current
                .producer
                .flush(Timeout::After(Duration::from_secs(10)))
        })
        .await
        .map_err(|e| SinkError::retryable(format!("flush failed: {e}")))?
        .map_err(|e| SinkError::retryable(format!("flush failed: {e}")))
    }
}

impl KafkaSink {
    fn current(&self) -> Arc<Current> {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The delivery's error. A producer that failed fatally, or that has had no record
    /// acknowledged for a long time while records keep failing, is replaced: an idempotent
    /// producer whose broker lost its producer state (a broker that restarted empty, an
    /// expired producer id) can otherwise keep retrying with an id the broker refuses.
    fn failed(&self, topic: &str, current: &Arc<Current>, e: &KafkaError) -> SinkError {
        let code = e.rdkafka_error_code();
        if matches!(
            code,
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
        ) {
            self.topics.missing(topic);
            return SinkError::retryable(format!(
                "topic `{topic}` does not exist on the brokers ({e}); create it, or set `create_topic`"
            ));
        }
        if let Some((fatal, reason)) = current.producer.client().fatal_error() {
            self.replace_producer(current, &format!("fatal error {fatal:?}: {reason}"));
        } else {
            let last_ack = *self.last_ack.lock().unwrap_or_else(|p| p.into_inner());
            let quiet = last_ack.max(current.since).elapsed();
            if quiet > self.stuck_after {
                let reason = format!("no record acknowledged for {}s", quiet.as_secs());
                self.replace_producer(current, &reason);
            }
        }
        classify(e)
    }

    fn replace_producer(&self, failed: &Arc<Current>, reason: &str) {
        let mut current = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&current, failed) {
            return; // another delivery already replaced it
        }
        match self.spec.producer() {
            Ok(fresh) => {
                tracing::warn!(sink = %self.spec.name, %reason, "starting a new Kafka producer");
                let old = std::mem::replace(&mut *current, Arc::new(fresh));
                // Dropping a producer purges its queue (those deliveries fail and are retried)
                // and waits a little: not on the runtime's threads.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(e) => {
                tracing::error!(sink = %self.spec.name, error = %e, "cannot replace the failed Kafka producer")
            }
        }
    }
}

/// The record's headers, as `(name, value)`.
type Headers = Vec<(String, String)>;

fn owned(headers: &Headers) -> OwnedHeaders {
    headers.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}

/// The record is the CloudEvent (CloudEvents Kafka binding, structured mode).
fn structured_headers() -> Headers {
    vec![(
        "content-type".into(),
        "application/cloudevents+json; charset=UTF-8".into(),
    )]
}

/// `data` as the value and the attributes as `ce_*` headers (binary mode). `meta` is not a
/// CloudEvents attribute; its entries go as `meta.<name>` headers, names unchanged. An event
/// without data has an empty value (not a null one, which compacted topics read as a delete).
pub(super) fn binary(event: &Event) -> (Vec<u8>, Headers) {
    let mut headers: Headers = vec![
        ("ce_specversion".into(), event.specversion.to_string()),
        ("ce_id".into(), event.id.clone()),
        ("ce_source".into(), event.source.to_string()),
        ("ce_type".into(), event.ty.to_string()),
        ("ce_time".into(), event.time_text()),
    ];
    if let Some(subject) = &event.subject {
        headers.push(("ce_subject".into(), subject.clone()));
    }
    // `data` as the text it came in when that was kept, without parsing it.
    let json = match event.data.text() {
        Some(text) => (text != "null").then(|| text.as_bytes().to_vec()),
        None => {
            (!event.data.is_null()).then(|| serde_json::to_vec(&event.data).unwrap_or_default())
        }
    };
    let value = match json {
        None => Vec::new(),
        Some(json) => {
            headers.push(("content-type".into(), event.datacontenttype.to_string()));
            json
        }
    };
    for (name, value) in &event.meta {
        headers.push((format!("meta.{name}"), value.to_string()));
    }
    (value, headers)
}

/// librdkafka's delivery errors: those about the record itself are permanent, everything
/// else (brokers down, leader elections, timeouts, a full queue) is retryable.
pub(super) fn classify(e: &KafkaError) -> SinkError {
    use RDKafkaErrorCode as C;
    let permanent = matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::BadMessage
                | C::InvalidRecord
                | C::InvalidTopic
                | C::InvalidTimestamp
                | C::UnsupportedForMessageFormat
                | C::PolicyViolation
                | C::InvalidArgument
                | C::KeySerialization
                | C::ValueSerialization
        )
    );
    let message = format!("Kafka: {e}");
    if permanent {
        SinkError::permanent(message)
    } else {
        SinkError::retryable(message)
    }
}
