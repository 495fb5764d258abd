-- 42_rotate.sql: when a partition of outbox.event is truncated (schema
-- version 5): only once every committed row in it is relayed by every relay
-- name; not with a retention; at most once a second per partition, but for
-- a finished block the position has read to its end, or cleanup(). And the
-- operator functions that start a position over: relay_forget() and
-- position_reset(..., 'unrelayed') delete the rows every relay has relayed,
-- which may still wait for their partition. Transaction ids are chosen by
-- hand, as in 40_advance.sql; 43_rotate_sessions.sql has real writers.
BEGIN;
SELECT plan(54);
\ir lib/partitions.sql

SELECT acquired FROM outbox.lease_acquire('r', 'me', 60000);

-- One row not relayed keeps its partition ------------------------------------------------
-- 100 rows in block b1: 99 of transaction 100, and in their middle (by id)
-- one of transaction 300. The sequence moves on: b1 is a finished block.
SELECT pg_temp.next_block() AS b1 \gset
INSERT INTO outbox.event (txid, topic) SELECT '100', 'one.relayed' FROM generate_series(1, 50);
INSERT INTO outbox.event (txid, topic) VALUES ('300', 'one.late');
INSERT INTO outbox.event (txid, topic) SELECT '100', 'one.relayed' FROM generate_series(1, 49);
SELECT pg_temp.next_block();
SELECT ok((SELECT id FROM outbox.event WHERE topic = 'one.late')
          BETWEEN (SELECT min(id) FROM outbox.event) AND (SELECT max(id) FROM outbox.event),
          '(the row of transaction 300 is between the others by id)');

SELECT pg_temp.untried();
SELECT is(pg_temp.adv('r', '200:200:'), 0::bigint,
          'advance to done 200:200: truncates nothing: one committed row of the partition is not relayed');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b1)), 100::bigint, '... all 100 rows stay, the 99 relayed ones too');
SELECT pg_temp.untried();
SELECT is(outbox.cleanup('r'), 0, 'cleanup() does not truncate it either');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b1)), 100::bigint, '... the rows stay');
-- In a window that has read past the end of the block: transaction 300 was
-- running when the window's end was taken, so its row is not relayed,
-- although its id is below after_id.
SELECT pg_temp.untried();
SELECT is(pg_temp.adv('r', '200:200:', '300:310:300', (:b1 + 1) * 65536 - 1), 0::bigint,
          'inside a window read past the block: a row of a transaction the window''s end does not see keeps it');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b1)), 100::bigint, '... the rows stay');
SELECT pg_temp.untried();
SELECT is(pg_temp.adv('r', '320:320:'), 1::bigint, 'once that row is relayed the partition is truncated');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b1)), 0::bigint, '... it is empty');

-- At most once a second, but ... ---------------------------------------------------------
-- Blocks b2 and b3, all relayed (transaction 100), finished.
CREATE FUNCTION pg_temp.tried_now(p_block bigint) RETURNS void LANGUAGE sql AS $$
    UPDATE outbox.event_partition SET tried_at = clock_timestamp() WHERE part = p_block % 4;
$$;
SELECT pg_temp.next_block() AS b2 \gset
INSERT INTO outbox.event (txid, topic) SELECT '100', 'rate' FROM generate_series(1, 10);
SELECT pg_temp.next_block() AS b3 \gset
INSERT INTO outbox.event (txid, topic) SELECT '100', 'rate' FROM generate_series(1, 10);
SELECT pg_temp.next_block();
-- The two steps in one function: no second passes between them.
CREATE FUNCTION pg_temp.adv_tried_now(p_blocks bigint[], p_done text) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.tried_now(b) FROM unnest(p_blocks) AS b;
    RETURN pg_temp.adv('r', p_done);
END
$$;
SELECT is(pg_temp.adv_tried_now(ARRAY[:b2, :b3]::bigint[], '320:320:'), 0::bigint,
          'a fully relayed partition tried less than a second ago is not tried again by advance()');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b2)) + pg_temp.rows_in(pg_temp.part_of(:b3)), 20::bigint,
          '... both partitions keep their rows');
UPDATE outbox.event_partition SET tried_at = clock_timestamp() - interval '1.1 seconds' WHERE part = :b2 % 4;
SELECT is(pg_temp.adv_tried_now(ARRAY[:b3]::bigint[], '320:320:'), 1::bigint,
          'one tried more than a second ago is');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b2)), 0::bigint, '... that one is empty');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b3)), 10::bigint, '... the one tried just now is not');
