//! Importing another queue's contents (`herald queue copy`, docs/architecture.md §10.2):
//! pending deliveries with their events and retry state, dead letters and rejected inputs,
//! and the state table (the Google lifecycle's registrations and channels, with tokens).
//!
//! Every import is idempotent, so a copy run twice changes nothing the second time: an
//! event whose duplicate key `(source, event_id)` is there already is skipped with its
//! deliveries; a dead letter equal to one there already (same time, kind, reason, route,
//! sink, event or body) is skipped; a state key there already keeps its value (the cluster
//! may have renewed that channel since).

use herald_core::queue::{DeadKind, DeadLetter, Millis, PendingState, QueueError};
use tokio_postgres::Client;

use crate::admin::queue_error;
use crate::config::PgSpec;
use crate::error::PgError;

/// An event with its pending deliveries, as read from another queue.
#[derive(Clone, Debug)]
pub struct ImportEvent {
    pub source: String,
    pub event_id: String,
    pub committed_at: Millis,
    /// The CloudEvents JSON exactly as stored (the sinks send these bytes).
    pub json: String,
    /// `(route, sink, retry state)`.
    pub deliveries: Vec<(String, String, PendingState)>,
}

const EVENT: &str = "WITH e AS (
    INSERT INTO events (source, event_id, committed_at, size, event, deliveries_left)
    VALUES ($1, $2, to_timestamp($3::int8::float8 / 1000), $4, $5, cardinality($6::text[]))
    ON CONFLICT (source, event_id) DO NOTHING
    RETURNING seq
), d AS (
    INSERT INTO deliveries (seq, route, sink, attempts, errors, next_at)
    SELECT e.seq, r.route, r.sink, r.attempts, r.errors::jsonb,
           to_timestamp(r.next_at::float8 / 1000)
    FROM e, unnest($6::text[], $7::text[], $8::int4[], $9::text[], $10::int8[])
         AS r(route, sink, attempts, errors, next_at)
    RETURNING 1
)
SELECT (SELECT seq FROM e), (SELECT count(*) FROM d)";

const DEAD: &str = "INSERT INTO dead_letters
    (created_at, kind, route, sink, reason, attempts, event, source, received, meta, body)
SELECT to_timestamp($1::int8::float8 / 1000), $2::text, $3::text, $4::text, $5::text,
       $6::text::jsonb, $7::text, $8::text, to_timestamp($9::int8::float8 / 1000),
       $10::text::jsonb, $11::text
WHERE NOT EXISTS (
    SELECT 1 FROM dead_letters
    WHERE created_at = to_timestamp($1::int8::float8 / 1000) AND kind = $2::text
      AND reason = $5::text
      AND route IS NOT DISTINCT FROM $3::text AND sink IS NOT DISTINCT FROM $4::text
      AND event IS NOT DISTINCT FROM $7::text AND body IS NOT DISTINCT FROM $11::text
)";

const STATE: &str = "INSERT INTO state (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";

const NOTIFY: &str = "SELECT pg_notify('herald_deliveries', s) FROM unnest($1::text[]) AS s";

/// One connection to the database, migrated to this binary's schema, importing.
pub struct Importer {
    client: Client,
}

impl Importer {
    /// Connects and migrates (refusing a schema newer than this binary).
    pub async fn open(spec: &PgSpec) -> Result<Importer, PgError> {
        let mut client = crate::connect(spec).await?;
        crate::migrate(&mut client).await?;
        Ok(Importer { client })
    }

