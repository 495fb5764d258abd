#!/usr/bin/env bash
# run.sh: the pgTAP tests of sql/. Creates a fresh database (outbox_pgtap),
# installs sql/install.sql into it (twice at once, then once more: the last
# run must be a no-op),
# runs pg_prove over tests/sql/*.sql, drops the database, and exits with
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

# The same server, another database: swap the database of a URL or of a
# key=value connection string.
with_db() {
    case $1 in
    postgres://* | postgresql://*)
        printf '%s\n' "$1" | sed -E "s#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\\1/$2#" ;;
    *) printf '%s dbname=%s\n' "$1" "$2" ;;
    esac
}
test_url=$(with_db "$url" "$db")
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

drop_db() {
    psql_q -d "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null
}
trap drop_db EXIT

drop_db
psql_q -d "$url" -c "CREATE DATABASE $db"
psql_q -d "$test_url" <<SQL
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS dblink;
-- The tests open second connections (dblink) to this same database.
ALTER DATABASE $db SET outbox_test.connstr = '$test_url';
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

status=0
pg_prove -d "$test_url" --ext .sql "$@" "$here"/*.sql || status=$?
exit $status
