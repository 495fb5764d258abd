/* checkpoint.c: the position, its checkpoint-record form, the checkpoint
 * topic, and reading the last committed checkpoint back from Kafka. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "log.h"
#include "publisher.h"
#include "topics.h"
#include "wait.h"

/* Nothing relayed: every transaction id is >= 1, so none is visible in 1:1:. */
#define SNAPSHOT_NOTHING "1:1:"

void position_init(struct position *pos)
{
	memset(pos, 0, sizeof(*pos));
	pos->done = xstrdup(SNAPSHOT_NOTHING);
}

void position_clear(struct position *pos)
{
	free(pos->done);
	free(pos->next);
	memset(pos, 0, sizeof(*pos));
}

void position_copy(struct position *dst, const struct position *src)
{
	char *done = xstrdup(src->done), *next = xstrdup(src->next);

	position_clear(dst);
	*dst = *src;
	dst->done = done;
	dst->next = next;
}

static bool str_eq(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

bool position_equal(const struct position *a, const struct position *b)
{
	return a->batch_seq == b->batch_seq && a->after_id == b->after_id &&
	       str_eq(a->done, b->done) && str_eq(a->next, b->next);
}

void position_finish_window(struct position *pos)
{
	free(pos->done);
	pos->done = pos->next;
	pos->next = NULL;
	pos->after_id = 0;
}

/* Parse an unsigned decimal at *p; advances *p. */
static bool parse_u64(const char **p, uint64_t *v)
{
	const char *s = *p;
	uint64_t x = 0;

	if (!isdigit((unsigned char)*s))
		return false;
	for (; isdigit((unsigned char)*s); s++) {
		if (x > (UINT64_MAX - 9) / 10)
			return false;
		x = x * 10 + (uint64_t)(*s - '0');
	}
	*p = s;
	*v = x;
	return true;
}

bool snapshot_valid(const char *s)
{
	uint64_t xmin, xmax, xip, prev = 0;

	if (!s || !parse_u64(&s, &xmin) || *s++ != ':' || !parse_u64(&s, &xmax) || *s++ != ':')
		return false;
	if (xmin > xmax || xmin == 0)
		return false;
	while (*s) {
		if (!parse_u64(&s, &xip) || xip < xmin || xip >= xmax || xip <= prev)
			return false;
		prev = xip;
		if (*s == ',' && s[1] != '\0')
			s++;
		else if (*s != '\0')
			return false;
	}
	return true;
}

uint64_t snapshot_xmax(const char *snap)
{
	const char *colon = snap ? strchr(snap, ':') : NULL;

	return colon ? strtoull(colon + 1, NULL, 10) : 0;
}

uint64_t position_xmax(const struct position *pos)
{
	return snapshot_xmax(pos->next ? pos->next : pos->done);
}

char *checkpoint_encode(const struct position *pos)
{
	const char *next = pos->next ? pos->next : "-";
	size_t len = strlen(pos->done) + strlen(next) + 128;
	char *buf = xmalloc(len);

	int n = snprintf(buf, len, "v1 seq=%" PRId64 " gen=%" PRId64 " after=%" PRId64
			 " done=%s next=%s",
			 pos->batch_seq, pos->generation, pos->after_id, pos->done, next);

	if (pos->has_digest)
		snprintf(buf + n, len - (size_t)n, " rows=%" PRId64 " ids=%" PRId64, pos->batch_rows,
			 pos->batch_idsum);
	return buf;
}

/* Take "name=" at *p and the token up to the next space (or end). */
static bool take_field(const char **p, const char *end, const char *name, char **out)
{
	size_t n = strlen(name);
	const char *s = *p, *e;

	if ((size_t)(end - s) < n + 1 || memcmp(s, name, n) != 0 || s[n] != '=')
		return false;
	s += n + 1;
	for (e = s; e < end && *e != ' '; e++)
		;
	if (e == s)
		return false;
	*out = strndup(s, (size_t)(e - s));
	if (!*out)
		return false;
	*p = e < end ? e + 1 : e;
	return true;
}

static bool to_i64(const char *s, int64_t *v)
{
	uint64_t u;
	const char *p = s;

	if (!parse_u64(&p, &u) || *p != '\0' || u > INT64_MAX)
		return false;
	*v = (int64_t)u;
	return true;
}

int checkpoint_decode(const void *buf, size_t len, struct position *pos, char *errbuf,
		      size_t errlen)
{
	const char *p = buf, *end = p + len;
	char *seq = NULL, *gen = NULL, *after = NULL, *done = NULL, *next = NULL;
	char *rows = NULL, *ids = NULL;
	const char *why = NULL;

	memset(pos, 0, sizeof(*pos));
	if (!buf || len < 3 || memcmp(p, "v1 ", 3) != 0) {
		snprintf(errbuf, errlen, "checkpoint value is not a v1 checkpoint");
		return -1;
	}
	if (memchr(p, '\0', len)) {
		snprintf(errbuf, errlen, "checkpoint value contains a NUL byte");
		return -1;
	}
	p += 3;
	if (!take_field(&p, end, "seq", &seq) || !take_field(&p, end, "gen", &gen) ||
	    !take_field(&p, end, "after", &after) || !take_field(&p, end, "done", &done) ||
	    !take_field(&p, end, "next", &next))
		why = "missing or malformed field";
	else if (p != end && (!take_field(&p, end, "rows", &rows) ||
			      !take_field(&p, end, "ids", &ids)))
		why = "malformed batch digest"; /* optional: relays before it wrote none */
	else if (p != end)
		why = "trailing data";
	else if (!to_i64(seq, &pos->batch_seq) || !to_i64(gen, &pos->generation) ||
		 !to_i64(after, &pos->after_id))
		why = "bad number";
	else if (rows && (!to_i64(rows, &pos->batch_rows) || !to_i64(ids, &pos->batch_idsum)))
		why = "bad number in the batch digest";
	else if (!snapshot_valid(done))
		why = "bad done snapshot";
	else if (strcmp(next, "-") != 0 && !snapshot_valid(next))
		why = "bad next snapshot";
	else if (strcmp(next, "-") == 0 && pos->after_id != 0)
		why = "after_id set outside a window";

	pos->has_digest = rows != NULL;
	free(seq);
	free(gen);
	free(after);
	free(rows);
	free(ids);
	if (why) {
		free(done);
		free(next);
		memset(pos, 0, sizeof(*pos));
		snprintf(errbuf, errlen, "invalid checkpoint value: %s", why);
		return -1;
	}
	pos->done = done;
	if (strcmp(next, "-") == 0)
		free(next);
	else
		pos->next = next;
	return 0;
}

char *checkpoint_default_topic(const char *relay_name)
{
	size_t len = strlen(CHECKPOINT_TOPIC_PREFIX) + strlen(relay_name) + 1;
	char *topic = xmalloc(len);

	snprintf(topic, len, "%s%s", CHECKPOINT_TOPIC_PREFIX, relay_name);
	return topic;
}

const char *kafka_topic_name_problem(const char *topic)
{
	size_t n = strlen(topic);

	if (n == 0)
		return "must not be empty";
	if (n > 249)
		return "is longer than Kafka's limit of 249 characters";
	if (strcmp(topic, ".") == 0 || strcmp(topic, "..") == 0)
		return "may not be \".\" or \"..\"";
	for (const char *p = topic; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
			return "may contain only ASCII letters, digits, '.', '_' and '-' (Kafka's rule)";
	return NULL;
}

const char *checkpoint_record_str(enum checkpoint_record rec)
{
	static const char *const names[] = {"ours", "legacy", "other key", "not ours",
					    "undecodable"};
	return names[rec];
}

enum checkpoint_record checkpoint_classify(const char *relay_name, const void *key, size_t klen,
					   const void *marker, size_t mlen, bool has_outbox_id,
					   const void *val, size_t vlen, struct position *pos,
					   char *why, size_t whylen)
{
	size_t n = strlen(relay_name);

	memset(pos, 0, sizeof(*pos));
	why[0] = '\0';
	if (!key || klen != n || memcmp(key, relay_name, n) != 0)
		return CKPT_REC_OTHER_KEY;
	/* Every outbox row (and dead letter) the relay publishes carries an
	 * outbox-id header and a checkpoint record never does: a row someone
	 * wrote to the checkpoint topic with our name as key cannot pass for
	 * a checkpoint, whatever headers or payload it has. */
	if (has_outbox_id) {
		snprintf(why, whylen, "it is an outbox row (it has an outbox-id header)");
		return CKPT_REC_NOT_OURS;
	}
	if (marker && (mlen != n || memcmp(marker, relay_name, n) != 0)) {
		snprintf(why, whylen, "its %s header names another relay (\"%.*s\")",
			 CHECKPOINT_MARKER_HEADER, (int)(mlen > 64 ? 64 : mlen), (const char *)marker);
		return CKPT_REC_NOT_OURS;
	}
	if (checkpoint_decode(val, vlen, pos, why, whylen) < 0)
		return CKPT_REC_UNDECODABLE;
	return marker ? CKPT_REC_OURS : CKPT_REC_LEGACY;
}

int checkpoint_read_budget_ms(const struct config *cfg)
{
	/* A read itself (a commit timeout), and a foreign transaction that
	 * holds the partition back: the broker aborts it after its
	 * transaction timeout (ours is the best guess of another relay's) and
	 * looks for timed-out transactions every 10 s (Kafka's
	 * transaction.abort.timed.out.transaction.cleanup.interval.ms). */
	return cfg->commit_timeout_ms + cfg->transaction_timeout_ms + 10000;
}

/* The longest single blocking librdkafka call in this file: short enough
 * that the end of a hold is seen quickly. */
#define READ_POLL_MS 200

static int slice(const struct waiter *w, int64_t deadline)
{
	int ms = wait_slice(w, deadline);

	return ms > READ_POLL_MS ? READ_POLL_MS : ms;
}

int checkpoint_ensure_topic(rd_kafka_t *rk, const struct config *cfg, const struct waiter *w,
			    int64_t deadline_ms, char *errbuf, size_t errlen)
{
	return topics_ensure(rk, cfg->checkpoint_topic, cfg->checkpoint_replication_factor, true, w,
			     deadline_ms, errbuf, errlen);
}

/*
 * Reading the checkpoint back. Both readers are consumers without a group
 * (librdkafka's partition consumer API: consume_start/consume), so the relay
 * needs no ACL on any consumer group. The "looker" reads read_uncommitted and
 * learns the log end offset; the reader reads read_committed (aborted
 * batches must not count), which ends at the last stable offset.
 */
struct read_state {
	const struct config *cfg;
	const struct waiter *w;
	int64_t deadline;
	const struct checkpoint_watch *watch;
	int64_t end;     /* the log end offset the read must reach */
	bool held;       /* a foreign transaction holds the read back */
	int64_t held_since;
	int64_t other_keys, first_other_offset, skipped, legacy_offset;
	char first_other_key[64];
	char *errbuf;
	size_t errlen;
};

static rd_kafka_t *reader_new(struct read_state *rs, const char *isolation, rd_kafka_topic_t **rkt)
{
	char rderr[512];
	rd_kafka_conf_t *conf;
	rd_kafka_topic_conf_t *tconf;
	rd_kafka_t *rk;

	conf = kafka_conf_new(rs->cfg, true, rs->errbuf, rs->errlen);
	if (!conf)
		return NULL;
	if (rd_kafka_conf_set(conf, "isolation.level", isolation, rderr, sizeof(rderr)) ||
	    rd_kafka_conf_set(conf, "enable.partition.eof", "true", rderr, sizeof(rderr)) ||
	    rd_kafka_conf_set(conf, "enable.auto.commit", "false", rderr, sizeof(rderr)) ||
	    rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", rderr, sizeof(rderr)) ||
	    /* The partition ends with a transaction marker, so the end is only
	     * reported after an empty fetch: do not let the broker hold it for
	     * the default 500 ms on every start (bench/RESULTS.md, F1). */
	    rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", rderr, sizeof(rderr))) {
		snprintf(rs->errbuf, rs->errlen, "checkpoint reader config: %s", rderr);
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, rderr, sizeof(rderr));
	if (!rk) {
		snprintf(rs->errbuf, rs->errlen, "could not create checkpoint reader: %s", rderr);
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	tconf = rd_kafka_topic_conf_new();
	/* A start below the log start offset (compaction, retention) begins
	 * at the log start; no offsets are ever stored or committed. */
	if (rd_kafka_topic_conf_set(tconf, "auto.offset.reset", "earliest", rderr,
				    sizeof(rderr)) ||
	    rd_kafka_topic_conf_set(tconf, "auto.commit.enable", "false", rderr, sizeof(rderr))) {
		snprintf(rs->errbuf, rs->errlen, "checkpoint reader config: %s", rderr);
		rd_kafka_topic_conf_destroy(tconf);
		rd_kafka_destroy(rk);
		return NULL;
	}
	*rkt = rd_kafka_topic_new(rk, rs->cfg->checkpoint_topic, tconf);
	if (!*rkt) {
		snprintf(rs->errbuf, rs->errlen, "could not read checkpoint topic \"%s\": %s",
			 rs->cfg->checkpoint_topic, rd_kafka_err2str(rd_kafka_last_error()));
		rd_kafka_destroy(rk);
		return NULL;
	}
	return rk;
}

static void reader_free(rd_kafka_t *rk, rd_kafka_topic_t *rkt)
{
	rd_kafka_topic_destroy(rkt);
	rd_kafka_destroy(rk);
}

/* The next message or event of partition 0, waiting one slice at most:
 * NULL when none came (the caller looks at the deadline and at how far the
 * partition is readable), or when the tick said stop (*gone, errbuf set). */
static rd_kafka_message_t *next_message(struct read_state *rs, rd_kafka_topic_t *rkt, bool *gone)
{
	*gone = false;
	if (!wait_tick(rs->w)) {
		snprintf(rs->errbuf, rs->errlen, "reading checkpoint topic \"%s\": stopped",
			 rs->cfg->checkpoint_topic);
		*gone = true;
		return NULL;
	}
	if (now_ms() >= rs->deadline)
		return NULL;
	return rd_kafka_consume(rkt, 0, slice(rs->w, rs->deadline));
}

/* An error message of partition 0: -1 for the ones no retry cures (errbuf
 * set), 0 for the transient ones librdkafka retries by itself. */
static int message_error(struct read_state *rs, const rd_kafka_message_t *m)
{
	if (m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
	    m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
	    m->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
	    m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
	    m->err == RD_KAFKA_RESP_ERR__AUTHENTICATION) {
		snprintf(rs->errbuf, rs->errlen, "could not read checkpoint topic \"%s\": %s%s",
			 rs->cfg->checkpoint_topic, rd_kafka_message_errstr(m),
			 m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED
				 ? " (the relay's Kafka principal needs Read on it)"
				 : "");
		return -1;
	}
	log_warning("reading checkpoint topic \"%s\": %s", rs->cfg->checkpoint_topic,
		    rd_kafka_message_errstr(m));
	return 0;
}

/* The log end offset of partition 0, as a read_uncommitted consumer started
 * at the end sees it: everything this relay committed before the call
 * (after init_transactions: all of it) lies below it. -1 on error. */
static int64_t log_end(struct read_state *rs)
{
	rd_kafka_topic_t *rkt;
	rd_kafka_t *rk = reader_new(rs, "read_uncommitted", &rkt);
	int64_t end = -1;

	if (!rk)
		return -1;
	if (rd_kafka_consume_start(rkt, 0, RD_KAFKA_OFFSET_END) < 0) {
		snprintf(rs->errbuf, rs->errlen, "could not read checkpoint topic \"%s\": %s",
			 rs->cfg->checkpoint_topic, rd_kafka_err2str(rd_kafka_last_error()));
		reader_free(rk, rkt);
		return -1;
	}
	while (end < 0) {
		bool gone;
		rd_kafka_message_t *m = next_message(rs, rkt, &gone);

		if (!m) {
			if (gone)
				break;
			if (now_ms() >= rs->deadline) {
				snprintf(rs->errbuf, rs->errlen,
					 "timed out looking for the end of checkpoint topic \"%s\"",
					 rs->cfg->checkpoint_topic);
				break;
			}
			continue;
		}
		/* The end event, or a record written since the end was
		 * looked up: either offset is at or past the end we need. */
		if (!m->err || m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
			end = m->offset;
		else if (message_error(rs, m) < 0) {
			rd_kafka_message_destroy(m);
			break;
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consume_stop(rkt, 0);
	reader_free(rk, rkt);
	return end;
}

/* The reader is behind the log end because another producer's transaction
 * holds the last stable offset back: say so once, and tell the watch. */
static void note_held(struct read_state *rs, int64_t lso)
{
	char why[512];

	if (rs->held)
		return;
	rs->held = true;
	rs->held_since = now_ms();
	snprintf(why, sizeof(why),
		 "checkpoint topic \"%s\" partition 0: last stable offset %" PRId64
		 " is behind the log end %" PRId64
		 ": another producer holds a transaction open; waiting",
		 rs->cfg->checkpoint_topic, lso, rs->end);
	log_warning("%s (at most %" PRId64 " ms more; the checkpoint topic should belong to "
		    "this relay alone)",
		    why, rs->deadline - now_ms() > 0 ? rs->deadline - now_ms() : 0);
	if (rs->watch && rs->watch->held)
		rs->watch->held(rs->watch->arg, why);
}

static void note_unheld(struct read_state *rs)
{
	if (!rs->held)
		return;
	rs->held = false;
	log_info("checkpoint topic \"%s\" partition 0: the other producer's transaction ended "
		 "after %" PRId64 " ms; read to the log end %" PRId64,
		 rs->cfg->checkpoint_topic, now_ms() - rs->held_since, rs->end);
	if (rs->watch && rs->watch->held)
		rs->watch->held(rs->watch->arg, NULL);
}

bool checkpoint_header_get(const rd_kafka_message_t *m, const char *name, const void **val,
			   size_t *len)
{
	rd_kafka_headers_t *hdrs;

	*val = NULL;
	*len = 0;
	return rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
	       rd_kafka_header_get_last(hdrs, name, val, len) == RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* One record of the partition: keep it in *pos when it decides. Returns 1
 * when it does, 0 when skipped. */
static int take_record(struct read_state *rs, const rd_kafka_message_t *m, struct position *pos)
{
	const void *marker, *id;
	size_t mlen, idlen;
	bool marked = checkpoint_header_get(m, CHECKPOINT_MARKER_HEADER, &marker, &mlen);
	bool has_id = checkpoint_header_get(m, "outbox-id", &id, &idlen);
	struct position p;
	char why[256];
	enum checkpoint_record rec;

	rec = checkpoint_classify(rs->cfg->relay_name, m->key, m->key_len, marked ? marker : NULL,
				  mlen, has_id, m->payload, m->len, &p, why, sizeof(why));
	switch (rec) {
	case CKPT_REC_OURS:
	case CKPT_REC_LEGACY:
		position_clear(pos);
		*pos = p;
		rs->legacy_offset = rec == CKPT_REC_LEGACY ? m->offset : -1;
		return 1;
	case CKPT_REC_OTHER_KEY:
		if (rs->other_keys++ == 0) {
			size_t n = m->key_len < sizeof(rs->first_other_key) - 1
					   ? m->key_len
					   : sizeof(rs->first_other_key) - 1;
			for (size_t i = 0; i < n; i++) {
				char c = ((const char *)m->key)[i];
				rs->first_other_key[i] = isprint((unsigned char)c) ? c : '?';
			}
			rs->first_other_key[n] = '\0';
			rs->first_other_offset = m->offset;
		}
		return 0;
	case CKPT_REC_NOT_OURS:
	case CKPT_REC_UNDECODABLE:
		/* Ignored, never fatal: a record anyone could write must not
		 * stop every restart. The newest checkpoint of our own decides;
		 * if that is older than the database, reconcile refuses. */
		if (rs->skipped++ < 10)
			log_warning("checkpoint topic \"%s\" offset %" PRId64 ": record with key "
				    "\"%s\" skipped: %s",
				    rs->cfg->checkpoint_topic, m->offset, rs->cfg->relay_name, why);
		return 0;
	}
	return 0;
}

/*
 * Consume [start, stop) of partition 0 (stop < 0: up to rs->end) with the
 * read_committed reader, keeping the newest deciding record in *pos. The
 * range is read only when the reader got past stop, or to its end at or
 * beyond rs->end: until then, a foreign open transaction holds it back and
 * this waits. Returns 1 when a record decided, 0 when none, -1 on error.
 */
static int scan_range(struct read_state *rs, rd_kafka_t *rk, rd_kafka_topic_t *rkt, int64_t start,
		      int64_t stop, struct position *pos)
{
	int64_t limit = stop >= 0 ? stop : rs->end;
	int found = 0;

	if (rd_kafka_consume_start(rkt, 0, start) < 0) {
		snprintf(rs->errbuf, rs->errlen, "could not read checkpoint topic \"%s\": %s",
			 rs->cfg->checkpoint_topic, rd_kafka_err2str(rd_kafka_last_error()));
		return -1;
	}
	for (;;) {
		bool gone;
		rd_kafka_message_t *m = next_message(rs, rkt, &gone);

		if (!m) {
			int64_t lo, lso;

			if (gone) {
				found = -1;
				break;
			}
			/* How far read_committed may read, from the last fetch. */
			if (rd_kafka_get_watermark_offsets(rk, rs->cfg->checkpoint_topic, 0, &lo,
							   &lso) == RD_KAFKA_RESP_ERR_NO_ERROR &&
			    lso >= 0 && lso < limit)
				note_held(rs, lso);
			if (now_ms() >= rs->deadline) {
				if (rs->held)
					snprintf(rs->errbuf, rs->errlen,
						 "checkpoint topic \"%s\" partition 0: last stable "
						 "offset is still behind the log end %" PRId64
						 " after %" PRId64
						 " ms: another producer keeps a transaction open "
						 "(does another relay or client write to this topic?)",
						 rs->cfg->checkpoint_topic, rs->end,
						 now_ms() - rs->held_since);
				else
					snprintf(rs->errbuf, rs->errlen,
						 "timed out reading checkpoint topic \"%s\"",
						 rs->cfg->checkpoint_topic);
				found = -1;
				break;
			}
			continue;
		}
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			int64_t at = m->offset;
			rd_kafka_message_destroy(m);
			if (at >= limit)
				break;
			note_held(rs, at);
			continue;
		}
		if (m->err) {
			int bad = message_error(rs, m);
			rd_kafka_message_destroy(m);
			if (bad < 0) {
				found = -1;
				break;
			}
			continue;
		}
		if (m->offset >= limit) {
			/* A committed record at or past the limit: everything
			 * before it is settled and read. */
			rd_kafka_message_destroy(m);
			break;
		}
		if (take_record(rs, m, pos))
			found = 1;
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consume_stop(rkt, 0);
	if (found >= 0)
		note_unheld(rs);
	return found;
}

int checkpoint_read_last(const struct config *cfg, const struct waiter *w, int64_t deadline_ms,
			 const struct checkpoint_watch *watch, struct position *pos, bool *found,
			 char *errbuf, size_t errlen)
{
	struct read_state rs = {.cfg = cfg, .w = w, .deadline = deadline_ms, .watch = watch,
				.legacy_offset = -1, .errbuf = errbuf, .errlen = errlen};
	rd_kafka_topic_t *rkt;
	rd_kafka_t *rk;
	int64_t start, stop = -1, step = 1000;
	int r = 0;

	*found = false;
	rs.end = log_end(&rs);
	if (rs.end < 0)
		return -1;
	if (rs.end == 0)
		return 0; /* nothing was ever written */
	rk = reader_new(&rs, "read_committed", &rkt);
	if (!rk)
		return -1;
	/* The newest checkpoint is almost always among the last few records;
	 * widen the window backwards only when it is not. */
	start = rs.end - step > 0 ? rs.end - step : 0;
	for (;;) {
		int f = scan_range(&rs, rk, rkt, start, stop, pos);
		if (f < 0) {
			r = -1;
			break;
		}
		if (f > 0) {
			*found = true;
			break;
		}
		if (start <= 0)
			break;
		stop = start;
		step *= 4;
		start = start - step > 0 ? start - step : 0;
	}
	if (rs.held && rs.watch && rs.watch->held)
		rs.watch->held(rs.watch->arg, NULL);
	if (rs.other_keys)
		log_warning("checkpoint topic \"%s\" partition 0 holds %" PRId64 " record(s) of other "
			    "keys (first: \"%s\" at offset %" PRId64 "): the topic is shared; it "
			    "should belong to relay \"%s\" alone (kafka.checkpoint_topic)",
			    cfg->checkpoint_topic, rs.other_keys, rs.first_other_key,
			    rs.first_other_offset, cfg->relay_name);
	if (rs.skipped > 10)
		log_warning("checkpoint topic \"%s\": %" PRId64 " records with key \"%s\" skipped "
			    "in all",
			    cfg->checkpoint_topic, rs.skipped, cfg->relay_name);
	if (r == 0 && *found && rs.legacy_offset >= 0)
		log_info("checkpoint at offset %" PRId64 " of topic \"%s\" has no %s header "
			 "(written by an older relay version): accepted",
			 rs.legacy_offset, cfg->checkpoint_topic, CHECKPOINT_MARKER_HEADER);
	reader_free(rk, rkt);
	return r;
}
