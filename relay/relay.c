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
#include "topics.h"
#include "version.h"
#include "wait.h"

volatile sig_atomic_t relay_stop_requested;
volatile sig_atomic_t relay_reload_requested;

struct relay {
	struct config *cfg;
	/* Every blocking step waits through it: relay_tick beats the
	 * heartbeat, renews the lease when due and says stop. */
	struct waiter w;
	bool in_tick;
	bool committing; /* a stop request waits for the commit to end */
	bool lease_lost; /* a renewal in a tick found the lease taken */
	int exit_code;   /* with STEP_EXIT */
	struct outbox *ob;
	struct publisher *pub;
	char owner[256];
	int64_t generation;
	int64_t last_renew_ms;
	int backoff_ms;
	/* The highest batch the database confirmed (reconcile, advance): a
	 * database that later stores less lost committed work (db_connect). */
	int64_t db_confirmed_seq;

	/* The last committed position: in Kafka's checkpoint and, once
	 * advanced, in the database. Window moves with no rows in them are
	 * made here only, and reach the copies with the next batch. */
	struct position pos;
	/* pos plus the rows gathered in batch: the next checkpoint. */
	struct position work;
	/* The position of the last checkpoint in Kafka (crash-safe: made so
	 * before its commit), where reading starts again after a crash. */
	struct position committed;
	/* Crash-safe window ends (docs/design.md): the server's life
	 * (struct db_mark) as the relay last looked or wrote; durable_xmax:
	 * windows whose xmax is at most this are crash-safe, a write of ours
	 * committed after them in the same life; life_changed: a look or a
	 * write saw another life, so the windows read since `committed` may
	 * count as completed ids that the server hands out again. */
	char db_life[64];
	uint64_t durable_xmax;
	bool life_changed;
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

	/* The transaction of r->batch takes rows that commit while it is open
	 * (stream_rows) unless a poison row's limit cut the batch. */
	bool limited;
	int64_t txn_start_ms;
	/* With batch.notify: holding the "relay awake" lock, which silences
	 * the writers' NOTIFY (sql/migrations/0003). */
	bool awake;

	int64_t last_probe_ms; /* Kafka reachability and the purge, while idle */
	bool cleanup_due;      /* advanced since the last cleanup (retention 0) */
	int64_t idle_since_ms; /* when the loop last found nothing (0: busy) */
	int64_t last_cleanup_ms;
	int64_t next_lag_ms;   /* the lag, every few seconds, busy or idle */
	int64_t last_lag_ms;
	int failed_attempts;   /* of the current batch, in a row */
	bool producer_started;
	bool topics_checked;   /* the broker has judged the topics.* settings */
	bool kafka_ever_ok;    /* a producer of this process initialized */
	bool db_ever_ok;       /* this process connected to PostgreSQL */
};

/*
 * What a step of the loop came to. Every step returns one of these; with
 * STEP_EXIT, r->exit_code says how the process ends (a stop request is
 * STEP_EXIT with EXIT_OK).
 */
enum step {
	STEP_OK,     /* done: go on */
	STEP_REFILL, /* gather the batch again (shorter, or after a halt),
		      * publishing nothing of the current one */
	STEP_EXIT,   /* leave the loop with r->exit_code */
};

static enum step step_exit(struct relay *r, int code)
{
	r->exit_code = code;
	return STEP_EXIT;
}

/* After a tick said stop: a lost lease ends the process as fenced, a stop
 * request cleanly. */
static enum step step_stopped(struct relay *r)
{
	if (r->lease_lost) {
		log_error("lease of relay \"%s\" lost: another relay took over (generation %" PRId64
			  " is stale); stopping",
			  r->cfg->relay_name, r->generation);
		return step_exit(r, EXIT_FENCED);
	}
	return step_exit(r, EXIT_OK);
}

/* A renewal found the lease taken by another relay. */
static void lease_gone(struct relay *r)
{
	struct metrics *m = metrics_lock();

	m->lease_held = false;
	m->fenced++;
	metrics_unlock();
	r->lease_lost = true;
}

/*
 * The waiter's tick (wait.h), between the slices of every blocking step:
 * beat the heartbeat, renew the lease when a third of its TTL has passed,
 * and say stop on a stop request or a lost lease. A renewal that fails for
 * a transient reason is tried again at the next tick; the lease check of
 * the loop decides when it keeps failing. Not re-entered from the renewal.
 */
static bool relay_tick(void *arg)
{
	struct relay *r = arg;
	bool held;

	metrics_heartbeat();
	/* A commit under way is finished, not abandoned, on a stop request
	 * (SIGTERM drains); it is bounded by the transaction timeout. */
	if ((relay_stop_requested && !r->committing) || r->lease_lost)
		return false;
	if (r->in_tick || !r->generation || !r->ob || !outbox_connected(r->ob) ||
	    now_ms() - r->last_renew_ms < r->cfg->lease_ttl_ms / 3)
		return true;
	r->in_tick = true;
	if (outbox_lease_renew(r->ob, r->generation, &held) == OB_OK) {
		if (held)
			r->last_renew_ms = now_ms();
		else
			lease_gone(r);
	} else {
		log_warning("could not renew the lease while waiting: %s", outbox_errstr(r->ob));
	}
	r->in_tick = false;
	return !r->lease_lost;
}

/* Sleep through the waiter: false when a stop or a lost lease cut it short. */
static bool pause_ms(struct relay *r, int ms)
{
	return wait_ms(&r->w, ms);
}

/* Back-off for transient failures: 100 ms doubling to 5 s, and never longer
 * than a third of the lease TTL. The lease is renewed while it waits. False
 * when a stop or a lost lease cut it short: the caller must not retry then
 * (a retry loop would spin). */
static bool back_off(struct relay *r)
{
	int most = r->cfg->lease_ttl_ms / 3 < 5000 ? r->cfg->lease_ttl_ms / 3 : 5000;

	r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : 100;
	if (r->backoff_ms > most)
		r->backoff_ms = most;
	return pause_ms(r, r->backoff_ms);
}

/* The lease owner: unique per process, so that two replicas sharing one
 * config (and so one relay.owner) can never both think they hold the lease;
 * relay.owner is a label put in front. */
static void make_owner(struct relay *r)
{
	char host[128] = "unknown";

	gethostname(host, sizeof(host) - 1);
	srand((unsigned)(time(NULL) ^ getpid()));
	snprintf(r->owner, sizeof(r->owner), "%s%s%s:%d:%04x", r->cfg->owner,
		 r->cfg->owner[0] ? "@" : "", host, (int)getpid(), rand() & 0xffff);
}

/* After a reconnect: true (and logged) when the database stores an older
 * batch than it had confirmed: it lost committed transactions (a failover to
 * a replica that missed them, a restore). Its transaction ids may count again
 * below the relay's position, so windows would skip new rows; the relay must
 * stop. Any error reading the position is left to the next call. */
