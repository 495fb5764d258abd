-- 80_reserved_topic.sql: a relay reserves its own topics (checkpoints, dead
-- letters) with reserve_topics(), fenced by its generation; rows aimed at a
-- reserved topic are refused (OR006) by INSERT, publish() and UPDATE, in
-- any statement, whatever the topic is called.
BEGIN;
SELECT plan(40);

-- Run a statement as a role (as in 60_privileges.sql).
CREATE FUNCTION pg_temp.as_role(p_role text, p_sql text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SET LOCAL ROLE %I', p_role);
    EXECUTE p_sql;
    RESET ROLE;
END
$$;

SELECT has_table('outbox', 'reserved_topic', 'outbox.reserved_topic exists');
SELECT is_empty($$SELECT tgname FROM pg_trigger WHERE tgrelid = 'outbox.event'::regclass AND NOT tgisinternal$$,
                'outbox.event has no trigger: the refusal is a constraint of domain outbox.event_topic');
SELECT is_empty($$SELECT FROM pg_constraint WHERE conname = 'event_topic_not_reserved'$$,
                'no reserved topic, no constraint event_topic_not_reserved');
SELECT results_eq(
    $$SELECT tgname::text COLLATE "default", tgtype::int FROM pg_trigger
      WHERE tgrelid = 'outbox.reserved_topic'::regclass AND NOT tgisinternal ORDER BY tgname$$,
    -- tgtype: 4 INSERT, 8 DELETE, 16 UPDATE, 32 TRUNCATE; no bit 1: FOR EACH STATEMENT; no bit 2: AFTER
    $$VALUES ('reserved_topic_delete', 8), ('reserved_topic_insert', 4), ('reserved_topic_truncate', 32),
             ('reserved_topic_update', 16)$$,
    'statement-level triggers on reserved_topic keep the constraint in step with every change');

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
SELECT results_eq(
    $$SELECT convalidated, pg_get_constraintdef(oid) FROM pg_constraint
      WHERE contypid = 'outbox.event_topic'::regtype AND conname = 'event_topic_not_reserved'$$,
    $$VALUES (false, 'CHECK (((VALUE <> ALL (''{my.checkpoints,my.dead}''::text[])) OR outbox.refuse_reserved_topic(VALUE))) NOT VALID')$$,
    'the constraint holds the reserved names as a constant, NOT VALID (rows already there stay)');
CREATE TEMP TABLE ck AS SELECT oid FROM pg_constraint WHERE conname = 'event_topic_not_reserved';
SELECT is(outbox.reserve_topics('r1', 1, ARRAY['my.dead', 'my.checkpoints']), 2, '(the same topics again)');
SELECT is((SELECT oid FROM pg_constraint WHERE conname = 'event_topic_not_reserved'), (SELECT oid FROM ck),
          'a relay restarting with the same topics leaves the constraint alone');

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
SELECT throws_ok($$COPY outbox.event (topic) FROM PROGRAM 'echo my.dead'$$, 'OR006', NULL,
                 'COPY is refused the same way');
SELECT throws_ok($$INSERT INTO outbox.event (topic) VALUES ('my.checkpoints' || '')$$, 'OR006', NULL,
                 'an expression that yields a reserved name is refused');
SELECT lives_ok($$INSERT INTO outbox.event (topic) VALUES ('my.checkpoints2'), ('MY.CHECKPOINTS'), ('my.dea')$$,
                'names that only look alike are not reserved (exact match)');
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
SELECT lives_ok($$UPDATE outbox.event SET topic = topic, txid = txid WHERE topic = 'my.dead'$$,
                '... also one that assigns the row its own topic (position_reset re-stamps txid like this)');

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
SELECT throws_ok($$INSERT INTO outbox.event (topic) VALUES ('my.dead')$$, 'OR006', NULL,
                 '... and only its own');
TRUNCATE outbox.reserved_topic;
SELECT is_empty($$SELECT FROM pg_constraint WHERE conname = 'event_topic_not_reserved'$$,
                'TRUNCATE of reserved_topic (an operator) drops the constraint too');
SELECT is(outbox.reserve_topics('r1', 1, ARRAY['my.checkpoints']), 1, '(reserved again)');
SELECT outbox.lease_release('r1', 1);
SELECT acquired FROM outbox.lease_acquire('r1', 'new-owner', 60000);
SELECT throws_ok($$SELECT outbox.reserve_topics('r1', 1, ARRAY['x'])$$, 'OR001', NULL,
                 'after a takeover the old generation can no longer change the reservation');

SELECT * FROM finish();
ROLLBACK;
