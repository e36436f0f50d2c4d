//! The binary chooses the queue engine (docs/architecture.md §10): core opens the embedded
//! `local` engine; the `postgres` engine is herald-queue-postgres, which core does not
//! depend on. Every caller (the gateway, `herald dlq`, `herald google status`) opens its queue
//! here and never names an engine.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use herald_core::config::{Config, QueueConfig, QueueEngine};
use herald_core::queue::{self, Queue, QueueAdmin, QueueError};
use herald_core::rules::RouteTable;
use herald_queue_postgres as pg;

/// The running gateway's queue. On postgres: connects, migrates (refusing a schema newer
/// than this binary) and registers the gateway with a fingerprint of its config file
/// (docs/architecture.md §10.2).
pub async fn open(
    config: &Config,
    routes: Arc<ArcSwap<RouteTable>>,
    sinks: &[String],
) -> anyhow::Result<Arc<dyn Queue>> {
    match config.queue.engine {
        QueueEngine::Local => Ok(queue::open(&config.queue, routes, sinks)?),
        QueueEngine::Postgres => {
            let spec = pg::spec_of(&config.queue)
                .context("queue: the postgres config was not validated")?;
            let bytes = std::fs::read(&config.file).unwrap_or_else(|_| sinks.join("\n").into());
            let registration = pg::Registration {
                fingerprint: pg::fingerprint(&bytes),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            let queue = pg::PgQueue::open(spec, &config.queue, routes, sinks, registration).await?;
            Ok(Arc::new(queue))
        }
    }
}

/// A queue for the CLI, whether or not a gateway runs on it: on postgres, the database
/// directly (connecting on first use).
pub fn open_admin(config: &QueueConfig) -> Result<Arc<dyn QueueAdmin>, QueueError> {
    match config.engine {
        QueueEngine::Local => queue::open_admin(config),
        QueueEngine::Postgres => {
            let spec = pg::spec_of(config).ok_or_else(|| {
                QueueError::io("opening the postgres queue", "its config was not validated")
            })?;
            let admin = pg::PgAdmin::open(spec)
                .map_err(|e| QueueError::io("opening the postgres queue", e))?;
            Ok(Arc::new(admin))
        }
    }
}