static bool db_rewound(struct relay *r)
{
	struct position db = {0};
	bool rewound;

	if (r->db_confirmed_seq == 0 || outbox_position_get(r->ob, &db) != OB_OK)
		return false;
	rewound = db.batch_seq < r->db_confirmed_seq;
	if (rewound)
		log_error("the database lost committed work: it stores batch %" PRId64 " but had "
			  "confirmed batch %" PRId64 " before the connection was lost (a failover "
			  "to a replica that missed commits, or a restore); Kafka may hold events "
			  "it no longer has, and its transaction ids may be reused. Stopping; "
			  "follow \"OR003: transaction ids behind the position\" in docs/sql.md",
			  db.batch_seq, r->db_confirmed_seq);
	position_clear(&db);
	return rewound;
}

/* (Re)connect until it works: STEP_OK; STEP_EXIT on a stop request, or
 * with EXIT_STARTUP when no retry can help: a pooler in front of a relay
 * configured for a direct connection, or at start-up a server that refuses
 * the connection (TLS, credentials). */
static enum step db_connect(struct relay *r)
{
	char err[1024];

	while (!relay_stop_requested) {
		int st;

		outbox_free(r->ob);
		r->ob = outbox_connect(r->cfg, &st, err, sizeof(err));
		r->awake = false; /* a new session holds no lock */
		if (!r->ob && !r->db_ever_ok && outbox_connect_refused(err)) {
			/* At start-up a refusal is a configuration error (TLS,
			 * credentials); once connected, the same refusal
			 * (a certificate renewed on the server first) is waited
			 * out like a server that is away. */
			log_error("%s", err);
			metrics_set_error("%s", err);
			return step_exit(r, EXIT_STARTUP);
		}
		if (r->ob && (!r->cfg->notify || outbox_listen(r->ob) == OB_OK)) {
			r->backoff_ms = 0;
			r->db_ever_ok = true;
			metrics_lock()->db_ok = true;
			metrics_unlock();
			return db_rewound(r) ? step_exit(r, EXIT_POSITION) : STEP_OK;
		}
		if (!r->ob && st == OB_FAILED) {
			log_error("%s", err);
			metrics_set_error("%s", err);
			return step_exit(r, EXIT_STARTUP);
		}
		if (r->ob) {
			/* A hot standby refuses LISTEN ("cannot execute LISTEN
			 * during recovery"): connected, yet of no use. */
			snprintf(err, sizeof(err),
				 "could not listen for outbox notifications: %s (is postgres.conninfo "
				 "pointing at a read-only server, a standby?)",
				 outbox_errstr(r->ob));
			outbox_free(r->ob);
			r->ob = NULL;
		}
		log_warning("%s", err);
		{
			struct metrics *m = metrics_lock();
			m->db_ok = false;
			m->db_errors++;
			metrics_unlock();
		}
		metrics_set_error("%s", err);
		if (!back_off(r))
			break;
	}
	return step_stopped(r);
}

/* Handle a database error from any call: transient ones reconnect and back
 * off (STEP_OK: the caller retries), answers end the process (STEP_EXIT). A
 * stop or a lost lease during the back-off is STEP_EXIT too, so that no
 * retry loop spins once the waiter says stop. */
static enum step db_trouble(struct relay *r, int st, const char *what)
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
	case OB_READ_ONLY:
		/* A standby (or a read-only database): a failover may promote
		 * it, or the DNS name may move to the new primary; reconnect
		 * after a back-off, saying clearly why nothing moves. */
		metrics_set_blocked("%s", outbox_errstr(r->ob));
		/* fall through */
	case OB_TRANSIENT:
		log_warning("%s: %s", what, outbox_errstr(r->ob));
		if (st == OB_READ_ONLY) {
			outbox_free(r->ob);
			r->ob = NULL;
		}
		if (!back_off(r))
			return step_stopped(r);
		if (!r->ob || !outbox_connected(r->ob))
			return db_connect(r);
		return STEP_OK;
	case OB_FENCED:
		log_error("%s: %s", what, outbox_errstr(r->ob));
		return step_exit(r, EXIT_FENCED);
	case OB_REGRESSION:
	case OB_BACKWARDS:
		log_error("%s: %s", what, outbox_errstr(r->ob));
		return step_exit(r, EXIT_POSITION);
	default:
		log_error("%s: %s", what, outbox_errstr(r->ob));
		return step_exit(r, EXIT_STARTUP);
	}
}

/* SIGHUP: a valid file replaces the reloadable options; an invalid one
 * changes nothing. A leader and a standby alike. */
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
	r->w.slice_ms = r->cfg->lease_ttl_ms / 6;
}

/* Tell the database the relay's own topics (checkpoint, dead-letter), so
 * that it refuses outbox rows aimed at them (OR006): such a row would be
 * published by our own producer into the partition our checkpoint read
 * trusts. After taking the lease and after a reload. */
static enum step reserve_topics(struct relay *r)
{
	const char *topics[2] = {r->cfg->checkpoint_topic, r->cfg->dead_letter_topic};
	int n = r->cfg->dead_letter_topic[0] ? 2 : 1, st;

	while ((st = outbox_reserve_topics(r->ob, r->generation, topics, n)) != OB_OK) {
		if (db_trouble(r, st, "could not reserve the relay's topics") == STEP_EXIT)
			return STEP_EXIT;
	}
	return STEP_OK;
}

/* Take the lease, waiting as a standby while another relay holds it. */
static enum step take_lease(struct relay *r)
{
	struct lease lease;
	int64_t last_log = 0;

	while (!relay_stop_requested) {
		int st;

		if (relay_reload_requested)
			reload(r);
		st = outbox_lease_acquire(r->ob, r->owner, &lease);
		if (st == OB_OTHER_NAME) {
			log_error("refusing to start: %s", outbox_errstr(r->ob));
			return step_exit(r, EXIT_STARTUP);
		}
		if (st != OB_OK) {
			if (db_trouble(r, st, "could not take the lease") == STEP_EXIT)
				return STEP_EXIT;
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
			return reserve_topics(r);
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
		if (!pause_ms(r, wait < 50 ? 50 : wait > r->cfg->lease_ttl_ms / 2 ? r->cfg->lease_ttl_ms / 2 : wait))
			break;
	}
	return step_exit(r, EXIT_OK);
}

/* Renew the lease now: STEP_OK while it is ours. Also the check before
 * acting on Kafka after a pause of unknown length. */
static enum step check_lease(struct relay *r)
{
	bool held;
	int st;

