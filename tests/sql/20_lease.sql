-- 20_lease.sql: lease_acquire, lease_renew, lease_release and the one-name
-- guard, in one session (25_lease_concurrency.sql races them).
BEGIN;
SELECT plan(40);

-- A new relay -----------------------------------------------------------------
SELECT results_eq(
    $$SELECT * FROM outbox.lease_acquire('r1', 'host-a:1', 30000)$$,
    $$VALUES (true, 1::bigint, 'host-a:1'::text, 30000::bigint)$$,
    'the first acquire creates the relay at generation 1');
SELECT results_eq(
    $$SELECT owner, generation, batch_seq, pos_done::text, pos_next::text, pos_after_id
      FROM outbox.relay_state WHERE name = 'r1'$$,
    $$VALUES ('host-a:1'::text, 1::bigint, 0::bigint, '1:1:'::text, NULL::text, 0::bigint)$$,
    'a new relay starts at position 1:1: (nothing relayed yet), batch 0, no open window');
SELECT ok((SELECT lease_expires_at BETWEEN clock_timestamp() + interval '29 seconds'
                                       AND clock_timestamp() + interval '30 seconds'
           FROM outbox.relay_state WHERE name = 'r1'),
          'the lease expires ttl after the database clock');
SELECT results_eq($$SELECT * FROM outbox.position_get('r1')$$,
                  $$VALUES (1::bigint, 0::bigint, '1:1:'::text, NULL::text, 0::bigint)$$,
                  'position_get() returns the initial position');

-- Held by someone else: a standby ------------------------------------------------
SELECT results_eq(
    $$SELECT acquired, generation, owner FROM outbox.lease_acquire('r1', 'host-b:1', 30000)$$,
    $$VALUES (false, 1::bigint, 'host-a:1'::text)$$,
    'another owner does not get a live lease: it learns the holder and generation');
SELECT ok((SELECT expires_in_ms BETWEEN 29000 AND 30000
           FROM outbox.lease_acquire('r1', 'host-b:1', 30000)),
          'the standby learns how long until the lease expires');
SELECT is((SELECT generation FROM outbox.relay_state WHERE name = 'r1'), 1::bigint,
          'a refused acquire leaves the generation alone');

-- The same owner again: a restart ------------------------------------------------
SELECT results_eq(
    $$SELECT * FROM outbox.lease_acquire('r1', 'host-a:1', 20000)$$,
    $$VALUES (true, 2::bigint, 'host-a:1'::text, 20000::bigint)$$,
    'the holder acquiring again gets a new generation (it restarted: fence its old self)');

-- Expired: taken over ---------------------------------------------------------------
UPDATE outbox.relay_state SET lease_expires_at = clock_timestamp() - interval '1 millisecond'
WHERE name = 'r1';
SELECT results_eq(
    $$SELECT * FROM outbox.lease_acquire('r1', 'host-b:1', 30000)$$,
    $$VALUES (true, 3::bigint, 'host-b:1'::text, 30000::bigint)$$,
    'an expired lease is taken over with a new generation');

-- Renew -----------------------------------------------------------------------------
UPDATE outbox.relay_state SET lease_expires_at = clock_timestamp() + interval '1 second'
WHERE name = 'r1';
SELECT is(outbox.lease_renew('r1', 3, 45000), true, 'renew with the current generation succeeds');
SELECT ok((SELECT lease_expires_at > clock_timestamp() + interval '44 seconds'
           FROM outbox.relay_state WHERE name = 'r1'),
          'renew moves the expiry to now + ttl');
SELECT is(outbox.lease_renew('r1', 2, 45000), false, 'renew with an old generation is fenced');
SELECT is(outbox.lease_renew('nobody', 1, 45000), false, 'renew of an unknown relay is fenced too');
UPDATE outbox.relay_state SET lease_expires_at = clock_timestamp() - interval '5 seconds'
WHERE name = 'r1';
SELECT is(outbox.lease_renew('r1', 3, 45000), true,
          'a matching generation renews even after the expiry passed (nobody took over)');
SELECT is((SELECT generation FROM outbox.relay_state WHERE name = 'r1'), 3::bigint,
          'renew never changes the generation');
SELECT throws_ok($$SELECT outbox.lease_renew('r1', 3, 0)$$, '22023', 'lease ttl must be positive: 0 ms',
                 'renew refuses a ttl of 0');

-- Release ---------------------------------------------------------------------------
SELECT is(outbox.lease_release('r1', 2), false, 'release with an old generation does nothing');
SELECT ok((SELECT lease_expires_at > clock_timestamp() FROM outbox.relay_state WHERE name = 'r1'),
          '... and the lease is still live');
