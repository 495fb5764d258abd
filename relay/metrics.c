/* metrics.c: the shared pipeline state, the readiness decision, and the
 * Prometheus and JSON renderings of it */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "metrics.h"

const double commit_bucket_bounds[COMMIT_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
						     0.5,   1,    2.5,   5,    10,  30};
const double batch_bucket_bounds[BATCH_BUCKETS] = {1, 10, 100, 1000, 10000, 100000, 1000000};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct metrics shared;

const char *relay_role_str(enum relay_role role)
{
	static const char *const names[] = {"starting", "standby", "leader", "stopping"};
	return names[role];
}

struct metrics *metrics_lock(void)
{
	pthread_mutex_lock(&mu);
	return &shared;
}

void metrics_unlock(void)
{
	pthread_mutex_unlock(&mu);
}

void metrics_snapshot(struct metrics *out)
{
	pthread_mutex_lock(&mu);
	*out = shared;
	pthread_mutex_unlock(&mu);
}

double unix_now(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

void metrics_set_error(const char *fmt, ...)
{
	va_list ap;
	struct metrics *m = metrics_lock();

	va_start(ap, fmt);
	vsnprintf(m->last_error, sizeof(m->last_error), fmt, ap);
	va_end(ap);
	m->last_error_time = unix_now();
	metrics_unlock();
}

void metrics_set_blocked(const char *fmt, ...)
{
	va_list ap;
	struct metrics *m = metrics_lock();

	va_start(ap, fmt);
	vsnprintf(m->blocked, sizeof(m->blocked), fmt, ap);
	va_end(ap);
	metrics_unlock();
}

void metrics_clear_blocked(void)
{
	metrics_lock()->blocked[0] = '\0';
	metrics_unlock();
}

void metrics_heartbeat(void)
{
	struct metrics *m = metrics_lock();
	m->heartbeat_ms = now_ms();
	metrics_unlock();
}

void histogram_observe(struct histogram *h, const double *bounds, int nbounds, double v)
{
	int i = 0;

	while (i < nbounds && v > bounds[i])
		i++;
	h->counts[i]++;
	h->sum += v;
	h->count++;
}

bool metrics_ready(const struct metrics *m, int64_t now_mono_ms, int64_t max_lag_rows,
		   int64_t max_lag_seconds, int64_t stall_ms, char *reason, size_t reasonlen)
{
	if (m->heartbeat_ms && now_mono_ms - m->heartbeat_ms > stall_ms) {
		snprintf(reason, reasonlen, "relay loop stalled for %lld ms",
			 (long long)(now_mono_ms - m->heartbeat_ms));
		return false;
	}
	if (!m->db_ok) {
		snprintf(reason, reasonlen, "postgresql unreachable");
		return false;
	}
	if (m->role == ROLE_STANDBY) {
		/* healthy and waiting for the lease: ready, see README */
		snprintf(reason, reasonlen, "standby");
		return true;
	}
	if (m->role != ROLE_LEADER) {
		snprintf(reason, reasonlen, "%s", m->role == ROLE_STARTING ? "starting" : "stopping");
		return false;
	}
	if (!m->kafka_ok) {
		snprintf(reason, reasonlen, "kafka unreachable");
		return false;
	}
	if (!m->lease_held) {
		snprintf(reason, reasonlen, "lease lost");
		return false;
	}
	if (m->poison_id) {
		snprintf(reason, reasonlen, "stopped on poison row %lld", (long long)m->poison_id);
		return false;
	}
	if (m->blocked[0]) {
		snprintf(reason, reasonlen, "%s", m->blocked);
		return false;
	}
	if (m->lag_known && max_lag_rows > 0 && m->lag_rows > max_lag_rows) {
		snprintf(reason, reasonlen, "lag of %lld rows exceeds %lld", (long long)m->lag_rows,
			 (long long)max_lag_rows);
		return false;
	}
	if (m->lag_known && max_lag_seconds > 0 && m->lag_oldest_ms > max_lag_seconds * 1000) {
		snprintf(reason, reasonlen, "oldest unrelayed row is %.1f s old, over %lld s",
			 (double)m->lag_oldest_ms / 1000.0, (long long)max_lag_seconds);
		return false;
	}
	snprintf(reason, reasonlen, "publishing");
	return true;
}

/* A growing text buffer. */
struct sbuf {
	char *s;
	size_t len, cap;
};

PRINTF(2, 3)
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 0) + 256;
		b->s = xrealloc(b->s, b->cap);
	}
}

