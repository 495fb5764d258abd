-- 85_reserved_topic_sessions.sql: the reserved-topic refusal (OR006) is a
-- constraint of domain outbox.event_topic that reserve_topics() rewrites.
-- Writers are other sessions, with their type cache already warm: each one
-- must see a new reservation, and a freed one, in its next transaction.
-- Two relays reserving at once must both end up in the constraint.
-- Autocommit, so that the sessions see each other's commits; cleans up.
\ir lib/dblink.sql
SELECT plan(12);

DELETE FROM outbox.event;
DELETE FROM outbox.relay_state;
SELECT acquired FROM outbox.lease_acquire('s1', 'test', 600000, true);
SELECT acquired FROM outbox.lease_acquire('s2', 'test', 600000, true);
SELECT pg_temp.connect('w1'), pg_temp.connect('w2');

-- w1 has written before: its session has the domain's constraints cached.
SELECT lives_ok($$SELECT pg_temp.exec('w1', 'INSERT INTO outbox.event (topic) VALUES (''late.ckpt'')')$$,
                'a writer session writes to a topic nobody reserved');
SELECT is(outbox.reserve_topics('s1', 1, ARRAY['late.ckpt']), 1, '(relay s1 reserves it; committed)');
SELECT throws_ok($$SELECT pg_temp.exec('w1', 'INSERT INTO outbox.event (topic) VALUES (''late.ckpt'')')$$,
                 'OR006', NULL, 'the same session is refused in its next transaction');
SELECT lives_ok($$SELECT pg_temp.exec('w1', 'INSERT INTO outbox.event (topic) VALUES (''late.other'')')$$,
                '... and still writes to other topics');

-- A writer inside a transaction that began before the reservation: a
-- statement parsed after it sees it too. (One prepared and run before, in
-- the same transaction, may not: docs/sql.md, "outbox.reserved_topic".)
SELECT pg_temp.exec('w2', 'BEGIN');
SELECT lives_ok($$SELECT pg_temp.exec('w2', 'INSERT INTO outbox.event (topic) VALUES (''late.dlq'')')$$,
                'a writer in an open transaction writes to a topic nobody reserved');
SELECT is(outbox.reserve_topics('s1', 1, ARRAY['late.ckpt', 'late.dlq']), 2, '(relay s1 reserves it)');
SELECT throws_ok($$SELECT pg_temp.exec('w2', 'INSERT INTO outbox.event (topic) VALUES (''late.dlq'')')$$,
                 'OR006', NULL, 'its next statement is refused');
SELECT pg_temp.exec('w2', 'ROLLBACK');

-- Two relays reserving at once: the second waits for the first (advisory
-- lock), then rewrites the constraint with both sets.
SELECT pg_temp.exec('w1', 'BEGIN');
SELECT pg_temp.exec('w1', $q$DO $$ BEGIN PERFORM outbox.reserve_topics('s1', 1, ARRAY['late.ckpt', 'late.dlq', 's1.more']); END $$$q$);
SELECT is(dblink_send_query('w2', $$SELECT outbox.reserve_topics('s2', 1, ARRAY['s2.ckpt'])$$), 1,
          '(relay s2 reserves its topic while s1''s change is not committed)');
SELECT ok(pg_temp.waits_for_lock('w2'), 'the second rewrite waits for the first');
SELECT pg_temp.exec('w1', 'COMMIT');
SELECT is((SELECT n FROM dblink_get_result('w2') AS t(n int)), 1, '(s2 done)');
SELECT is((SELECT count(*)::int FROM dblink_get_result('w2') AS t(n int)), 0, '(no more results)');
SELECT is(
    (SELECT pg_get_constraintdef(oid) FROM pg_constraint
     WHERE contypid = 'outbox.event_topic'::regtype AND conname = 'event_topic_not_reserved'),
    'CHECK (((VALUE <> ALL (''{late.ckpt,late.dlq,s1.more,s2.ckpt}''::text[])) OR outbox.refuse_reserved_topic(VALUE))) NOT VALID',
    'the constraint holds both relays'' topics');

SELECT dblink_disconnect('w1'), dblink_disconnect('w2');
SELECT outbox.relay_forget('s1'), outbox.relay_forget('s2');
DELETE FROM outbox.event;
SELECT * FROM finish();
