-- 32_read_page.sql: read_page() (version 6) against fetch_page() and the
-- plain definition of a window, on windows built by hand as in
-- 30_window.sql (chosen transaction ids, as superuser): the same rows in the
-- same order under every row and byte limit, on both ways the bounds take
-- (by id, and by transaction id when relayed rows are kept before the
-- window), and window_end exactly where no row of the window follows.
BEGIN;
SELECT plan(22);

-- window_ids() (the plain definition of a window) and plan_of().
\ir lib/windows.sql

-- Every page of a window the relay's way with read_page(): (page, id,
-- window_end), stopping at a window_end row or at an empty page, as the
-- relay does.
CREATE FUNCTION pg_temp.read_all(p_done pg_snapshot, p_next pg_snapshot, p_max_rows int,
                                 p_max_bytes bigint)
    RETURNS TABLE (page int, id bigint, window_end boolean) LANGUAGE plpgsql AS $$
DECLARE
    v_after bigint := 0;
    v_page  int := 0;
    v_last  bigint;
    v_end   boolean;
BEGIN
    LOOP
        v_page := v_page + 1;
        v_last := NULL;
        v_end := false;
        FOR id, window_end IN
            SELECT f.id, f.window_end FROM outbox.read_page(p_done, p_next, v_after, p_max_rows, p_max_bytes) AS f
        LOOP
            page := v_page;
            v_last := id;
            v_end := v_end OR window_end;
            RETURN NEXT;
        END LOOP;
        EXIT WHEN v_last IS NULL OR v_end;
        v_after := v_last;
    END LOOP;
END
$$;

