#!/usr/bin/env bash
# run.sh: the pgTAP tests of sql/. Creates a fresh database (outbox_pgtap),
# installs sql/install.sql into it (twice at once, then once more: the last
# run must be a no-op), and a second one (outbox_pgtap_v4) installed up to
# schema version 4, given rows, a relay and grants, then upgraded in place
# by install.sql (90_upgrade_from_v4.sql compares, through dblink);
# runs pg_prove over tests/sql/*.sql, drops the databases, and exits with
# pg_prove's status.
#
#   tests/sql/run.sh [pg_prove options, e.g. -v]
#
# Connection: OUTBOX_PG_URL (default the local environment's), a superuser:
# the tests create roles' memberships, switch roles and use dblink.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
url=${OUTBOX_PG_URL:-postgresql://postgres@127.0.0.1:55432/outbox}
db=${OUTBOX_PGTAP_DB:-outbox_pgtap}

. "$root/scripts/lib/pg.sh"  # with_db
test_url=$(with_db "$url" "$db")
v4_db=${db}_v4
v4_url=$(with_db "$url" "$v4_db")
# An operator's role with grants on the version 4 table (roles belong to
# the cluster: named after this run's database, dropped at the end).
v4_role=${db}_v4_reader
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

drop_db() {
    psql_q -d "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
        -c "DROP DATABASE IF EXISTS $v4_db WITH (FORCE)" -c "DROP ROLE IF EXISTS $v4_role" 2>/dev/null
}
trap drop_db EXIT

drop_db
psql_q -d "$url" -c "CREATE DATABASE $db" -c "CREATE DATABASE $v4_db" -c "CREATE ROLE $v4_role NOLOGIN"
psql_q -d "$test_url" <<SQL
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS dblink;
-- The tests open second connections (dblink) to this same database, and
-- 90_upgrade_from_v4.sql to the upgraded one.
ALTER DATABASE $db SET outbox_test.connstr = '$test_url';
ALTER DATABASE $db SET outbox_test.v4_connstr = '$v4_url';
SQL

# Two installers at once, from different directories: \ir must find the
# migrations from anywhere, and the advisory lock must apply each migration
# once. Then a third, sequential run that must change nothing
# (00_install.sql compares).
(cd / && psql_q -d "$test_url" -f "$root/sql/install.sql" >/dev/null) &
first_pid=$!
(cd "$root/sql" && psql_q -d "$test_url" -f install.sql >/dev/null) &
second_pid=$!
wait "$first_pid"
wait "$second_pid"
files=$(find "$root/sql/migrations" -name '[0-9][0-9][0-9][0-9]_*.sql' | wc -l)
psql_q -d "$test_url" <<SQL
-- Everything an install defines or records, as one string.
CREATE FUNCTION public.install_fingerprint() RETURNS text LANGUAGE sql AS \$\$
    SELECT md5(coalesce((SELECT string_agg(p.oid::regprocedure::text || pg_get_functiondef(p.oid)
                                           || coalesce(p.proacl::text, ''), '' ORDER BY 1)
                         FROM pg_proc AS p
                         WHERE p.pronamespace = 'outbox'::regnamespace AND p.prokind = 'f'), '')
               || (SELECT string_agg(format('%s %s %s', version, description, applied_at), ','
                                     ORDER BY version) FROM outbox.schema_version)
               || (SELECT string_agg(c.relname || coalesce(c.relacl::text, ''), ',' ORDER BY c.relname)
                   FROM pg_class AS c WHERE c.relnamespace = 'outbox'::regnamespace))
\$\$;
CREATE TABLE public.install_check AS
SELECT (SELECT count(*) FROM outbox.schema_version) AS versions_before_rerun,
       $files::bigint AS migration_files,
       public.install_fingerprint() AS fingerprint_before_rerun;
SQL
(cd "$root" && psql_q -d "$test_url" -f sql/install.sql >/dev/null)
# No autovacuum on the partitions here: a vacuum or analyze that happened to
# hold one (00_install.sql leaves 30000 dead rows in event_p0) would refuse
# the ACCESS EXCLUSIVE ... NOWAIT of a truncation a test expects. (That a
# refused lock keeps the partition is tested on its own, 43_*.sql.)
psql_q -d "$test_url" >/dev/null <<SQL
DO \$\$
BEGIN
    FOR k IN 0..3 LOOP
        EXECUTE format('ALTER TABLE outbox.event_p%s SET (autovacuum_enabled = false)', k);
    END LOOP;
END
\$\$;
SQL

# Upgrade in place from version 4: install.sql up to its 0005 step (from
# stdin, \ir is relative to the current directory), then what a version 4
# outbox in use has -- rows in three blocks of 65536 ids (after the
# upgrade: partitions 0 and 1, two blocks in 1), relayed rows kept by a
# retention, a relay position, NOTIFY on, an operator's table, column and
# sequence grants -- and a copy of it in schema public, which the upgrade
# leaves alone. Then the whole install.sql.
(cd "$root/sql" && sed '/^\\set migration 0005/,$d' install.sql | psql_q -d "$v4_url" >/dev/null)
psql_q -d "$v4_url" >/dev/null <<SQL
SELECT outbox.notify_enable();
GRANT SELECT ON outbox.event TO $v4_role;
GRANT UPDATE (payload) ON outbox.event TO $v4_role WITH GRANT OPTION;
GRANT USAGE ON SEQUENCE outbox.event_id_seq TO $v4_role;
SELECT acquired FROM outbox.lease_acquire('up', 'v4', 60000);
INSERT INTO outbox.event (txid, topic, key, payload, headers)
VALUES ('5', 'up.kept', 'k', '\\x00ff', '{"h": "v"}'), ('6', 'up.kept', NULL, NULL, NULL);
SELECT outbox.advance('up', 1, 1, '7:7:', NULL, 0, 3600000);
SELECT outbox.publish('up.t', 'k', format('before %s', i)) FROM generate_series(1, 3) AS i;
SELECT setval(pg_get_serial_sequence('outbox.event', 'id'), 65534);
SELECT outbox.publish('up.t', 'k', format('across %s', i)) FROM generate_series(1, 4) AS i;
INSERT INTO outbox.event (topic, payload, headers) VALUES ('up.t', 'plain', '{"a": "1", "b": ""}');
SELECT setval(pg_get_serial_sequence('outbox.event', 'id'), 9 * 65536 + 10);
SELECT outbox.publish('up.t', NULL::bytea, '\\x01'::bytea);
SELECT outbox.publish('up.t', 'k', '{"x": [1, 2]}'::jsonb, '{"h": "w"}');
-- Resolved by name: after the upgrade, the new table's grants.
CREATE FUNCTION public.event_acl() RETURNS TABLE (obj text, grantee text, privilege text, grantable boolean)
LANGUAGE sql AS \$\$
    SELECT o.obj, CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END,
           x.privilege_type, x.is_grantable
    FROM (SELECT 'table' AS obj, c.relacl AS acl, c.relowner AS owner FROM pg_class AS c
          WHERE c.oid = 'outbox.event'::regclass
          UNION ALL
          SELECT 'column ' || a.attname, a.attacl, c.relowner FROM pg_attribute AS a
          JOIN pg_class AS c ON c.oid = a.attrelid
          WHERE a.attrelid = 'outbox.event'::regclass AND a.attnum > 0 AND NOT a.attisdropped
          UNION ALL
          SELECT 'sequence', c.relacl, c.relowner FROM pg_class AS c
          WHERE c.oid = pg_get_serial_sequence('outbox.event', 'id')::regclass) AS o,
         aclexplode(o.acl) AS x
    WHERE x.grantee <> o.owner
\$\$;
CREATE TABLE public.v4_version AS SELECT outbox.version() AS version;
CREATE TABLE public.v4_event AS SELECT * FROM outbox.event;
CREATE TABLE public.v4_relay_state AS SELECT * FROM outbox.relay_state;
CREATE TABLE public.v4_seq AS SELECT last_value, is_called FROM outbox.event_id_seq;
CREATE TABLE public.v4_acl AS SELECT * FROM public.event_acl();
SQL
(cd "$root" && psql_q -d "$v4_url" -f sql/install.sql >/dev/null)

status=0
pg_prove -d "$test_url" --ext .sql "$@" "$here"/*.sql || status=$?
exit $status
