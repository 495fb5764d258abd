-- 0006_read_page.sql: a page of a window in one pass over its rows, with
-- the byte limit applied on the way and a flag that says the window ends
-- with this page.
--
-- Why (bench/RESULTS.md, "One pass per page"): fetch_page() with a byte
-- limit reads a page's rows twice -- fetch_page_bounds() sums their sizes
-- first to find where batch.max_bytes cuts, then fetch_page() reads them
-- again to return them -- which was most of what a drain at 1000-row
-- batches cost the server above the floor of reading each row once. And
-- the relay learnt that a window had no rows left only from a page that
-- came back empty: every look of an open transaction that found rows cost
-- a second, empty fetch (on the partitioned table of version 5, a merge of
-- every partition's indexes each time).
--
-- read_page() returns what fetch_page() returns for the same arguments --
-- the same rows in the same order, the same prefix under the byte limit --
-- plus window_end, true on the last row of a page after which the window
-- holds no row: the relay then closes the window without asking again.
-- window_end is only ever true when it is certain (a page shorter than
-- p_max_rows that the byte limit did not cut); a page cut by either limit
-- says false, and the relay asks again as before. fetch_page() stays, for
-- the relays of version 5 while they are replaced and for tools.
--
-- Nothing of the table or the position changes; the relay of this version
-- expects version 6 (it checks outbox.version() at start).
--
-- Runs inside the transaction opened by lib/apply.sql. Released: never edit.

CREATE OR REPLACE FUNCTION outbox.version()
    RETURNS int
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN 6;

-- The page: fetch_page_bounds() without a byte limit finds its id range and
-- row count (but for a request it will refuse: then p_max_bytes goes as
-- given, so that its message names the values asked for; NULL means no byte
-- limit, as for fetch_page()). The inner query
-- reads those rows once, in id order, and stops at the count; the window
-- functions above it stream (frames that end at the current row, and lead()
-- looks one row ahead inside the page already read), so the byte limit
-- costs a running sum, not a second read.
--   * Byte limit: the longest prefix whose key + payload + header bytes
--     stay within p_max_bytes, and never less than the first row (a row
--     larger than the limit goes alone), as in fetch_page().
--   * window_end: on the page's last row, when the page holds fewer rows
--     than p_max_rows (so no row of the window follows it: both ways of
--     fetch_page_bounds() return every remaining row of the window when
--     there are fewer than p_max_rows) and the byte limit kept that row.
CREATE FUNCTION outbox.read_page(p_done pg_snapshot, p_next pg_snapshot, p_after_id bigint,
                                 p_max_rows int, p_max_bytes bigint)
    RETURNS TABLE (id bigint, topic text, key bytea, payload bytea, header_names text[],
                   header_values text[], created_ms bigint, window_end boolean)
    LANGUAGE sql STABLE
-- A string body, inlined into the caller's query as fetch_page() is.
AS $$
    WITH bounds AS (
        SELECT outbox.fetch_page_bounds(
                   p_done, p_next, p_after_id, p_max_rows,
                   CASE WHEN p_done IS NULL OR p_next IS NULL OR p_after_id IS NULL
                             OR p_max_rows IS NULL OR p_max_rows < 1 OR p_max_bytes < 1
                        THEN p_max_bytes END) AS b
    )
    SELECT p.id, p.topic, p.key, p.payload,
           CASE WHEN p.headers IS NOT NULL THEN ARRAY(SELECT pg_catalog.jsonb_object_keys(p.headers)) END,
           CASE WHEN p.headers IS NOT NULL THEN
               ARRAY(SELECT h.value FROM pg_catalog.jsonb_each_text(p.headers) AS h)
           END,
           (pg_catalog.date_part('epoch', p.created_at) * 1000000)::bigint / 1000,
           p.last AND p.n < p_max_rows
    FROM (SELECT q.*,
                 pg_catalog.row_number() OVER w AS n,
                 pg_catalog.sum(q.bytes) OVER w AS running,
                 pg_catalog.lead(q.id) OVER w IS NULL AS last
          FROM (SELECT e.id, e.topic, e.key, e.payload, e.headers, e.created_at,
                       coalesce(pg_catalog.octet_length(e.key), 0)
                       + coalesce(pg_catalog.octet_length(e.payload), 0)
                       + CASE WHEN e.headers IS NULL THEN 0 ELSE outbox.headers_bytes(e.headers) END
                       AS bytes
                FROM outbox.event AS e
                WHERE e.id >= (SELECT bounds.b[1] FROM bounds)
                  AND e.id <= (SELECT bounds.b[2] FROM bounds)
                  -- As in fetch_page(): a NULL snapshot reaches the bounds
                  -- function, which refuses it.
                  AND (p_next IS NULL OR pg_catalog.pg_visible_in_snapshot(e.txid, p_next))
                  AND (p_done IS NULL OR NOT pg_catalog.pg_visible_in_snapshot(e.txid, p_done))
                ORDER BY e.id
                LIMIT (SELECT bounds.b[3] FROM bounds)) AS q
          WINDOW w AS (ORDER BY q.id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) AS p
    WHERE p_max_bytes IS NULL OR p.running <= p_max_bytes OR p.n = 1
    ORDER BY p.id
$$;

COMMENT ON FUNCTION outbox.read_page(pg_snapshot, pg_snapshot, bigint, int, bigint) IS
    'The next page of a window, as fetch_page() returns it, read once; window_end is true on the last row when no row of the window follows the page.';

REVOKE EXECUTE ON FUNCTION outbox.read_page(pg_snapshot, pg_snapshot, bigint, int, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.read_page(pg_snapshot, pg_snapshot, bigint, int, bigint) TO outbox_relay;
