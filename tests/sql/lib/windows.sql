-- lib/windows.sql: helpers for tests of windows and pages. Included with \ir.

-- The spec of a window, written the plain way, to compare the page
-- functions with: rows visible in next and not in done, after after_id, in
-- id order.
CREATE FUNCTION pg_temp.window_ids(p_done pg_snapshot, p_next pg_snapshot, p_after bigint)
    RETURNS SETOF bigint LANGUAGE sql AS $$
    SELECT id FROM outbox.event
    WHERE pg_visible_in_snapshot(txid, p_next) AND NOT pg_visible_in_snapshot(txid, p_done)
      AND id > p_after
    ORDER BY id;
$$;

-- The plan of a statement (EXPLAIN, no costs) as one text.
CREATE FUNCTION pg_temp.plan_of(p_sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_line text;
    v_plan text := '';
BEGIN
    FOR v_line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || p_sql LOOP
        v_plan := v_plan || v_line || E'\n';
    END LOOP;
    RETURN v_plan;
END
$$;
