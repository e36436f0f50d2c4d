use std::collections::BTreeMap;
use std::sync::Arc;

use herald_core::config::{
    ConfigError, Loc, Node, NodeKind, SinkInput, SinkKeys, SinkType, TemplateField, ValidSink,
};
use herald_core::sink::DeliveryPolicy;
use serde::Deserialize;

use super::sink::{CreateTopic, KafkaSpec, Mode};

/// `type: kafka`. The templates (`topic`, `key`) and `properties` are checked here for their
/// type and then read from the node, where their locations are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct KafkaConfig {
    /// `host:9092`, `"a:9092,b:9092"` or a list.
    brokers: Brokers,
    /// The topic; may be a template (`edu.{{ source }}`).
    topic: String,
    /// The record key template; no key (sticky partitioning) when absent.
    #[serde(default)]
    key: Option<String>,
    /// `structured` (default: the event as CloudEvents JSON) or `binary` (`data` as the value,
    /// the attributes as `ce_*` headers).
    #[serde(default)]
    mode: Option<String>,
    /// librdkafka producer properties, passed through (`security.protocol`, `sasl.*`,
    /// `linger.ms`, …); they override Herald's defaults.
    #[serde(default)]
    properties: BTreeMap<String, Scalar>,
    /// Create a missing topic through the admin API.
    #[serde(default)]
    create_topic: Option<CreateTopicConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Brokers {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopicConfig {
    #[serde(default)]
    partitions: Option<i32>,
    /// The broker's default (`default.replication.factor`) when absent.
    #[serde(default)]
    replication_factor: Option<i32>,
}

pub const KAFKA: SinkType = SinkType {
    name: "kafka",
    template_fields: &["topic", "key"],
    default_policy,
    validate,
};

/// Many deliveries in flight: librdkafka batches the records of concurrent deliveries into
/// one produce request (`linger.ms`), which is where Kafka's throughput comes from.
fn default_policy() -> DeliveryPolicy {
    DeliveryPolicy {
        concurrency: 512,
        ..DeliveryPolicy::default()
    }
}

/// Properties Herald sets from its own keys.
const OWN: &[(&str, &str)] = &[("bootstrap.servers", "brokers")];

fn validate(input: &SinkInput<'_>) -> Result<ValidSink, Vec<ConfigError>> {
    let mut keys = SinkKeys::new(input);
    let config: KafkaConfig = keys.typed()?;
    let node = input.node;

    let mut brokers = Vec::new();
    for (text, loc) in node.get("brokers").map(entries).unwrap_or_default() {
        for broker in text.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            match broker.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    brokers.push(broker.to_owned());
                }
                _ => keys.error_at(loc, format_args!("broker `{broker}` is not `host:port`")),
            }
        }
    }
    if brokers.is_empty() && !keys.has_errors() {
        keys.error("brokers", "broker list is empty; set `brokers: host:9092`");
    }
    let literal_topic = (!is_template(&config.topic)).then(|| config.topic.trim().to_owned());
    if let Some(topic) = &literal_topic
        && let Err(message) = check_topic_name(topic)
    {
        keys.error("topic", message);
    }
    let mode = match config.mode.as_deref() {
        None | Some("structured") => Mode::Structured,
        Some("binary") => Mode::Binary,
        Some(other) => {
            keys.error(
                "mode",
                format_args!("mode `{other}` is not `structured` or `binary`"),
            );
            Mode::Structured
        }
    };
    let mut properties = Vec::new();
    if let Some(entries) = node.get("properties").and_then(Node::entries) {
        for (key, value) in entries {
            let Some(text) = value.scalar_text() else {
                continue;
            };
            match check_property(&key.name, &text) {
                Ok(()) => properties.push((key.name.clone(), text)),
                Err((about_the_name, message)) => keys.error_at(
                    if about_the_name { key.loc } else { value.loc },
                    format_args!("`properties.{}`: {message}", key.name),
                ),
            }
        }
    }
    // librdkafka refuses these combinations only when the producer is created; say it now.
    let property = |name: &str| {
        properties
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let idempotent = !matches!(property("enable.idempotence"), Some("false"));
    let acks = property("acks").or(property("request.required.acks"));
    if idempotent && acks.is_some_and(|a| !matches!(a, "all" | "-1")) {
        keys.error(
            "properties",
            format_args!("the producer is idempotent, which needs `acks: all`; set `enable.idempotence: false` to use `acks: {}`", acks.unwrap_or_default()),
        );
    }
    let create_topic = config.create_topic.map(|c| CreateTopic {
        partitions: keys.at_least("create_topic.partitions", c.partitions.unwrap_or(1), 1),
        replication_factor: c
            .replication_factor
            .map(|r| keys.at_least("create_topic.replication_factor", r, 1)),
    });
    keys.finish()?;

    let templates = ["topic", "key"]
        .iter()
        .filter_map(|field| TemplateField::from_node(node, field))
        .collect();
    Ok(ValidSink {
        templates,
        spec: Arc::new(KafkaSpec {
            name: input.name.to_owned(),
            brokers: brokers.join(","),
            literal_topic,
            mode,
            properties,
            create_topic,
        }),
    })
}

