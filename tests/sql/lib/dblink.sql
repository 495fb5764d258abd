-- lib/dblink.sql: helpers for tests that need more sessions than their own.
-- Included with \ir; run.sh sets outbox_test.connstr on the test database.

-- Each connection's backend pid, remembered when it is opened: it cannot be
-- asked while the connection is busy with an asynchronous query.
CREATE TEMP TABLE conn_pid (name text PRIMARY KEY, pid int NOT NULL);

-- Open a named dblink connection to this same database.
CREATE FUNCTION pg_temp.connect(p_name text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM dblink_connect(p_name, current_setting('outbox_test.connstr'));
    INSERT INTO conn_pid
    SELECT p_name, t.pid FROM dblink(p_name, 'SELECT pg_backend_pid()') AS t(pid int);
    RETURN p_name;
END
$$;

-- True once the connection's backend waits for a heavyweight lock (a row,
-- a transaction id, an advisory lock); false if it does not within 10 s.
CREATE FUNCTION pg_temp.waits_for_lock(p_name text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_pid int := (SELECT pid FROM conn_pid WHERE name = p_name);
BEGIN
    FOR i IN 1 .. 1000 LOOP
        PERFORM pg_stat_clear_snapshot();
        IF EXISTS (SELECT FROM pg_stat_activity WHERE pid = v_pid AND wait_event_type = 'Lock') THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN false;
END
$$;

-- Run a statement on a connection, no result wanted.
CREATE FUNCTION pg_temp.exec(p_name text, p_sql text) RETURNS text LANGUAGE sql AS $$
    SELECT dblink_exec(p_name, p_sql);
$$;
