//! The binary chooses the queue engine (docs/architecture.md §10): core opens the embedded
//! `local` engine; the `postgres` engine is herald-queue-postgres, which core does not
//! depend on. Every caller (the gateway, `herald dlq`, `herald google status`) opens its queue
//! here and never names an engine.
//!
//! The postgres engine's queue operations are not built yet (issue 16): its config is
//! validated, `herald migrate` prepares its schema, and opening it is refused with
//! [`POSTGRES_NOT_BUILT`].

use std::sync::Arc;

use arc_swap::ArcSwap;
use herald_core::config::{QueueConfig, QueueEngine};
use herald_core::queue::{self, Queue, QueueAdmin, QueueError};
use herald_core::rules::RouteTable;

/// Why the gateway does not run on `engine: postgres` yet.
pub const POSTGRES_NOT_BUILT: &str = "the postgres queue engine's operations are not built \
    yet: `herald migrate` prepares the database and `herald check` validates the config, but \
    the gateway and `herald dlq`/`herald google` run only on `engine: local` (the default) \
    for now";

/// The running gateway's queue.
pub fn open(
    config: &QueueConfig,
    routes: Arc<ArcSwap<RouteTable>>,
    sinks: &[String],
) -> anyhow::Result<Arc<dyn Queue>> {
    match config.engine {
        QueueEngine::Local => Ok(queue::open(config, routes, sinks)?),
        QueueEngine::Postgres => anyhow::bail!("queue: {POSTGRES_NOT_BUILT}"),
    }
}

/// A queue for the CLI, whether or not a gateway runs on it.
pub fn open_admin(config: &QueueConfig) -> Result<Arc<dyn QueueAdmin>, QueueError> {
    match config.engine {
        QueueEngine::Local => queue::open_admin(config),
        QueueEngine::Postgres => Err(QueueError::io(
            "opening the postgres queue",
            POSTGRES_NOT_BUILT,
        )),
    }
}
