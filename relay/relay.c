/* relay.c: the relay loop. Kafka decides what was published (the batch and
 * its checkpoint commit together); PostgreSQL gets a fenced copy afterwards.
 * Every step that can fail is retried, repaired from the checkpoint, or
 * stops the process with a code the supervisor understands. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "checkpoint.h"
#include "crash.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "publisher.h"
#include "relay.h"
#include "sdnotify.h"
#include "version.h"

volatile sig_atomic_t relay_stop_requested;
volatile sig_atomic_t relay_reload_requested;

struct relay {
	struct config *cfg;
	struct outbox *ob;
	struct publisher *pub;
	char owner[256];
	int64_t generation;
	int64_t last_renew_ms;
	int backoff_ms;

	/* The last committed position: in Kafka's checkpoint and, once
	 * advanced, in the database. Window moves with no rows in them are
	 * made here only, and reach the copies with the next batch. */
	struct position pos;
	/* pos plus the rows gathered in batch: the next checkpoint. */
	struct position work;
	struct batch batch;
	bool batch_full; /* a size limit ended the batch: a backlog */

	/* On a backlog, the batch after this one, read while this one travels
	 * to Kafka: ahead_work is work plus its rows. */
	struct batch ahead;
	struct position ahead_work;
	bool have_ahead, ahead_full;

	/* Poison rows (stop policy): the next batch ends before row_limit
	 * rows; while halted, nothing is published until halted_until. */
	int row_limit;
	int64_t halted_id;
	int64_t halted_until;

	int64_t last_probe_ms; /* lag and Kafka reachability, refreshed while idle */
	bool producer_started;
};

/* publish_batch and vet_batch: gather the batch again (shorter, or after a
 * halt), publishing nothing of the current one. */
#define REFILL (-2)

/* Sleep that a signal cuts short. */
static void pause_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	metrics_heartbeat();
	if (!relay_stop_requested)
		nanosleep(&ts, NULL);
}

/* Back-off for transient failures: 100 ms doubling to 5 s, and never longer
 * than a third of the lease TTL, so that a retry loop that renews the lease
 * keeps it. */
static void back_off(struct relay *r)
{
	int most = r->cfg->lease_ttl_ms / 3 < 5000 ? r->cfg->lease_ttl_ms / 3 : 5000;

	r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : 100;
	if (r->backoff_ms > most)
		r->backoff_ms = most;
	pause_ms(r->backoff_ms);
}

static void make_owner(struct relay *r)
{
	char host[128] = "unknown";

	if (r->cfg->owner[0]) {
		snprintf(r->owner, sizeof(r->owner), "%s", r->cfg->owner);
		return;
	}
	gethostname(host, sizeof(host) - 1);
	srand((unsigned)(time(NULL) ^ getpid()));
	snprintf(r->owner, sizeof(r->owner), "%s:%d:%04x", host, (int)getpid(), rand() & 0xffff);
}

/* (Re)connect until it works or a stop is requested; false on stop. */
static bool db_connect(struct relay *r)
{
	char err[1024];

	while (!relay_stop_requested) {
		outbox_free(r->ob);
		r->ob = outbox_connect(r->cfg, err, sizeof(err));
		if (r->ob) {
			r->backoff_ms = 0;
			metrics_lock()->db_ok = true;
			metrics_unlock();
			if (r->cfg->notify && outbox_listen(r->ob) != OB_OK) {
				log_warning("could not listen for outbox notifications: %s",
					    outbox_errstr(r->ob));
				continue;
			}
			return true;
		}
		log_warning("%s", err);
		{
			struct metrics *m = metrics_lock();
			m->db_ok = false;
			m->db_errors++;
			metrics_unlock();
		}
		metrics_set_error("%s", err);
		back_off(r);
	}
	return false;
}

/* Handle a database error from any call: transient ones reconnect (and the
 * caller retries), answers become exit codes. Returns -1 to retry, or an
 * exit code. */
