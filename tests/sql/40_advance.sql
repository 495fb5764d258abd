-- 40_advance.sql: advance (fencing, monotony, which partitions it
-- truncates), retention and purge, lag, status, several relays on one
-- outbox, position_reset. Transaction ids are chosen by hand, as in
-- 30_window.sql. (42_rotate.sql goes into the truncation rules further.)
BEGIN;
SELECT plan(78);
\ir lib/partitions.sql

SELECT acquired FROM outbox.lease_acquire('a', 'me', 60000);

-- Rows, each window in a block (so a partition) of its own: window 1 =
-- transactions 100..109 (one row each) in block b1; window 2 = 110..119 and
-- window 3 = 120..129, whose rows interleave by id, in block b2; and one row
-- of a transaction that no window here reaches (500) in block b3, which the
-- id sequence is still in.
SELECT pg_temp.next_block() AS b1 \gset
INSERT INTO outbox.event (txid, topic, payload)
SELECT x::text::xid8, 'w1', '\x00' FROM generate_series(100, 109) AS x;
SELECT pg_temp.next_block() AS b2 \gset
INSERT INTO outbox.event (txid, topic, payload)
SELECT (CASE WHEN i % 2 = 0 THEN 110 + i / 2 ELSE 120 + i / 2 END)::text::xid8,
       CASE WHEN i % 2 = 0 THEN 'w2' ELSE 'w3' END, '\x00'
FROM generate_series(0, 19) AS i;
SELECT pg_temp.next_block() AS b3 \gset
INSERT INTO outbox.event (txid, topic, payload) VALUES ('500', 'later', '\x00');
SELECT results_eq(
    $$SELECT topic::text, tableoid::regclass::text, count(*) FROM outbox.event GROUP BY 1, 2 ORDER BY 1$$,
    format($$VALUES ('later', '%s', 1::bigint), ('w1', '%s', 10), ('w2', '%s', 10), ('w3', '%s', 10)$$,
           pg_temp.part_of(:b3), pg_temp.part_of(:b1), pg_temp.part_of(:b2), pg_temp.part_of(:b2)),
    '(the rows are in three partitions: window 1, windows 2 and 3, the later row)');

-- The rows a move from position O to position N relays, straight from the
-- definition: relayed(N) and not relayed(O), where relayed(P) = visible in
-- P.done, or visible in P.next with id <= P.after_id.
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
-- Rows that were there before the move and are gone now = what it truncated.
CREATE TEMP VIEW gone AS
    SELECT id FROM before_move EXCEPT SELECT id FROM outbox.event;

CREATE TEMP TABLE w1 AS SELECT id, row_number() OVER (ORDER BY id) AS n FROM outbox.event WHERE topic = 'w1';
CREATE TEMP TABLE w3 AS SELECT id, row_number() OVER (ORDER BY id) AS n FROM outbox.event WHERE topic = 'w3';

-- Half of window 1 ------------------------------------------------------------------
SELECT is(pg_temp.expect_move('1:1:', NULL, 0, '1:1:', '110:110:', (SELECT id FROM w1 WHERE n = 5)), 5::bigint,
          '(reference: the first half of window 1 is 5 rows)');
SELECT pg_temp.snap_rows();
SELECT pg_temp.untried();
SELECT is(outbox.advance('a', 1, 1, '1:1:', '110:110:', (SELECT id FROM w1 WHERE n = 5)), 0::bigint,
          'advance into window 1 up to its 5th row truncates nothing: its partition holds 5 rows not relayed yet');
SELECT is_empty('SELECT id FROM gone', '... every row stays, the 5 it relayed included');
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
SELECT pg_temp.untried();
SELECT is(outbox.advance('a', 1, 2, '110:110:', NULL, 0), 1::bigint,
          'finishing window 1 truncates one partition');
SELECT set_eq('SELECT id FROM gone', 'SELECT id FROM w1',
              '... window 1''s, every row of it relayed now: all 10 rows are gone, no other row');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b1)), 0::bigint, 'window 1''s partition is empty');

-- A move across windows (a Kafka checkpoint ahead of the database) ------------------------
-- From (110:110:, -, 0) to window 3 after its 3rd row: all of window 2 and
-- the first 3 rows of window 3, whose ids are interleaved with window 2's.
-- Transaction 128 was still running when window 3's end was taken.
SELECT is(pg_temp.expect_move('110:110:', NULL, 0, '120:120:', '128:130:128', (SELECT id FROM w3 WHERE n = 3)),
          13::bigint, '(reference: window 2 and 3 rows of window 3)');
