-- 75_wake_on_demand.sql: the NOTIFY trigger notifies only while no relay is
-- awake (sql/migrations/0003). Sessions over dblink: 'listener' LISTENs,
-- 'relay' holds or releases the "relay awake" lock as the relay does,
-- 'writer2' keeps a transaction open, 'marker' ends each count (see
-- 70_notify.sql: notifications arrive in commit order, so what the listener
-- got before the marker is exactly what the step sent). Leaves NOTIFY off.
\ir lib/dblink.sql
\ir lib/notifications.sql
SELECT plan(12);


-- The relay session's call, answered as a boolean.
CREATE FUNCTION pg_temp.relay_awake(p_awake boolean) RETURNS boolean LANGUAGE sql AS $$
    SELECT t.held FROM dblink('relay', format('SELECT outbox.relay_awake(%L)', p_awake)) AS t(held boolean);
$$;

DELETE FROM outbox.event;
SELECT outbox.notify_enable();
SELECT pg_temp.connect('listener');
SELECT pg_temp.exec('listener', 'LISTEN outbox_event');
SELECT pg_temp.connect('marker');
SELECT pg_temp.connect('relay');
SELECT pg_temp.connect('writer2');

SELECT cmp_ok(outbox.version(), '>=', 3, 'schema version 3 or later has the wake-up on demand');

INSERT INTO outbox.event (topic) VALUES ('w');
SELECT is(pg_temp.notifications('listener'), 1, 'no relay awake: an insert notifies');

SELECT is(pg_temp.relay_awake(true), true, 'relay_awake(true) takes the lock');
INSERT INTO outbox.event (topic) VALUES ('w');
INSERT INTO outbox.event (topic) SELECT 'w' FROM generate_series(1, 10);
SELECT is(pg_temp.notifications('listener'), 0, 'while a relay is awake, inserts notify nobody');
SELECT is((SELECT count(*)::int FROM pg_locks
           WHERE locktype = 'advisory' AND classid = 1329745752 AND objid = 1 AND objsubid = 2
             AND mode = 'ShareLock' AND granted
             AND pid = (SELECT pid FROM conn_pid WHERE name = 'relay')),
          1, 'the relay holds advisory lock (1329745752, 1) shared, at session level');

SELECT is(pg_temp.relay_awake(false), false, 'relay_awake(false) releases it');
INSERT INTO outbox.event (topic) VALUES ('w');
SELECT is(pg_temp.notifications('listener'), 1, 'the relay asleep: the next insert notifies again');

-- A writer that notifies holds the lock until it commits: others do not
-- notify meanwhile, and the relay cannot take the lock yet.
SELECT pg_temp.exec('writer2', 'BEGIN');
SELECT pg_temp.exec('writer2', $$INSERT INTO outbox.event (topic) VALUES ('w2')$$);
INSERT INTO outbox.event (topic) VALUES ('w');
SELECT is(pg_temp.relay_awake(true), false,
          'while a notifying writer is open, relay_awake(true) says the lock is not held');
SELECT is(pg_temp.notifications('listener'), 0,
          'an insert while another notifying writer is open sends nothing itself');
SELECT pg_temp.exec('writer2', 'COMMIT');
SELECT is(pg_temp.notifications('listener'), 1, 'the open writer''s commit sends its notification');
SELECT is(pg_temp.relay_awake(true), true, 'after that commit the relay takes the lock');
SELECT is(pg_temp.relay_awake(false), false, 'and releases it again');

SELECT outbox.notify_disable();
DELETE FROM outbox.event;
SELECT * FROM finish();
