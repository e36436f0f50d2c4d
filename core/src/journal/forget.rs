//! `herald forget` on the local engine: the redb side (the enrichment cache, dead letters,
//! rejected inputs) in one transaction, then the log's events naming the user, replaced in
//! their segments by `FORGOTTEN` tombstones (the segments are rewritten, not appended to:
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
        if record.kind != codec::EVENT || !doomed.contains(&record.seq) {
            return None;
        }
        let committed_at = codec::decode_event_head(record.seq, &record.payload)
            .map_or(0, |(head, _)| head.committed_at);
        let mut payload = Vec::new();
        codec::encode_forgotten(&mut payload, committed_at);
        Some((codec::FORGOTTEN, payload))
    })?;
    Ok(report)
}
