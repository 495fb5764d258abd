-- 60_privileges.sql: what outbox_writer and outbox_relay may and may not do.
BEGIN;
SELECT plan(57);

-- Run a statement as a role; the role is back to ours afterwards, also when
-- the statement fails (the caller's exception handler rolls the SET back).
CREATE FUNCTION pg_temp.as_role(p_role text, p_sql text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SET LOCAL ROLE %I', p_role);
    EXECUTE p_sql;
    RESET ROLE;
END
$$;
CREATE FUNCTION pg_temp.relay_count(p_sql text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_n bigint;
BEGIN
    SET LOCAL ROLE outbox_relay;
    EXECUTE p_sql INTO v_n;
    RESET ROLE;
    RETURN v_n;
END
$$;
CREATE FUNCTION pg_temp.writer(p_sql text) RETURNS text LANGUAGE sql AS $$
    SELECT format('SELECT pg_temp.as_role(%L, %L)', 'outbox_writer', p_sql);
$$;
CREATE FUNCTION pg_temp.relay(p_sql text) RETURNS text LANGUAGE sql AS $$
    SELECT format('SELECT pg_temp.as_role(%L, %L)', 'outbox_relay', p_sql);
$$;

-- The grants, exactly ------------------------------------------------------------
SELECT table_privs_are('outbox', 'event', 'outbox_relay', ARRAY['SELECT'],
                       'outbox_relay may only SELECT outbox.event (deletes go through advance/purge)');
SELECT table_privs_are('outbox', 'event', 'outbox_writer', ARRAY[]::text[],
                       'outbox_writer has no table-wide privilege on outbox.event...');
SELECT results_eq(
    $$SELECT a.attname::text COLLATE "default",
             has_column_privilege('outbox_writer', 'outbox.event', a.attname, 'INSERT'),
             has_column_privilege('outbox_writer', 'outbox.event', a.attname, 'SELECT')
      FROM pg_attribute AS a
      WHERE a.attrelid = 'outbox.event'::regclass AND a.attnum > 0 ORDER BY a.attnum$$,
    $$VALUES ('id', false, true), ('txid', false, false), ('topic', true, false), ('key', true, false),
             ('payload', true, false), ('headers', true, false), ('created_at', false, false)$$,
    '... but may INSERT the four data columns and read back only id');
SELECT table_privs_are('outbox', 'relay_state', 'outbox_relay', ARRAY[]::text[],
                       'outbox_relay has no direct privilege on relay_state');
SELECT table_privs_are('outbox', 'relay_state', 'outbox_writer', ARRAY[]::text[],
                       'outbox_writer has no privilege on relay_state');
SELECT table_privs_are('outbox', 'relay_state', 'public', ARRAY[]::text[], 'nor has PUBLIC');
SELECT table_privs_are('outbox', 'event', 'public', ARRAY[]::text[], 'PUBLIC has none on outbox.event');
SELECT schema_privs_are('outbox', 'outbox_relay', ARRAY['USAGE'], 'outbox_relay may use the schema');
SELECT schema_privs_are('outbox', 'outbox_writer', ARRAY['USAGE'], 'outbox_writer may use the schema');
SELECT set_eq(
    $$SELECT p.oid::regprocedure::text FROM pg_proc AS p
      WHERE p.pronamespace = 'outbox'::regnamespace
        AND has_function_privilege('outbox_relay', p.oid, 'EXECUTE')
        AND NOT has_function_privilege('public', p.oid, 'EXECUTE')$$,
    $$VALUES ('outbox.lease_acquire(text,text,integer,boolean)'), ('outbox.lease_renew(text,bigint,integer)'),
             ('outbox.lease_release(text,bigint)'), ('outbox.position_get(text)'), ('outbox.window_open(text)'),
             ('outbox.fetch_page(pg_snapshot,pg_snapshot,bigint,integer,bigint)'),
             ('outbox.read_page(pg_snapshot,pg_snapshot,bigint,integer,bigint)'),
             ('outbox.fetch_page_bounds(pg_snapshot,pg_snapshot,bigint,integer,bigint)'),
             ('outbox.advance(text,bigint,bigint,text,text,bigint,bigint)'), ('outbox.cleanup(text)'),
             ('outbox.purge(text,bigint,integer)'),
             ('outbox.lag(text)'), ('outbox.status(text)'), ('outbox.reserve_topics(text,bigint,text[])'),
             ('outbox.relay_awake(boolean)')$$,
    'outbox_relay may execute exactly the relay''s functions');
SELECT set_eq(
    $$SELECT p.oid::regprocedure::text FROM pg_proc AS p
      WHERE p.pronamespace = 'outbox'::regnamespace
        AND has_function_privilege('outbox_writer', p.oid, 'EXECUTE')
        AND NOT has_function_privilege('public', p.oid, 'EXECUTE')$$,
    $$VALUES ('outbox.publish(text,bytea,bytea,jsonb)'), ('outbox.publish(text,text,text,jsonb)'),
             ('outbox.publish(text,text,jsonb,jsonb)')$$,
    'outbox_writer may execute exactly the publish() overloads');

-- The writer ----------------------------------------------------------------------
SELECT lives_ok(pg_temp.writer($$INSERT INTO outbox.event (topic, key, payload, headers) VALUES ('t', 'k', 'p', '{"h": "v"}')$$),
                'the writer inserts a row with a plain INSERT');
SELECT lives_ok(pg_temp.writer($$INSERT INTO outbox.event (topic) VALUES ('t') RETURNING id$$),
                '... and may have its id back (RETURNING id)');
SELECT lives_ok(pg_temp.writer($$SELECT outbox.publish('t', 'k'::bytea, 'p'::bytea),
                                       outbox.publish('t', 'k', 'p'),
                                       outbox.publish('t', 'k', '{}'::jsonb, '{"h": "v"}')$$),
                'the writer may call every publish() overload');
SELECT throws_ok(pg_temp.writer($$INSERT INTO outbox.event (topic, headers) VALUES ('t', '{"h": 1}')$$),
                 '23514', NULL, 'the writer''s rows are checked like anyone''s');
SELECT throws_ok(pg_temp.writer($$INSERT INTO outbox.event (txid, topic) VALUES ('1', 't')$$),
                 '42501', NULL, 'the writer cannot choose txid (it could hide a row from every window)');
SELECT throws_ok(pg_temp.writer($$INSERT INTO outbox.event (topic, created_at) VALUES ('t', now())$$),
                 '42501', NULL, 'the writer cannot choose created_at');
SELECT throws_ok(pg_temp.writer($$SELECT payload FROM outbox.event$$), '42501', NULL,
                 'the writer cannot read the outbox');
SELECT throws_ok(pg_temp.writer($$UPDATE outbox.event SET topic = 'x'$$), '42501', NULL,
                 'the writer cannot update rows');
SELECT throws_ok(pg_temp.writer($$DELETE FROM outbox.event$$), '42501', NULL,
                 'the writer cannot delete rows');
SELECT throws_ok(pg_temp.writer($$SELECT * FROM outbox.relay_state$$), '42501', NULL,
                 'the writer cannot read relay_state');
SELECT throws_ok(pg_temp.writer($$SELECT * FROM outbox.lease_acquire('x', 'y', 1000)$$), '42501', NULL,
                 'the writer cannot take a lease');
SELECT throws_ok(pg_temp.writer($$SELECT * FROM outbox.fetch_page('1:1:', '2:2:', 0, 1, 1)$$), '42501', NULL,
                 'the writer cannot fetch pages');
SELECT throws_ok(pg_temp.writer($$SELECT * FROM outbox.read_page('1:1:', '2:2:', 0, 1, 1)$$), '42501', NULL,
                 'the writer cannot read pages');
SELECT throws_ok(pg_temp.writer($$SELECT outbox.advance('x', 1, 1, '1:1:', NULL, 0)$$), '42501', NULL,
                 'the writer cannot advance a position');
SELECT throws_ok(pg_temp.writer($$SELECT outbox.cleanup('x')$$), '42501', NULL,
                 'the writer cannot clean the outbox up');
SELECT throws_ok(pg_temp.writer($$TRUNCATE outbox.event_p0$$), '42501', NULL,
                 'the writer cannot truncate a partition');
SELECT lives_ok(pg_temp.writer($$SELECT outbox.version(), outbox.notify_enabled()$$),
                'anyone may ask the schema version and whether NOTIFY is on');
SELECT ok(outbox.notify_enable(), '(NOTIFY on)');
SELECT lives_ok(pg_temp.writer($$INSERT INTO outbox.event (topic) VALUES ('t')$$),
                'the writer''s inserts fire the NOTIFY trigger without any grant on it');
SELECT ok(outbox.notify_disable(), '(NOTIFY off)');

-- The relay -----------------------------------------------------------------------
-- Three rows of a long-committed transaction (id chosen by hand), in a
-- block of their own, tried by nobody yet.
\ir lib/partitions.sql
DELETE FROM outbox.event;
SELECT pg_temp.next_block() AS b \gset
INSERT INTO outbox.event (txid, topic) SELECT '5', 'old' FROM generate_series(1, 3);
SELECT pg_temp.untried();
SELECT lives_ok(pg_temp.relay($$SELECT * FROM outbox.lease_acquire('priv', 'relay-1', 60000)$$),
                'the relay takes its lease');
SELECT lives_ok(pg_temp.relay($$SELECT outbox.lease_renew('priv', 1, 60000), outbox.position_get('priv'),
                                       outbox.window_open('priv')$$),
                'renews it, reads its position, opens a window');
SELECT lives_ok(pg_temp.relay($$SELECT * FROM outbox.fetch_page('1:1:', pg_current_snapshot(), 0, 100, 1000000)$$),
                'fetches a page');
SELECT is(pg_temp.relay_count($$SELECT count(*) FROM outbox.fetch_page('1:1:', pg_current_snapshot(), 0, 100, 1000000)$$),
          3::bigint, '... with the rows in it');
SELECT is(pg_temp.relay_count($$SELECT count(*) FROM outbox.read_page('1:1:', pg_current_snapshot(), 0, 100, 1000000)$$),
          3::bigint, 'reads a page with read_page, as the relay of version 6 does');
SELECT pg_temp.next_block();  -- advance() leaves the block that still receives ids
SELECT is(pg_temp.relay_count($$SELECT outbox.advance('priv', 1, 1, pg_current_snapshot()::text, NULL, 0)$$),
          1::bigint, 'advances its position, which truncates the relayed rows'' partition');
SELECT is((SELECT count(*)::int FROM outbox.event), 0,
          '... all of them are gone (SECURITY DEFINER did the truncation)');
INSERT INTO outbox.event (txid, topic) SELECT '5', 'old' FROM generate_series(1, 3);
SELECT is(pg_temp.relay_count($$SELECT outbox.cleanup('priv')$$), 1::bigint,
          'the relay may call cleanup(), which truncates the partition of relayed rows too');
SELECT is((SELECT count(*)::int FROM outbox.event), 0, '... its rows are gone');
SELECT lives_ok(pg_temp.relay($$SELECT outbox.purge('priv', 0, 10), outbox.lag('priv'), outbox.status('priv')$$),
                'purges, reads lag and status');
SELECT lives_ok(pg_temp.relay($$SELECT outbox.lease_release('priv', 1)$$), 'releases its lease');
SELECT throws_ok(pg_temp.relay($$SELECT * FROM outbox.relay_state$$), '42501', NULL,
                 'the relay cannot read relay_state directly');
SELECT throws_ok(pg_temp.relay($$UPDATE outbox.relay_state SET generation = 99$$), '42501', NULL,
                 'the relay cannot write relay_state directly: only through the fenced functions');
SELECT throws_ok(pg_temp.relay($$DELETE FROM outbox.relay_state$$), '42501', NULL,
                 'the relay cannot delete relay_state rows');
SELECT throws_ok(pg_temp.relay($$DELETE FROM outbox.event$$), '42501', NULL,
                 'the relay cannot delete outbox rows directly');
SELECT throws_ok(pg_temp.relay(format('TRUNCATE %s', pg_temp.part_of(:b))), '42501', NULL,
                 'nor truncate a partition');
SELECT throws_ok(pg_temp.relay($$UPDATE outbox.event_partition SET done_block = 99$$), '42501', NULL,
                 'nor touch the partitions'' rotation state');
SELECT throws_ok(pg_temp.relay($$INSERT INTO outbox.event (topic) VALUES ('t')$$), '42501', NULL,
                 'the relay cannot insert outbox rows');
SELECT throws_ok(pg_temp.relay($$SELECT outbox.publish('t', 'k', 'v')$$), '42501', NULL,
                 'the relay cannot publish');
SELECT throws_ok(pg_temp.relay($$SELECT outbox.relay_forget('priv')$$), '42501', NULL,
                 'relay_forget() is for operators, not the relay');
SELECT throws_ok(pg_temp.relay($$SELECT * FROM outbox.position_reset('priv', 1, 'relay')$$), '42501', NULL,
                 'position_reset() is for operators');
SELECT throws_ok(pg_temp.relay($$SELECT outbox.notify_enable()$$), '42501', NULL,
                 'notify_enable() is for operators');
SELECT throws_ok(pg_temp.relay($$SELECT outbox.notify_disable()$$), '42501', NULL,
                 'notify_disable() is for operators');

-- Nobody ----------------------------------------------------------------------------
CREATE ROLE outbox_test_nobody NOLOGIN;
SELECT throws_ok($$SELECT pg_temp.as_role('outbox_test_nobody', 'SELECT outbox.publish(''t'', ''k'', ''v'')')$$,
                 '42501', NULL, 'a role without grants cannot publish');
SELECT throws_ok($$SELECT pg_temp.as_role('outbox_test_nobody', 'INSERT INTO outbox.event (topic) VALUES (''t'')')$$,
                 '42501', NULL, 'nor insert');
SELECT throws_ok($$SELECT pg_temp.as_role('outbox_test_nobody', 'SELECT outbox.window_open(''priv'')')$$,
                 '42501', NULL, 'nor call the relay''s functions');

SELECT * FROM finish();
ROLLBACK;
