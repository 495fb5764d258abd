-- 25_lease_concurrency.sql: acquirers racing from separate sessions, and a
-- takeover racing a position advance. Autocommit: the sessions must see each
-- other's commits. Cleans up what it commits.
\ir lib/dblink.sql
SELECT plan(17);

DELETE FROM outbox.relay_state WHERE name IN ('race', 'guard-a', 'guard-b');
SELECT pg_temp.connect('c1'), pg_temp.connect('c2');

-- Two acquirers of a relay that does not exist yet -------------------------------
SELECT pg_temp.exec('c1', 'BEGIN');
SELECT results_eq(
    $$SELECT * FROM dblink('c1', $q$SELECT acquired, generation FROM outbox.lease_acquire('race', 'o1', 60000)$q$)
          AS t(acquired boolean, generation bigint)$$,
    $$VALUES (true, 1::bigint)$$,
    'session 1 creates the relay and holds its lease, not yet committed');
SELECT is(dblink_send_query('c2', $q$SELECT acquired, generation, owner FROM outbox.lease_acquire('race', 'o2', 60000)$q$),
          1, 'session 2 asks for the same lease');
SELECT ok(pg_temp.waits_for_lock('c2'), 'session 2 waits for session 1');
SELECT pg_temp.exec('c1', 'COMMIT');
SELECT results_eq(
    $$SELECT * FROM dblink_get_result('c2') AS t(acquired boolean, generation bigint, owner text)$$,
    $$VALUES (false, 1::bigint, 'o1'::text)$$,
    'after session 1 commits, session 2 is a standby of o1: exactly one acquired');
SELECT is((SELECT count(*)::int FROM dblink_get_result('c2') AS t(a boolean, g bigint, o text)), 0,
          '(session 2 is idle again)');

-- Two acquirers of an expired lease ----------------------------------------------
UPDATE outbox.relay_state SET lease_expires_at = clock_timestamp() - interval '1 second' WHERE name = 'race';
SELECT pg_temp.exec('c1', 'BEGIN');
SELECT results_eq(
    $$SELECT * FROM dblink('c1', $q$SELECT acquired, generation FROM outbox.lease_acquire('race', 'o3', 60000)$q$)
          AS t(acquired boolean, generation bigint)$$,
    $$VALUES (true, 2::bigint)$$,
    'session 1 takes the expired lease over');
SELECT is(dblink_send_query('c2', $q$SELECT acquired, generation, owner FROM outbox.lease_acquire('race', 'o4', 60000)$q$),
          1, 'session 2 tries to take it over too');
SELECT ok(pg_temp.waits_for_lock('c2'), 'session 2 waits on the relay row');
SELECT pg_temp.exec('c1', 'COMMIT');
SELECT results_eq(
    $$SELECT * FROM dblink_get_result('c2') AS t(acquired boolean, generation bigint, owner text)$$,
    $$VALUES (false, 2::bigint, 'o3'::text)$$,
    'session 2 then sees the new holder: one takeover, one new generation');
SELECT is((SELECT count(*)::int FROM dblink_get_result('c2') AS t(a boolean, g bigint, o text)), 0,
          '(session 2 is idle again)');

-- A takeover waits for an advance in flight, which then stays the last one -------------
-- of the old generation.
UPDATE outbox.relay_state SET lease_expires_at = clock_timestamp() - interval '1 second' WHERE name = 'race';
SELECT pg_temp.exec('c1', 'BEGIN');
SELECT is((SELECT d FROM dblink('c1', $q$SELECT outbox.advance('race', 2, 1, '1:1:', NULL, 0)$q$) AS t(d bigint)),
          0::bigint, 'the old holder (generation 2) advances, not yet committed');
SELECT is(dblink_send_query('c2', $q$SELECT acquired, generation, owner FROM outbox.lease_acquire('race', 'o5', 60000)$q$),
          1, 'a standby takes the expired lease over meanwhile');
SELECT ok(pg_temp.waits_for_lock('c2'), 'the takeover waits for the advance''s transaction');
SELECT pg_temp.exec('c1', 'COMMIT');
SELECT results_eq(
    $$SELECT * FROM dblink_get_result('c2') AS t(acquired boolean, generation bigint, owner text)$$,
    $$VALUES (true, 3::bigint, 'o5'::text)$$,
    'then it gets generation 3');
SELECT throws_ok(
    $$SELECT * FROM dblink('c1', $q$SELECT outbox.advance('race', 2, 2, '1:1:', NULL, 0)$q$) AS t(d bigint)$$,
    'OR001', 'relay "race" was fenced: generation 2 is stale, current is 3',
    'the old holder''s next advance is fenced: OR001');

-- Two different names at once: the guard holds ------------------------------------
SELECT dblink_get_result('c2');
DELETE FROM outbox.relay_state WHERE name = 'race';
SELECT pg_temp.exec('c1', 'BEGIN');
SELECT * FROM dblink('c1', $q$SELECT acquired FROM outbox.lease_acquire('guard-a', 'o1', 60000)$q$) AS t(a boolean);
SELECT dblink_send_query('c2', $q$SELECT acquired FROM outbox.lease_acquire('guard-b', 'o2', 60000)$q$);
SELECT ok(pg_temp.waits_for_lock('c2'), 'a relay with another name starting at the same time waits');
SELECT pg_temp.exec('c1', 'COMMIT');
SELECT throws_ok($$SELECT * FROM dblink_get_result('c2') AS t(a boolean)$$, 'OR004',
                 'outbox already has relay "guard-a"; refusing to start relay "guard-b"',
                 '... and is then refused: only one name can win the race');

SELECT dblink_disconnect('c1'), dblink_disconnect('c2');
DELETE FROM outbox.relay_state WHERE name IN ('race', 'guard-a', 'guard-b');
SELECT * FROM finish();
