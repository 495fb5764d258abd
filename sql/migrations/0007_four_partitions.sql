-- 0007_four_partitions.sql: outbox.event in four partitions instead of
-- eight.
--
-- Why (bench/RESULTS.md, "Eighth session"): at a steady rate the relay's
-- statements are cheap, and what they cost the server is mostly set-up and
-- teardown per statement and per partition: every look opens an index scan
-- in every partition, and eight partitions with their two indexes each are
-- more relations than the 16 fast-path lock slots of a backend hold. With
-- the same statements on four partitions, the relay's backend took 12-20 %
-- less CPU at 100 and 1,000 rows/s in every round of two runs
-- (bench/results/steady-four-partitions*.json).
--
-- What four partitions give up: partition k holds the blocks k, k + 4, ...
-- of 65536 ids, so a partition comes round again after 196,608 ids instead
-- of 458,752. A partition is truncated only once every row in it is
-- relayed, so nothing about correctness changes; what changes is how soon a
-- relay that lags (or a writer transaction held open) keeps a partition
-- from being truncated before ids come back to it: then it keeps its rows
-- (relayed or not) until the relay has read past them and the block that
-- came back has ended or the relay idles (cleanup()). The table's size
-- during such a lag is bounded by the lag itself, as before.
--
-- Layout and rules otherwise as in version 5: LIST on (id / 65536) % 4,
-- a unique index on id in each partition, rotate() with the same checks.
-- rotate()'s state starts again (every partition untried, nothing
-- truncated): its first calls look at each partition's rows.
--
-- Upgrade from version 6: one transaction that takes ACCESS EXCLUSIVE on
-- outbox.event and copies the rows present (relayed or not) into the new
-- table with their ids and transaction ids; writers and relays wait that
-- long. The position is not touched. Carried over: columns, defaults,
-- column comments, identity and sequence position, the table's comment,
-- every index and trigger on the table (event_txid_idx, the NOTIFY trigger,
-- any an operator added), and every grant on the table, its columns and its
-- sequence. A view or function of your own that depends on the table makes
-- the DROP below fail and the upgrade roll back. Storage options set by hand
-- on the old partitions are not carried (the new partitions get version
-- 5's): a WARNING names each old partition that had others.
--
-- Runs inside the transaction opened by lib/apply.sql. Released: never edit.

CREATE OR REPLACE FUNCTION outbox.version()
    RETURNS int
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN 7;

LOCK TABLE outbox.event IN ACCESS EXCLUSIVE MODE;

-- What is created on the table after its rows are in: the definitions of
-- its indexes and triggers, taken while it still has its name. Dropped at
-- COMMIT.
CREATE TEMPORARY TABLE outbox_v7_ddl ON COMMIT DROP AS
-- (The definition of an index on a partitioned table says ON ONLY, which
-- would build no index on the partitions.)
SELECT 1 AS step, regexp_replace(pg_get_indexdef(i.indexrelid), ' ON ONLY ', ' ON ') AS ddl
FROM pg_index AS i
WHERE i.indrelid = 'outbox.event'::regclass
UNION ALL
SELECT 2, pg_get_triggerdef(t.oid)
FROM pg_trigger AS t
WHERE t.tgrelid = 'outbox.event'::regclass AND NOT t.tgisinternal;

DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT p.relname
             FROM pg_inherits AS h JOIN pg_class AS p ON p.oid = h.inhrelid
             WHERE h.inhparent = 'outbox.event'::regclass
               AND p.reloptions IS DISTINCT FROM
                   ARRAY['autovacuum_vacuum_scale_factor=0.01', 'autovacuum_vacuum_insert_threshold=-1',
                         'autovacuum_analyze_scale_factor=0.01'] LOOP
        RAISE WARNING 'the storage options of outbox.% are not carried over to the new partitions', c.relname
            USING DETAIL = 'Set them again on outbox.event_p0 .. event_p3 after the upgrade if they are still wanted.';
    END LOOP;
END
$$;

-- The old table, its sequence, partitions and indexes move out of the way.
ALTER TABLE outbox.event RENAME TO event_v6;
ALTER SEQUENCE outbox.event_id_seq RENAME TO event_v6_id_seq;
DO $$
DECLARE
    c record;
BEGIN
    -- The partitions, then the indexes of the table and of its partitions.
    FOR c IN SELECT 'TABLE' AS kind, h.inhrelid::regclass AS rel, p.relname
             FROM pg_inherits AS h JOIN pg_class AS p ON p.oid = h.inhrelid
             WHERE h.inhparent = 'outbox.event_v6'::regclass
             UNION ALL
             SELECT 'INDEX', i.indexrelid::regclass, x.relname
             FROM pg_index AS i JOIN pg_class AS x ON x.oid = i.indexrelid
             WHERE i.indrelid = 'outbox.event_v6'::regclass
                OR i.indrelid IN (SELECT h.inhrelid FROM pg_inherits AS h
                                  WHERE h.inhparent = 'outbox.event_v6'::regclass) LOOP
        EXECUTE format('ALTER %s %s RENAME TO %I', c.kind, c.rel, 'v6_' || c.relname);
    END LOOP;
END
$$;

CREATE TABLE outbox.event (LIKE outbox.event_v6 INCLUDING ALL EXCLUDING INDEXES)
    PARTITION BY LIST (((id / 65536) % 4));

DO $$
BEGIN
    FOR k IN 0..3 LOOP
        EXECUTE format('CREATE TABLE outbox.event_p%s PARTITION OF outbox.event FOR VALUES IN (%s)', k, k);
        EXECUTE format('CREATE UNIQUE INDEX event_p%s_id_key ON outbox.event_p%s (id)', k, k);
        -- As in version 5: rows leave by TRUNCATE, so vacuum has only
        -- rolled-back inserts to clean; analyze at 1 %.
        EXECUTE format('ALTER TABLE outbox.event_p%s SET (autovacuum_vacuum_scale_factor = 0.01, '
                       'autovacuum_vacuum_insert_threshold = -1, '
                       'autovacuum_analyze_scale_factor = 0.01)', k);
        EXECUTE format('COMMENT ON TABLE outbox.event_p%s IS %L', k,
                       format('Partition %s of outbox.event: the blocks of 65536 ids whose number %% 4 = %s. '
                              'Emptied by outbox.rotate(); do not write to it directly.', k, k));
    END LOOP;
END
$$;

INSERT INTO outbox.event (id, txid, topic, key, payload, headers, created_at)
OVERRIDING SYSTEM VALUE
SELECT e.id, e.txid, e.topic, e.key, e.payload, e.headers, e.created_at
FROM outbox.event_v6 AS e
ORDER BY e.id;

DO $$
DECLARE
    a record;
BEGIN
    PERFORM setval('outbox.event_id_seq', s.last_value, s.is_called) FROM outbox.event_v6_id_seq AS s;
    EXECUTE format('COMMENT ON TABLE outbox.event IS %L', obj_description('outbox.event_v6'::regclass, 'pg_class'));
    -- Grants on the table, on its columns and on its sequence: everyone's
    -- but the owner's, and nobody else's (not PUBLIC's by default
    -- privileges).
    REVOKE ALL ON outbox.event FROM PUBLIC;
    FOR a IN SELECT format('%s%s ON %s', x.privilege_type,
                           CASE WHEN o.attname IS NULL THEN '' ELSE format(' (%I)', o.attname) END,
                           CASE WHEN o.relkind = 'S' THEN 'SEQUENCE outbox.event_id_seq' ELSE 'outbox.event' END)
                        AS what,
                    CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(x.grantee::regrole::text) END
                        AS grantee,
                    x.is_grantable
             FROM (SELECT c.relkind, c.relowner, NULL::name AS attname, c.relacl AS acl
                   FROM pg_class AS c
                   WHERE c.oid IN ('outbox.event_v6'::regclass, 'outbox.event_v6_id_seq'::regclass)
                   UNION ALL
                   SELECT c.relkind, c.relowner, att.attname, att.attacl
                   FROM pg_class AS c JOIN pg_attribute AS att ON att.attrelid = c.oid
                   WHERE c.oid = 'outbox.event_v6'::regclass AND att.attnum > 0 AND NOT att.attisdropped
                  ) AS o,
                  aclexplode(o.acl) AS x
             WHERE x.grantee <> o.relowner LOOP
        EXECUTE format('GRANT %s TO %s%s', a.what, a.grantee,
                       CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;

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

DROP TABLE outbox.event_v6;

-- Indexes (event_txid_idx among them, now over the four partitions) and
-- triggers, under their old names.
DO $$
DECLARE
    d record;
BEGIN
    FOR d IN SELECT t.ddl FROM pg_temp.outbox_v7_ddl AS t ORDER BY t.step LOOP
        EXECUTE d.ddl;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- Rotation over four partitions: state for parts 0..3, started again.
-- ---------------------------------------------------------------------------
DELETE FROM outbox.event_partition;
ALTER TABLE outbox.event_partition DROP CONSTRAINT event_partition_part_check;
ALTER TABLE outbox.event_partition ADD CONSTRAINT event_partition_part_check CHECK (part BETWEEN 0 AND 3);
INSERT INTO outbox.event_partition (part) SELECT generate_series(0, 3);

-- rotate(): version 5's, with partition k holding blocks k, k + 4, ...
-- (the two places that said 8). Same signature: CREATE OR REPLACE keeps
-- its privileges (none granted: it runs inside advance() and cleanup()).
CREATE OR REPLACE FUNCTION outbox.rotate(p_after_id bigint, p_in_window boolean, p_force boolean DEFAULT false)
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
        v_block := v_cur - ((v_cur - r.part) % 4 + 4) % 4;  -- newest block of this partition
        CONTINUE WHEN v_block < 0 OR v_block <= r.done_block;
        -- The block that still receives ids: only when the relay asks
        -- (cleanup(), idle); its rows go with it when the block ends.
        CONTINUE WHEN v_block = v_cur AND NOT p_force;
        CONTINUE WHEN p_in_window AND NOT v_read_all AND p_after_id < (v_block + 1) * 65536 - 1;
        CONTINUE WHEN NOT p_force AND r.tried_at > clock_timestamp() - interval '1 second'
                      AND NOT (v_block < v_cur AND p_in_window AND p_after_id >= (v_block + 1) * 65536 - 1);
        UPDATE outbox.event_partition SET tried_at = clock_timestamp() WHERE part = r.part;
        v_part := format('outbox.event_p%s', r.part)::regclass;
        -- A committed row not relayed yet: surely not now.
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
                -- table: left for the next try.
                CONTINUE;
            END;
            v_n := v_n + 1;
        END IF;
        -- Emptied, or empty under the lock. The current block still
        -- receives ids: it stays open.
        UPDATE outbox.event_partition
        SET done_block = CASE WHEN v_block < v_cur THEN v_block ELSE v_block - 4 END
        WHERE part = r.part;
    END LOOP;
    RETURN v_n;
END
$$;
