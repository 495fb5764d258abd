-- 0002_advance_idempotent_reserved_topics.sql: outbox.advance() answers a
-- repeated call "already applied" (NULL) instead of OR002, and the topics a
-- relay writes itself (its checkpoint and dead-letter topics) are reserved:
-- no outbox row may target them (OR006).
--
-- Runs inside the transaction opened by lib/apply.sql. Released: never edit.

CREATE OR REPLACE FUNCTION outbox.version()
    RETURNS int
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN 2;

-- ---------------------------------------------------------------------------
-- advance(): idempotent for the exact position already stored. A relay whose
-- connection dropped after the server committed an advance, before the reply
-- arrived, retries the same call after reconnecting; it used to be refused as
-- "position would go backwards" (OR002) and the relay stopped with exit 5.
-- Same signature and result type: CREATE OR REPLACE keeps the grants.
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
    -- The same call again (its reply was lost after the commit, and the
    -- relay retries on a new connection): nothing to do, and nothing to
    -- delete, because the first call deleted it. NULL says "already
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
    'Store the position after a committed Kafka batch (fenced, monotone) and delete the rows it relayed unless retention > 0; NULL when exactly this position (same generation and batch) was already stored.';

-- ---------------------------------------------------------------------------
-- Reserved topics. A relay writes its checkpoints (and dead letters) to
-- topics of its own; an outbox row aimed at one of them would be relayed
-- into it and could wedge the relay's next start (a record with the relay's
-- key and a garbage payload is read as its checkpoint). The relay registers
-- those topics after taking its lease; rows aimed at them are refused.
-- Names are whatever the relay's configuration says: nothing here assumes a
-- naming scheme.
-- ---------------------------------------------------------------------------
CREATE TABLE outbox.reserved_topic (
    topic       text NOT NULL,
    relay_name  text NOT NULL REFERENCES outbox.relay_state (name) ON DELETE CASCADE,
    reserved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, relay_name),
    CONSTRAINT reserved_topic_not_empty CHECK (topic <> '')
);

-- The foreign key's cascade and reserve_topics() look rows up by relay.
CREATE INDEX reserved_topic_relay_idx ON outbox.reserved_topic (relay_name);

COMMENT ON TABLE outbox.reserved_topic IS
    'Topics a relay writes itself (checkpoints, dead letters): outbox rows may not target them. Written by outbox.reserve_topics().';

CREATE FUNCTION outbox.reserve_topics(p_name text, p_generation bigint, p_topics text[])
    RETURNS int
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_gen bigint;
    v_n   int;
BEGIN
    IF p_topics IS NULL OR array_position(p_topics, NULL) IS NOT NULL
       OR array_position(p_topics, '') IS NOT NULL THEN
        RAISE EXCEPTION 'reserved topics must be non-empty names: %', coalesce(p_topics::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- FOR UPDATE: a concurrent takeover (lease_acquire) waits for us, or we
    -- for it and then see its generation.
    SELECT rs.generation INTO v_gen FROM outbox.relay_state AS rs WHERE rs.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relay "%" does not exist', p_name
            USING ERRCODE = 'OR005',
                  HINT = 'A relay''s state is created by outbox.lease_acquire().';
    END IF;
    IF v_gen <> p_generation THEN
        RAISE EXCEPTION 'relay "%" was fenced: generation % is stale, current is %',
                        p_name, p_generation, v_gen
            USING ERRCODE = 'OR001',
                  HINT = 'Another relay took the lease over; this one must stop publishing.';
    END IF;
    -- The relay's current configuration replaces what an earlier start
    -- registered (a renamed checkpoint topic frees the old name).
    DELETE FROM outbox.reserved_topic AS t
    WHERE t.relay_name = p_name AND t.topic <> ALL (p_topics);
    INSERT INTO outbox.reserved_topic (topic, relay_name)
    SELECT DISTINCT u.topic, p_name FROM unnest(p_topics) AS u(topic)
    ON CONFLICT (topic, relay_name) DO NOTHING;
    SELECT count(*) INTO v_n FROM outbox.reserved_topic AS t WHERE t.relay_name = p_name;
    RETURN v_n;
END
$$;

COMMENT ON FUNCTION outbox.reserve_topics(text, bigint, text[]) IS
    'Relay, after taking the lease: the topics it writes itself (fenced by generation); replaces its earlier set. Returns how many it holds.';

-- Statement-level, with transition tables: one lookup per INSERT or UPDATE
-- statement, however many rows it writes (a row-level trigger would cost
-- every writer a function call per row; bench/sql/RESULTS.md has the cost).
-- SECURITY INVOKER and no SET clause, on purpose: a SECURITY DEFINER
-- function with a pinned search_path costs each statement a GUC save and
-- restore, which measured about as much as the lookup itself. Every name is
-- schema-qualified; writers read reserved_topic through the grant to PUBLIC
-- below (topic and relay names only). The details are looked up only to
-- word the error.
CREATE FUNCTION outbox.event_refuse_reserved()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    v_topic text;
    v_relay text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT FROM outbox.reserved_topic AS r
                       WHERE r.topic IN (SELECT n.topic FROM event_new AS n)) THEN
            RETURN NULL;
        END IF;
        SELECT r.topic, r.relay_name INTO v_topic, v_relay
        FROM outbox.reserved_topic AS r
        WHERE r.topic IN (SELECT n.topic FROM event_new AS n)
        ORDER BY r.topic, r.relay_name
        LIMIT 1;
    ELSE
        -- An UPDATE is refused only when it moves a row onto a reserved
        -- topic: rows already there (written before the reservation) stay
        -- updatable, e.g. by position_reset()'s re-stamping.
        SELECT r.topic, r.relay_name INTO v_topic, v_relay
        FROM outbox.reserved_topic AS r
        WHERE r.topic IN (SELECT n.topic
                          FROM event_new AS n
                          LEFT JOIN event_old AS o ON o.id = n.id
                          WHERE o.topic IS DISTINCT FROM n.topic)
        ORDER BY r.topic, r.relay_name
        LIMIT 1;
        IF v_topic IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'outbox row refused: topic "%" is reserved by relay "%"', v_topic, v_relay
        USING ERRCODE = 'OR006',
              DETAIL = 'The relay writes its checkpoints or dead letters to this topic; an outbox row there could corrupt them.',
              HINT = 'Publish to another topic, or change the relay''s checkpoint or dead-letter topic.';
END
$$;

COMMENT ON FUNCTION outbox.event_refuse_reserved() IS
    'Trigger function: refuse an INSERT or UPDATE statement that puts a row on a reserved topic (OR006).';

CREATE TRIGGER event_refuse_reserved_insert
    AFTER INSERT ON outbox.event
    REFERENCING NEW TABLE AS event_new
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.event_refuse_reserved();

CREATE TRIGGER event_refuse_reserved_update
    AFTER UPDATE ON outbox.event
    REFERENCING OLD TABLE AS event_old NEW TABLE AS event_new
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.event_refuse_reserved();

-- Privileges, as in 0001. Anyone who may insert must be able to read the
-- reserved names (the trigger runs with the inserter's rights); only
-- reserve_topics() writes them. The trigger function needs no EXECUTE grant
-- to fire.
REVOKE ALL ON outbox.reserved_topic FROM PUBLIC;
GRANT SELECT ON outbox.reserved_topic TO PUBLIC;
REVOKE EXECUTE ON FUNCTION outbox.reserve_topics(text, bigint, text[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION outbox.event_refuse_reserved() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.reserve_topics(text, bigint, text[]) TO outbox_relay;
