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

char *checkpoint_encode(const struct position *pos)
{
	const char *next = pos->next ? pos->next : "-";
	size_t len = strlen(pos->done) + strlen(next) + 128;
	char *buf = xmalloc(len);

	snprintf(buf, len, "v1 seq=%" PRId64 " gen=%" PRId64 " after=%" PRId64 " done=%s next=%s",
		 pos->batch_seq, pos->generation, pos->after_id, pos->done, next);
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
	else if (p != end)
		why = "trailing data";
	else if (!to_i64(seq, &pos->batch_seq) || !to_i64(gen, &pos->generation) ||
		 !to_i64(after, &pos->after_id))
		why = "bad number";
	else if (!snapshot_valid(done))
		why = "bad done snapshot";
	else if (strcmp(next, "-") != 0 && !snapshot_valid(next))
		why = "bad next snapshot";
	else if (strcmp(next, "-") == 0 && pos->after_id != 0)
		why = "after_id set outside a window";

	free(seq);
	free(gen);
	free(after);
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

int kafka_topic_ensure(rd_kafka_t *rk, const char *topic, int rf, bool compact, char *errbuf,
		       size_t errlen)
{
	char rderr[256];
	rd_kafka_NewTopic_t *nt;
	rd_kafka_queue_t *q;
	rd_kafka_event_t *ev;
	const rd_kafka_CreateTopics_result_t *res;
	const rd_kafka_topic_result_t **tres;
	size_t n;
	int rc = -1;

	nt = rd_kafka_NewTopic_new(topic, 1, rf,
				   rderr, sizeof(rderr));
	if (!nt) {
		snprintf(errbuf, errlen, "could not describe topic \"%s\": %s",
			 topic, rderr);
		return -1;
	}
	/* Compaction keeps the newest checkpoint per relay name for ever. */
	if (compact && (rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact") ||
			rd_kafka_NewTopic_set_config(nt, "min.compaction.lag.ms", "3600000"))) {
		snprintf(errbuf, errlen, "could not set topic config");
		rd_kafka_NewTopic_destroy(nt);
		return -1;
	}
	q = rd_kafka_queue_new(rk);
	rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
	ev = rd_kafka_queue_poll(q, 30000);
	if (!ev) {
		snprintf(errbuf, errlen, "could not create topic \"%s\": timed out",
			 topic);
		goto out;
	}
	if (rd_kafka_event_error(ev)) {
		snprintf(errbuf, errlen, "could not create topic \"%s\": %s",
			 topic, rd_kafka_event_error_string(ev));
		goto out;
	}
	res = rd_kafka_event_CreateTopics_result(ev);
	tres = rd_kafka_CreateTopics_result_topics(res, &n);
	if (n == 1 && rd_kafka_topic_result_error(tres[0]) != RD_KAFKA_RESP_ERR_NO_ERROR &&
	    rd_kafka_topic_result_error(tres[0]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
		snprintf(errbuf, errlen, "could not create topic \"%s\": %s",
			 topic, rd_kafka_topic_result_error_string(tres[0]));
		goto out;
	}
	if (n == 1 && rd_kafka_topic_result_error(tres[0]) == RD_KAFKA_RESP_ERR_NO_ERROR)
		log_info("created topic \"%s\" (%s, replication factor %d)", topic,
			 compact ? "compacted" : "one partition", rf);
	rc = 0;
out:
	if (ev)
		rd_kafka_event_destroy(ev);
	rd_kafka_queue_destroy(q);
	rd_kafka_NewTopic_destroy(nt);
	return rc;
}

int checkpoint_ensure_topic(rd_kafka_t *rk, const struct config *cfg, char *errbuf, size_t errlen)
{
	return kafka_topic_ensure(rk, cfg->checkpoint_topic, cfg->checkpoint_replication_factor, true,
				  errbuf, errlen);
}

/*
 * Consume [start, stop) of the checkpoint partition (stop < 0: to the last
 * stable offset) and keep the last record whose key is our relay name.
 * Returns 1 when one was found, 0 when not, -1 on error.
 */
static int scan_range(rd_kafka_t *rk, const struct config *cfg, int64_t start, int64_t stop,
		      int64_t deadline, struct position *pos, char *errbuf, size_t errlen)
{
	rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
	size_t keylen = strlen(cfg->relay_name);
	int found = 0;
	int64_t last_offset = -1;

	rd_kafka_topic_partition_list_add(parts, cfg->checkpoint_topic, 0)->offset = start;
	if (rd_kafka_assign(rk, parts) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rd_kafka_topic_partition_list_destroy(parts);
		snprintf(errbuf, errlen, "could not assign checkpoint partition");
		return -1;
	}
	rd_kafka_topic_partition_list_destroy(parts);

	for (;;) {
		rd_kafka_message_t *m;

		if (now_ms() > deadline) {
			snprintf(errbuf, errlen, "timed out reading checkpoint topic \"%s\"",
				 cfg->checkpoint_topic);
			found = -1;
			break;
		}
		m = rd_kafka_consumer_poll(rk, 200);
		if (!m)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			rd_kafka_message_destroy(m);
			break;
		}
		if (m->err) {
			/* Transient fetch errors are retried by librdkafka; these are not. */
			if (m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
			    m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
			    m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
			    m->err == RD_KAFKA_RESP_ERR__AUTHENTICATION) {
				snprintf(errbuf, errlen, "could not read checkpoint topic \"%s\": %s",
					 cfg->checkpoint_topic, rd_kafka_message_errstr(m));
				rd_kafka_message_destroy(m);
				found = -1;
				break;
			}
			log_warning("reading checkpoint topic: %s", rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			continue;
		}
		if (stop >= 0 && m->offset >= stop) {
			rd_kafka_message_destroy(m);
			break;
		}
		if (m->key_len == keylen && memcmp(m->key, cfg->relay_name, keylen) == 0 &&
		    m->offset > last_offset) {
			struct position p;
			char why[256];

			if (checkpoint_decode(m->payload, m->len, &p, why, sizeof(why)) < 0) {
				snprintf(errbuf, errlen,
					 "checkpoint topic \"%s\" offset %" PRId64 ": %s",
					 cfg->checkpoint_topic, m->offset, why);
				rd_kafka_message_destroy(m);
				found = -1;
				break;
			}
			position_clear(pos);
			*pos = p;
			last_offset = m->offset;
			found = 1;
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_assign(rk, NULL);
	return found;
}

int checkpoint_read_last(const struct config *cfg, struct position *pos, bool *found, char *errbuf,
			 size_t errlen)
{
	char rderr[512];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	int64_t lo, hi, start, stop = -1, step = 1000;
	int64_t deadline = now_ms() + cfg->commit_timeout_ms;
	rd_kafka_resp_err_t err;
	int r = 0;

	*found = false;
	conf = kafka_conf_new(cfg, true, errbuf, errlen);
	if (!conf)
		return -1;
	if (rd_kafka_conf_set(conf, "isolation.level", "read_committed", rderr, sizeof(rderr)) ||
	    rd_kafka_conf_set(conf, "enable.partition.eof", "true", rderr, sizeof(rderr)) ||
	    rd_kafka_conf_set(conf, "enable.auto.commit", "false", rderr, sizeof(rderr)) ||
	    /* The partition ends with a transaction marker, so the end is only
	     * reported after an empty fetch: do not let the broker hold it for
	     * the default 500 ms on every start (bench/RESULTS.md, F1). */
	    rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", rderr, sizeof(rderr)) ||
	    rd_kafka_conf_set(conf, "group.id", "outbox-relay-checkpoint-reader", rderr,
			      sizeof(rderr))) {
		snprintf(errbuf, errlen, "checkpoint reader config: %s", rderr);
		rd_kafka_conf_destroy(conf);
		return -1;
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, rderr, sizeof(rderr));
	if (!rk) {
		snprintf(errbuf, errlen, "could not create checkpoint reader: %s", rderr);
		rd_kafka_conf_destroy(conf);
		return -1;
	}
	err = rd_kafka_query_watermark_offsets(rk, cfg->checkpoint_topic, 0, &lo, &hi,
					       cfg->commit_timeout_ms);
	if (err) {
		snprintf(errbuf, errlen, "could not query checkpoint topic \"%s\": %s",
			 cfg->checkpoint_topic, rd_kafka_err2str(err));
		r = -1;
		goto out;
	}
	/* The newest checkpoint is almost always among the last few records;
	 * widen the window backwards only when it is not. */
	start = hi - step > lo ? hi - step : lo;
	for (;;) {
		int f = scan_range(rk, cfg, start, stop, deadline, pos, errbuf, errlen);
		if (f < 0) {
			r = -1;
			break;
		}
		if (f > 0) {
			*found = true;
			break;
		}
		if (start <= lo)
			break;
		stop = start;
		step *= 4;
		start = start - step > lo ? start - step : lo;
	}
out:
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return r;
}
