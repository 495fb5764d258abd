-- 45_advance_idempotent.sql: advance() called again with the position it
-- already stored (its reply was lost after the commit) answers NULL, "already
-- applied", and truncates nothing; every other move to or behind the stored
-- batch is still refused (OR002). Transaction ids are chosen by hand.
BEGIN;
SELECT plan(20);
\ir lib/partitions.sql

SELECT acquired FROM outbox.lease_acquire('a', 'me', 60000);

-- Window (1:1:, 110:110:] holds transactions 100..109, one row each, in a
-- block of their own (the sequence moves on to the next block after them).
SELECT pg_temp.next_block() AS b1 \gset
INSERT INTO outbox.event (txid, topic, payload)
SELECT x::text::xid8, 'w1', '\x00' FROM generate_series(100, 109) AS x;
CREATE TEMP TABLE w1 AS SELECT id, row_number() OVER (ORDER BY id) AS n FROM outbox.event;
SELECT pg_temp.next_block();

-- Batch 1: into the window, up to its 4th row.
SELECT pg_temp.untried();
SELECT is(outbox.advance('a', 1, 1, '1:1:', '110:110:', (SELECT id FROM w1 WHERE n = 4)), 0::bigint,
          'batch 1 truncates nothing: 6 rows of its partition are not relayed');
SELECT is((SELECT count(*)::int FROM outbox.event), 10, '... all 10 rows stay');
CREATE TEMP TABLE left_after_1 AS SELECT id FROM outbox.event;

-- The same call again: the lost-reply retry.
SELECT is(outbox.advance('a', 1, 1, '1:1:', '110:110:', (SELECT id FROM w1 WHERE n = 4)), NULL::bigint,
          'the same advance again succeeds with NULL: already applied');
SELECT set_eq('SELECT id FROM outbox.event', 'SELECT id FROM left_after_1',
              '... and truncates nothing');
SELECT results_eq($$SELECT batch_seq, pos_done, pos_next, pos_after_id FROM outbox.position_get('a')$$,
                  $$SELECT 1::bigint, '1:1:'::text, '110:110:'::text, id FROM w1 WHERE n = 4$$,
                  '... and leaves the position as it was');
SELECT is(outbox.advance('a', 1, 1, '1:1:', '110:110:', (SELECT id FROM w1 WHERE n = 4), 60000), NULL::bigint,
          'also with a retention (the retry may come from a relay with retention on)');

-- Same batch number, another position: refused.
SELECT throws_ok($$SELECT outbox.advance('a', 1, 1, '1:1:', '110:110:', (SELECT id FROM w1 WHERE n = 6))$$,
                 'OR002', NULL, 'the same batch with a later after_id is refused (OR002)');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 1, '1:1:', '110:110:', (SELECT id FROM w1 WHERE n = 2))$$,
                 'OR002', NULL, 'the same batch with an earlier after_id is refused');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 1, '110:110:', NULL, 0)$$,
                 'OR002', NULL, 'the same batch with another snapshot is refused');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 1, '1:1:', NULL, 0)$$,
                 'OR002', NULL, 'the same batch with no open window is refused');
SELECT set_eq('SELECT id FROM outbox.event', 'SELECT id FROM left_after_1',
              '... none of them truncated anything');

-- Batch 2, then the retries of batch 1 are older: refused.
SELECT pg_temp.untried();
SELECT is(outbox.advance('a', 1, 2, '110:110:', NULL, 0), 1::bigint,
          'batch 2 closes the window and truncates the partition: all 10 rows are relayed now');
SELECT is((SELECT count(*)::int FROM outbox.event), 0, '... they are gone');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 1, '1:1:', '110:110:', (SELECT id FROM w1 WHERE n = 4))$$,
                 'OR002', NULL, 'batch 1''s exact position again, once batch 2 is stored, is refused');
SELECT throws_ok($$SELECT outbox.advance('a', 1, 0, '1:1:', NULL, 0)$$,
                 'OR002', NULL, 'an older batch is refused');
-- A retry is a no-op: it does not truncate either, even a partition that
-- is all relayed (the relay's idle cleanup() takes it).
SELECT pg_temp.next_block() AS b2 \gset
INSERT INTO outbox.event (txid, topic, payload) VALUES ('105', 'late', '\x00');
SELECT pg_temp.next_block();
SELECT pg_temp.untried();
SELECT is(outbox.advance('a', 1, 2, '110:110:', NULL, 0), NULL::bigint,
          'batch 2 again: already applied');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:b2)), 1::bigint,
          '... and its partition''s row, relayed, is still there');

-- The generation still fences the retry: another relay took over.
SELECT outbox.lease_release('a', 1);
SELECT acquired FROM outbox.lease_acquire('a', 'other', 60000);
SELECT throws_ok($$SELECT outbox.advance('a', 1, 2, '110:110:', NULL, 0)$$,
                 'OR001', NULL, 'the same advance from a fenced generation is refused (OR001), not "already applied"');
SELECT is(outbox.advance('a', 2, 2, '110:110:', NULL, 0), NULL::bigint,
          'the new generation calling the stored position: already applied (harmless)');
SELECT is((SELECT batch_seq FROM outbox.position_get('a')), 2::bigint, 'the position is still batch 2');

SELECT * FROM finish();
ROLLBACK;
