//! `slack`: Slack incoming webhooks. Each delivery becomes a message (`text`, optional
//! `blocks`), posted to the sink's `webhook_url`, which is a secret: it is only ever shown as
//! `https://hooks.slack.com/services/***`.
//!
//! **Pacing and packing.** Slack allows about one message per second per webhook, so the sink
//! paces itself per webhook URL (`rate_limit`, default `1/s` with a `burst` of 3; sinks that
//! share a URL share its pace) instead of leaving that to the engine. A `deliver()` call joins
//! the sink's queue and waits. Whenever a slot comes, the sender takes the oldest waiting
//! delivery and up to `max_pack - 1` more for the same channel/username/icon, posts them as one
//! message (texts one per line, blocks concatenated), and every one of those `deliver()` calls
//! returns that message's result. A quiet sink sends each event alone at once; a burst of 500
//! roster changes goes out as ~25 messages in ~25 s rather than 500 messages over 8 minutes.
//! Nothing is acknowledged before Slack answered 2xx for the message holding it.
//!
//! So the type's default delivery policy has no engine rate limit (`rate_per_second: None`)
//! and a high `concurrency` (64): a backlog must be *inside* the sink, waiting, to be packed.
//!
//! **Answers.** 2xx delivers. 429 and 5xx (and Slack's `rollup_error`) are retryable, 429 with
//! its `Retry-After`, which also holds back the URL's pacer and fails the rest of the queue
//! with the same delay so the engine pauses the whole sink. Slack's error codes
//! (`invalid_payload`, `user_not_found`, `channel_not_found`, `channel_is_archived`,
//! `action_prohibited`, `no_service`, …) are permanent and named in the error. When a packed
//! message is refused for its content (`invalid_payload`, an unknown 4xx) its deliveries are
//! sent again one by one, so one bad event does not dead-letter its neighbours.

mod config;
mod pack;
mod sink;
#[cfg(test)]
mod tests;

pub use config::SLACK;
