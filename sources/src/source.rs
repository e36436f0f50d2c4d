//! What the gateway asks of a source, whatever its type. Every source folder implements
//! [`Source`] for its validated spec, so the server, `herald test --source` and the Google
//! lifecycle never name a source type: adding a source is its folder plus two lines in
//! `lib.rs`, `pub mod` and `registry.add_source(..)` in [`crate::register`]
//! (docs/architecture.md §14).
//!
//! Core validates the config and knows sources only as [`SourceSpec`] (a description and an
//! HTTP path), because core must not depend on the HTTP stack. A source type's validator
//! returns [`spec`]`(its_spec)`, which wraps the [`Source`] in the one type this crate
//! recognises again with [`source_of`]: one downcast for all source types, not one per type.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use herald_core::Event;
use herald_core::config::{ConfigError, ServerConfig, SourceSpec};
use tokio_util::sync::CancellationToken;

use crate::DecodeError;
use crate::google::Links;
use crate::google::config::{RegistrationSpec, WatchSpec};
use crate::google::settings::Fallbacks;
use crate::intake::Intake;

/// A future a source hands to the server to run.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A validated source, as the running gateway uses it.
pub trait Source: Send + Sync + fmt::Debug + 'static {
    /// One line for `herald check`, with any secret masked.
    fn describe(&self) -> String;

    /// The HTTP path the source is mounted at, if it receives over HTTP (core checks that
    /// no two sources share one).
    fn http_path(&self) -> Option<&str> {
        None
    }

    /// Starts receiving: a router for the shared listener, or a loop of its own. An error
    /// is an environment problem (credentials that cannot be read) and names what to set.
    fn start<'a>(&'a self, context: StartContext<'a>) -> BoxFuture<'a, Result<Receiving, String>>;

    /// Decodes a raw payload into the event the running source would commit, without
    /// authenticating or storing anything (`herald test --source NAME`). `Ok(None)`: the
    /// running source acknowledges such a payload without routing it.
    fn decode_raw(
        &self,
        name: &str,
        body: &[u8],
        headers: &[(String, String)],
    ) -> Result<Option<Event>, DecodeError>;

    /// Its `enrich:` (docs/architecture.md §11): events are then committed unrouted and
    /// routed by the enrichment task once looked up.
    fn enrich(&self) -> Option<&crate::enrich::config::EnrichSpec> {
        None
    }

    /// The Google subscriptions this source asks Herald to keep alive.
    fn subscriptions(&self) -> Subscriptions {
        Subscriptions::default()
    }
}

/// What a starting source is given by the server.
pub struct StartContext<'a> {
    /// The source's name, its metrics, and the journal it commits to.
    pub intake: Intake,
    pub server: &'a ServerConfig,
    /// One HTTP client for the process (OIDC keys, Pub/Sub).
    pub client: &'a reqwest::Client,
    /// Shared with the Google lifecycle loop (the tokens of the channels it opened).
    pub links: &'a Links,
    /// Where credentials come from when the source names none.
    pub fallbacks: &'a Fallbacks,
    /// Cancelled when the gateway stops; a loop stores the batch it holds, then ends.
    pub stop: CancellationToken,
}

/// How a started source receives.
pub enum Receiving {
    /// POSTs to its path on the shared listener.
    Http(Endpoint),
    /// A loop of its own (a Pub/Sub pull), which ends once `stop` is cancelled.
    Task(BoxFuture<'static, ()>),
}

/// A source's path on the shared listener, and what answers a POST there. The server looks
/// the path up itself, before axum's router, and answers other methods 405: a source request
/// costs one lookup and two boxed futures instead of the router's clones and layers (about
/// 19 allocations; docs/architecture.md §1).
pub struct Endpoint {
    pub path: String,
    pub handler: Handler,
}

/// Answers one POST at a source's path (its body not read yet).
pub type Handler = Box<dyn Fn(Request) -> BoxFuture<'static, Response> + Send + Sync>;

impl Endpoint {
    /// `handle(state, request)` answers every POST to `path`.
    pub fn post<S, F, Fut>(path: &str, state: Arc<S>, handle: F) -> Self
    where
        S: Send + Sync + 'static,
        F: Fn(Arc<S>, Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        Endpoint {
            path: path.to_owned(),
            handler: Box::new(move |request| Box::pin(handle(Arc::clone(&state), request))),
        }
    }
}

/// Registrations and channels a source asks the lifecycle loop to keep alive.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subscriptions {
    pub registrations: Vec<RegistrationSpec>,
    pub watches: Vec<WatchSpec>,
}

/// Wraps a validated source for core's config (what a source type's validator returns).
pub fn spec<S: Source>(source: S) -> Arc<dyn SourceSpec> {
    Arc::new(Registered(Box::new(source)))
}

/// The [`Source`] behind a spec of this crate; `None` for a spec registered by another crate.
pub fn source_of(spec: &dyn SourceSpec) -> Option<&dyn Source> {
    spec.as_any()
        .downcast_ref::<Registered>()
        .map(|registered| registered.0.as_ref())
}

/// A validator's result turned into what core's registry takes.
pub(crate) fn registered<S: Source>(
    result: Result<S, Vec<ConfigError>>,
) -> Result<Arc<dyn SourceSpec>, Vec<ConfigError>> {
    result.map(spec)
}

#[derive(Debug)]
struct Registered(Box<dyn Source>);

impl SourceSpec for Registered {
    fn http_path(&self) -> Option<&str> {
        self.0.http_path()
    }

    fn describe(&self) -> String {
        self.0.describe()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
