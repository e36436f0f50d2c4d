//! The journal as the `local` engine of the storage boundary (docs/architecture.md §10):
//! [`Queue`] for a running gateway's [`Journal`], [`QueueAdmin`] for it and for a stopped
//! gateway's [`AdminJournal`].
//!
//! Claims: one process owns the journal, and each sink has one worker, which keeps its own
//! in-flight set, so a delivery's claim is held trivially (`renew` keeps all, `release` has
//! nothing to do) and never taken over. Unrouted events and leaderships are leased in memory
//! ([`super::leases`]), so a task that claims and dies still loses the claim after the lease.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, broadcast, oneshot};

use super::error::During;
use super::records::{Millis, now_millis};
use super::{AdminJournal, DeadFilter, DeadLetter, DeliveryKey, Journal, JournalError};
use super::{
    OnRecorded, OnRecordedAll, Outcome, PendingItem, ReplayReport, Stats, Tapped, store, writer,
};
use crate::config::QueueEngine;
use crate::event::Event;
use crate::health::Health;
use crate::ingest::Committed;
use crate::queue::{
    Claim, ForgetReport, Lead, Queue, QueueAdmin, Recording, RouteLater, RoutedLater, UnroutedItem,
};

#[async_trait]
impl QueueAdmin for Journal {
    fn engine(&self) -> QueueEngine {
        QueueEngine::Local
    }
    async fn stats(&self) -> Result<Stats, JournalError> {
        Journal::stats(self)
    }
    async fn dead_letters(&self, filter: &DeadFilter) -> Result<Vec<DeadLetter>, JournalError> {
        Journal::dead_letters(self, filter)
    }
    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, JournalError> {
        Journal::dead_letter(self, id)
    }
    async fn replay(
        &self,
        filter: &DeadFilter,
        known_sinks: &[String],
    ) -> Result<ReplayReport, JournalError> {
        // On the blocking pool: a replay may rewrite many records.
        Journal::replay(self, filter, known_sinks).await
    }
    async fn purge(&self, filter: &DeadFilter) -> Result<usize, JournalError> {
        let db = self.db.clone();
        let filter = filter.clone();
        blocking(move || store::purge(&db, &filter))
            .await
            .during(super::PURGING)
    }
    // State values on the blocking pool: a write commits (fsync) outside the writer.
    async fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let (db, key) = (self.db.clone(), key.to_owned());
        blocking(move || store::get_state(&db, &key))
            .await
            .during(super::READING_STATE)
    }
    async fn put_state(&self, key: &str, value: Option<&[u8]>) -> Result<(), JournalError> {
        let (db, key, value) = (self.db.clone(), key.to_owned(), value.map(<[u8]>::to_vec));
        blocking(move || store::put_state(&db, &key, value.as_deref()))
            .await
            .during(super::WRITING_STATE)
    }
    async fn list_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, JournalError> {
        let (db, prefix) = (self.db.clone(), prefix.to_owned());
        blocking(move || store::list_state(&db, &prefix))
            .await
            .during(super::READING_STATE)
    }
    async fn next_retries(&self) -> Result<BTreeMap<String, Millis>, JournalError> {
        Ok(self.shared.index().next_retries())
    }
    async fn forget(&self, _user_id: &str) -> Result<ForgetReport, JournalError> {
        // The writer, the recent window and the counters' mirrors would go on holding what
        // is deleted underneath them: the journal is changed only when no gateway runs.
        Err(JournalError::io(
            "forgetting a user",
            "the local engine forgets only in a stopped gateway's journal: stop the gateway first",
        ))
    }
}

/// Runs `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, JournalError> + Send + 'static,
) -> Result<T, JournalError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| JournalError::io("", format_args!("the journal's task failed: {e}")))?
}

