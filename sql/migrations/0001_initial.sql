-- 0001_initial.sql: the outbox table, the relay's state, and the functions the
-- relay calls by name. docs/sql.md is the reference; DESIGN.md §2-4 the why.
--
-- Runs inside the transaction opened by lib/apply.sql. Released: never edit;
-- change the schema with the next migration (docs/sql.md, "Install and upgrade").

-- ---------------------------------------------------------------------------
-- Roles. Cluster-wide, so another database of the cluster may have created
-- them already, or be creating them right now (the install lock is per
-- database): tolerate both.
-- ---------------------------------------------------------------------------
DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['outbox_relay', 'outbox_writer'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- The outbox table.
-- ---------------------------------------------------------------------------

-- Headers travel to Kafka as (name, value) string pairs, so only a JSON
-- object of strings is accepted; anything else would have to be coerced or
-- dropped. IMMUTABLE and jsonpath-based: the CHECK that calls it is cheap.
CREATE FUNCTION outbox.headers_valid(p_headers jsonb)
    RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_headers IS NULL
    OR (jsonb_typeof(p_headers) = 'object'
        AND NOT jsonb_path_exists(p_headers, 'strict $.* ? (@.type() != "string")'));

COMMENT ON FUNCTION outbox.headers_valid(jsonb) IS
    'True when the value is NULL or a JSON object whose values are all strings.';

CREATE TABLE outbox.event (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writer's top-level transaction id: the relay's snapshot windows
    -- decide by it whether the row is committed and relayed (DESIGN §2).
    txid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    topic      text NOT NULL,
    key        bytea,
    payload    bytea,
    headers    jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- One rule per constraint, written so that each bad value breaks exactly
    -- one of them: the constraint name in the error says what is wrong.
    -- The rules are Kafka's own for topic names.
    CONSTRAINT event_topic_not_empty CHECK (topic <> ''),
    CONSTRAINT event_topic_legal_chars CHECK (topic ~ '^[A-Za-z0-9._-]*$'),
    CONSTRAINT event_topic_max_length CHECK (length(topic) <= 249),
    CONSTRAINT event_topic_not_dot CHECK (topic NOT IN ('.', '..')),
    CONSTRAINT event_headers_string_object CHECK (outbox.headers_valid(headers))
);

-- Steady state: a window covers a few recent transaction ids; this index
-- finds its rows without walking the primary key.
CREATE INDEX event_txid_idx ON outbox.event (txid);

-- A queue table: rows are inserted and soon deleted. Vacuum and analyze it
-- after 1% of churn rather than 20%, so dead tuples and stale statistics do
-- not pile up between runs (the window queries rely on fresh txid statistics).
ALTER TABLE outbox.event SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.01
);

COMMENT ON TABLE outbox.event IS
    'Outbox rows waiting to be relayed to Kafka. Write with INSERT (topic, key, payload, headers) or outbox.publish().';
COMMENT ON COLUMN outbox.event.txid IS
    'Top-level transaction id of the writer (default pg_current_xact_id()); never set it by hand.';
COMMENT ON COLUMN outbox.event.headers IS
    'NULL or a JSON object of string values: the Kafka record headers.';

