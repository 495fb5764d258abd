-- 50_concurrency.sql: real writers in other sessions (dblink) committing out
-- of id order, staying open, rolling back; this session relays them window
-- by window the way the relay does. Autocommit, so that the sessions see each
-- other's commits; cleans up what it commits.
\ir lib/dblink.sql
SELECT plan(21);

DELETE FROM outbox.event;
DELETE FROM outbox.relay_state;
SELECT acquired FROM outbox.lease_acquire('cc', 'test', 600000);
SELECT pg_temp.connect('w1'), pg_temp.connect('w2');

-- What the writers wrote (ids from publish()), and what the relay saw.
CREATE TEMP TABLE written (id bigint PRIMARY KEY, writer text, fate text DEFAULT 'open');
CREATE TEMP TABLE seen (seq bigserial, win int, id bigint);
CREATE TEMP SEQUENCE win_seq;

CREATE FUNCTION pg_temp.publish(p_conn text, p_what text) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO written (id, writer)
    SELECT t.id, p_conn
    FROM dblink(p_conn, format($q$SELECT outbox.publish('cc.topic', 'k', %L)$q$, p_what)) AS t(id bigint)
    RETURNING id;
$$;
CREATE FUNCTION pg_temp.finish_tx(p_conn text, p_how text) RETURNS text LANGUAGE sql AS $$
    UPDATE written SET fate = CASE p_how WHEN 'COMMIT' THEN 'committed' ELSE 'rolled back' END
    WHERE writer = p_conn AND fate = 'open';
    SELECT dblink_exec(p_conn, p_how);
$$;
CREATE FUNCTION pg_temp.publish_committed(p_conn text, p_what text) RETURNS bigint LANGUAGE sql AS $$
    SELECT pg_temp.finish_tx(p_conn, 'BEGIN');
    SELECT pg_temp.publish(p_conn, p_what);
    SELECT pg_temp.finish_tx(p_conn, 'COMMIT');
    SELECT max(id) FROM written WHERE writer = p_conn;
$$;