#[async_trait]
impl QueueAdmin for AdminJournal {
    fn engine(&self) -> QueueEngine {
        QueueEngine::Local
    }
    async fn stats(&self) -> Result<Stats, JournalError> {
        AdminJournal::stats(self)
    }
    async fn dead_letters(&self, filter: &DeadFilter) -> Result<Vec<DeadLetter>, JournalError> {
        AdminJournal::dead_letters(self, filter)
    }
    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, JournalError> {
        AdminJournal::dead_letter(self, id)
    }
    async fn replay(
        &self,
        filter: &DeadFilter,
        known_sinks: &[String],
    ) -> Result<ReplayReport, JournalError> {
        AdminJournal::replay(self, filter, known_sinks)
    }
    async fn purge(&self, filter: &DeadFilter) -> Result<usize, JournalError> {
        AdminJournal::purge(self, filter)
    }
    async fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        AdminJournal::get_state(self, key)
    }
    async fn put_state(&self, key: &str, value: Option<&[u8]>) -> Result<(), JournalError> {
        AdminJournal::put_state(self, key, value)
    }
    async fn list_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, JournalError> {
        AdminJournal::list_state(self, prefix)
    }
    async fn forget(&self, user_id: &str) -> Result<ForgetReport, JournalError> {
        AdminJournal::forget(self, user_id)
    }
}

#[async_trait]
impl Queue for Journal {
    fn holder(&self) -> &str {
        &self.holder
    }

    async fn commit_unrouted(&self, mut event: Event) -> Result<Committed, JournalError> {
        self.room()?;
        let (reply, answer) = oneshot::channel();
        let json = super::event_json(&mut event)?;
        let event = Arc::new(event);
        self.send(writer::Command::Append {
            event,
            json,
            unrouted: true,
            reply,
        })
        .await?;
        let committed = answer.await.map_err(|_| JournalError::Closed)??;
        if committed == Committed::New {
            self.unrouted_notify.notify_one();
        }
        Ok(committed)
    }

    fn notify_unrouted(&self) -> Arc<Notify> {
        self.unrouted_notify.clone()
    }

