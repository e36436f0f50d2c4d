//! The statements of the postgres engine (docs/architecture.md §10.2, schema v1). Times go
//! in and out as milliseconds since the epoch (`int8`), JSON columns as text, so the driver
//! needs no chrono or serde feature.

/// Commits a batch's events in one statement (docs/architecture.md §10.2, "the writer"):
/// `$1`–`$6` one element per event (source, id, bytes, JSON, routed, deliveries), stored
/// in that order unless `(source, event_id)` is there already; `$7`–`$10` one element per
/// delivery (the event's source and id, route, sink). Answers the seq of each event stored;
/// one not answered is a duplicate. The caller leaves out a key repeated in the batch.
pub const APPEND_MANY: &str = "WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::bool[], $6::int4[])
        WITH ORDINALITY AS i(source, event_id, size, event, routed, deliveries, ord)
), e AS (
    INSERT INTO events (source, event_id, size, event, routed, deliveries_left)
    SELECT source, event_id, size, event, routed, deliveries FROM input ORDER BY ord
    ON CONFLICT (source, event_id) DO NOTHING
    RETURNING seq, source, event_id, routed
), d AS (
    INSERT INTO deliveries (seq, route, sink)
    SELECT e.seq, r.route, r.sink
    FROM unnest($7::text[], $8::text[], $9::text[], $10::text[]) AS r(source, event_id, route, sink)
    JOIN e ON e.source = r.source AND e.event_id = r.event_id
), u AS (
    INSERT INTO unrouted (seq) SELECT seq FROM e WHERE NOT routed
)
SELECT seq, source, event_id FROM e";

/// The `Delivered` outcomes of a batch in one statement (`$1`–`$3` one element per
/// delivery), each applied only where the claim is `$4`'s or nobody's.
pub const DELIVERED_MANY: &str = "WITH d AS (
    DELETE FROM deliveries d
    USING unnest($1::text[], $2::int8[], $3::text[]) AS k(sink, seq, route)
    WHERE d.sink = k.sink AND d.seq = k.seq AND d.route = k.route
      AND (d.holder = $4 OR d.holder IS NULL)
    RETURNING d.seq
), c AS (
    SELECT seq, count(*)::int4 AS n FROM d GROUP BY seq
)
UPDATE events e SET deliveries_left = e.deliveries_left - c.n FROM c WHERE e.seq = c.seq";

/// Keeps an undecodable input with the dead letters.
pub const REJECT: &str = "INSERT INTO dead_letters (kind, reason, source, received, meta, body)
    VALUES ('rejected', $1, $2, to_timestamp($3::float8 / 1000), $4::text::jsonb, $5)";

/// Wakes the workers of the sinks in `$1` on every gateway (LISTEN/NOTIFY, delivered at
/// COMMIT). A payload is a sink's name, or the name, a space and the lowest seq of the
/// deliveries just committed for it (where that sink's scan may begin instead of at the
/// start, `Queue::wake_hint`), or [`UNROUTED`].
pub const NOTIFY: &str = "SELECT pg_notify('herald_deliveries', s) FROM unnest($1::text[]) AS s";
pub const CHANNEL: &str = "herald_deliveries";
/// The payload on `CHANNEL` that wakes the enrichment task: unrouted events were committed
/// or released (a sink's name cannot contain `/`).
pub const UNROUTED: &str = "/unrouted";

// Outcomes (`record_then`): applied only where the claim is still the recorder's, or nobody's
// (`$4`, docs/architecture.md §10.1): a holder whose lease ran out and was taken over
// changes nothing.

/// `$5` next attempt (ms), `$6` a JSON array of the one failed attempt; keeps the first error
/// and the latest ones, at most 20, as the local engine does.
pub const RETRY: &str = "UPDATE deliveries SET
    attempts = attempts + 1,
    next_at = to_timestamp($5::float8 / 1000),
    errors = CASE WHEN jsonb_array_length(errors) >= 20
                  THEN (errors - 1) || $6::text::jsonb
                  ELSE errors || $6::text::jsonb END,
    holder = NULL,
    lease_until = NULL
WHERE sink = $1 AND seq = $2 AND route = $3 AND (holder = $4 OR holder IS NULL)";

