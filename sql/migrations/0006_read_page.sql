-- 0006_read_page.sql: the relay learns that a window has no rows left from
-- the page that reads its last rows, not from one more call that comes back
-- empty.
--
-- Why (bench/RESULTS.md, "Schema 6: read_page"): an open transaction looks
-- for new rows every batch.look_interval_ms; every look that found rows
-- paid a second fetch_page() that returned nothing, only to close the
-- window. On the partitioned table of version 5 each fetch merges every
-- partition's indexes (a probe, the candidates by transaction id, the rows),
-- so that empty call was a good part of what the relay's looks cost the
-- server at a steady rate.
--
-- fetch_page_bounds() already knows when a page holds the rest of the
-- window: it counted fewer than p_max_rows rows after p_after_id (or every
-- candidate by transaction id) and the byte limit did not cut them. It now
-- returns that as a fourth element (1 = the window ends with this page; 0 =
-- it may not, including every page it does not count, those without a byte
-- limit); fetch_page() reads the first three only and is unchanged.
-- read_page() is fetch_page() with one more column, window_end, true on the
-- page's last row when that element is 1. window_end is only ever true when
-- it is certain; false costs the caller one more call, as before.
--
-- (A first version computed the byte limit inside read_page() as a running
-- sum over window functions, to read each row once: the server's CPU for a
-- 300k-row drain rose by a quarter (the window aggregate copies every row
-- into its tuple store), where the second pass of fetch_page_bounds() over
-- the page's rows costs less. Not kept.)
--
-- Nothing of the table or the position changes; the relay of this version
-- expects version 6 (it checks outbox.version() at start).
--
-- Runs inside the transaction opened by lib/apply.sql. Released: never edit.

CREATE OR REPLACE FUNCTION outbox.version()
    RETURNS int
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN 6;

-- fetch_page_bounds(): version 1's body, and the fourth element (v_end).
-- CREATE OR REPLACE keeps its grants.
CREATE OR REPLACE FUNCTION outbox.fetch_page_bounds(p_done pg_snapshot, p_next pg_snapshot, p_after_id bigint,
                                         p_max_rows int, p_max_bytes bigint)
    RETURNS bigint[]
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    -- Every query below has its index fixed by its ORDER BY ... LIMIT, so a
    -- generic plan is as good as a custom one; planning once saves a
    -- planner run per query per call, which a small window would notice.
    SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_cap      int := least(4 * p_max_rows::bigint, 2147483647)::int;
    v_by_id    boolean;
    v_seen     int;
    v_in       int;
    v_cands    bigint;
    v_first    bigint;
    v_last     bigint;
    v_rows     bigint;
    v_bytes    bigint;
    v_xmax     xid8;
    v_end      boolean;
    v_counted  bigint;
BEGIN
    IF p_done IS NULL OR p_next IS NULL THEN
        RAISE EXCEPTION 'window bounds must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_snapshot_xmax(p_next) < pg_snapshot_xmax(p_done) THEN
        RAISE EXCEPTION 'window end % is before its start %', p_next, p_done
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_after_id IS NULL OR p_max_rows IS NULL OR p_max_rows < 1 OR p_max_bytes < 1 THEN
        RAISE EXCEPTION 'invalid page request: after_id %, max_rows %, max_bytes %',
                        coalesce(p_after_id::text, 'NULL'), coalesce(p_max_rows::text, 'NULL'),
                        coalesce(p_max_bytes::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT count(*),
           count(*) FILTER (WHERE pg_visible_in_snapshot(q.txid, p_next)
                              AND NOT pg_visible_in_snapshot(q.txid, p_done))
    INTO v_seen, v_in
    FROM (SELECT e.txid FROM outbox.event AS e WHERE e.id > p_after_id ORDER BY e.id LIMIT 32) AS q;

    v_by_id := v_seen < 32 OR 4 * v_in >= v_seen;
    IF NOT v_by_id THEN
        v_xmax := pg_snapshot_xmax(p_done);
        WITH cand AS (
            (SELECT e.id,
                    coalesce(octet_length(e.key), 0) + coalesce(octet_length(e.payload), 0)
                    + CASE WHEN e.headers IS NULL THEN 0 ELSE outbox.headers_bytes(e.headers) END
                    AS bytes
             FROM outbox.event AS e
             WHERE e.txid >= v_xmax AND e.txid < pg_snapshot_xmax(p_next)
               AND e.id > p_after_id
               AND pg_visible_in_snapshot(e.txid, p_next)
             ORDER BY e.txid
             LIMIT v_cap)
            UNION ALL
            (SELECT e.id,
                    coalesce(octet_length(e.key), 0) + coalesce(octet_length(e.payload), 0)
                    + CASE WHEN e.headers IS NULL THEN 0 ELSE outbox.headers_bytes(e.headers) END
             FROM outbox.event AS e
             WHERE e.txid = ANY (ARRAY(SELECT pg_snapshot_xip(p_done)))
               AND e.id > p_after_id
               AND pg_visible_in_snapshot(e.txid, p_next)
             ORDER BY e.txid
             LIMIT v_cap)
        )
        SELECT (SELECT count(*) FROM cand), min(pg.id), max(pg.id), count(*), sum(pg.bytes)
        INTO v_cands, v_first, v_last, v_rows, v_bytes
        FROM (SELECT c.id, c.bytes FROM cand AS c ORDER BY c.id LIMIT p_max_rows) AS pg;
        v_by_id := v_cands >= v_cap;
        -- Every candidate of the window is in the page: nothing follows.
        v_end := v_rows < p_max_rows;
    END IF;

    IF v_by_id AND p_max_bytes IS NULL THEN
        -- The next p_max_rows rows of the window in id order: fetch_page()
        -- finds them itself, on its way.
        RETURN ARRAY[p_after_id + 1, 9223372036854775807, p_max_rows, 0];
    ELSIF v_by_id THEN
        SELECT min(pg.id), max(pg.id), count(*), sum(pg.bytes)
        INTO v_first, v_last, v_rows, v_bytes
        FROM (SELECT e.id,
                     coalesce(octet_length(e.key), 0) + coalesce(octet_length(e.payload), 0)
                     + CASE WHEN e.headers IS NULL THEN 0 ELSE outbox.headers_bytes(e.headers) END
                     AS bytes
              FROM outbox.event AS e
              WHERE e.id > p_after_id
                AND pg_visible_in_snapshot(e.txid, p_next)
                AND NOT pg_visible_in_snapshot(e.txid, p_done)
              ORDER BY e.id
              LIMIT p_max_rows) AS pg;
        -- Fewer than p_max_rows rows of the window after p_after_id: the
        -- whole rest of it.
        v_end := v_rows < p_max_rows;
    END IF;

    IF v_bytes > p_max_bytes THEN
        v_counted := v_rows;
        -- The longest prefix that fits, and never less than the first row.
        SELECT max(r.id), count(*) INTO v_last, v_rows
        FROM (SELECT e.id,
                     row_number() OVER w AS n,
                     sum(coalesce(octet_length(e.key), 0) + coalesce(octet_length(e.payload), 0)
                         + CASE WHEN e.headers IS NULL THEN 0 ELSE outbox.headers_bytes(e.headers) END)
                         OVER w AS running
              FROM outbox.event AS e
              WHERE e.id >= v_first AND e.id <= v_last
                AND pg_visible_in_snapshot(e.txid, p_next)
                AND NOT pg_visible_in_snapshot(e.txid, p_done)
              WINDOW w AS (ORDER BY e.id ROWS UNBOUNDED PRECEDING)) AS r
        WHERE r.running <= p_max_bytes OR r.n = 1;
        -- Cut short, rows of the window follow; unless every row stayed
        -- (a first row larger than the limit, alone).
        v_end := v_end AND v_rows = v_counted;
    END IF;
    RETURN ARRAY[v_first, v_last, v_rows, CASE WHEN v_end THEN 1 ELSE 0 END];
END
$$;

COMMENT ON FUNCTION outbox.fetch_page_bounds(pg_snapshot, pg_snapshot, bigint, int, bigint) IS
    'Internal to fetch_page() and read_page(): {first id, last id, rows, 1 if the window ends with this page else 0} of the next page of a window.';

-- read_page(): fetch_page()'s query, and window_end on the row whose id is
-- the page's last (b[2]) when the bounds say the window ends there. b[2] is
-- the page's last id whenever b[4] is 1 (both ways that count the page set
-- it to the largest id they counted, and no byte cut happened).
CREATE FUNCTION outbox.read_page(p_done pg_snapshot, p_next pg_snapshot, p_after_id bigint,
                                 p_max_rows int, p_max_bytes bigint)
    RETURNS TABLE (id bigint, topic text, key bytea, payload bytea, header_names text[],
                   header_values text[], created_ms bigint, window_end boolean)
    LANGUAGE sql STABLE
-- A string body, inlined into the caller's query as fetch_page() is.
AS $$
    WITH bounds AS (
        SELECT outbox.fetch_page_bounds(p_done, p_next, p_after_id, p_max_rows, p_max_bytes) AS b
    )
    SELECT e.id, e.topic, e.key, e.payload,
           CASE WHEN e.headers IS NOT NULL THEN ARRAY(SELECT pg_catalog.jsonb_object_keys(e.headers)) END,
           CASE WHEN e.headers IS NOT NULL THEN
               ARRAY(SELECT h.value FROM pg_catalog.jsonb_each_text(e.headers) AS h)
           END,
           (pg_catalog.date_part('epoch', e.created_at) * 1000000)::bigint / 1000,
           e.id = (SELECT bounds.b[2] FROM bounds) AND (SELECT bounds.b[4] FROM bounds) = 1
    FROM outbox.event AS e
    WHERE e.id >= (SELECT bounds.b[1] FROM bounds)
      AND e.id <= (SELECT bounds.b[2] FROM bounds)
      -- As in fetch_page(): a NULL snapshot reaches the bounds function,
      -- which refuses it.
      AND (p_next IS NULL OR pg_catalog.pg_visible_in_snapshot(e.txid, p_next))
      AND (p_done IS NULL OR NOT pg_catalog.pg_visible_in_snapshot(e.txid, p_done))
    ORDER BY e.id
    LIMIT (SELECT bounds.b[3] FROM bounds)
$$;

COMMENT ON FUNCTION outbox.read_page(pg_snapshot, pg_snapshot, bigint, int, bigint) IS
    'The next page of a window, as fetch_page() returns it; window_end is true on its last row when no row of the window follows.';

REVOKE EXECUTE ON FUNCTION outbox.read_page(pg_snapshot, pg_snapshot, bigint, int, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.read_page(pg_snapshot, pg_snapshot, bigint, int, bigint) TO outbox_relay;