SELECT pg_temp.snap_rows();
SELECT pg_temp.untried();
SELECT is(outbox.advance('a', 1, 5, '120:120:', '128:130:128', (SELECT id FROM w3 WHERE n = 3)), 0::bigint,
          'a move over two windows truncates nothing: their partition still holds window 3''s later rows');
SELECT is_empty('SELECT id FROM gone', '... the 13 rows it relayed stay, with the rows their ids interleave with');
SELECT set_eq($$SELECT id FROM outbox.event WHERE topic = 'w3'$$, $$SELECT id FROM w3$$,
              'window 3''s rows are all still there');
-- Window 3 finished: every row of windows 2 and 3 is relayed but
-- transaction 128's, which the next window will read. Between windows the
-- partition is judged (no open window to skip it for): held back by that
-- one row, whose id is below others that are relayed.
SELECT is(pg_temp.expect_move('120:120:', '128:130:128', (SELECT id FROM w3 WHERE n = 3), '128:130:128', NULL, 0),
          6::bigint, '(reference: finishing window 3 relays 6 more rows, not transaction 128''s)');
SELECT ok((SELECT id FROM outbox.event WHERE txid = '128') < (SELECT max(id) FROM w3),
          '(transaction 128''s row is not the last of the partition)');
SELECT pg_temp.untried();
SELECT is(outbox.advance('a', 1, 6, '128:130:128', NULL, 0), 0::bigint,
          'finishing window 3 truncates nothing: one row of windows 2 and 3''s partition is not relayed');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b2)), 20::bigint, '... all 20 of its rows are still there');

-- Retention: the position moves, rows stay; purge removes them later ------------------------
SELECT pg_temp.snap_rows();
SELECT pg_temp.untried();
SELECT is(outbox.advance('a', 1, 7, '130:130:', NULL, 0, 3600000), 0::bigint,
          'with retention advance truncates nothing, though windows 2 and 3''s partition is all relayed now');
SELECT is_empty('SELECT id FROM gone', '... and the rows are still there');
SELECT is((SELECT pos_done FROM outbox.position_get('a')), '130:130:', '... while the position moved');
UPDATE outbox.event SET created_at = now() - interval '2 hours'
WHERE id IN (SELECT id FROM w3 WHERE n IN (4, 5, 6));
SELECT is(outbox.purge('a', 3600000, 100), 3::bigint,
          'purge deletes relayed rows older than the retention (3 of them)');
SELECT is(outbox.purge('a', 3600000, 100), 0::bigint, '... and nothing younger');
SELECT is(outbox.purge('a', 0, 2), 2::bigint, 'purge stops at max_rows');
SELECT is(outbox.purge('a', 0, 100), 15::bigint, '... and goes on next time (the other 15 of windows 2 and 3)');
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
    $$VALUES ('a'::text, 'me'::text, 1::bigint, 7::bigint, '130:130:'::text, NULL::text, 0::bigint, 5::bigint)$$,
    'status() shows the relay''s state and its lag');
SELECT ok((SELECT lease_expires_in_ms BETWEEN 1 AND 60000 AND lag_oldest_age_ms >= 5000
           FROM outbox.status('a')), 'status() shows the time left on the lease and the oldest row''s age');
SELECT throws_ok($$SELECT * FROM outbox.status('nobody')$$, 'OR005', NULL, 'status of an unknown relay: OR005');
SELECT throws_ok($$SELECT * FROM outbox.lag('nobody')$$, 'OR005', NULL, 'lag of an unknown relay: OR005');
SELECT pg_temp.untried();
SELECT pg_temp.next_block();  -- advance() leaves the block that still receives ids
SELECT is(outbox.advance('a', 1, 8, '600:600:', NULL, 0), 1::bigint,
          'relaying the rest truncates their partition (windows 2 and 3''s, purged, is empty: not counted)');
SELECT is((SELECT count(*)::int FROM outbox.event), 0, '... nothing is left');
SELECT results_eq($$SELECT * FROM outbox.lag('a')$$, $$VALUES (0::bigint, 0::bigint)$$,
                  'nothing to relay: lag is 0 rows, age 0');

