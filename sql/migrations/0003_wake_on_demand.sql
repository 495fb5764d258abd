-- 0003_wake_on_demand.sql: the NOTIFY trigger notifies only while the relay
-- sleeps.
--
-- NOTIFY makes every notifying transaction take a cluster-wide lock at
-- commit, one writer after the other: with the trigger of 0001 on, 8
-- concurrent single-row writers reached 0.39x the rate of a plain table. Yet a
-- relay that is awake (publishing, or polling between the rows of an open
-- Kafka transaction) has no use for the notification. From this version on:
--
--   * a relay that LISTENs holds the advisory lock WAKE_KEY (below) in shared
--     mode, session-level, for as long as it is awake, and releases it just
--     before it goes to sleep on LISTEN;
--   * the trigger function tries to take that lock in exclusive mode for the
--     writer's transaction: it gets it only when no relay is awake, and then
--     sends the NOTIFY. Concurrent writers fail the try (the first holds the
--     lock until it commits) and do not notify: one notification wakes the
--     relay, which polls for the rest.
--
-- Writers pay one lock-table probe per INSERT statement while the relay is
-- awake, and the NOTIFY (with its commit lock) only around the relay's naps.
-- Nothing changes for correctness: a missed notification costs latency (the
-- relay still polls every batch.poll_interval_ms), never a row.
--
-- WAKE_KEY is the two-int advisory key (1329745752, 1): 1329745752 is
-- 0x4F424F58, "OBOX" in ASCII. Applications that use two-int advisory locks
-- must not use it. docs/sql.md, "Wake-up".
--
-- Runs inside the transaction opened by lib/apply.sql. Released: never edit.

CREATE OR REPLACE FUNCTION outbox.version()
    RETURNS int
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN 3;

-- Same name and signature as in 0001, so an enabled trigger (notify_enable())
-- runs the new body at once. No SET clause: a SET costs every call a GUC
-- save and restore (bench/sql/RESULTS.md measured it at about the price of
-- the rest of such a function); every name is schema-qualified instead.
-- PERFORM is reached only by the one writer that wakes the relay.
CREATE OR REPLACE FUNCTION outbox.notify_event()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF pg_catalog.pg_try_advisory_xact_lock(1329745752, 1) THEN
        -- No payload: identical notifications of one transaction fold into one.
        PERFORM pg_catalog.pg_notify('outbox_event', NULL);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION outbox.notify_event() IS
    'Trigger function: NOTIFY outbox_event, unless a relay is awake (holds advisory lock (1329745752, 1) shared).';

-- For the relay: awake (true) or about to sleep (false). Returns whether the
-- relay holds the lock afterwards. An "awake" call can get false: a writer
-- holds the lock for a moment (it is notifying); the relay asks again at its
-- next poll. The relay calls "asleep" only while it holds the lock, once per
-- "awake" that returned true (session locks count). Session-level on
-- purpose: the relay's connection is a session (it LISTENs); behind a
-- transaction-mode pooler batch.notify must stay off (docs/sql.md).
CREATE FUNCTION outbox.relay_awake(p_awake boolean)
    RETURNS boolean
    LANGUAGE sql VOLATILE
RETURN CASE WHEN p_awake THEN pg_catalog.pg_try_advisory_lock_shared(1329745752, 1)
            ELSE NOT pg_catalog.pg_advisory_unlock_shared(1329745752, 1) END;

COMMENT ON FUNCTION outbox.relay_awake(boolean) IS
    'Relay: hold (true) or release (false) the shared "relay awake" advisory lock that silences the NOTIFY trigger; returns whether it is held.';

REVOKE EXECUTE ON FUNCTION outbox.relay_awake(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.relay_awake(boolean) TO outbox_relay;