static int db_trouble(struct relay *r, int st, const char *what)
{
	struct metrics *m = metrics_lock();

	m->db_errors++;
	m->db_ok = outbox_connected(r->ob);
	if (st == OB_FENCED) {
		m->fenced++;
		m->lease_held = false;
	}
	metrics_unlock();
	metrics_set_error("%s: %s", what, outbox_errstr(r->ob));
	switch (st) {
	case OB_TRANSIENT:
		log_warning("%s: %s", what, outbox_errstr(r->ob));
		if (!outbox_connected(r->ob)) {
			back_off(r);
			if (!db_connect(r))
				return EXIT_OK;
		} else {
			back_off(r);
		}
		return -1;
	case OB_FENCED:
		log_error("%s: %s", what, outbox_errstr(r->ob));
		return EXIT_FENCED;
	case OB_REGRESSION:
	case OB_BACKWARDS:
		log_error("%s: %s", what, outbox_errstr(r->ob));
		return EXIT_POSITION;
	default:
		log_error("%s: %s", what, outbox_errstr(r->ob));
		return EXIT_STARTUP;
	}
}

/* Take the lease, waiting as a standby while another relay holds it.
 * Returns -1 when acquired, else an exit code. */
static int take_lease(struct relay *r)
{
	struct lease lease;
	int64_t last_log = 0;

	while (!relay_stop_requested) {
		int st = outbox_lease_acquire(r->ob, r->owner, &lease);
		if (st == OB_OTHER_NAME) {
			log_error("refusing to start: %s", outbox_errstr(r->ob));
			return EXIT_STARTUP;
		}
		if (st != OB_OK) {
			int ex = db_trouble(r, st, "could not take the lease");
			if (ex >= 0)
				return ex;
			continue;
		}
		if (lease.acquired) {
			struct metrics *m = metrics_lock();
			m->lease_held = true;
			m->generation = lease.generation;
			metrics_unlock();
			r->generation = lease.generation;
			r->last_renew_ms = now_ms();
			log_info("lease of relay \"%s\" taken by \"%s\": generation %" PRId64,
				 r->cfg->relay_name, r->owner, r->generation);
			return -1;
		}
		metrics_lock()->role = ROLE_STANDBY;
		metrics_unlock();
		if (last_log == 0)
			sd_notify_state("READY=1\nSTATUS=standby");
		if (now_ms() - last_log > 30000) {
			log_info("standby: relay \"%s\" is held by \"%s\"; lease expires in %" PRId64
				 " ms",
				 r->cfg->relay_name, lease.owner, lease.expires_in_ms);
			last_log = now_ms();
		}
		/* Poll a little after the expiry we were told, and never rarely. */
		int wait = (int)lease.expires_in_ms + 50;
		pause_ms(wait < 50 ? 50 : wait > r->cfg->lease_ttl_ms / 2 ? r->cfg->lease_ttl_ms / 2 : wait);
	}
	return EXIT_OK;
}

/* Renew the lease now: -1 while it is ours, else an exit code. Also the
 * check before acting on Kafka after a pause of unknown length. */
static int check_lease(struct relay *r)
{
	bool held;
	int st;

	for (;;) {
		st = outbox_lease_renew(r->ob, r->generation, &held);
		if (st == OB_OK)
			break;
		int ex = db_trouble(r, st, "could not renew the lease");
		if (ex >= 0)
			return ex;
		if (relay_stop_requested)
			return EXIT_OK;
	}
	if (!held) {
		struct metrics *m = metrics_lock();
		m->lease_held = false;
		m->fenced++;
		metrics_unlock();
		log_error("lease of relay \"%s\" lost: another relay took over (generation %" PRId64
			  " is stale); stopping",
			  r->cfg->relay_name, r->generation);
		return EXIT_FENCED;
	}
	r->last_renew_ms = now_ms();
	return -1;
}

/* Renew the lease every third of its TTL. Returns -1 to go on, or an exit code. */
static int renew_lease(struct relay *r)
{
	if (now_ms() - r->last_renew_ms < r->cfg->lease_ttl_ms / 3)
		return -1;
	return check_lease(r);
}

/* Advance the database to pos; retried through reconnects. Returns -1 on
 * success, else an exit code. */
static int db_advance(struct relay *r, const struct position *pos)
{
	int64_t deleted;

	for (;;) {
		int st = outbox_advance(r->ob, r->generation, pos, &deleted);
		if (st == OB_OK)
			break;
		/* A stop request does not end this loop: the Kafka transaction is
		 * committed and the copy should follow (a restart would repair it). */
		int ex = db_trouble(r, st, "could not advance the database position");
		if (ex >= 0)
			return ex;
		if (relay_stop_requested && !outbox_connected(r->ob))
			return EXIT_OK;
	}
	log_debug("advanced to batch %" PRId64 " (after_id %" PRId64 "), deleted %" PRId64 " rows",
		  pos->batch_seq, pos->after_id, deleted);
	return -1;
}

