/* verify.c: `outbox-relay verify`: reads (read_committed, never writes) the
 * checkpoint chain and the destination topics of this relay and reports
 * every break of the exactly-once contract it can see */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "batch.h"
#include "outbox.h"
#include "publisher.h"
#include "relay.h"
#include "verify.h"

static const char *const kind_names[VK_KIND_COUNT] = {
	[VK_CHAIN_GAP] = "checkpoint_gap",
	[VK_CHAIN_BACKWARDS] = "checkpoint_seq_backwards",
	[VK_GENERATION_BACK] = "generation_backwards",
	[VK_POSITION_BACK] = "position_backwards",
	[VK_CHECKPOINT_FOREIGN] = "checkpoint_foreign",
	[VK_DUPLICATE] = "duplicate",
	[VK_OUT_OF_ORDER] = "out_of_order",
	[VK_NO_OUTBOX_ID] = "no_outbox_id",
	[VK_MISSING] = "missing_in_kafka",
	[VK_CONTENT] = "content_differs",
	[VK_NOT_IN_DB] = "not_in_database",
	[VK_LOST_BY_DB] = "lost_by_database",
};

const char *verify_kind_str(enum verify_kind kind)
{
	return kind >= 0 && kind < VK_KIND_COUNT ? kind_names[kind] : "?";
}

void verify_note(struct verify_report *rep, enum verify_kind kind, const char *fmt, ...)
{
	va_list ap;

	if (rep->count[kind] < VERIFY_EXAMPLES) {
		va_start(ap, fmt);
		vsnprintf(rep->example[kind][rep->count[kind]], sizeof(rep->example[kind][0]), fmt,
			  ap);
		va_end(ap);
	}
	rep->count[kind]++;
}

int64_t verify_total(const struct verify_report *rep)
{
	int64_t n = 0;

	for (int k = 0; k < VK_KIND_COUNT; k++)
		n += rep->count[k];
	return n;
}

/* ---- the checkpoint chain (pure) ---- */

void verify_chain_init(struct verify_chain *ch)
{
	memset(ch, 0, sizeof(*ch));
	ch->first_seq = -1;
	position_init(&ch->last);
}

void verify_chain_clear(struct verify_chain *ch)
{
	position_clear(&ch->last);
}

/* xmin and xmax of a pg_snapshot text; false when it does not parse. */
static bool snapshot_bounds(const char *s, uint64_t *xmin, uint64_t *xmax)
{
	char *end;

	if (!s)
		return false;
	errno = 0;
	*xmin = strtoull(s, &end, 10);
	if (errno || *end != ':')
		return false;
	*xmax = strtoull(end + 1, &end, 10);
	return !errno && *end == ':';
}

/* Both set and equal (a NULL next is no window). */
static bool same_str(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

void verify_chain_add(struct verify_chain *ch, const struct position *pos, int64_t offset,
		      struct verify_report *rep)
{
	const struct position *prev = &ch->last;
	uint64_t pmin, pmax, nmin, nmax;

	if (ch->checkpoints == 0) {
		ch->first_seq = pos->batch_seq;
		goto take;
	}
	if (pos->batch_seq <= prev->batch_seq)
		verify_note(rep, VK_CHAIN_BACKWARDS,
			    "offset %" PRId64 ": batch %" PRId64 " after batch %" PRId64, offset,
			    pos->batch_seq, prev->batch_seq);
	else if (pos->batch_seq != prev->batch_seq + 1)
		verify_note(rep, VK_CHAIN_GAP,
			    "offset %" PRId64 ": batch %" PRId64 " after batch %" PRId64
			    " (%" PRId64 " missing)",
			    offset, pos->batch_seq, prev->batch_seq,
			    pos->batch_seq - prev->batch_seq - 1);
	if (pos->generation < prev->generation)
		verify_note(rep, VK_GENERATION_BACK,
			    "offset %" PRId64 ": batch %" PRId64 " generation %" PRId64
			    " after %" PRId64,
			    offset, pos->batch_seq, pos->generation, prev->generation);
	/* Forward: the done snapshot never moves back; within one window
	 * (same done and next) after_id only grows. */
	if (snapshot_bounds(prev->done, &pmin, &pmax) && snapshot_bounds(pos->done, &nmin, &nmax) &&
	    (nmin < pmin || nmax < pmax))
		verify_note(rep, VK_POSITION_BACK,
			    "offset %" PRId64 ": batch %" PRId64 " done \"%s\" before \"%s\"",
			    offset, pos->batch_seq, pos->done, prev->done);
	else if (same_str(pos->done, prev->done) && same_str(pos->next, prev->next) &&
		 pos->after_id < prev->after_id)
		verify_note(rep, VK_POSITION_BACK,
			    "offset %" PRId64 ": batch %" PRId64 " after_id %" PRId64
			    " before %" PRId64,
			    offset, pos->batch_seq, pos->after_id, prev->after_id);
take:
	position_copy(&ch->last, pos);
	ch->checkpoints++;
}

/* ---- what the database lost (pure) ---- */

const char *verify_after_str(enum verify_after after)
{
	switch (after) {
	case VA_BEFORE:
		return "before";
	case VA_PRESENT:
		return "row present";
	case VA_LOST:
		return "not in the database";
	case VA_REUSED:
		return "not in the database, id reused";
	}
	return "?";
}

/* Known to be published after the stored position: its row is there but
 * not relayed, or it was created after the position was stored (unless
 * the position covers its row: a created_at set by hand, or clocks). */
static bool after_for_sure(const struct verify_lost_rec *r, int64_t advanced_ms)
{
	return r->row == VR_PENDING || r->row == VR_PENDING_OTHER ||
	       (r->row == VR_NONE && r->ts_ms >= 0 && r->ts_ms > advanced_ms);
}

void verify_lost_classify(struct verify_lost_rec *recs, size_t n, int64_t advanced_ms)
{
	size_t first = 0;

	while (first < n && !after_for_sure(&recs[first], advanced_ms))
		first++;
	/* back to the first record of its transaction */
	while (first > 0 && first < n && recs[first - 1].offset == recs[first].offset - 1)
		first--;
	for (size_t i = 0; i < n; i++) {
		enum verify_after after = VA_BEFORE;

		if (i >= first)
			switch (recs[i].row) {
			case VR_NONE:
				after = VA_LOST;
				break;
			case VR_PENDING:
				after = VA_PRESENT;
				break;
			case VR_PENDING_OTHER:
				after = VA_REUSED;
				break;
			case VR_RELAYED: /* the position covers it: not after */
				break;
			}
		recs[i].after = after;
	}
}

int64_t verify_parse_duration(const char *s)
{
	char *end;
	long long v;
	int64_t unit = 1;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || v <= 0)
		return -1;
	if (strcmp(end, "ms") == 0 || *end == '\0')
		unit = 1;
	else if (strcmp(end, "s") == 0)
		unit = 1000;
	else if (strcmp(end, "m") == 0)
		unit = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		unit = 3600 * 1000;
	else if (strcmp(end, "d") == 0)
		unit = 86400 * 1000;
	else
		return -1;
	if (v > INT64_MAX / unit)
		return -1;
	return (int64_t)v * unit;
}

