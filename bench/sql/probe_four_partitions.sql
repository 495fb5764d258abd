-- Benchmark probe, not a migration: outbox.event of schema 6 with four
-- partitions instead of eight, to measure what each partition costs the
-- relay's looks (bench/steady.py --variant
-- 'NAME=BIN:schema=6;sql=bench/sql/probe_four_partitions.sql', BIN a relay
-- built for schema 6). Schema 7 has four partitions of its own.
--
-- Run on a freshly installed, empty outbox. It detaches and drops
-- partitions 4-7, so only ids below 4 * 65536 = 262144 have a partition:
-- an insert past that fails ("no partition of relation ... found for
-- row"), loudly, and the writers' errors end the run. steady.py gives each
-- segment a new database from the template, so one segment may write up to
-- 262143 rows. rotate() iterates over outbox.event_partition's rows (and
-- skips partitions 4-7 anyway while ids stay below 262144); their rows go
-- too.
\set ON_ERROR_STOP on

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM outbox.event) THEN
        RAISE EXCEPTION 'probe_four_partitions.sql: outbox.event is not empty';
    END IF;
    FOR k IN 4..7 LOOP
        EXECUTE format('ALTER TABLE outbox.event DETACH PARTITION outbox.event_p%s', k);
        EXECUTE format('DROP TABLE outbox.event_p%s', k);
    END LOOP;
    DELETE FROM outbox.event_partition WHERE part >= 4;
END
$$;
