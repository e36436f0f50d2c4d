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

use herald_core::config::SourceType;

pub use config::DirectorySpec;

/// `type: directory_webhook`
pub const TYPE: SourceType = SourceType {
    name: "directory_webhook",
    validate: config::validate,
};