	if (r->lease_lost)
		return step_stopped(r);
	for (;;) {
		st = outbox_lease_renew(r->ob, r->generation, &held);
		if (st == OB_OK)
			break;
		if (db_trouble(r, st, "could not renew the lease") == STEP_EXIT)
			return STEP_EXIT;
	}
	if (!held) {
		lease_gone(r);
		return step_stopped(r);
	}
	r->last_renew_ms = now_ms();
	return STEP_OK;
}

/* Renew the lease every third of its TTL. */
static enum step renew_lease(struct relay *r)
{
	if (!r->lease_lost && now_ms() - r->last_renew_ms < r->cfg->lease_ttl_ms / 3)
		return STEP_OK;
	return check_lease(r);
}

/* A look or a write of ours saw the server's life `life`: note a change
 * (read_again handles it). */
static void see_life(struct relay *r, const char *life)
{
	if (r->db_life[0] && strcmp(r->db_life, life) != 0 && !r->life_changed) {
		log_warning("the database restarted after a crash, or another server took over, "
			    "since the relay last looked (WAL statistics reset at %s, before at %s): "
			    "transaction ids that the windows read since batch %" PRId64
			    " count as completed may be handed out again; reading from there again",
			    life, r->db_life, r->committed.batch_seq);
		r->life_changed = true;
		r->durable_xmax = 0;
		metrics_lock()->db_restarts_seen++;
		metrics_unlock();
	}
	snprintf(r->db_life, sizeof(r->db_life), "%s", life);
}

/* A write of ours committed (flushed): the windows taken before it in the
 * same life are crash-safe (struct db_mark). */
static void wrote(struct relay *r, const struct db_mark *mark)
{
	see_life(r, mark->life);
	if (!r->life_changed && mark->xid + 1 > r->durable_xmax)
		r->durable_xmax = mark->xid + 1;
}

static void drop_ahead(struct relay *r);

/* After a change of the server's life: forget the windows read since the
 * last checkpoint and read from it again. */
static void read_again(struct relay *r)
{
	position_copy(&r->pos, &r->committed);
	drop_ahead(r);
	r->life_changed = false;
}

/* Advance the database to pos; retried through reconnects. A reply lost
 * after the server committed is answered "already applied" by the retry
 * (outbox.advance is idempotent). A stop request does not end the retries
 * at once: the Kafka transaction is committed and the copy should follow;
 * after a stop they end at the commit timeout (a restart repairs it). */
static enum step db_advance(struct relay *r, const struct position *pos)
{
	int64_t truncated, give_up = 0;
	struct db_mark mark;

	for (;;) {
		int st = outbox_advance(r->ob, r->generation, pos, &truncated, NULL, &mark);
		if (st == OB_OK)
			break;
		if (db_trouble(r, st, "could not advance the database position") == STEP_EXIT) {
			if (r->exit_code != EXIT_OK || r->lease_lost)
				return STEP_EXIT;
			/* stopping: keep trying for a while, sleeping plainly */
			if (!give_up)
				give_up = now_ms() + r->cfg->commit_timeout_ms;
			if (now_ms() > give_up)
				return STEP_EXIT;
			wait_ms(NULL, 200);
			if (!outbox_connected(r->ob)) {
				char err[1024];
				outbox_free(r->ob);
				r->ob = outbox_connect(r->cfg, NULL, err, sizeof(err));
				if (!r->ob)
					log_warning("%s", err);
			}
			if (!r->ob)
				return STEP_EXIT;
		}
	}
	wrote(r, &mark);
	if (pos->batch_seq > r->db_confirmed_seq)
		r->db_confirmed_seq = pos->batch_seq;
	log_debug("advanced to batch %" PRId64 " (after_id %" PRId64 "), truncated %" PRId64
		  " partitions",
		  pos->batch_seq, pos->after_id, truncated);
	r->cleanup_due = r->cfg->retention_ms <= 0;
	return STEP_OK;
}

/* A checkpoint read waits behind another producer's transaction: /readyz
 * says so while it lasts. */
static void checkpoint_held(void *arg, const char *why)
{
	(void)arg;
	if (why)
		metrics_set_blocked("%s", why);
	else
		metrics_clear_blocked();
}

/* Read the checkpoint through retries. */
static enum step read_checkpoint(struct relay *r, struct position *ck, bool *found)
{
	char err[1024];

	static const struct checkpoint_watch watch = {checkpoint_held, NULL};

	for (;;) {
		if (checkpoint_read_last(r->cfg, &r->w, now_ms() + checkpoint_read_budget_ms(r->cfg),
					 &watch, ck, found, err, sizeof(err)) == 0)
			return STEP_OK;
		if (!wait_tick(&r->w))
			return step_stopped(r);
		log_warning("%s", err);
		if (!back_off(r))
			return step_stopped(r);
	}
}

/*
 * topics.create: once per process, have the broker judge the topics.*
 * settings (topics_check_settings), so that a value it refuses (a
 * replication factor above the broker count, a bad topics.config value)
 * stops the relay at start rather than at the first new topic, maybe days
 * later.
 */
static enum step check_topic_settings(struct relay *r)
{
	char why[1024];

	switch (topics_check_settings(publisher_handle(r->pub), r->cfg, &r->w,
				      now_ms() + r->cfg->commit_timeout_ms, why, sizeof(why))) {
	case TOPIC_CREATED:
	case TOPIC_EXISTS:
		log_debug("the broker accepts the topics.* settings");
		break;
	case TOPIC_BAD_SETTINGS:
		log_error("%s: the broker refuses topics.partitions, topics.replication_factor or "
			  "topics.config (asked at start, validate only): %s",
			  r->cfg->path, why);
		return step_exit(r, EXIT_STARTUP);
	case TOPIC_REFUSED:
	case TOPIC_LATER:
		if (!wait_tick(&r->w))
			return step_stopped(r);
		log_info("could not have the topics.* settings checked at start (%s); the first "
			 "topic created will tell",
			 why);
		break;
	}
	r->topics_checked = true;
	return STEP_OK;
}

/*
 * A new producer: init_transactions fences every older producer with our
 * transactional.id and settles its open transaction, so the checkpoint read
 * afterwards is final.
 */
static enum step producer_start(struct relay *r)
{
	char err[1024];
	int init_ms = r->cfg->lease_ttl_ms / 3 < r->cfg->commit_timeout_ms ? r->cfg->lease_ttl_ms / 3
									   : r->cfg->commit_timeout_ms;