-- One window, the relay's way: open it at the stored position, page it with
-- after_id (advancing after every page), finish it. Returns the window's
-- number in seen. Called as its own statement: one transaction per window.
CREATE FUNCTION pg_temp.relay_window(p_max_rows int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    v_pos   record;
    v_next  text;
    v_after bigint := 0;
    v_last  bigint;
    v_batch bigint;
    v_win   int := nextval('win_seq');
    v_id    bigint;
BEGIN
    SELECT * INTO v_pos FROM outbox.position_get('cc');
    v_batch := v_pos.batch_seq;
    v_next := outbox.window_open('cc');
    LOOP
        v_last := NULL;
        FOR v_id IN SELECT f.id FROM outbox.fetch_page(v_pos.pos_done::pg_snapshot, v_next::pg_snapshot,
                                                        v_after, p_max_rows, 1000000) AS f LOOP
            INSERT INTO seen (win, id) VALUES (v_win, v_id);
            v_last := v_id;
        END LOOP;
        EXIT WHEN v_last IS NULL;
        v_after := v_last;
        v_batch := v_batch + 1;
        PERFORM outbox.advance('cc', v_pos.generation, v_batch, v_pos.pos_done, v_next, v_after);
    END LOOP;
    PERFORM outbox.advance('cc', v_pos.generation, v_batch + 1, v_next, NULL, 0);
    RETURN v_win;
END
$$;

-- 1. Out-of-order commit ----------------------------------------------------------
SELECT pg_temp.finish_tx('w1', 'BEGIN');
SELECT pg_temp.publish('w1', 'T1') AS t1 \gset
SELECT pg_temp.publish_committed('w2', 'T2') AS t2 \gset
SELECT ok(:t1 < :t2, 'T1 took the lower id, T2 the higher, T2 committed first');
SELECT pg_temp.relay_window(10) AS win \gset
SELECT results_eq(format('SELECT id FROM seen WHERE win = %s', :win), format('VALUES (%s::bigint)', :t2),
                  'the window returns only T2''s row (T1 is still open)');
SELECT pg_temp.finish_tx('w1', 'COMMIT');
SELECT pg_temp.relay_window(10) AS win \gset
SELECT results_eq(format('SELECT id FROM seen WHERE win = %s', :win), format('VALUES (%s::bigint)', :t1),
                  'after T1 commits, the next window returns T1''s row, though its id is lower');

-- 2. A long-running transaction does not hold anyone back --------------------------------
SELECT pg_temp.finish_tx('w1', 'BEGIN');
SELECT pg_temp.publish('w1', 'long') AS long_id \gset
SELECT pg_temp.publish_committed('w2', 'a1'), pg_temp.publish_committed('w2', 'a2'),
       pg_temp.publish_committed('w2', 'a3');
SELECT pg_temp.relay_window(10) AS win \gset
SELECT results_eq(format('SELECT id FROM seen WHERE win = %s ORDER BY seq', :win),
                  $$SELECT id FROM (SELECT id FROM written WHERE writer = 'w2' AND fate = 'committed'
                                    ORDER BY id DESC LIMIT 3) AS last3 ORDER BY id$$,
                  'three later transactions are relayed while the long one stays open');
SELECT pg_temp.publish_committed('w2', 'b1'), pg_temp.publish_committed('w2', 'b2');
SELECT pg_temp.relay_window(10) AS win \gset
SELECT is((SELECT count(*)::int FROM seen WHERE win = :win), 2, '... and the next two in the next window');
SELECT is((SELECT count(*)::int FROM seen WHERE id = :long_id), 0, '... while the open one is not relayed');
SELECT results_eq($$SELECT rows FROM outbox.lag('cc')$$, $$VALUES (0::bigint)$$,
                  'lag counts committed rows only: the open transaction''s row is not lag yet');

-- 3. Rolled-back rows never appear ------------------------------------------------------------
SELECT pg_temp.finish_tx('w1', 'ROLLBACK');
SELECT pg_temp.finish_tx('w2', 'BEGIN');
SELECT pg_temp.publish('w2', 'kept') AS kept_id \gset
SELECT dblink_exec('w2', 'SAVEPOINT s');
SELECT pg_temp.publish('w2', 'undone') AS undone_id \gset
SELECT dblink_exec('w2', 'ROLLBACK TO SAVEPOINT s');
UPDATE written SET fate = 'rolled back' WHERE id = :undone_id;
SELECT pg_temp.finish_tx('w2', 'COMMIT');
SELECT pg_temp.finish_tx('w2', 'BEGIN');
SELECT pg_temp.publish('w2', 'never');
SELECT pg_temp.finish_tx('w2', 'ROLLBACK');
SELECT pg_temp.relay_window(10) AS win \gset
SELECT results_eq(format('SELECT id FROM seen WHERE win = %s', :win), format('VALUES (%s::bigint)', :kept_id),
                  'the next window has only the committed row of the transaction with a rolled-back savepoint');
SELECT is_empty($$SELECT id FROM seen WHERE id IN (SELECT id FROM written WHERE fate = 'rolled back')$$,
                'no row of a rolled-back transaction or savepoint was ever relayed');
SELECT pg_temp.relay_window(10) AS win \gset
SELECT is((SELECT count(*)::int FROM seen WHERE win = :win), 0,
          'the window after that is empty: the rolled-back rows never show up later either');

-- 4. One large window, paged by after_id ------------------------------------------------------
-- Two writers interleave 10 blocks of 20 rows each, w2 commits first.
SELECT pg_temp.finish_tx('w1', 'BEGIN'), pg_temp.finish_tx('w2', 'BEGIN');
SELECT pg_temp.publish(CASE WHEN b % 2 = 0 THEN 'w1' ELSE 'w2' END, format('bulk %s/%s', b, i))
FROM generate_series(1, 10) AS b, generate_series(1, 20) AS i
ORDER BY b, i;
SELECT pg_temp.finish_tx('w2', 'COMMIT'), pg_temp.finish_tx('w1', 'COMMIT');
SELECT pg_temp.relay_window(7) AS win \gset
SELECT is((SELECT count(*)::int FROM seen WHERE win = :win), 200,
          'the 200-row window paged 7 at a time returns 200 rows');
SELECT is((SELECT count(DISTINCT id)::int FROM seen WHERE win = :win), 200, '... each once');
SELECT ok((SELECT bool_and(ordered) FROM (
               SELECT id > lag(id, 1, 0::bigint) OVER (ORDER BY seq) AS ordered FROM seen WHERE win = :win) AS s),
          '... in id order');
SELECT set_eq(format('SELECT id FROM seen WHERE win = %s', :win),
              format($$SELECT id FROM written
                       WHERE fate = 'committed' AND id NOT IN (SELECT id FROM seen WHERE win < %s)$$, :win),
              '... and they are exactly the rows both writers committed');

-- The same window paged with a byte limit: 1 row per page (payloads are 9-10
-- bytes, key 1 byte; max_bytes 12 lets one row through).
SELECT pg_temp.finish_tx('w1', 'BEGIN');
SELECT pg_temp.publish('w1', format('small %s', i)) FROM generate_series(1, 5) AS i;
SELECT pg_temp.finish_tx('w1', 'COMMIT');
CREATE FUNCTION pg_temp.page_sizes() RETURNS SETOF int LANGUAGE plpgsql AS $$
DECLARE
    v_done  pg_snapshot := (SELECT pos_done::pg_snapshot FROM outbox.position_get('cc'));
    v_next  pg_snapshot := outbox.window_open('cc')::pg_snapshot;
    v_after bigint := 0;
    v_n     int;
BEGIN
    LOOP
        SELECT count(*), max(f.id) INTO v_n, v_after
        FROM outbox.fetch_page(v_done, v_next, v_after, 100, 12) AS f;
        EXIT WHEN v_n = 0;
        RETURN NEXT v_n;
    END LOOP;
END
$$;
SELECT results_eq('SELECT * FROM pg_temp.page_sizes()', 'VALUES (1), (1), (1), (1), (1)',
                  'with max_bytes 12, five 12-byte rows come one per page');
SELECT pg_temp.relay_window(100) AS win \gset
SELECT is((SELECT count(*)::int FROM seen WHERE win = :win), 5, '(then relayed)');

-- Across all windows ------------------------------------------------------------------------------
SELECT set_eq('SELECT id FROM seen', $$SELECT id FROM written WHERE fate = 'committed'$$,
              'over all windows: every committed row was relayed');
SELECT is((SELECT count(*) - count(DISTINCT id) FROM seen)::int, 0, '... none twice');
-- advance() tries a partition at most once a second: the last windows'
-- rows may still wait. The relay, idle, calls cleanup(): then no relayed
-- row is left (every writer's transaction is over).
SELECT outbox.cleanup('cc');
SELECT is_empty('SELECT id FROM outbox.event', 'and advance, then cleanup(), truncated every relayed row');
SELECT results_eq($$SELECT * FROM outbox.lag('cc')$$, $$VALUES (0::bigint, 0::bigint)$$, 'lag is zero');
SELECT ok((SELECT batch_seq > 0 AND pos_next IS NULL FROM outbox.position_get('cc')),
          'the position ends between windows');

SELECT dblink_disconnect('w1'), dblink_disconnect('w2');
DELETE FROM outbox.event;
DELETE FROM outbox.relay_state;
SELECT * FROM finish();
