//! [`QueueAdmin::forget`](herald_core::queue::QueueAdmin::forget) on PostgreSQL
//! (docs/architecture.md §10.1): the rules of `herald_core::queue::forget`, in one
//! transaction, whether or not gateways run on the database. Events and dead deliveries are
//! selected in SQL (a JSON string equal to the id anywhere in `data` or `enriched`, jsonpath
//! `.**`); an event's deliveries and unrouted mark go with it (`ON DELETE CASCADE`). Cache
//! entries are selected by the same Rust function as on the local engine, since a value
//! need not be JSON.

use deadpool_postgres::Pool;
use herald_core::queue::forget::{CACHE_PREFIX, cache_entry_names_user, check_user_id};
use herald_core::queue::{ForgetReport, QueueError};

use crate::admin::{client, queue_error};

/// `$1` `{"id": <user id>}` as JSON text: the jsonpath variable.
const NAMES_USER: &str =
    "(jsonb_path_exists(event::jsonb, '$.data.** ? (@ == $id)', $1::text::jsonb)
    OR jsonb_path_exists(event::jsonb, '$.enriched.** ? (@ == $id)', $1::text::jsonb))";

/// Answers `(events, deliveries dropped)`.
fn delete_events() -> String {
    format!(
        "WITH e AS (DELETE FROM events WHERE {NAMES_USER} RETURNING deliveries_left)
         SELECT count(*), coalesce(sum(deliveries_left), 0)::int8 FROM e"
    )
}

/// Answers `(dead deliveries, rejected inputs)`; `$2` the id as text.
fn delete_dead() -> String {
    format!(
        "WITH d AS (
            DELETE FROM dead_letters WHERE
                (kind = 'delivery' AND {NAMES_USER})
             OR (kind = 'rejected' AND (strpos(body, $2) > 0
                 OR jsonb_path_exists(coalesce(meta, '{{}}'), '$.* ? (@ == $id)', $1::text::jsonb)))
            RETURNING kind
        )
        SELECT count(*) FILTER (WHERE kind = 'delivery'), count(*) FILTER (WHERE kind = 'rejected')
        FROM d"
    )
}

const CACHE: &str = "SELECT key, value FROM state WHERE starts_with(key, $1) FOR UPDATE";
const DELETE_KEYS: &str = "DELETE FROM state WHERE key = ANY($1)";

pub(crate) async fn forget(pool: &Pool, user_id: &str) -> Result<ForgetReport, QueueError> {
    check_user_id(user_id).map_err(|why| QueueError::io("forgetting a user", why))?;
    let vars = serde_json::json!({ "id": user_id }).to_string();
    let mut client = client(pool).await?;
    let e = |e: tokio_postgres::Error| queue_error("forgetting a user", &e);
    let tx = client.transaction().await.map_err(e)?;
    let row = tx
        .query_one(delete_events().as_str(), &[&vars])
        .await
        .map_err(e)?;
    let (events, dropped): (i64, i64) = (row.try_get(0).map_err(e)?, row.try_get(1).map_err(e)?);
    let row = tx
        .query_one(delete_dead().as_str(), &[&vars, &user_id])
        .await
        .map_err(e)?;
    let (dead, rejected): (i64, i64) = (row.try_get(0).map_err(e)?, row.try_get(1).map_err(e)?);
    let mut keys: Vec<String> = Vec::new();
    for row in tx.query(CACHE, &[&CACHE_PREFIX]).await.map_err(e)? {
        let key: String = row.try_get(0).map_err(e)?;
        let value: Vec<u8> = row.try_get(1).map_err(e)?;
        if cache_entry_names_user(&key, &value, user_id) {
            keys.push(key);
        }
    }
    if !keys.is_empty() {
        tx.execute(DELETE_KEYS, &[&keys]).await.map_err(e)?;
    }
    tx.commit().await.map_err(e)?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(ForgetReport {
        cache_entries: keys.len() as u64,
        events: n(events),
        deliveries_dropped: n(dropped),
        dead_letters: n(dead),
        rejected: n(rejected),
    })
}