/// `$5` reason, `$6` a JSON array of the last attempt (or empty).
pub const DEAD: &str = "WITH d AS (
    DELETE FROM deliveries
    WHERE sink = $1 AND seq = $2 AND route = $3 AND (holder = $4 OR holder IS NULL)
    RETURNING seq, route, sink, errors
), u AS (
    UPDATE events SET deliveries_left = deliveries_left - 1
    WHERE seq IN (SELECT seq FROM d)
    RETURNING seq, event
)
INSERT INTO dead_letters (kind, route, sink, reason, attempts, event)
SELECT 'delivery', d.route, d.sink, $5, d.errors || $6::text::jsonb, u.event
FROM d JOIN u ON u.seq = d.seq";

/// A page of a sink's pending deliveries after `($2, $3)` in `(seq, route)` order, leaving
/// out those under another holder's running lease and those locked right now (`SKIP
/// LOCKED`); the due ones are claimed for `$4` until now + `$6` ms. Answers every row of the
/// page, with whether it was claimed.
pub const SCAN: &str = "WITH page AS (
    SELECT sink, seq, route, attempts, errors, next_at FROM deliveries
    WHERE sink = $1 AND (seq, route) > ($2, $3)
      AND (lease_until IS NULL OR lease_until < now())
    ORDER BY seq, route
    LIMIT $5
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE deliveries d SET holder = $4, lease_until = now() + $6::int8 * interval '1 millisecond'
    FROM page
    WHERE d.sink = page.sink AND d.seq = page.seq AND d.route = page.route
      AND page.next_at <= now()
    RETURNING d.seq, d.route
)
SELECT p.seq, p.route, p.attempts, p.errors::text,
       (extract(epoch FROM p.next_at) * 1000)::int8,
       (extract(epoch FROM e.committed_at) * 1000)::int8,
       e.event, c.seq IS NOT NULL
FROM page p
JOIN events e ON e.seq = p.seq
LEFT JOIN claimed c ON c.seq = p.seq AND c.route = p.route
ORDER BY p.seq, p.route";

pub const RENEW: &str = "UPDATE deliveries d
SET lease_until = now() + $2::int8 * interval '1 millisecond'
FROM unnest($3::text[], $4::int8[], $5::text[]) AS k(sink, seq, route)
WHERE d.sink = k.sink AND d.seq = k.seq AND d.route = k.route AND d.holder = $1
RETURNING d.sink, d.seq, d.route";

pub const RELEASE: &str = "UPDATE deliveries d SET holder = NULL, lease_until = NULL
FROM unnest($2::text[], $3::int8[], $4::text[]) AS k(sink, seq, route)
WHERE d.sink = k.sink AND d.seq = k.seq AND d.route = k.route AND d.holder = $1";

/// Every claim of a gateway, given up at close so the others need not wait for the lease.
pub const RELEASE_ALL: &str =
    "UPDATE deliveries SET holder = NULL, lease_until = NULL WHERE holder = $1";

/// A removed sink's backlog to the dead letters, in one statement.
pub const BURY: &str = "WITH d AS (
    DELETE FROM deliveries WHERE sink = $1 RETURNING seq, route, sink, errors
), c AS (
    SELECT seq, count(*)::int4 AS n FROM d GROUP BY seq
), u AS (
    UPDATE events e SET deliveries_left = e.deliveries_left - c.n
    FROM c WHERE e.seq = c.seq
    RETURNING e.seq, e.event
)
INSERT INTO dead_letters (kind, route, sink, reason, attempts, event)
SELECT 'delivery', d.route, d.sink, $2, d.errors, u.event FROM d JOIN u ON u.seq = d.seq";

/// Undelivered events and their bytes: the backlog `max_events`/`max_bytes` limit.
pub const BACKLOG: &str = "SELECT count(*), coalesce(sum(size), 0)::int8
    FROM events WHERE NOT routed OR deliveries_left > 0";
pub const PENDING: &str = "SELECT sink, count(*) FROM deliveries GROUP BY sink";
pub const DEAD_COUNT: &str = "SELECT count(*) FROM dead_letters";

/// Delivered events past the retention, at most 10,000 at a time (their deliveries are gone;
/// the duplicate key goes with the row).
pub const SWEEP: &str = "DELETE FROM events WHERE seq IN (
    SELECT seq FROM events
    WHERE routed AND deliveries_left = 0
      AND committed_at < now() - $1::int8 * interval '1 millisecond'
    ORDER BY committed_at
    LIMIT 10000
)";

