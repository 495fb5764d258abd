-- 43_rotate_sessions.sql: partitions and real sessions (dblink). A writer's
-- transaction open in a partition, or a reader's, keeps it: rotate() takes
-- its ACCESS EXCLUSIVE lock with NOWAIT (it never waits for a writer, and a
-- writer never loses a row), and truncates the other partitions. A row
-- committed later is there, unrelayed, and its partition goes once it is
-- relayed. Inside a window an advance in the same block does not try
-- again. Nothing is truncated under REPEATABLE READ or SERIALIZABLE.
-- Autocommit, so that the sessions see each other's commits; cleans up.
\ir lib/dblink.sql
\ir lib/partitions.sql
SELECT plan(32);

-- A rotate() that waited for a writer's lock would wait for ever here (this
-- session drives the writer): the statement timeout turns that into a failure.
SET statement_timeout = '20s';
DELETE FROM outbox.event;
DELETE FROM outbox.relay_state;
SELECT acquired FROM outbox.lease_acquire('x', 'test', 600000);
SELECT pg_temp.connect('w');

-- Relay every row committed now (done = the current snapshot).
CREATE FUNCTION pg_temp.relay_all(p_retention_ms bigint DEFAULT 0) RETURNS bigint LANGUAGE sql AS $$
    SELECT pg_temp.adv('x', pg_current_snapshot()::text, NULL, 0, p_retention_ms);
$$;
CREATE FUNCTION pg_temp.publish(p_conn text, p_payload text) RETURNS bigint LANGUAGE sql AS $$
    SELECT t.id FROM dblink(p_conn, format($q$SELECT outbox.publish('rot.t', 'k', %L)$q$, p_payload)) AS t(id bigint);
$$;

-- A writer's transaction open in partition P ----------------------------------------------
-- P (block bp) gets 5 committed rows and the open writer's row; Q (block
-- bq) 5 committed rows; the sequence moves on to a third block.
SELECT pg_temp.next_block() AS bp \gset
INSERT INTO outbox.event (topic, payload) SELECT 'rot.t', 'committed' FROM generate_series(1, 5);
SELECT pg_temp.exec('w', 'BEGIN');
SELECT pg_temp.publish('w', 'open') AS open_id \gset
SELECT pg_temp.next_block() AS bq \gset
INSERT INTO outbox.event (topic, payload) SELECT 'rot.t', 'committed' FROM generate_series(1, 5);
SELECT pg_temp.next_block();
SELECT is(pg_temp.part_of(:open_id / 65536), pg_temp.part_of(:bp), '(the open writer''s row went into P)');

SELECT pg_temp.untried();
SELECT is(pg_temp.relay_all(), 1::bigint,
          'advance with a writer open in P truncates Q only, without waiting (P''s lock is refused)');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:bq)), 0::bigint, '... Q is empty');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:bp)), 5::bigint, '... P keeps its 5 committed rows');
SELECT pg_temp.untried();
SELECT is(outbox.cleanup('x'), 0, 'cleanup() leaves P too');
SELECT pg_temp.exec('w', 'COMMIT');
SELECT results_eq(format('SELECT payload FROM outbox.event WHERE id = %s', :open_id),
                  $$VALUES ('open'::bytea)$$, 'after the writer commits, its row is in the table: not lost');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:bp)), 6::bigint, '... in P, with the 5 others');
SELECT results_eq($$SELECT rows FROM outbox.lag('x')$$, $$VALUES (1::bigint)$$, '... and it is not relayed (lag 1)');
SELECT pg_temp.untried();
SELECT is(outbox.cleanup('x'), 0, 'cleanup() leaves P while that row is not relayed');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:bp)), 6::bigint, '... all 6 rows stay');
SELECT pg_temp.untried();
SELECT is(pg_temp.relay_all(), 1::bigint, 'once the position relays it, advance truncates P');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:bp)), 0::bigint, '... P is empty');

