/* outbox.h: the libpq side: one connection to the outbox database and the
 * outbox.* functions the relay calls (sql/, docs/sql.md) */
#ifndef OUTBOX_OUTBOX_H
#define OUTBOX_OUTBOX_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "batch.h"
#include "checkpoint.h"
#include "common.h"
#include "config.h"

/* Results of the calls below. Transient errors (connection lost, server
 * shutting down, timeouts) are worth a reconnect and retry; the others are
 * answers. */
enum ob_status {
	OB_OK = 0,
	OB_TRANSIENT = -1,     /* reconnect, back off, retry */
	OB_FAILED = -2,        /* a server error no retry will cure */
	OB_FENCED = -3,        /* OR001: our generation is stale */
	OB_BACKWARDS = -4,     /* OR002: the position would go backwards */
	OB_REGRESSION = -5,    /* OR003: transaction ids behind the position */
	OB_OTHER_NAME = -6,    /* OR004: another relay name owns this outbox */
	OB_UNKNOWN_RELAY = -7, /* OR005 */
	/* 25006: the server is read-only (a hot standby, or
	 * default_transaction_read_only on). Not cured by retrying on the same
	 * server: back off long, and say the conninfo is wrong. */
	OB_READ_ONLY = -8,
	OB_STOPPED = -9, /* outbox_wait: the waiter's tick said stop */
};

const char *ob_status_str(int st);

struct outbox;
struct waiter;

/*
 * What a committed write of the relay's own tells about the server's
 * transaction ids (docs/design.md, "Crash-safe window ends"). After a crash
 * PostgreSQL hands out again every id that no flushed WAL names, such as a
 * rolled-back transaction's; a window's end counts those as completed. A
 * write's commit is flushed (the relay's synchronous_commit is on), so the
 * server never hands out xid or a lower id again; and as its id came after
 * every window end taken before it was sent, those windows are crash-safe
 * from then on, unless the server crashed in between: then `life`, the
 * server's life (pg_stat_wal.stats_reset, reset by crash recovery), differs
 * from the one the look saw.
 */
struct db_mark {
	uint64_t xid;
	char life[64];
};

struct lease {
	bool acquired;
	int64_t generation;
	char owner[256];
	int64_t expires_in_ms;
};

/* Connect with cfg->postgres (borrowed; must outlive the result) and set
 * the relay's session settings as postgres.pooling says. Returns NULL with
 * errbuf set when the conninfo does not parse or the server cannot be
 * reached; *status (may be NULL) then says OB_FAILED when no retry can
 * work (a pooler that refuses or drops the startup options of pooling
 * "none"), else OB_TRANSIENT. The
 * message never holds the conninfo's password (libpq's parse errors are
 * reported with every quoted fragment redacted). Logs a warning when the
 * server says it is a hot standby. */
struct outbox *outbox_connect(const struct config *cfg, int *status, char *errbuf,
			      size_t errlen) MUSTCHECK;
/* True when errmsg, from a failed outbox_connect, is the server or libpq
 * refusing the connection for a reason that waiting does not cure: the
 * server's certificate is not trusted or does not name the host, the root
 * certificate file is missing, the password or pg_hba.conf refuses the
 * login, the server has no TLS though sslmode asks for it. False for a
 * server that is away, starting or shutting down. */
bool outbox_connect_refused(const char *errmsg);

void outbox_free(struct outbox *ob);
/* The last error's text; borrowed until the next call. */
const char *outbox_errstr(const struct outbox *ob);
bool outbox_connected(const struct outbox *ob);
/* Whether the server said at connection start (PostgreSQL 14+) that it is a
 * hot standby or has default_transaction_read_only on: every write will fail
 * with OB_READ_ONLY. For `check` and the relay's back-off. */
bool outbox_read_only(const struct outbox *ob);

int outbox_schema_version(struct outbox *ob, int *version) MUSTCHECK;
int outbox_lease_acquire(struct outbox *ob, const char *owner, struct lease *lease) MUSTCHECK;
int outbox_lease_renew(struct outbox *ob, int64_t generation, bool *held) MUSTCHECK;
int outbox_lease_release(struct outbox *ob, int64_t generation) MUSTCHECK;
/* The stored position; pos->generation is the lease generation. */
int outbox_position_get(struct outbox *ob, struct position *pos) MUSTCHECK;
/* The rows the database has between two positions, from (exclusive) and to
 * (inclusive): how many, and the sum of their ids mod 2^63 (the digest a
 * checkpoint carries of its batch). */
int outbox_span_digest(struct outbox *ob, const struct position *from, const struct position *to,
		       int64_t *rows, int64_t *idsum) MUSTCHECK;
/* Append the next page of pos's window (pos->next must be set) to b: at
 * most max_rows rows, cut at max_bytes (the first row always comes). *nrows
 * is the number appended; 0 means the window is exhausted, and so does
 * *window_end (set on a page shorter than max_rows that max_bytes did not
 * cut: no row of the window follows it, no need to ask again). */
