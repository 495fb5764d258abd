/* metrics.h: what the relay loop tells the HTTP thread: counters, gauges,
 * histograms and the pipeline's state, behind one mutex */
#ifndef OUTBOX_METRICS_H
#define OUTBOX_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

enum relay_role { ROLE_STARTING, ROLE_STANDBY, ROLE_LEADER, ROLE_STOPPING };

const char *relay_role_str(enum relay_role role);

#define COMMIT_BUCKETS 12
#define BATCH_BUCKETS 7

struct histogram {
	uint64_t counts[16]; /* per bucket, not cumulative; the last is +Inf */
	double sum;
	uint64_t count;
};

/* Everything /metrics, /readyz and /status show. Written by the relay
 * thread through the metrics_* calls; read as a copy by metrics_snapshot. */
struct metrics {
	/* identity and role */
	char relay_name[128];
	char owner[256];
	enum relay_role role;
	int64_t generation;
	bool lease_held;

	/* reachability, as last seen */
	bool db_ok;
	bool kafka_ok;

	/* position */
	int64_t batch_seq;
	int64_t after_id;

	/* lag, refreshed every few seconds */
	bool lag_known;
	int64_t lag_rows;
	int64_t lag_oldest_ms;

	/* poison row blocking publishing (stop policy); 0 = none */
	int64_t poison_id;
	char poison_reason[512];

	/* Why publishing is not moving although the relay leads (a batch
	 * failing again and again, a foreign transaction holding the
	 * checkpoint back); "" = nothing in the way. Shown on /readyz. */
	char blocked[256];

	char last_error[512];
	double last_error_time;   /* unix seconds; 0 = never */
	double last_commit_time;  /* unix seconds; 0 = never */
	double started_time;      /* unix seconds */
	int64_t heartbeat_ms;     /* monotonic ms of the loop's last sign of life */

	/* counters */
	uint64_t rows_published;
	uint64_t dead_letters;
	uint64_t batches_committed;
	uint64_t transactions_aborted;
	uint64_t commit_outcomes_unknown;
	uint64_t producer_recreations;
	uint64_t batches_read_ahead;
	uint64_t fenced;
	uint64_t window_marks;     /* make_durable's writes (relay.c) */
	uint64_t db_restarts_seen; /* changes of the server's life (struct db_mark) */
	uint64_t db_errors;
	uint64_t kafka_errors;

	struct histogram commit_seconds;
	struct histogram batch_rows;
};

extern const double commit_bucket_bounds[COMMIT_BUCKETS];
extern const double batch_bucket_bounds[BATCH_BUCKETS];

/* Lock the shared instance, change it, unlock: the relay thread uses
 * metrics_lock()/metrics_unlock() around field updates. */
struct metrics *metrics_lock(void);
void metrics_unlock(void);

/* A consistent copy for rendering (any thread). */
void metrics_snapshot(struct metrics *out);

/* Small helpers for the relay thread. */
void metrics_set_error(const char *fmt, ...) PRINTF(1, 2);
/* Say why publishing is not moving; clear it when it moves again. */
void metrics_set_blocked(const char *fmt, ...) PRINTF(1, 2);
void metrics_clear_blocked(void);
void metrics_heartbeat(void);
void histogram_observe(struct histogram *h, const double *bounds, int nbounds, double v);

/* Unix time as a double. */
double unix_now(void);

/* The readiness decision, a pure function of a snapshot (unit tested by a
 * table): writes a short reason and returns true when ready. max_lag_rows
 * and max_lag_seconds of 0 mean no limit; stall_ms is how old the
 * heartbeat may get. */
bool metrics_ready(const struct metrics *m, int64_t now_mono_ms, int64_t max_lag_rows,
		   int64_t max_lag_seconds, int64_t stall_ms, char *reason, size_t reasonlen);

/* Append the Prometheus text exposition (format 0.0.4) of m to a
 * malloc'd buffer; returns it (NUL-terminated) and its length in *len.
 * ready is metrics_ready()'s decision for the same snapshot, exported as
 * outbox_relay_ready so that a dashboard shows what /readyz answers. */
char *metrics_render(const struct metrics *m, bool ready, size_t *len);

/* /status as JSON; malloc'd. */
char *metrics_status_json(const struct metrics *m, bool ready, const char *reason, size_t *len);

#endif