	if (r->producer_started) {
		/* A relay that lost its lease must not start a producer: its
		 * init_transactions would fence the relay that took over. */
		if (check_lease(r) == STEP_EXIT)
			return STEP_EXIT;
		metrics_lock()->producer_recreations++;
		metrics_unlock();
	}
	publisher_free(r->pub);
	r->pub = NULL;
	r->producer_started = true;
	for (;;) {
		enum pub_status st;

		if (!r->pub) {
			r->pub = publisher_new(r->cfg, err, sizeof(err));
			if (!r->pub) {
				log_error("%s", err);
				return step_exit(r, EXIT_STARTUP);
			}
			publisher_set_waiter(r->pub, &r->w);
		}
		/* In short calls (librdkafka resumes the same initialization),
		 * renewing the lease between them: while the broker is away the
		 * lease stays ours instead of passing to a standby that would
		 * fight this initialization when the broker is back. */
		st = publisher_init(r->pub, init_ms);
		if (st == PUB_OK) {
			r->backoff_ms = 0;
			r->kafka_ever_ok = true;
			metrics_lock()->kafka_ok = true;
			metrics_unlock();
			break;
		}
		/* A broker that refuses our credentials or TLS at start-up is a
		 * configuration error; later (a password rotated on the broker
		 * side first, a certificate about to be replaced) it is waited
		 * out like a broker that is away. */
		if (st == PUB_FATAL || (st == PUB_REFUSED && !r->kafka_ever_ok))
			log_error("%s", publisher_errstr(r->pub));
		else
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
			return step_exit(r, EXIT_FENCED);
		}
		if (st == PUB_FATAL || (st == PUB_REFUSED && !r->kafka_ever_ok))
			return step_exit(r, EXIT_STARTUP);
		if (check_lease(r) == STEP_EXIT)
			return STEP_EXIT;
		/* No growing back-off: the call itself waited up to init_ms, and
		 * renewals must stay well inside the TTL (at most half of it). */
		if (!pause_ms(r, init_ms / 2))
			return step_stopped(r);
	}
	while (checkpoint_ensure_topic(publisher_handle(r->pub), r->cfg, &r->w,
				       now_ms() + r->cfg->commit_timeout_ms, err, sizeof(err)) < 0 ||
	       (r->cfg->dead_letter_topic[0] &&
		topics_ensure(publisher_handle(r->pub), r->cfg->dead_letter_topic,
			      r->cfg->checkpoint_replication_factor, false, &r->w,
			      now_ms() + r->cfg->commit_timeout_ms, err, sizeof(err)) < 0)) {
		log_warning("%s", err);
		if (!back_off(r))
			return step_stopped(r);
	}
	if (r->cfg->topics_create && !r->topics_checked && check_topic_settings(r) == STEP_EXIT)
		return STEP_EXIT;
	/* The lease may have lapsed while initialization waited for the broker
	 * (a pause, a long outage), and a relay that took over may have been
	 * fenced by it: nothing may be published unless the lease is still
	 * ours. */
	return check_lease(r);
}

/* The database is behind Kafka's checkpoint ck: STEP_OK when that is the
 * stop between a Kafka commit and its advance, which leaves the database
 * exactly one batch behind with that batch's rows still in the table. A
 * database that lost committed work (a failover to a replica that missed
 * commits, a restore) shows itself here even when its transaction ids have
 * passed the checkpoint's again: it is more than one batch behind (the relay
 * never commits a batch before the previous one is advanced), or the rows it
 * has in the batch's span are not the batch's (rows lost with the old
 * primary, or new rows whose transaction ids were reused and would be
 * called relayed). Then exit 5 (OR003), before anything is published or
 * deleted. A database at batch 0 (a relay row made anew after
 * relay_forget) is brought forward unchecked, as documented. */
static enum step check_behind(struct relay *r, const struct position *ck,
			      const struct position *db)
{
	const char *what;
	char detail[256];
	int64_t rows, idsum;
	int st;

	if (db->batch_seq == 0)
		return STEP_OK;
	if (ck->batch_seq > db->batch_seq + 1) {
		what = "more than one batch";
		snprintf(detail, sizeof(detail), "it stores batch %" PRId64 ", Kafka's checkpoint is "
			 "at batch %" PRId64, db->batch_seq, ck->batch_seq);
	} else if (!ck->has_digest) {
		return STEP_OK; /* written by a relay before the digest */
	} else {
		while ((st = outbox_span_digest(r->ob, db, ck, &rows, &idsum)) != OB_OK) {
			enum step s = db_trouble(r, st, "could not read the rows of the last batch");

			if (s != STEP_OK)
				return s;
		}
		if (rows == ck->batch_rows && idsum == ck->batch_idsum)
			return STEP_OK;
		what = "other rows in the last batch's span";
		snprintf(detail, sizeof(detail), "batch %" PRId64 " held %" PRId64 " rows (id sum %"
			 PRId64 "), the database has %" PRId64 " rows (id sum %" PRId64 ") in its span",
			 ck->batch_seq, ck->batch_rows, ck->batch_idsum, rows, idsum);
	}
	log_error("the database lost committed work: %s behind Kafka (%s). A failover to a "
		  "replica that missed commits, or a restore (or rows of that span deleted by "
		  "hand): Kafka may hold events the database no longer has, and its transaction "
		  "ids may be reused. Stopping; follow \"OR003: transaction ids behind the "
		  "position\" in docs/sql.md",
		  what, detail);
	metrics_set_error("the database lost committed work (OR003)");
	return step_exit(r, EXIT_POSITION);
}

/* Start-up reconciliation of the database position with Kafka's checkpoint
 * (docs/design.md, "Exactly-once handoff"). Sets r->pos. */
static enum step reconcile(struct relay *r)
{
	struct position ck = {0}, db = {0};
	bool found;
	enum step s;
	int st;

	if ((s = read_checkpoint(r, &ck, &found)) != STEP_OK)
		goto out;
	while ((st = outbox_position_get(r->ob, &db)) != OB_OK) {
		if ((s = db_trouble(r, st, "could not read the database position")) != STEP_OK)
			goto out;
	}
	if (found && ck.batch_seq > db.batch_seq) {
		if ((s = check_behind(r, &ck, &db)) != STEP_OK)
			goto out;
		log_warning("checkpoint in Kafka is at batch %" PRId64 ", the database at %" PRId64
			    ": bringing the database forward (the previous run stopped between "
			    "the Kafka commit and the database update)",
			    ck.batch_seq, db.batch_seq);
		if ((s = db_advance(r, &ck)) != STEP_OK)
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
			s = step_exit(r, EXIT_POSITION);
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
			s = step_exit(r, EXIT_POSITION);
			goto out;
		}
		log_warning("database position is at batch %" PRId64 " but %s; continuing from "
			    "the database position (relay.on_database_ahead = trust-database)",
			    db.batch_seq, detail);
		position_copy(&r->pos, &db);
	}
	s = STEP_OK;
	r->pos.generation = r->generation;
	position_copy(&r->committed, &r->pos);
	if (r->pos.batch_seq > r->db_confirmed_seq)
		r->db_confirmed_seq = r->pos.batch_seq;
	log_info("position: batch %" PRId64 ", done %s, next %s, after_id %" PRId64,
		 r->pos.batch_seq, r->pos.done, r->pos.next ? r->pos.next : "-", r->pos.after_id);
out:
	position_clear(&ck);
	position_clear(&db);
	return s;
}

/*
 * Append the rows after *work to b, page by page, until max_rows or
 * batch.max_bytes (*full set), or the end of work's window (opened here
 * when work has none; a finished window moves *work past it). Returns an
 * ob_status.
 */
static int read_pages(struct relay *r, struct batch *b, struct position *work, int max_rows,
		      bool *full)
{
	int st, n;
	bool window_end;
	char life[64];

	*full = false;
	for (;;) {
		int rows_left = max_rows - (int)b->nrecs;
		int64_t bytes_left = r->cfg->batch_max_bytes - b->bytes;

		if (rows_left <= 0 || bytes_left <= 0) {
			*full = true;
			return OB_OK;
		}
		if (!work->next) {
			/* A new window and its first page: one round trip. */
			life[0] = '\0';
			st = outbox_look(r->ob, work, rows_left, bytes_left, b, &n, &window_end, life,
					 sizeof(life));
			if (life[0])
				see_life(r, life);
			if (r->life_changed)
				/* The caller drops what it read and reads again
				 * from `committed`: whatever this look found, an
				 * end behind the position in memory included. */
				return OB_OK;
		} else
			st = outbox_fetch_page(r->ob, work, rows_left, bytes_left, b, &n,
					       &window_end);
		if (st != OB_OK)
			return st;
		if (window_end) {
			/* Nothing of the window follows (an empty page, or a
			 * short one the byte limit did not cut): no empty
			 * fetch to learn it. */
			position_finish_window(work);
			return OB_OK;
		}
		work->after_id = b->recs[b->nrecs - 1].id;
	}
}

