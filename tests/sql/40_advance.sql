-- 40_advance.sql: advance (fencing, monotony, what it deletes), retention
-- and purge, lag, status, several relays on one outbox, position_reset.
-- Transaction ids are chosen by hand, as in 30_window.sql.
BEGIN;
SELECT plan(69);

SELECT acquired FROM outbox.lease_acquire('a', 'me', 60000);

-- Rows: window 1 = transactions 100..109 (one row each), window 2 =
-- 110..119 and window 3 = 120..129, whose rows interleave by id, and one row
-- of a transaction that no window here reaches (500).
INSERT INTO outbox.event (txid, topic, payload)
SELECT x::text::xid8, 'w1', '\x00' FROM generate_series(100, 109) AS x;
INSERT INTO outbox.event (txid, topic, payload)
SELECT (CASE WHEN i % 2 = 0 THEN 110 + i / 2 ELSE 120 + i / 2 END)::text::xid8,
       CASE WHEN i % 2 = 0 THEN 'w2' ELSE 'w3' END, '\x00'
FROM generate_series(0, 19) AS i;
INSERT INTO outbox.event (txid, topic, payload) VALUES ('500', 'later', '\x00');

-- The rows a move from position O to position N must delete, straight from
-- the definition: relayed(N) and not relayed(O), where relayed(P) = visible
-- in P.done, or visible in P.next with id <= P.after_id.
CREATE FUNCTION pg_temp.rel(p_txid xid8, p_id bigint, p_done text, p_next text, p_after bigint)
    RETURNS boolean LANGUAGE sql AS $$
    SELECT pg_visible_in_snapshot(p_txid, p_done::pg_snapshot)
        OR coalesce(pg_visible_in_snapshot(p_txid, p_next::pg_snapshot) AND p_id <= p_after, false);
$$;
CREATE TEMP TABLE expected_gone (id bigint);
CREATE FUNCTION pg_temp.expect_move(od text, onx text, oa bigint, nd text, nn text, na bigint)
    RETURNS bigint LANGUAGE sql AS $$
    DELETE FROM expected_gone;
    INSERT INTO expected_gone
    SELECT id FROM outbox.event
    WHERE pg_temp.rel(txid, id, nd, nn, na) AND NOT pg_temp.rel(txid, id, od, onx, oa);
    SELECT count(*) FROM expected_gone;
$$;
CREATE TEMP TABLE before_move AS SELECT id FROM outbox.event;
CREATE FUNCTION pg_temp.snap_rows() RETURNS void LANGUAGE sql AS $$
    DELETE FROM before_move;
    INSERT INTO before_move SELECT id FROM outbox.event;
$$;
-- Rows that were there before the move and are gone now = what it deleted.
CREATE TEMP VIEW gone AS
    SELECT id FROM before_move EXCEPT SELECT id FROM outbox.event;

CREATE TEMP TABLE w1 AS SELECT id, row_number() OVER (ORDER BY id) AS n FROM outbox.event WHERE topic = 'w1';
CREATE TEMP TABLE w3 AS SELECT id, row_number() OVER (ORDER BY id) AS n FROM outbox.event WHERE topic = 'w3';

-- Half of window 1 ------------------------------------------------------------------
SELECT is(pg_temp.expect_move('1:1:', NULL, 0, '1:1:', '110:110:', (SELECT id FROM w1 WHERE n = 5)), 5::bigint,
          '(reference: the first half of window 1 is 5 rows)');
SELECT pg_temp.snap_rows();
SELECT is(outbox.advance('a', 1, 1, '1:1:', '110:110:', (SELECT id FROM w1 WHERE n = 5)), 5::bigint,
          'advance into window 1 up to its 5th row deletes 5 rows');
SELECT set_eq('SELECT id FROM gone', 'SELECT id FROM expected_gone',
              '... exactly the 5 rows relayed by the move');
SELECT results_eq($$SELECT * FROM outbox.position_get('a')$$,
                  $$SELECT 1::bigint, 1::bigint, '1:1:'::text, '110:110:'::text, id FROM w1 WHERE n = 5$$,
                  'the position is stored: batch 1, window (1:1:, 110:110:], after its 5th row');
