-- 0004_writer_fast_path.sql: the same rules for outbox rows, cheaper for
-- writers. The topic and headers rules move from table CHECK constraints
-- into two domains, the column types of outbox.event.topic and .headers; the
-- reserved-topic refusal (OR006) moves from two statement-level triggers
-- into one more constraint of the topic domain, which holds the reserved
-- names as a constant and is rewritten whenever outbox.reserved_topic
-- changes. Same rules, same constraint names, same SQLSTATEs (23514 for a
-- bad topic or bad headers, OR006 for a reserved topic).
--
-- Why (bench/sql/RESULTS.md, "Writers"): a table's CHECK constraints are
-- read back from their stored text and planned again by every INSERT
-- statement (headers_valid() inlined again each time), and the statement
-- triggers cost a plpgsql call with a query per statement. A domain's
-- constraints are planned once per session (the type cache) and only
-- evaluated per row. One session's CPU per one-row transaction, over the
-- same insert into a plain table: 80-100 us with version 2, 10-15 after.
--
-- Upgrade from version 2 or 3: no table rewrite. outbox.event is locked (ACCESS
-- EXCLUSIVE) for the transaction, which scans it once per rule to validate
-- the domain constraints: quick for a queue, seconds for millions of kept
-- rows.
--
-- Runs inside the transaction opened by lib/apply.sql. Released: never edit.

CREATE OR REPLACE FUNCTION outbox.version()
    RETURNS int
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN 4;

-- ---------------------------------------------------------------------------
-- The reserved-topic statement triggers go; their check returns below as a
-- domain constraint.
-- ---------------------------------------------------------------------------
DROP TRIGGER event_refuse_reserved_insert ON outbox.event;
DROP TRIGGER event_refuse_reserved_update ON outbox.event;
DROP FUNCTION outbox.event_refuse_reserved();

-- ---------------------------------------------------------------------------
-- The domains. Created without constraints and made the columns' types
-- first (a binary-compatible change without constraints rewrites nothing),
-- then given the rules, which validates the existing rows (a scan each).
-- The constraints keep the names the table's CHECKs had, one rule each, so
-- that the error still says what is wrong:
--   ERROR:  value for domain outbox.event_topic violates check constraint "event_topic_legal_chars"
-- The publish() functions depend on the columns (their bodies are stored
-- parsed): dropped and created again, with the same bodies and grants.
-- ---------------------------------------------------------------------------
ALTER TABLE outbox.event
    DROP CONSTRAINT event_topic_not_empty,
    DROP CONSTRAINT event_topic_legal_chars,
    DROP CONSTRAINT event_topic_max_length,
    DROP CONSTRAINT event_topic_not_dot,
    DROP CONSTRAINT event_headers_string_object;

CREATE DOMAIN outbox.event_topic AS text;
CREATE DOMAIN outbox.event_headers AS jsonb;

DROP FUNCTION outbox.publish(text, bytea, bytea, jsonb);
DROP FUNCTION outbox.publish(text, text, text, jsonb);
DROP FUNCTION outbox.publish(text, text, jsonb, jsonb);

ALTER TABLE outbox.event
    ALTER COLUMN topic TYPE outbox.event_topic,
    ALTER COLUMN headers TYPE outbox.event_headers;

-- Kafka's rules for topic names.
ALTER DOMAIN outbox.event_topic ADD CONSTRAINT event_topic_not_empty CHECK (VALUE <> '');
ALTER DOMAIN outbox.event_topic ADD CONSTRAINT event_topic_legal_chars CHECK (VALUE ~ '^[A-Za-z0-9._-]*$');
ALTER DOMAIN outbox.event_topic ADD CONSTRAINT event_topic_max_length CHECK (length(VALUE) <= 249);
ALTER DOMAIN outbox.event_topic ADD CONSTRAINT event_topic_not_dot CHECK (VALUE NOT IN ('.', '..'));
-- Headers travel to Kafka as (name, value) string pairs.
ALTER DOMAIN outbox.event_headers ADD CONSTRAINT event_headers_string_object
    CHECK (outbox.headers_valid(VALUE));

COMMENT ON DOMAIN outbox.event_topic IS
    'Type of outbox.event.topic: a Kafka topic name (1-249 characters of A-Z a-z 0-9 . _ -, not . or ..) that no relay has reserved.';
COMMENT ON DOMAIN outbox.event_headers IS
    'Type of outbox.event.headers: NULL or a JSON object of string values.';

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
-- Reserved topics (OR006), as a constraint of the topic domain:
--
--   CONSTRAINT event_topic_not_reserved
--       CHECK (VALUE <> ALL ('{names}'::text[]) OR outbox.refuse_reserved_topic(VALUE)) NOT VALID
--
-- The names are a constant: a writer pays a comparison per row and nothing
-- per statement. refuse_reserved_topic() runs only for a reserved name: it
-- raises OR006 naming the relay. The constraint is rewritten (DROP and ADD,
-- which lock no table) by a trigger on outbox.reserved_topic in the same
-- transaction as the change, so a writer's next transaction sees it; with no
-- reserved name there is no constraint. NOT VALID: rows already on a topic
-- reserved later stay (the relay treats them as poison rows), and pg_dump
-- restores it after the data.
--
-- What it checks: every value converted to outbox.event_topic, i.e. every
-- topic an INSERT, COPY, publish() or UPDATE ... SET topic = ... writes. An
-- UPDATE that leaves the topic alone converts nothing, so rows written before
-- a reservation stay updatable (position_reset re-stamps txids); so does
-- INSERT ... SELECT topic FROM outbox.event, which copies values that are
-- already of the domain type.
-- ---------------------------------------------------------------------------
CREATE FUNCTION outbox.refuse_reserved_topic(p_topic text)
    RETURNS boolean
    LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_relay text;
