//! herald-sinks: one folder per sink type, each `config.rs` (the validated config),
//! `sink.rs` (the running sink) and `tests.rs`; [`register`] has one line per type.
//!
//! * [`file`](mod@file) — file and stdout; [`webhook`] — generic HTTP; [`slack`] — incoming webhooks,
//!   paced and packed; [`email`] — SMTP, with digests; [`kafka`] — rdkafka producer;
//! * `http` — what the HTTP sinks share (client, answer classification, URL masking);
//! * `testing` (tests only) — configs, the real engine on a real journal, and the real
//!   servers the sinks talk to (HTTP receivers, aiosmtpd, tansu).

pub mod email;
pub mod file;
mod http;
pub mod kafka;
pub mod plugin;
pub mod slack;
#[cfg(test)]
mod testing;
pub mod webhook;

use herald_core::config::Registry;

/// Registers every sink type this crate provides.
pub fn register(registry: &mut Registry) {
    registry.add_sink(file::FILE);
    registry.add_sink(file::STDOUT);
    registry.add_sink(webhook::WEBHOOK);
    registry.add_sink(slack::SLACK);
    registry.add_sink(email::EMAIL);
    registry.add_sink(kafka::KAFKA);
    registry.add_sink(plugin::PLUGIN);
}
