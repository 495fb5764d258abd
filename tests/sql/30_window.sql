-- 30_window.sql: window_open, position_get and fetch_page on windows built
-- by hand: rows get chosen transaction ids (as superuser) so every case of
-- snapshot visibility is exact and repeatable. 50_concurrency.sql does the
-- same with real transactions.
BEGIN;
SELECT plan(43);

-- window_ids(): the spec of a window, to compare fetch_page with.
\ir lib/windows.sql
-- All pages of a window, max_rows at a time, the relay's way.
CREATE FUNCTION pg_temp.all_pages(p_done pg_snapshot, p_next pg_snapshot, p_max_rows int,
                                  p_max_bytes bigint DEFAULT 1000000000)
    RETURNS TABLE (page int, id bigint) LANGUAGE plpgsql AS $$
DECLARE
    v_after bigint := 0;
    v_page  int := 0;
    v_last  bigint;
BEGIN
    LOOP
        v_page := v_page + 1;
        v_last := NULL;
        FOR id IN SELECT f.id FROM outbox.fetch_page(p_done, p_next, v_after, p_max_rows, p_max_bytes) AS f
        LOOP
            page := v_page;
            v_last := id;
            RETURN NEXT;
        END LOOP;
        EXIT WHEN v_last IS NULL;
        v_after := v_last;
    END LOOP;
END
$$;

SELECT throws_ok($$SELECT * FROM outbox.fetch_page('1:1:', '5:5:', 0, 0, 100)$$, '22023', NULL,
                 'bad arguments are refused even when the outbox is empty');

-- Rows 1..14 with transaction ids 100..113 in a shuffled order, so that id
-- order and transaction order disagree (as they do when transactions commit
-- out of order).
INSERT INTO outbox.event (txid, topic, payload)
SELECT t.x::text::xid8, 'w', convert_to(repeat('p', 10), 'UTF8')
FROM unnest(ARRAY[107, 100, 111, 104, 113, 102, 109, 106, 101, 110, 105, 112, 103, 108]) AS t(x);

-- done 103:106:104 sees <103, 103 and 105, not 104 nor >=106;
-- next 108:112:109 sees <108, 108, 110 and 111, not 109 nor >=112.
-- The window: 104, 106, 107, 108, 110, 111.
SELECT results_eq(
    $$SELECT e.txid::text::int
      FROM outbox.fetch_page('103:106:104', '108:112:109', 0, 100, 1000000) AS f
      JOIN outbox.event AS e ON e.id = f.id
      ORDER BY f.id$$,
    $$SELECT txid::text::int FROM outbox.event
      WHERE txid::text::int IN (104, 106, 107, 108, 110, 111) ORDER BY id$$,
    'a window holds exactly the transactions visible in next and not in done, in id order');
SELECT results_eq(
    $$SELECT id FROM outbox.fetch_page('103:106:104', '108:112:109', 0, 100, 1000000)$$,
    $$SELECT pg_temp.window_ids('103:106:104', '108:112:109', 0)$$,
    '... which is the plain definition');
SELECT results_eq(
    $$SELECT id FROM outbox.fetch_page('103:106:104', '108:112:109', 4, 100, 1000000)$$,
    $$SELECT pg_temp.window_ids('103:106:104', '108:112:109', 4)$$,
    'after_id skips the rows up to it');
SELECT results_eq(
    $$SELECT page, id FROM pg_temp.all_pages('103:106:104', '108:112:109', 2)$$,
    $$SELECT ((row_number() OVER (ORDER BY i) - 1) / 2 + 1)::int, i
      FROM pg_temp.window_ids('103:106:104', '108:112:109', 0) AS i$$,
    'pages of 2 by after_id return every row once, in id order, two at a time');
SELECT is_empty($$SELECT * FROM outbox.fetch_page('108:112:109', '108:112:109', 0, 100, 1000000)$$,
                'a window from a snapshot to itself is empty');