/* Read the checkpoint through retries; -1 on success, else an exit code. */
static int read_checkpoint(struct relay *r, struct position *ck, bool *found)
{
	char err[1024];

	while (!relay_stop_requested) {
		if (checkpoint_read_last(r->cfg, NULL, now_ms() + checkpoint_read_budget_ms(r->cfg),
					 NULL, ck, found, err, sizeof(err)) == 0)
			return -1;
		log_warning("%s", err);
		back_off(r);
	}
	return EXIT_OK;
}

/*
 * A new producer: init_transactions fences every older producer with our
 * transactional.id and settles its open transaction, so the checkpoint read
 * afterwards is final. Returns -1 when ready, else an exit code.
 */
static int producer_start(struct relay *r)
{
	char err[1024];
	int ex;
	int init_ms = r->cfg->lease_ttl_ms / 3 < r->cfg->commit_timeout_ms ? r->cfg->lease_ttl_ms / 3
									   : r->cfg->commit_timeout_ms;

	if (r->producer_started) {
		/* A relay that lost its lease must not start a producer: its
		 * init_transactions would fence the relay that took over. */
		if ((ex = check_lease(r)) >= 0)
			return ex;
		metrics_lock()->producer_recreations++;
		metrics_unlock();
	}
	publisher_free(r->pub);
	r->pub = NULL;
	r->producer_started = true;
	while (!relay_stop_requested) {
		enum pub_status st;

		if (!r->pub) {
			r->pub = publisher_new(r->cfg, err, sizeof(err));
			if (!r->pub) {
				log_error("%s", err);
				return EXIT_STARTUP;
			}
		}
		/* In short calls (librdkafka resumes the same initialization),
		 * renewing the lease between them: while the broker is away the
		 * lease stays ours instead of passing to a standby that would
		 * fight this initialization when the broker is back. */
		st = publisher_init(r->pub, init_ms);
		if (st == PUB_OK) {
			r->backoff_ms = 0;
			metrics_lock()->kafka_ok = true;
			metrics_unlock();
			break;
		}
		log_warning("%s", publisher_errstr(r->pub));
		{
			struct metrics *m = metrics_lock();
			m->kafka_ok = false;
			m->kafka_errors++;
			if (st == PUB_FENCED)
				m->fenced++;
			metrics_unlock();
		}
		metrics_set_error("%s", publisher_errstr(r->pub));
		if (st == PUB_FENCED) {
			log_error("producer fenced while initializing: another relay took over");
			return EXIT_FENCED;
		}
		if (st == PUB_FATAL)
			return EXIT_STARTUP;
		if ((ex = check_lease(r)) >= 0)
			return ex;
		/* No growing back-off: the call itself waited up to init_ms, and
		 * renewals must stay well inside the TTL (at most half of it). */
		pause_ms(init_ms / 2);
	}
	if (relay_stop_requested)
		return EXIT_OK;
	while (checkpoint_ensure_topic(publisher_handle(r->pub), r->cfg, NULL,
				       now_ms() + r->cfg->commit_timeout_ms, err, sizeof(err)) < 0 ||
	       (r->cfg->poison_policy == POISON_DEAD_LETTER &&
		kafka_topic_ensure(publisher_handle(r->pub), r->cfg->dead_letter_topic,
				   r->cfg->checkpoint_replication_factor, false, NULL,
				   now_ms() + r->cfg->commit_timeout_ms, err, sizeof(err)) < 0)) {
		log_warning("%s", err);
		back_off(r);
		if (relay_stop_requested)
			return EXIT_OK;
	}
	/* The lease may have lapsed while initialization waited for the broker
	 * (a pause, a long outage), and a relay that took over may have been
	 * fenced by it: nothing may be published unless the lease is still
	 * ours. */
	return check_lease(r);
}

/* Start-up reconciliation of the database position with Kafka's checkpoint
 * (DESIGN §3.3). Sets r->pos. Returns -1 to go on, else an exit code. */