static void sb_init(struct sbuf *b)
{
	b->cap = 8192;
	b->len = 0;
	b->s = xmalloc(b->cap);
	b->s[0] = '\0';
}

/* Label values and JSON strings share the same escapes for ", \ and \n. */
static void sb_escaped(struct sbuf *b, const char *s, bool json)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			sb_printf(b, "\\%c", c);
		else if (c == '\n')
			sb_printf(b, "\\n");
		else if (c < 0x20)
			sb_printf(b, json ? "\\u%04x" : " ", c);
		else
			sb_printf(b, "%c", c);
	}
}

static void metric(struct sbuf *b, const char *name, const char *type, const char *help)
{
	sb_printf(b, "# HELP outbox_relay_%s %s\n# TYPE outbox_relay_%s %s\n", name, help, name,
		  type);
}

static void counter(struct sbuf *b, const char *name, const char *help, uint64_t v)
{
	metric(b, name, "counter", help);
	sb_printf(b, "outbox_relay_%s %llu\n", name, (unsigned long long)v);
}

static void gauge(struct sbuf *b, const char *name, const char *help, double v)
{
	metric(b, name, "gauge", help);
	sb_printf(b, "outbox_relay_%s %.17g\n", name, v);
}

static void histogram(struct sbuf *b, const char *name, const char *help,
		      const struct histogram *h, const double *bounds, int n)
{
	uint64_t cum = 0;

	metric(b, name, "histogram", help);
	for (int i = 0; i < n; i++) {
		cum += h->counts[i];
		sb_printf(b, "outbox_relay_%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
			  (unsigned long long)cum);
	}
	sb_printf(b, "outbox_relay_%s_bucket{le=\"+Inf\"} %llu\n", name,
		  (unsigned long long)h->count);
	sb_printf(b, "outbox_relay_%s_sum %.17g\noutbox_relay_%s_count %llu\n", name, h->sum, name,
		  (unsigned long long)h->count);
}

