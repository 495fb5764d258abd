-- install.sql: install or upgrade the outbox schema.
--
--     psql -v ON_ERROR_STOP=1 -d "$OUTBOX_PG_URL" -f sql/install.sql
--
-- Applies, in order, every migration of sql/migrations/ that the database has
-- not recorded in outbox.schema_version yet; each one in its own transaction,
-- under a transaction-scoped advisory lock, so two installers running at once
-- apply each migration exactly once. Running it again is harmless. Paths are
-- relative to this file (\ir), so it works from any current directory.
--
-- Upgrade convention (docs/sql.md, "Install and upgrade"): a released
-- migration is never edited; a change is a new file NNNN_name.sql with the next
-- number, listed below, that also redefines outbox.version() to return NNNN.

\set ON_ERROR_STOP on
\set QUIET on
SET client_min_messages = warning;

\ir lib/bootstrap.sql

\set migration 0001_initial
\set description 'outbox.event, relay_state, lease, windows, position, roles'
\ir lib/apply.sql

\set migration 0002_advance_idempotent_reserved_topics
\set description 'advance() idempotent for the stored position; reserved topics (OR006)'
\ir lib/apply.sql

\set migration 0003_wake_on_demand
\set description 'NOTIFY trigger notifies only while no relay is awake (advisory lock)'
\ir lib/apply.sql

\set migration 0004_writer_fast_path
\set description 'topic and headers rules as domains; reserved topics as a domain constraint (cheaper writes)'
\ir lib/apply.sql

\set migration 0005_partitioned_outbox
\set description 'outbox.event partitioned by id blocks; relayed rows leave by TRUNCATE of a whole partition'
\ir lib/apply.sql

\set migration 0006_read_page
\set description 'read_page(): a window''s page read once, byte limit on the way, window_end flag'
\ir lib/apply.sql

\set migration 0007_four_partitions
\set description 'outbox.event in four partitions instead of eight (less per-statement work for the relay)'
\ir lib/apply.sql

\unset migration
\unset description
SELECT format('outbox schema at version %s', outbox.version()) AS installed;
