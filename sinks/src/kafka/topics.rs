//! Whether the sink's topics exist: checked with a metadata request the first time a topic is
//! used (at start for a literal topic), created through the admin API when `create_topic` is
//! set, and reported to the gateway's readiness (`kafka:<sink>`) and the log when missing.
//! A topic found missing (or that could not be checked) is checked again every 30 s by
//! [`Topics::watch`], deliveries or not, so that creating it turns readiness green.
//! A missing topic never fails the gateway's start: the deliveries to it wait in the journal,
//! retried, until someone creates it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use herald_core::health::Checks;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::sink::CreateTopic;

/// A topic found missing (or that could not be checked) is looked at again after this.
pub(super) const RECHECK: Duration = Duration::from_secs(30);
/// How long a metadata request or a topic creation may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Templated topics can be many; past this many, new ones are not checked beforehand.
const MAX_TRACKED: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Exists,
    Missing {
        checked: Instant,
    },
    /// The brokers could not be asked.
    Unknown {
        checked: Instant,
    },
}

pub(super) struct Topics {
    sink: String,
    config: ClientConfig,
    create: Option<CreateTopic>,
    health: Checks,
    /// [`RECHECK`], shorter in tests.
    recheck: Duration,
    state: Mutex<HashMap<String, State>>,
    /// One check at a time; deliveries waiting for it then read its result.
    checking: tokio::sync::Mutex<()>,
    admin: OnceLock<Result<Arc<AdminClient<DefaultClientContext>>, String>>,
}

impl Topics {
    pub fn new(
        sink: String,
        config: ClientConfig,
        create: Option<CreateTopic>,
        health: Checks,
        recheck: Duration,
    ) -> Topics {
        Topics {
            sink,
            config,
            create,
            health,
            recheck,
            state: Mutex::new(HashMap::new()),
            checking: tokio::sync::Mutex::new(()),
            admin: OnceLock::new(),
        }
    }

    /// Checks `topic` (creating it if configured) unless that was done recently.
    pub async fn ensure(&self, topic: &str) {
        if !self.due(topic) {
            return;
        }
        let _one = self.checking.lock().await;
        if !self.due(topic) {
            return;
        }
        let state = self.check(topic).await;
        self.set(topic, state);
    }

    /// Checks `first` (the literal topic, at start), then every `recheck` the topics that are
    /// missing or could not be checked, until `stop` or until the sink is gone.
    pub async fn watch(this: Weak<Topics>, first: Option<String>, stop: CancellationToken) {
        if let (Some(topic), Some(topics)) = (&first, this.upgrade()) {
            tokio::select! {
                () = stop.cancelled() => return,
                () = topics.ensure(topic) => {}
            }
        }
        loop {
            let Some(recheck) = this.upgrade().map(|t| t.recheck) else {
                return;
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(recheck) => {}
            }
            let Some(topics) = this.upgrade() else {
                return;
            };
            for topic in topics.unsettled() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = topics.ensure(&topic) => {}
                }
            }
        }
    }

    /// The topics not known to exist.
    fn unsettled(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, s)| **s != State::Exists)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// A record reached `topic`: it exists.
    pub fn delivered(&self, topic: &str) {
        if self.lock().get(topic) != Some(&State::Exists) {
            self.set(topic, State::Exists);
        }
    }

    /// The brokers said `topic` does not exist.
    pub fn missing(&self, topic: &str) {
        let now = Instant::now();
        // With `create_topic`, check (and create) again before the next delivery.
        let checked = match self.create {
            Some(_) => now.checked_sub(self.recheck).unwrap_or(now),
            None => now,
        };
        self.set(topic, State::Missing { checked });
    }

    fn due(&self, topic: &str) -> bool {
        let state = self.lock();
        match state.get(topic) {
            Some(State::Exists) => false,
            Some(State::Missing { checked } | State::Unknown { checked }) => {
                checked.elapsed() >= self.recheck
            }
            None => state.len() < MAX_TRACKED,
        }
    }

    fn set(&self, topic: &str, new: State) {
        let missing: BTreeSet<String> = {
            let mut state = self.lock();
            state.insert(topic.to_owned(), new);
            state
                .iter()
                .filter(|(_, s)| matches!(s, State::Missing { .. }))
                .map(|(t, _)| t.clone())
                .collect()
        };
        let check = format!("kafka:{}", self.sink);
        if missing.is_empty() {
            self.health.pass(&check);
        } else {
            let list: Vec<String> = missing.iter().map(|t| format!("`{t}`")).collect();
            self.health.fail(
                &check,
                format!("topic {} does not exist on the brokers", list.join(", ")),
            );
        }
    }

    async fn check(&self, topic: &str) -> State {
        let admin = match self.admin() {
            Ok(admin) => admin,
            Err(e) => {
                tracing::warn!(sink = %self.sink, error = %e, "cannot check Kafka topics");
                return State::Unknown {
                    checked: Instant::now(),
                };
            }
        };
        match exists(&admin, topic).await {
            Err(e) => {
                tracing::warn!(sink = %self.sink, %topic, error = %e, "cannot ask the Kafka brokers whether the topic exists; deliveries go ahead");
                State::Unknown {
                    checked: Instant::now(),
                }
            }
            Ok(true) => State::Exists,
            Ok(false) => match self.create {
                Some(create) => self.create(&admin, topic, create).await,
                None => {
                    tracing::warn!(sink = %self.sink, %topic, "the Kafka topic does not exist; its deliveries are retried until it is created: create it, or set `create_topic: {{partitions: N}}` on the sink");
                    State::Missing {
                        checked: Instant::now(),
                    }
                }
            },
        }
    }

    async fn create(
        &self,
        admin: &AdminClient<DefaultClientContext>,
        topic: &str,
        create: CreateTopic,
    ) -> State {
        let replication = TopicReplication::Fixed(create.replication_factor.unwrap_or(-1));
        let new = NewTopic::new(topic, create.partitions, replication);
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let result = admin.create_topics([&new], &options).await;
        match result.as_deref() {
            Ok([Ok(_)]) => {
                tracing::info!(sink = %self.sink, %topic, partitions = create.partitions, "created the Kafka topic");
                State::Exists
            }
            Ok([Err((_, RDKafkaErrorCode::TopicAlreadyExists))]) => State::Exists,
            Ok(results) => {
                let error = results
                    .iter()
                    .filter_map(|r| r.as_ref().err())
                    .map(|(_, code)| code.to_string())
                    .next()
                    .unwrap_or_else(|| "no answer".into());
                tracing::warn!(sink = %self.sink, %topic, %error, "cannot create the Kafka topic");
                State::Missing {
                    checked: Instant::now(),
                }
            }
            Err(e) => {
                tracing::warn!(sink = %self.sink, %topic, error = %e, "cannot create the Kafka topic");
                State::Unknown {
                    checked: Instant::now(),
                }
            }
        }
    }

    fn admin(&self) -> Result<Arc<AdminClient<DefaultClientContext>>, String> {
        self.admin
            .get_or_init(|| {
                self.config
                    .create()
                    .map(Arc::new)
                    .map_err(|e| format!("cannot create the Kafka admin client: {e}"))
            })
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Asks the brokers for `topic`'s metadata (a blocking call, so on the blocking pool).
async fn exists(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    topic: &str,
) -> Result<bool, String> {
    let (admin, topic) = (admin.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(&topic), ADMIN_TIMEOUT)
            .map_err(|e| e.to_string())?;
        Ok(metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
    })
    .await
    .map_err(|e| e.to_string())?
}