/*
 * Gather the next batch into r->batch and r->work: pages of the current
 * window, then later windows, until max_rows or max_bytes, or the outbox has
 * nothing more. STEP_OK when done (r->batch may be empty: nothing to send).
 * Rows that commit later join the batch while its transaction is open
 * (stream_rows).
 */
static enum step fill_batch(struct relay *r)
{
	int st;
	int max_rows = r->cfg->batch_max_rows;

	r->limited = r->row_limit > 0 && r->row_limit < max_rows;
	if (r->limited)
		max_rows = r->row_limit;
	r->row_limit = 0;
	do {
		if (r->life_changed)
			read_again(r);
		batch_reset(&r->batch);
		position_copy(&r->work, &r->pos);
		st = read_pages(r, &r->batch, &r->work, max_rows, &r->batch_full);
	} while (st == OB_OK && r->life_changed);
	if (st != OB_OK) {
		/* Nothing was sent: drop the partial batch and start over. */
		batch_reset(&r->batch);
		return db_trouble(r, st, "could not read the outbox");
	}
	if (r->batch.nrecs == 0)
		/* Nothing new: keep the finished window in memory only. */
		position_copy(&r->pos, &r->work);
	return STEP_OK;
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
	if (st == OB_OK && r->life_changed) {
		batch_reset(&r->ahead); /* make_durable aborts the batch */
		return;
	}
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
 * read from), else fill_batch (which also reads again after a change of
 * the server's life, dropping what was read ahead). */
static enum step next_batch(struct relay *r)
{
	struct batch tmp;

	if (!r->have_ahead || r->life_changed)
		return fill_batch(r);
	tmp = r->batch;
	r->batch = r->ahead;
	r->ahead = tmp;
	batch_reset(&r->ahead);
	position_copy(&r->work, &r->ahead_work);
	r->batch_full = r->ahead_full;
	r->limited = false;
	r->have_ahead = false;
	return STEP_OK;
}

/* After an unknown outcome: a new producer settles the transaction, and
 * the checkpoint says whether it committed. Sets *committed. */
static enum step recover_outcome(struct relay *r, bool *committed)
{
	struct position ck = {0};
	bool found, behind;
	enum step s;

	*committed = false;
	if ((s = producer_start(r)) != STEP_OK)
		return s;
	if ((s = read_checkpoint(r, &ck, &found)) != STEP_OK)
		return s;
	/* With trust-database the relay may run on a checkpoint topic that
	 * lost its records (reconcile let it): a checkpoint missing or
	 * behind the database then means our transaction did not commit,
	 * since a commit would have written ours. */
	behind = r->cfg->on_database_ahead == DB_AHEAD_TRUST_DATABASE &&
		 (!found || ck.batch_seq < r->pos.batch_seq);
	if (found && ck.batch_seq == r->work.batch_seq && position_equal(&ck, &r->work)) {
		*committed = true;
		log_info("transaction of batch %" PRId64 " turned out committed", ck.batch_seq);
	} else if ((!found && r->pos.batch_seq == 0) ||
		   (found && ck.batch_seq == r->pos.batch_seq) || behind) {
		log_info("transaction of batch %" PRId64 " turned out not committed: sending again",
			 r->work.batch_seq);
	} else if ((s = check_lease(r)) == STEP_OK) {
		/* Still ours, yet someone else wrote the checkpoint. */
		log_error("checkpoint in Kafka is at batch %" PRId64 ", expected %" PRId64
			  " or %" PRId64 ": another writer used relay name \"%s\"",
			  found ? ck.batch_seq : 0, r->pos.batch_seq, r->work.batch_seq,
			  r->cfg->relay_name);
		s = step_exit(r, EXIT_POSITION);
	}
	position_clear(&ck);
	return s;
}

/*
 * Row i of the batch can never be published. dead-letter: it goes to the
 * dead-letter topic in this same transaction. stop: publish the rows before
 * it (STEP_REFILL with a row limit), or, when it is first, halt: publish
 * nothing and look again every poison_retry_ms (an operator may fix or
 * delete it). STEP_OK: publish the batch as it now is.
 */
static enum step poison(struct relay *r, size_t i, const char *why)
{
	struct record *rec = &r->batch.recs[i];

	if (r->cfg->poison_policy == POISON_DEAD_LETTER) {
		log_warning("outbox row %" PRId64 " (topic \"%s\") cannot be published: %s; sending it "
			    "to dead-letter topic \"%s\"",
			    rec->id, rec->topic, why, r->cfg->dead_letter_topic);
		free(rec->dead_reason);
		rec->dead_reason = xstrdup(why);
		return STEP_OK;
	}
	if (i > 0) {
		r->row_limit = (int)i;
		return STEP_REFILL;
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
	return STEP_REFILL;
}

/* Check every row before the transaction, creating missing topics with
 * topics.create: STEP_OK, STEP_REFILL or STEP_EXIT. A topic not created yet
 * (no answer, a transient error, not yet in the producer's metadata) is
 * waited for with back-off, row by row: it is not the row's fault. */
static enum step vet_batch(struct relay *r)
{
	char why[512];
	int64_t deadline = now_ms() + r->cfg->commit_timeout_ms;

	for (size_t i = 0; i < r->batch.nrecs;) {
		const struct record *rec = &r->batch.recs[i];

		if (rec->dead_reason) {
			i++;
			continue;
		}
		if (!wait_tick(&r->w))
			return step_stopped(r);
		switch (publisher_check(r->pub, &r->batch, i, deadline, true, why, sizeof(why))) {
		case CHECK_OK:
		case CHECK_UNSURE:
			break;
		case CHECK_POISON:
			if (poison(r, i, why) == STEP_REFILL)
				return STEP_REFILL;
			break;
		case CHECK_LATER:
			log_warning("outbox row %" PRId64 " waits for its topic \"%s\": %s; trying "
				    "again",
				    rec->id, rec->topic, why);
			metrics_set_blocked("waiting for topic \"%s\" of outbox row %" PRId64 ": %s",
					    rec->topic, rec->id, why);
			if (!back_off(r))
				return step_stopped(r);
			deadline = now_ms() + r->cfg->commit_timeout_ms;
			continue; /* the same row again */
		case CHECK_FATAL:
			log_error("outbox row %" PRId64 ": %s", rec->id, why);
			metrics_set_error("%s", why);
			return step_exit(r, EXIT_STARTUP);
		}
		i++;
	}
	if (r->halted_id) {
		log_info("outbox row %" PRId64 " no longer blocks publishing", r->halted_id);
		r->halted_id = 0;
		metrics_lock()->poison_id = 0;
		metrics_unlock();
	}
	return STEP_OK;
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
	m->blocked[0] = '\0';
	histogram_observe(&m->commit_seconds, commit_bucket_bounds, COMMIT_BUCKETS,
			  (double)took_ms / 1000.0);
	histogram_observe(&m->batch_rows, batch_bucket_bounds, BATCH_BUCKETS,
			  (double)r->batch.nrecs);
	metrics_unlock();
	r->failed_attempts = 0;
}

/* Attempts of one batch that fail in a row before /readyz says publishing
 * is not making progress (each one already waited out its back-off). */
#define STUCK_ATTEMPTS 3

/* A failed attempt of the current batch; after a few, /readyz says so. */
static void count_failure(struct relay *r)
{
	if (++r->failed_attempts >= STUCK_ATTEMPTS)
		metrics_set_blocked("not making progress: batch %" PRId64 " failed %d times in a "
				    "row: %s",
				    r->work.batch_seq, r->failed_attempts, publisher_errstr(r->pub));
}

/* With batch.notify: hold the "relay awake" lock while publishing, so that
 * writers do not NOTIFY, and release it before sleeping on LISTEN. A
 * failure costs only latency or the writers' NOTIFY, never a row: it is
 * logged, and the next transition asks again. */
static void set_awake(struct relay *r, bool awake)
{
	bool held;

	if (!r->cfg->notify || r->awake == awake)
		return;
	if (outbox_relay_awake(r->ob, awake, &held) != OB_OK) {
		log_debug("could not tell the database the relay is %s: %s",
			  awake ? "awake" : "going to sleep", outbox_errstr(r->ob));
		r->awake = false;
		return;
	}
	r->awake = held;
}

/* How often an open transaction looks for new rows: batch.look_interval_ms,
 * by default a tenth of batch.max_wait_ms; at least 1 ms, at most
 * batch.poll_interval_ms. */
static int stream_poll_ms(const struct config *cfg)
{
	int ms = cfg->look_interval_ms > 0 ? cfg->look_interval_ms : cfg->batch_max_wait_ms / 10;

	if (ms < 1)
		ms = 1;
	return ms < cfg->poll_interval_ms ? ms : cfg->poll_interval_ms;
}

/*
 * The transaction of r->batch is open and holds its rows: until
 * batch.max_wait_ms after it began, look for rows committed since, every
 * stream_poll_ms, and hand each page to the transaction at once. Those rows
 * reach the broker's log now and read_committed consumers at the commit,
 * with the rest of the batch. Ends early when the batch is full, when two
 * looks in a row find nothing (at a low rate a longer transaction only
 * delays the commit) and on a stop request (the commit then drains). A
 * database error ends it too: what was read goes, and the trouble shows
 * again at the next fill. A row that cannot be published under the stop
 * policy is left, with its page, to the next batch, whose vetting stops on
 * it, as is a row whose topic topics.create has yet to create: the next
 * batch's vetting creates it, before its transaction. Returns the
 * publisher's status (not PUB_OK: the transaction is over).
 */
static enum pub_status stream_rows(struct relay *r)
{
	const struct config *cfg = r->cfg;
	int64_t end = r->txn_start_ms + cfg->batch_max_wait_ms;
	struct position before = {0};
	enum pub_status st = PUB_OK;
	int empty = 0;

	while (!r->batch_full && empty < 2 && !relay_stop_requested) {
		int64_t left = end - now_ms(), deadline;
		size_t from = r->batch.nrecs;
		bool notified, refused = false;
		char why[512];

		if (left <= 0)
			break;
		set_awake(r, true); /* a writer may have held the lock before */
		if (outbox_wait(r->ob, &r->w, left < stream_poll_ms(cfg) ? (int)left
									 : stream_poll_ms(cfg),
				&notified) != OB_OK)
			break;
		position_copy(&before, &r->work);
		if (read_pages(r, &r->batch, &r->work, cfg->batch_max_rows, &r->batch_full) !=
		    OB_OK) {
			log_debug("reading rows for the open transaction failed: %s",
				  outbox_errstr(r->ob));
			refused = true; /* drop what this read added */
		} else if (r->life_changed) {
			refused = true; /* make_durable aborts the batch */
		}
		deadline = now_ms() + cfg->commit_timeout_ms;
		for (size_t i = from; i < r->batch.nrecs && !refused; i++) {
			enum pub_check ck;

			if (r->batch.recs[i].dead_reason)
				continue;
			/* No topic is created while the transaction is open: a
			 * row whose topic is missing waits for the next batch,
			 * whose vetting creates it. */
			ck = publisher_check(r->pub, &r->batch, i, deadline, false, why, sizeof(why));
			if (ck == CHECK_OK || ck == CHECK_UNSURE)
				continue;
			if (ck == CHECK_POISON && cfg->poison_policy == POISON_DEAD_LETTER) {
				(void)poison(r, i, why);
				continue;
			}
			log_debug("outbox row %" PRId64 " and the rows read with it wait for the "
				  "next batch: %s",
				  r->batch.recs[i].id, why);
			refused = true;
		}
		if (refused) {
			batch_truncate(&r->batch, from);
			position_copy(&r->work, &before);
			r->batch_full = false;
			break;
		}
		if (r->batch.nrecs == from) {
			empty++;
			continue;
		}
		empty = 0;
		if ((st = publisher_add(r->pub, &r->batch, from)) != PUB_OK)
			break;
	}
	position_clear(&before);
	return st;
}

/* The checkpoint of r->batch: the position after it, with the digest of
 * its rows that a later start compares with the database (check_behind). */
static char *encode_checkpoint(struct relay *r)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < r->batch.nrecs; i++)
		sum += (uint64_t)r->batch.recs[i].id;
	r->work.has_digest = true;
	r->work.batch_rows = (int64_t)r->batch.nrecs;
	r->work.batch_idsum = (int64_t)(sum & (uint64_t)INT64_MAX);
	return checkpoint_encode(&r->work);
}

