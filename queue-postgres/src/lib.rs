//! The `postgres` queue engine: one queue shared by every gateway pointed at the same
//! PostgreSQL database (docs/architecture.md §10, §10.2, issue 16): its config, the
//! connection (TLS with libpq's `sslmode`s over rustls), the schema with its migrations, and
//! the queue operations behind `herald_core::queue::Queue` ([`PgQueue`], [`PgAdmin`]), except
//! unrouted events.
//!
//! * `config` — the engine's `queue:` keys, validated without I/O into a [`PgSpec`];
//! * `tls` — rustls for the driver: `require`, `verify-ca`, `verify-full`;
//! * `connect` — a client or a pool from a [`PgSpec`];
//! * `migrate` — the versioned schema (`migrations/NNNN_*.sql`), applied under an advisory
//!   lock, and the check that the database is not newer than this binary;
//! * `import` — [`Importer`]: another queue's pending deliveries, dead letters and state,
//!   imported idempotently (`herald queue copy`);
//! * `error` — [`PgError`], which never carries the password.

mod admin;
pub mod config;
pub mod connect;
mod engine;
mod error;
mod forget;
mod import;
pub mod migrate;
mod sql;
pub mod tls;

pub use admin::PgAdmin;
pub use config::{PgSpec, SslMode, spec_of};
pub use connect::{connect, pool};
pub use engine::{MAX_BATCH, PgQueue, Registration, fingerprint};
pub use error::PgError;
pub use import::{ImportEvent, Importer};
pub use migrate::{LATEST, Status, migrate, status};

use herald_core::config::{QueueEngineType, Registry};

/// Registers the `postgres` queue engine's keys and validator (docs/architecture.md §10).
pub fn register(registry: &mut Registry) {
    registry.add_queue_engine(QueueEngineType {
        name: "postgres",
        keys: config::KEYS,
        validate: config::validate,
    });
}