SELECT results_eq(
    $$SELECT id FROM outbox.fetch_page('1:1:', '200:200:', 0, 100, 1000000)$$,
    $$SELECT id FROM outbox.event ORDER BY id$$,
    'from the initial position 1:1: every committed row is in the window');
SELECT results_eq(
    $$SELECT page, id FROM pg_temp.all_pages('108:112:109', '114:114:', 1)$$,
    $$SELECT row_number() OVER (ORDER BY i)::int, i
      FROM pg_temp.window_ids('108:112:109', '114:114:', 0) AS i$$,
    'the next window picks up 109 (in xip of the last end) and 112, 113: nothing skipped');
SELECT is_empty(
    $$SELECT * FROM pg_temp.window_ids('103:106:104', '108:112:109', 0)
      INTERSECT
      SELECT * FROM pg_temp.window_ids('108:112:109', '114:114:', 0)$$,
    'consecutive windows do not overlap');

-- The byte limit -------------------------------------------------------------
-- Rows of the window '200:200:' -> '300:300:': sizes 100, 100, 100, 40+5
-- (headers {"ab": "cde"}), 500.
INSERT INTO outbox.event (txid, topic, key, payload, headers)
VALUES ('250', 'b', NULL, convert_to(repeat('x', 100), 'UTF8'), NULL),
       ('251', 'b', '\x0102', convert_to(repeat('x', 98), 'UTF8'), NULL),
       ('252', 'b', convert_to(repeat('k', 100), 'UTF8'), NULL, NULL),
       ('253', 'b', NULL, convert_to(repeat('x', 40), 'UTF8'), '{"ab": "cde"}'),
       ('254', 'b', NULL, convert_to(repeat('x', 500), 'UTF8'), NULL);
CREATE TEMP TABLE b AS SELECT id, row_number() OVER (ORDER BY id) AS n FROM outbox.event WHERE topic = 'b';

SELECT results_eq(
    format($$SELECT count(*)::int FROM outbox.fetch_page('200:200:', '300:300:', 0, 100, %s)$$, s),
    format('VALUES (%s)', n),
    format('max_bytes %s returns %s rows', s, n))
FROM (VALUES (300, 3), (299, 2), (345, 4), (344, 3), (845, 5), (100000, 5)) AS t(s, n);
SELECT results_eq(
    $$SELECT id FROM outbox.fetch_page('200:200:', '300:300:', (SELECT id FROM b WHERE n = 4), 100, 10)$$,
    $$SELECT id FROM b WHERE n = 5$$,
    'a first row larger than max_bytes comes alone (the relay decides what to do with it)');
SELECT results_eq(
    $$SELECT id FROM outbox.fetch_page('200:200:', '300:300:', 0, 100, 1)$$,
    $$SELECT id FROM b WHERE n = 1$$,
    'max_bytes 1 still returns the first row, and only it');
SELECT results_eq(
    $$SELECT count(*)::int FROM outbox.fetch_page('200:200:', '300:300:', 0, 2, 1000000)$$,
    $$VALUES (2)$$, 'max_rows caps the page before max_bytes does');
SELECT results_eq(
    $$SELECT id FROM outbox.fetch_page('200:200:', '300:300:', 0, 100, NULL)$$,
    $$SELECT id FROM b ORDER BY n$$,
    'max_bytes NULL: no byte limit (the caller counts bytes itself)');
SELECT results_eq(
    $$SELECT id FROM outbox.fetch_page('200:200:', '300:300:', 0, 3, NULL)$$,
    $$SELECT id FROM b WHERE n <= 3 ORDER BY n$$,
    '... max_rows still holds');

-- Columns -------------------------------------------------------------------
INSERT INTO outbox.event (txid, topic, key, payload, headers, created_at)
VALUES ('350', 'c', '\x6b', '\x70', '{"zz": "2", "aaa": "1", "b": "", "a": "x", "ä": "y"}',
        '2024-01-02 03:04:05.678999+00'),
       ('351', 'c', NULL, NULL, '{}', '1970-01-01 00:00:00.0015+00'),
       ('352', 'c', NULL, NULL, NULL, '2024-01-02 03:04:05+00');
