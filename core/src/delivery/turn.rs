//! A paced sink on a shared queue (docs/architecture.md §10.2, "Paced sinks"): one gateway
//! at a time delivers it, so that its pace (the engine's `rate_limit`, or the pace the sink
//! keeps itself, Slack's) holds for the whole cluster: at most `rate × t + burst` in any
//! window `t`, a failover included.
//!
//! The turn is the leadership `pace/<sink>` in the queue (`Queue::try_lead`), renewed with
//! the worker's claims every lease/3. The gateway that has it sends until its *turn* ends,
//! which is `refill` (`burst / rate`, the time a spent burst takes to come back; at most
//! half the lease) before its lease could end by this machine's clock; the next gateway can
//! only take the leadership once the lease has ended by the database's clock, and then
//! waits the rest of `refill` before its first send. So a full burst from the old holder
//! and one from the new are always at least `refill` apart, which is what one bucket
//! shared by both would allow. A gateway that stops hands the turn over the same way: it
//! shortens its lease to `margin`.

use std::time::Duration;

use tokio::time::Instant;

use crate::queue::{Claim, Lead, Queue};
use crate::sink::{Pace, Turn};

pub(super) struct Pacing {
    lead: String,
    sink: String,
    pub turn: Turn,
    lease: Duration,
    /// Quiet kept before the lease's end: `refill`, at most half the lease.
    margin: Duration,
    /// Quiet kept after taking the turn: what `margin` leaves of `refill`.
    settle: Duration,
}

impl Pacing {
    pub fn new(sink: &str, pace: Pace, lease: Duration) -> Pacing {
        let refill = pace.refill();
        let margin = refill.min(lease / 2);
        Pacing {
            lead: format!("pace/{sink}"),
            sink: sink.to_owned(),
            turn: Turn::ended(),
            lease,
            margin,
            settle: refill.saturating_sub(margin),
        }
    }

    /// Takes or renews the turn. Answers when the first send may go out on a turn just taken
    /// (`Some`), or `None` when this gateway does not have it (another does, or the queue
    /// cannot be reached: the turn ends at its deadline either way).
    pub async fn take(&self, journal: &dyn Queue) -> Option<Instant> {
        let had = self.turn.holds();
        let asked = Instant::now();
        match journal
            .try_lead(&self.lead, Claim::new(journal.holder(), self.lease))
            .await
        {
            Ok(Lead::Leader { .. }) => {
                let end = asked + self.lease.saturating_sub(self.margin);
                self.turn.run_until(end.into_std());
                if had {
                    Some(asked)
                } else {
                    tracing::info!(sink = %self.sink, "this gateway delivers the paced sink now");
                    Some(Instant::now() + self.settle)
                }
            }
            Ok(Lead::Follower { leader, .. }) => {
                if had {
                    self.turn.end();
                    tracing::info!(sink = %self.sink, leader = %leader, "another gateway took over the paced sink");
                }
                None
            }
            Err(e) => {
                if had {
                    tracing::warn!(sink = %self.sink, error = %e, "cannot renew the turn at the paced sink; it ends at its deadline");
                }
                None
            }
        }
    }

    /// Hands the turn over: the lease is shortened to `margin` from now, so the next
    /// gateway's first send comes `refill` after this one's last.
    pub async fn hand_over(&self, journal: &dyn Queue) {
        if !self.turn.holds() {
            return;
        }
        self.turn.end();
        let quiet = self.margin.max(Duration::from_millis(1));
        if let Err(e) = journal
            .try_lead(&self.lead, Claim::new(journal.holder(), quiet))
            .await
        {
            tracing::warn!(sink = %self.sink, error = %e, "cannot hand the paced sink over; another gateway takes it when the lease ends");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quiet_between_two_gateways_is_one_refill() {
        let lease = Duration::from_secs(30);
        let slack = Pacing::new(
            "chat",
            Pace {
                per_second: 1.0,
                burst: 3,
            },
            lease,
        );
        assert_eq!(slack.margin, Duration::from_secs(3));
        assert_eq!(slack.settle, Duration::ZERO);
        // A slow pace: half the lease before the end, the rest after taking over.
        let slow = Pacing::new(
            "mail",
            Pace {
                per_second: 0.01,
                burst: 1,
            },
            lease,
        );
        assert_eq!(slow.margin, Duration::from_secs(15));
        assert_eq!(slow.margin + slow.settle, Duration::from_secs(100));
        assert!(!slow.turn.holds(), "not held before it is taken");
    }
}