/* Start the transaction of r->batch: the first attempt takes rows while it
 * is open (stream_rows), which fixes the batch; *value is then its
 * checkpoint. A re-send produces the fixed batch again. */
static enum pub_status produce_batch(struct relay *r, char **value)
{
	enum pub_status st;

	if (*value)
		return publisher_produce(r->pub, &r->batch, *value);
	if (r->cfg->batch_max_wait_ms <= 0 || r->batch_full || r->limited) {
		*value = encode_checkpoint(r);
		return publisher_produce(r->pub, &r->batch, *value);
	}
	r->txn_start_ms = now_ms();
	st = publisher_begin(r->pub, &r->batch);
	if (st == PUB_OK)
		st = stream_rows(r);
	*value = encode_checkpoint(r);
	return st == PUB_OK ? publisher_end(r->pub, *value) : st;
}

/* With topics.create, before a batch whose transaction failed is sent
 * again: check it again, so that a topic missing in the transaction (deleted
 * since it was looked up, or not looked up: the broker could not be asked)
 * is created, not failed on or waited for in every attempt. The batch stays
 * the same rows with the same checkpoint; only a row found poison changes it
 * (a dead letter, or a refill). */
static enum step vet_again(struct relay *r)
{
	enum step s;

	if (!r->cfg->topics_create)
		return STEP_OK;
	if ((s = vet_batch(r)) == STEP_REFILL)
		drop_ahead(r);
	return s;
}