-- ---------------------------------------------------------------------------
-- publish(): the same INSERT, for applications that prefer a function.
-- SECURITY INVOKER: the caller's own INSERT privilege applies.
-- With untyped literals ('k', 'v') PostgreSQL prefers the string category,
-- so publish('t', 'k', 'v') resolves to the text overload; bytea and jsonb
-- need typed arguments. tests/sql/20_event.sql checks every overload.
-- ---------------------------------------------------------------------------
CREATE FUNCTION outbox.publish(topic text, key bytea, payload bytea, headers jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    INSERT INTO outbox.event (topic, key, payload, headers)
    VALUES (publish.topic, publish.key, publish.payload, publish.headers)
    RETURNING id;
END;

CREATE FUNCTION outbox.publish(topic text, key text, payload text, headers jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    INSERT INTO outbox.event (topic, key, payload, headers)
    VALUES (publish.topic, convert_to(publish.key, 'UTF8'), convert_to(publish.payload, 'UTF8'),
            publish.headers)
    RETURNING id;
END;

CREATE FUNCTION outbox.publish(topic text, key text, payload jsonb, headers jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    INSERT INTO outbox.event (topic, key, payload, headers)
    VALUES (publish.topic, convert_to(publish.key, 'UTF8'), convert_to(publish.payload::text, 'UTF8'),
            publish.headers)
    RETURNING id;
END;

COMMENT ON FUNCTION outbox.publish(text, bytea, bytea, jsonb) IS
    'Insert one outbox row; returns its id.';
COMMENT ON FUNCTION outbox.publish(text, text, text, jsonb) IS
    'Insert one outbox row, key and payload stored as UTF-8 bytes; returns its id.';
COMMENT ON FUNCTION outbox.publish(text, text, jsonb, jsonb) IS
    'Insert one outbox row, the JSON payload stored as its UTF-8 text; returns its id.';

-- ---------------------------------------------------------------------------
-- Relay state: one row per relay name (= Kafka transactional.id). Written
-- only by the SECURITY DEFINER functions below.
-- ---------------------------------------------------------------------------
CREATE TABLE outbox.relay_state (
    name             text PRIMARY KEY,
    owner            text,
    -- Fencing token: bumped by every lease takeover; advance() refuses any
    -- other value.
    generation       bigint NOT NULL,
    lease_expires_at timestamptz,
    -- Number of the last Kafka transaction whose position is stored here.
    batch_seq        bigint NOT NULL DEFAULT 0,
    -- The position (DESIGN §2): every transaction visible in pos_done is
    -- relayed; of the open window (pos_done, pos_next], the rows with
    -- id <= pos_after_id are relayed too. pos_next is NULL between windows.
    pos_done         pg_snapshot NOT NULL,
    pos_next         pg_snapshot,
    pos_after_id     bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    advanced_at      timestamptz,
    CONSTRAINT relay_state_name_not_empty CHECK (name <> ''),
    CONSTRAINT relay_state_generation_positive CHECK (generation >= 1),
    CONSTRAINT relay_state_batch_seq_not_negative CHECK (batch_seq >= 0),
    CONSTRAINT relay_state_after_id_in_window
        CHECK (pos_after_id >= 0 AND (pos_next IS NOT NULL OR pos_after_id = 0))
);

COMMENT ON TABLE outbox.relay_state IS
    'One row per relay (name = Kafka transactional.id): lease, fencing generation, position. Written only by outbox functions.';

CREATE FUNCTION outbox.version()
    RETURNS int
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN 1;

COMMENT ON FUNCTION outbox.version() IS
    'Version of the installed outbox schema: the number of the latest migration.';

-- relayed(P) of docs/sql.md for one row: visible in P.done, or in the open
-- window P.next up to P.after_id. A plain SQL expression, so the planner
-- inlines it into the queries below.
CREATE FUNCTION outbox.relayed(p_txid xid8, p_id bigint, p_done pg_snapshot, p_next pg_snapshot,
                               p_after_id bigint)
    RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_visible_in_snapshot(p_txid, p_done)
    OR (p_next IS NOT NULL AND p_id <= p_after_id AND pg_visible_in_snapshot(p_txid, p_next));

COMMENT ON FUNCTION outbox.relayed(xid8, bigint, pg_snapshot, pg_snapshot, bigint) IS
    'Whether a row (txid, id) is relayed at position (done, next, after_id).';

-- ---------------------------------------------------------------------------
-- Lease. Expiry is judged by the database clock (clock_timestamp(), not the
-- transaction start), so relays on hosts with skewed clocks agree. No
-- session state: every lock here is a row lock or transaction-scoped, which
-- keeps the functions correct behind PgBouncer in transaction mode.
-- ---------------------------------------------------------------------------
CREATE FUNCTION outbox.lease_acquire(p_name text, p_owner text, p_ttl_ms int,
                                     p_allow_other_names boolean DEFAULT false)
    RETURNS TABLE (acquired boolean, generation bigint, owner text, expires_in_ms bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_row   outbox.relay_state;
    v_other text;
    v_now   timestamptz;
    v_gen   bigint;
BEGIN
    IF p_name IS NULL OR p_name = '' THEN
        RAISE EXCEPTION 'relay name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_owner IS NULL OR p_owner = '' THEN
        RAISE EXCEPTION 'lease owner must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_ttl_ms IS NULL OR p_ttl_ms <= 0 THEN
        RAISE EXCEPTION 'lease ttl must be positive: % ms', coalesce(p_ttl_ms::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT * INTO v_row FROM outbox.relay_state AS rs WHERE rs.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        -- Two relays with different names starting at once must not both
        -- pass the name guard below: serialize the creation of relay rows.
        -- Transaction-scoped, released at commit.
        PERFORM pg_advisory_xact_lock(hashtext('outbox'), hashtext('relay_state'));
    END IF;

    IF NOT coalesce(p_allow_other_names, false) THEN
        SELECT rs.name INTO v_other
        FROM outbox.relay_state AS rs
        WHERE rs.name <> p_name
        ORDER BY rs.name
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'outbox already has relay "%"; refusing to start relay "%"', v_other, p_name
                USING ERRCODE = 'OR004',
                      DETAIL = 'Two relays with different names on one outbox would each publish every row.',
                      HINT = format('To replace the old relay, stop it and run SELECT outbox.relay_forget(%L); '
                                    'to run both on purpose, allow other relay names (p_allow_other_names).',
                                    v_other);
        END IF;
    END IF;

    v_now := clock_timestamp();
    IF v_row.name IS NULL THEN
        INSERT INTO outbox.relay_state AS rs
            (name, owner, generation, lease_expires_at, batch_seq,
             pos_done, pos_next, pos_after_id, created_at, updated_at)
        -- '1:1:' makes every transaction id >= 1 "not done": nothing is
        -- relayed yet, every existing and future row will be.
        VALUES (p_name, p_owner, 1, v_now + p_ttl_ms * interval '1 millisecond', 0,
                '1:1:', NULL, 0, v_now, v_now)
        ON CONFLICT (name) DO NOTHING;
        IF FOUND THEN
            RETURN QUERY SELECT true, 1::bigint, p_owner, p_ttl_ms::bigint;
            RETURN;
        END IF;
        -- Created by a concurrent acquirer that committed while we waited.
        SELECT * INTO STRICT v_row FROM outbox.relay_state AS rs WHERE rs.name = p_name FOR UPDATE;
        v_now := clock_timestamp();
    END IF;

    IF v_row.owner IS NULL
       OR v_row.lease_expires_at IS NULL
       OR v_row.lease_expires_at <= v_now
       OR v_row.owner = p_owner THEN
        UPDATE outbox.relay_state AS rs
        SET generation = rs.generation + 1,
            owner = p_owner,
            lease_expires_at = v_now + p_ttl_ms * interval '1 millisecond',
            updated_at = v_now
        WHERE rs.name = p_name
        RETURNING rs.generation INTO v_gen;
        RETURN QUERY SELECT true, v_gen, p_owner, p_ttl_ms::bigint;
    ELSE
        RETURN QUERY
        SELECT false, v_row.generation, v_row.owner,
               ceil(extract(epoch FROM v_row.lease_expires_at - v_now) * 1000)::bigint;
    END IF;
END
$$;

COMMENT ON FUNCTION outbox.lease_acquire(text, text, int, boolean) IS
    'Take the lease of a relay if it is free, expired or already ours (new generation); else report the holder.';

CREATE FUNCTION outbox.lease_renew(p_name text, p_generation bigint, p_ttl_ms int)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_ttl_ms IS NULL OR p_ttl_ms <= 0 THEN
        RAISE EXCEPTION 'lease ttl must be positive: % ms', coalesce(p_ttl_ms::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The generation alone decides: if it still matches, nobody took over,
    -- even when the expiry has passed in the meantime.
    UPDATE outbox.relay_state AS rs
    SET lease_expires_at = clock_timestamp() + p_ttl_ms * interval '1 millisecond',
        updated_at = clock_timestamp()
    WHERE rs.name = p_name AND rs.generation = p_generation;
    RETURN FOUND;
END
$$;

COMMENT ON FUNCTION outbox.lease_renew(text, bigint, int) IS
    'Extend the lease; false when the generation is no longer current (fenced).';

CREATE FUNCTION outbox.lease_release(p_name text, p_generation bigint)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Expire now rather than clear the owner: status still shows who held it.
    UPDATE outbox.relay_state AS rs
    SET lease_expires_at = clock_timestamp(),
        updated_at = clock_timestamp()
    WHERE rs.name = p_name AND rs.generation = p_generation;
    RETURN FOUND;
END
$$;

COMMENT ON FUNCTION outbox.lease_release(text, bigint) IS
    'Expire the lease at once (clean shutdown), if the generation is current.';

-- ---------------------------------------------------------------------------
-- Position and windows.
-- ---------------------------------------------------------------------------
CREATE FUNCTION outbox.position_get(p_name text)
    RETURNS TABLE (generation bigint, batch_seq bigint, pos_done text, pos_next text,
                   pos_after_id bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT rs.generation, rs.batch_seq, rs.pos_done::text, rs.pos_next::text, rs.pos_after_id
    FROM outbox.relay_state AS rs
    WHERE rs.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relay "%" does not exist', p_name
            USING ERRCODE = 'OR005',
                  HINT = 'A relay''s state is created by outbox.lease_acquire().';
    END IF;
END
$$;

COMMENT ON FUNCTION outbox.position_get(text) IS
    'The stored position of a relay (snapshots as text; pos_next NULL between windows).';

CREATE FUNCTION outbox.window_open(p_name text)
    RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_pos  pg_snapshot;
    v_snap pg_snapshot;
BEGIN
    SELECT coalesce(rs.pos_next, rs.pos_done) INTO v_pos
    FROM outbox.relay_state AS rs
    WHERE rs.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relay "%" does not exist', p_name
            USING ERRCODE = 'OR005',
                  HINT = 'A relay''s state is created by outbox.lease_acquire().';
    END IF;

    v_snap := pg_current_snapshot();
    -- Transaction ids only move forward. If they are behind the position,
    -- new transactions reuse ids the position calls done and their rows
    -- would be skipped without a trace: refuse instead.
    IF pg_snapshot_xmax(v_snap) < pg_snapshot_xmax(v_pos) THEN
        RAISE EXCEPTION 'the database''s transaction ids are behind the relay position of relay "%"', p_name
            USING ERRCODE = 'OR003',
                  DETAIL = format('The current snapshot is %s, the position''s is %s. This happens after '
                                  'restoring a dump into a new cluster or failing over to a replica that '
                                  'missed commits; new rows would be skipped.', v_snap, v_pos),
                  HINT = 'Stop the relay and follow "Recovery: transaction id regression" in docs/sql.md '
                         '(outbox.position_reset()).';
    END IF;
    RETURN v_snap::text;
END
$$;

COMMENT ON FUNCTION outbox.window_open(text) IS
    'The snapshot that ends the next window (pg_current_snapshot() as text); OR003 when transaction ids went backwards.';

-- Bytes the headers of a row add to a page: names and values.
CREATE FUNCTION outbox.headers_bytes(p_headers jsonb)
    RETURNS int
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (SELECT coalesce(sum(octet_length(h.key) + octet_length(h.value)), 0)::int
        FROM jsonb_each_text(p_headers) AS h);

COMMENT ON FUNCTION outbox.headers_bytes(jsonb) IS
    'Bytes of header names and values, for fetch_page''s byte limit.';

-- fetch_page() in two steps. This one finds the page: {first, last, rows},
-- the id range that holds it and how many rows to read from it (NULLs when
-- the window has no row after p_after_id). fetch_page() then reads them.
--
-- Which index to walk is decided here, explicitly, rather than by the
-- planner, so that a backlog that arrived after the last ANALYZE cannot
-- turn each page into a sort of the whole window:
--   * a probe reads the next 32 rows in id order; when at least a quarter
--     of them are in the window (a backlog), or the table ends there, the
--     page is the next rows of the primary key with the window's filter;
--   * otherwise (steady state with relayed rows kept, or the window's tail)
--     the candidates come from event_txid_idx: transaction ids in
--     [xmax(done), xmax(next)) and those in xip(done) -- exactly the ids not
--     visible in done -- walked in txid order with a cap of 4 * p_max_rows,
--     then sorted by id. Past the cap the window is large after all, and
--     the primary key serves it better.
-- The byte limit needs the page's sizes before the page is read: on the
-- primary-key path that is a second, narrow pass over the page (a third of
-- the cost of a backlog page). The running sum (a window function, costly
-- per row) is computed only when the sum is over the limit. p_max_bytes NULL
-- means no byte limit (the caller counts bytes itself): no narrow pass.
CREATE FUNCTION outbox.fetch_page_bounds(p_done pg_snapshot, p_next pg_snapshot, p_after_id bigint,
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
    END IF;

    IF v_by_id AND p_max_bytes IS NULL THEN
        -- The next p_max_rows rows of the window in id order: fetch_page()
        -- finds them itself, on its way.
        RETURN ARRAY[p_after_id + 1, 9223372036854775807, p_max_rows];
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
    END IF;

    IF v_bytes > p_max_bytes THEN
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
    END IF;
    RETURN ARRAY[v_first, v_last, v_rows];
END
$$;

COMMENT ON FUNCTION outbox.fetch_page_bounds(pg_snapshot, pg_snapshot, bigint, int, bigint) IS
    'Internal to fetch_page(): {first id, last id, rows} of the next page of a window.';

-- LANGUAGE sql with a single SELECT, so that the planner inlines it into the
-- caller's query: rows stream out instead of being materialized as a
-- plpgsql function's result would be (a third of the cost of a 10k-row
-- page). The page's id range comes from fetch_page_bounds() through a CTE,
-- evaluated once per call and never at plan time; the range scan on the
-- primary key then returns the rows in id order without a sort.
CREATE FUNCTION outbox.fetch_page(p_done pg_snapshot, p_next pg_snapshot, p_after_id bigint,
                                  p_max_rows int, p_max_bytes bigint)
    RETURNS TABLE (id bigint, topic text, key bytea, payload bytea, header_names text[],
                   header_values text[], created_ms bigint)
    LANGUAGE sql STABLE
-- A string body rather than BEGIN ATOMIC: inlining parses this short text
-- faster than it reads back a stored parse tree, and this is planned on
-- every call. Every name is schema-qualified, so the caller's search_path
-- does not matter.
AS $$
    WITH bounds AS (
        SELECT outbox.fetch_page_bounds(p_done, p_next, p_after_id, p_max_rows, p_max_bytes) AS b
    )
    SELECT e.id, e.topic, e.key, e.payload,
           -- Headers in jsonb's own key order (shorter names first, then
           -- byte order), which both functions walk: deterministic, and no
           -- sort per row.
           CASE WHEN e.headers IS NOT NULL THEN ARRAY(SELECT pg_catalog.jsonb_object_keys(e.headers)) END,
           CASE WHEN e.headers IS NOT NULL THEN
               ARRAY(SELECT h.value FROM pg_catalog.jsonb_each_text(e.headers) AS h)
           END,
           -- Whole microseconds survive the float8 of date_part() exactly;
           -- integer division then floors to milliseconds.
           (pg_catalog.date_part('epoch', e.created_at) * 1000000)::bigint / 1000
    FROM outbox.event AS e
    WHERE e.id >= (SELECT bounds.b[1] FROM bounds)
      AND e.id <= (SELECT bounds.b[2] FROM bounds)
      -- "p IS NULL OR": with a NULL snapshot the planner would fold the
      -- filter to false and skip the query, bounds and their argument
      -- checks included; this way a NULL reaches fetch_page_bounds(),
      -- which refuses it. For a real snapshot the test folds away.
      AND (p_next IS NULL OR pg_catalog.pg_visible_in_snapshot(e.txid, p_next))
      AND (p_done IS NULL OR NOT pg_catalog.pg_visible_in_snapshot(e.txid, p_done))
    ORDER BY e.id
    -- The page's row count. Besides, a LIMIT makes the planner read the
    -- range in primary-key order, which needs no sort; without one it picks
    -- a bitmap scan and a sort of the whole page while the table has no
    -- statistics yet, or while they are stale.
    LIMIT (SELECT bounds.b[3] FROM bounds)
$$;

COMMENT ON FUNCTION outbox.fetch_page(pg_snapshot, pg_snapshot, bigint, int, bigint) IS
    'The next page of window (done, next]: rows with id > after_id in id order, at most max_rows, cut at max_bytes (first row always).';

CREATE FUNCTION outbox.advance(p_name text, p_generation bigint, p_batch_seq bigint,
                               p_done text, p_next text, p_after_id bigint,
                               p_retention_ms bigint DEFAULT 0)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old     outbox.relay_state;
    v_done    pg_snapshot;
    v_next    pg_snapshot;
    v_cur     pg_snapshot;
    v_id_lo   bigint := -9223372036854775808;
    v_id_hi   bigint := 9223372036854775807;
    v_others  boolean;
    v_deleted bigint;
BEGIN
    IF p_done IS NULL OR p_batch_seq IS NULL OR p_after_id IS NULL OR p_after_id < 0
       OR p_retention_ms IS NULL OR p_retention_ms < 0 THEN
        RAISE EXCEPTION 'invalid position: batch %, done %, after_id %, retention % ms',
                        coalesce(p_batch_seq::text, 'NULL'), coalesce(p_done, 'NULL'),
                        coalesce(p_after_id::text, 'NULL'), coalesce(p_retention_ms::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_done := p_done::pg_snapshot;
    v_next := p_next::pg_snapshot;
    IF v_next IS NULL AND p_after_id <> 0 THEN
        RAISE EXCEPTION 'invalid position: after_id % without an open window', p_after_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_snapshot_xmax(v_next) < pg_snapshot_xmax(v_done) THEN
        RAISE EXCEPTION 'invalid position: window end % is before its start %', v_next, v_done
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT * INTO v_old FROM outbox.relay_state AS rs WHERE rs.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relay "%" does not exist', p_name
            USING ERRCODE = 'OR005',
                  HINT = 'A relay''s state is created by outbox.lease_acquire().';
    END IF;
    IF v_old.generation <> p_generation THEN
        RAISE EXCEPTION 'relay "%" was fenced: generation % is stale, current is %',
                        p_name, p_generation, v_old.generation
            USING ERRCODE = 'OR001',
                  HINT = 'Another relay took the lease over; this one must stop publishing.';
    END IF;
    IF p_batch_seq <= v_old.batch_seq THEN
        RAISE EXCEPTION 'relay "%" position would go backwards: batch % is not after stored batch %',
                        p_name, p_batch_seq, v_old.batch_seq
            USING ERRCODE = 'OR002';
    END IF;
    -- batch_seq orders positions; the snapshots must agree with it: done
    -- never moves back, and from inside a window the position either stays
    -- in it (after_id not decreasing) or reaches its end or beyond.
    IF pg_snapshot_xmax(v_done) < pg_snapshot_xmax(v_old.pos_done)
       OR (v_old.pos_next IS NOT NULL
           AND CASE WHEN v_done::text = v_old.pos_done::text AND v_next::text = v_old.pos_next::text
                    THEN p_after_id < v_old.pos_after_id
                    ELSE pg_snapshot_xmax(v_done) < pg_snapshot_xmax(v_old.pos_next)
               END) THEN
        RAISE EXCEPTION 'relay "%" position would go backwards: % is before stored %', p_name,
                        format('(%s, %s, %s)', v_done, coalesce(v_next::text, '-'), p_after_id),
                        format('(%s, %s, %s)', v_old.pos_done, coalesce(v_old.pos_next::text, '-'),
                               v_old.pos_after_id)
            USING ERRCODE = 'OR002';
    END IF;
    -- A position can only have been taken from this database's past. One
    -- ahead of the current snapshot (a Kafka checkpoint after a restore or a
    -- lossy failover) would hide the next transactions' rows.
    v_cur := pg_current_snapshot();
    IF pg_snapshot_xmax(coalesce(v_next, v_done)) > pg_snapshot_xmax(v_cur) THEN
        RAISE EXCEPTION 'the database''s transaction ids are behind the relay position of relay "%"', p_name
            USING ERRCODE = 'OR003',
                  DETAIL = format('The current snapshot is %s, the new position''s is %s.', v_cur,
                                  coalesce(v_next, v_done)),
                  HINT = 'Stop the relay and follow "Recovery: transaction id regression" in docs/sql.md '
                         '(outbox.position_reset()).';
    END IF;

    UPDATE outbox.relay_state AS rs
    SET batch_seq = p_batch_seq,
        pos_done = v_done,
        pos_next = v_next,
        pos_after_id = p_after_id,
        advanced_at = clock_timestamp(),
        updated_at = clock_timestamp()
    WHERE rs.name = p_name;

    IF p_retention_ms > 0 THEN
        RETURN 0;
    END IF;

    -- Delete relayed(new) AND NOT relayed(old). The predicate alone is
    -- exact; the bounds in front of it only make it cheap:
    --   txid < xmax of the new position (nothing above it is relayed);
    --   txid >= xmax(old done) or in xip(old done) (= not visible in it);
    --   an id range when the move stays inside the old window: then every
    --   newly relayed row is in (old after_id, new after_id], which during a
    --   backlog drain is a short primary-key range while the txid range is
    --   the whole backlog.
    IF v_old.pos_next IS NOT NULL
       AND ((v_done::text = v_old.pos_done::text AND v_next::text = v_old.pos_next::text)
            OR (v_done::text = v_old.pos_next::text AND v_next IS NULL)) THEN
        v_id_lo := v_old.pos_after_id;
    END IF;
    IF v_next IS NOT NULL AND v_done::text = v_old.pos_done::text THEN
        v_id_hi := p_after_id;
    END IF;

    -- With more than one relay name (allowed explicitly), a row may go only
    -- once every relay has relayed it.
    SELECT EXISTS (SELECT FROM outbox.relay_state AS rs WHERE rs.name <> p_name) INTO v_others;

    EXECUTE format($q$
        DELETE FROM outbox.event AS e
        WHERE e.id > $1 AND e.id <= $2
          AND e.txid < $3
          AND (e.txid >= $4 OR e.txid = ANY ($5))
          AND outbox.relayed(e.txid, e.id, $6, $7, $8)
          AND NOT outbox.relayed(e.txid, e.id, $9, $10, $11)
          %s
    $q$, CASE WHEN v_others THEN $c$
          AND NOT EXISTS (SELECT FROM outbox.relay_state AS o
                          WHERE o.name <> $12
                            AND NOT outbox.relayed(e.txid, e.id, o.pos_done, o.pos_next,
                                                   o.pos_after_id))
    $c$ ELSE '' END)
    USING v_id_lo, v_id_hi, pg_snapshot_xmax(coalesce(v_next, v_done)),
          pg_snapshot_xmax(v_old.pos_done), ARRAY(SELECT pg_snapshot_xip(v_old.pos_done)),
          v_done, v_next, p_after_id, v_old.pos_done, v_old.pos_next, v_old.pos_after_id,
          p_name;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$$;

COMMENT ON FUNCTION outbox.advance(text, bigint, bigint, text, text, bigint, bigint) IS
    'Store the position after a committed Kafka batch (fenced, monotone) and delete the rows it relayed unless retention > 0.';

CREATE FUNCTION outbox.purge(p_name text, p_retention_ms bigint, p_max_rows int)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_pos     outbox.relay_state;
    v_others  boolean;
    v_deleted bigint;
BEGIN
    IF p_retention_ms IS NULL OR p_retention_ms < 0 OR p_max_rows IS NULL OR p_max_rows < 1 THEN
        RAISE EXCEPTION 'invalid purge request: retention % ms, max_rows %',
                        coalesce(p_retention_ms::text, 'NULL'), coalesce(p_max_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- FOR SHARE: the position cannot change under us (advance and reset
    -- take FOR UPDATE), while other purges may run.
    SELECT * INTO v_pos FROM outbox.relay_state AS rs WHERE rs.name = p_name FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relay "%" does not exist', p_name
            USING ERRCODE = 'OR005',
                  HINT = 'A relay''s state is created by outbox.lease_acquire().';
    END IF;
    SELECT EXISTS (SELECT FROM outbox.relay_state AS rs WHERE rs.name <> p_name) INTO v_others;

    -- Oldest first, in primary key order: relayed rows are at the low end.
    EXECUTE format($q$
        DELETE FROM outbox.event AS e
        WHERE e.id IN (
            SELECT c.id
            FROM outbox.event AS c
            WHERE c.created_at < $1
              AND c.txid < $2
              AND outbox.relayed(c.txid, c.id, $3, $4, $5)
              %s
            ORDER BY c.id
            LIMIT $6)
    $q$, CASE WHEN v_others THEN $c$
              AND NOT EXISTS (SELECT FROM outbox.relay_state AS o
                              WHERE o.name <> $7
                                AND NOT outbox.relayed(c.txid, c.id, o.pos_done, o.pos_next,
                                                       o.pos_after_id))
    $c$ ELSE '' END)
    USING clock_timestamp() - p_retention_ms * interval '1 millisecond',
          pg_snapshot_xmax(coalesce(v_pos.pos_next, v_pos.pos_done)),
          v_pos.pos_done, v_pos.pos_next, v_pos.pos_after_id, p_max_rows, p_name;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$$;

COMMENT ON FUNCTION outbox.purge(text, bigint, int) IS
    'Delete up to max_rows relayed rows older than the retention; returns the number deleted.';

CREATE FUNCTION outbox.lag(p_name text)
    RETURNS TABLE (rows bigint, oldest_age_ms bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_pos    outbox.relay_state;
    v_rows   bigint;
    v_oldest timestamptz;
BEGIN
    SELECT * INTO v_pos FROM outbox.relay_state AS rs WHERE rs.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relay "%" does not exist', p_name
            USING ERRCODE = 'OR005',
                  HINT = 'A relay''s state is created by outbox.lease_acquire().';
    END IF;
    -- Committed = visible to this statement's snapshot. Unrelayed rows are
    -- not visible in pos_done, which bounds the scan as in fetch_page().
    EXECUTE $q$
        SELECT count(*), min(e.created_at)
        FROM outbox.event AS e
        WHERE (e.txid >= $1 OR e.txid = ANY ($2))
          AND NOT outbox.relayed(e.txid, e.id, $3, $4, $5)
    $q$
    INTO v_rows, v_oldest
    USING pg_snapshot_xmax(v_pos.pos_done), ARRAY(SELECT pg_snapshot_xip(v_pos.pos_done)),
          v_pos.pos_done, v_pos.pos_next, v_pos.pos_after_id;
    RETURN QUERY
    SELECT v_rows,
           coalesce(greatest(0, floor(extract(epoch FROM clock_timestamp() - v_oldest) * 1000)), 0)::bigint;
END
$$;

COMMENT ON FUNCTION outbox.lag(text) IS
    'Committed rows the relay has not relayed yet, and the age in ms of the oldest (0 when none).';

CREATE FUNCTION outbox.status(p_name text)
    RETURNS TABLE (name text, owner text, generation bigint, lease_expires_at timestamptz,
                   lease_expires_in_ms bigint, batch_seq bigint, pos_done text, pos_next text,
                   pos_after_id bigint, created_at timestamptz, updated_at timestamptz,
                   advanced_at timestamptz, lag_rows bigint, lag_oldest_age_ms bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF NOT EXISTS (SELECT FROM outbox.relay_state AS rs WHERE rs.name = p_name) THEN
        RAISE EXCEPTION 'relay "%" does not exist', p_name
            USING ERRCODE = 'OR005',
                  HINT = 'A relay''s state is created by outbox.lease_acquire().';
    END IF;
    RETURN QUERY
    SELECT rs.name, rs.owner, rs.generation, rs.lease_expires_at,
           floor(extract(epoch FROM rs.lease_expires_at - clock_timestamp()) * 1000)::bigint,
           rs.batch_seq, rs.pos_done::text, rs.pos_next::text, rs.pos_after_id,
           rs.created_at, rs.updated_at, rs.advanced_at, l.rows, l.oldest_age_ms
    FROM outbox.lag(p_name) AS l
    CROSS JOIN outbox.relay_state AS rs
    WHERE rs.name = p_name;
END
$$;

COMMENT ON FUNCTION outbox.status(text) IS
    'One row: a relay''s state, ms until its lease expires (negative: expired), and its lag.';

-- ---------------------------------------------------------------------------
-- Operator functions (not granted to the relay).
-- ---------------------------------------------------------------------------
CREATE FUNCTION outbox.relay_forget(p_name text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM outbox.relay_state AS rs WHERE rs.name = p_name;
    RETURN FOUND;
END
$$;

COMMENT ON FUNCTION outbox.relay_forget(text) IS
    'Operator: delete a relay''s state (lease and position). A relay started again under that name relays every row present.';

CREATE FUNCTION outbox.position_reset(p_name text, p_generation bigint, p_existing text,
                                      p_batch_seq bigint DEFAULT NULL)
    RETURNS TABLE (generation bigint, batch_seq bigint, pos_done text, rows_restamped bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_old       outbox.relay_state;
    v_xid       xid8;
    v_snap      pg_snapshot;
    v_done      pg_snapshot;
    v_batch     bigint;
    v_restamped bigint;
BEGIN
    IF p_existing IS NULL OR p_existing NOT IN ('relay', 'skip') THEN
        RAISE EXCEPTION 'p_existing must be ''relay'' or ''skip'', not %', coalesce(p_existing, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO v_old FROM outbox.relay_state AS rs WHERE rs.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relay "%" does not exist', p_name
            USING ERRCODE = 'OR005',
                  HINT = 'A relay''s state is created by outbox.lease_acquire().';
    END IF;
    IF v_old.generation <> p_generation THEN
        RAISE EXCEPTION 'relay "%" was fenced: generation % is stale, current is %',
                        p_name, p_generation, v_old.generation
            USING ERRCODE = 'OR001',
                  HINT = 'Read the current generation with outbox.status() and check who holds the lease.';
    END IF;
    v_batch := coalesce(p_batch_seq, v_old.batch_seq + 1);
    IF v_batch <= v_old.batch_seq THEN
        RAISE EXCEPTION 'relay "%" position would go backwards: batch % is not after stored batch %',
                        p_name, v_batch, v_old.batch_seq
            USING ERRCODE = 'OR002';
    END IF;

    -- Keep writers out until we commit: then every row we can see is
    -- committed, and a row whose txid is at or above our snapshot's xmax
    -- cannot come from this cluster's transactions (a restored dump keeps the
    -- old cluster's ids). EXCLUSIVE still lets readers through.
    LOCK TABLE outbox.event IN EXCLUSIVE MODE;
    v_xid := pg_current_xact_id();
    v_snap := pg_current_snapshot();

    -- Give such rows our own transaction id: it is now at or below the
    -- counter, so the windows can place them.
    UPDATE outbox.event AS e
    SET txid = v_xid
    WHERE e.txid >= pg_snapshot_xmax(v_snap) AND e.txid <> v_xid;
    GET DIAGNOSTICS v_restamped = ROW_COUNT;

    IF p_existing = 'relay' THEN
        -- Nothing relayed: every row present, and every later one, goes out.
        v_done := '1:1:';
    ELSE
        -- Everything committed now, our restamped rows included, is relayed;
        -- every transaction still running (in xip), or not yet started, is
        -- not. Our own id is never in our xip; when it is at or above the
        -- snapshot's xmax, widen xmax past it and count the ids in between
        -- as running (none of them had completed when the snapshot was taken).
        SELECT format('%s:%s:%s',
                      pg_snapshot_xmin(v_snap),
                      greatest(pg_snapshot_xmax(v_snap)::text::numeric, v_xid::text::numeric + 1),
                      coalesce(string_agg(x::text, ',' ORDER BY x), ''))::pg_snapshot
        INTO v_done
        FROM (
            SELECT pg_snapshot_xip(v_snap)::text::numeric AS x
            UNION
            SELECT generate_series(pg_snapshot_xmax(v_snap)::text::numeric, v_xid::text::numeric - 1)
        ) AS ids;
    END IF;

    UPDATE outbox.relay_state AS rs
    SET generation = rs.generation + 1,
        lease_expires_at = clock_timestamp(),
        batch_seq = v_batch,
        pos_done = v_done,
        pos_next = NULL,
        pos_after_id = 0,
        advanced_at = clock_timestamp(),
        updated_at = clock_timestamp()
    WHERE rs.name = p_name;

    RETURN QUERY SELECT v_old.generation + 1, v_batch, v_done::text, v_restamped;
END
$$;

COMMENT ON FUNCTION outbox.position_reset(text, bigint, text, bigint) IS
    'Operator, after OR003 only: restart the position in the current transaction id space (docs/sql.md, Recovery).';

-- ---------------------------------------------------------------------------
-- Wake-up. NOTIFY takes a cluster-wide lock at commit, which serializes
-- committing writers: optional, measured, off by default (docs/sql.md).
-- ---------------------------------------------------------------------------
CREATE FUNCTION outbox.notify_event()
    RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- No payload: identical notifications of one transaction fold into one.
    NOTIFY outbox_event;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION outbox.notify_event() IS
    'Trigger function: NOTIFY outbox_event once per inserting statement.';

CREATE FUNCTION outbox.notify_enabled()
    RETURNS boolean
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger
                   WHERE tgrelid = 'outbox.event'::regclass AND tgname = 'event_notify');
END;

COMMENT ON FUNCTION outbox.notify_enabled() IS
    'Whether inserts into outbox.event send NOTIFY outbox_event.';

CREATE FUNCTION outbox.notify_enable()
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF outbox.notify_enabled() THEN
        RETURN false;
    END IF;
    CREATE TRIGGER event_notify
        AFTER INSERT ON outbox.event
        FOR EACH STATEMENT EXECUTE FUNCTION outbox.notify_event();
    RETURN true;
EXCEPTION WHEN duplicate_object THEN
    -- A concurrent notify_enable() created it first.
    RETURN false;
END
$$;

COMMENT ON FUNCTION outbox.notify_enable() IS
    'Create the statement-level NOTIFY trigger on outbox.event; false when it was already there.';

CREATE FUNCTION outbox.notify_disable()
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT outbox.notify_enabled() THEN
        RETURN false;
    END IF;
    DROP TRIGGER IF EXISTS event_notify ON outbox.event;
    RETURN true;
END
$$;

COMMENT ON FUNCTION outbox.notify_disable() IS
    'Drop the NOTIFY trigger on outbox.event; false when it was not there.';

-- ---------------------------------------------------------------------------
-- Privileges. Functions are created executable by PUBLIC: take that back
-- and grant per role. Every later migration repeats this for what it adds.
-- ---------------------------------------------------------------------------
REVOKE ALL ON ALL TABLES IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA outbox FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA outbox FROM PUBLIC;

-- Pure helpers, needed by anyone who inserts (the CHECK calls headers_valid)
-- or reads positions.
GRANT EXECUTE ON FUNCTION
    outbox.headers_valid(jsonb),
    outbox.headers_bytes(jsonb),
    outbox.relayed(xid8, bigint, pg_snapshot, pg_snapshot, bigint),
    outbox.version(),
    outbox.notify_enabled()
TO PUBLIC;

GRANT USAGE ON SCHEMA outbox TO outbox_relay, outbox_writer;

-- Writers: insert the four data columns only. id, txid and created_at keep
-- their defaults, so a writer cannot plant a txid that a window would
-- consider already relayed. SELECT (id) is what INSERT ... RETURNING id needs.
GRANT INSERT (topic, key, payload, headers), SELECT (id) ON outbox.event TO outbox_writer;
GRANT USAGE ON SEQUENCE outbox.event_id_seq TO outbox_writer;
GRANT EXECUTE ON FUNCTION
    outbox.publish(text, bytea, bytea, jsonb),
    outbox.publish(text, text, text, jsonb),
    outbox.publish(text, text, jsonb, jsonb)
TO outbox_writer;

-- The relay: read rows (fetch_page runs with the caller's rights), and the
-- functions of its loop. It cannot write relay_state or delete rows except
-- through the SECURITY DEFINER functions, which enforce fencing.
GRANT SELECT ON outbox.event TO outbox_relay;
GRANT EXECUTE ON FUNCTION
    outbox.lease_acquire(text, text, int, boolean),
    outbox.lease_renew(text, bigint, int),
    outbox.lease_release(text, bigint),
    outbox.position_get(text),
    outbox.window_open(text),
    outbox.fetch_page(pg_snapshot, pg_snapshot, bigint, int, bigint),
    outbox.fetch_page_bounds(pg_snapshot, pg_snapshot, bigint, int, bigint),
    outbox.advance(text, bigint, bigint, text, text, bigint, bigint),
    outbox.purge(text, bigint, int),
    outbox.lag(text),
    outbox.status(text)
TO outbox_relay;