    async fn claim_unrouted(
        &self,
        claim: Claim<'_>,
        limit: usize,
    ) -> Result<Vec<UnroutedItem>, JournalError> {
        let now = now_millis();
        let until = claim.until(now);
        let seqs: Vec<u64> = {
            let index = self.shared.index();
            index
                .unrouted
                .keys()
                .copied()
                .filter(|seq| {
                    self.unrouted
                        .acquire(*seq, claim.holder, now, until)
                        .is_ok()
                })
                .take(limit)
                .collect()
        };
        let shared = self.shared.clone();
        let recent = self.recent.clone();
        let read = tokio::task::spawn_blocking(move || {
            let missing: Vec<u64> = seqs
                .iter()
                .copied()
                .filter(|seq| recent.get(*seq).is_none())
                .collect();
            let mut from_disk: std::collections::HashMap<_, _> =
                shared.read(&missing).into_iter().collect();
            seqs.into_iter()
                .map(|seq| match recent.get(seq) {
                    Some(held) => (seq, Ok(Some(held))),
                    None => (seq, from_disk.remove(&seq).unwrap_or(Ok(None))),
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| JournalError::io("", format_args!("the reading task failed: {e}")))?;
        let mut items = Vec::new();
        for (seq, held) in read {
            match held {
                Ok(Some(held)) => items.push(UnroutedItem {
                    seq,
                    committed_at: held.committed_at,
                    event: held.event,
                    lease_until: until,
                }),
                Ok(None) => {
                    self.unrouted.release(&seq, claim.holder);
                    tracing::error!(
                        seq,
                        "an unrouted event is missing from the log; it is skipped"
                    );
                }
                Err(e) => {
                    self.unrouted.release(&seq, claim.holder);
                    tracing::error!(seq, error = %e, "an unrouted event cannot be read; it is skipped");
                }
            }
        }
        Ok(items)
    }

    async fn renew_unrouted(
        &self,
        claim: Claim<'_>,
        seqs: &[u64],
    ) -> Result<Vec<u64>, JournalError> {
        let until = claim.until(now_millis());
        Ok(seqs
            .iter()
            .copied()
            .filter(|seq| !self.unrouted.renew(seq, claim.holder, until))
            .collect())
    }

    async fn release_unrouted(&self, holder: &str, seqs: &[u64]) -> Result<(), JournalError> {
        for seq in seqs {
            self.unrouted.release(seq, holder);
        }
        if !seqs.is_empty() {
            self.unrouted_notify.notify_one();
        }
        Ok(())
    }

    async fn route_later(
        &self,
        holder: &str,
        seq: u64,
        routed: RouteLater,
    ) -> Result<RoutedLater, JournalError> {
        // The lease keeps two holders from doing the work twice; the transaction, which
        // finds the event routed already, is what keeps it from being routed twice.
        if let Some((other, _)) = self.unrouted.holder(&seq, now_millis())
            && other != holder
        {
            return Ok(RoutedLater::NotHeld { holder: other });
        }
        let (reply, answer) = oneshot::channel();
        self.send(writer::Command::RouteLater {
            seq,
            event: routed.event.map(Box::new),
            deliveries: routed.deliveries,
            reply,
        })
        .await?;
        let done = answer.await.map_err(|_| JournalError::Closed)??;
        self.unrouted.end(&seq);
        Ok(match done {
            Some(deliveries) => RoutedLater::Routed { deliveries },
            None => RoutedLater::AlreadyRouted,
        })
    }

    async fn scan_pending(
        &self,
        sink: &str,
        _claim: Claim<'_>,
        after: Option<DeliveryKey>,
        limit: usize,
    ) -> Result<Vec<PendingItem>, JournalError> {
        // The worker of `sink` is the only one reading its deliveries: what it reads is
        // its claim until it records an outcome.
        Journal::scan_pending(self, sink, after, limit).await
    }

    async fn renew(
        &self,
        _claim: Claim<'_>,
        _keys: &[DeliveryKey],
    ) -> Result<Vec<DeliveryKey>, JournalError> {
        Ok(Vec::new())
    }

    async fn release(&self, _holder: &str, _keys: &[DeliveryKey]) -> Result<(), JournalError> {
        Ok(())
    }

    async fn record(&self, key: DeliveryKey, outcome: Outcome) -> Result<(), JournalError> {
        Journal::record(self, key, outcome).await
    }

    fn record_then(&self, key: DeliveryKey, outcome: Outcome, then: OnRecorded) -> Recording<'_> {
        match self
            .commands
            .try_send(writer::Command::Outcome { key, outcome, then })
        {
            Ok(()) => Recording::done(Ok(())),
            // The command, and with it `then`, is dropped: `then` is called with `Closed`.
            Err(TrySendError::Closed(_)) => Recording::done(Err(JournalError::Closed)),
            Err(TrySendError::Full(command)) => Recording::waiting(self.send(command)),
        }
    }

    fn record_all_then(
        &self,
        outcomes: Vec<(DeliveryKey, Outcome)>,
        then: OnRecordedAll,
    ) -> Recording<'_> {
        // One command, committed in one batch: `then` gets one result for all.
        match self
            .commands
            .try_send(writer::Command::Outcomes { outcomes, then })
        {
            Ok(()) => Recording::done(Ok(())),
            Err(TrySendError::Closed(_)) => Recording::done(Err(JournalError::Closed)),
            Err(TrySendError::Full(command)) => Recording::waiting(self.send(command)),
        }
    }

    fn notify_for(&self, sink: &str) -> Arc<Notify> {
        Journal::notify_for(self, sink)
    }

    async fn bury(&self, sink: &str, reason: &str) -> Result<usize, JournalError> {
        Journal::bury(self, sink, reason).await
    }

    fn tap(&self) -> broadcast::Receiver<Tapped> {
        Journal::tap(self)
    }

    fn health(&self) -> &Health {
        Journal::health(self)
    }

    fn room(&self) -> Result<(), JournalError> {
        Journal::room(self)
    }

    async fn sweep(&self) -> Result<usize, JournalError> {
        Journal::sweep(self).await
    }

    async fn committed_so_far(&self) -> Result<(), JournalError> {
        Journal::committed_so_far(self).await
    }

    async fn try_lead(&self, name: &str, claim: Claim<'_>) -> Result<Lead, JournalError> {
        let now = now_millis();
        Ok(
            match self
                .leaders
                .acquire(name.to_owned(), claim.holder, now, claim.until(now))
            {
                Ok(until) => Lead::Leader { until },
                Err((leader, until)) => Lead::Follower { leader, until },
            },
        )
    }

    async fn resign(&self, name: &str, holder: &str) -> Result<(), JournalError> {
        self.leaders.release(&name.to_owned(), holder);
        Ok(())
    }

    async fn close(&self) {
        Journal::close(self).await
    }
}
