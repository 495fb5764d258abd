-- 70_notify.sql: the optional NOTIFY trigger. A second session listens
-- (dblink) while this one inserts in autocommit. Leaves NOTIFY off.
-- Counting needs no silence as proof: after each step a third session sends
-- a marker on the same channel, and PostgreSQL delivers notifications of
-- different transactions in commit order, so what the listener received
-- before the marker is exactly what the step sent.
\ir lib/dblink.sql
\ir lib/notifications.sql
SELECT plan(14);


SELECT outbox.notify_disable();
DELETE FROM outbox.event;
SELECT pg_temp.connect('listener');
SELECT pg_temp.exec('listener', 'LISTEN outbox_event');
SELECT pg_temp.connect('marker');

SELECT is(outbox.notify_enabled(), false, 'NOTIFY starts off');
INSERT INTO outbox.event (topic) VALUES ('n');
SELECT is(pg_temp.notifications('listener'), 0, 'with NOTIFY off, an insert notifies nobody');

SELECT is(outbox.notify_enable(), true, 'notify_enable() creates the trigger');
SELECT is(outbox.notify_enable(), false, 'notify_enable() again changes nothing');
SELECT results_eq(
    $$SELECT tgname::text COLLATE "default", tgtype & 1 = 0, tgtype & 4 = 4, tgenabled::text
      FROM pg_trigger WHERE tgrelid = 'outbox.event'::regclass AND NOT tgisinternal
        AND tgname = 'event_notify'$$,
    $$VALUES ('event_notify', true, true, 'O')$$,
    'the NOTIFY trigger: statement-level (not per row), AFTER INSERT, enabled');
SELECT is(outbox.notify_enabled(), true, 'notify_enabled() says so');

INSERT INTO outbox.event (topic) SELECT 'n' FROM generate_series(1, 50);
SELECT is(pg_temp.notifications('listener'), 1,
          'a committed 50-row insert sends one notification on channel outbox_event');
BEGIN;
INSERT INTO outbox.event (topic) VALUES ('n');
INSERT INTO outbox.event (topic) VALUES ('n');
SELECT outbox.publish('n', 'k', 'v');
COMMIT;
SELECT is(pg_temp.notifications('listener'), 1,
          'three inserting statements in one transaction: still one notification');
BEGIN;
INSERT INTO outbox.event (topic) VALUES ('n');
ROLLBACK;
SELECT is(pg_temp.notifications('listener'), 0, 'a rolled-back insert notifies nobody');
UPDATE outbox.event SET topic = 'm';
DELETE FROM outbox.event;
SELECT is(pg_temp.notifications('listener'), 0, 'updates and deletes (the relay''s) notify nobody');

SELECT is(outbox.notify_disable(), true, 'notify_disable() drops the trigger');
SELECT is(outbox.notify_disable(), false, 'notify_disable() again changes nothing');
INSERT INTO outbox.event (topic) VALUES ('n');
SELECT is(pg_temp.notifications('listener'), 0, 'NOTIFY is off again');
SELECT is_empty($$SELECT FROM pg_trigger WHERE tgrelid = 'outbox.event'::regclass AND NOT tgisinternal
                    AND tgname NOT LIKE 'event_refuse_reserved_%'$$,
                'no trigger left on outbox.event');

SELECT dblink_disconnect('listener');
SELECT dblink_disconnect('marker');
DELETE FROM outbox.event;
SELECT * FROM finish();
