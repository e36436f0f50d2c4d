//! The safe side for plugin authors: the [`SinkPlugin`] trait, what a delivery carries, and
//! how it can fail.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A sink written as a plugin. `export_sink!(MySink)` turns it into a loadable library.
///
/// The SDK parses the `config:` mapping of routes.yaml into [`SinkPlugin::Config`] (so an
/// unknown or missing key is reported by serde), then calls [`SinkPlugin::validate`]; `herald
/// check` stops there. The running gateway then calls [`SinkPlugin::create`] once, and
/// [`SinkPlugin::deliver`] for every delivery, on the plugin's own threads.
pub trait SinkPlugin: Sized + Send + Sync + 'static {
    /// The sink's config, read from the `config:` mapping of its routes.yaml entry. Use
    /// `#[serde(deny_unknown_fields)]` so a misspelt key is an error.
    type Config: DeserializeOwned;

    /// The plugin's name, shown by `herald check` (with its crate's version, which
    /// `export_sink!` reads from Cargo).
    const NAME: &'static str;
    /// Threads the SDK starts per instance to run [`SinkPlugin::deliver`]: how many
    /// deliveries may be in progress at once; more wait in a queue.
    const THREADS: usize = 4;

    /// Checks a parsed config beyond what serde checks (a URL's scheme, a range). Must have no
    /// side effects: `herald check` calls it. The message is shown to the operator with the
    /// sink's name and place in routes.yaml.
    fn validate(config: &Self::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Makes the running sink from a config that passed [`SinkPlugin::validate`]; may open
    /// connections or read files. An error stops the gateway's start.
    fn create(config: Self::Config) -> Result<Self, String>;

    /// Delivers one event. It may block (it runs on one of the plugin's [`Self::THREADS`]
    /// threads), but should not take longer than the sink's `delivery.timeout` (30 s by
    /// default): the host gives up on it then and tries again. A panic fails the delivery as
    /// retryable, with the panic's message.
    fn deliver(&self, delivery: &Delivery) -> Result<(), DeliverError>;
}

/// One delivery of one event to this sink.
#[derive(Clone, Debug, Deserialize)]
pub struct Delivery {
    /// The route that sent it.
    pub route: String,
    /// The sink's name in routes.yaml.
    pub sink: String,
    /// The sink's `templates:` (and a route's overrides), rendered for this event.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// The event as CloudEvents JSON: `id`, `source`, `type`, `subject`, `time`, `data`,
    /// `meta`.
    #[serde(skip)]
    pub event: Value,
}

impl Delivery {
    /// A rendered template, if the sink has one of that name.
    pub fn template(&self, name: &str) -> Option<&str> {
        self.templates.get(name).map(String::as_str)
    }

    /// A text attribute of the event (`id`, `type`, `subject`, …).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.event.get(name).and_then(Value::as_str)
    }
}

/// Why a delivery failed, and whether trying again can help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliverError {
    /// Worth retrying (HTTP 408/429/5xx, connection errors). `retry_after` is the
    /// destination's own request (HTTP `Retry-After`).
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Will fail the same way again (other HTTP 4xx, a rejected payload): dead-lettered at once.
    Permanent { message: String },
}

impl DeliverError {
    pub fn retryable(message: impl Into<String>) -> Self {
        DeliverError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        DeliverError::Permanent {
            message: message.into(),
        }
    }

    /// A retryable error with the destination's requested delay.
    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        DeliverError::Retryable {
            message: message.into(),
            retry_after: Some(delay),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            DeliverError::Retryable { message, .. } | DeliverError::Permanent { message } => {
                message
            }
        }
    }
}

impl fmt::Display for DeliverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for DeliverError {}
