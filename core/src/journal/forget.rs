//! `herald forget` on the local engine: the redb side (the enrichment cache, dead letters,
//! rejected inputs) in one transaction, then the log's events naming the user and the
//! outcomes of their deliveries, replaced in their segments by `FORGOTTEN` tombstones (the segments are rewritten, not appended to:
//! the data must leave the disk). The checkpoint is removed, so the next start rebuilds the
//! index from the rewritten log.

use std::path::Path;

use super::JournalError;
use super::ledger::{self, codec};
use super::store;
use super::writer::Core;
use crate::queue::ForgetReport;
use crate::queue::forget as rules;

pub(super) fn forget(
    core: &mut Core,
    _dir: &Path,
    user_id: &str,
) -> Result<ForgetReport, JournalError> {
    let mut report = store::forget(&core.db, user_id)?;
    // Which events name the user, and how many of their deliveries were still pending.
    let mut doomed = std::collections::BTreeSet::new();
    let mut deliveries: Vec<(u64, String, String)> = Vec::new();
    ledger::each_event(core.ledger.log(), |seq, head, json| {
        if rules::event_json_names_user(json, user_id) {
            doomed.insert(seq);
            for (sink, route) in &head.deliveries {
                deliveries.push((seq, (*sink).to_owned(), (*route).to_owned()));
            }
        }
        Ok(())
    })?;
    if doomed.is_empty() {
        return Ok(report);
    }
    {
        // Asked of the index, which knows those in memory and those in the log only alike.
        let index = core.ledger.shared().index();
        report.deliveries_dropped += deliveries
            .iter()
            .filter(|(seq, sink, route)| index.is_pending(sink, *seq, route))
            .count() as u64;
        // An unrouted event routed later has its copy too; both go.
    }
    report.events = doomed.len() as u64;
    core.ledger.rewrite(|record| {
        // The events, and the outcomes of their deliveries: an outcome left naming a seq
        // that is no event any more would settle a delivery that is not there (one kept in
        // the log only is taken as there, docs/architecture.md §10.3).
        let committed_at = match record.kind {
            codec::EVENT if doomed.contains(&record.seq) => {
                codec::decode_event_head(record.seq, &record.payload)
                    .map_or(0, |(head, _)| head.committed_at)
            }
            codec::OUTCOME
                if codec::decode_outcome(record.seq, &record.payload)
                    .is_ok_and(|outcome| doomed.contains(&outcome.seq)) =>
            {
                0
            }
            _ => return None,
        };
        let mut payload = Vec::new();
        codec::encode_forgotten(&mut payload, committed_at);
        Some((codec::FORGOTTEN, payload))
    })?;
    Ok(report)
}
