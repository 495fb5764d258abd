-- SUPERSEDED by sql/migrations/0005_partitioned_outbox.sql (schema 5); kept
-- as the prototype that bench/sql/RESULTS.md's runs 2-6 measured.
-- DRAFT, NOT SHIPPED (bench/dbcost.py's prototype, issue 13): what a
-- migration 0003 could look like that takes the DELETE off the relay's hot
-- path. outbox.event becomes a table partitioned by blocks of identity
-- values, rotated the way PgQ rotates its event tables: rows go to the
-- partition of their id's block; a partition whose every row is relayed (by
-- every relay name) is TRUNCATEd, never deleted row by row, so there are no
-- dead tuples to vacuum. Windows, pages and positions are untouched: the
-- relay still reads outbox.event (the parent) with fetch_page(), and
-- relayed(P) decides what may go, exactly as the DELETE in advance() did.
--
-- Apply on top of schema version 2 (bench/dbcost.py does, in a scratch
-- database): psql -v ON_ERROR_STOP=1 -f bench/sql/draft_0003_partitioned_outbox.sql
-- It runs in one transaction and takes ACCESS EXCLUSIVE on outbox.event
-- while it copies the rows present (writers wait for that long).
--
-- Layout: block(id) = id / 65536; partition event_p<k> holds the blocks
-- with block % 8 = k (LIST on the expression, so the 8 partitions are
-- reused for ever: no CREATE or DROP at run time, which would lock the
-- parent). TRUNCATE of a partition locks only that partition.
BEGIN;

CREATE OR REPLACE FUNCTION outbox.version()
    RETURNS int
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN 3;

-- The old table keeps its rows until they are copied below.
ALTER TABLE outbox.event RENAME TO event_v2;
ALTER SEQUENCE outbox.event_id_seq RENAME TO event_v2_id_seq;
ALTER INDEX outbox.event_pkey RENAME TO event_v2_pkey;
ALTER INDEX outbox.event_txid_idx RENAME TO event_v2_txid_idx;

CREATE TABLE outbox.event (
    id         bigint GENERATED ALWAYS AS IDENTITY,
    txid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    topic      text NOT NULL,
    key        bytea,
    payload    bytea,
    headers    jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_topic_not_empty CHECK (topic <> ''),
    CONSTRAINT event_topic_legal_chars CHECK (topic ~ '^[A-Za-z0-9._-]*$'),
    CONSTRAINT event_topic_max_length CHECK (length(topic) <= 249),
    CONSTRAINT event_topic_not_dot CHECK (topic NOT IN ('.', '..')),
    CONSTRAINT event_headers_string_object CHECK (outbox.headers_valid(headers))
) PARTITION BY LIST (((id / 65536) % 8));

-- No PRIMARY KEY: a unique constraint on a partitioned table must contain
-- the partition key's columns, and an expression key is not allowed in
-- one. Ids stay unique because they are GENERATED ALWAYS (writers cannot
-- choose them); a plain index serves the keyset scans.
CREATE INDEX event_id_idx ON outbox.event (id);
CREATE INDEX event_txid_idx ON outbox.event (txid);

DO $$
BEGIN
    FOR k IN 0..7 LOOP
        EXECUTE format('CREATE TABLE outbox.event_p%s PARTITION OF outbox.event FOR VALUES IN (%s)', k, k);
        -- Rows are never updated or deleted here (position_reset aside):
        -- nothing for vacuum to do but freezing and the visibility map,
        -- and TRUNCATE resets both. Insert-triggered vacuums are off;
        -- anti-wraparound vacuums still run. Analyze as before.
        EXECUTE format('ALTER TABLE outbox.event_p%s SET (autovacuum_vacuum_insert_threshold = -1, '
                       'autovacuum_analyze_scale_factor = 0.01)', k);
    END LOOP;
END
$$;

-- Rotation state, per partition: every block of it up to done_block is
-- truncated (a partition holds blocks k, k + 8, k + 16, ...), and when it
-- was last tried (a partition that cannot go yet -- a writer's transaction
-- still open in it -- is tried again at most once a second).
CREATE TABLE outbox.event_partition (
    part        int PRIMARY KEY CHECK (part BETWEEN 0 AND 7),
    done_block  bigint NOT NULL DEFAULT -1,
    tried_at    timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO outbox.event_partition (part) SELECT generate_series(0, 7);

INSERT INTO outbox.event (id, txid, topic, key, payload, headers, created_at)
OVERRIDING SYSTEM VALUE
SELECT id, txid, topic, key, payload, headers, created_at FROM outbox.event_v2 ORDER BY id;
SELECT setval(pg_get_serial_sequence('outbox.event', 'id'),
              greatest((SELECT last_value FROM outbox.event_v2_id_seq), 1),
              (SELECT is_called FROM outbox.event_v2_id_seq));

-- The triggers of 0002 (statement-level, transition tables: allowed on a
-- partitioned table) and the NOTIFY trigger if it was on.
CREATE TRIGGER event_refuse_reserved_insert
    AFTER INSERT ON outbox.event
    REFERENCING NEW TABLE AS event_new
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.event_refuse_reserved();
CREATE TRIGGER event_refuse_reserved_update
    AFTER UPDATE ON outbox.event
    REFERENCING OLD TABLE AS event_old NEW TABLE AS event_new
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.event_refuse_reserved();
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'outbox.event_v2'::regclass
                                        AND tgname = 'event_notify') THEN
        CREATE TRIGGER event_notify AFTER INSERT ON outbox.event
            FOR EACH STATEMENT EXECUTE FUNCTION outbox.notify_event();
    END IF;
