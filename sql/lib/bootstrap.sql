-- bootstrap.sql: the schema and its version table, which every migration
-- needs before it can ask whether it has been applied. Included by install.sql.

BEGIN;
-- Same lock as apply.sql: two installers must not race on CREATE SCHEMA or
-- CREATE TABLE (IF NOT EXISTS is not atomic against a concurrent creator).
SELECT pg_advisory_xact_lock(hashtext('outbox'), hashtext('install')) AS outbox_locked \gset
CREATE SCHEMA IF NOT EXISTS outbox;
CREATE TABLE IF NOT EXISTS outbox.schema_version (
    version     int PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE outbox.schema_version IS
    'Migrations of sql/migrations/ applied to this database, one row each (see docs/sql.md).';
COMMIT;