char *metrics_render(const struct metrics *m, bool ready, size_t *len)
{
	struct sbuf b;

	sb_init(&b);
	metric(&b, "info", "gauge", "Constant 1, labelled with the relay name and lease owner.");
	sb_printf(&b, "outbox_relay_info{relay=\"");
	sb_escaped(&b, m->relay_name, false);
	sb_printf(&b, "\",owner=\"");
	sb_escaped(&b, m->owner, false);
	sb_printf(&b, "\"} 1\n");
	gauge(&b, "leader", "1 while this process holds the lease and publishes.",
	      m->role == ROLE_LEADER && m->lease_held);
	gauge(&b, "standby", "1 while this process waits for the lease.", m->role == ROLE_STANDBY);
	gauge(&b, "ready", "1 when /readyz answers 200 (the same decision, made at the scrape).",
	      ready);
	gauge(&b, "lease_generation", "Lease generation (fencing token) held or last held.",
	      (double)m->generation);
	gauge(&b, "postgres_up", "1 when the last PostgreSQL call succeeded.", m->db_ok);
	gauge(&b, "kafka_up", "1 when the last Kafka call succeeded.", m->kafka_ok);
	gauge(&b, "poison_stopped", "1 while publishing is stopped on a poison row.",
	      m->poison_id != 0);
	gauge(&b, "position_batch_sequence", "Batch sequence number of the committed position.",
	      (double)m->batch_seq);
	gauge(&b, "lag_rows", "Committed outbox rows not yet relayed (refreshed every few seconds).",
	      m->lag_known ? (double)m->lag_rows : 0);
	gauge(&b, "lag_seconds", "Age of the oldest committed row not yet relayed.",
	      m->lag_known ? (double)m->lag_oldest_ms / 1000.0 : 0);
	gauge(&b, "last_commit_timestamp_seconds", "Unix time of the last committed batch.",
	      m->last_commit_time);
	gauge(&b, "start_time_seconds", "Unix time the process started.", m->started_time);
	counter(&b, "rows_published_total", "Outbox rows committed to their topics.",
		m->rows_published);
	counter(&b, "dead_letters_total", "Outbox rows committed to the dead-letter topic.",
		m->dead_letters);
	counter(&b, "batches_committed_total", "Kafka transactions committed.",
		m->batches_committed);
	counter(&b, "transactions_aborted_total", "Kafka transactions aborted and sent again.",
		m->transactions_aborted);
	counter(&b, "commit_outcomes_unknown_total",
		"Commits whose outcome had to be learned from the checkpoint topic.",
		m->commit_outcomes_unknown);
	counter(&b, "producer_recreations_total",
		"Producers destroyed and created again after a timed-out or retried commit.",
		m->producer_recreations);
	counter(&b, "batches_read_ahead_total",
		"Batches read from PostgreSQL while the one before was on its way to Kafka.",
		m->batches_read_ahead);
	counter(&b, "fenced_total", "Times this process found itself fenced by another relay.",
		m->fenced);
	counter(&b, "window_marks_total",
		"Writes to PostgreSQL that made a batch's windows crash-safe before its Kafka commit.",
		m->window_marks);
	counter(&b, "database_restarts_seen_total",
		"Crash restarts or takeovers of the database seen between a look and a write.",
		m->db_restarts_seen);
	counter(&b, "postgres_errors_total", "Failed PostgreSQL calls.", m->db_errors);
	counter(&b, "kafka_errors_total", "Failed Kafka transactions and calls.", m->kafka_errors);
	histogram(&b, "commit_duration_seconds",
		  "Time from beginning a Kafka transaction to its commit.", &m->commit_seconds,
		  commit_bucket_bounds, COMMIT_BUCKETS);
	histogram(&b, "batch_rows", "Rows per committed Kafka transaction.", &m->batch_rows,
		  batch_bucket_bounds, BATCH_BUCKETS);
	*len = b.len;
	return b.s;
}

char *metrics_status_json(const struct metrics *m, bool ready, const char *reason, size_t *len)
{
	struct sbuf b;

	sb_init(&b);
	sb_printf(&b, "{\"relay\":\"");
	sb_escaped(&b, m->relay_name, true);
	sb_printf(&b, "\",\"owner\":\"");
	sb_escaped(&b, m->owner, true);
	sb_printf(&b, "\",\"role\":\"%s\",\"ready\":%s,\"reason\":\"", relay_role_str(m->role),
		  ready ? "true" : "false");
	sb_escaped(&b, reason, true);
	sb_printf(&b,
		  "\",\"generation\":%lld,\"lease_held\":%s,\"postgres_up\":%s,\"kafka_up\":%s,"
		  "\"position\":{\"batch_seq\":%lld,\"after_id\":%lld},",
		  (long long)m->generation, m->lease_held ? "true" : "false",
		  m->db_ok ? "true" : "false", m->kafka_ok ? "true" : "false",
		  (long long)m->batch_seq, (long long)m->after_id);
	if (m->lag_known)
		sb_printf(&b, "\"lag\":{\"rows\":%lld,\"oldest_seconds\":%.3f},",
			  (long long)m->lag_rows, (double)m->lag_oldest_ms / 1000.0);
	else
		sb_printf(&b, "\"lag\":null,");
	sb_printf(&b, "\"last_commit_time\":%.3f,\"rows_published\":%llu,", m->last_commit_time,
		  (unsigned long long)m->rows_published);
	if (m->poison_id) {
		sb_printf(&b, "\"poison_row\":{\"id\":%lld,\"reason\":\"", (long long)m->poison_id);
		sb_escaped(&b, m->poison_reason, true);
		sb_printf(&b, "\"},");
	} else {
		sb_printf(&b, "\"poison_row\":null,");
	}
	if (m->last_error_time > 0) {
		sb_printf(&b, "\"last_error\":{\"time\":%.3f,\"message\":\"", m->last_error_time);
		sb_escaped(&b, m->last_error, true);
		sb_printf(&b, "\"}}\n");
	} else {
		sb_printf(&b, "\"last_error\":null}\n");
	}
	*len = b.len;
	return b.s;
}
