//! herald-core: everything between a decoded notification and a sink's `deliver` call.
//!
//! * [`event`] — the common [`Event`] (CloudEvents 1.0 + transport `meta`);
//! * [`backoff`] — the one exponential backoff (deliveries, pull loop, Google calls);
//! * [`config`] — routes.yaml: parse, validate (every error with line:column), the typed model
//!   and the registry of sink and source types;
//! * [`rules`] — conditions and the ordered, indexed route table;
//! * [`template`] — MiniJinja templates compiled at load, rendered per delivery;
//! * [`health`] — readiness checks other parts raise (`/readyz`);
//! * [`encoding`] — small encodings written once (hex);
//! * [`ingest`] — how sources hand events to the journal and when they may answer 2xx;
//! * [`queue`] — the storage boundary: the one interface (`Queue`, `QueueAdmin`, `Ingest`)
//!   every part asks of the queue, and the engine `queue.engine` names (docs/architecture.md §10);
//! * [`journal`] — the `local` engine: the durable journal: group commit, routing, pending
//!   deliveries, dead letters, retention, leases; its events and outcomes in an append-only
//!   log (`journal::log`) with the pending deliveries indexed in memory (`journal::ledger`),
//!   dead letters and state in redb (docs/architecture.md §10.3);
//! * [`delivery`] — per-sink workers: concurrency, rate limit, retry with backoff, circuit
//!   breaker, dead letters;
//! * [`sink`] — the [`Sink`] trait, its retryable/permanent error and the delivery policy.

pub mod backoff;
pub mod config;
pub mod delivery;
pub mod encoding;
pub mod event;
pub mod health;
pub mod ingest;
pub mod journal;
pub mod queue;
pub mod rules;
pub mod sink;
pub mod template;

/// The hash map of the per-event path (the journal's writer and index, the sink workers):
/// foldhash, seeded per process like std's, at a fraction of SipHash's cost per key.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// The hash set of the per-event path, as [`FastMap`].
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

pub use config::Config;
pub use event::Event;
pub use sink::{Delivery, DeliveryPolicy, Sink, SinkError};
