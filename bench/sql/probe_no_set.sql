-- Benchmark probe, not a migration: fetch_page_bounds() without its SET
-- clauses (search_path, plan_cache_mode), to measure what they cost each of
-- the relay's looks: a function with SET clauses saves and restores those
-- settings on every call (AtEOXact_GUC in the backend's profile).
-- Without them its statements take the caller's search_path (every name in
-- the body is qualified or in pg_catalog, which is searched first) and
-- plan_cache_mode (auto: plpgsql plans its statements custom for five
-- calls, then keeps the generic plan unless the custom ones were cheaper).
-- For bench/steady.py --variant 'NAME=:sql=bench/sql/probe_no_set.sql' and
-- bench/sql/look_micro.sh.
\set ON_ERROR_STOP on
ALTER FUNCTION outbox.fetch_page_bounds(pg_snapshot, pg_snapshot, bigint, int, bigint) RESET ALL;