/// Takes the leadership `$1` for `$2` when it is free, expired or already `$2`'s.
pub const LEAD: &str = "INSERT INTO leaders (name, holder, until)
VALUES ($1, $2, now() + $3::int8 * interval '1 millisecond')
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
WHERE leaders.holder = EXCLUDED.holder OR leaders.until < now()
RETURNING (extract(epoch FROM until) * 1000)::int8";
pub const LEADER: &str =
    "SELECT holder, (extract(epoch FROM until) * 1000)::int8 FROM leaders WHERE name = $1";
pub const RESIGN: &str = "DELETE FROM leaders WHERE name = $1 AND holder = $2";
pub const RESIGN_ALL: &str = "DELETE FROM leaders WHERE holder = $1";

/// Per sink, the earliest `next_at` (ms) of the deliveries attempted at least once.
pub const NEXT_RETRIES: &str = "SELECT sink, (extract(epoch FROM min(next_at)) * 1000)::int8
FROM deliveries WHERE attempts > 0 GROUP BY sink";

/// The registered gateways: holder, version, start and last seen (ms), most recent first.
pub const GATEWAYS: &str = "SELECT holder, version, (extract(epoch FROM started_at) * 1000)::int8,
       (extract(epoch FROM last_seen) * 1000)::int8
FROM gateways ORDER BY last_seen DESC, holder LIMIT 100";

/// Registers (or refreshes) a gateway.
pub const REGISTER: &str = "INSERT INTO gateways (holder, config_fingerprint, sinks, version)
VALUES ($1, $2, $3, $4)
ON CONFLICT (holder) DO UPDATE SET config_fingerprint = EXCLUDED.config_fingerprint,
    sinks = EXCLUDED.sinks, version = EXCLUDED.version, last_seen = now()";
pub const SEEN: &str = "UPDATE gateways SET last_seen = now() WHERE holder = $1";

/// The sinks with pending deliveries that are not among `$1` (this gateway's), how many,
/// and the gateways seen within `$2` ms that have each.
pub const FOREIGN: &str = "SELECT d.sink, count(*)::int8,
       coalesce((SELECT array_agg(g.holder ORDER BY g.holder) FROM gateways g
                 WHERE d.sink = ANY(g.sinks)
                   AND g.last_seen > now() - $2::int8 * interval '1 millisecond'), '{}')
FROM deliveries d WHERE NOT (d.sink = ANY($1::text[]))
GROUP BY d.sink ORDER BY d.sink";

/// The gateways other than `$2` seen within `$3` ms that have the sink `$1`.
pub const OTHERS_WITH: &str = "SELECT holder FROM gateways
WHERE $1 = ANY(sinks) AND holder <> $2
  AND last_seen > now() - $3::int8 * interval '1 millisecond'
ORDER BY holder";

/// The dead letters a filter selects (`$1` ids or NULL, `$2` sink, `$3` route, `$4` before
/// in ms), oldest first.
pub const DEAD_LETTERS: &str = "SELECT id, (extract(epoch FROM created_at) * 1000)::int8, kind,
       route, sink, reason, attempts::text, event, source,
       (extract(epoch FROM received) * 1000)::int8, meta::text, body
FROM dead_letters
WHERE ($1::int8[] IS NULL OR id = ANY($1))
  AND ($2::text IS NULL OR sink = $2)
  AND ($3::text IS NULL OR route = $3)
  AND ($4::int8 IS NULL OR created_at < to_timestamp($4::float8 / 1000))
ORDER BY id";
pub const PURGE: &str = "DELETE FROM dead_letters
WHERE ($1::int8[] IS NULL OR id = ANY($1))
  AND ($2::text IS NULL OR sink = $2)
  AND ($3::text IS NULL OR route = $3)
  AND ($4::int8 IS NULL OR created_at < to_timestamp($4::float8 / 1000))";

// Replay: the event goes back into `events` (or the row still there within the retention is
// used: the duplicate key allows one row per event), with a fresh delivery.
pub const REPLAY_EVENT: &str = "INSERT INTO events (source, event_id, size, event)
VALUES ($1, $2, $3, $4) ON CONFLICT (source, event_id) DO NOTHING RETURNING seq";
pub const FIND_EVENT: &str = "SELECT seq FROM events WHERE source = $1 AND event_id = $2";
pub const REPLAY_DELIVERY: &str = "WITH d AS (
    INSERT INTO deliveries (seq, route, sink) VALUES ($1, $2, $3)
    ON CONFLICT DO NOTHING RETURNING seq
)
UPDATE events SET deliveries_left = deliveries_left + 1 WHERE seq IN (SELECT seq FROM d)";
pub const DELETE_DEAD: &str = "DELETE FROM dead_letters WHERE id = $1";

