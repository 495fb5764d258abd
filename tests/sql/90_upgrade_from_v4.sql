-- 90_upgrade_from_v4.sql: a version 4 outbox in use, upgraded in place by
-- install.sql (run.sh prepared it in a second database, outbox_pgtap_v4,
-- and kept copies of what it had in its schema public): rows, their ids,
-- transaction ids and contents, the relay's state, the id sequence, the
-- NOTIFY trigger and every grant survive; the rows sit in the partitions
-- of their blocks; the upgraded outbox works (a new row, a NOTIFY, a
-- relayed partition truncated). Checked through dblink. Autocommit.
SELECT plan(19);

SELECT dblink_connect('v4', current_setting('outbox_test.v4_connstr'));
-- What the upgraded database answers to one query.
CREATE FUNCTION pg_temp.v4_bigint(p_sql text) RETURNS bigint LANGUAGE sql AS $$
    SELECT t.v FROM dblink('v4', p_sql) AS t(v bigint);
$$;
CREATE FUNCTION pg_temp.v4_text(p_sql text) RETURNS text LANGUAGE sql AS $$
    SELECT t.v FROM dblink('v4', p_sql) AS t(v text);
$$;

SELECT is(pg_temp.v4_bigint('SELECT version FROM public.v4_version'), 4::bigint,
          '(the database was at schema version 4 before install.sql)');
SELECT is(pg_temp.v4_bigint('SELECT outbox.version()'), 7::bigint, 'after install.sql it is at version 7');
SELECT is(pg_temp.v4_text('SELECT string_agg(version::text, '','' ORDER BY version) FROM outbox.schema_version'),
          '1,2,3,4,5,6,7', '... with every version recorded once');

-- The rows -------------------------------------------------------------------------------
SELECT is(pg_temp.v4_bigint('SELECT count(*) FROM public.v4_event'), 12::bigint, '(12 rows before)');
SELECT results_eq(
    $$SELECT * FROM dblink('v4', 'SELECT id, txid::text, topic::text, key, payload, headers::text, created_at
                                  FROM outbox.event ORDER BY id')
               AS t(id bigint, txid text, topic text, key bytea, payload bytea, headers text, created_at timestamptz)$$,
    $$SELECT * FROM dblink('v4', 'SELECT id, txid::text, topic::text, key, payload, headers::text, created_at
                                  FROM public.v4_event ORDER BY id')
               AS t(id bigint, txid text, topic text, key bytea, payload bytea, headers text, created_at timestamptz)$$,
    'every row is kept: the same ids, transaction ids, topics, keys, payloads, headers and times');
SELECT results_eq(
    $$SELECT * FROM dblink('v4', 'SELECT tableoid::regclass::text, id / 65536, count(*)
                                  FROM outbox.event GROUP BY 1, 2 ORDER BY 1, 2')
               AS t(part text, block bigint, n bigint)$$,
    $$VALUES ('outbox.event_p0', 0::bigint, 6::bigint), ('outbox.event_p1', 1, 4), ('outbox.event_p1', 9, 2)$$,
    '... each in the partition of its block (blocks 0, 1 and 9)');
SELECT is(pg_temp.v4_bigint($$SELECT count(*) FROM pg_class
                              WHERE relnamespace = 'outbox'::regnamespace AND relname LIKE 'event\_v4%'$$),
          0::bigint, 'the old table, its sequence and indexes are gone');

-- The relay's state and the id sequence ---------------------------------------------------
SELECT results_eq(
    $$SELECT * FROM dblink('v4', 'SELECT s::text FROM outbox.relay_state AS s ORDER BY name') AS t(s text)$$,
    $$SELECT * FROM dblink('v4', 'SELECT s::text FROM public.v4_relay_state AS s ORDER BY name') AS t(s text)$$,
    'the relay''s state (lease, generation, position) is kept as it was');
SELECT results_eq(
    $$SELECT * FROM dblink('v4', 'SELECT last_value, is_called FROM outbox.event_id_seq') AS t(v bigint, c boolean)$$,
    $$SELECT * FROM dblink('v4', 'SELECT last_value, is_called FROM public.v4_seq') AS t(v bigint, c boolean)$$,
    'the id sequence goes on where it was');
SELECT is(pg_temp.v4_bigint($$SELECT outbox.publish('up.t', 'k', 'after')$$),
          pg_temp.v4_bigint('SELECT last_value + 1 FROM public.v4_seq'),
          'publish() (rebound to the new table) gives the next id, above every old one');
SELECT ok(pg_temp.v4_bigint('SELECT last_value FROM public.v4_seq')
          >= pg_temp.v4_bigint('SELECT max(id) FROM public.v4_event'), '(the old ones end at the sequence)');

-- Grants and the NOTIFY trigger -----------------------------------------------------------
SELECT ok(pg_temp.v4_bigint('SELECT count(*) FROM public.v4_acl') > 5, '(the table had grants to copy)');
SELECT set_eq(
    $$SELECT * FROM dblink('v4', 'SELECT * FROM public.event_acl()')
               AS t(obj text, grantee text, privilege text, grantable boolean)$$,
    $$SELECT * FROM dblink('v4', 'SELECT * FROM public.v4_acl')
               AS t(obj text, grantee text, privilege text, grantable boolean)$$,
    'every grant on the table, its columns and its sequence is kept (the writer''s, the relay''s, an operator''s)');
SELECT results_eq(
    $$SELECT * FROM dblink('v4', 'SELECT tgname::text, tgfoid::regproc::text, tgtype & 1 = 0, tgtype & 4 = 4,
                                         tgenabled::text
                                  FROM pg_trigger WHERE tgrelid = ''outbox.event''::regclass AND NOT tgisinternal')
               AS t(name text, fn text, per_statement boolean, on_insert boolean, enabled text)$$,
    $$VALUES ('event_notify', 'outbox.notify_event', true, true, 'O')$$,
    'the NOTIFY trigger is on the new table as it was on the old one');
SELECT is(pg_temp.v4_text('SELECT outbox.notify_enabled()::text'), 'true', '... and notify_enabled() says so');
\ir lib/notifications.sql
SELECT dblink_connect('listener', current_setting('outbox_test.v4_connstr')),
       dblink_connect('marker', current_setting('outbox_test.v4_connstr'));
SELECT dblink_exec('listener', 'LISTEN outbox_event');
SELECT pg_temp.v4_bigint($$SELECT outbox.publish('up.t', 'k', 'notify')$$);
SELECT is(pg_temp.notifications('listener'), 1, '... and a row committed there sends its notification');

-- The upgraded outbox rotates ---------------------------------------------------------------
-- The relay relays every row now (the rows kept by the old retention too):
-- with retention 0 the partitions holding them are truncated.
SELECT is(pg_temp.v4_bigint($$SELECT outbox.advance('up', 1, 2, pg_current_snapshot()::text, NULL, 0)$$),
          1::bigint, 'an advance over every row truncates the partition of the finished blocks');
SELECT is(pg_temp.v4_bigint($$SELECT outbox.cleanup('up')$$), 1::bigint,
          '... and cleanup() the one of the block that still receives ids');
SELECT is(pg_temp.v4_bigint('SELECT count(*) FROM outbox.event'), 0::bigint, '... nothing is left');

SELECT dblink_disconnect('listener'), dblink_disconnect('marker'), dblink_disconnect('v4');
SELECT * FROM finish();
