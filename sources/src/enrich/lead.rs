//! Who calls Google for enrichment on a queue several gateways share (docs/architecture.md
//! §11, "One caller per cluster"). The configured `rate_limit` is a quota of the Google
//! project, not of one process: only the gateway holding the leadership [`LEADERSHIP`]
//! (`Queue::try_lead`) claims unrouted events and looks them up, so the rate holds for the
//! whole cluster. A task of its own takes or renews the leadership every `lease / 3`, so a
//! long wait on the rate limiter never delays a renewal; the enrichment task reads the
//! current [`Term`].

use std::time::Duration;

use herald_core::queue::{Claim, Lead, Queue};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The name of the leadership (`Queue::try_lead`).
pub const LEADERSHIP: &str = "enrich";

/// This gateway's standing, as of the last `try_lead`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Term {
    /// Counts the times this gateway started leading: a new number, new (empty) limiters.
    pub number: u64,
    /// While leading: no Google call starts at or after this instant (`lease / 3` before
    /// the lease would run out by this process's monotonic clock, so a slow call cannot
    /// overlap the next leader's first). `None`: another gateway leads, or nobody knows.
    pub calls_until: Option<Instant>,
}

impl Term {
    /// Whether a call may start now.
    pub fn leads(&self) -> bool {
        self.calls_until.is_some_and(|until| Instant::now() < until)
    }
}

/// The enrichment task's view of the leadership kept by [`Leadership::start`].
pub struct Leadership {
    term: watch::Receiver<Term>,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Takes or renews the leadership every `lease / 3` until `stop`, then resigns it if
    /// held.
    pub fn start(queue: std::sync::Arc<dyn Queue>, stop: CancellationToken) -> Leadership {
        let (tx, term) = watch::channel(Term::default());
        let task = tokio::spawn(keep(queue, tx, stop));
        Leadership { term, task }
    }

    /// The current term.
    pub fn term(&self) -> Term {
        *self.term.borrow()
    }

    /// Until the term changes (taken, renewed, lost). Never returns once the keeping task
    /// has ended (the gateway stops).
    pub async fn changed(&mut self) {
        if self.term.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits for the keeping task (it ends once `stop` is cancelled, after resigning).
    pub async fn end(self) {
        let _ = self.task.await;
    }
}

async fn keep(queue: std::sync::Arc<dyn Queue>, tx: watch::Sender<Term>, stop: CancellationToken) {
    let holder = queue.holder().to_owned();
    let lease = queue.lease();
    let every = (lease / 3).max(Duration::from_millis(10));
    let mut term = Term::default();
    let mut leader: Option<String> = None;
    loop {
        let asked = Instant::now();
        let answer = tokio::select! {
            _ = stop.cancelled() => break,
            answer = queue.try_lead(LEADERSHIP, Claim::new(&holder, lease)) => answer,
        };
        let was_leading = term.calls_until.is_some();
        match answer {
            Ok(Lead::Leader { .. }) => {
                if !was_leading {
                    term.number += 1;
                    tracing::info!(holder = %holder, "this gateway now leads enrichment (Google lookups)");
                }
                term.calls_until = Some(asked + lease - lease / 3);
                leader = Some(holder.clone());
            }
            Ok(Lead::Follower { leader: other, .. }) => {
                term.calls_until = None;
                if was_leading || leader.as_ref() != Some(&other) {
                    tracing::info!(leader = %other, "another gateway leads enrichment");
                }
                leader = Some(other);
            }
            Err(e) => {
                term.calls_until = None;
                leader = None;
                tracing::warn!(
                    "cannot claim the leadership of enrichment, not calling Google: {e}"
                );
            }
        }
        tx.send_replace(term);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(asked + every) => {}
        }
    }
    tx.send_replace(Term {
        number: term.number,
        calls_until: None,
    });
    // Also when a `try_lead` was cut short by the stop: it may have granted the leadership.
    if let Err(e) = queue.resign(LEADERSHIP, &holder).await
        && term.calls_until.is_some()
    {
        tracing::warn!("could not give up the leadership of enrichment: {e}");
    }
}
