//! `webhook`: a generic HTTP POST (or PUT/PATCH) per delivery. The body is the event as
//! CloudEvents JSON (`application/cloudevents+json`) unless a `body` template is given;
//! `headers` are templates too. With `secret: whsec_…` each request is signed the Standard
//! Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`).

mod config;
mod sink;
#[cfg(test)]
mod tests;

pub use config::WEBHOOK;
