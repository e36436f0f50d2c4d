//! [`QueueAdmin`] on PostgreSQL (docs/architecture.md §10.1): stats, dead letters, the state
//! table. Shared by a running gateway's [`crate::PgQueue`] and the CLI's [`PgAdmin`], which
//! talks to the database directly.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use herald_core::config::QueueEngine;
use herald_core::event::Event;
use herald_core::ingest::RejectedInput;
use herald_core::queue::{
    Attempt, DeadFilter, DeadKind, DeadLetter, QueueAdmin, QueueError, ReplayReport, Stats, to_time,
};

use crate::error::detail;
use crate::sql;

/// A driver error as a [`QueueError`]: [`QueueError::Unavailable`] when the database cannot be
/// reached (refused, connection lost, shutting down), `Io` for the rest. Never carries the
/// password (the driver's messages do not).
pub(crate) fn queue_error(context: &str, e: &tokio_postgres::Error) -> QueueError {
    if unreachable(e) {
        QueueError::Unavailable {
            detail: format!("{context}: {}", detail(e)),
        }
    } else {
        QueueError::io(context, detail(e))
    }
}

/// Whether `e` means "the database is not there now" rather than "this statement is wrong".
pub(crate) fn unreachable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // connection exceptions, admin/crash shutdown, cannot connect now, too many clients
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57P") || c == "53300"
        }
        // no server answer at all: an I/O error on the socket
        None => e.as_db_error().is_none(),
    }
}

pub(crate) fn pool_error(e: &deadpool_postgres::PoolError) -> QueueError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Closed => QueueError::Closed,
        PoolError::Backend(e) => queue_error("connecting", e),
        other => QueueError::Unavailable {
            detail: format!("no connection to PostgreSQL: {other}"),
        },
    }
}

pub(crate) async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, QueueError> {
    pool.get().await.map_err(|e| pool_error(&e))
}

fn filter_params(
    filter: &DeadFilter,
) -> (
    Option<Vec<i64>>,
    Option<String>,
    Option<String>,
    Option<i64>,
) {
    let ids = (!filter.ids.is_empty()).then(|| {
        filter
            .ids
            .iter()
            .map(|id| i64::try_from(*id).unwrap_or(i64::MAX))
            .collect()
    });
    (
        ids,
        filter.sink.clone(),
        filter.route.clone(),
        filter.before,
    )
}

pub(crate) async fn stats(pool: &Pool) -> Result<Stats, QueueError> {
    let client = client(pool).await?;
    let e = |e: tokio_postgres::Error| queue_error("reading the queue's counters", &e);
    let backlog = client.query_one(sql::BACKLOG, &[]).await.map_err(e)?;
    let mut stats = Stats {
        undelivered_events: count(backlog.try_get::<_, i64>(0).map_err(e)?),
        undelivered_bytes: count(backlog.try_get::<_, i64>(1).map_err(e)?),
        ..Stats::default()
    };
    for row in client.query(sql::PENDING, &[]).await.map_err(e)? {
        stats.pending.insert(
            row.try_get::<_, String>(0).map_err(e)?,
            count(row.try_get::<_, i64>(1).map_err(e)?),
        );
    }
    let dead = client.query_one(sql::DEAD_COUNT, &[]).await.map_err(e)?;
    stats.dead_letters = count(dead.try_get::<_, i64>(0).map_err(e)?);
    Ok(stats)
}

pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A row of [`sql::DEAD_LETTERS`] as a dead letter; `Corrupt` names it when it cannot be read.
fn dead_letter_of(row: &tokio_postgres::Row) -> Result<DeadLetter, QueueError> {
    let e = |e: tokio_postgres::Error| queue_error("reading the dead letters", &e);
    let id: i64 = row.try_get(0).map_err(e)?;
    let what = || format!("dead letter {id}");
    let created: i64 = row.try_get(1).map_err(e)?;
    let kind: String = row.try_get(2).map_err(e)?;
    let reason: String = row.try_get(5).map_err(e)?;
    let kind = if kind == "rejected" {
        let meta: Option<String> = row.try_get(10).map_err(e)?;
        let meta: BTreeMap<String, String> = match meta {
            Some(text) => serde_json::from_str(&text)
                .map_err(|_| QueueError::corrupt(what(), "its metadata is not a JSON object"))?,
            None => BTreeMap::new(),
        };
        let received: Option<i64> = row.try_get(9).map_err(e)?;
        DeadKind::Rejected {
            input: RejectedInput {
                source: row
                    .try_get::<_, Option<String>>(8)
                    .map_err(e)?
                    .unwrap_or_default(),
                reason,
                received: to_time(received.unwrap_or(created)),
                meta,
                body: row
                    .try_get::<_, Option<String>>(11)
                    .map_err(e)?
                    .unwrap_or_default(),
            },
        }
    } else {
        let attempts: String = row.try_get(6).map_err(e)?;
        let attempts: Vec<Attempt> = serde_json::from_str(&attempts).map_err(|err| {
            QueueError::corrupt(what(), format_args!("attempts: {}", json_where(&err)))
        })?;
        let event: Option<String> = row.try_get(7).map_err(e)?;
        let event: Event = serde_json::from_str(event.as_deref().unwrap_or("")).map_err(|err| {
            QueueError::corrupt(what(), format_args!("event: {}", json_where(&err)))
        })?;
        DeadKind::Delivery {
            route: row
                .try_get::<_, Option<String>>(3)
                .map_err(e)?
                .unwrap_or_default(),
            sink: row
                .try_get::<_, Option<String>>(4)
                .map_err(e)?
                .unwrap_or_default(),
            reason,
            attempts,
            event: Box::new(event),
        }
    };
    Ok(DeadLetter {
        id: u64::try_from(id).unwrap_or(0),
        created: to_time(created),
        kind,
    })
}