SELECT is(outbox.lease_release('r1', 3), true, 'release with the current generation succeeds');
SELECT ok((SELECT lease_expires_at <= clock_timestamp() FROM outbox.relay_state WHERE name = 'r1'),
          'release expires the lease at once');
SELECT results_eq(
    $$SELECT acquired, generation, owner FROM outbox.lease_acquire('r1', 'host-c:1', 30000)$$,
    $$VALUES (true, 4::bigint, 'host-c:1'::text)$$,
    'a standby takes a released lease at once');
SELECT is(outbox.lease_release('nobody', 1), false, 'release of an unknown relay returns false');

-- The database clock, not the transaction's: this whole file is one
-- transaction, so now() stands still while clock_timestamp() moves.
SELECT is(outbox.lease_release('r1', 4), true, 'released for the clock test');
SELECT results_eq(
    $$SELECT acquired, generation FROM outbox.lease_acquire('r1', 'host-d:1', 300)$$,
    $$VALUES (true, 5::bigint)$$, 'a 300 ms lease is taken');
SELECT results_eq(
    $$SELECT acquired, owner FROM outbox.lease_acquire('r1', 'host-e:1', 300)$$,
    $$VALUES (false, 'host-d:1'::text)$$, 'another owner is refused while it runs');
SELECT pg_sleep(0.4);
SELECT results_eq(
    $$SELECT acquired, generation, owner FROM outbox.lease_acquire('r1', 'host-e:1', 30000)$$,
    $$VALUES (true, 6::bigint, 'host-e:1'::text)$$,
    'after 400 ms by the database clock the 300 ms lease has expired and is taken over');

-- Argument checks -------------------------------------------------------------------
SELECT throws_ok($$SELECT * FROM outbox.lease_acquire('r1', 'x', 0)$$, '22023',
                 'lease ttl must be positive: 0 ms', 'acquire refuses a ttl of 0');
SELECT throws_ok($$SELECT * FROM outbox.lease_acquire('r1', 'x', NULL)$$, '22023',
                 'lease ttl must be positive: NULL ms', 'acquire refuses a NULL ttl');
SELECT throws_ok($$SELECT * FROM outbox.lease_acquire('r1', '', 1000)$$, '22023',
                 'lease owner must not be empty', 'acquire refuses an empty owner');
SELECT throws_ok($$SELECT * FROM outbox.lease_acquire('', 'x', 1000)$$, '22023',
                 'relay name must not be empty', 'acquire refuses an empty relay name');
SELECT throws_ok($$SELECT * FROM outbox.lease_acquire(NULL, 'x', 1000)$$, '22023',
                 'relay name must not be empty', 'acquire refuses a NULL relay name');

-- One name per outbox ---------------------------------------------------------------
SELECT throws_ok($$SELECT * FROM outbox.lease_acquire('r2', 'host-a:2', 30000)$$, 'OR004',
                 'outbox already has relay "r1"; refusing to start relay "r2"',
                 'a second relay name is refused: OR004');
SELECT is((SELECT count(*)::int FROM outbox.relay_state WHERE name = 'r2'), 0,
          '... and nothing was created for it');
CREATE FUNCTION pg_temp.hint_of(p_sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_hint text;
BEGIN
    EXECUTE p_sql;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS v_hint = PG_EXCEPTION_HINT;
    RETURN v_hint;
END
$$;
SELECT alike(pg_temp.hint_of($$SELECT * FROM outbox.lease_acquire('r2', 'host-a:2', 30000)$$),
             '%outbox.relay_forget(''r1'')%p_allow_other_names%',
             'the OR004 hint names both ways out: forget the old relay, or allow other names');
SELECT results_eq(
    $$SELECT acquired, generation FROM outbox.lease_acquire('r2', 'host-a:2', 30000, true)$$,
    $$VALUES (true, 1::bigint)$$,
    'with p_allow_other_names a second relay is created');
SELECT throws_ok($$SELECT * FROM outbox.lease_acquire('r1', 'host-e:1', 30000)$$, 'OR004',
                 'outbox already has relay "r2"; refusing to start relay "r1"',
                 'once two names exist, each relay must allow the other');
SELECT results_eq(
    $$SELECT acquired, generation FROM outbox.lease_acquire('r1', 'host-e:1', 30000, true)$$,
    $$VALUES (true, 7::bigint)$$,
    '... and with the flag it carries on');
SELECT is(outbox.relay_forget('r2'), true, 'relay_forget() removes a relay''s state');
SELECT is(outbox.relay_forget('r2'), false, 'relay_forget() of an unknown relay returns false');
SELECT results_eq(
    $$SELECT acquired, generation FROM outbox.lease_acquire('r1', 'host-e:1', 30000)$$,
    $$VALUES (true, 8::bigint)$$,
    'after the other relay is forgotten, no flag is needed');

SELECT * FROM finish();
ROLLBACK;