SELECT results_eq(
    $$SELECT topic, key, payload, header_names, header_values, created_ms
      FROM outbox.fetch_page('300:300:', '400:400:', 0, 100, 1000000)$$,
    $$VALUES ('c'::text, '\x6b'::bytea, '\x70'::bytea, ARRAY['a', 'b', 'zz', 'ä', 'aaa'], ARRAY['x', '', '2', 'y', '1'],
              1704164645678::bigint),
             ('c', NULL, NULL, '{}'::text[], '{}'::text[], 1::bigint),
             ('c', NULL, NULL, NULL::text[], NULL::text[], 1704164645000::bigint)$$,
    'columns: key and payload as stored; header names in jsonb order (shorter first, then bytes) '
    'with their values; '
    'NULL headers give NULL arrays, {} empty ones; created_ms floors to milliseconds');

-- Which index serves the page is decided per call; the answer is the same ---------
-- 40 relayed rows (kept) first, then a window of 30 rows from two
-- transactions, one of them in done's xip (it was open when done was taken).
INSERT INTO outbox.event (txid, topic) SELECT '450', 'old' FROM generate_series(1, 40);
INSERT INTO outbox.event (txid, topic, payload) SELECT '460', 'late', '\x0102030405060708090a' FROM generate_series(1, 10);
INSERT INTO outbox.event (txid, topic, payload) SELECT '470', 'new', '\x0102030405060708090a' FROM generate_series(1, 20);
-- done 460:461:460 (460 was running), next 480:480:.
SELECT results_eq(
    $$SELECT id FROM outbox.fetch_page('460:461:460', '480:480:', 0, 100, 1000000)$$,
    $$SELECT pg_temp.window_ids('460:461:460', '480:480:', 0)$$,
    'kept relayed rows before the window: the page comes by transaction id, complete');
SELECT is((SELECT count(*)::int FROM outbox.fetch_page('460:461:460', '480:480:', 0, 100, 1000000)), 30,
          '... 10 rows of the transaction in done''s xip and 20 of the new one');
SELECT results_eq(
    $$SELECT page, id FROM pg_temp.all_pages('460:461:460', '480:480:', 7)$$,
    $$SELECT ((row_number() OVER (ORDER BY i) - 1) / 7 + 1)::int, i
      FROM pg_temp.window_ids('460:461:460', '480:480:', 0) AS i$$,
    'paged 7 at a time: same rows, same order, each once');
SELECT results_eq(
    $$SELECT page, id FROM pg_temp.all_pages('460:461:460', '480:480:', 3)$$,
    $$SELECT ((row_number() OVER (ORDER BY i) - 1) / 3 + 1)::int, i
      FROM pg_temp.window_ids('460:461:460', '480:480:', 0) AS i$$,
    'paged 3 at a time (more candidates than 4 pages: served by the primary key): the same');
SELECT results_eq(
    $$SELECT count(*)::int FROM outbox.fetch_page('460:461:460', '480:480:', 0, 100, 5)$$,
    $$VALUES (1)$$, 'the byte limit holds on this path too (10-byte rows, max_bytes 5)');
SELECT results_eq(
    $$SELECT count(*)::int FROM outbox.fetch_page('460:461:460', '480:480:', 0, 100, 45)$$,
    $$VALUES (4)$$, '... and cuts after the last row that fits (4 rows of 10 bytes in 45)');
SELECT results_eq(
    $$SELECT page, id FROM pg_temp.all_pages('460:461:460', '480:480:', 7, NULL)$$,
    $$SELECT ((row_number() OVER (ORDER BY i) - 1) / 7 + 1)::int, i
      FROM pg_temp.window_ids('460:461:460', '480:480:', 0) AS i$$,
    'without a byte limit, paged 7 at a time: the same rows, same order, each once');