/* ---- reading Kafka ---- */

/* Kept rows read from PostgreSQL per query. */
#define VERIFY_PAGE_ROWS 5000

/* One committed record of a destination or dead-letter topic: 48 bytes,
 * the whole cost per row of the exactly-once and order checks. */
struct vrec {
	int64_t id;
	int64_t offset;
	int64_t ts;       /* the record's timestamp (ms), -1 for none */
	uint64_t keyhash; /* FNV-1a of the key; 0 for no key */
	uint64_t digest;  /* verify_digest of the record */
	uint32_t tp;      /* index into the topic-partition table */
	uint16_t dead;    /* from the dead-letter topic */
	uint8_t row;      /* enum verify_row: what the table has under this id */
	uint8_t after;    /* enum verify_after */
};

/* Whether the lost-by-database report could be judged. */
enum lost_judged {
	LJ_NO_RELAY,  /* the database has no position for this relay */
	LJ_NOT_AHEAD, /* Kafka's checkpoints do not pass the stored batch */
	LJ_MOVED,     /* the stored position moved during the audit */
	LJ_JUDGED,
};

struct vtp {
	const char *topic; /* borrowed */
	int32_t partition;
};

struct verify {
	const struct config *cfg;
	const struct verify_opts *opts;
	struct verify_report rep;
	struct verify_chain chain;
	struct vrec *recs;
	size_t nrecs, caprecs;
	struct vtp *tps;
	size_t ntps, captps;
	int64_t rows, dead_letters, other_keys, records_read, ckpt_skipped_before;
	int64_t ckpt_first_offset, ckpt_last_offset;
	int64_t db_rows, db_relayed, db_min_id, db_max_id, db_pending_in_kafka;
	int64_t min_id, max_id;         /* of the records read */
	int64_t ckpt_max_seq;           /* the highest batch of our checkpoints, -1: none */
	int64_t db_batch, db_advanced;  /* the stored position before reading Kafka */
	int64_t db_batch2, db_advanced2; /* and after reading the rows */
	enum lost_judged lost_judged;
	int64_t after_records, after_present, lost_absent, lost_reused;
	uint64_t after_idsum;
	/* The digests (rows, id sum) of the checkpoints after the stored batch:
	 * what the records after it must add up to. */
	int64_t digest_rows, digest_missing;
	uint64_t digest_idsum;
	char **topics; /* what is read: --topics, then the database's (owned) */
	int ntopics;
	bool progress;
	int64_t progress_at;
	char err[1024];
};

