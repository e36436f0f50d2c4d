//! `classroom_pubsub`: Google Classroom notifications delivered by Cloud Pub/Sub.
//!
//! * `config` — the routes.yaml keys (push at `path`, or `pull:`);
//! * `decode` — a Pub/Sub message → the [`Event`](herald_core::Event) (pure);
//! * `push` — the HTTP handler for push subscriptions;
//! * `oidc` — verification of the token Pub/Sub signs each push with (Google's JWKS);
//! * `pull` — the pull loop over the Pub/Sub REST API, with service-account credentials.

pub mod config;
pub mod decode;
pub(crate) mod oidc;
pub(crate) mod pull;
pub(crate) mod push;

use herald_core::config::SourceType;

pub use config::{AuthSpec, ClassroomSpec, Mode, PullSpec, PushSpec};

/// `type: classroom_pubsub`
pub const TYPE: SourceType = SourceType {
    name: "classroom_pubsub",
    validate: config::validate,
};