fn entries(node: &Node) -> Vec<(String, Loc)> {
    match &node.kind {
        NodeKind::Seq(items) => items
            .iter()
            .filter_map(|i| Some((i.scalar_text()?, i.loc)))
            .collect(),
        _ => node
            .scalar_text()
            .map(|t| vec![(t, node.loc)])
            .unwrap_or_default(),
    }
}

pub(super) fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub(super) fn check_topic_name(topic: &str) -> Result<(), String> {
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "topic `{topic}` is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"
        ))
    }
}

/// Whether a property's value is a secret that must not be repeated in errors.
pub(super) fn is_secret(key: &str) -> bool {
    [
        "password",
        "secret",
        "sasl.oauthbearer.config",
        "ssl.key.pem",
        "ssl_key",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// Asks librdkafka itself whether it knows `key` and accepts `value` (in memory: no broker is
/// contacted). Features this build lacks (SSL, SASL) are refused here, with librdkafka's reason.
/// The error says whether it is about the name (`true`) or the value.
fn check_property(key: &str, value: &str) -> Result<(), (bool, String)> {
    if let Some((_, ours)) = OWN.iter().find(|(k, _)| *k == key) {
        return Err((true, format!("set it with the sink's `{ours}` key")));
    }
    let mut config = rdkafka::ClientConfig::new();
    config.set(key, value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(rdkafka::error::KafkaError::ClientConfig(result, description, ..)) => {
            if result == rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN {
                Err((true, "no such property in librdkafka".into()))
            } else if is_secret(key) {
                Err((false, "librdkafka refuses this value".into()))
            } else {
                Err((false, description))
            }
        }
        Err(e) => Err((false, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rule() {
        assert!(check_topic_name("edu.events_v1-2").is_ok());
        assert!(check_topic_name("").is_err());
        assert!(check_topic_name("..").is_err());
        assert!(check_topic_name("has space").is_err());
        assert!(check_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn properties_are_checked_by_librdkafka() {
        assert_eq!(check_property("linger.ms", "20"), Ok(()));
        assert_eq!(check_property("acks", "1"), Ok(()));
        assert_eq!(
            check_property("lingr.ms", "20"),
            Err((true, "no such property in librdkafka".into()))
        );
        let (_, e) = check_property("linger.ms", "soon").unwrap_err();
        assert!(e.starts_with("Invalid value"), "{e}");
        // This build of librdkafka has no OpenSSL: said at load, not at the first delivery.
        let (_, e) = check_property("security.protocol", "SASL_SSL").unwrap_err();
        assert!(
            e.contains("security.protocol") && e.contains("OpenSSL not available"),
            "{e}"
        );
        assert!(
            check_property("bootstrap.servers", "x:9092")
                .unwrap_err()
                .1
                .contains("`brokers`")
        );
    }
}