-- Two relays on one outbox (allowed explicitly): a row goes when both have it ------------------
INSERT INTO outbox.event (txid, topic) SELECT x::text::xid8, 'two' FROM generate_series(700, 709) AS x;
SELECT acquired FROM outbox.lease_acquire('b', 'other', 60000, true);
SELECT pg_temp.untried();
SELECT is(outbox.advance('b', 1, 1, '600:600:', NULL, 0), 0::bigint,
          'relay b catches up to where a is (nothing of the new rows relayed by a yet)');
SELECT pg_temp.untried();
SELECT is(outbox.advance('a', 1, 9, '705:705:', NULL, 0), 0::bigint,
          'a relays 700..704 but truncates nothing: b has not relayed them');
SELECT pg_temp.untried();
SELECT is(outbox.advance('b', 1, 2, '710:710:', NULL, 0), 0::bigint,
          'b relays 700..709 but truncates nothing: a has not relayed 705..709');
SELECT is((SELECT count(*)::int FROM outbox.event WHERE topic = 'two'), 10, '... all 10 rows are there');
SELECT is(outbox.purge('b', 0, 100), 5::bigint, 'purge by b deletes the 5 rows both have relayed');
SELECT results_eq($$SELECT txid::text::int FROM outbox.event WHERE topic = 'two' ORDER BY id$$,
                  'SELECT generate_series(705, 709)', '... and keeps what a has not relayed');
SELECT pg_temp.untried();
SELECT pg_temp.next_block();
SELECT is(outbox.advance('a', 1, 10, '710:710:', NULL, 0), 1::bigint, 'a catches up: their partition goes');
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
SELECT throws_ok($$SELECT * FROM outbox.position_reset('a', 1, 'maybe')$$, '22023',
                 'p_existing must be ''relay'', ''unrelayed'' or ''skip'', not maybe',
                 'position_reset wants ''relay'', ''unrelayed'' or ''skip''');
SELECT throws_ok($$SELECT * FROM outbox.position_reset('a', 1, 'relay', 10)$$, 'OR002', NULL,
                 'position_reset does not let batch_seq go backwards');
SELECT throws_ok($$SELECT * FROM outbox.position_reset('nobody', 1, 'relay')$$, 'OR005', NULL,
                 'position_reset of an unknown relay: OR005');
SELECT results_eq($$SELECT generation, batch_seq, pos_done, rows_restamped, rows_deleted
                    FROM outbox.position_reset('a', 1, 'relay')$$,
                  $$VALUES (2::bigint, 11::bigint, '1:1:'::text, 2::bigint, 0::bigint)$$,
                  'reset ''relay'': new generation, next batch, nothing relayed, 2 rows restamped, none deleted');
SELECT is((SELECT count(*)::int FROM outbox.event WHERE topic = 'restored'), 2,
          '... the rows the old position called relayed are still there');
SELECT ok((SELECT bool_and(txid = pg_current_xact_id()) FROM outbox.event WHERE topic = 'restored'),
          'restamped rows carry the reset''s own transaction id, which the next window reaches');
SELECT ok((SELECT lease_expires_at <= clock_timestamp() FROM outbox.relay_state WHERE name = 'a'),
          'the reset frees the lease (the old holder is fenced by the generation)');
SELECT lives_ok($$SELECT outbox.window_open('a')$$, 'the relay can open windows again');
UPDATE outbox.relay_state SET pos_done = '100000000:100000000:' WHERE name = 'a';
SELECT results_eq($$SELECT generation, batch_seq, rows_restamped, rows_deleted
                    FROM outbox.position_reset('a', 2, 'skip', 20)$$,
                  $$VALUES (3::bigint, 20::bigint, 0::bigint, 0::bigint)$$,
                  'reset ''skip'' with a chosen batch_seq');
SELECT ok((SELECT bool_and(pg_visible_in_snapshot(e.txid, s.pos_done))
           FROM outbox.event AS e, outbox.relay_state AS s WHERE s.name = 'a'),
          '''skip'' counts every row present as relayed, the reset''s own included');
SELECT ok((SELECT NOT pg_visible_in_snapshot(pg_snapshot_xmax(pos_done), pos_done)
           FROM outbox.relay_state WHERE name = 'a'),
          '... and no transaction that starts after it');

SELECT * FROM finish();
ROLLBACK;