/// Where a JSON decoder stopped, never what it read (it may be an event's content).
pub(crate) fn json_where(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

pub(crate) async fn dead_letters(
    pool: &Pool,
    filter: &DeadFilter,
) -> Result<Vec<DeadLetter>, QueueError> {
    let client = client(pool).await?;
    let (ids, sink, route, before) = filter_params(filter);
    let rows = client
        .query(sql::DEAD_LETTERS, &[&ids, &sink, &route, &before])
        .await
        .map_err(|e| queue_error("reading the dead letters", &e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        match dead_letter_of(row) {
            Ok(letter) => out.push(letter),
            Err(e @ QueueError::Corrupt { .. }) => {
                // Listed without it, so the others can still be listed and purged.
                tracing::warn!(error = %e, "a dead letter cannot be read; it is left out");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

pub(crate) async fn dead_letter(pool: &Pool, id: u64) -> Result<Option<DeadLetter>, QueueError> {
    let client = client(pool).await?;
    let ids = Some(vec![i64::try_from(id).unwrap_or(i64::MAX)]);
    let none: Option<String> = None;
    let before: Option<i64> = None;
    let rows = client
        .query(sql::DEAD_LETTERS, &[&ids, &none, &none, &before])
        .await
        .map_err(|e| queue_error("reading a dead letter", &e))?;
    rows.first().map(dead_letter_of).transpose()
}

/// Replays in one transaction, which also wakes the sinks on every gateway (NOTIFY).
pub(crate) async fn replay(
    pool: &Pool,
    filter: &DeadFilter,
    known_sinks: &[String],
) -> Result<ReplayReport, QueueError> {
    let letters = dead_letters(pool, filter).await?;
    let mut client = client(pool).await?;
    let e = |e: tokio_postgres::Error| queue_error("replaying dead letters", &e);
    let tx = client.transaction().await.map_err(e)?;
    let mut report = ReplayReport::default();
    for letter in letters {
        match &letter.kind {
            DeadKind::Rejected { .. } => report
                .skipped
                .push((letter.id, "a rejected input has no event to deliver".into())),
            DeadKind::Delivery { sink, .. } if !known_sinks.contains(sink) => report
                .skipped
                .push((letter.id, format!("sink `{sink}` is not in the config"))),
            DeadKind::Delivery {
                route, sink, event, ..
            } => {
                let json = event.to_json();
                let size = i32::try_from(json.len()).unwrap_or(i32::MAX);
                let (source, id) = (text(&event.source), text(&event.id));
                let seq: i64 = match tx
                    .query_opt(sql::REPLAY_EVENT, &[&source, &id, &size, &json])
                    .await
                    .map_err(e)?
                {
                    Some(row) => row.try_get(0).map_err(e)?,
                    None => tx
                        .query_one(sql::FIND_EVENT, &[&source, &id])
                        .await
                        .and_then(|row| row.try_get(0))
                        .map_err(e)?,
                };
                tx.execute(sql::REPLAY_DELIVERY, &[&seq, route, sink])
                    .await
                    .map_err(e)?;
                let id = i64::try_from(letter.id).unwrap_or(i64::MAX);
                tx.execute(sql::DELETE_DEAD, &[&id]).await.map_err(e)?;
                report.replayed.push(letter.id);
                if !report.sinks.contains(sink) {
                    report.sinks.push(sink.clone());
                }
            }
        }
    }
    tx.execute(sql::NOTIFY, &[&report.sinks]).await.map_err(e)?;
    tx.commit().await.map_err(e)?;
    Ok(report)
}

pub(crate) async fn purge(pool: &Pool, filter: &DeadFilter) -> Result<usize, QueueError> {
    let client = client(pool).await?;
    let (ids, sink, route, before) = filter_params(filter);
    let n = client
        .execute(sql::PURGE, &[&ids, &sink, &route, &before])
        .await
        .map_err(|e| queue_error("purging dead letters", &e))?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(crate) async fn leader(
    pool: &Pool,
    name: &str,
) -> Result<Option<(String, herald_core::queue::Millis)>, QueueError> {
    let client = client(pool).await?;
    let e = |e: tokio_postgres::Error| queue_error("reading a leadership", &e);
    match client.query_opt(sql::LEADER, &[&name]).await.map_err(e)? {
        Some(row) => Ok(Some((
            row.try_get(0).map_err(e)?,
            row.try_get(1).map_err(e)?,
        ))),
        None => Ok(None),
    }
}

/// Per sink, the earliest `next_at` of the deliveries waiting for a retry (the console's
/// "next retry", docs/architecture.md §12).
pub(crate) async fn next_retries(
    pool: &Pool,
) -> Result<BTreeMap<String, herald_core::queue::Millis>, QueueError> {
    let client = client(pool).await?;
    let e = |e: tokio_postgres::Error| queue_error("reading the next retries", &e);
    let mut out = BTreeMap::new();
    for row in client.query(sql::NEXT_RETRIES, &[]).await.map_err(e)? {
        out.insert(row.try_get(0).map_err(e)?, row.try_get(1).map_err(e)?);
    }
    Ok(out)
}

/// The gateways registered on this database (the console, docs/architecture.md §12).
pub(crate) async fn gateways(
    pool: &Pool,
) -> Result<Vec<herald_core::queue::GatewayInfo>, QueueError> {
    let client = client(pool).await?;
    let e = |e: tokio_postgres::Error| queue_error("reading the gateways", &e);
    let mut out = Vec::new();
    for row in client.query(sql::GATEWAYS, &[]).await.map_err(e)? {
        out.push(herald_core::queue::GatewayInfo {
            holder: row.try_get(0).map_err(e)?,
            version: row.try_get(1).map_err(e)?,
            started: row.try_get(2).map_err(e)?,
            last_seen: row.try_get(3).map_err(e)?,
        });
    }
    Ok(out)
}

pub(crate) async fn get_state(pool: &Pool, key: &str) -> Result<Option<Vec<u8>>, QueueError> {
    let client = client(pool).await?;
    let e = |e: tokio_postgres::Error| queue_error("reading a state value", &e);
    match client.query_opt(sql::GET_STATE, &[&key]).await.map_err(e)? {
        Some(row) => Ok(Some(row.try_get(0).map_err(e)?)),
        None => Ok(None),
    }
}

pub(crate) async fn put_state(
    pool: &Pool,
    key: &str,
    value: Option<&[u8]>,
) -> Result<(), QueueError> {
    let client = client(pool).await?;
    let e = |e: tokio_postgres::Error| queue_error("writing a state value", &e);
    match value {
        Some(v) => client.execute(sql::PUT_STATE, &[&key, &v]).await,
        None => client.execute(sql::DELETE_STATE, &[&key]).await,
    }
    .map_err(e)?;
    Ok(())
}

pub(crate) async fn list_state(
    pool: &Pool,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>, QueueError> {
    let client = client(pool).await?;
    let e = |e: tokio_postgres::Error| queue_error("reading state values", &e);
    let rows = client.query(sql::LIST_STATE, &[&prefix]).await.map_err(e)?;
    rows.iter()
        .map(|row| Ok((row.try_get(0).map_err(e)?, row.try_get(1).map_err(e)?)))
        .collect()
}

/// Text PostgreSQL can store: it refuses NUL characters, which an input may carry.
pub(crate) fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// The postgres queue for the CLI (`herald dlq`, `herald google status`): the database
/// directly, whether or not gateways run on it (docs/architecture.md §10.2).
pub struct PgAdmin {
    pub(crate) pool: Pool,
}

impl PgAdmin {
    /// A pool that connects on first use (inside the caller's runtime).
    pub fn open(spec: &crate::PgSpec) -> Result<PgAdmin, crate::PgError> {
        Ok(PgAdmin {
            pool: crate::connect::pool(spec)?,
        })
    }
}

/// [`QueueAdmin`] for a type with a pool.
macro_rules! admin_impl {
    ($ty:ty) => {
        #[async_trait]
        impl QueueAdmin for $ty {
            fn engine(&self) -> QueueEngine {
                QueueEngine::Postgres
            }
            async fn stats(&self) -> Result<Stats, QueueError> {
                $crate::admin::stats(&self.pool).await
            }
            async fn dead_letters(
                &self,
                filter: &DeadFilter,
            ) -> Result<Vec<DeadLetter>, QueueError> {
                $crate::admin::dead_letters(&self.pool, filter).await
            }
            async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, QueueError> {
                $crate::admin::dead_letter(&self.pool, id).await
            }
            async fn replay(
                &self,
                filter: &DeadFilter,
                known_sinks: &[String],
            ) -> Result<ReplayReport, QueueError> {
                let report = $crate::admin::replay(&self.pool, filter, known_sinks).await?;
                self.replayed(&report.sinks);
                Ok(report)
            }
            async fn purge(&self, filter: &DeadFilter) -> Result<usize, QueueError> {
                $crate::admin::purge(&self.pool, filter).await
            }
            async fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, QueueError> {
                $crate::admin::get_state(&self.pool, key).await
            }
            async fn put_state(&self, key: &str, value: Option<&[u8]>) -> Result<(), QueueError> {
                $crate::admin::put_state(&self.pool, key, value).await
            }
            async fn list_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, QueueError> {
                $crate::admin::list_state(&self.pool, prefix).await
            }
            async fn forget(
                &self,
                user_id: &str,
            ) -> Result<herald_core::queue::ForgetReport, QueueError> {
                $crate::forget::forget(&self.pool, user_id).await
            }
            async fn leader(
                &self,
                name: &str,
            ) -> Result<Option<(String, herald_core::queue::Millis)>, QueueError> {
                $crate::admin::leader(&self.pool, name).await
            }
            async fn next_retries(
                &self,
            ) -> Result<BTreeMap<String, herald_core::queue::Millis>, QueueError> {
                $crate::admin::next_retries(&self.pool).await
            }
            async fn gateways(&self) -> Result<Vec<herald_core::queue::GatewayInfo>, QueueError> {
                $crate::admin::gateways(&self.pool).await
            }
        }
    };
}
pub(crate) use admin_impl;

impl PgAdmin {
    /// Nothing to wake here: the replay's NOTIFY wakes the running gateways.
    fn replayed(&self, _sinks: &[String]) {}
}

admin_impl!(PgAdmin);
