//! `directory_webhook`: Google Workspace Directory API push notifications (`users.watch`
//! channels POSTing to a webhook).
//!
//! * `config` — the routes.yaml keys (`path`, `channel_tokens`, `channel_ids`, `route_sync`);
//! * `decode` — the `X-Goog-*` headers and the JSON body → the [`Event`](herald_core::Event)
//!   (pure);
//! * `handler` — the HTTP handler: channel token, allow-list, expiry warning, commit.

pub mod config;
pub mod decode;
pub(crate) mod handler;

use std::sync::Arc;

use herald_core::Event;
use herald_core::config::SourceType;

pub use config::DirectorySpec;

use crate::DecodeError;
use crate::source::{BoxFuture, Endpoint, Receiving, Source, StartContext, Subscriptions};

/// `type: directory_webhook`
pub const TYPE: SourceType = SourceType {
    name: "directory_webhook",
    validate: config::validate,
};

impl Source for DirectorySpec {
    fn describe(&self) -> String {
        DirectorySpec::describe(self)
    }

    fn enrich(&self) -> Option<&crate::enrich::config::EnrichSpec> {
        self.enrich.as_ref()
    }

    fn http_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn start<'a>(&'a self, context: StartContext<'a>) -> BoxFuture<'a, Result<Receiving, String>> {
        let state = handler::DirectoryState::new(
            context.intake,
            self.clone(),
            context.server.body_limit,
            context.links.clone(),
        );
        let endpoint = Endpoint::post(&self.path, Arc::new(state), handler::handle);
        Box::pin(async move { Ok(Receiving::Http(endpoint)) })
    }

    /// `headers` are the request's `X-Goog-*` headers (names in any case), `body` the JSON
    /// body (may be empty); the time is now, as for a received request. The channel token
    /// is neither compared nor kept. `Ok(None)` for a `sync` message of a source without
    /// `route_sync: true`, which the running source acknowledges without routing.
    fn decode_raw(
        &self,
        name: &str,
        body: &[u8],
        headers: &[(String, String)],
    ) -> Result<Option<Event>, DecodeError> {
        let headers = decode::header_map(headers)?;
        let message = decode::decode(name, &headers, body, chrono::Utc::now())?;
        Ok((!message.sync || self.route_sync).then_some(message.event))
    }

    fn subscriptions(&self) -> Subscriptions {
        Subscriptions {
            registrations: Vec::new(),
            watches: self.watches.clone(),
        }
    }
}