/// Records the overlap marker `$1` (the channel `$2`) unless one younger than `$3` ms is
/// there; answers whether it was recorded and the marker there (NULL when another
/// transaction's, committed after this statement began, is not visible to it yet).
pub const FIRST_CHANNEL: &str = "WITH ins AS (
    INSERT INTO state (key, value) VALUES ($1, $2)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
        WHERE state.updated_at < now() - $3::int8 * interval '1 millisecond'
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM ins), (SELECT value FROM state WHERE key = $1)";
/// The overlap markers older than an hour (no overlap window is longer).
pub const SWEEP_MARKERS: &str = "DELETE FROM state
WHERE starts_with(key, 'overlap/') AND updated_at < now() - interval '1 hour'";

pub const GET_STATE: &str = "SELECT value FROM state WHERE key = $1";
pub const PUT_STATE: &str = "INSERT INTO state (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()";
pub const DELETE_STATE: &str = "DELETE FROM state WHERE key = $1";
pub const LIST_STATE: &str = "SELECT key, value FROM state WHERE starts_with(key, $1) ORDER BY key";

// Unrouted events (docs/architecture.md §10.1, enrichment §11): committed by `APPEND` with
// `$5` false, claimed under a lease, routed exactly once by `ROUTE_*` in one transaction.

/// Claims up to `$2` unrouted events nobody holds (never claimed, released, or their lease
/// ran out), oldest first, for `$1` until now + `$3` ms. Answers each with its commit time,
/// event and the lease's end.
pub const CLAIM_UNROUTED: &str = "WITH c AS (
    SELECT seq FROM unrouted
    WHERE holder IS NULL OR lease_until IS NULL OR lease_until < now()
    ORDER BY seq
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE unrouted SET holder = $1, lease_until = now() + $3::int8 * interval '1 millisecond'
    FROM c WHERE unrouted.seq = c.seq
    RETURNING unrouted.seq, unrouted.lease_until
)
SELECT u.seq, (extract(epoch FROM e.committed_at) * 1000)::int8, e.event,
       (extract(epoch FROM u.lease_until) * 1000)::int8
FROM u JOIN events e ON e.seq = u.seq
ORDER BY u.seq";

/// Extends `$1`'s claims on `$3` by `$2` ms; answers those still held (a lease that ran out
/// but was not taken is still the holder's, as on the local engine).
pub const RENEW_UNROUTED: &str = "UPDATE unrouted
SET lease_until = now() + $2::int8 * interval '1 millisecond'
WHERE seq = ANY($3) AND holder = $1
RETURNING seq";

pub const RELEASE_UNROUTED: &str =
    "UPDATE unrouted SET holder = NULL, lease_until = NULL WHERE seq = ANY($2) AND holder = $1";
pub const RELEASE_ALL_UNROUTED: &str =
    "UPDATE unrouted SET holder = NULL, lease_until = NULL WHERE holder = $1";

/// The unrouted row of `$1`, locked for the routing transaction, and whether its lease runs.
/// No row: routed already (or swept: an unrouted event never is).
pub const ROUTE_LOCK: &str = "SELECT holder, coalesce(lease_until > now(), false)
    FROM unrouted WHERE seq = $1 FOR UPDATE";

/// Routes `$1`: off the unrouted events, the event replaced by `$2` (of `$3` bytes) when
/// given, with its deliveries (`$4` routes, `$5` sinks, distinct pairs).
pub const ROUTE_LATER: &str = "WITH gone AS (
    DELETE FROM unrouted WHERE seq = $1 RETURNING seq
), e AS (
    UPDATE events SET routed = true,
        event = coalesce($2, event),
        size = coalesce($3, size),
        deliveries_left = cardinality($5::text[])
    WHERE seq IN (SELECT seq FROM gone)
    RETURNING seq
)
INSERT INTO deliveries (seq, route, sink)
SELECT e.seq, r.route, r.sink FROM e, unnest($4::text[], $5::text[]) AS r(route, sink)";

/// One event's JSON (for the tap after `ROUTE_LATER`).
pub const EVENT: &str = "SELECT event FROM events WHERE seq = $1";
