//! The delivery engine: one worker per sink, each sending that sink's pending deliveries from
//! the journal. Retry, backoff, rate limit, timeout and circuit breaking live here once for all
//! sinks; a sink only sends and says whether a failure is worth retrying (DESIGN.md §7).
//!
//! Sinks never share a queue or a worker, so one failing sink never delays another, and a
//! retry re-sends only to the sink that failed.

mod breaker;
mod policy;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use breaker::{Breaker, Gate, State as CircuitState};
pub use policy::{backoff, backoff_ceiling, decide};

use crate::journal::Journal;
use crate::sink::{DeliveryPolicy, Sink};
use crate::template::Templates;

/// A built sink with its delivery policy.
pub struct RunningSink {
    pub name: String,
    pub sink: Arc<dyn Sink>,
    pub policy: DeliveryPolicy,
}

/// The running workers.
pub struct Engine {
    workers: JoinSet<()>,
    shutdown: watch::Sender<bool>,
}

impl Engine {
    /// Starts one worker per sink. On [`Engine::stop`], workers stop starting attempts and
    /// wait up to `deadline` for those in flight.
    pub fn start(
        journal: Arc<Journal>,
        sinks: Vec<RunningSink>,
        templates: Arc<ArcSwap<Templates>>,
        deadline: Duration,
    ) -> Engine {
        let (shutdown, watcher) = watch::channel(false);
        let mut workers = JoinSet::new();
        for sink in sinks {
            let worker = worker::Worker {
                notify: journal.notify_for(&sink.name),
                name: sink.name,
                sink: sink.sink,
                policy: sink.policy,
                journal: journal.clone(),
                templates: templates.clone(),
                shutdown: watcher.clone(),
                deadline,
            };
            workers.spawn(worker.run());
        }
        Engine { workers, shutdown }
    }

    /// Stops every worker and waits for them (each bounded by the deadline given at start).
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.workers.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests;