SELECT ok((SELECT advanced_at IS NOT NULL AND advanced_at <= clock_timestamp()
           FROM outbox.relay_state WHERE name = 'a'), 'advanced_at is set');

-- Fencing and monotony ------------------------------------------------------------------
SELECT throws_ok($$SELECT outbox.advance('a', 2, 2, '110:110:', NULL, 0)$$, 'OR001',
                 'relay "a" was fenced: generation 2 is stale, current is 1',
                 'a generation other than the current one cannot advance: OR001');
SELECT throws_ok($$SELECT outbox.advance('a', 0, 2, '110:110:', NULL, 0)$$, 'OR001', NULL,
                 'nor an older one');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 1, '110:110:', NULL, 0)$$, 'OR002',
                 'relay "a" position would go backwards: batch 1 is not after stored batch 1',
                 'the same batch again is refused: OR002');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 0, '110:110:', NULL, 0)$$, 'OR002', NULL,
                 'an older batch is refused: OR002');
SELECT throws_ok(format($$SELECT outbox.advance('a', 1, 2, '1:1:', '110:110:', %s)$$, (SELECT id FROM w1 WHERE n = 4)),
                 'OR002', NULL, 'a later batch that goes back inside the window is refused: OR002');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 2, '1:1:', NULL, 0)$$, 'OR002', NULL,
                 'leaving the open window back to its start is refused: OR002');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 2, '1:1:', '105:105:', 0)$$, 'OR002', NULL,
                 'switching to a shorter window is refused: OR002');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 2, '90:95:', NULL, 0)$$, 'OR002', NULL,
                 'a done snapshot older than the stored one is refused: OR002');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 2, '100000000:100000000:', NULL, 0)$$, 'OR003', NULL,
                 'a position ahead of the database''s transaction ids is refused: OR003');
SELECT throws_ok($$SELECT outbox.advance('nobody', 1, 2, '110:110:', NULL, 0)$$, 'OR005',
                 'relay "nobody" does not exist', 'advance of an unknown relay: OR005');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 2, NULL, NULL, 0)$$, '22023', NULL, 'a NULL done is refused');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 2, '110:110:', NULL, 7)$$, '22023',
                 'invalid position: after_id 7 without an open window', 'after_id without a window is refused');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 2, '110:110:', '100:100:', 7)$$, '22023', NULL,
                 'a window ending before it starts is refused');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 2, '110:110:', NULL, -1)$$, '22023', NULL,
                 'a negative after_id is refused');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 2, '110:110:', NULL, 0, -1)$$, '22023', NULL,
                 'a negative retention is refused');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 2, 'not a snapshot', NULL, 0)$$, '22P02', NULL,
                 'a malformed snapshot is refused');
SELECT results_eq($$SELECT batch_seq, pos_after_id FROM outbox.position_get('a')$$,
                  $$SELECT 1::bigint, id FROM w1 WHERE n = 5$$,
                  'none of the refused calls moved the position');

-- Finishing window 1 ----------------------------------------------------------------------
SELECT is(pg_temp.expect_move('1:1:', '110:110:', (SELECT id FROM w1 WHERE n = 5), '110:110:', NULL, 0),
          5::bigint, '(reference: the rest of window 1 is 5 rows)');
SELECT pg_temp.snap_rows();
SELECT is(outbox.advance('a', 1, 2, '110:110:', NULL, 0), 5::bigint,
          'finishing window 1 deletes the other 5 rows');
SELECT set_eq('SELECT id FROM gone', 'SELECT id FROM expected_gone', '... exactly those');
SELECT is((SELECT count(*)::int FROM outbox.event WHERE topic = 'w1'), 0, 'window 1 is gone');

-- A move across windows (a Kafka checkpoint ahead of the database) ------------------------
-- From (110:110:, -, 0) to window 3 after its 3rd row: all of window 2 and
-- the first 3 rows of window 3, whose ids are interleaved with window 2's.
SELECT is(pg_temp.expect_move('110:110:', NULL, 0, '120:120:', '130:130:', (SELECT id FROM w3 WHERE n = 3)),
          13::bigint, '(reference: window 2 and 3 rows of window 3)');
SELECT pg_temp.snap_rows();
SELECT is(outbox.advance('a', 1, 5, '120:120:', '130:130:', (SELECT id FROM w3 WHERE n = 3)), 13::bigint,
          'a move over two windows deletes 13 rows');
