-- lib/partitions.sql: helpers for tests of the partitioned outbox.event
-- (schema version 7; eight partitions in 5 and 6): partition event_p<k> holds the blocks of 65536 ids
-- whose number % 4 = k. Included with \ir.

-- Move the id sequence to the start of the next block (the next row gets
-- id block * 65536) and return that block: rows inserted from now on go into
-- partition block % 4. setval() is not undone by a ROLLBACK; the sequence
-- only moves forward, so later tests are not disturbed.
CREATE FUNCTION pg_temp.next_block() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_block bigint;
BEGIN
    SELECT s.last_value / 65536 + 1 INTO v_block FROM outbox.event_id_seq AS s;
    PERFORM setval(pg_get_serial_sequence('outbox.event', 'id'), v_block * 65536, false);
    RETURN v_block;
END
$$;

-- The partition a block's rows go into.
CREATE FUNCTION pg_temp.part_of(p_block bigint) RETURNS regclass LANGUAGE sql AS $$
    SELECT format('outbox.event_p%s', p_block % 4)::regclass;
$$;

-- The rows of one partition, as this statement sees them.
CREATE FUNCTION pg_temp.rows_in(p_part regclass) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %s', p_part) INTO v_n;
    RETURN v_n;
END
$$;

-- Forget when each partition was last tried: rotate() tries a partition at
-- most once a second (outside the exceptions it makes), and a test that
-- wants a partition judged now, not skipped, calls this first.
CREATE FUNCTION pg_temp.untried() RETURNS void LANGUAGE sql AS $$
    UPDATE outbox.event_partition SET tried_at = '-infinity';
$$;

-- Advance relay p_name to a position, as its next batch in its current
-- generation (read from position_get), with a retention (0: truncate).
CREATE FUNCTION pg_temp.adv(p_name text, p_done text, p_next text DEFAULT NULL, p_after_id bigint DEFAULT 0,
                            p_retention_ms bigint DEFAULT 0)
    RETURNS bigint LANGUAGE sql AS $$
    SELECT outbox.advance(p_name, p.generation, p.batch_seq + 1, p_done, p_next, p_after_id, p_retention_ms)
    FROM outbox.position_get(p_name) AS p;
$$;
