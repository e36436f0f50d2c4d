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

use herald_core::Event;
use herald_core::config::SourceType;

pub use config::{AuthSpec, ClassroomSpec, Mode, PullSpec, PushSpec};

use crate::DecodeError;
use crate::source::{BoxFuture, Receiving, Source, StartContext, Subscriptions};

/// `type: classroom_pubsub`
pub const TYPE: SourceType = SourceType {
    name: "classroom_pubsub",
    validate: config::validate,
};

impl Source for ClassroomSpec {
    fn describe(&self) -> String {
        ClassroomSpec::describe(self)
    }

    fn http_path(&self) -> Option<&str> {
        self.push().map(|p| p.path.as_str())
    }

    fn start<'a>(&'a self, context: StartContext<'a>) -> BoxFuture<'a, Result<Receiving, String>> {
        Box::pin(async move {
            match &self.mode {
                Mode::Push(spec) => {
                    let name = context.intake.source.clone();
                    Ok(Receiving::Http(push::router(
                        &name,
                        spec,
                        context.intake,
                        context.server.body_limit,
                        context.client,
                    )))
                }
                Mode::Pull(spec) => {
                    let puller = pull::Puller::new(
                        context.intake,
                        spec,
                        context.fallbacks,
                        context.client.clone(),
                    )
                    .await?;
                    Ok(Receiving::Task(Box::pin(puller.run(context.stop))))
                }
            }
        })
    }

    /// `body` is a Pub/Sub push request body (`{"message": {…}, "subscription": "…"}`), also
    /// for a source with `pull:` (a pulled message has the same shape; the configured
    /// subscription is used when the body names none). Headers are ignored and no OIDC token
    /// is checked.
    fn decode_raw(
        &self,
        name: &str,
        body: &[u8],
        _headers: &[(String, String)],
    ) -> Result<Option<Event>, DecodeError> {
        let fallback = self.pull().map(|p| p.subscription.as_str());
        decode::decode_push(name, body, fallback).map(Some)
    }

    fn enrich(&self) -> Option<&crate::enrich::config::EnrichSpec> {
        self.enrich.as_ref()
    }

    fn subscriptions(&self) -> Subscriptions {
        Subscriptions {
            registrations: self.registrations.clone(),
            watches: Vec::new(),
        }
    }
}
