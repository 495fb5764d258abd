-- apply.sql: apply migration :migration (file migrations/:migration.sql,
-- version = its leading number) unless outbox.schema_version already has it.
-- Included by install.sql once per migration, with :migration and
-- :description set.

BEGIN;
-- Serializes installers; transaction-scoped, so it is released by COMMIT and
-- never left behind in a pooled session.
SELECT pg_advisory_xact_lock(hashtext('outbox'), hashtext('install')) AS outbox_locked \gset
-- Asked after taking the lock: a concurrent installer may just have applied it.
SELECT NOT EXISTS (
           SELECT FROM outbox.schema_version
           WHERE version = split_part(:'migration', '_', 1)::int
       ) AS outbox_apply \gset
\if :outbox_apply
\ir ../migrations/:migration.sql
INSERT INTO outbox.schema_version (version, description)
VALUES (split_part(:'migration', '_', 1)::int, :'description');
\endif
COMMIT;