END
$$;

-- BEGIN ATOMIC bodies are bound to the table they were created against:
-- publish() x3 and notify_enabled() are created again, bodies as in 0001
-- (CREATE OR REPLACE keeps their grants).
CREATE OR REPLACE FUNCTION outbox.publish(topic text, key bytea, payload bytea, headers jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    INSERT INTO outbox.event (topic, key, payload, headers)
    VALUES (publish.topic, publish.key, publish.payload, publish.headers)
    RETURNING id;
END;
CREATE OR REPLACE FUNCTION outbox.publish(topic text, key text, payload text, headers jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    INSERT INTO outbox.event (topic, key, payload, headers)
    VALUES (publish.topic, convert_to(publish.key, 'UTF8'), convert_to(publish.payload, 'UTF8'),
            publish.headers)
    RETURNING id;
END;
CREATE OR REPLACE FUNCTION outbox.publish(topic text, key text, payload jsonb, headers jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    INSERT INTO outbox.event (topic, key, payload, headers)
    VALUES (publish.topic, convert_to(publish.key, 'UTF8'), convert_to(publish.payload::text, 'UTF8'),
            publish.headers)
    RETURNING id;
END;
CREATE OR REPLACE FUNCTION outbox.notify_enabled()
    RETURNS boolean
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger
                   WHERE tgrelid = 'outbox.event'::regclass AND tgname = 'event_notify');
END;

DROP TABLE outbox.event_v2;

-- Whether every committed row of partition p_part is relayed by every
-- relay. Rows of transactions still open are not seen here; the caller
-- holds ACCESS EXCLUSIVE on the partition, so there are none.
-- Unrelayed(P) <=> NOT visible(done) AND (next IS NULL OR id > after_id OR
-- NOT visible(next)); NOT visible(s) implies txid >= xmin(s): each test is
-- one index range probe that stops at the first unrelayed row.
CREATE FUNCTION outbox.partition_relayed(p_part regclass)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r     record;
    v_any boolean;
BEGIN
    FOR r IN SELECT rs.pos_done, rs.pos_next, rs.pos_after_id FROM outbox.relay_state AS rs LOOP
        IF r.pos_next IS NULL THEN
            -- ORDER BY ... LIMIT 1 pins the index walk: relayed rows stay
            -- in the partition until it is truncated, and a sequential
            -- scan would step over all of them.
            EXECUTE format('SELECT EXISTS (SELECT FROM %s AS e WHERE e.txid >= $1'
                           ' AND NOT pg_visible_in_snapshot(e.txid, $2) ORDER BY e.txid LIMIT 1)', p_part)
            INTO v_any USING pg_snapshot_xmin(r.pos_done), r.pos_done;
        ELSE
            EXECUTE format('SELECT EXISTS (SELECT FROM %s AS e WHERE e.id > $1'
                           ' AND NOT pg_visible_in_snapshot(e.txid, $2) ORDER BY e.id LIMIT 1)'
                           ' OR EXISTS (SELECT FROM %s AS e WHERE e.txid >= $3'
                           ' AND NOT pg_visible_in_snapshot(e.txid, $2)'
                           ' AND NOT pg_visible_in_snapshot(e.txid, $4) ORDER BY e.txid LIMIT 1)', p_part, p_part)
            INTO v_any USING r.pos_after_id, r.pos_done, pg_snapshot_xmin(r.pos_next), r.pos_next;
        END IF;
        IF v_any THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END
$$;

-- Truncate the partitions whose rows are all relayed. For each partition,
-- its newest block that has ids yet (at most the sequence's current block)
-- is considered when it is newer than what was truncated there last, and
--   * the caller's position is not inside a window that has still to read
--     up to that block's last id (then it is surely not done: no probe), or
--     it is the current block and the position is past every id assigned;
--   * and the partition was not tried in the last second, unless the
--     position is past every id assigned (the end of a drain).
-- Each partition is judged on its own: one open transaction holds back
-- only the partition it wrote into. A partition is truncated only under
-- ACCESS EXCLUSIVE taken with NOWAIT (no writer has uncommitted rows in it,
-- and none waits behind us for long), after checking again with a snapshot
-- taken under the lock. Returns the number of partitions truncated.
CREATE FUNCTION outbox.rotate(p_after_id bigint, p_in_window boolean)
    RETURNS int
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r       outbox.event_partition;
    v_last  bigint;
    v_cur   bigint;
    v_block bigint;
    v_caught_up boolean;
    v_part  regclass;
    v_n     int := 0;
BEGIN
    SELECT s.last_value INTO v_last FROM outbox.event_id_seq AS s;
    v_cur := v_last / 65536;
    v_caught_up := p_in_window AND p_after_id >= v_last;
    FOR r IN SELECT * FROM outbox.event_partition ORDER BY part LOOP
        v_block := v_cur - ((v_cur - r.part) % 8 + 8) % 8;  -- newest block of this partition
        CONTINUE WHEN v_block < 0 OR v_block <= r.done_block;
        CONTINUE WHEN p_in_window AND NOT v_caught_up AND p_after_id < (v_block + 1) * 65536 - 1;
        CONTINUE WHEN NOT v_caught_up AND r.tried_at > clock_timestamp() - interval '1 second';
        UPDATE outbox.event_partition SET tried_at = clock_timestamp() WHERE part = r.part;
        v_part := format('outbox.event_p%s', r.part)::regclass;
        CONTINUE WHEN NOT outbox.partition_relayed(v_part);
        BEGIN
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE NOWAIT', v_part);
        EXCEPTION WHEN lock_not_available THEN
            CONTINUE;
        END;
        CONTINUE WHEN NOT outbox.partition_relayed(v_part);
        EXECUTE format('TRUNCATE %s', v_part);
        v_n := v_n + 1;
        -- The current block still receives ids: it stays open.
        UPDATE outbox.event_partition
        SET done_block = CASE WHEN v_block < v_cur THEN v_block ELSE v_block - 8 END
        WHERE part = r.part;
    END LOOP;
    RETURN v_n;
END
$$;

-- advance(): v2's checks and position update, then rotate() instead of the
-- DELETE. Returns the number of partitions truncated (not rows).
CREATE OR REPLACE FUNCTION outbox.advance(p_name text, p_generation bigint, p_batch_seq bigint,
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
        RAISE EXCEPTION 'relay "%" does not exist', p_name USING ERRCODE = 'OR005';
    END IF;
    IF v_old.generation <> p_generation THEN
        RAISE EXCEPTION 'relay "%" was fenced: generation % is stale, current is %',
                        p_name, p_generation, v_old.generation USING ERRCODE = 'OR001';
    END IF;
    IF p_batch_seq = v_old.batch_seq
       AND v_done::text = v_old.pos_done::text
       AND v_next::text IS NOT DISTINCT FROM v_old.pos_next::text
       AND p_after_id = v_old.pos_after_id THEN
        RETURN NULL;
    END IF;
    IF p_batch_seq <= v_old.batch_seq THEN
        RAISE EXCEPTION 'relay "%" position would go backwards: batch % is not after stored batch %',
                        p_name, p_batch_seq, v_old.batch_seq USING ERRCODE = 'OR002';
    END IF;
    IF pg_snapshot_xmax(v_done) < pg_snapshot_xmax(v_old.pos_done)
       OR (v_old.pos_next IS NOT NULL
           AND CASE WHEN v_done::text = v_old.pos_done::text AND v_next::text = v_old.pos_next::text
                    THEN p_after_id < v_old.pos_after_id
                    ELSE pg_snapshot_xmax(v_done) < pg_snapshot_xmax(v_old.pos_next)
               END) THEN
        RAISE EXCEPTION 'relay "%" position would go backwards', p_name USING ERRCODE = 'OR002';
    END IF;
    v_cur := pg_current_snapshot();
    IF pg_snapshot_xmax(coalesce(v_next, v_done)) > pg_snapshot_xmax(v_cur) THEN
        RAISE EXCEPTION 'the database''s transaction ids are behind the relay position of relay "%"', p_name
            USING ERRCODE = 'OR003';
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
    -- Inside one window, a partition can only become due when the
    -- position crosses a block boundary or has read every id assigned so
    -- far: the other advances of a drain skip rotate() altogether.
    IF v_next IS NOT NULL AND v_old.pos_next IS NOT NULL
       AND v_next::text = v_old.pos_next::text
       AND p_after_id / 65536 = v_old.pos_after_id / 65536
       AND p_after_id < (SELECT s.last_value FROM outbox.event_id_seq AS s) THEN
        RETURN 0;
    END IF;
    RETURN outbox.rotate(p_after_id, v_next IS NOT NULL);
END
$$;

REVOKE ALL ON outbox.event, outbox.event_partition FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION outbox.partition_relayed(regclass), outbox.rotate(bigint, boolean) FROM PUBLIC;
GRANT INSERT (topic, key, payload, headers), SELECT (id) ON outbox.event TO outbox_writer;
GRANT USAGE ON SEQUENCE outbox.event_id_seq TO outbox_writer;
GRANT SELECT ON outbox.event TO outbox_relay;

COMMIT;