static int reconcile(struct relay *r)
{
	struct position ck = {0}, db = {0};
	bool found;
	int ex = -1, st;

	if ((ex = read_checkpoint(r, &ck, &found)) >= 0)
		goto out;
	while ((st = outbox_position_get(r->ob, &db)) != OB_OK) {
		if ((ex = db_trouble(r, st, "could not read the database position")) >= 0)
			goto out;
	}
	ex = -1;
	if (found && ck.batch_seq > db.batch_seq) {
		log_warning("checkpoint in Kafka is at batch %" PRId64 ", the database at %" PRId64
			    ": bringing the database forward (the previous run stopped between "
			    "the Kafka commit and the database update)",
			    ck.batch_seq, db.batch_seq);
		if ((ex = db_advance(r, &ck)) >= 0)
			goto out;
		position_copy(&r->pos, &ck);
	} else if (found && ck.batch_seq == db.batch_seq) {
		if (!position_equal(&ck, &db)) {
			char *a = checkpoint_encode(&ck), *b = checkpoint_encode(&db);
			log_error("checkpoint and database disagree at the same batch: Kafka has "
				  "\"%s\", the database \"%s\"; refusing to guess",
				  a, b);
			free(a);
			free(b);
			ex = EXIT_POSITION;
			goto out;
		}
		position_copy(&r->pos, &db);
	} else if (!found && db.batch_seq == 0) {
		position_copy(&r->pos, &db); /* a new relay */
	} else {
		char detail[128];

		if (found)
			snprintf(detail, sizeof(detail), "the checkpoint in Kafka is at batch %" PRId64,
				 ck.batch_seq);
		else
			snprintf(detail, sizeof(detail), "there is no checkpoint in Kafka");
		if (r->cfg->on_database_ahead != DB_AHEAD_TRUST_DATABASE) {
			log_error("database position is at batch %" PRId64 " but %s: the checkpoint "
				  "topic \"%s\" was lost or truncated, or the relay name changed. "
				  "Refusing to guess; after checking, set relay.on_database_ahead = "
				  "\"trust-database\" to continue from the database position",
				  db.batch_seq, detail, r->cfg->checkpoint_topic);
			ex = EXIT_POSITION;
			goto out;
		}
		log_warning("database position is at batch %" PRId64 " but %s; continuing from "
			    "the database position (relay.on_database_ahead = trust-database)",
			    db.batch_seq, detail);
		position_copy(&r->pos, &db);
	}
	r->pos.generation = r->generation;
	log_info("position: batch %" PRId64 ", done %s, next %s, after_id %" PRId64,
		 r->pos.batch_seq, r->pos.done, r->pos.next ? r->pos.next : "-", r->pos.after_id);
out:
	position_clear(&ck);
	position_clear(&db);
	return ex;
}

/*
 * Append the rows after *work to b, page by page, until max_rows or
 * batch.max_bytes (*full set), or the end of work's window (opened here
 * when work has none; a finished window moves *work past it).
 */
static int read_pages(struct relay *r, struct batch *b, struct position *work, int max_rows,
		      bool *full)
{
	int st, n;

	*full = false;
	for (;;) {
		int rows_left = max_rows - (int)b->nrecs;
		int64_t bytes_left = r->cfg->batch_max_bytes - b->bytes;

		if (rows_left <= 0 || bytes_left <= 0) {
			*full = true;
			return OB_OK;
		}
		if (!work->next && (st = outbox_window_open(r->ob, &work->next)) != OB_OK)
			return st;
		if ((st = outbox_fetch_page(r->ob, work, rows_left, bytes_left, b, &n)) != OB_OK)
			return st;
		if (n == 0) {
			position_finish_window(work);
			return OB_OK;
		}
		work->after_id = b->recs[b->nrecs - 1].id;
	}
}

/*
 * Gather the next batch into r->batch and r->work: pages of the current
 * window, then later windows, until max_rows or max_bytes, or the outbox has
 * nothing more (waiting up to batch.max_wait_ms for more rows). Returns -1
 * when done (r->batch may be empty: nothing to send), else an exit code.
 */