int outbox_fetch_page(struct outbox *ob, const struct position *pos, int max_rows,
		      int64_t max_bytes, struct batch *b, int *nrows, bool *window_end) MUSTCHECK;
/* Open pos's next window and append its first page to b, in one
 * statement: pos->next (NULL before) gets the window's end, and the rest
 * is outbox_fetch_page's. The window starts at pos->done, the relay's own
 * position, which may be ahead of the stored one (after a failover to a
 * replica that missed the last advances): an end below it is OB_REGRESSION,
 * as OR003 is for the stored position in outbox.window_open(), and pos is
 * left as it was. life gets the server's life (struct db_mark) as the
 * window's end was taken. */
int outbox_look(struct outbox *ob, struct position *pos, int max_rows, int64_t max_bytes,
		struct batch *b, int *nrows, bool *window_end, char *life,
		size_t lifelen) MUSTCHECK;
/* Fenced, monotone advance to pos; unless postgres.retention_ms keeps
 * relayed rows (then outbox_purge deletes them later), truncates the
 * partitions of outbox.event it left fully relayed (*truncated: how many).
 * Idempotent: when exactly this position (generation, batch, snapshots,
 * after_id) is already stored, as after a reply lost to a dropped
 * connection, it succeeds with *truncated 0, logs it at info and sets
 * *already (may be NULL). Any other move back is OB_BACKWARDS. *mark gets
 * the write's transaction id and the server's life. */
int outbox_advance(struct outbox *ob, int64_t generation, const struct position *pos,
		   int64_t *truncated, bool *already, struct db_mark *mark) MUSTCHECK;
/* The write that makes the windows read so far crash-safe (docs/design.md,
 * "Crash-safe window ends"): a lease renewal (*held false: fenced, as
 * outbox_lease_renew), committed with the relay's synchronous_commit (on),
 * with its struct db_mark. */
int outbox_mark(struct outbox *ob, int64_t generation, bool *held,
		struct db_mark *mark) MUSTCHECK;
/* Register the topics this relay writes itself (checkpoint, dead letters):
 * the database then refuses outbox rows aimed at them (OR006). Replaces the
 * relay's earlier set; fenced by generation (OB_FENCED). Call after taking
 * the lease. topics: n borrowed strings. */
int outbox_reserve_topics(struct outbox *ob, int64_t generation, const char *const *topics,
			  int n) MUSTCHECK;
/* While idle: truncate the partitions of outbox.event that the last
 * advance could not (a writer's transaction or a reader was in them). */
int outbox_cleanup(struct outbox *ob, int64_t *truncated) MUSTCHECK;
/* Delete up to max_rows relayed rows older than postgres.retention_ms. */
int outbox_purge(struct outbox *ob, int max_rows, int64_t *deleted) MUSTCHECK;
int outbox_lag(struct outbox *ob, int64_t *rows, int64_t *oldest_age_ms) MUSTCHECK;
/* Print outbox.status() as "column: value" lines. */
int outbox_status_print(struct outbox *ob, FILE *out) MUSTCHECK;

/* For `verify` (read-only): the distinct topics of the rows in the table,
 * as a malloc'd array of *n malloc'd strings (the caller frees both). */
int outbox_retained_topics(struct outbox *ob, char ***topics, int *n) MUSTCHECK;
/* For `verify`: up to max_rows rows of the table with id > after_id in id
 * order, relayed or not (since_ms > 0: only rows created in the last
 * since_ms), appended to b as outbox_fetch_page does; relayed[i] (the
 * caller's array of max_rows) says whether row i is relayed at the stored
 * position. *nrows 0: no more. */
int outbox_retained_page(struct outbox *ob, int64_t after_id, int max_rows, int64_t since_ms,
			 struct batch *b, bool *relayed, int *nrows) MUSTCHECK;

/* For `verify`: the stored batch_seq (-1: no such relay) and when it was
 * stored (advanced_at in ms since the epoch, by the database's clock; 0 if
 * never). */
int outbox_position_stamp(struct outbox *ob, int64_t *batch_seq, int64_t *advanced_ms) MUSTCHECK;

/* LISTEN on the channel of outbox.notify_enable(). */
int outbox_listen(struct outbox *ob) MUSTCHECK;
/* outbox.relay_awake(awake): hold (true) or release (false) the lock that
 * keeps the writers' trigger from notifying while the relay is awake;
 * *held says whether this session holds it now. */
int outbox_relay_awake(struct outbox *ob, bool awake, bool *held) MUSTCHECK;
/* Wait up to timeout_ms for a NOTIFY, in poll() slices of the waiter w
 * (NULL: one slice), ticking it between slices. OB_OK when a notification
 * arrived (*notified) or the time is up; OB_STOPPED when the tick said stop;
 * OB_TRANSIENT when the connection failed. Main thread only. */
int outbox_wait(struct outbox *ob, const struct waiter *w, int timeout_ms,
		bool *notified) MUSTCHECK;

#endif