    /// Imports `events` in one transaction; returns how many were new (the others' duplicate
    /// keys were there already) and how many deliveries they brought.
    pub async fn events(&mut self, events: &[ImportEvent]) -> Result<(usize, usize), QueueError> {
        let context = "importing events";
        let e = |e: tokio_postgres::Error| queue_error(context, &e);
        let tx = self.client.transaction().await.map_err(e)?;
        let stmt = tx.prepare(EVENT).await.map_err(e)?;
        let (mut new, mut deliveries) = (0, 0);
        for event in events {
            let routes: Vec<&str> = event.deliveries.iter().map(|d| d.0.as_str()).collect();
            let sinks: Vec<&str> = event.deliveries.iter().map(|d| d.1.as_str()).collect();
            let attempts: Vec<i32> = event
                .deliveries
                .iter()
                .map(|d| i32::try_from(d.2.attempts).unwrap_or(i32::MAX))
                .collect();
            let errors: Vec<String> = event
                .deliveries
                .iter()
                .map(|d| serde_json::to_string(&d.2.errors).unwrap_or_else(|_| "[]".into()))
                .collect();
            let next_at: Vec<i64> = event.deliveries.iter().map(|d| d.2.next_at).collect();
            let json = event.json.replace('\0', "\u{FFFD}");
            let size = i32::try_from(json.len()).unwrap_or(i32::MAX);
            let row = tx
                .query_one(
                    &stmt,
                    &[
                        &event.source,
                        &event.event_id,
                        &event.committed_at,
                        &size,
                        &json,
                        &routes,
                        &sinks,
                        &attempts,
                        &errors,
                        &next_at,
                    ],
                )
                .await
                .map_err(e)?;
            let seq: Option<i64> = row.try_get(0).map_err(e)?;
            let made: i64 = row.try_get(1).map_err(e)?;
            if seq.is_some() {
                new += 1;
                deliveries += usize::try_from(made).unwrap_or(0);
            }
        }
        let mut touched: Vec<&str> = events
            .iter()
            .flat_map(|ev| ev.deliveries.iter().map(|d| d.1.as_str()))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        if !touched.is_empty() {
            tx.execute(NOTIFY, &[&touched]).await.map_err(e)?;
        }
        tx.commit().await.map_err(e)?;
        Ok((new, deliveries))
    }

    /// Imports one dead letter or rejected input under a new id; false when an equal one is
    /// there already.
    pub async fn dead_letter(&mut self, letter: &DeadLetter) -> Result<bool, QueueError> {
        let e = |e: tokio_postgres::Error| queue_error("importing a dead letter", &e);
        let created = letter.created.timestamp_millis();
        let clean = |s: &str| s.replace('\0', "\u{FFFD}");
        let n = match &letter.kind {
            DeadKind::Delivery {
                route,
                sink,
                reason,
                attempts,
                event,
            } => {
                let attempts = serde_json::to_string(attempts)
                    .map_err(|err| QueueError::io("importing a dead letter", err))?;
                let event = serde_json::to_string(event)
                    .map_err(|err| QueueError::io("importing a dead letter", err))?;
                self.client
                    .execute(
                        DEAD,
                        &[
                            &created,
                            &"delivery",
                            &Some(route.as_str()),
                            &Some(sink.as_str()),
                            &clean(reason),
                            &attempts,
                            &Some(clean(&event)),
                            &None::<&str>,
                            &None::<i64>,
                            &None::<&str>,
                            &None::<&str>,
                        ],
                    )
                    .await
                    .map_err(e)?
            }
            DeadKind::Rejected { input } => {
                let meta = serde_json::to_string(&input.meta)
                    .map_err(|err| QueueError::io("importing a rejected input", err))?;
                self.client
                    .execute(
                        DEAD,
                        &[
                            &created,
                            &"rejected",
                            &None::<&str>,
                            &None::<&str>,
                            &clean(&input.reason),
                            &"[]",
                            &None::<&str>,
                            &Some(clean(&input.source)),
                            &Some(input.received.timestamp_millis()),
                            &Some(clean(&meta)),
                            &Some(clean(&input.body)),
                        ],
                    )
                    .await
                    .map_err(e)?
            }
        };
        Ok(n > 0)
    }

    /// Imports a state value; false when the key is there already (it keeps its value).
    pub async fn state(&mut self, key: &str, value: &[u8]) -> Result<bool, QueueError> {
        let n = self
            .client
            .execute(STATE, &[&key, &value])
            .await
            .map_err(|e| queue_error("importing a state value", &e))?;
        Ok(n > 0)
    }
}