static int fill_batch(struct relay *r)
{
	const struct config *cfg = r->cfg;
	int64_t start = now_ms();
	int st;
	int max_rows = cfg->batch_max_rows;

	if (r->row_limit > 0 && r->row_limit < max_rows)
		max_rows = r->row_limit;
	r->row_limit = 0;
	batch_reset(&r->batch);
	position_copy(&r->work, &r->pos);
	for (;;) {
		st = read_pages(r, &r->batch, &r->work, max_rows, &r->batch_full);
		if (st != OB_OK)
			goto trouble;
		if (r->batch_full)
			return -1;
		if (r->batch.nrecs == 0) {
			/* Nothing new: keep the finished window in memory only. */
			position_copy(&r->pos, &r->work);
			return -1;
		}
		if (now_ms() - start >= cfg->batch_max_wait_ms)
			return -1;
		bool notified;
		int wait = cfg->batch_max_wait_ms - (int)(now_ms() - start);
		st = outbox_wait(r->ob, wait < cfg->poll_interval_ms ? wait : cfg->poll_interval_ms,
				 &notified);
		if (st != OB_OK)
			goto trouble;
	}
trouble:
	/* Nothing was sent: drop the partial batch and start over. */
	batch_reset(&r->batch);
	{
		int ex = db_trouble(r, st, "could not read the outbox");
		return ex >= 0 ? ex : -1;
	}
}

/*
 * Called between producing r->batch and committing it, after a full batch
 * (a backlog): read the next batch from where this one ends, so that
 * PostgreSQL works while the records travel to Kafka. The rows are only
 * read: a re-send of this batch keeps them, a refill drops them (drop_ahead)
 * and a failure here loses nothing (fill_batch reads them again). Not in
 * steady state: rows read now would wait for this commit, and rows committed
 * meanwhile for one more cycle.
 */
static void read_ahead(struct relay *r)
{
	int st;

	if (r->have_ahead || !r->batch_full)
		return;
	batch_reset(&r->ahead);
	position_copy(&r->ahead_work, &r->work);
	st = read_pages(r, &r->ahead, &r->ahead_work, r->cfg->batch_max_rows, &r->ahead_full);
	if (st != OB_OK) {
		log_debug("reading the next batch ahead failed (read again later): %s",
			  outbox_errstr(r->ob));
		batch_reset(&r->ahead);
		return;
	}
	r->have_ahead = r->ahead.nrecs > 0;
	if (!r->have_ahead)
		return;
	metrics_lock()->batches_read_ahead++;
	metrics_unlock();
	log_debug("read %zu rows ahead (after_id %" PRId64 ") while batch %" PRId64 " travels",
		  r->ahead.nrecs, r->work.after_id, r->work.batch_seq);
}

static void drop_ahead(struct relay *r)
{
	batch_reset(&r->ahead);
	r->have_ahead = false;
}

/* The next batch: the one read ahead, if any (r->pos is then where it was
 * read from), else fill_batch. */
static int next_batch(struct relay *r)
{
	struct batch tmp;

	if (!r->have_ahead)
		return fill_batch(r);
	tmp = r->batch;
	r->batch = r->ahead;
	r->ahead = tmp;
	batch_reset(&r->ahead);
	position_copy(&r->work, &r->ahead_work);
	r->batch_full = r->ahead_full;
	r->have_ahead = false;
	return -1;
}

/* After an unknown outcome: a new producer settles the transaction, and
 * the checkpoint says whether it committed. Sets *committed. Returns -1 to
 * go on, else an exit code. */
static int recover_outcome(struct relay *r, bool *committed)
{
	struct position ck = {0};
	bool found;
	int ex;

	if ((ex = producer_start(r)) >= 0)
		return ex;
	if ((ex = read_checkpoint(r, &ck, &found)) >= 0)
		return ex;
	*committed = false;
	if (found && ck.batch_seq == r->work.batch_seq && position_equal(&ck, &r->work)) {
		*committed = true;
		log_info("transaction of batch %" PRId64 " turned out committed", ck.batch_seq);
	} else if ((!found && r->pos.batch_seq == 0) ||
		   (found && ck.batch_seq == r->pos.batch_seq)) {
		log_info("transaction of batch %" PRId64 " turned out not committed: sending again",
			 r->work.batch_seq);
	} else if ((ex = check_lease(r)) < 0) {
		/* Still ours, yet someone else wrote the checkpoint. */
		log_error("checkpoint in Kafka is at batch %" PRId64 ", expected %" PRId64
			  " or %" PRId64 ": another writer used relay name \"%s\"",
			  found ? ck.batch_seq : 0, r->pos.batch_seq, r->work.batch_seq,
			  r->cfg->relay_name);
		ex = EXIT_POSITION;
	}
	position_clear(&ck);
	return ex;
}

/*
 * Row i of the batch can never be published. dead-letter: it goes to the
 * dead-letter topic in this same transaction. stop: publish the rows before
 * it (REFILL with a row limit), or, when it is first, halt: publish nothing
 * and look again every poison_retry_ms (an operator may fix or delete it).
 * Returns -1 to publish the batch as it now is, or REFILL.
 */