SELECT set_eq('SELECT id FROM gone', 'SELECT id FROM expected_gone',
              '... exactly the relayed ones, though their ids interleave with unrelayed rows');
SELECT set_eq($$SELECT id FROM outbox.event WHERE topic = 'w3'$$, $$SELECT id FROM w3 WHERE n > 3$$,
              'window 3''s rows after its 3rd are still there');

-- Retention: the position moves, rows stay; purge removes them later ------------------------
SELECT pg_temp.snap_rows();
SELECT is(outbox.advance('a', 1, 6, '130:130:', NULL, 0, 3600000), 0::bigint,
          'with retention advance deletes nothing');
SELECT is_empty('SELECT id FROM gone', '... and the rows are still there');
SELECT is((SELECT pos_done FROM outbox.position_get('a')), '130:130:', '... while the position moved');
UPDATE outbox.event SET created_at = now() - interval '2 hours'
WHERE id IN (SELECT id FROM w3 WHERE n IN (4, 5, 6));
SELECT is(outbox.purge('a', 3600000, 100), 3::bigint,
          'purge deletes relayed rows older than the retention (3 of them)');
SELECT is(outbox.purge('a', 3600000, 100), 0::bigint, '... and nothing younger');
SELECT is(outbox.purge('a', 0, 2), 2::bigint, 'purge stops at max_rows');
SELECT is(outbox.purge('a', 0, 100), 2::bigint, '... and goes on next time');
SELECT results_eq($$SELECT topic::text FROM outbox.event$$, $$VALUES ('later'::text)$$,
                  'purge never deletes a row the relay has not relayed');
SELECT throws_ok($$SELECT outbox.purge('nobody', 0, 10)$$, 'OR005', NULL, 'purge of an unknown relay: OR005');
SELECT throws_ok($$SELECT outbox.purge('a', 0, 0)$$, '22023', NULL, 'purge refuses max_rows 0');
SELECT throws_ok($$SELECT outbox.purge('a', -1, 10)$$, '22023', NULL, 'purge refuses a negative retention');

-- Lag and status ----------------------------------------------------------------------------
SELECT results_eq($$SELECT rows FROM outbox.lag('a')$$, $$VALUES (1::bigint)$$,
                  'lag counts the one committed row not relayed');
UPDATE outbox.event SET created_at = clock_timestamp() - interval '5 seconds' WHERE topic = 'later';
SELECT ok((SELECT oldest_age_ms BETWEEN 5000 AND 65000 FROM outbox.lag('a')),
          'lag gives the age of the oldest unrelayed row in ms');
INSERT INTO outbox.event (txid, topic) SELECT '501', 'later' FROM generate_series(1, 4);
SELECT results_eq($$SELECT rows FROM outbox.lag('a')$$, $$VALUES (5::bigint)$$, 'lag counts every such row');
SELECT results_eq(
    $$SELECT name, owner, generation, batch_seq, pos_done, pos_next, pos_after_id, lag_rows
      FROM outbox.status('a')$$,
    $$VALUES ('a'::text, 'me'::text, 1::bigint, 6::bigint, '130:130:'::text, NULL::text, 0::bigint, 5::bigint)$$,
    'status() shows the relay''s state and its lag');
SELECT ok((SELECT lease_expires_in_ms BETWEEN 1 AND 60000 AND lag_oldest_age_ms >= 5000
           FROM outbox.status('a')), 'status() shows the time left on the lease and the oldest row''s age');
SELECT throws_ok($$SELECT * FROM outbox.status('nobody')$$, 'OR005', NULL, 'status of an unknown relay: OR005');
SELECT throws_ok($$SELECT * FROM outbox.lag('nobody')$$, 'OR005', NULL, 'lag of an unknown relay: OR005');
SELECT is(outbox.advance('a', 1, 7, '600:600:', NULL, 0), 5::bigint, 'relaying the rest');
SELECT results_eq($$SELECT * FROM outbox.lag('a')$$, $$VALUES (0::bigint, 0::bigint)$$,
                  'nothing to relay: lag is 0 rows, age 0');