-- One call of each, compared: rows and order must be equal; window_end is
-- never true but on the last row, never where a row of the window follows;
-- with a byte limit (the relay's calls) it is true exactly when the page is
-- shorter than max_rows and nothing of the window follows. (Without one, a
-- page read in id order is not counted and says false: sound, not exact.)
-- Returns a description of the first difference, or NULL.
CREATE FUNCTION pg_temp.differs(p_done pg_snapshot, p_next pg_snapshot, p_after bigint,
                                p_max_rows int, p_max_bytes bigint)
    RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_read  bigint[];
    v_fetch bigint[];
    v_ends  boolean[];
    v_n     int;
    v_more  boolean;
BEGIN
    SELECT coalesce(array_agg(f.id ORDER BY f.id), '{}') INTO v_fetch
    FROM outbox.fetch_page(p_done, p_next, p_after, p_max_rows, p_max_bytes) AS f;
    SELECT coalesce(array_agg(r.id ORDER BY r.ord), '{}'), coalesce(array_agg(r.window_end ORDER BY r.ord), '{}')
    INTO v_read, v_ends
    FROM (SELECT f.id, f.window_end, row_number() OVER () AS ord
          FROM outbox.read_page(p_done, p_next, p_after, p_max_rows, p_max_bytes) AS f) AS r;
    IF v_read IS DISTINCT FROM v_fetch THEN
        RETURN format('(%s, %s, %s, %s, %s): read_page %s, fetch_page %s',
                      p_done, p_next, p_after, p_max_rows, p_max_bytes, v_read, v_fetch);
    END IF;
    v_n := cardinality(v_read);
    IF v_n = 0 THEN
        RETURN NULL;
    END IF;
    SELECT EXISTS (SELECT FROM pg_temp.window_ids(p_done, p_next, v_read[v_n])) INTO v_more;
    IF v_ends[1:v_n - 1] @> ARRAY[true]
       OR v_ends[v_n] IS NULL
       OR (v_ends[v_n] AND (v_n >= p_max_rows OR v_more))
       OR (p_max_bytes IS NOT NULL AND v_ends[v_n] <> (v_n < p_max_rows AND NOT v_more)) THEN
        RETURN format('(%s, %s, %s, %s, %s): window_end %s over %s, more rows after: %s',
                      p_done, p_next, p_after, p_max_rows, p_max_bytes, v_ends, v_read, v_more);
    END IF;
    RETURN NULL;
END
$$;

-- Data. Rows 1..14: transactions 100..113 shuffled (id and commit order
-- disagree). Then 40 kept rows of 450, 10 rows of 460 (open when done
-- 460:461:460 was taken), 20 of 470: the window 460:461:460 -> 480:480:
-- is served by transaction id (its first 32 rows by id are mostly kept
-- ones). Sizes vary (key, payload, headers), so byte limits fall inside
-- pages.
INSERT INTO outbox.event (txid, topic, payload)
SELECT t.x::text::xid8, 'w', convert_to(repeat('p', 10 + t.x % 7), 'UTF8')
FROM unnest(ARRAY[107, 100, 111, 104, 113, 102, 109, 106, 101, 110, 105, 112, 103, 108]) AS t(x);
INSERT INTO outbox.event (txid, topic) SELECT '450', 'old' FROM generate_series(1, 40);
INSERT INTO outbox.event (txid, topic, key, payload, headers)
SELECT '460', 'late', convert_to(i::text, 'UTF8'), convert_to(repeat('x', 3 * i), 'UTF8'),
       CASE WHEN i % 3 = 0 THEN jsonb_build_object('h', repeat('v', i)) END
FROM generate_series(1, 10) AS i;
INSERT INTO outbox.event (txid, topic, payload)
SELECT '470', 'new', convert_to(repeat('y', 5 + i), 'UTF8') FROM generate_series(1, 20) AS i;

-- The windows: (done, next), the second and fourth served by transaction id.
CREATE TEMP TABLE win (done pg_snapshot, next pg_snapshot);
INSERT INTO win VALUES ('103:106:104', '108:112:109'), ('1:1:', '200:200:'),
                       ('108:112:109', '114:114:'), ('460:461:460', '480:480:'),
                       ('480:480:', '490:490:');

SELECT is((SELECT string_agg(d, E'\n')
           FROM (SELECT pg_temp.differs(w.done, w.next, a.after, r.max_rows, b.max_bytes) AS d
                 FROM win AS w,
                      (SELECT 0 AS after UNION ALL SELECT id FROM outbox.event) AS a,
                      unnest(ARRAY[1, 2, 3, 4, 7, 10, 29, 30, 31, 100]) AS r(max_rows),
                      unnest(ARRAY[1, 10, 25, 45, 60, 100, 1000, 1000000, NULL]) AS b(max_bytes)
                 OFFSET 0) AS t
           WHERE d IS NOT NULL), NULL,
          'read_page returns fetch_page''s rows for every window, after_id, max_rows and max_bytes '
          '(both index paths); window_end only on a short page''s last row with nothing after it, '
          'and there always when there is a byte limit');

SELECT results_eq(
    format($$SELECT page, id FROM pg_temp.read_all(%L, %L, %s, %s)$$, w.done, w.next, r, coalesce(b::text, 'NULL')),
    format($$SELECT ((row_number() OVER (ORDER BY i) - 1) / %s + 1)::int, i FROM pg_temp.window_ids(%L, %L, 0) AS i$$,
           r, w.done, w.next),
    format('window %s -> %s in pages of %s rows (max_bytes %s): every row once, in id order', w.done, w.next, r, coalesce(b::text, 'none')))
FROM win AS w, (VALUES (3, 1000000), (1000, NULL)) AS t(r, b)
WHERE w.next::text <> '490:490:';

SELECT is((SELECT count(*)::int FROM pg_temp.read_all('460:461:460', '480:480:', 1000, 1000000)
           WHERE window_end), 1,
          'a window smaller than the page: one call, its last row says window_end');
-- Calls made: the pages with rows, and one empty call more unless the last
-- page said window_end.
CREATE FUNCTION pg_temp.calls(p_done pg_snapshot, p_next pg_snapshot, p_max_rows int)
    RETURNS int LANGUAGE sql AS $$
    SELECT max(page) + CASE WHEN bool_or(window_end) THEN 0 ELSE 1 END
    FROM pg_temp.read_all(p_done, p_next, p_max_rows, 1000000);
$$;
SELECT is(pg_temp.calls('460:461:460', '480:480:', 10), 4,
          'a window of 30 rows in pages of 10: the third page is full, so a fourth (empty) call ends it');
SELECT is(pg_temp.calls('460:461:460', '480:480:', 11), 3,
          '... in pages of 11: the third page is short and ends it, no empty call');
SELECT is_empty($$SELECT * FROM outbox.read_page('480:480:', '490:490:', 0, 100, 1000000)$$,
                'an empty window gives an empty page');

-- The byte limit cuts a page short: window_end must stay false.
SELECT is((SELECT array_agg(window_end ORDER BY id)
           FROM outbox.read_page('460:461:460', '480:480:', 0, 100, 45)),
          (SELECT array_agg(false) FROM outbox.fetch_page('460:461:460', '480:480:', 0, 100, 45)),
          'a page cut by max_bytes never says window_end');
SELECT is((SELECT count(*)::int FROM outbox.read_page('460:461:460', '480:480:', 0, 100, 1)), 1,
          'max_bytes 1: the first row alone, as fetch_page');

-- Columns are fetch_page's.
INSERT INTO outbox.event (txid, topic, key, payload, headers, created_at)
VALUES ('550', 'c', '\x6b', '\x70', '{"zz": "2", "aaa": "1", "b": "", "a": "x", "ä": "y"}',
        '2024-01-02 03:04:05.678999+00'),
       ('551', 'c', NULL, NULL, '{}', '1970-01-01 00:00:00.0015+00');
SELECT results_eq(
    $$SELECT id, topic, key, payload, header_names, header_values, created_ms
      FROM outbox.read_page('500:500:', '600:600:', 0, 100, 1000000)$$,
    $$SELECT id, topic, key, payload, header_names, header_values, created_ms
      FROM outbox.fetch_page('500:500:', '600:600:', 0, 100, 1000000)$$,
    'columns as fetch_page returns them (headers, NULLs, created_ms)');

-- Bad requests: refused as fetch_page refuses them.
SELECT throws_ok($$SELECT * FROM outbox.read_page(NULL, '5:5:', 0, 10, 100)$$, '22023',
                 'window bounds must not be NULL', 'read_page refuses a NULL done');
SELECT throws_ok($$SELECT * FROM outbox.read_page('9:9:', '5:5:', 0, 10, 100)$$, '22023',
                 'window end 5:5: is before its start 9:9:', 'read_page refuses next before done');
SELECT throws_ok($$SELECT * FROM outbox.read_page('1:1:', '5:5:', 0, 0, 100)$$, '22023',
                 'invalid page request: after_id 0, max_rows 0, max_bytes 100',
                 'read_page refuses max_rows 0');
SELECT throws_ok($$SELECT * FROM outbox.read_page('1:1:', '5:5:', 0, 10, 0)$$, '22023',
                 'invalid page request: after_id 0, max_rows 10, max_bytes 0',
                 'read_page refuses max_bytes 0');
SELECT throws_ok($$SELECT * FROM outbox.read_page('1:1:', '5:5:', NULL, 10, 10)$$, '22023',
                 'invalid page request: after_id NULL, max_rows 10, max_bytes 10',
                 'read_page refuses a NULL after_id');

-- Inlined, one read: the plan shows outbox.event's partitions read once
-- per page (no second pass for the byte limit) and no Function Scan.
SELECT unalike(pg_temp.plan_of($$SELECT * FROM outbox.read_page('1:1:', '5:5:', 0, 10, 1000)$$),
               '%Function Scan on read_page%', 'read_page() is inlined into the calling query');

SELECT * FROM finish();
ROLLBACK;
