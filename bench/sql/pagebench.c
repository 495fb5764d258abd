/* pagebench.c: the read loops of bench/sql/window_bench.sh, driven the way
 * the relay drives them (libpq, PQexecParams, binary results), timed here.
 *
 *   pagebench backlog CONNINFO relay|plain DONE NEXT PAGE MAX_BYTES
 *       page through the window (DONE, NEXT] from after_id 0 until a page
 *       comes back empty; prints "rows seconds 0"
 *   pagebench steady CONNINFO relay|plain WINDOWS WINDOW_ROWS PAGE MAX_BYTES
 *       (MAX_BYTES "null" passes NULL: no byte limit)
 *       WINDOWS times: commit WINDOW_ROWS new rows (not timed), then read
 *       them (timed); prints "rows seconds seconds_in_window_open"
 *
 * relay: outbox.window_open() (steady only) and outbox.fetch_page(), with
 * the relay's loop: a page, then the next page from its last id, until one
 * comes back empty. plain: SELECT ... FROM outbox.event WHERE id > $1 ORDER
 * BY id LIMIT $2, the same loop. Both receive every column of every row. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static PGconn *conn;
/* PAGEBENCH_PREPARED=1: named prepared statements (planned once per session,
 * as behind PgBouncer >= 1.21 with max_prepared_statements) instead of the
 * relay's unnamed PQexecParams (planned on every call). */
static int prepared;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static PGresult *run(const char *sql, int nparams, const char *const *params, int binary)
{
	static const char *names[8];
	static int nnames;
	char name[16];
	PGresult *res;
	int i;

	if (!prepared) {
		res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, binary);
	} else {
		for (i = 0; i < nnames && names[i] != sql; i++)
			;
		snprintf(name, sizeof(name), "s%d", i);
		if (i == nnames) {
			res = PQprepare(conn, name, sql, nparams, NULL);
			if (PQresultStatus(res) != PGRES_COMMAND_OK) {
				fprintf(stderr, "pagebench: %s: %s", sql, PQresultErrorMessage(res));
				exit(1);
			}
			PQclear(res);
			names[nnames++] = sql;
		}
		res = PQexecPrepared(conn, name, nparams, params, NULL, NULL, binary);
	}

	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
		fprintf(stderr, "pagebench: %s: %s", sql, PQresultErrorMessage(res));
		exit(1);
	}
	return res;
}

static int64_t bin_i64(const char *p)
{
	uint32_t hi, lo;

	memcpy(&hi, p, 4);
	memcpy(&lo, p + 4, 4);
	return (int64_t)(((uint64_t)ntohl(hi) << 32) | ntohl(lo));
}

static const char *relay_sql =
	"SELECT id, topic, key, payload, header_names, header_values, created_ms "
	"FROM outbox.fetch_page($1, $2, $3, $4, $5)";
static const char *plain_sql = "SELECT id, topic, key, payload, headers, created_at "
			       "FROM outbox.event WHERE id > $1 ORDER BY id LIMIT $2";

/* One page from after_id; returns its row count and moves *after_id to its
 * last id. */
static int page(int relay, const char *done, const char *next, int64_t *after_id,
		const char *rows, const char *bytes)
{
	char after[24];
	PGresult *res;
	int n;

	snprintf(after, sizeof(after), "%" PRId64, *after_id);
	if (relay) {
		const char *p[5] = {done, next, after, rows, bytes};
		res = run(relay_sql, 5, p, 1);
	} else {
		const char *p[2] = {after, rows};
		res = run(plain_sql, 2, p, 1);
	}
	n = PQntuples(res);
	if (n > 0)
		*after_id = bin_i64(PQgetvalue(res, n - 1, 0));
	PQclear(res);
	return n;
}

int main(int argc, char **argv)
{
	if (argc != 8) {
		fprintf(stderr, "usage: pagebench backlog|steady CONNINFO relay|plain A B PAGE MAX_BYTES\n");
		return 2;
	}
	const char *what = argv[1];
	int relay = strcmp(argv[3], "relay") == 0;
	const char *rows = argv[6];
	/* "null": no byte limit (fetch_page's max_bytes NULL) */
	const char *bytes = strcmp(argv[7], "null") == 0 ? NULL : argv[7];
	int64_t total = 0;
	double spent = 0, spent_open = 0;

	if (getenv("PAGEBENCH_RELAY_SQL")) /* to try variants by hand */
		relay_sql = getenv("PAGEBENCH_RELAY_SQL");
	prepared = getenv("PAGEBENCH_PREPARED") && strcmp(getenv("PAGEBENCH_PREPARED"), "1") == 0;
	conn = PQconnectdb(argv[2]);
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "pagebench: %s", PQerrorMessage(conn));
		return 1;
	}
	if (strcmp(what, "backlog") == 0) {
		int64_t after_id = 0;
		int n;
		double t0 = now_s();

		while ((n = page(relay, argv[4], argv[5], &after_id, rows, bytes)) > 0)
			total += n;
		spent = now_s() - t0;
	} else {
		int windows = atoi(argv[4]);
		char insert[512];
		PGresult *res;
		int64_t after_id;

		snprintf(insert, sizeof(insert),
			 "INSERT INTO outbox.event (topic, key, payload) "
			 "SELECT 'bench', convert_to('key-' || (g %% 16), 'UTF8'), "
			 "convert_to(repeat(md5(g::text), 8), 'UTF8') FROM generate_series(1, %d) AS g",
			 atoi(argv[5]));
		/* The relay starts from "everything committed so far is relayed". */
		res = run("SELECT pg_current_snapshot()::text, coalesce(max(id), 0) FROM outbox.event",
			  0, NULL, 0);
		char *done = strdup(PQgetvalue(res, 0, 0));
		after_id = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
		PQclear(res);
		for (int w = 0; w < windows; w++) {
			PQclear(run(insert, 0, NULL, 0));
			double t0 = now_s();
			if (relay) {
				const char *p[1] = {"bench"};
				int n;

				res = run("SELECT outbox.window_open($1)", 1, p, 0);
				char *next = strdup(PQgetvalue(res, 0, 0));
				PQclear(res);
				spent_open += now_s() - t0;
				after_id = 0;
				while ((n = page(1, done, next, &after_id, rows, bytes)) > 0)
					total += n;
				free(done);
				done = next;
			} else {
				int n;

				while ((n = page(0, NULL, NULL, &after_id, rows, bytes)) > 0)
					total += n;
			}
			spent += now_s() - t0;
		}
		free(done);
	}
	printf("%" PRId64 " %.6f %.6f\n", total, spent, spent_open);
	PQfinish(conn);
	return 0;
}