static int poison(struct relay *r, size_t i, const char *why)
{
	struct record *rec = &r->batch.recs[i];

	if (r->cfg->poison_policy == POISON_DEAD_LETTER) {
		log_warning("outbox row %" PRId64 " (topic \"%s\") cannot be published: %s; sending it "
			    "to dead-letter topic \"%s\"",
			    rec->id, rec->topic, why, r->cfg->dead_letter_topic);
		free(rec->dead_reason);
		rec->dead_reason = xstrdup(why);
		return -1;
	}
	if (i > 0) {
		r->row_limit = (int)i;
		return REFILL;
	}
	if (r->halted_id != rec->id)
		log_error("stopped on outbox row %" PRId64 " (topic \"%s\"): %s. Nothing after it is "
			  "published until the row is fixed or deleted (DELETE FROM outbox.event "
			  "WHERE id = %" PRId64 "); looking again every %d ms",
			  rec->id, rec->topic, why, rec->id, r->cfg->poison_retry_ms);
	r->halted_id = rec->id;
	r->halted_until = now_ms() + r->cfg->poison_retry_ms;
	{
		struct metrics *m = metrics_lock();
		m->poison_id = rec->id;
		snprintf(m->poison_reason, sizeof(m->poison_reason), "topic \"%s\": %s", rec->topic,
			 why);
		metrics_unlock();
	}
	return REFILL;
}

/* Check every row before the transaction. Returns -1 or REFILL. */
static int vet_batch(struct relay *r)
{
	char why[512];

	for (size_t i = 0; i < r->batch.nrecs; i++) {
		if (r->batch.recs[i].dead_reason)
			continue;
		if (publisher_check(r->pub, &r->batch, i, why, sizeof(why)) == 1 &&
		    poison(r, i, why) == REFILL)
			return REFILL;
	}
	if (r->halted_id) {
		log_info("outbox row %" PRId64 " no longer blocks publishing", r->halted_id);
		r->halted_id = 0;
		metrics_lock()->poison_id = 0;
		metrics_unlock();
	}
	return -1;
}

/* A committed batch, in the metrics. */
static void count_commit(struct relay *r, int64_t took_ms)
{
	struct metrics *m = metrics_lock();
	uint64_t dead = 0;

	for (size_t i = 0; i < r->batch.nrecs; i++)
		dead += r->batch.recs[i].dead_reason != NULL;
	m->kafka_ok = true;
	m->rows_published += r->batch.nrecs - dead;
	m->dead_letters += dead;
	m->batches_committed++;
	m->last_commit_time = unix_now();
	histogram_observe(&m->commit_seconds, commit_bucket_bounds, COMMIT_BUCKETS,
			  (double)took_ms / 1000.0);
	histogram_observe(&m->batch_rows, batch_bucket_bounds, BATCH_BUCKETS,
			  (double)r->batch.nrecs);
	metrics_unlock();
}

/* Publish r->batch as one transaction until it is committed. Returns -1
 * when committed, REFILL when the batch must be gathered again (poison
 * row), else an exit code. */