SELECT is_empty($$SELECT * FROM outbox.fetch_page('480:480:', '490:490:', 0, 100, 1000000)$$,
                'an empty window after many kept rows is empty');

-- Bad requests -----------------------------------------------------------------
SELECT throws_ok($$SELECT * FROM outbox.fetch_page(NULL, '5:5:', 0, 10, 100)$$, '22023',
                 'window bounds must not be NULL', 'fetch_page refuses a NULL done');
SELECT throws_ok($$SELECT * FROM outbox.fetch_page('5:5:', NULL, 0, 10, 100)$$, '22023',
                 'window bounds must not be NULL', 'fetch_page refuses a NULL next');
SELECT throws_ok($$SELECT * FROM outbox.fetch_page('9:9:', '5:5:', 0, 10, 100)$$, '22023',
                 'window end 5:5: is before its start 9:9:', 'fetch_page refuses next before done');
SELECT throws_ok($$SELECT * FROM outbox.fetch_page('1:1:', '5:5:', 0, 0, 100)$$, '22023',
                 'invalid page request: after_id 0, max_rows 0, max_bytes 100',
                 'fetch_page refuses max_rows 0');
SELECT throws_ok($$SELECT * FROM outbox.fetch_page('1:1:', '5:5:', 0, 10, 0)$$, '22023',
                 'invalid page request: after_id 0, max_rows 10, max_bytes 0',
                 'fetch_page refuses max_bytes 0');
SELECT throws_ok($$SELECT * FROM outbox.fetch_page('1:1:', '5:5:', 0, 10, -1)$$, '22023',
                 'invalid page request: after_id 0, max_rows 10, max_bytes -1',
                 'fetch_page refuses a negative max_bytes');
SELECT throws_ok($$SELECT * FROM outbox.fetch_page('1:1:', '5:5:', NULL, 10, 10)$$, '22023',
                 'invalid page request: after_id NULL, max_rows 10, max_bytes 10',
                 'fetch_page refuses a NULL after_id');

-- window_open and position_get ---------------------------------------------------------
SELECT acquired FROM outbox.lease_acquire('w', 'me', 60000);
CREATE TEMP TABLE snaps AS
SELECT pg_current_snapshot() AS before, outbox.window_open('w')::pg_snapshot AS opened;
SELECT ok((SELECT pg_snapshot_xmax(opened) >= pg_snapshot_xmax(before) FROM snaps),
          'window_open() returns a current snapshot (as text)');
SELECT throws_ok($$SELECT outbox.window_open('nobody')$$, 'OR005', 'relay "nobody" does not exist',
                 'window_open() of an unknown relay: OR005');
SELECT throws_ok($$SELECT * FROM outbox.position_get('nobody')$$, 'OR005', 'relay "nobody" does not exist',
                 'position_get() of an unknown relay: OR005');

-- A position from the future: transaction ids went backwards (restored dump,
-- lossy failover). New transactions would get ids the position calls done.
UPDATE outbox.relay_state SET pos_done = '100000000:100000000:' WHERE name = 'w';
SELECT throws_ok($$SELECT outbox.window_open('w')$$, 'OR003',
                 'the database''s transaction ids are behind the relay position of relay "w"',
                 'window_open() refuses a done snapshot ahead of the database: OR003');
UPDATE outbox.relay_state SET pos_done = '3:3:', pos_next = '100000000:100000000:', pos_after_id = 5
WHERE name = 'w';
SELECT throws_ok($$SELECT outbox.window_open('w')$$, 'OR003', NULL,
                 'window_open() refuses an open window ahead of the database: OR003');
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
SELECT alike(pg_temp.hint_of($$SELECT outbox.window_open('w')$$), '%docs/sql.md%position_reset%',
             'the OR003 hint points to the documented recovery');
UPDATE outbox.relay_state SET pos_next = '3:3:' WHERE name = 'w';
SELECT lives_ok($$SELECT outbox.window_open('w')$$, 'a position below the current snapshot is fine');

SELECT * FROM finish();
ROLLBACK;
