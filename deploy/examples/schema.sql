-- schema.sql: the example application's own table, for examples/writer.sh.
-- Run as the schema owner after deploy/compose/roles.sql (role "app" exists).

\set ON_ERROR_STOP on

CREATE SCHEMA IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.orders (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
GRANT USAGE ON SCHEMA shop TO app;
GRANT SELECT, INSERT ON shop.orders TO app;
