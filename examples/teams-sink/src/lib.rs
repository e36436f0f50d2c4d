//! teams-sink: a Herald sink plugin that posts each delivery as a card to a Microsoft Teams
//! incoming webhook (a Workflows "post to a channel when a webhook request is received" URL,
//! which takes an Adaptive Card; or a legacy Office 365 connector URL, which takes a
//! MessageCard).
//!
//! ```yaml
//! sinks:
//!   teams:
//!     type: plugin
//!     library: ./plugins/libteams_sink.so
//!     config: { url: "${TEAMS_URL}", format: adaptive_card, timeout_seconds: 10 }
//!     templates: { title: "{{ type }}", text: "{{ data.primaryEmail }} changed" }
//! ```
//!
//! * `config.rs` — the plugin's config and its validation;
//! * `card.rs` — the card built from a delivery (templates `title` and `text`, else the
//!   event's type and subject; the event's attributes as facts);
//! * this file — the HTTP post and how its answer is classified.
//!
//! HTTP: a blocking `ureq` client on the SDK's delivery threads (the plugin owns its
//! threads, so blocking is fine there). TLS is the plugin's own rustls with the aws-lc-rs
//! provider passed explicitly and webpki roots: nothing of the gateway's TLS set-up crosses
//! the library boundary, and the process-wide rustls default is never touched.

mod card;
mod config;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use herald_plugin::{DeliverError, Delivery, SinkPlugin, export_sink};

pub use config::{Config, Format};

/// The longest part of an error answer kept in a message.
const MAX_ERROR_BODY: u64 = 512;

pub struct TeamsSink {
    agent: ureq::Agent,
    url: String,
    format: Format,
}

impl SinkPlugin for TeamsSink {
    type Config = Config;
    const NAME: &'static str = "teams-sink";
    const THREADS: usize = 4;

    fn validate(config: &Config) -> Result<(), String> {
        config.check()
    }

    fn create(config: Config) -> Result<Self, String> {
        let crypto = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(crypto)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(config.timeout_seconds)))
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("herald-teams-sink/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(TeamsSink {
            agent,
            url: config.url,
            format: config.format,
        })
    }

    fn deliver(&self, delivery: &Delivery) -> Result<(), DeliverError> {
        let body = card::payload(self.format, delivery);
        let body = serde_json::to_vec(&body)
            .map_err(|e| DeliverError::permanent(format!("cannot write the card: {e}")))?;
        let mut response = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .send(&body[..])
            // Connection refused, TLS failure, timeout: the endpoint may be back later.
            .map_err(|e| DeliverError::retryable(format!("Teams webhook: {e}")))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut text = String::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(MAX_ERROR_BODY)
            .read_to_string(&mut text);
        let message = format!("Teams webhook answered {status}: {}", text.trim());
        Err(match status {
            408 | 429 | 500..=599 => match retry_after {
                Some(delay) => DeliverError::retry_after(message, delay),
                None => DeliverError::retryable(message),
            },
            // The card or the URL is wrong: sending it again will not help.
            _ => DeliverError::permanent(message),
        })
    }
}

export_sink!(TeamsSink);
