-- lib/notifications.sql: count the NOTIFYs a dblink listener received.
-- Included with \ir after lib/dblink.sql; needs a dblink connection named
-- 'marker' (see 70_notify.sql for why a marker makes the count exact).

-- outbox_event notifications the listener received before a marker that
-- the 'marker' session sends now (committed after every earlier statement
-- of this session). NULL when the marker does not arrive within 10 s.
CREATE FUNCTION pg_temp.notifications(p_conn text) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    v_marker text := 'marker-' || clock_timestamp()::text;
    v_n int := 0;
    v_deadline timestamptz := clock_timestamp() + interval '10 seconds';
    v_note record;
BEGIN
    PERFORM dblink_exec('marker', format('NOTIFY outbox_event, %L', v_marker));
    LOOP
        FOR v_note IN SELECT * FROM dblink_get_notify(p_conn) LOOP
            IF v_note.notify_name = 'outbox_event' AND v_note.extra = v_marker THEN
                RETURN v_n;
            END IF;
            v_n := v_n + (v_note.notify_name = 'outbox_event')::int;
        END LOOP;
        EXIT WHEN clock_timestamp() > v_deadline;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN NULL;
END
$$;
