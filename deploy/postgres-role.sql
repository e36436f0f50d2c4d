-- The database side of `queue.engine: postgres` (README, "Running several gateways").
-- Run as a superuser or the database's owner, e.g. psql -d postgres -f postgres-role.sql.
-- Replace the passwords; keep them in /etc/herald/herald.env (HERALD_PG_PASSWORD), never in
-- routes.yaml.

-- The owner of the schema: `herald migrate` runs as this role (it creates and alters tables).
CREATE ROLE herald_owner LOGIN PASSWORD 'change-me-owner';
-- The gateways' role: reads and writes rows, creates nothing.
CREATE ROLE herald LOGIN PASSWORD 'change-me';

CREATE DATABASE herald OWNER herald_owner;
\connect herald
CREATE SCHEMA herald AUTHORIZATION herald_owner;
ALTER ROLE herald_owner IN DATABASE herald SET search_path = herald;
ALTER ROLE herald IN DATABASE herald SET search_path = herald;
REVOKE ALL ON SCHEMA public FROM PUBLIC;

-- What a running gateway needs, on the tables the owner creates now and later.
GRANT USAGE ON SCHEMA herald TO herald;
ALTER DEFAULT PRIVILEGES FOR ROLE herald_owner IN SCHEMA herald
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO herald;
ALTER DEFAULT PRIVILEGES FOR ROLE herald_owner IN SCHEMA herald
    GRANT USAGE, SELECT ON SEQUENCES TO herald;
-- Tables created before these defaults (an existing install): grant them once more.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA herald TO herald;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA herald TO herald;

-- Rows are deleted all day (delivered deliveries, swept events): vacuum these tables early
-- rather than at 20% dead rows, so they do not bloat. Run after the first `herald migrate`.
-- ALTER TABLE herald.deliveries SET (autovacuum_vacuum_scale_factor = 0.01,
--     autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 1);
-- ALTER TABLE herald.events SET (autovacuum_vacuum_scale_factor = 0.02,
--     autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 1);
