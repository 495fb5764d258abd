/* writer.c: the applications' side of the benchmarks, writing the same
 * records as bench-producer into outbox.event.
 *
 *   bench-writer load   -d CONNINFO -t TOPIC -n ROWS [--chunk N]
 *       COPY ROWS rows (seq 1..ROWS in id order) in transactions of N rows
 *       (default 1000): the backlog of scenario A.
 *   bench-writer steady -d CONNINFO -t TOPIC -r RATE -s SECONDS -c CONNS --out FILE
 *                       [--rows-per-txn K]
 *       Open loop: row seq is due at start + (seq - 1) / RATE; CONNS
 *       connections take the next due row as soon as they are free, each an
 *       INSERT in its own (autocommit) transaction. FILE gets the
 *       CLOCK_REALTIME ns at which each COMMIT returned (int64 array indexed
 *       by seq, 0 unused). With K > 1, each transaction inserts K rows, due
 *       when its first row is. Writers that fall behind stop 1 s after the
 *       schedule ends; rows never written stay 0 in FILE.
 *   bench-writer max    -d CONNINFO -t TOPIC -s SECONDS -c CONNS
 *       Closed loop: single-row transactions as fast as CONNS connections go.
 *
 * TOPIC may be a comma-separated list (at most 16): row seq then goes to
 * topic number seq % N, so the rows are spread evenly over them.
 *
 * stdout: "ready T_NS" (steady: the schedule's start), then
 * "done ROWS SECONDS RATE LATE_P99_US LATE_MAX_US COMMIT_P50_US COMMIT_P99_US CPU_US". */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define INSERT_SQL "INSERT INTO outbox.event (topic, key, payload) VALUES ($1, $2, $3)"

#define MAX_TOPICS 16

struct shared {
	const char *conninfo;
	const char *topics[MAX_TOPICS];
	int ntopics;
	double rate;
	int64_t t0, end_ns, nrows, per_txn;
	bool open_loop;
	_Atomic int64_t next_seq;
	int64_t *commit_ns; /* steady: by seq */
	int64_t *late_us;   /* steady: start - due, by seq */
	int64_t *commit_us; /* steady: commit duration, by seq */
};

static PGconn *connect_db(const char *conninfo)
{
	PGconn *conn = PQconnectdb(conninfo);
	PGresult *res;

	if (PQstatus(conn) != CONNECTION_OK)
		bench_die("connect: %s", PQerrorMessage(conn));
	res = PQprepare(conn, "ins", INSERT_SQL, 3, NULL);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		bench_die("prepare: %s", PQerrorMessage(conn));
	PQclear(res);
	return conn;
}