static uint64_t fnv(uint64_t h, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* A 64-bit finalizer (splitmix64's): spreads a field's hash before the
 * fields are combined. */
static uint64_t mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

#define FNV_BASIS 1469598103934665603ULL

uint64_t verify_digest(const char *topic, const void *key, size_t klen, const void *payload,
		       size_t plen, const struct record_header *hdrs, size_t n)
{
	uint64_t h, sum = 0;

	h = mix(fnv(FNV_BASIS, topic, strlen(topic)));
	h = mix(h ^ fnv(fnv(FNV_BASIS, &klen, sizeof(klen)), key ? key : "", key ? klen : 0));
	h = mix(h ^ fnv(fnv(FNV_BASIS, &plen, sizeof(plen)), payload ? payload : "",
			payload ? plen : 0));
	for (size_t i = 0; i < n; i++) {
		uint64_t x;

		if (hdrs[i].name_len == 9 && memcmp(hdrs[i].name, "outbox-id", 9) == 0)
			continue;
		x = fnv(FNV_BASIS, hdrs[i].name, hdrs[i].name_len);
		x = fnv(x, "", 1);
		x = fnv(x, hdrs[i].value ? hdrs[i].value : "",
			hdrs[i].value ? hdrs[i].value_len : 0);
		sum += mix(x); /* a sum: header order does not matter */
	}
	return mix(h ^ sum);
}

/* verify_digest of a Kafka record. */
static uint64_t message_digest(const char *topic, const rd_kafka_message_t *m)
{
	rd_kafka_headers_t *hdrs;
	struct record_header stack[16], *h = stack;
	size_t n = 0, cap = ARRAY_LEN(stack);
	const char *name;
	const void *val;
	size_t size;
	uint64_t d;

	if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
		while (rd_kafka_header_get_all(hdrs, n, &name, &val, &size) ==
		       RD_KAFKA_RESP_ERR_NO_ERROR) {
			if (n == cap) {
				cap *= 2;
				h = h == stack ? memcpy(xmalloc(cap * sizeof(*h)), stack,
							sizeof(stack))
					       : xrealloc(h, cap * sizeof(*h));
			}
			h[n].name = name;
			h[n].name_len = strlen(name);
			h[n].value = val;
			h[n].value_len = val ? size : 0;
			n++;
		}
	d = verify_digest(topic, m->key, m->key_len, m->payload, m->len, h, n);
	if (h != stack)
		free(h);
	return d;
}

static uint64_t key_hash(const void *key, size_t len)
{
	return key ? fnv(FNV_BASIS, key, len) | 1 : 0; /* never 0, the hash of no key */
}

/* The outbox-id header as a number; false when absent or not a positive
 * decimal. */
static bool outbox_id_of(const rd_kafka_message_t *m, int64_t *id)
{
	const void *val;
	size_t len;
	char buf[24];
	char *end;

	if (!checkpoint_header_get(m, "outbox-id", &val, &len) || !val || len == 0 ||
	    len >= sizeof(buf))
		return false;
	memcpy(buf, val, len);
	buf[len] = '\0';
	if (!isdigit((unsigned char)buf[0]))
		return false;
	errno = 0;
	*id = strtoll(buf, &end, 10);
	return !errno && *end == '\0' && *id > 0;
}

static void progress(struct verify *v, bool done)
{
	if (!v->progress)
		return;
	if (done) {
		fprintf(stderr, "\r%60s\r", "");
		return;
	}
	if (now_ms() - v->progress_at < 1000)
		return;
	v->progress_at = now_ms();
	fprintf(stderr, "\rverify: %" PRId64 " records read", v->records_read);
}

static void take_checkpoint(struct verify *v, const rd_kafka_message_t *m)
{
	const void *marker, *id;
	size_t mlen, idlen;
	bool marked = checkpoint_header_get(m, CHECKPOINT_MARKER_HEADER, &marker, &mlen);
	bool has_id = checkpoint_header_get(m, "outbox-id", &id, &idlen);
	struct position pos = {0}; /* filled by checkpoint_classify, not cleared first */
	char why[256];

	switch (checkpoint_classify(v->cfg->relay_name, m->key, m->key_len, marked ? marker : NULL,
				    mlen, has_id, m->payload, m->len, &pos, why, sizeof(why))) {
	case CKPT_REC_OURS:
	case CKPT_REC_LEGACY:
		if (pos.batch_seq > v->ckpt_max_seq)
			v->ckpt_max_seq = pos.batch_seq;
		if (v->db_batch >= 0 && pos.batch_seq > v->db_batch) {
			v->digest_missing += !pos.has_digest;
			v->digest_rows += pos.batch_rows;
			v->digest_idsum += (uint64_t)pos.batch_idsum;
		}
		if (pos.batch_seq < v->opts->from_batch) {
			v->ckpt_skipped_before++;
			break;
		}
		if (v->chain.checkpoints == 0)
			v->ckpt_first_offset = m->offset;
		v->ckpt_last_offset = m->offset;
		verify_chain_add(&v->chain, &pos, m->offset, &v->rep);
		break;
	case CKPT_REC_OTHER_KEY:
		v->other_keys++;
		break;
	case CKPT_REC_NOT_OURS:
	case CKPT_REC_UNDECODABLE:
		verify_note(&v->rep, VK_CHECKPOINT_FOREIGN, "offset %" PRId64 ": %s", m->offset,
			    why);
		break;
	}
	position_clear(&pos);
}

static void take_record(struct verify *v, uint32_t tp, bool dead, const rd_kafka_message_t *m)
{
	struct vrec *r;
	rd_kafka_timestamp_type_t tstype;
	int64_t id, ts;

	if (!outbox_id_of(m, &id)) {
		verify_note(&v->rep, VK_NO_OUTBOX_ID,
			    "topic \"%s\" partition %" PRId32 " offset %" PRId64, v->tps[tp].topic,
			    v->tps[tp].partition, m->offset);
		return;
	}
	if (v->nrecs == v->caprecs) {
		v->caprecs = v->caprecs ? v->caprecs * 2 : 4096;
		v->recs = xrealloc(v->recs, v->caprecs * sizeof(*v->recs));
	}
	r = &v->recs[v->nrecs++];
	r->id = id;
	r->offset = m->offset;
	r->keyhash = key_hash(m->key, m->key_len);
	ts = rd_kafka_message_timestamp(m, &tstype);
	r->ts = tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts;
	r->tp = tp;
	r->dead = dead;
	r->row = VR_NONE;
	r->after = VA_BEFORE;
	r->digest = dead ? 0 : message_digest(v->tps[tp].topic, m);
	if (dead)
		v->dead_letters++;
	else
		v->rows++;
}

static uint32_t tp_add(struct verify *v, const char *topic, int32_t partition)
{
	if (v->ntps == v->captps) {
		v->captps = v->captps ? v->captps * 2 : 16;
		v->tps = xrealloc(v->tps, v->captps * sizeof(*v->tps));
	}
	v->tps[v->ntps].topic = topic;
	v->tps[v->ntps].partition = partition;
	return (uint32_t)v->ntps++;
}

/* The consumer: read_committed, no group, nothing stored or committed. */
static rd_kafka_t *reader_new(struct verify *v)
{
	char rderr[512];
	rd_kafka_conf_t *conf = kafka_conf_new(v->cfg, true, v->err, sizeof(v->err));
	rd_kafka_t *rk;

	if (!conf)
		return NULL;
	if (rd_kafka_conf_set(conf, "isolation.level", "read_committed", rderr, sizeof(rderr)) ||
	    rd_kafka_conf_set(conf, "enable.partition.eof", "true", rderr, sizeof(rderr)) ||
	    rd_kafka_conf_set(conf, "enable.auto.commit", "false", rderr, sizeof(rderr)) ||
	    rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", rderr, sizeof(rderr)) ||
	    rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", rderr, sizeof(rderr))) {
		snprintf(v->err, sizeof(v->err), "verify reader config: %s", rderr);
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, rderr, sizeof(rderr));
	if (!rk) {
		snprintf(v->err, sizeof(v->err), "could not create verify reader: %s", rderr);
		rd_kafka_conf_destroy(conf);
	}
	return rk;
}

/* Where reading a partition starts: its log start, or with --since the
 * first record not older than the cut. -1 with v->err on error. */
static int64_t start_offset(struct verify *v, rd_kafka_t *rk, const char *topic, int32_t part,
			    int64_t lo, int64_t hi)
{
	rd_kafka_topic_partition_list_t *l;
	rd_kafka_resp_err_t err;
	int64_t off;

	if (v->opts->since_ms <= 0)
		return lo;
	l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, topic, part)->offset =
		(int64_t)time(NULL) * 1000 - v->opts->since_ms;
	err = rd_kafka_offsets_for_times(rk, l, 10000);
	off = l->elems[0].offset;
	if (!err)
		err = l->elems[0].err;
	rd_kafka_topic_partition_list_destroy(l);
	if (err) {
		snprintf(v->err, sizeof(v->err),
			 "could not look up offsets by time in topic \"%s\" partition %" PRId32 ": %s",
			 topic, part, rd_kafka_err2str(err));
		return -1;
	}
	return off < 0 ? hi : off;
}

/*
 * Read one partition from its start to the log end offset it had when the
 * read began (the true end, not the last stable offset): a record at or
 * past it, or the end event there, ends the read. While a foreign open
 * transaction holds the last stable offset below it, read_committed
 * waits; after the checkpoint read budget without progress the read fails
 * (it would otherwise decide from a log it did not see to its end).
 * ckpt: the checkpoint partition; else tp indexes the topic-partition.
 */
static int read_partition(struct verify *v, rd_kafka_t *rk, const char *topic, int32_t part,
			  bool ckpt, uint32_t tp, bool dead)
{
	rd_kafka_topic_t *rkt;
	rd_kafka_topic_conf_t *tconf;
	rd_kafka_resp_err_t err;
	int64_t lo, hi, start, deadline, at = -1;
	int r = 0;

	err = rd_kafka_query_watermark_offsets(rk, topic, part, &lo, &hi, 10000);
	if (err) {
		snprintf(v->err, sizeof(v->err),
			 "could not read the end of topic \"%s\" partition %" PRId32 ": %s", topic,
			 part, rd_kafka_err2str(err));
		return -1;
	}
	start = start_offset(v, rk, topic, part, lo, hi);
	if (start < 0)
		return -1;
	if (start >= hi)
		return 0;
	tconf = rd_kafka_topic_conf_new();
	if (rd_kafka_topic_conf_set(tconf, "auto.offset.reset", "earliest", v->err,
				    sizeof(v->err)) != RD_KAFKA_CONF_OK) {
		rd_kafka_topic_conf_destroy(tconf);
		return -1;
	}
	rkt = rd_kafka_topic_new(rk, topic, tconf);
	if (!rkt) {
		snprintf(v->err, sizeof(v->err), "could not read topic \"%s\": %s", topic,
			 rd_kafka_err2str(rd_kafka_last_error()));
		return -1;
	}
	if (rd_kafka_consume_start(rkt, part, start) < 0) {
		snprintf(v->err, sizeof(v->err),
			 "could not read topic \"%s\" partition %" PRId32 ": %s", topic, part,
			 rd_kafka_err2str(rd_kafka_last_error()));
		rd_kafka_topic_destroy(rkt);
		return -1;
	}
	deadline = now_ms() + checkpoint_read_budget_ms(v->cfg);
	for (;;) {
		rd_kafka_message_t *m = rd_kafka_consume(rkt, part, 200);

		progress(v, false);
		if (!m) {
			if (relay_stop_requested) {
				snprintf(v->err, sizeof(v->err), "stopped");
				r = -1;
				break;
			}
			if (now_ms() < deadline)
				continue;
			snprintf(v->err, sizeof(v->err),
				 "topic \"%s\" partition %" PRId32 ": read only to offset %" PRId64
				 " of %" PRId64 ": another producer holds a transaction open, or "
				 "the broker is slow; try again",
				 topic, part, at, hi);
			r = -1;
			break;
		}
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			at = m->offset;
			rd_kafka_message_destroy(m);
			if (at >= hi)
				break;
			continue;
		}
		if (m->err) {
			snprintf(v->err, sizeof(v->err),
				 "could not read topic \"%s\" partition %" PRId32 ": %s", topic, part,
				 rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			r = -1;
			break;
		}
		if (m->offset >= hi) {
			rd_kafka_message_destroy(m);
			break;
		}
		at = m->offset + 1;
		deadline = now_ms() + checkpoint_read_budget_ms(v->cfg);
		v->records_read++;
		if (ckpt)
			take_checkpoint(v, m);
		else
			take_record(v, tp, dead, m);
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consume_stop(rkt, part);
	rd_kafka_topic_destroy(rkt);
	return r;
}

/* Every partition of a topic. A topic that does not exist is empty when
 * may_be_missing (the dead-letter topic before the first dead letter, a
 * topic of rows not relayed yet), else an error. */
static int read_topic(struct verify *v, rd_kafka_t *rk, const char *topic, bool dead,
		      bool may_be_missing)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
	rd_kafka_resp_err_t err;
	int r = 0;

	err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
	rd_kafka_topic_destroy(rkt);
	if (!err && (md->topic_cnt != 1 || md->topics[0].err))
		err = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
	if (err) {
		if (md)
			rd_kafka_metadata_destroy(md);
		if (may_be_missing && (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
			     err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC))
			return 0;
		snprintf(v->err, sizeof(v->err), "could not look up topic \"%s\": %s", topic,
			 rd_kafka_err2str(err));
		return -1;
	}
	for (int i = 0; i < md->topics[0].partition_cnt && r == 0; i++) {
		int32_t part = md->topics[0].partitions[i].id;
		r = read_partition(v, rk, topic, part, false, tp_add(v, topic, part), dead);
	}
	rd_kafka_metadata_destroy(md);
	return r;
}

static int cmp_id(const void *a, const void *b)
{
	const struct vrec *x = a, *y = b;

	if (x->id != y->id)
		return (x->id > y->id) - (x->id < y->id);
	return (x->tp > y->tp) - (x->tp < y->tp);
}

static int cmp_place(const void *a, const void *b)
{
	const struct vrec *x = a, *y = b;

	if (x->tp != y->tp)
		return (x->tp > y->tp) - (x->tp < y->tp);
	if (x->keyhash != y->keyhash)
		return (x->keyhash > y->keyhash) - (x->keyhash < y->keyhash);
	return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Each outbox-id once; ids increasing per key and partition. */
static void check_records(struct verify *v)
{
	qsort(v->recs, v->nrecs, sizeof(*v->recs), cmp_place);
	for (size_t i = 1; i < v->nrecs; i++) {
		const struct vrec *p = &v->recs[i - 1], *r = &v->recs[i];
		if (p->tp == r->tp && p->keyhash == r->keyhash && r->id < p->id)
			verify_note(&v->rep, VK_OUT_OF_ORDER,
				    "topic \"%s\" partition %" PRId32 ": id %" PRId64 " at offset %" PRId64
				    " after id %" PRId64 " at offset %" PRId64 " (same key)",
				    v->tps[r->tp].topic, v->tps[r->tp].partition, r->id, r->offset,
				    p->id, p->offset);
	}
	qsort(v->recs, v->nrecs, sizeof(*v->recs), cmp_id);
	if (v->nrecs) {
		v->min_id = v->recs[0].id;
		v->max_id = v->recs[v->nrecs - 1].id;
	}
	for (size_t i = 1; i < v->nrecs; i++) {
		const struct vrec *p = &v->recs[i - 1], *r = &v->recs[i];
		if (r->id == p->id)
			verify_note(&v->rep, VK_DUPLICATE,
				    "outbox-id %" PRId64 ": \"%s\"/%" PRId32 "@%" PRId64
				    " and \"%s\"/%" PRId32 "@%" PRId64,
				    r->id, v->tps[p->tp].topic, v->tps[p->tp].partition, p->offset,
				    v->tps[r->tp].topic, v->tps[r->tp].partition, r->offset);
	}
}

/* The first record of id `id` in v->recs (sorted by id), or NULL. */
static struct vrec *find_id(struct verify *v, int64_t id)
{
	size_t lo = 0, hi = v->nrecs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v->recs[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < v->nrecs && v->recs[lo].id == id ? &v->recs[lo] : NULL;
}

/* One kept row against its records: each relayed row is in Kafka with its
 * key, payload and headers (a dead letter carries other headers: only its
 * presence counts). A row not relayed yet may already be in Kafka (a
 * commit the database has not recorded yet): not judged here, only noted
 * for the lost-by-database report (equal, or another row under that id). */
static void check_row(struct verify *v, const struct batch *b, const struct record *r,
		      bool relayed)
{
	struct vrec *k = find_id(v, r->id);
	uint64_t d = 0;

	v->db_rows++;
	if (k)
		d = verify_digest(r->topic, r->key, r->key_len, r->payload, r->payload_len,
				  b->hdrs + r->hdr_off, r->hdr_count);
	if (!relayed) {
		for (; k && k < v->recs + v->nrecs && k->id == r->id; k++)
			k->row = k->dead || k->digest == d ? VR_PENDING : VR_PENDING_OTHER;
		return;
	}
	if (v->db_relayed++ == 0)
		v->db_min_id = r->id;
	v->db_max_id = r->id;
	if (!k) {
		verify_note(&v->rep, VK_MISSING, "outbox row %" PRId64 " (topic \"%s\")", r->id,
			    r->topic);
		return;
	}
	for (; k < v->recs + v->nrecs && k->id == r->id; k++) {
		k->row = VR_RELAYED;
		if (!k->dead && k->digest != d)
			verify_note(&v->rep, VK_CONTENT,
				    "outbox row %" PRId64 ": \"%s\"/%" PRId32 "@%" PRId64
				    " differs in topic, key, payload or headers",
				    r->id, v->tps[k->tp].topic, v->tps[k->tp].partition, k->offset);
	}
}

/* The rows present against Kafka, in pages: with postgres.retention_ms the
 * kept rows, and (schema 5) relayed rows whose partition is not truncated
 * yet. Then, with retention and without --since, every record in the id
 * span of the kept relayed rows must have its row: purge() deletes the
 * oldest first. Without retention the relayed rows present are whole
 * partitions of id blocks, not a span (a partition held by an open writer
 * transaction keeps its block while newer blocks go), so nothing is
 * concluded from a row's absence. -1 with v->err when the database fails. */
static int check_database(struct verify *v, struct outbox *ob)
{
	struct batch b = {0};
	bool relayed[VERIFY_PAGE_ROWS];
	int64_t after = 0;
	int n, rc;

	if (v->db_batch < 0)
		return 0; /* no relay row: nothing of it is relayed, nothing kept */
	for (;;) {
		batch_reset(&b);
		rc = outbox_retained_page(ob, after, VERIFY_PAGE_ROWS, v->opts->since_ms, &b,
					  relayed, &n);
		if (rc != OB_OK) {
			snprintf(v->err, sizeof(v->err), "could not read the kept outbox rows: %s",
				 outbox_errstr(ob));
			batch_free(&b);
			return -1;
		}
		if (n == 0)
			break;
		for (size_t i = 0; i < b.nrecs; i++)
			check_row(v, &b, &b.recs[i], relayed[i]);
		after = b.recs[b.nrecs - 1].id;
		progress(v, false);
	}
	batch_free(&b);
	if (v->opts->since_ms > 0 || v->db_relayed == 0 || v->cfg->retention_ms <= 0)
		return 0;
	for (size_t i = 0; i < v->nrecs; i++) {
		const struct vrec *k = &v->recs[i];
		if (k->row == VR_NONE && k->id >= v->db_min_id && k->id <= v->db_max_id)
			verify_note(&v->rep, VK_NOT_IN_DB,
				    "outbox-id %" PRId64 " at \"%s\"/%" PRId32 "@%" PRId64
				    ": no such row among the kept rows %" PRId64 "..%" PRId64,
				    k->id, v->tps[k->tp].topic, v->tps[k->tp].partition, k->offset,
				    v->db_min_id, v->db_max_id);
	}
	return 0;
}

static int cmp_offset(const void *a, const void *b)
{
	const struct vrec *x = a, *y = b;

	if (x->tp != y->tp)
		return (x->tp > y->tp) - (x->tp < y->tp);
	return (x->offset > y->offset) - (x->offset < y->offset);
}

/*
 * The records Kafka has that the database lost (verify_lost_classify),
 * judged when Kafka's checkpoints pass the stored batch and the stored
 * position did not move while the audit read (a relay advancing then
 * would have deleted rows that are not lost). Leaves v->recs in
 * partition and offset order. -1 with v->err when the database fails.
 */
static int check_lost(struct verify *v, struct outbox *ob)
{
	struct verify_lost_rec *part = NULL;
	size_t cap = 0;

	if (outbox_position_stamp(ob, &v->db_batch2, &v->db_advanced2) != OB_OK) {
		snprintf(v->err, sizeof(v->err), "could not read the stored position: %s",
			 outbox_errstr(ob));
		return -1;
	}
	if (v->db_batch < 0)
		v->lost_judged = LJ_NO_RELAY;
	else if (v->db_batch2 != v->db_batch || v->db_advanced2 != v->db_advanced)
		v->lost_judged = LJ_MOVED;
	else if (v->ckpt_max_seq <= v->db_batch)
		v->lost_judged = LJ_NOT_AHEAD;
	else
		v->lost_judged = LJ_JUDGED;
	if (v->lost_judged != LJ_JUDGED)
		return 0;
	qsort(v->recs, v->nrecs, sizeof(*v->recs), cmp_offset);
	for (size_t lo = 0, hi; lo < v->nrecs; lo = hi) {
		for (hi = lo; hi < v->nrecs && v->recs[hi].tp == v->recs[lo].tp; hi++)
			;
		if (hi - lo > cap) {
			cap = hi - lo;
			part = xrealloc(part, cap * sizeof(*part));
		}
		for (size_t i = lo; i < hi; i++) {
			part[i - lo].offset = v->recs[i].offset;
			part[i - lo].ts_ms = v->recs[i].ts;
			part[i - lo].row = (enum verify_row)v->recs[i].row;
		}
		verify_lost_classify(part, hi - lo, v->db_advanced);
		for (size_t i = lo; i < hi; i++) {
			struct vrec *k = &v->recs[i];

			k->after = (uint8_t)part[i - lo].after;
			if (k->after == VA_BEFORE)
				continue;
			v->after_records++;
			v->after_idsum += (uint64_t)k->id;
			if (k->after == VA_PRESENT) {
				v->after_present++;
				continue;
			}
			if (k->after == VA_REUSED)
				v->lost_reused++;
			else
				v->lost_absent++;
			verify_note(&v->rep, VK_LOST_BY_DB,
				    "outbox-id %" PRId64 " at \"%s\"/%" PRId32 "@%" PRId64 ": %s",
				    k->id, v->tps[k->tp].topic, v->tps[k->tp].partition, k->offset,
				    verify_after_str((enum verify_after)k->after));
		}
	}
	free(part);
	return 0;
}

/* ---- the summary ---- */

static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

/* The records found after the stored batch against the checkpoints'
 * digests of those batches: "equal" (every record of them found, no
 * other), "differs", or "unknown" (a checkpoint without a digest, written
 * by a relay before it). */
static const char *digest_verdict(const struct verify *v)
{
	if (v->digest_missing)
		return "unknown";
	return v->after_records == v->digest_rows &&
			       (v->after_idsum & (uint64_t)INT64_MAX) ==
				       (v->digest_idsum & (uint64_t)INT64_MAX)
		       ? "equal"
		       : "differs";
}

static const char *const judged_names[] = {
	[LJ_NO_RELAY] = "no_relay",
	[LJ_NOT_AHEAD] = "not_ahead",
	[LJ_MOVED] = "position_moved",
	[LJ_JUDGED] = "judged",
};

/* Everything but the closing brace: --list-lost may add its list. */
static void print_json(const struct verify *v, FILE *out)
{
	int64_t min_id = v->min_id, max_id = v->max_id;

	fprintf(out, "{\"relay\":");
	json_string(out, v->cfg->relay_name);
	fprintf(out, ",\"checkpoint_topic\":");
	json_string(out, v->cfg->checkpoint_topic);
	fprintf(out,
		",\"checkpoints\":%" PRId64 ",\"first_batch\":%" PRId64 ",\"last_batch\":%" PRId64
		",\"checkpoints_before_from_batch\":%" PRId64 ",\"other_keys\":%" PRId64,
		v->chain.checkpoints, v->chain.checkpoints ? v->chain.first_seq : 0,
		v->chain.checkpoints ? v->chain.last.batch_seq : 0, v->ckpt_skipped_before,
		v->other_keys);
	fprintf(out, ",\"topics\":[");
	for (int i = 0; i < v->ntopics; i++) {
		if (i)
			fputc(',', out);
		json_string(out, v->topics[i]);
	}
	fprintf(out, "],\"dead_letter_topic\":");
	json_string(out, v->cfg->dead_letter_topic);
	fprintf(out,
		",\"records_read\":%" PRId64 ",\"rows\":%" PRId64 ",\"dead_letters\":%" PRId64
		",\"min_id\":%" PRId64 ",\"max_id\":%" PRId64 ",\"db_rows\":%" PRId64
		",\"db_relayed\":%" PRId64 ",\"db_min_id\":%" PRId64 ",\"db_max_id\":%" PRId64
		",\"violations\":%" PRId64 ",\"kinds\":{",
		v->records_read, v->rows, v->dead_letters, min_id, max_id, v->db_rows,
		v->db_relayed, v->db_min_id, v->db_max_id, verify_total(&v->rep));
	for (int k = 0; k < VK_KIND_COUNT; k++) {
		if (k)
			fputc(',', out);
		fprintf(out, "\"%s\":{\"count\":%" PRId64 ",\"examples\":[", kind_names[k],
			v->rep.count[k]);
		for (int e = 0; e < VERIFY_EXAMPLES && e < v->rep.count[k]; e++) {
			if (e)
				fputc(',', out);
			json_string(out, v->rep.example[k][e]);
		}
		fprintf(out, "]}");
	}
	fprintf(out,
		"},\"database_position\":{\"batch\":%" PRId64 ",\"advanced_ms\":%" PRId64
		",\"kafka_batch\":%" PRId64 ",\"lost_report\":\"%s\",\"after_position\":%" PRId64
		",\"rows_present\":%" PRId64 ",\"lost\":%" PRId64 ",\"ids_reused\":%" PRId64
		",\"checkpoint_rows\":%" PRId64 ",\"digest\":\"%s\"}",
		v->db_batch, v->db_advanced, v->ckpt_max_seq, judged_names[v->lost_judged],
		v->after_records, v->after_present, v->lost_absent + v->lost_reused, v->lost_reused,
		v->digest_rows,
		v->lost_judged == LJ_JUDGED ? digest_verdict(v) : "not_judged");
}

static void print_text(const struct verify *v, FILE *out)
{
	int64_t total = verify_total(&v->rep);

	fprintf(out, "relay \"%s\"\n", v->cfg->relay_name);
	if (v->chain.checkpoints)
		fprintf(out,
			"checkpoints: %" PRId64 " in topic \"%s\", batches %" PRId64 "..%" PRId64
			" (offsets %" PRId64 "..%" PRId64 ")\n",
			v->chain.checkpoints, v->cfg->checkpoint_topic, v->chain.first_seq,
			v->chain.last.batch_seq, v->ckpt_first_offset, v->ckpt_last_offset);
	else
		fprintf(out, "checkpoints: none in topic \"%s\"\n", v->cfg->checkpoint_topic);
	if (v->ckpt_skipped_before)
		fprintf(out, "checkpoints before --from-batch: %" PRId64 " (not checked)\n",
			v->ckpt_skipped_before);
	if (v->other_keys)
		fprintf(out, "checkpoint records of other relays: %" PRId64 " (ignored)\n",
			v->other_keys);
	fprintf(out, "topics:");
	for (int i = 0; i < v->ntopics; i++)
		fprintf(out, " \"%s\"", v->topics[i]);
	fprintf(out, "%s\n", v->ntopics ? "" : " none (no --topics, no rows in the outbox table)");
	fprintf(out, "rows: %" PRId64, v->rows);
	if (v->nrecs)
		fprintf(out, " (outbox-ids %" PRId64 "..%" PRId64 ")", v->min_id, v->max_id);
	fprintf(out, "\n");
	if (v->cfg->dead_letter_topic[0])
		fprintf(out, "dead letters: %" PRId64 " in topic \"%s\"\n", v->dead_letters,
			v->cfg->dead_letter_topic);
	fprintf(out, "records read: %" PRId64 "\n", v->records_read);
	fprintf(out, "kept rows checked: %" PRId64 " relayed", v->db_relayed);
	if (v->db_relayed)
		fprintf(out, " (ids %" PRId64 "..%" PRId64 ")", v->db_min_id, v->db_max_id);
	fprintf(out, ", %" PRId64 " not relayed yet\n", v->db_rows - v->db_relayed);
	switch (v->lost_judged) {
	case LJ_NO_RELAY:
		fprintf(out, "database position: none for this relay\n");
		break;
	case LJ_MOVED:
		fprintf(out,
			"database position: moved from batch %" PRId64 " to %" PRId64
			" during the audit: what the database lost is not judged (stop the relay)\n",
			v->db_batch, v->db_batch2);
		break;
	case LJ_NOT_AHEAD:
		fprintf(out, "database position: batch %" PRId64 ", nothing in Kafka after it\n",
			v->db_batch);
		break;
	case LJ_JUDGED:
		fprintf(out,
			"database position: batch %" PRId64 ", Kafka's checkpoints reach batch %" PRId64
			": %" PRId64 " records published after it, %" PRId64 " with their row in the"
			" table, %" PRId64 " lost by the database (%" PRId64 " of them ids reused)\n",
			v->db_batch, v->ckpt_max_seq, v->after_records, v->after_present,
			v->lost_absent + v->lost_reused, v->lost_reused);
		if (strcmp(digest_verdict(v), "equal") == 0)
			fprintf(out, "  the checkpoints of those batches count the same rows (%" PRId64
				     ", ids summed): none missed, none foreign\n",
				v->digest_rows);
		else if (strcmp(digest_verdict(v), "differs") == 0)
			fprintf(out, "  WARNING: the checkpoints of those batches count %" PRId64
				     " rows (or other ids): records of them not recognized, or"
				     " records of other producers taken (see README)\n",
				v->digest_rows);
		else
			fprintf(out, "  the checkpoints of those batches carry no digest to compare\n");
		break;
	}
	if (total == 0) {
		fprintf(out, "violations: none\n");
		return;
	}
	fprintf(out, "violations: %" PRId64 "\n", total);
	for (int k = 0; k < VK_KIND_COUNT; k++) {
		if (!v->rep.count[k])
			continue;
		fprintf(out, "  %s: %" PRId64 "\n", kind_names[k], v->rep.count[k]);
		for (int e = 0; e < VERIFY_EXAMPLES && e < v->rep.count[k]; e++)
			fprintf(out, "    %s\n", v->rep.example[k][e]);
	}
}

/* A key for one line: printable ASCII as it is, other bytes, tab and
 * backslash as \xNN; at most 64 bytes of the key. */
static void print_key(FILE *out, const rd_kafka_message_t *m)
{
	const unsigned char *k = m->key;

	for (size_t i = 0; k && i < m->key_len && i < 64; i++) {
		if (k[i] >= 0x20 && k[i] < 0x7f && k[i] != '\\' && k[i] != '"')
			fputc(k[i], out);
		else
			fprintf(out, "\\x%02x", k[i]);
	}
	if (k && m->key_len > 64)
		fprintf(out, "...");
}

static void print_lost_one(const struct verify *v, const struct vrec *k,
			   const rd_kafka_message_t *m, bool *first, FILE *out)
{
	const char *why = k->after == VA_REUSED	 ? "id reused"
			  : k->after == VA_PRESENT ? "row present"
						   : "not in the database";
	/* A row present is published already but not lost: the OR003
	 * procedure deletes it before a reset that relays the table. */
	const char *what = k->after == VA_PRESENT ? "published" : "lost";

	if (!v->opts->json) {
		fprintf(out, "%s\t%s\t%" PRId32 "\t%" PRId64 "\t%" PRId64 "\t", what,
			v->tps[k->tp].topic, v->tps[k->tp].partition, k->offset, k->id);
		print_key(out, m);
		fprintf(out, "\t%s\n", why);
		return;
	}
	fprintf(out, "%s{\"topic\":", *first ? "" : ",");
	json_string(out, v->tps[k->tp].topic);
	fprintf(out, ",\"partition\":%" PRId32 ",\"offset\":%" PRId64 ",\"outbox_id\":%" PRId64
		",\"key\":\"", v->tps[k->tp].partition, k->offset, k->id);
	print_key(out, m);
	fprintf(out, "\",\"why\":\"%s\",\"state\":\"%s\"}", why, what);
	*first = false;
}

/* Listed by --list-lost: lost, or published with its row still present. */
static bool is_lost(const struct vrec *k)
{
	return k->after == VA_LOST || k->after == VA_REUSED || k->after == VA_PRESENT;
}

/* --list-lost: the lost records of one partition (v->recs[lo, hi), in
 * offset order), read again from Kafka for their keys. */
static int list_lost_partition(struct verify *v, rd_kafka_t *rk, size_t lo, size_t hi,
			       bool *first, FILE *out)
{
	const struct vrec *k = v->recs + lo, *end = v->recs + hi, *last = NULL;
	rd_kafka_topic_t *rkt;
	int64_t deadline;
	int r = 0;

	for (; k < end && !is_lost(k); k++)
		;
	for (const struct vrec *j = k; j < end; j++)
		if (is_lost(j))
			last = j;
	if (k == end)
		return 0;
	rkt = rd_kafka_topic_new(rk, v->tps[k->tp].topic, NULL);
	if (!rkt || rd_kafka_consume_start(rkt, v->tps[k->tp].partition, k->offset) < 0) {
		snprintf(v->err, sizeof(v->err), "could not read topic \"%s\" again: %s",
			 v->tps[k->tp].topic, rd_kafka_err2str(rd_kafka_last_error()));
		if (rkt)
			rd_kafka_topic_destroy(rkt);
		return -1;
	}
	deadline = now_ms() + checkpoint_read_budget_ms(v->cfg);
	while (k <= last) {
		rd_kafka_message_t *m = rd_kafka_consume(rkt, v->tps[k->tp].partition, 200);

		if (!m || m->err) {
			if (m)
				rd_kafka_message_destroy(m);
			if (!relay_stop_requested && now_ms() < deadline)
				continue;
			snprintf(v->err, sizeof(v->err),
				 "topic \"%s\" partition %" PRId32 ": could not read offset %" PRId64
				 " again",
				 v->tps[k->tp].topic, v->tps[k->tp].partition, k->offset);
			r = -1;
			break;
		}
		while (k <= last && (k->offset < m->offset || !is_lost(k)))
			k++;
		if (k <= last && k->offset == m->offset)
			print_lost_one(v, k++, m, first, out);
		deadline = now_ms() + checkpoint_read_budget_ms(v->cfg);
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consume_stop(rkt, v->tps[last->tp].partition);
	rd_kafka_topic_destroy(rkt);
	return r;
}

/* --list-lost: one line (or JSON object) per record lost by the database. */
static int list_lost(struct verify *v, rd_kafka_t *rk, FILE *out)
{
	bool first = true;
	int r = 0;

	if (v->opts->json)
		fprintf(out, ",\"lost_list\":[");
	for (size_t lo = 0, hi; lo < v->nrecs && r == 0 && v->lost_judged == LJ_JUDGED; lo = hi) {
		for (hi = lo; hi < v->nrecs && v->recs[hi].tp == v->recs[lo].tp; hi++)
			;
		r = list_lost_partition(v, rk, lo, hi, &first, out);
	}
	if (v->opts->json)
		fprintf(out, "]");
	return r;
}

/* Add a topic to read unless it is there already or is one the relay
 * writes itself (checkpoints, dead letters: read apart). */
static void topic_add(struct verify *v, const char *topic)
{
	if (strcmp(topic, v->cfg->checkpoint_topic) == 0 ||
	    strcmp(topic, v->cfg->dead_letter_topic) == 0)
		return;
	for (int i = 0; i < v->ntopics; i++)
		if (strcmp(v->topics[i], topic) == 0)
			return;
	v->topics = xrealloc(v->topics, (size_t)(v->ntopics + 1) * sizeof(char *));
	v->topics[v->ntopics++] = xstrdup(topic);
}

/*
 * The order: the database first, for the stored position and the topics
 * its rows name (read-only queries); then Kafka, the checkpoint partition
 * and every topic, each to the end it had when its read began; then the
 * records among themselves; then the kept rows against the records, which
 * needs them all; last the stored position again, to judge what the
 * database lost only if it did not move meanwhile.
 */
int verify_run(const struct config *cfg, const struct verify_opts *opts)
{
	struct verify *v = xcalloc(1, sizeof(*v));
	struct outbox *ob;
	rd_kafka_t *rk = NULL;
	char **dbtopics = NULL;
	int ndb = 0, ex = EXIT_STARTUP;

	v->cfg = cfg;
	v->opts = opts;
	verify_chain_init(&v->chain);
	v->ckpt_max_seq = -1;
	v->progress = isatty(STDERR_FILENO);
	v->progress_at = now_ms();
	ob = outbox_connect(cfg, NULL, v->err, sizeof(v->err));
	if (!ob)
		goto out;
	if (outbox_retained_topics(ob, &dbtopics, &ndb) != OB_OK) {
		snprintf(v->err, sizeof(v->err), "could not read the outbox topics: %s",
			 outbox_errstr(ob));
		goto out;
	}
	if (outbox_position_stamp(ob, &v->db_batch, &v->db_advanced) != OB_OK) {
		snprintf(v->err, sizeof(v->err), "could not read the stored position: %s",
			 outbox_errstr(ob));
		goto out;
	}
	for (int i = 0; i < opts->ntopics; i++)
		topic_add(v, opts->topics[i]);
	for (int i = 0; i < ndb; i++)
		topic_add(v, dbtopics[i]);
	rk = reader_new(v);
	if (!rk)
		goto out;
	if (read_partition(v, rk, cfg->checkpoint_topic, 0, true, 0, false) < 0)
		goto out;
	for (int i = 0; i < v->ntopics; i++)
		if (read_topic(v, rk, v->topics[i], false, i >= opts->ntopics) < 0)
			goto out;
	if (cfg->dead_letter_topic[0] && read_topic(v, rk, cfg->dead_letter_topic, true, true) < 0)
		goto out;
	check_records(v);
	if (check_database(v, ob) < 0 || check_lost(v, ob) < 0)
		goto out;
	progress(v, true);
	if (opts->json)
		print_json(v, stdout);
	else
		print_text(v, stdout);
	if (opts->list_lost && list_lost(v, rk, stdout) < 0)
		goto out;
	if (opts->json)
		fprintf(stdout, "}\n");
	ex = verify_total(&v->rep) ? EXIT_VIOLATIONS : EXIT_OK;
out:
	progress(v, true);
	if (ex == EXIT_STARTUP)
		fprintf(stderr, "outbox-relay: verify: %s\n", v->err);
	if (rk)
		rd_kafka_destroy(rk);
	outbox_free(ob);
	for (int i = 0; i < ndb; i++)
		free(dbtopics[i]);
	free(dbtopics);
	for (int i = 0; i < v->ntopics; i++)
		free(v->topics[i]);
	free(v->topics);
	verify_chain_clear(&v->chain);
	free(v->recs);
	free(v->tps);
	free(v);
	return ex;
}