-- Two relays on one outbox (allowed explicitly): a row goes when both have it ------------------
INSERT INTO outbox.event (txid, topic) SELECT x::text::xid8, 'two' FROM generate_series(700, 709) AS x;
SELECT acquired FROM outbox.lease_acquire('b', 'other', 60000, true);
SELECT is(outbox.advance('b', 1, 1, '600:600:', NULL, 0), 0::bigint,
          'relay b catches up to where a is (nothing of the new rows relayed by a yet)');
SELECT is(outbox.advance('a', 1, 8, '705:705:', NULL, 0), 0::bigint,
          'a relays 700..704 but deletes nothing: b has not relayed them');
SELECT is(outbox.advance('b', 1, 2, '710:710:', NULL, 0), 5::bigint,
          'b relays 700..709 and deletes the 5 rows both have relayed');
SELECT is(outbox.purge('b', 0, 100), 0::bigint, 'purge by b keeps what a has not relayed');
SELECT is(outbox.advance('a', 1, 9, '710:710:', NULL, 0), 5::bigint, 'a catches up: the last 5 go');
SELECT is((SELECT count(*)::int FROM outbox.event WHERE topic = 'two'), 0, 'nothing left behind');
SELECT is(outbox.relay_forget('b'), true, 'b is forgotten');

-- position_reset, after OR003 --------------------------------------------------------------
-- A restored dump: the position and two rows carry ids from the old cluster,
-- far ahead of this one.
UPDATE outbox.relay_state SET pos_done = '100000000:100000000:' WHERE name = 'a';
INSERT INTO outbox.event (txid, topic) VALUES ('99999990', 'restored'), ('99999991', 'restored');
SELECT throws_ok($$SELECT outbox.window_open('a')$$, 'OR003', NULL, 'the relay is stuck on OR003');
SELECT throws_ok($$SELECT * FROM outbox.position_reset('a', 0, 'relay')$$, 'OR001', NULL,
                 'position_reset wants the current generation');
SELECT throws_ok($$SELECT * FROM outbox.position_reset('a', 1, 'maybe')$$, '22023', NULL,
                 'position_reset wants ''relay'' or ''skip''');
SELECT throws_ok($$SELECT * FROM outbox.position_reset('a', 1, 'relay', 9)$$, 'OR002', NULL,
                 'position_reset does not let batch_seq go backwards');
SELECT throws_ok($$SELECT * FROM outbox.position_reset('nobody', 1, 'relay')$$, 'OR005', NULL,
                 'position_reset of an unknown relay: OR005');
SELECT results_eq($$SELECT generation, batch_seq, pos_done, rows_restamped
                    FROM outbox.position_reset('a', 1, 'relay')$$,
                  $$VALUES (2::bigint, 10::bigint, '1:1:'::text, 2::bigint)$$,
                  'reset ''relay'': new generation, next batch, nothing relayed, 2 rows restamped');
SELECT ok((SELECT bool_and(txid = pg_current_xact_id()) FROM outbox.event WHERE topic = 'restored'),
          'restamped rows carry the reset''s own transaction id, which the next window reaches');
SELECT ok((SELECT lease_expires_at <= clock_timestamp() FROM outbox.relay_state WHERE name = 'a'),
          'the reset frees the lease (the old holder is fenced by the generation)');
SELECT lives_ok($$SELECT outbox.window_open('a')$$, 'the relay can open windows again');
UPDATE outbox.relay_state SET pos_done = '100000000:100000000:' WHERE name = 'a';
SELECT results_eq($$SELECT generation, batch_seq, rows_restamped FROM outbox.position_reset('a', 2, 'skip', 20)$$,
                  $$VALUES (3::bigint, 20::bigint, 0::bigint)$$,
                  'reset ''skip'' with a chosen batch_seq');
SELECT ok((SELECT bool_and(pg_visible_in_snapshot(e.txid, s.pos_done))
           FROM outbox.event AS e, outbox.relay_state AS s WHERE s.name = 'a'),
          '''skip'' counts every row present as relayed, the reset''s own included');
SELECT ok((SELECT NOT pg_visible_in_snapshot(pg_snapshot_xmax(pos_done), pos_done)
           FROM outbox.relay_state WHERE name = 'a'),
          '... and no transaction that starts after it');

SELECT * FROM finish();
ROLLBACK;