CREATE FUNCTION pg_temp.cleanup_tried_now(p_block bigint) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.tried_now(p_block);
    RETURN outbox.cleanup('r');
END
$$;
SELECT is(pg_temp.cleanup_tried_now(:b3), 1, 'cleanup() (the relay, idle) tries it although it was tried just now');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b3)), 0::bigint, '... and truncates it');
-- Called from a statement that itself reads the partition (a function over
-- outbox.event): TRUNCATE would fail there (object in use); the partition
-- is skipped, without an error, and goes at the next call of its own.
SELECT pg_temp.next_block() AS b9 \gset
INSERT INTO outbox.event (txid, topic) SELECT '100', 'in.use' FROM generate_series(1, 5);
SELECT pg_temp.next_block();
SELECT pg_temp.untried();
SELECT is((SELECT outbox.cleanup('r') FROM outbox.event WHERE topic = 'in.use' LIMIT 1), 0,
          'cleanup() from a statement that reads the partition skips it, no error');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b9)), 5::bigint, '... its rows stay');
SELECT pg_temp.untried();
SELECT is(outbox.cleanup('r'), 1, '... and the next call, a statement of its own, truncates it');
-- A window whose rows are in the block after b4 (transaction 400): entering
-- it, the position has read b4 to its end.
SELECT pg_temp.next_block() AS b4 \gset
INSERT INTO outbox.event (txid, topic) SELECT '100', 'rate' FROM generate_series(1, 10);
SELECT pg_temp.next_block() AS b5 \gset
INSERT INTO outbox.event (txid, topic) SELECT '400', 'window' FROM generate_series(1, 10);
CREATE FUNCTION pg_temp.adv_window_tried_now(p_block bigint, p_after_id bigint) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.tried_now(p_block);
    RETURN pg_temp.adv('r', '320:320:', '410:410:', p_after_id);
END
$$;
SELECT min(id) + 2 AS window_3rd FROM outbox.event WHERE topic = 'window' \gset
SELECT is(pg_temp.adv_window_tried_now(:b4, :window_3rd), 1::bigint,
          'a finished block the window has read to its end is tried at once, also within the second');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b4)), 0::bigint, '... and truncated');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b5)), 10::bigint, '... the window''s own block stays');
SELECT pg_temp.untried();
SELECT is(pg_temp.adv('r', '410:410:'), 0::bigint,
          'finishing the window leaves its block, the one that still receives ids, to cleanup()');
SELECT is(outbox.cleanup('r'), 1, '... which truncates it (the relay, idle)');
SELECT is((SELECT count(*)::int FROM outbox.event), 0, '... nothing is left');

-- Retention ----------------------------------------------------------------------------------
SELECT pg_temp.next_block() AS b6 \gset
INSERT INTO outbox.event (txid, topic) SELECT '100', 'kept' FROM generate_series(1, 5);
SELECT pg_temp.next_block();
SELECT pg_temp.untried();
SELECT is(pg_temp.adv('r', '410:410:', NULL, 0, 60000), 0::bigint,
          'with a retention advance truncates nothing, though a partition is all relayed');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b6)), 5::bigint, '... its rows stay (purge deletes them later)');
SELECT pg_temp.untried();
SELECT is(pg_temp.adv('r', '410:410:'), 1::bigint, 'the same position without retention truncates it');

-- Two relay names ----------------------------------------------------------------------------
SELECT acquired FROM outbox.lease_acquire('s', 'other', 60000, true);
SELECT is(pg_temp.adv('s', '410:410:', NULL, 0, 60000), 0::bigint, '(relay s catches up to r, keeping rows)');
SELECT pg_temp.next_block() AS b7 \gset
INSERT INTO outbox.event (txid, topic) SELECT x::text::xid8, 'two' FROM generate_series(500, 509) AS x;
SELECT pg_temp.next_block();
SELECT pg_temp.untried();
SELECT is(pg_temp.adv('r', '520:520:'), 0::bigint, 'r relays every row of a partition: it stays, s has not');
SELECT pg_temp.untried();
SELECT is(pg_temp.adv('s', '505:505:'), 0::bigint, 's relays half of them: it stays');
SELECT pg_temp.untried();
SELECT is(outbox.cleanup('r') + outbox.cleanup('s'), 0, 'cleanup() by either relay leaves it');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b7)), 10::bigint, '... all 10 rows are there');
SELECT pg_temp.untried();
SELECT is(pg_temp.adv('s', '520:520:'), 1::bigint, 'once both relays have relayed all of it, it goes');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b7)), 0::bigint, '... it is empty');