static int publish_batch(struct relay *r)
{
	char *value;
	int ex = -1;

	r->work.batch_seq = r->pos.batch_seq + 1;
	r->work.generation = r->generation;
	value = checkpoint_encode(&r->work);
	for (;;) {
		enum pub_status st;
		bool committed;
		int64_t t0;

		if (publisher_needs_recreate(r->pub) && (ex = producer_start(r)) >= 0)
			break;
		t0 = now_ms();
		st = publisher_produce(r->pub, &r->batch, value);
		if (st == PUB_OK) {
			read_ahead(r);
			st = publisher_commit(r->pub);
		}
		if (st == PUB_OK) {
			count_commit(r, now_ms() - t0);
			break;
		}
		{
			struct metrics *m = metrics_lock();
			m->kafka_errors++;
			if (st == PUB_RESEND)
				m->transactions_aborted++;
			if (st == PUB_UNKNOWN) {
				m->commit_outcomes_unknown++;
				m->kafka_ok = false;
			}
			if (st == PUB_FENCED)
				m->fenced++;
			metrics_unlock();
		}
		metrics_set_error("%s", publisher_errstr(r->pub));
		switch (st) {
		case PUB_RESEND:
			log_warning("transaction of batch %" PRId64 " aborted (%s); sending again",
				    r->work.batch_seq, publisher_errstr(r->pub));
			back_off(r);
			continue;
		case PUB_UNKNOWN:
			log_warning("outcome of batch %" PRId64 " unknown (%s); recreating the "
				    "producer to settle it",
				    r->work.batch_seq, publisher_errstr(r->pub));
			back_off(r);
			if ((ex = recover_outcome(r, &committed)) >= 0)
				goto out;
			if (committed) {
				count_commit(r, now_ms() - t0);
				goto out;
			}
			continue;
		case PUB_FENCED:
			log_error("%s: another relay took over transactional.id \"%s\"; stopping",
				  publisher_errstr(r->pub), r->cfg->relay_name);
			ex = EXIT_FENCED;
			goto out;
		case PUB_POISON: {
			size_t i = 0;
			while (i < r->batch.nrecs && r->batch.recs[i].id != publisher_poison_id(r->pub))
				i++;
			if (i == r->batch.nrecs || r->batch.recs[i].dead_reason) {
				/* a dead letter refused for good is no row's fault */
				log_error("%s%s", publisher_errstr(r->pub),
					  i == r->batch.nrecs ? " (the row is not in the batch)"
							      : " (as a dead letter)");
				ex = EXIT_STARTUP;
				goto out;
			}
			if ((ex = poison(r, i, publisher_errstr(r->pub))) == REFILL) {
				drop_ahead(r);
				goto out;
			}
			continue; /* the same batch, the row now a dead letter */
		}
		default:
			log_error("%s", publisher_errstr(r->pub));
			ex = EXIT_STARTUP;
			goto out;
		}
	}
out:
	r->backoff_ms = 0;
	free(value);
	return ex;
}

/* SIGHUP: a valid file replaces the reloadable options; an invalid one
 * changes nothing. */
static void reload(struct relay *r)
{
	char err[1024];

	relay_reload_requested = 0;
	log_info("reloading configuration from %s", r->cfg->path);
	if (config_reload(r->cfg, err, sizeof(err)) < 0) {
		log_error("could not reload configuration, keeping the running one: %s", err);
		return;
	}
	log_setup((enum log_level)r->cfg->log_level, (enum log_format)r->cfg->log_format);
}

/* With postgres.retention_ms, delete kept rows past their retention in
 * bounded steps: after every batch (twice a batch's rows, so the purge keeps
 * pace with publishing) and while idle. */
static void purge_kept(struct relay *r)
{
	int64_t deleted;
	int max_rows = r->cfg->batch_max_rows < 5000 ? 10000 : 2 * r->cfg->batch_max_rows;

	if (r->cfg->retention_ms <= 0)
		return;
	if (outbox_purge(r->ob, max_rows, &deleted) != OB_OK)
		log_warning("could not purge relayed rows: %s", outbox_errstr(r->ob));
	else if (deleted)
		log_debug("purged %" PRId64 " relayed rows past retention", deleted);
}

/* While idle or stopped on a poison row, every few seconds: purge rows past
 * their retention, the lag, and whether Kafka still answers (a transaction
 * would say so when busy). */
static void probe(struct relay *r)
{
	int64_t rows, age;
	bool kafka_ok;

	if (now_ms() - r->last_probe_ms < 3000)
		return;
	r->last_probe_ms = now_ms();
	purge_kept(r);
	kafka_ok = publisher_ping(r->pub) == 0;
	if (outbox_lag(r->ob, &rows, &age) == OB_OK) {
		struct metrics *m = metrics_lock();
		m->lag_known = true;
		m->lag_rows = rows;
		m->lag_oldest_ms = age;
		m->kafka_ok = kafka_ok;
		metrics_unlock();
	} else {
		struct metrics *m = metrics_lock();
		m->kafka_ok = kafka_ok;
		m->db_ok = outbox_connected(r->ob);
		metrics_unlock();
	}
}

