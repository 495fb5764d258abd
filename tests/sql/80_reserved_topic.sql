-- 80_reserved_topic.sql: a relay reserves its own topics (checkpoints, dead
-- letters) with reserve_topics(), fenced by its generation; rows aimed at a
-- reserved topic are refused (OR006) by INSERT, publish() and UPDATE, in
-- any statement, whatever the topic is called.
BEGIN;
SELECT plan(28);

-- Run a statement as a role (as in 60_privileges.sql).
CREATE FUNCTION pg_temp.as_role(p_role text, p_sql text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SET LOCAL ROLE %I', p_role);
    EXECUTE p_sql;
    RESET ROLE;
END
$$;

SELECT has_table('outbox', 'reserved_topic', 'outbox.reserved_topic exists');
SELECT results_eq(
    $$SELECT tgname::text COLLATE "default", tgtype::int FROM pg_trigger
      WHERE tgrelid = 'outbox.event'::regclass AND NOT tgisinternal ORDER BY tgname$$,
    -- tgtype: 4 = INSERT, 16 = UPDATE; no bit 1: FOR EACH STATEMENT; no bit 2: AFTER
    $$VALUES ('event_refuse_reserved_insert', 4), ('event_refuse_reserved_update', 16)$$,
    'outbox.event has the two statement-level AFTER triggers');

SELECT throws_ok($$SELECT outbox.reserve_topics('r1', 1, ARRAY['ck'])$$, 'OR005', NULL,
                 'reserve_topics() for an unknown relay: OR005');
SELECT acquired FROM outbox.lease_acquire('r1', 'me', 60000);
SELECT throws_ok($$SELECT outbox.reserve_topics('r1', 1, ARRAY['ck', ''])$$, '22023', NULL,
                 'an empty topic name is refused');
SELECT throws_ok($$SELECT outbox.reserve_topics('r1', 1, ARRAY['ck', NULL])$$, '22023', NULL,
                 'a NULL topic name is refused');
SELECT throws_ok($$SELECT outbox.reserve_topics('r1', 1, NULL)$$, '22023', NULL,
                 'a NULL array is refused');
SELECT throws_ok($$SELECT outbox.reserve_topics('r1', 7, ARRAY['ck'])$$, 'OR001', NULL,
                 'a stale (or future) generation is fenced: OR001');
SELECT is(outbox.reserve_topics('r1', 1, ARRAY['my.checkpoints', 'my.dead', 'my.dead']), 2,
          'the relay reserves its checkpoint and dead-letter topics (duplicates folded)');

-- Writers. ------------------------------------------------------------------------
SELECT lives_ok($$INSERT INTO outbox.event (topic) VALUES ('orders')$$, 'an ordinary topic is accepted');
SELECT throws_ok($$INSERT INTO outbox.event (topic, key, payload) VALUES ('my.checkpoints', 'r1', 'garbage')$$,
                 'OR006', 'outbox row refused: topic "my.checkpoints" is reserved by relay "r1"',
                 'a row for the checkpoint topic is refused, the message names topic and relay');
SELECT throws_ok($$INSERT INTO outbox.event (topic) VALUES ('orders'), ('a'), ('my.dead'), ('b')$$,
                 'OR006', 'outbox row refused: topic "my.dead" is reserved by relay "r1"',
                 'one reserved row among several refuses the statement (dead-letter topic)');
SELECT throws_ok($$INSERT INTO outbox.event (topic) SELECT 'my.checkpoints' FROM generate_series(1, 100)$$,
                 'OR006', NULL, 'an INSERT ... SELECT of many rows is refused');
SELECT throws_ok($$SELECT outbox.publish('my.checkpoints', 'r1', 'garbage')$$, 'OR006', NULL,
                 'publish() (text) refuses a reserved topic');
SELECT throws_ok($$SELECT outbox.publish('my.dead', 'k'::bytea, 'v'::bytea)$$, 'OR006', NULL,
                 'publish() (bytea) too');
SELECT throws_ok($$SELECT outbox.publish('my.dead', 'k', '{}'::jsonb)$$, 'OR006', NULL,
                 'publish() (jsonb) too');
SELECT throws_ok(format('SELECT pg_temp.as_role(%L, %L)', 'outbox_writer',
                        $$INSERT INTO outbox.event (topic) VALUES ('my.checkpoints')$$),
                 'OR006', NULL, 'a writer without any grant on reserved_topic is refused the same way');
SELECT lives_ok(format('SELECT pg_temp.as_role(%L, %L)', 'outbox_writer',
                       $$INSERT INTO outbox.event (topic) VALUES ('orders')$$),
                'and may still insert ordinary rows');
SELECT throws_ok($$UPDATE outbox.event SET topic = 'my.checkpoints' WHERE topic = 'orders'$$, 'OR006', NULL,
                 'an UPDATE that moves a row onto a reserved topic is refused');
SELECT is((SELECT count(*)::int FROM outbox.event WHERE topic IN ('my.checkpoints', 'my.dead')), 0,
          'no row reached a reserved topic');

SELECT table_privs_are('outbox', 'reserved_topic', 'public', ARRAY['SELECT'],
                       'PUBLIC may only read reserved_topic (the trigger runs with the inserter''s rights)');
SELECT throws_ok(format('SELECT pg_temp.as_role(%L, %L)', 'outbox_writer',
                        $$DELETE FROM outbox.reserved_topic$$),
                 '42501', NULL, 'a writer cannot free a reserved topic');
SELECT throws_ok(format('SELECT pg_temp.as_role(%L, %L)', 'outbox_relay',
                        $$INSERT INTO outbox.reserved_topic (topic, relay_name) VALUES ('x', 'r1')$$),
                 '42501', NULL, 'the relay reserves only through reserve_topics() (fenced)');

-- A row written before the reservation stays updatable (position_reset
-- re-stamps txids with an UPDATE).
SELECT outbox.reserve_topics('r1', 1, ARRAY['my.checkpoints']);
INSERT INTO outbox.event (topic) VALUES ('my.dead');
SELECT is(outbox.reserve_topics('r1', 1, ARRAY['my.checkpoints', 'my.dead']), 2,
          'a new set replaces the old one (my.dead freed, then reserved again)');
SELECT lives_ok($$UPDATE outbox.event SET payload = 'x' WHERE topic = 'my.dead'$$,
                'an UPDATE that leaves a row''s topic alone is accepted, also on a reserved topic');

-- Several relays, any names: each one's topics are reserved.
SELECT acquired FROM outbox.lease_acquire('r2', 'other', 60000, true);
SELECT is(outbox.reserve_topics('r2', 1, ARRAY['outbox-relay.checkpoints']), 1, 'a second relay reserves its topic');
SELECT throws_ok($$INSERT INTO outbox.event (topic) VALUES ('outbox-relay.checkpoints')$$,
                 'OR006', 'outbox row refused: topic "outbox-relay.checkpoints" is reserved by relay "r2"',
                 'its topic is refused too');

-- Forgetting a relay frees its topics; a takeover fences the old holder.
SELECT outbox.relay_forget('r2');
SELECT lives_ok($$INSERT INTO outbox.event (topic) VALUES ('outbox-relay.checkpoints')$$,
                'relay_forget() frees the relay''s topics');
SELECT outbox.lease_release('r1', 1);
SELECT acquired FROM outbox.lease_acquire('r1', 'new-owner', 60000);
SELECT throws_ok($$SELECT outbox.reserve_topics('r1', 1, ARRAY['x'])$$, 'OR001', NULL,
                 'after a takeover the old generation can no longer change the reservation');

SELECT * FROM finish();
ROLLBACK;
