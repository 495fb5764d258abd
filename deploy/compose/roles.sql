-- roles.sql: the login roles of the compose example, after sql/install.sql,
-- as the role that installed the schema:
--
--     psql -v ON_ERROR_STOP=1 -v relay_password=... -v writer_password=... \
--          -f deploy/compose/roles.sql
--
-- sql/install.sql creates two NOLOGIN roles that hold the privileges:
-- outbox_relay (what the relay needs, nothing more) and outbox_writer (insert
-- events). Logins are members of them: "relay" for the relay processes, "app"
-- for the example application. Running this again only resets the passwords.
-- deploy/README.md ("Install the schema") gives the same steps for production.

\set ON_ERROR_STOP on

SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'relay') AS create_relay,
       NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'app') AS create_app \gset
\if :create_relay
CREATE ROLE relay LOGIN;
\endif
\if :create_app
CREATE ROLE app LOGIN;
\endif
ALTER ROLE relay PASSWORD :'relay_password';
ALTER ROLE app PASSWORD :'writer_password';
GRANT outbox_relay TO relay;
GRANT outbox_writer TO app;

-- Wake the relay with NOTIFY on insert instead of waiting for its next poll
-- (batch.notify = true in compose/relay.conf). Off by default: NOTIFY
-- serializes committing writers; docs/sql.md has the measurements.
SELECT outbox.notify_enable() AS notify_trigger_created;
