//! The delivery engine: one worker per sink, each sending that sink's pending deliveries from
//! the queue (through the storage boundary, `Arc<dyn Queue>`, docs/architecture.md §10). Retry, backoff, rate limit, timeout and circuit breaking live here once for all
//! sinks; a sink only sends and says whether a failure is worth retrying (docs/architecture.md §7).
//!
//! Sinks never share a queue or a worker, so one failing sink never delays another, and a
//! retry re-sends only to the sink that failed.

mod breaker;
pub mod outcomes;
mod policy;
mod turn;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;

pub use breaker::{Breaker, Gate, State as CircuitState};
pub use policy::decide;

use crate::queue::Queue;
use crate::sink::{DeliveryPolicy, Pace, Sink};
use crate::template::Templates;

/// A built sink with its delivery policy.
pub struct RunningSink {
    pub name: String,
    pub sink: Arc<dyn Sink>,
    pub policy: DeliveryPolicy,
    /// The pace the sink keeps by itself ([`crate::config::SinkSpec::pace`]).
    pub pace: Option<Pace>,
}

/// One sink's worker, stoppable on its own (a reload replaces or removes single sinks).
pub struct WorkerHandle {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops starting attempts, lets those in flight finish (up to the deadline) and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// The running workers, one per sink.
pub struct Engine {
    journal: Arc<dyn Queue>,
    templates: Arc<ArcSwap<Templates>>,
    deadline: Duration,
    workers: HashMap<String, WorkerHandle>,
}

impl Engine {
    /// Starts one worker per sink. On stop, workers stop starting attempts and wait up to
    /// `deadline` for those in flight.
    pub fn start(
        journal: Arc<dyn Queue>,
        sinks: Vec<RunningSink>,
        templates: Arc<ArcSwap<Templates>>,
        deadline: Duration,
    ) -> Engine {
        let mut engine = Engine {
            journal,
            templates,
            deadline,
            workers: HashMap::new(),
        };
        for sink in sinks {
            engine.add(sink);
        }
        engine
    }

    /// Starts the worker of a sink (which must not have one).
    pub fn add(&mut self, sink: RunningSink) {
        let shutdown = CancellationToken::new();
        let name = sink.name.clone();
        let worker = worker::Worker {
            notify: self.journal.notify_for(&sink.name),
            name: sink.name,
            sink: sink.sink,
            pace: sink.policy.pace().or(sink.pace),
            policy: sink.policy,
            journal: self.journal.clone(),
            templates: self.templates.clone(),
            shutdown: shutdown.clone(),
            deadline: self.deadline,
        };
        let task = tokio::spawn(worker.run());
        if let Some(old) = self.workers.insert(name, WorkerHandle { shutdown, task }) {
            old.shutdown.cancel();
        }
    }

    /// Takes a sink's worker out of the engine, still running (see [`retire`]).
    pub fn take(&mut self, name: &str) -> Option<WorkerHandle> {
        self.workers.remove(name)
    }

    pub fn sinks(&self) -> impl Iterator<Item = &str> {
        self.workers.keys().map(String::as_str)
    }

    /// Stops every worker and waits for them (each bounded by the deadline given at start).
    pub async fn stop(mut self) {
        let workers: Vec<WorkerHandle> = self.workers.drain().map(|(_, w)| w).collect();
        // Signal all first, so their deadlines run side by side, then wait for each.
        for worker in &workers {
            worker.shutdown.cancel();
        }
        for worker in workers {
            let _ = worker.task.await;
        }
    }
}

/// Lets the worker of a sink removed from the config deliver what it holds for up to
/// `drain`, then stops it and moves what is left to the dead letters, naming the sink;
/// unless other gateways sharing the queue still have the sink, which then deliver it.
pub async fn retire(journal: Arc<dyn Queue>, name: String, worker: WorkerHandle, drain: Duration) {
    // On a shared queue, other gateways that still have the sink deliver its backlog: this
    // one stops at once and buries nothing (docs/architecture.md §10.2).
    match journal.others_with(&name).await {
        Ok(others) if !others.is_empty() => {
            worker.stop().await;
            tracing::info!(sink = %name, gateways = %others.join(", "), "removed sink's deliveries left to the other gateways that have it");
            return;
        }
        Ok(_) => {}
        Err(e) => {
            // Not knowing, keep the deliveries: burying them could take them from a
            // gateway that still has the sink.
            worker.stop().await;
            tracing::warn!(sink = %name, error = %e, "cannot tell whether other gateways have the removed sink; its deliveries stay pending");
            return;
        }
    }
    let deadline = tokio::time::Instant::now() + drain;
    // Events the old routes sent to the sink may still be in a commit begun before the
    // reload: counted now, they would be missed and buried.
    if let Err(e) = journal.committed_so_far().await {
        tracing::warn!(sink = %name, error = %e, "the commits in progress were not confirmed; deliveries they add to the removed sink may be buried");
    }
    loop {
        let left = journal
            .stats()
            .await
            .map(|s| s.pending.get(&name).copied().unwrap_or(0))
            .unwrap_or(0);
        if left == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().await;
    let reason =
        format!("sink `{name}` was removed from the config before this delivery could be made");
    match journal.bury(&name, &reason).await {
        Ok(0) => tracing::info!(sink = %name, "removed sink drained"),
        Ok(n) => {
            tracing::warn!(sink = %name, dead_letters = n, "removed sink could not deliver everything; the rest is in the dead letters")
        }
        Err(e) => {
            tracing::error!(sink = %name, error = %e, "cannot move a removed sink's deliveries to the dead letters")
        }
    }
}

#[cfg(test)]
mod tests;
