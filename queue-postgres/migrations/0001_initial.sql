-- Herald's queue on PostgreSQL, schema version 1 (docs/architecture.md §10, "The postgres
-- schema"). Every table is shared by all the gateways pointed at this database. Times are
-- `timestamptz` from the database's clock (`now()`), so the gateways' clocks do not have to
-- agree for leases.

-- One row per committed event. `(source, event_id)` is the duplicate key, shared by every
-- gateway: a second commit of the same event finds the row. Kept `queue.retention` after it
-- was delivered (the duplicate window), then swept.
CREATE TABLE events (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source          text        NOT NULL,
    event_id        text        NOT NULL,
    committed_at    timestamptz NOT NULL DEFAULT now(),
    -- bytes of `event`, counted for queue.max_bytes
    size            integer     NOT NULL CHECK (size >= 0),
    -- the CloudEvents JSON exactly as committed: sinks send these bytes
    event           text        NOT NULL,
    -- false while the event waits to be routed (enrichment, §11): see `unrouted`
    routed          boolean     NOT NULL DEFAULT true,
    -- deliveries not yet ended; the event is undelivered while > 0 or not routed
    deliveries_left integer     NOT NULL DEFAULT 0 CHECK (deliveries_left >= 0),
    CONSTRAINT events_duplicate_key UNIQUE (source, event_id)
);
-- the sweep: delivered events by age
CREATE INDEX events_delivered ON events (committed_at) WHERE routed AND deliveries_left = 0;
-- backpressure and stats: undelivered events
CREATE INDEX events_undelivered ON events (seq) WHERE NOT routed OR deliveries_left > 0;

-- Events committed unrouted, and who holds them while they are routed (claim_unrouted,
-- route_later). The row goes when the event is routed, in the same transaction.
CREATE TABLE unrouted (
    seq         bigint PRIMARY KEY REFERENCES events (seq) ON DELETE CASCADE,
    holder      text,
    lease_until timestamptz
);

-- One row per pending delivery of an event to a sink through a route. Claimed by a gateway
-- for `queue.lease` (`holder`, `lease_until`) while an attempt runs; the row goes when the
-- delivery ends (delivered, or moved to the dead letters).
CREATE TABLE deliveries (
    seq         bigint      NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    route       text        NOT NULL,
    sink        text        NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- the last attempts' errors ({at, error} objects, at most 20), for the dead letter
    errors      jsonb       NOT NULL DEFAULT '[]',
    -- not before this time
    next_at     timestamptz NOT NULL DEFAULT now(),
    holder      text,
    lease_until timestamptz,
    PRIMARY KEY (sink, seq, route)
);
-- a sink's due deliveries (scan_pending)
CREATE INDEX deliveries_due ON deliveries (sink, next_at);

-- Dead letters: deliveries that ran out of attempts or failed for good (`kind = 'delivery'`,
-- with the event as it was), and inputs a source could not decode (`kind = 'rejected'`,
-- with the body as received). One id space, as `herald dlq` lists them together.
CREATE TABLE dead_letters (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    kind       text        NOT NULL CHECK (kind IN ('delivery', 'rejected')),
    -- delivery: the route and sink, why it stopped, its attempts ({at, error}) and the event
    route      text,
    sink       text,
    reason     text        NOT NULL,
    attempts   jsonb       NOT NULL DEFAULT '[]',
    event      text,
    -- rejected: the source, when it was received, request metadata and the body
    source     text,
    received   timestamptz,
    meta       jsonb,
    body       text,
    CHECK (kind <> 'delivery' OR (route IS NOT NULL AND sink IS NOT NULL AND event IS NOT NULL)),
    CHECK (kind <> 'rejected' OR (source IS NOT NULL AND body IS NOT NULL))
);
CREATE INDEX dead_letters_sink ON dead_letters (sink, route) WHERE kind = 'delivery';

-- Small durable values of other parts: the Google lifecycle's registrations and channels,
-- which hold channel tokens.
CREATE TABLE state (
    key        text PRIMARY KEY,
    value      bytea       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One leader per name among the gateways (the Google lifecycle, the sweep): taken when free,
-- expired or already the caller's (try_lead), renewed by the leader before `until`.
CREATE TABLE leaders (
    name   text PRIMARY KEY,
    holder text        NOT NULL,
    until  timestamptz NOT NULL
);

-- The gateways sharing this queue: each records the fingerprint of its config and the sinks
-- it has, and refreshes `last_seen`; deliveries to a sink a gateway lacks are left to those
-- that have it.
CREATE TABLE gateways (
    holder             text PRIMARY KEY,
    config_fingerprint text        NOT NULL,
    sinks              text[]      NOT NULL DEFAULT '{}',
    version            text        NOT NULL,
    started_at         timestamptz NOT NULL DEFAULT now(),
    last_seen          timestamptz NOT NULL DEFAULT now()
);