static void insert_row(PGconn *conn, const struct shared *sh, int64_t seq)
{
	const char *topic = sh->topics[seq % sh->ntopics];
	char key[16], payload[BENCH_PAYLOAD_LEN];
	const char *vals[3] = {topic, key, payload};
	int lens[3] = {0, 0, BENCH_PAYLOAD_LEN};
	const int fmts[3] = {0, 1, 1}; /* key and payload as raw bytea */
	PGresult *res;

	lens[1] = (int)bench_key(seq, key);
	bench_payload(seq, payload);
	res = PQexecPrepared(conn, "ins", 3, vals, lens, fmts, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		bench_die("insert: %s", PQerrorMessage(conn));
	PQclear(res);
}

static void exec_ok(PGconn *conn, const char *sql)
{
	PGresult *res = PQexec(conn, sql);

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		bench_die("%s: %s", sql, PQerrorMessage(conn));
	PQclear(res);
}

static void *writer_thread(void *arg)
{
	struct shared *sh = arg;
	PGconn *conn = connect_db(sh->conninfo);
	int64_t k = sh->per_txn;

	for (;;) {
		/* the first seq of the next transaction (1, 1 + k, 1 + 2k, ...) */
		int64_t seq = (atomic_fetch_add(&sh->next_seq, 1) - 1) * k + 1, start, t;

		if (sh->open_loop) {
			int64_t due;
			if (seq > sh->nrows)
				break;
			due = sh->t0 + (int64_t)((double)(seq - 1) * 1e9 / sh->rate);
			/* a writer that cannot keep the rate stops with the schedule
			 * (plus 1 s) instead of working through the rest */
			if (bench_now_ns() > sh->end_ns)
				break;
			if (bench_now_ns() < due)
				bench_sleep_until_ns(due);
			start = bench_now_ns();
			sh->late_us[seq] = (start - due) / 1000;
		} else {
			start = bench_now_ns();
			if (start >= sh->end_ns)
				break;
		}
		if (k == 1) {
			insert_row(conn, sh, seq);
		} else {
			exec_ok(conn, "BEGIN");
			for (int64_t j = 0; j < k && seq + j <= sh->nrows; j++)
				insert_row(conn, sh, seq + j);
			exec_ok(conn, "COMMIT");
		}
		t = bench_now_ns();
		if (sh->open_loop) {
			for (int64_t j = 0; j < k && seq + j <= sh->nrows; j++) {
				sh->commit_ns[seq + j] = t;
				sh->commit_us[seq + j] = (t - start) / 1000;
				sh->late_us[seq + j] = sh->late_us[seq];
			}
		}
	}
	PQfinish(conn);
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int64_t pct(int64_t *v, int64_t n, double p)
{
	if (n <= 0)
		return 0;
	qsort(v, (size_t)n, sizeof(*v), cmp_i64);
	int64_t i = (int64_t)(p * (double)(n - 1) + 0.5);
	return v[i];
}

static int run_threads(struct shared *sh, int conns)
{
	pthread_t th[256];

	if (conns < 1 || conns > 256)
		bench_die("-c must be 1..256");
	for (int i = 0; i < conns; i++)
		if (pthread_create(&th[i], NULL, writer_thread, sh))
			bench_die("pthread_create");
	for (int i = 0; i < conns; i++)
		pthread_join(th[i], NULL);
	return 0;
}

static void load(const char *conninfo, const struct shared *sh, int64_t rows, int64_t chunk)
{
	PGconn *conn = PQconnectdb(conninfo);
	char line[BENCH_PAYLOAD_LEN + 300], key[16], payload[BENCH_PAYLOAD_LEN + 1];

	if (PQstatus(conn) != CONNECTION_OK)
		bench_die("connect: %s", PQerrorMessage(conn));
	for (int64_t seq = 1; seq <= rows;) {
		PGresult *res = PQexec(conn, "COPY outbox.event (topic, key, payload) FROM STDIN");
		if (PQresultStatus(res) != PGRES_COPY_IN)
			bench_die("copy: %s", PQerrorMessage(conn));
		PQclear(res);
		for (int64_t i = 0; i < chunk && seq <= rows; i++, seq++) {
			/* text COPY; the payload is ASCII JSON without backslashes, tabs or
			 * newlines, so it needs no escaping as text or as bytea */
			bench_key(seq, key);
			bench_payload(seq, payload);
			payload[BENCH_PAYLOAD_LEN] = '\0';
			int n = snprintf(line, sizeof(line), "%s\t%s\t%s\n", sh->topics[seq % sh->ntopics],
					 key, payload);
			if (PQputCopyData(conn, line, n) != 1)
				bench_die("copy data: %s", PQerrorMessage(conn));
		}
		if (PQputCopyEnd(conn, NULL) != 1)
			bench_die("copy end: %s", PQerrorMessage(conn));
		res = PQgetResult(conn);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			bench_die("copy: %s", PQerrorMessage(conn));
		PQclear(res);
		while ((res = PQgetResult(conn)) != NULL)
			PQclear(res);
	}
	PQfinish(conn);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"out", required_argument, NULL, 'o'},
		{"chunk", required_argument, NULL, 'k'},
		{"rows-per-txn", required_argument, NULL, 'K'},
		{NULL, 0, NULL, 0},
	};
	struct shared sh = {.rate = 1000};
	const char *mode, *out = NULL;
	int64_t rows = 0, chunk = 1000;
	double seconds = 10;
	int conns = 1, c;

	if (argc < 2)
		bench_die("usage: bench-writer load|steady|max -d CONNINFO -t TOPIC ...");
	mode = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "d:t:n:r:s:c:", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': sh.conninfo = optarg; break;
		case 't': {
			/* comma-separated; topic names cannot hold commas */
			char *list = strdup(optarg), *save = NULL;
			sh.ntopics = 0;
			for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				if (sh.ntopics == MAX_TOPICS)
					bench_die("-t: at most %d topics", MAX_TOPICS);
				sh.topics[sh.ntopics++] = tok;
			}
			break;
		}
		case 'n': rows = atoll(optarg); break;
		case 'r': sh.rate = atof(optarg); break;
		case 's': seconds = atof(optarg); break;
		case 'c': conns = atoi(optarg); break;
		case 'o': out = optarg; break;
		case 'k': chunk = atoll(optarg); break;
		case 'K': sh.per_txn = atoll(optarg); break;
		default: bench_die("bad option");
		}
	}
	if (!sh.conninfo || sh.ntopics < 1)
		bench_die("-d and -t are required");
	sh.next_seq = 1;
	{
		char warm[BENCH_PAYLOAD_LEN];
		bench_payload(1, warm); /* builds the payload table before any thread */
	}
	if (sh.per_txn < 1)
		sh.per_txn = 1;

	if (strcmp(mode, "load") == 0) {
		int64_t t = bench_now_ns();
		load(sh.conninfo, &sh, rows, chunk);
		printf("done %" PRId64 " %.3f\n", rows, (double)(bench_now_ns() - t) / 1e9);
		return 0;
	}
	if (strcmp(mode, "steady") == 0) {
		int64_t n = (int64_t)(sh.rate * seconds), late_n = 0, t_end;
		FILE *f;

		if (!out)
			bench_die("steady: --out FILE is required");
		sh.open_loop = true;
		sh.nrows = n;
		sh.commit_ns = calloc((size_t)n + 1, sizeof(int64_t));
		sh.late_us = calloc((size_t)n + 1, sizeof(int64_t));
		sh.commit_us = calloc((size_t)n + 1, sizeof(int64_t));
		if (!sh.commit_ns || !sh.late_us || !sh.commit_us)
			bench_die("out of memory");
		sh.t0 = bench_now_ns() + 500000000LL; /* connections first */
		sh.end_ns = sh.t0 + (int64_t)(seconds * 1e9) + 1000000000LL;
		printf("ready %" PRId64 "\n", sh.t0);
		fflush(stdout);
		run_threads(&sh, conns);
		t_end = bench_now_ns();
		f = fopen(out, "wb");
		if (!f || fwrite(sh.commit_ns, sizeof(int64_t), (size_t)n + 1, f) != (size_t)n + 1 ||
		    fclose(f) != 0)
			bench_die("could not write %s", out);
		{
			double secs = (double)(t_end - sh.t0) / 1e9;
			int64_t late_max, late_p99, c50, c99, written = 0;

			/* the rows written, their lateness and commit times packed first */
			for (int64_t i = 1; i <= n; i++) {
				if (sh.commit_ns[i] > 0) {
					written++;
					sh.late_us[written] = sh.late_us[i];
					sh.commit_us[written] = sh.commit_us[i];
				}
			}
			late_n = written;
			late_p99 = pct(sh.late_us + 1, late_n, 0.99);
			late_max = late_n ? sh.late_us[late_n] : 0;
			c50 = pct(sh.commit_us + 1, written, 0.50);
			c99 = pct(sh.commit_us + 1, written, 0.99);
			printf("done %" PRId64 " %.3f %.1f %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
			       " %" PRId64 "\n",
			       written, secs, secs > 0 ? (double)written / secs : 0, late_p99, late_max,
			       c50, c99, bench_cpu_us());
		}
		return 0;
	}
	if (strcmp(mode, "max") == 0) {
		int64_t t0 = bench_now_ns(), done_rows;
		double secs;

		sh.end_ns = t0 + (int64_t)(seconds * 1e9);
		run_threads(&sh, conns);
		secs = (double)(bench_now_ns() - t0) / 1e9;
		/* each thread drew one transaction too many */
		done_rows = (atomic_load(&sh.next_seq) - 1 - conns) * sh.per_txn;
		printf("done %" PRId64 " %.3f %.1f 0 0 0 0 %" PRId64 "\n", done_rows, secs,
		       (double)done_rows / secs, bench_cpu_us());
		return 0;
	}
	bench_die("unknown mode \"%s\"", mode);
}