static int loop(struct relay *r)
{
	int ex;

	while (!relay_stop_requested) {
		metrics_heartbeat();
		if (relay_reload_requested)
			reload(r);
		if ((ex = renew_lease(r)) >= 0)
			return ex;
		if (r->halted_id && now_ms() < r->halted_until) {
			/* stopped on a poison row: keep the lease, publish nothing */
			int64_t left = r->halted_until - now_ms();
			probe(r);
			pause_ms((int)(left < r->cfg->lease_ttl_ms / 3 ? left : r->cfg->lease_ttl_ms / 3));
			continue;
		}
		if ((ex = next_batch(r)) >= 0)
			return ex;
		if (r->batch.nrecs == 0) {
			bool notified;

			probe(r);
			if (outbox_wait(r->ob, r->cfg->poll_interval_ms, &notified) != OB_OK &&
			    (ex = db_trouble(r, OB_TRANSIENT, "waiting for outbox rows")) >= 0)
				return ex;
			continue;
		}
		crash_point("after-fetch");
		if (vet_batch(r) == REFILL)
			continue;
		ex = publish_batch(r);
		if (ex == REFILL)
			continue;
		if (ex >= 0)
			return ex;
		crash_point("after-commit");
		if ((ex = db_advance(r, &r->work)) >= 0)
			return ex;
		crash_point("after-advance");
		log_debug("batch %" PRId64 ": %zu rows committed", r->work.batch_seq,
			  r->batch.nrecs);
		{
			struct metrics *m = metrics_lock();
			m->batch_seq = r->work.batch_seq;
			m->after_id = r->work.after_id;
			metrics_unlock();
		}
		position_copy(&r->pos, &r->work);
		batch_reset(&r->batch);
		purge_kept(r);
		/* A commit that needed retries leaves the producer suspect. */
		if (publisher_needs_recreate(r->pub) && (ex = producer_start(r)) >= 0)
			return ex;
	}
	return EXIT_OK;
}

int relay_run(struct config *cfg)
{
	struct relay r = {.cfg = cfg};
	int version = 0, ex, st;

	make_owner(&r);
	{
		struct metrics *m = metrics_lock();
		snprintf(m->relay_name, sizeof(m->relay_name), "%s", cfg->relay_name);
		snprintf(m->owner, sizeof(m->owner), "%s", r.owner);
		m->role = ROLE_STARTING;
		m->started_time = unix_now();
		m->heartbeat_ms = now_ms();
		metrics_unlock();
	}
	if (!db_connect(&r))
		return EXIT_OK;
	while ((st = outbox_schema_version(r.ob, &version)) != OB_OK) {
		if (st != OB_TRANSIENT) {
			log_error("could not read the outbox schema version (is sql/install.sql "
				  "installed?): %s",
				  outbox_errstr(r.ob));
			ex = EXIT_STARTUP;
			goto out;
		}
		if ((ex = db_trouble(&r, st, "could not read the outbox schema version")) >= 0)
			goto out;
	}
	if (version != OUTBOX_SCHEMA_VERSION) {
		log_error("outbox schema version is %d, this relay needs %d: run sql/install.sql",
			  version, OUTBOX_SCHEMA_VERSION);
		ex = EXIT_STARTUP;
		goto out;
	}

	/* Order matters (DESIGN §3): the lease bumps our generation first, so
	 * an older relay can no longer advance the database; init_transactions
	 * then fences its producer and settles its transaction; only then is
	 * the checkpoint final and safe to reconcile with. */
	if ((ex = take_lease(&r)) >= 0)
		goto out;
	if ((ex = producer_start(&r)) >= 0)
		goto out;
	if ((ex = reconcile(&r)) >= 0)
		goto out;
	log_info("relay \"%s\" publishing", cfg->relay_name);
	sd_notify_state("READY=1\nSTATUS=publishing");
	{
		struct metrics *m = metrics_lock();
		m->role = ROLE_LEADER;
		m->batch_seq = r.pos.batch_seq;
		m->after_id = r.pos.after_id;
		metrics_unlock();
	}
	ex = loop(&r);
out:
	metrics_lock()->role = ROLE_STOPPING;
	metrics_unlock();
	sd_notify_state("STOPPING=1");
	if (r.generation && outbox_connected(r.ob) && ex == EXIT_OK) {
		/* Let a standby take over at once instead of after the TTL. */
		if (outbox_lease_release(r.ob, r.generation) != OB_OK)
			log_warning("could not release the lease: %s", outbox_errstr(r.ob));
		else
			log_info("lease released");
	}
	publisher_free(r.pub);
	outbox_free(r.ob);
	batch_free(&r.batch);
	batch_free(&r.ahead);
	position_clear(&r.ahead_work);
	position_clear(&r.pos);
	position_clear(&r.work);
	return ex;
}
