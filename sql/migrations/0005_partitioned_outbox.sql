-- 0005_partitioned_outbox.sql: relayed rows leave by TRUNCATE of a whole
-- partition, never by DELETE row by row.
--
-- Why (bench/sql/RESULTS.md, "Issue 13"): the DELETE in advance() and the
-- VACUUM of its dead rows were the largest part of what a drain cost the
-- server (about 2x the CPU of reading every row once at batches of 1000
-- rows, 1x at 10000, and 130 MB of WAL per 300k rows). A TRUNCATE of a
-- partition costs the same whatever its rows, writes almost no WAL and
-- leaves nothing to vacuum.
--
-- Layout. outbox.event becomes a table partitioned by blocks of 65536 ids:
-- block(id) = id / 65536, and partition event_p<k> holds the blocks with
-- block % 8 = k (LIST on that expression). The eight partitions are reused
-- for ever, the way PgQ rotates a fixed set of event tables: nothing is
-- created, attached, detached or dropped at run time (each of those locks
-- the parent and so every writer). Ids stay unique: a unique index on id in
-- every partition, and equal ids always fall into the same partition. (The
-- parent cannot have a primary key: a unique key of a partitioned table must
-- contain the partition key's columns, and an expression is not allowed.)
--
-- Cleanup. advance() keeps every check and the position update of version
-- 2, and instead of its DELETE calls rotate(), which truncates a partition
-- when every committed row in it is relayed by every relay name -- relayed(P)
-- of docs/sql.md, the predicate the DELETE used -- checked once, then again
-- under LOCK TABLE ... IN ACCESS EXCLUSIVE MODE NOWAIT with a snapshot
-- taken after the lock was granted. The lock is what makes it safe: a
-- writer with an uncommitted row in the partition holds ROW EXCLUSIVE on it
-- until its transaction ends, so the lock is refused and the partition
-- stays; once it is granted, every writer that ever inserted there has
-- committed (and the second check sees its rows) or rolled back. Relayed
-- rows therefore stay in the table until their whole partition can go (at
-- most about two blocks in steady state, more while one writer transaction
-- stays open or the relay lags): the table's rows are no longer only the
-- unrelayed ones. relay_forget() and position_reset(..., 'relay') account
-- for that (below).
--
-- Upgrade from version 4: one transaction that takes ACCESS EXCLUSIVE on
-- outbox.event and copies the rows present into the new table with their
-- ids and transaction ids (writers wait that long: short for a queue that
-- is kept up with, seconds for millions of kept rows). The position is not
-- touched: nothing is lost and nothing is sent again. Relays must be of
-- this version (they check outbox.version() at start).
--
-- Runs inside the transaction opened by lib/apply.sql. Released: never edit.

CREATE OR REPLACE FUNCTION outbox.version()
    RETURNS int
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN 5;

-- ---------------------------------------------------------------------------
-- The new table. The old one and its sequence and indexes move out of the
-- way first; its rows are copied below and it is dropped at the end.
-- ---------------------------------------------------------------------------
LOCK TABLE outbox.event IN ACCESS EXCLUSIVE MODE;
ALTER TABLE outbox.event RENAME TO event_v4;
ALTER SEQUENCE outbox.event_id_seq RENAME TO event_v4_id_seq;
ALTER INDEX outbox.event_pkey RENAME TO event_v4_pkey;
ALTER INDEX outbox.event_txid_idx RENAME TO event_v4_txid_idx;

CREATE TABLE outbox.event (
    id         bigint GENERATED ALWAYS AS IDENTITY,
    -- The writer's top-level transaction id: the relay's snapshot windows
    -- decide by it whether the row is committed and relayed (DESIGN §2).
    txid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    topic      outbox.event_topic NOT NULL,
    key        bytea,
    payload    bytea,
    headers    outbox.event_headers,
    created_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY LIST (((id / 65536) % 8));

CREATE INDEX event_txid_idx ON outbox.event (txid);

DO $$
BEGIN
    FOR k IN 0..7 LOOP
        EXECUTE format('CREATE TABLE outbox.event_p%s PARTITION OF outbox.event FOR VALUES IN (%s)', k, k);
        EXECUTE format('CREATE UNIQUE INDEX event_p%s_id_key ON outbox.event_p%s (id)', k, k);
        -- Nothing is updated or deleted here in normal operation, so
        -- vacuum has only rolled-back inserts to clean (at 1% as before);
        -- insert-triggered vacuums (visibility map, freezing) would be
        -- wasted on rows that leave by TRUNCATE, which also resets
        -- relfrozenxid. Anti-wraparound vacuums still run. Analyze at 1%
        -- as before: the window queries rely on fresh txid statistics.
        EXECUTE format('ALTER TABLE outbox.event_p%s SET (autovacuum_vacuum_scale_factor = 0.01, '
                       'autovacuum_vacuum_insert_threshold = -1, '
                       'autovacuum_analyze_scale_factor = 0.01)', k);
        EXECUTE format('COMMENT ON TABLE outbox.event_p%s IS %L', k,
                       format('Partition %s of outbox.event: the blocks of 65536 ids whose number %% 8 = %s. '
                              'Emptied by outbox.rotate(); do not write to it directly.', k, k));
    END LOOP;
END
$$;

INSERT INTO outbox.event (id, txid, topic, key, payload, headers, created_at)
OVERRIDING SYSTEM VALUE
SELECT e.id, e.txid, e.topic, e.key, e.payload, e.headers, e.created_at
FROM outbox.event_v4 AS e
ORDER BY e.id;
DO $$
BEGIN
    PERFORM setval(pg_get_serial_sequence('outbox.event', 'id'), s.last_value, s.is_called)
    FROM outbox.event_v4_id_seq AS s;
END
$$;

COMMENT ON TABLE outbox.event IS
    'Outbox rows waiting to be relayed to Kafka (and relayed rows until their partition is truncated). Write with INSERT (topic, key, payload, headers) or outbox.publish().';
COMMENT ON COLUMN outbox.event.txid IS
    'Top-level transaction id of the writer (default pg_current_xact_id()); never set it by hand.';
COMMENT ON COLUMN outbox.event.headers IS
    'NULL or a JSON object of string values: the Kafka record headers.';

-- The privileges of the old table, table and column level (0001's writer and
-- relay grants, and whatever an operator added), and the NOTIFY trigger if
-- it was on.
DO $$
DECLARE
    a record;
BEGIN
    FOR a IN SELECT x.privilege_type, x.grantee, x.is_grantable
             FROM pg_class AS c, aclexplode(c.relacl) AS x
             WHERE c.oid = 'outbox.event_v4'::regclass AND x.grantee <> c.relowner LOOP
        EXECUTE format('GRANT %s ON outbox.event TO %s%s', a.privilege_type,
                       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(a.grantee::regrole::text) END,
                       CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    FOR a IN SELECT att.attname, x.privilege_type, x.grantee, x.is_grantable
             FROM pg_attribute AS att, aclexplode(att.attacl) AS x
             WHERE att.attrelid = 'outbox.event_v4'::regclass AND att.attnum > 0
               AND NOT att.attisdropped LOOP
        EXECUTE format('GRANT %s (%I) ON outbox.event TO %s%s', a.privilege_type, a.attname,
                       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(a.grantee::regrole::text) END,
                       CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    FOR a IN SELECT x.privilege_type, x.grantee
             FROM pg_class AS c, aclexplode(c.relacl) AS x
             WHERE c.oid = 'outbox.event_v4_id_seq'::regclass AND x.grantee <> c.relowner LOOP
        EXECUTE format('GRANT %s ON SEQUENCE outbox.event_id_seq TO %s', a.privilege_type,
                       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(a.grantee::regrole::text) END);
    END LOOP;
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'outbox.event_v4'::regclass
                                        AND tgname = 'event_notify') THEN
        CREATE TRIGGER event_notify AFTER INSERT ON outbox.event
            FOR EACH STATEMENT EXECUTE FUNCTION outbox.notify_event();
    END IF;
END
$$;
REVOKE ALL ON outbox.event FROM PUBLIC;

-- BEGIN ATOMIC bodies are bound to the table they were created against:
-- publish() x3 and notify_enabled() again, same bodies (CREATE OR REPLACE
-- keeps their grants).
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

DROP TABLE outbox.event_v4;

-- ---------------------------------------------------------------------------
-- Rotation state, one row per partition: every block of it up to
-- done_block has been truncated (partition k holds blocks k, k + 8, ...),
-- and when it was last tried (at most once a second, but for a block the
-- position has read to its end).
-- ---------------------------------------------------------------------------
CREATE TABLE outbox.event_partition (
    part        int PRIMARY KEY CHECK (part BETWEEN 0 AND 7),
    done_block  bigint NOT NULL DEFAULT -1,
    tried_at    timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO outbox.event_partition (part) SELECT generate_series(0, 7);

COMMENT ON TABLE outbox.event_partition IS
    'Internal to outbox.rotate(): per partition of outbox.event, the newest block truncated and the last try.';

-- Whether partition p_part holds a committed row that some relay has not
-- relayed. Per relay, unrelayed(P) <=> NOT visible(done) AND (next IS NULL
-- OR id > after_id OR NOT visible(next)), and NOT visible(s) implies txid >=
-- xmin(s): each test is an index range probe that stops at the first such
-- row. ORDER BY ... LIMIT 1 pins the index walk (relayed rows stay in the
-- partition until it goes; a sequential scan would step over all of them).
CREATE FUNCTION outbox.partition_unrelayed(p_part regclass)
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
            EXECUTE format('SELECT EXISTS (SELECT FROM %s AS e WHERE e.txid >= $1'
                           ' AND NOT pg_visible_in_snapshot(e.txid, $2) ORDER BY e.txid LIMIT 1)', p_part)
            INTO v_any USING pg_snapshot_xmin(r.pos_done), r.pos_done;
        ELSE
            EXECUTE format('SELECT EXISTS (SELECT FROM %s AS e WHERE e.id > $1'
                           ' AND NOT pg_visible_in_snapshot(e.txid, $2) ORDER BY e.id LIMIT 1)'
                           ' OR EXISTS (SELECT FROM %s AS e WHERE e.txid >= $3'
                           ' AND NOT pg_visible_in_snapshot(e.txid, $2)'
                           ' AND NOT pg_visible_in_snapshot(e.txid, $4) ORDER BY e.txid LIMIT 1)',
                           p_part, p_part)
            INTO v_any USING r.pos_after_id, r.pos_done, pg_snapshot_xmin(r.pos_next), r.pos_next;
        END IF;
        IF v_any THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;

COMMENT ON FUNCTION outbox.partition_unrelayed(regclass) IS
    'Internal to outbox.rotate(): whether the partition holds a committed row not relayed by every relay.';

-- Truncate the partitions whose every row is relayed. Per partition, its
-- newest block that has ids yet (at most the sequence's current block; the
-- current block itself only with p_force) is considered when it is newer
-- than what was truncated there last, and
--   * the position is not inside a window that has still to read up to that
--     block's last id (then it is surely not done: no probe), or it has read
--     every id assigned so far;
--   * it was not tried in the last second, unless it is a finished block
--     (the sequence has left it) and the position has read to its end, or
--     p_force (the relay, idle, calls cleanup()).
-- A partition without a committed row is left alone. Each partition is
-- judged on its own: a writer transaction open in one holds back only that
-- one. The truncation itself happens only under ACCESS EXCLUSIVE taken
-- with NOWAIT (the relay never queues behind a writer; a writer whose row
-- goes into this partition waits for the relay's commit), and after the
-- check again with a snapshot taken under the lock -- which READ COMMITTED
-- gives (each statement takes a new one); under REPEATABLE READ or
-- SERIALIZABLE every statement sees the transaction's first snapshot, so
-- nothing is truncated then and a WARNING says why.
-- Returns the number of partitions truncated.
CREATE FUNCTION outbox.rotate(p_after_id bigint, p_in_window boolean, p_force boolean DEFAULT false)
    RETURNS int
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r       outbox.event_partition;
    v_last  bigint;
    v_cur   bigint;
    v_block bigint;
    v_read_all boolean;
    v_part  regclass;
    v_any   boolean;
    v_n     int := 0;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE WARNING 'outbox.event is not cleaned up: its partitions are truncated only at READ COMMITTED, and this transaction is %',
                      upper(current_setting('transaction_isolation'))
            USING HINT = 'Run the relay''s statements at READ COMMITTED (default_transaction_isolation).';
        RETURN 0;
    END IF;
    SELECT s.last_value INTO v_last FROM outbox.event_id_seq AS s;
    v_cur := v_last / 65536;
    v_read_all := p_in_window AND p_after_id >= v_last;
    FOR r IN SELECT * FROM outbox.event_partition ORDER BY part LOOP
        v_block := v_cur - ((v_cur - r.part) % 8 + 8) % 8;  -- newest block of this partition
        CONTINUE WHEN v_block < 0 OR v_block <= r.done_block;
        -- The block that still receives ids: only when the relay asks
        -- (cleanup(), idle). Under a steady trickle advance() would truncate
        -- it again and again, and every writer arriving meanwhile would wait
        -- for the relay's commit; its rows go with it when the block ends.
        CONTINUE WHEN v_block = v_cur AND NOT p_force;
        CONTINUE WHEN p_in_window AND NOT v_read_all AND p_after_id < (v_block + 1) * 65536 - 1;
        CONTINUE WHEN NOT p_force AND r.tried_at > clock_timestamp() - interval '1 second'
                      AND NOT (v_block < v_cur AND p_in_window AND p_after_id >= (v_block + 1) * 65536 - 1);
        UPDATE outbox.event_partition SET tried_at = clock_timestamp() WHERE part = r.part;
        v_part := format('outbox.event_p%s', r.part)::regclass;
        -- A committed row not relayed yet: surely not now. (An empty look
        -- proves nothing yet: an open writer's row is not seen.)
        EXECUTE format('SELECT EXISTS (SELECT FROM %s)', v_part) INTO STRICT v_any;
        CONTINUE WHEN v_any AND outbox.partition_unrelayed(v_part);
        BEGIN
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE NOWAIT', v_part);
        EXCEPTION WHEN lock_not_available THEN
            CONTINUE;
        END;
        -- Under the lock no uncommitted row is left in the partition, and
        -- this statement's snapshot sees every committed one.
        CONTINUE WHEN outbox.partition_unrelayed(v_part);
        EXECUTE format('SELECT EXISTS (SELECT FROM %s)', v_part) INTO STRICT v_any;
        IF v_any THEN
            BEGIN
                EXECUTE format('TRUNCATE %s', v_part);
            EXCEPTION WHEN object_in_use THEN
                -- Called from a statement of this session that reads the
                -- table (advance() inside a query over outbox.event): left
                -- for the next try. The relay's calls are statements of
                -- their own.
                CONTINUE;
            END;
            v_n := v_n + 1;
        END IF;
        -- Emptied, or empty under the lock. The current block still
        -- receives ids: it stays open.
        UPDATE outbox.event_partition
        SET done_block = CASE WHEN v_block < v_cur THEN v_block ELSE v_block - 8 END
        WHERE part = r.part;
    END LOOP;
    RETURN v_n;
END
$$;

COMMENT ON FUNCTION outbox.rotate(bigint, boolean, boolean) IS
    'Internal to advance() and cleanup(): truncate the partitions of outbox.event whose every row is relayed; returns how many.';

-- ---------------------------------------------------------------------------
-- advance(): version 2's checks and position update, then rotate() instead
-- of the DELETE. Same signature: CREATE OR REPLACE keeps the grants. The
-- result is now the number of partitions truncated, not of rows deleted.
-- ---------------------------------------------------------------------------
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
    -- The same call again (its reply was lost after the commit, and the
    -- relay retries on a new connection): nothing to do. NULL says "already
    -- applied". Only the exact stored position qualifies; any other move
    -- to or behind the stored batch is refused below.
    IF p_batch_seq = v_old.batch_seq
       AND v_done::text = v_old.pos_done::text
       AND v_next::text IS NOT DISTINCT FROM v_old.pos_next::text
       AND p_after_id = v_old.pos_after_id THEN
        RETURN NULL;
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
    -- Inside one window a partition can only become due when the position
    -- crosses a block boundary or has read every id assigned so far: the
    -- other advances of a drain skip rotate() altogether.
    IF v_next IS NOT NULL AND v_old.pos_next IS NOT NULL
       AND v_next::text = v_old.pos_next::text
       AND p_after_id / 65536 = v_old.pos_after_id / 65536
       AND p_after_id < (SELECT s.last_value FROM outbox.event_id_seq AS s) THEN
        RETURN 0;
    END IF;
    RETURN outbox.rotate(p_after_id, v_next IS NOT NULL);
END
$$;

COMMENT ON FUNCTION outbox.advance(text, bigint, bigint, text, text, bigint, bigint) IS
    'Store the position after a committed Kafka batch (fenced, monotone) and, unless retention > 0, truncate the partitions it left fully relayed (returns how many); NULL when exactly this position (same generation and batch) was already stored.';

-- ---------------------------------------------------------------------------
-- cleanup(): for a relay that has gone idle. The last advance of a drain may
-- have found a partition locked (a writer's transaction open in it, or a
-- reader such as lag()); the relay asks again while idle, every few
-- seconds, until nothing relayed is left. Cheap when there is nothing to do.
-- ---------------------------------------------------------------------------
CREATE FUNCTION outbox.cleanup(p_name text)
    RETURNS int
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_pos outbox.relay_state;
BEGIN
    SELECT * INTO v_pos FROM outbox.relay_state AS rs WHERE rs.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relay "%" does not exist', p_name
            USING ERRCODE = 'OR005',
                  HINT = 'A relay''s state is created by outbox.lease_acquire().';
    END IF;
    RETURN outbox.rotate(v_pos.pos_after_id, v_pos.pos_next IS NOT NULL, true);
END
$$;

COMMENT ON FUNCTION outbox.cleanup(text) IS
    'Relay, while idle: truncate the partitions of outbox.event whose every row is relayed; returns how many.';

-- ---------------------------------------------------------------------------
-- Rows relayed by every relay, deleted row by row: what version 4's advance()
-- deleted as it went, for the operator functions below that start a
-- position over and would otherwise publish such rows again.
-- ---------------------------------------------------------------------------
CREATE FUNCTION outbox.delete_relayed()
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_deleted bigint;
BEGIN
    DELETE FROM outbox.event AS e
    WHERE EXISTS (SELECT FROM outbox.relay_state)
      AND NOT EXISTS (SELECT FROM outbox.relay_state AS o
                      WHERE NOT outbox.relayed(e.txid, e.id, o.pos_done, o.pos_next, o.pos_after_id));
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$$;

COMMENT ON FUNCTION outbox.delete_relayed() IS
    'Internal to relay_forget() and position_reset(..., ''unrelayed''): delete the rows every relay has relayed; returns how many.';

-- relay_forget(): a relay started again under a forgotten name begins at
-- '1:1:' and relays every row present. Version 4 had deleted the relayed
-- ones as it went (unless retention kept them); here they may still wait
-- for their partition: delete the rows that every relay, this one included,
-- has relayed, then the state. Same signature and result.
CREATE OR REPLACE FUNCTION outbox.relay_forget(p_name text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM FROM outbox.relay_state AS rs WHERE rs.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM outbox.delete_relayed();
    DELETE FROM outbox.relay_state AS rs WHERE rs.name = p_name;
    RETURN true;
END
$$;

COMMENT ON FUNCTION outbox.relay_forget(text) IS
    'Operator: delete the rows every relay has relayed, then this relay''s state (lease and position). A relay started again under that name relays every row left.';

-- position_reset(): a third choice for the rows present, 'unrelayed' (the
-- one for a failover), and the number of rows it deleted. The result type
-- changes: dropped and created again (an operator function: no grants).
DROP FUNCTION outbox.position_reset(text, bigint, text, bigint);
CREATE FUNCTION outbox.position_reset(p_name text, p_generation bigint, p_existing text,
                                      p_batch_seq bigint DEFAULT NULL)
    RETURNS TABLE (generation bigint, batch_seq bigint, pos_done text, rows_restamped bigint,
                   rows_deleted bigint)
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
    v_deleted   bigint := 0;
BEGIN
    IF p_existing IS NULL OR p_existing NOT IN ('relay', 'unrelayed', 'skip') THEN
        RAISE EXCEPTION 'p_existing must be ''relay'', ''unrelayed'' or ''skip'', not %', coalesce(p_existing, 'NULL')
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

    -- 'unrelayed' (after a failover to a replica, whose stored position
    -- belongs to this database's own history): the rows that position marks
    -- relayed are in Kafka by this database's own record; they may still be
    -- in the table (they leave with their partition): delete them, so that
    -- only the rest is relayed. Before the restamp below, which would make
    -- them look new. (Never after a restore into another cluster: there the
    -- stored position's ids and the new rows' ids are two counters.)
    IF p_existing = 'unrelayed' THEN
        v_deleted := outbox.delete_relayed();
    END IF;

    -- Give such rows our own transaction id: it is now at or below the
    -- counter, so the windows can place them.
    UPDATE outbox.event AS e
    SET txid = v_xid
    WHERE e.txid >= pg_snapshot_xmax(v_snap) AND e.txid <> v_xid;
    GET DIAGNOSTICS v_restamped = ROW_COUNT;

    IF p_existing IN ('relay', 'unrelayed') THEN
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

    RETURN QUERY SELECT v_old.generation + 1, v_batch, v_done::text, v_restamped, v_deleted;
END
$$;

COMMENT ON FUNCTION outbox.position_reset(text, bigint, text, bigint) IS
    'Operator, after OR003 only: restart the position in the current transaction id space (docs/sql.md, Recovery).';

-- ---------------------------------------------------------------------------
-- Privileges. The table's were copied above; the new functions are the
-- owner's (rotate, partition_unrelayed, delete_relayed run inside the
-- SECURITY DEFINER functions) but cleanup(), which the relay calls.
-- ---------------------------------------------------------------------------
REVOKE ALL ON outbox.event_partition FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
    outbox.partition_unrelayed(regclass),
    outbox.rotate(bigint, boolean, boolean),
    outbox.delete_relayed(),
    outbox.cleanup(text),
    outbox.position_reset(text, bigint, text, bigint)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.cleanup(text) TO outbox_relay;