-- The open writer's row is the only row of its block -----------------------------------------
-- Nothing committed to truncate while it is open; once it is committed and
-- relayed, its partition must still go (not be taken for done).
SELECT pg_temp.next_block() AS bs \gset
SELECT pg_temp.exec('w', 'BEGIN');
SELECT pg_temp.publish('w', 'alone') AS alone_id \gset
SELECT pg_temp.next_block();
SELECT pg_temp.untried();
SELECT is(outbox.cleanup('x'), 0, 'a partition whose only row is uncommitted: nothing to truncate');
SELECT pg_temp.exec('w', 'COMMIT');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:bs)), 1::bigint, 'the writer commits: its row is there');
SELECT pg_temp.untried();
SELECT is(pg_temp.relay_all(), 1::bigint, 'once it is relayed, advance truncates its partition');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:bs)), 0::bigint, '... it is empty');

-- A reader holds a partition; inside a window only a new block tries again ---------------------
-- Block bv: 4 rows, relayed by done = snapshot v_done. Block bw: the
-- window's 6 rows, committed after it; the sequence stays in bw.
SELECT pg_temp.next_block() AS bv \gset
INSERT INTO outbox.event (topic, payload) SELECT 'rot.t', 'before' FROM generate_series(1, 4);
SELECT pg_current_snapshot() AS v_done \gset
SELECT pg_temp.next_block() AS bw \gset
INSERT INTO outbox.event (topic, payload) SELECT 'rot.t', 'window' FROM generate_series(1, 6);
SELECT pg_current_snapshot() AS v_next \gset
CREATE TEMP TABLE win AS
SELECT id, row_number() OVER (ORDER BY id) AS n FROM outbox.event WHERE payload = 'window';
SELECT is(pg_temp.adv('x', :'v_done', NULL, 0, 60000), 0::bigint, '(the relay is at v_done; rows kept)');
SELECT pg_temp.exec('w', 'BEGIN');
SELECT t.n FROM dblink('w', format('SELECT count(*) FROM %s', pg_temp.part_of(:bv))) AS t(n bigint);
SELECT pg_temp.untried();
SELECT is(pg_temp.adv('x', :'v_done', :'v_next', (SELECT id FROM win WHERE n = 2)), 0::bigint,
          'entering the window: bv is all relayed but a reader holds it (lock refused)');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:bv)), 4::bigint, '... its rows stay');
SELECT pg_temp.exec('w', 'COMMIT');
SELECT pg_temp.untried();
SELECT is(pg_temp.adv('x', :'v_done', :'v_next', (SELECT id FROM win WHERE n = 4)), 0::bigint,
          'the reader is gone, but an advance in the same window and block does not try again');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:bv)), 4::bigint, '... the rows stay');
SELECT is(pg_temp.adv('x', :'v_done', :'v_next', (SELECT id FROM win WHERE n = 6)), 1::bigint,
          'one that has read every id assigned so far does: bv goes (bw, the block that still receives ids, waits)');
SELECT is(outbox.cleanup('x'), 1, '... and cleanup() takes bw, read to its last row');
SELECT is((SELECT count(*)::int FROM outbox.event), 0, '... nothing is left');

-- REPEATABLE READ and SERIALIZABLE: no truncation ----------------------------------------------
-- Under the lock, rotate() checks again with a snapshot taken after the
-- lock; a transaction's first snapshot would miss a writer that committed
-- in between. So it truncates nothing there (and warns).
SELECT pg_temp.next_block() AS bu \gset
INSERT INTO outbox.event (topic, payload) SELECT 'rot.t', 'iso' FROM generate_series(1, 3);
SELECT pg_temp.next_block();
SELECT is(pg_temp.relay_all(60000), 0::bigint, '(the relay relays them; rows kept)');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.untried();
SELECT is(outbox.cleanup('x'), 0, 'cleanup() in a REPEATABLE READ transaction truncates nothing');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:bu)), 3::bigint, '... the rows stay');
COMMIT;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT pg_temp.untried();
SELECT is(outbox.cleanup('x'), 0, '... nor in a SERIALIZABLE one');
SELECT is(pg_temp.relay_all(), 0::bigint, '... nor does advance()');
COMMIT;
SELECT is(pg_temp.rows_in(pg_temp.part_of(:bu)), 3::bigint, '... the rows stay');
SELECT pg_temp.untried();
SELECT is(outbox.cleanup('x'), 1, 'the same call at READ COMMITTED truncates the partition');
SELECT is(pg_temp.rows_in(pg_temp.part_of(:bu)), 0::bigint, '... it is empty');

SELECT dblink_disconnect('w');
DELETE FROM outbox.event;
DELETE FROM outbox.relay_state;
SELECT * FROM finish();