/*
 * Between producing r->batch (and reading ahead) and its Kafka commit: make
 * its windows crash-safe (docs/design.md, "Crash-safe window ends"). A
 * window's end counts as completed the ids of transactions that rolled back
 * just before it, and a crash before their WAL was flushed lets PostgreSQL
 * hand those ids out again: rows committed under them would fall into a
 * window already in Kafka, lost or stopping the next start (OR003). A write
 * of ours committed after the windows, in the same server life, closes
 * that: its flushed commit keeps every lower id from being handed out again.
 * No write when one already did (durable_xmax: on a backlog, the advance of
 * the batch before came after this batch was read ahead). STEP_OK: commit;
 * STEP_REFILL: the transaction was aborted, read the batch again (the
 * server's life changed, or the write failed); STEP_EXIT.
 */
static enum step make_durable(struct relay *r)
{
	struct db_mark mark;
	enum pub_status pst;
	const char *why = "the server's life changed since the batch was read";
	bool held = true;
	int st = OB_OK;

	if (!r->life_changed && position_xmax(&r->work) <= r->durable_xmax)
		return STEP_OK;
	if (!r->life_changed) {
		st = outbox_mark(r->ob, r->generation, &held, &mark);
		if (st == OB_OK && held) {
			r->last_renew_ms = now_ms();
			metrics_lock()->window_marks++;
			metrics_unlock();
			log_debug("batch %" PRId64 ": windows up to xmax %" PRIu64 " made crash-safe by "
				  "transaction %" PRIu64,
				  r->work.batch_seq, position_xmax(&r->work), mark.xid);
			wrote(r, &mark);
			if (!r->life_changed && position_xmax(&r->work) <= r->durable_xmax)
				return STEP_OK;
			if (!r->life_changed) {
				/* An id below the windows' end in the same life:
				 * ids went backwards all the same. */
				log_warning("the database gave transaction id %" PRIu64 " after a "
					    "window that ends at %" PRIu64 ": reading again",
					    mark.xid, position_xmax(&r->work));
				r->life_changed = true;
			}
		} else {
			why = st != OB_OK ? "could not make the batch's windows crash-safe"
					  : "the lease was lost";
		}
	}
	pst = publisher_abort(r->pub, why);
	if (pst == PUB_FENCED) {
		log_error("%s: another relay took over transactional.id \"%s\"; stopping",
			  publisher_errstr(r->pub), r->cfg->relay_name);
		return step_exit(r, EXIT_FENCED);
	}
	if (pst != PUB_RESEND && pst != PUB_UNKNOWN) {
		log_error("%s", publisher_errstr(r->pub));
		return step_exit(r, EXIT_STARTUP);
	}
	metrics_lock()->transactions_aborted++;
	metrics_unlock();
	log_info("transaction of batch %" PRId64 " aborted before its commit: %s",
		 r->work.batch_seq, why);
	drop_ahead(r);
	if (r->life_changed) {
		read_again(r);
		return STEP_REFILL;
	}
	if (st != OB_OK)
		return db_trouble(r, st, "could not make the batch's windows crash-safe") ==
				       STEP_EXIT
			       ? STEP_EXIT
			       : STEP_REFILL;
	lease_gone(r);
	return step_stopped(r);
}

/* Publish r->batch as one transaction until it is committed: STEP_OK when
 * committed, STEP_REFILL when the batch must be gathered again (poison
 * row), STEP_EXIT. */
static enum step publish_batch(struct relay *r)
{
	char *value;
	enum step s = STEP_OK;

	r->work.batch_seq = r->pos.batch_seq + 1;
	r->work.generation = r->generation;
	value = NULL;
	for (;;) {
		enum pub_status st;
		bool committed;
		int64_t t0;

		if (publisher_needs_recreate(r->pub) && (s = producer_start(r)) != STEP_OK)
			break;
		st = produce_batch(r, &value);
		t0 = now_ms();
		if (st == PUB_OK) {
			read_ahead(r);
			if ((s = make_durable(r)) != STEP_OK)
				break;
			r->committing = true;
			st = publisher_commit(r->pub);
			r->committing = false;
		}
		if (st == PUB_OK) {
			count_commit(r, now_ms() - t0);
			break;
		}
		/* With topics.create, a row's topic found missing only in the
		 * transaction is no poison: aborted like a transient failure,
		 * the batch is checked again (vet_again creates the topic) and
		 * sent again. */
		if (st == PUB_POISON && publisher_poison_topic_missing(r->pub))
			st = PUB_RESEND;
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
			count_failure(r);
			/* Aborted: nothing of it is visible. A stop now leaves
			 * the batch to the next start. */
			if (!back_off(r)) {
				s = step_stopped(r);
				goto out;
			}
			if ((s = vet_again(r)) != STEP_OK)
				goto out;
			continue;
		case PUB_UNKNOWN:
			log_warning("outcome of batch %" PRId64 " unknown (%s); recreating the "
				    "producer to settle it",
				    r->work.batch_seq, publisher_errstr(r->pub));
			count_failure(r);
			/* A stop here leaves the outcome to the next start,
			 * whose init_transactions settles it. */
			if (!back_off(r)) {
				s = step_stopped(r);
				goto out;
			}
			if ((s = recover_outcome(r, &committed)) != STEP_OK)
				goto out;
			if (committed) {
				count_commit(r, now_ms() - t0);
				goto out;
			}
			if ((s = vet_again(r)) != STEP_OK)
				goto out;
			continue;
		case PUB_FENCED:
			log_error("%s: another relay took over transactional.id \"%s\"; stopping",
				  publisher_errstr(r->pub), r->cfg->relay_name);
			s = step_exit(r, EXIT_FENCED);
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
				s = step_exit(r, EXIT_STARTUP);
				goto out;
			}
			if ((s = poison(r, i, publisher_errstr(r->pub))) == STEP_REFILL) {
				drop_ahead(r);
				goto out;
			}
			continue; /* the same batch, the row now a dead letter */
		}
		default:
			log_error("%s", publisher_errstr(r->pub));
			s = step_exit(r, EXIT_STARTUP);
			goto out;
		}
	}
out:
	r->backoff_ms = 0;
	free(value);
	return s;
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

/* Once the loop has found nothing for a second after an advance, and every
 * few seconds while it stays idle: truncate what the advances left behind.
 * advance() never tries the block that still receives ids (its partition
 * would be truncated again and again under a steady trickle, and writers
 * arriving meanwhile wait for the relay's commit), nor a partition a
 * writer's open transaction or a reader held; cleanup() does, once the
 * rows stop. Cheap when there is nothing to do. */
