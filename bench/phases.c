/* phases.c: where a process's main thread spends its wall time, without
 * touching its code. Loaded with LD_PRELOAD into outbox-relay (or
 * bench-producer), it wraps the libpq and librdkafka calls the relay loop
 * makes and adds up, per call (per SQL function for PQexecParams), the
 * count, total and longest wall time on the main thread; the time between
 * rd_kafka_begin_transaction returning and rd_kafka_commit_transaction being
 * called is "produce loop" (building and handing over the records).
 *
 *   PHASES_OUT=/tmp/relay.phases LD_PRELOAD=build-bench/tools/libphases.so \
 *       build-bench/relay/outbox-relay run -c relay.conf
 *
 * The first 30 calls of every kind are written to PHASES_OUT as they happen
 * ("event MS_SINCE_START NAME DURATION_MS"), so a start-up can be read even
 * after kill -9; the totals are written at exit ("total NAME CALLS TOTAL_MS
 * MAX_MS"). A measuring tool, never linked into the relay. */
#include <dlfcn.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_KINDS 64

struct kind {
	char name[64];
	int64_t calls, total_ns, max_ns;
};

static struct kind kinds[MAX_KINDS];
static int nkinds;
static int64_t t_start, t_begin_ret = -1;
static int out_fd = -1;

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int is_main(void)
{
	return syscall(SYS_gettid) == getpid();
}

static void *next_sym(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (!p) {
		fprintf(stderr, "phases: no symbol %s\n", name);
		abort();
	}
	return p;
}

static void record(const char *name, int64_t t0)
{
	int64_t d = mono_ns() - t0;
	struct kind *k = NULL;

	if (!is_main())
		return;
	for (int i = 0; i < nkinds; i++)
		if (strcmp(kinds[i].name, name) == 0)
			k = &kinds[i];
	if (!k) {
		if (nkinds == MAX_KINDS)
			return;
		k = &kinds[nkinds++];
		snprintf(k->name, sizeof(k->name), "%s", name);
	}
	k->calls++;
	k->total_ns += d;
	if (d > k->max_ns)
		k->max_ns = d;
	if (out_fd >= 0 && k->calls <= 30) {
		char line[160];
		int n = snprintf(line, sizeof(line), "event %.3f %s %.3f\n",
				 (double)(mono_ns() - t_start) / 1e6, name, (double)d / 1e6);
		if (write(out_fd, line, (size_t)n) < 0)
			return;
	}
}

