//! `kafka`: each delivery is one record, produced with rdkafka (librdkafka 2.12, bundled) by
//! an idempotent producer with `acks=all`; a delivery is done only when the brokers
//! acknowledged the record. The value is the event in the CloudEvents JSON format (structured
//! mode), or with `mode: binary` the event's `data` with the attributes as `ce_*` headers (the
//! CloudEvents Kafka binding). `topic` and `key` are templates; `properties` go to librdkafka
//! as they are (`security.protocol`, `sasl.*`, `linger.ms`, `compression.type`, …) and are
//! checked by librdkafka at load.
//!
//! **Answers.** librdkafka retries by itself for up to `message.timeout.ms` (25 s by default,
//! inside the engine's 30 s attempt timeout); what it then reports is retryable, except errors
//! about the record itself (too large, invalid), which are permanent. A fatal error of the
//! idempotent producer replaces the producer.
//!
//! **Missing topics.** `herald check` cannot know whether a topic exists. The sink asks the
//! brokers when it starts (for a literal topic) or when a topic is first used (templated).
//! A missing topic is logged with what to do, and reported as a failing readiness check
//! `kafka:<sink>` in the gateway's `/readyz`, through the checks the gateway hands every sink
//! in its [`BuildContext`](herald_core::config::BuildContext). A topic found missing (or that
//! could not be checked) is looked at again every 30 s, by a background task and before a
//! delivery, so creating it turns readiness green within 30 s even when nothing is delivered;
//! the task ends when the sink is removed or replaced (the context's `stop`), and the sink's
//! check goes with it. With `create_topic: {partitions: N}` the sink creates a missing topic
//! through the admin API instead. A missing topic does not stop the gateway: its deliveries
//! are retried, waiting in the journal, until the topic exists — the same as a broker outage.
//!
//! The default delivery policy allows 512 deliveries in flight, so that librdkafka can batch
//! them (`linger.ms`) into few produce requests.

mod config;
mod sink;
#[cfg(test)]
mod tests;
mod topics;

pub use config::KAFKA;