-- relay_forget(): the rows every relay has relayed go first -----------------------------------
-- Rows of transaction 600 (relayed by r and s), 610 (by r only) and 620 (by
-- neither), kept in their partition by the retention.
SELECT pg_temp.next_block() AS b8 \gset
INSERT INTO outbox.event (txid, topic)
SELECT x::text::xid8, 'forget' FROM generate_series(600, 620, 10) AS x, generate_series(1, 3);
SELECT is(pg_temp.adv('r', '615:615:', NULL, 0, 60000) + pg_temp.adv('s', '605:605:', NULL, 0, 60000), 0::bigint,
          '(r relays 600 and 610, s relays 600; retention keeps the rows)');
SELECT is(outbox.relay_forget('nobody'), false, 'relay_forget() of an unknown name returns false');
SELECT is((SELECT count(*)::int FROM outbox.event), 9, '... and deletes nothing');
SELECT is(outbox.relay_forget('s'), true, 'relay_forget(''s'')');
SELECT results_eq('SELECT txid::text::int, count(*)::int FROM outbox.event GROUP BY 1 ORDER BY 1',
                  'VALUES (610, 3), (620, 3)',
                  '... deleted exactly the rows both relays had relayed (600); 610 (r only) and 620 stay');
SELECT is((SELECT count(*)::int FROM outbox.relay_state WHERE name = 's'), 0, '... and s''s state');
SELECT is(outbox.relay_forget('r'), true, 'relay_forget(''r''), the last relay');
SELECT results_eq('SELECT txid::text::int, count(*)::int FROM outbox.event GROUP BY 1 ORDER BY 1',
                  'VALUES (620, 3)', '... deleted the rows r had relayed (610); the unrelayed ones stay');

-- position_reset(..., 'unrelayed') -----------------------------------------------------------
-- A new relay r relays 620 (kept by the retention); 630 is not relayed.
SELECT acquired FROM outbox.lease_acquire('r', 'me', 60000);
INSERT INTO outbox.event (txid, topic) SELECT '630', 'forget' FROM generate_series(1, 2);
SELECT is(pg_temp.adv('r', '625:625:', NULL, 0, 60000), 0::bigint, '(r relays 620, keeping the rows)');
SELECT results_eq($$SELECT pos_done, rows_restamped, rows_deleted FROM outbox.position_reset('r', 1, 'relay')$$,
                  $$VALUES ('1:1:'::text, 0::bigint, 0::bigint)$$,
                  'position_reset ''relay'' starts at 1:1: and deletes nothing');
SELECT is((SELECT count(*)::int FROM outbox.event), 5, '... every row is there to be relayed again');
SELECT is(pg_temp.adv('r', '625:625:', NULL, 0, 60000), 0::bigint, '(r relays 620 again)');
SELECT acquired FROM outbox.lease_acquire('s', 'other', 60000, true);
SELECT results_eq($$SELECT pos_done, rows_deleted FROM outbox.position_reset('r', 2, 'unrelayed')$$,
                  $$VALUES ('1:1:'::text, 0::bigint)$$,
                  'position_reset ''unrelayed'' deletes nothing while another relay has relayed nothing');
SELECT is(outbox.relay_forget('s'), true, '(s is forgotten: it had relayed nothing, nothing is deleted)');
SELECT is((SELECT count(*)::int FROM outbox.event), 5, '(all 5 rows are there)');
SELECT is(pg_temp.adv('r', '625:625:', NULL, 0, 60000), 0::bigint, '(r relays 620 once more)');
SELECT batch_seq AS r_batch FROM outbox.position_get('r') \gset
SELECT results_eq($$SELECT generation, batch_seq, pos_done, rows_restamped, rows_deleted
                    FROM outbox.position_reset('r', 3, 'unrelayed')$$,
                  format($$VALUES (4::bigint, %s::bigint, '1:1:'::text, 0::bigint, 3::bigint)$$, :r_batch + 1),
                  'position_reset ''unrelayed'': new generation, next batch, nothing relayed, 3 rows deleted');
SELECT results_eq('SELECT txid::text::int, count(*)::int FROM outbox.event GROUP BY 1 ORDER BY 1',
                  'VALUES (630, 2)', '... the relayed rows (620); the unrelayed ones (630) stay, to be relayed');
SELECT is((SELECT pos_next FROM outbox.position_get('r')), NULL, '... the position is between windows');

SELECT * FROM finish();
ROLLBACK;