__attribute__((constructor)) static void phases_init(void)
{
	const char *path = getenv("PHASES_OUT");

	t_start = mono_ns();
	if (path)
		out_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

__attribute__((destructor)) static void phases_fini(void)
{
	char line[200];

	if (out_fd < 0 || !is_main())
		return;
	for (int i = 0; i < nkinds; i++) {
		int n = snprintf(line, sizeof(line), "total %s %lld %.3f %.3f\n", kinds[i].name,
				 (long long)kinds[i].calls, (double)kinds[i].total_ns / 1e6,
				 (double)kinds[i].max_ns / 1e6);
		if (write(out_fd, line, (size_t)n) < 0)
			break;
	}
	int n = snprintf(line, sizeof(line), "total wall 1 %.3f 0\n", (double)(mono_ns() - t_start) / 1e6);
	if (write(out_fd, line, (size_t)n) < 0)
		return;
}

/* "SELECT outbox.window_open($1)" -> "pg outbox.window_open"; the page
 * query names fetch_page after FROM. */
static void sql_name(const char *sql, char *buf, size_t len)
{
	const char *p = strstr(sql, "outbox.");
	size_t n = 0;

	if (!p) {
		snprintf(buf, len, "pg %.20s", sql);
		return;
	}
	while (p[n] && p[n] != '(' && n < 40)
		n++;
	snprintf(buf, len, "pg %.*s", (int)n, p);
}

PGresult *PQexecParams(PGconn *conn, const char *command, int nParams, const Oid *paramTypes,
		       const char *const *paramValues, const int *paramLengths,
		       const int *paramFormats, int resultFormat)
{
	static PGresult *(*real)(PGconn *, const char *, int, const Oid *, const char *const *,
				 const int *, const int *, int);
	char name[64];
	int64_t t0 = mono_ns();
	PGresult *res;

	if (!real)
		real = next_sym("PQexecParams");
	res = real(conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats,
		   resultFormat);
	sql_name(command, name, sizeof(name));
	record(name, t0);
	return res;
}

/* Prepared statements: their names, and the SQL function each one calls. */
static struct {
	char stmt[64], label[64];
} prepared[32];
static int nprepared;

PGresult *PQprepare(PGconn *conn, const char *name, const char *query, int nParams,
		    const Oid *paramTypes)
{
	static PGresult *(*real)(PGconn *, const char *, const char *, int, const Oid *);
	int64_t t0 = mono_ns();
	PGresult *res;

	if (!real)
		real = next_sym("PQprepare");
	res = real(conn, name, query, nParams, paramTypes);
	if (is_main() && nprepared < 32 && name) {
		snprintf(prepared[nprepared].stmt, sizeof(prepared[0].stmt), "%s", name);
		sql_name(query, prepared[nprepared].label, sizeof(prepared[0].label));
		nprepared++;
	}
	record("pg PQprepare", t0);
	return res;
}

PGresult *PQexecPrepared(PGconn *conn, const char *name, int nParams,
			 const char *const *paramValues, const int *paramLengths,
			 const int *paramFormats, int resultFormat)
{
	static PGresult *(*real)(PGconn *, const char *, int, const char *const *, const int *,
				 const int *, int);
	const char *label = "pg prepared ?";
	int64_t t0 = mono_ns();
	PGresult *res;

	if (!real)
		real = next_sym("PQexecPrepared");
	res = real(conn, name, nParams, paramValues, paramLengths, paramFormats, resultFormat);
	for (int i = 0; i < nprepared; i++)
		if (name && strcmp(prepared[i].stmt, name) == 0)
			label = prepared[i].label;
	record(label, t0);
	return res;
}

PGconn *PQconnectdbParams(const char *const *keywords, const char *const *values, int expand)
{
	static PGconn *(*real)(const char *const *, const char *const *, int);
	int64_t t0 = mono_ns();
	PGconn *conn;

	if (!real)
		real = next_sym("PQconnectdbParams");
	conn = real(keywords, values, expand);
	record("pg connect", t0);
	return conn;
}

void PQclear(PGresult *res)
{
	static void (*real)(PGresult *);
	int64_t t0 = mono_ns();

	if (!real)
		real = next_sym("PQclear");
	real(res);
	record("pg PQclear", t0);
}

int select(int nfds, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv)
{
	static int (*real)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
	int64_t t0 = mono_ns();
	int rc;

	if (!real)
		real = next_sym("select");
	rc = real(nfds, r, w, e, tv);
	record("wait (select)", t0);
	return rc;
}

#define WRAP_ERR(fn, label, params, args)                                                      \
	rd_kafka_error_t *fn params                                                            \
	{                                                                                      \
		static rd_kafka_error_t *(*real) params;                                        \
		int64_t t0 = mono_ns();                                                        \
		rd_kafka_error_t *error;                                                       \
		if (!real)                                                                     \
			real = next_sym(#fn);                                                  \
		error = real args;                                                             \
		record(label, t0);                                                             \
		return error;                                                                  \
	}

WRAP_ERR(rd_kafka_init_transactions, "kafka init_transactions", (rd_kafka_t * rk, int timeout_ms),
	 (rk, timeout_ms))
WRAP_ERR(rd_kafka_abort_transaction, "kafka abort_transaction", (rd_kafka_t * rk, int timeout_ms),
	 (rk, timeout_ms))

rd_kafka_error_t *rd_kafka_begin_transaction(rd_kafka_t *rk)
{
	static rd_kafka_error_t *(*real)(rd_kafka_t *);
	int64_t t0 = mono_ns();
	rd_kafka_error_t *error;

	if (!real)
		real = next_sym("rd_kafka_begin_transaction");
	error = real(rk);
	record("kafka begin_transaction", t0);
	t_begin_ret = mono_ns();
	return error;
}

rd_kafka_error_t *rd_kafka_commit_transaction(rd_kafka_t *rk, int timeout_ms)
{
	static rd_kafka_error_t *(*real)(rd_kafka_t *, int);
	int64_t t0 = mono_ns();
	rd_kafka_error_t *error;

	if (t_begin_ret >= 0) {
		record("produce loop (begin..commit)", t_begin_ret);
		t_begin_ret = -1;
	}
	if (!real)
		real = next_sym("rd_kafka_commit_transaction");
	t0 = mono_ns();
	error = real(rk, timeout_ms);
	record("kafka commit_transaction", t0);
	return error;
}

rd_kafka_t *rd_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, char *errstr, size_t len)
{
	static rd_kafka_t *(*real)(rd_kafka_type_t, rd_kafka_conf_t *, char *, size_t);
	int64_t t0 = mono_ns();
	rd_kafka_t *rk;

	if (!real)
		real = next_sym("rd_kafka_new");
	rk = real(type, conf, errstr, len);
	record(type == RD_KAFKA_PRODUCER ? "kafka new producer" : "kafka new consumer", t0);
	return rk;
}

void rd_kafka_destroy(rd_kafka_t *rk)
{
	static void (*real)(rd_kafka_t *);
	int64_t t0 = mono_ns();

	if (!real)
		real = next_sym("rd_kafka_destroy");
	real(rk);
	record("kafka destroy", t0);
}

rd_kafka_resp_err_t rd_kafka_metadata(rd_kafka_t *rk, int all, rd_kafka_topic_t *only,
				      const struct rd_kafka_metadata **md, int timeout_ms)
{
	static rd_kafka_resp_err_t (*real)(rd_kafka_t *, int, rd_kafka_topic_t *,
					   const struct rd_kafka_metadata **, int);
	int64_t t0 = mono_ns();
	rd_kafka_resp_err_t err;

	if (!real)
		real = next_sym("rd_kafka_metadata");
	err = real(rk, all, only, md, timeout_ms);
	record("kafka metadata", t0);
	return err;
}

rd_kafka_event_t *rd_kafka_queue_poll(rd_kafka_queue_t *q, int timeout_ms)
{
	static rd_kafka_event_t *(*real)(rd_kafka_queue_t *, int);
	int64_t t0 = mono_ns();
	rd_kafka_event_t *ev;

	if (!real)
		real = next_sym("rd_kafka_queue_poll");
	ev = real(q, timeout_ms);
	record(ev ? (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_CREATETOPICS_RESULT ? "kafka admin CreateTopics"
		     : rd_kafka_event_type(ev) == RD_KAFKA_EVENT_DESCRIBECONFIGS_RESULT
			     ? "kafka admin DescribeConfigs"
			     : "kafka admin other")
		  : "kafka admin timeout",
	       t0);
	return ev;
}

rd_kafka_resp_err_t rd_kafka_query_watermark_offsets(rd_kafka_t *rk, const char *topic,
						     int32_t partition, int64_t *lo, int64_t *hi,
						     int timeout_ms)
{
	static rd_kafka_resp_err_t (*real)(rd_kafka_t *, const char *, int32_t, int64_t *,
					   int64_t *, int);
	int64_t t0 = mono_ns();
	rd_kafka_resp_err_t err;

	if (!real)
		real = next_sym("rd_kafka_query_watermark_offsets");
	err = real(rk, topic, partition, lo, hi, timeout_ms);
	record("kafka query_watermark_offsets", t0);
	return err;
}

rd_kafka_message_t *rd_kafka_consumer_poll(rd_kafka_t *rk, int timeout_ms)
{
	static rd_kafka_message_t *(*real)(rd_kafka_t *, int);
	int64_t t0 = mono_ns();
	rd_kafka_message_t *m;

	if (!real)
		real = next_sym("rd_kafka_consumer_poll");
	m = real(rk, timeout_ms);
	record("kafka consumer_poll", t0);
	return m;
}

rd_kafka_resp_err_t rd_kafka_consumer_close(rd_kafka_t *rk)
{
	static rd_kafka_resp_err_t (*real)(rd_kafka_t *);
	int64_t t0 = mono_ns();
	rd_kafka_resp_err_t err;

	if (!real)
		real = next_sym("rd_kafka_consumer_close");
	err = real(rk);
	record("kafka consumer_close", t0);
	return err;
}