static void cleanup(struct relay *r)
{
	int64_t truncated, now = now_ms();

	if (r->cfg->retention_ms > 0 || !r->idle_since_ms || now - r->idle_since_ms < 1000)
		return;
	if (!r->cleanup_due && now - r->last_cleanup_ms < 3000)
		return;
	r->cleanup_due = false;
	r->last_cleanup_ms = now;
	if (outbox_cleanup(r->ob, &truncated) != OB_OK)
		log_warning("could not clean up relayed rows: %s", outbox_errstr(r->ob));
	else if (truncated)
		log_debug("truncated %" PRId64 " fully relayed partitions of outbox.event", truncated);
}

/* Every few seconds, busy or idle: the lag (a backlog being drained must
 * show on /metrics and /readyz too). The count scans the backlog, so the
 * next one waits fifty times as long as this one took, and at least 3 s:
 * the lag never costs the drain more than a fiftieth of the database's
 * time (at every 3 s and twenty times, it cost a drain of 300k rows about
 * as much as reading them: bench/sql/RESULTS.md, "Issue 13"). */
static void measure_lag(struct relay *r)
{
	int64_t rows, age, t0 = now_ms(), took;

	if (t0 < r->next_lag_ms)
		return;
	if (outbox_lag(r->ob, &rows, &age) == OB_OK) {
		struct metrics *m = metrics_lock();
		m->lag_known = true;
		m->lag_rows = rows;
		m->lag_oldest_ms = age;
		metrics_unlock();
	} else {
		metrics_lock()->db_ok = outbox_connected(r->ob);
		metrics_unlock();
	}
	took = now_ms() - t0;
	r->last_lag_ms = t0;
	r->next_lag_ms = now_ms() + (took * 50 > 3000 ? took * 50 : 3000);
}

/* While idle or stopped on a poison row, every few seconds: purge rows past
 * their retention, and whether Kafka still answers (a transaction would say
 * so when busy). */
static void probe(struct relay *r)
{
	bool kafka_ok;

	if (now_ms() - r->last_probe_ms < 3000)
		return;
	r->last_probe_ms = now_ms();
	purge_kept(r);
	kafka_ok = publisher_ping(r->pub, 2000) == 0;
	metrics_lock()->kafka_ok = kafka_ok;
	metrics_unlock();
}

static enum step loop(struct relay *r)
{
	enum step s;

	while (!relay_stop_requested) {
		metrics_heartbeat();
		if (relay_reload_requested)
			reload(r);
		if (renew_lease(r) == STEP_EXIT)
			return STEP_EXIT;
		measure_lag(r);
		if (r->halted_id && now_ms() < r->halted_until) {
			/* stopped on a poison row: keep the lease, publish nothing */
			int64_t left = r->halted_until - now_ms();
			probe(r);
			if (!pause_ms(r, (int)(left < r->cfg->lease_ttl_ms / 3 ? left : r->cfg->lease_ttl_ms / 3)))
				return step_stopped(r);
			continue;
		}
		if (next_batch(r) == STEP_EXIT)
			return STEP_EXIT;
		if (r->batch.nrecs == 0) {
			bool notified;

			/* Drained: the lag is small again, so back to counting it
			 * every 3 s instead of waiting out the backlog's pace. */
			if (r->next_lag_ms > r->last_lag_ms + 3000)
				r->next_lag_ms = r->last_lag_ms + 3000;
			if (r->awake) {
				/* Release, then look once more before sleeping:
				 * a writer that found us awake did not notify. */
				set_awake(r, false);
				continue;
			}
			if (!r->idle_since_ms)
				r->idle_since_ms = now_ms();
			cleanup(r);
			probe(r);
			int st = outbox_wait(r->ob, &r->w, r->cfg->poll_interval_ms, &notified);

			if (st == OB_STOPPED)
				return step_stopped(r);
			if (st != OB_OK &&
			    db_trouble(r, OB_TRANSIENT, "waiting for outbox rows") == STEP_EXIT)
				return STEP_EXIT;
			continue;
		}
		r->idle_since_ms = 0;
		set_awake(r, true);
		crash_point("after-fetch");
		if ((s = vet_batch(r)) == STEP_REFILL)
			continue;
		if (s == STEP_EXIT)
			return s;
		if ((s = publish_batch(r)) == STEP_REFILL)
			continue;
		if (s == STEP_EXIT)
			return s;
		position_copy(&r->committed, &r->work);
		crash_point("after-commit");
		if (db_advance(r, &r->work) == STEP_EXIT)
			return STEP_EXIT;
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
		if (publisher_needs_recreate(r->pub) && producer_start(r) == STEP_EXIT)
			return STEP_EXIT;
	}
	return step_exit(r, EXIT_OK);
}

/* Runs the steps in their order; returns STEP_EXIT with r->exit_code. */
static enum step run_steps(struct relay *r)
{
	int version = 0, st;

	if (db_connect(r) == STEP_EXIT)
		return STEP_EXIT;
	while ((st = outbox_schema_version(r->ob, &version)) != OB_OK) {
		if (st != OB_TRANSIENT) {
			log_error("could not read the outbox schema version (is sql/install.sql "
				  "installed?): %s",
				  outbox_errstr(r->ob));
			return step_exit(r, EXIT_STARTUP);
		}
		if (db_trouble(r, st, "could not read the outbox schema version") == STEP_EXIT)
			return STEP_EXIT;
	}
	if (version != OUTBOX_SCHEMA_VERSION) {
		log_error("outbox schema version is %d, this relay needs %d: run sql/install.sql",
			  version, OUTBOX_SCHEMA_VERSION);
		return step_exit(r, EXIT_STARTUP);
	}

	/* Order matters (docs/design.md, "Exactly-once handoff"): the lease bumps our generation first, so
	 * an older relay can no longer advance the database; init_transactions
	 * then fences its producer and settles its transaction; only then is
	 * the checkpoint final and safe to reconcile with. */
	if (take_lease(r) == STEP_EXIT || producer_start(r) == STEP_EXIT ||
	    reconcile(r) == STEP_EXIT)
		return STEP_EXIT;
	log_info("relay \"%s\" publishing", r->cfg->relay_name);
	sd_notify_state("READY=1\nSTATUS=publishing");
	{
		struct metrics *m = metrics_lock();
		m->role = ROLE_LEADER;
		m->batch_seq = r->pos.batch_seq;
		m->after_id = r->pos.after_id;
		metrics_unlock();
	}
	return loop(r);
}

int relay_run(struct config *cfg)
{
	struct relay r = {.cfg = cfg};

	r.w.tick = relay_tick;
	r.w.arg = &r;
	/* Slices of a sixth of the TTL: a renewal due at a third is late by
	 * at most another sixth, well inside the TTL. */
	r.w.slice_ms = cfg->lease_ttl_ms / 6;
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
	run_steps(&r);
	metrics_lock()->role = ROLE_STOPPING;
	metrics_unlock();
	sd_notify_state("STOPPING=1");
	if (r.generation && !r.lease_lost && r.ob && outbox_connected(r.ob) &&
	    r.exit_code == EXIT_OK) {
		/* Let a standby take over at its next look instead of after the TTL. */
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
	position_clear(&r.committed);
	return r.exit_code;
}