BEGIN
    SELECT r.relay_name INTO v_relay
    FROM outbox.reserved_topic AS r
    WHERE r.topic = p_topic
    ORDER BY r.relay_name
    LIMIT 1;
    IF NOT FOUND THEN
        -- The constraint and reserved_topic change in one transaction; a
        -- name the table no longer holds (as this statement sees it) is free.
        RETURN true;
    END IF;
    RAISE EXCEPTION 'outbox row refused: topic "%" is reserved by relay "%"', p_topic, v_relay
        USING ERRCODE = 'OR006',
              DETAIL = 'The relay writes its checkpoints or dead letters to this topic; an outbox row there could corrupt them.',
              HINT = 'Publish to another topic, or change the relay''s checkpoint or dead-letter topic.';
END
$$;

COMMENT ON FUNCTION outbox.refuse_reserved_topic(text) IS
    'Called by the constraint event_topic_not_reserved for a reserved name only: raises OR006 naming the relay.';

-- Rewrite event_topic_not_reserved from the current reserved_topic. The
-- advisory lock serializes two rewrites (two relays reserving at once); the
-- query after it sees the other's committed names (READ COMMITTED).
CREATE FUNCTION outbox.reserved_topic_apply()
    RETURNS text[]
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_names text[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('outbox'), hashtext('reserved_topic'));
    SELECT coalesce(array_agg(DISTINCT r.topic ORDER BY r.topic), '{}') INTO v_names
    FROM outbox.reserved_topic AS r;
    IF EXISTS (SELECT FROM pg_constraint AS c
               WHERE c.contypid = 'outbox.event_topic'::regtype
                 AND c.conname = 'event_topic_not_reserved') THEN
        ALTER DOMAIN outbox.event_topic DROP CONSTRAINT event_topic_not_reserved;
    END IF;
    IF cardinality(v_names) > 0 THEN
        EXECUTE format('ALTER DOMAIN outbox.event_topic ADD CONSTRAINT event_topic_not_reserved '
                       'CHECK (VALUE <> ALL (%L::text[]) OR outbox.refuse_reserved_topic(VALUE)) NOT VALID',
                       v_names);
    END IF;
    RETURN v_names;
END
$$;

COMMENT ON FUNCTION outbox.reserved_topic_apply() IS
    'Internal: rewrite the constraint event_topic_not_reserved of domain outbox.event_topic from outbox.reserved_topic; returns the names.';

-- Statement-level: once per change of reserved_topic, whichever way it
-- comes (reserve_topics(), relay_forget()'s cascade, an operator). A
-- statement that changed no row (a relay restarting with the same topics)
-- leaves the constraint alone.
CREATE FUNCTION outbox.reserved_topic_changed()
    RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Two tests: a TRUNCATE trigger has no transition table to name.
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM outbox.reserved_topic_apply();
    ELSIF EXISTS (SELECT FROM changed) THEN
        PERFORM outbox.reserved_topic_apply();
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION outbox.reserved_topic_changed() IS
    'Trigger function on outbox.reserved_topic: keeps the constraint event_topic_not_reserved in step.';

CREATE TRIGGER reserved_topic_insert
    AFTER INSERT ON outbox.reserved_topic
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.reserved_topic_changed();
CREATE TRIGGER reserved_topic_update
    AFTER UPDATE ON outbox.reserved_topic
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.reserved_topic_changed();
CREATE TRIGGER reserved_topic_delete
    AFTER DELETE ON outbox.reserved_topic
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.reserved_topic_changed();
CREATE TRIGGER reserved_topic_truncate
    AFTER TRUNCATE ON outbox.reserved_topic
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.reserved_topic_changed();

-- The names reserved under version 2.
DO $$
BEGIN
    PERFORM outbox.reserved_topic_apply();
END
$$;

-- ---------------------------------------------------------------------------
-- Privileges, as in 0001. Whoever inserts converts values to the domain,
-- whose constraints call headers_valid() and refuse_reserved_topic() with
-- the inserter's rights: both are executable by PUBLIC (the second only
-- raises an error, or returns true). reserved_topic stays readable by PUBLIC
-- (refuse_reserved_topic() reads the relay's name there).
-- reserved_topic_apply() runs only through the trigger.
-- ---------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION
    outbox.publish(text, bytea, bytea, jsonb),
    outbox.publish(text, text, text, jsonb),
    outbox.publish(text, text, jsonb, jsonb),
    outbox.reserved_topic_apply(),
    outbox.reserved_topic_changed()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.refuse_reserved_topic(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION
    outbox.publish(text, bytea, bytea, jsonb),
    outbox.publish(text, text, text, jsonb),
    outbox.publish(text, text, jsonb, jsonb)
TO outbox_writer;
