/* publisher.c: the transactional producer. Maps librdkafka's transaction
 * errors onto what the relay must do: commit again, abort and re-send,
 * recreate and re-read the checkpoint, or stop. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "crash.h"
#include "log.h"
#include "publisher.h"

/* A topic the relay produces to, and what it last learned of it. */
struct topic_handle {
	char *name;
	rd_kafka_topic_t *rkt;
	bool exists;
	int64_t checked_ms; /* 0 = never */
	int64_t max_bytes;  /* the topic's max.message.bytes; 0 = unknown */
};

struct publisher {
	const struct config *cfg;
	rd_kafka_t *rk;
	struct topic_handle *topics;
	size_t ntopics;
	rd_kafka_topic_t *ckpt_rkt;
	rd_kafka_topic_t *dlq_rkt;
	int64_t client_max_bytes; /* the producer's message.max.bytes */
	bool needs_recreate;
	char errstr[512];

	/* The first failed delivery of the current transaction (dr callback,
	 * served inside commit's flush on this thread). */
	rd_kafka_resp_err_t dr_err;
	int64_t dr_id;
	int64_t poison_id;
};

const char *pub_status_str(enum pub_status st)
{
	static const char *const names[] = {"ok", "resend", "unknown", "fenced", "poison", "fatal"};
	return names[st];
}

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	enum log_level lv = level <= 3 ? LOG_ERROR : level <= 5 ? LOG_WARNING : level == 6 ? LOG_INFO : LOG_DEBUG;

	(void)rk;
	log_write(lv, "librdkafka", "%s: %s", fac, buf);
}

/* The checkpoint reader gets the producer's kafka.properties too; librdkafka's
 * warnings that producer properties do not apply to it are noise. */
static void kafka_reader_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "producer property"))
		level = 7;
	kafka_log_cb(rk, level, fac, buf);
}

rd_kafka_conf_t *kafka_conf_new(const struct config *cfg, bool reader, char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char rderr[512];

	rd_kafka_conf_set_log_cb(conf, reader ? kafka_reader_log_cb : kafka_log_cb);
	if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->kafka_bootstrap, rderr,
			      sizeof(rderr)) != RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(conf, "client.id", "outbox-relay", rderr, sizeof(rderr)) !=
		    RD_KAFKA_CONF_OK) {
		snprintf(errbuf, errlen, "%s: kafka.bootstrap_servers: %s", cfg->path, rderr);
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	for (int i = 0; i < cfg->n_kafka_props; i++) {
		char *kv = xstrdup(cfg->kafka_props[i]);
		char *eq = strchr(kv, '=');
		*eq = '\0';
		if (strcmp(kv, "transactional.id") == 0 || strcmp(kv, "enable.idempotence") == 0 ||
		    strcmp(kv, "isolation.level") == 0 || strcmp(kv, "bootstrap.servers") == 0) {
			snprintf(errbuf, errlen,
				 "%s: kafka.properties: \"%s\" is set by the relay itself and may "
				 "not be overridden",
				 cfg->path, kv);
			free(kv);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}
		if (rd_kafka_conf_set(conf, kv, eq + 1, rderr, sizeof(rderr)) != RD_KAFKA_CONF_OK) {
			snprintf(errbuf, errlen, "%s: kafka.properties: \"%s\": %s", cfg->path,
				 cfg->kafka_props[i], rderr);
			free(kv);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}
		free(kv);
	}
	return conf;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct publisher *pub = opaque;

	(void)rk;
	/* Purged records only echo the abort; keep the first real cause. */
	if (m->err && !pub->dr_err && m->err != RD_KAFKA_RESP_ERR__PURGE_QUEUE &&
	    m->err != RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
		pub->dr_err = m->err;
		pub->dr_id = (int64_t)(intptr_t)m->_private;
	}
}

/* Set a property the relay derives; the user's kafka.properties were applied
 * first, so an explicit user value is kept where `only_default` says so. */
static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errbuf,
		    size_t errlen)
{
	char rderr[512];

	if (rd_kafka_conf_set(conf, name, value, rderr, sizeof(rderr)) != RD_KAFKA_CONF_OK) {
		snprintf(errbuf, errlen, "could not set producer property %s=%s: %s", name, value,
			 rderr);
		return -1;
	}
	return 0;
}

static bool user_set(const struct config *cfg, const char *name)
{
	size_t n = strlen(name);

	for (int i = 0; i < cfg->n_kafka_props; i++)
		if (strncmp(cfg->kafka_props[i], name, n) == 0 && cfg->kafka_props[i][n] == '=')
			return true;
	return false;
}

struct publisher *publisher_new(const struct config *cfg, char *errbuf, size_t errlen)
{
	struct publisher *pub;
	rd_kafka_conf_t *conf;
	char rderr[512], v[32];
	long long kb;

	conf = kafka_conf_new(cfg, false, errbuf, errlen);
	if (!conf)
		return NULL;
	pub = xcalloc(1, sizeof(*pub));
	pub->cfg = cfg;

	/* The transaction's records and its checkpoint must all fit in the
	 * local queue at once (produce never blocks mid-transaction), and no
	 * more: memory stays bounded by the batch limits. */
	snprintf(v, sizeof(v), "%d", cfg->batch_max_rows * 2 + 16);
	if (conf_set(conf, "queue.buffering.max.messages", v, errbuf, errlen) < 0)
		goto fail;
	kb = cfg->batch_max_bytes * 2 / 1024 + 4096;
	snprintf(v, sizeof(v), "%lld", kb);
	if (conf_set(conf, "queue.buffering.max.kbytes", v, errbuf, errlen) < 0)
		goto fail;
	snprintf(v, sizeof(v), "%d", cfg->transaction_timeout_ms);
	if (conf_set(conf, "transactional.id", cfg->relay_name, errbuf, errlen) < 0 ||
	    conf_set(conf, "transaction.timeout.ms", v, errbuf, errlen) < 0 ||
	    conf_set(conf, "message.timeout.ms", v, errbuf, errlen) < 0)
		goto fail;
	/* Java producers place keyed records with murmur2; match them so a
	 * key lands on the same partition whichever side produced it. */
	if (!user_set(cfg, "partitioner") &&
	    conf_set(conf, "partitioner", "murmur2_random", errbuf, errlen) < 0)
		goto fail;
	rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
	rd_kafka_conf_set_opaque(conf, pub);

	pub->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, rderr, sizeof(rderr));
	if (!pub->rk) {
		snprintf(errbuf, errlen, "could not create Kafka producer: %s", rderr);
		goto fail;
	}
	{
		char buf[32];
		size_t sz = sizeof(buf);
		if (rd_kafka_conf_get(rd_kafka_conf(pub->rk), "message.max.bytes", buf, &sz) ==
		    RD_KAFKA_CONF_OK)
			pub->client_max_bytes = strtoll(buf, NULL, 10);
	}
	return pub;
fail:
	rd_kafka_conf_destroy(conf);
	free(pub);
	return NULL;
}

/* The checkpoint and dead-letter topic handles are made on first use, once
 * producer_start has made sure the topics exist: a handle made before its
 * topic exists learns otherwise only at librdkafka's next topic scan (up to a
 * second), and that second would be spent in the first commit (bench F9). */
static rd_kafka_topic_t *fixed_topic(struct publisher *pub, rd_kafka_topic_t **slot,
				     const char *name)
{
	if (!*slot)
		*slot = rd_kafka_topic_new(pub->rk, name, NULL);
	return *slot;
}

static void set_err(struct publisher *pub, const char *what, const rd_kafka_error_t *error)
{
	snprintf(pub->errstr, sizeof(pub->errstr), "%s: %s (%s)", what, rd_kafka_error_string(error),
		 rd_kafka_error_name(error));
}

static bool is_fencing(rd_kafka_resp_err_t err)
{
	return err == RD_KAFKA_RESP_ERR__FENCED || err == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
	       err == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH;
}

/* Classify a fatal error: fencing or anything else. */
static enum pub_status fatal_status(struct publisher *pub)
{
	char buf[256];
	rd_kafka_resp_err_t err = rd_kafka_fatal_error(pub->rk, buf, sizeof(buf));

	if (err)
		snprintf(pub->errstr, sizeof(pub->errstr), "fatal producer error: %s (%s)", buf,
			 rd_kafka_err2name(err));
	return is_fencing(err) ? PUB_FENCED : PUB_FATAL;
}

enum pub_status publisher_init(struct publisher *pub, int timeout_ms)
{
	rd_kafka_error_t *error = rd_kafka_init_transactions(pub->rk, timeout_ms);
	enum pub_status st;

	if (!error)
		return PUB_OK;
	set_err(pub, "could not initialize transactions", error);
	if (rd_kafka_error_is_fatal(error))
		st = is_fencing(rd_kafka_error_code(error)) ? PUB_FENCED : fatal_status(pub);
	else
		st = PUB_UNKNOWN; /* timed out or retriable: init again later */
	rd_kafka_error_destroy(error);
	return st;
}

static struct topic_handle *topic_get(struct publisher *pub, const char *name)
{
	struct topic_handle *th;

	for (size_t i = 0; i < pub->ntopics; i++)
		if (strcmp(pub->topics[i].name, name) == 0)
			return &pub->topics[i];
	pub->topics = xrealloc(pub->topics, (pub->ntopics + 1) * sizeof(*pub->topics));
	th = &pub->topics[pub->ntopics++];
	memset(th, 0, sizeof(*th));
	th->name = xstrdup(name);
	th->rkt = rd_kafka_topic_new(pub->rk, name, NULL);
	return th;
}

/* The topic's max.message.bytes, or 0 when the broker will not say. */
static int64_t topic_max_bytes(struct publisher *pub, const char *name)
{
	rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name);
	rd_kafka_queue_t *q = rd_kafka_queue_new(pub->rk);
	rd_kafka_event_t *ev;
	int64_t max = 0;

	rd_kafka_DescribeConfigs(pub->rk, &res, 1, NULL, q);
	ev = rd_kafka_queue_poll(q, 10000);
	if (ev && !rd_kafka_event_error(ev)) {
		size_t nres, ncfg;
		const rd_kafka_ConfigResource_t **rs = rd_kafka_DescribeConfigs_result_resources(
			rd_kafka_event_DescribeConfigs_result(ev), &nres);
		for (size_t i = 0; i < nres; i++) {
			const rd_kafka_ConfigEntry_t **ce = rd_kafka_ConfigResource_configs(rs[i], &ncfg);
			for (size_t k = 0; k < ncfg; k++)
				if (strcmp(rd_kafka_ConfigEntry_name(ce[k]), "max.message.bytes") == 0 &&
				    rd_kafka_ConfigEntry_value(ce[k]))
					max = strtoll(rd_kafka_ConfigEntry_value(ce[k]), NULL, 10);
		}
	}
	if (ev)
		rd_kafka_event_destroy(ev);
	rd_kafka_queue_destroy(q);
	rd_kafka_ConfigResource_destroy(res);
	return max;
}

/* Learn whether a topic exists and its size limit; a known topic is looked
 * at again every five minutes, a missing one every time it is needed.
 * Returns -1 when the broker could not be asked. */
static int topic_refresh(struct publisher *pub, struct topic_handle *th)
{
	const struct rd_kafka_metadata *md;
	rd_kafka_resp_err_t err;

	if (th->checked_ms && th->exists && now_ms() - th->checked_ms < 300000)
		return 0;
	err = rd_kafka_metadata(pub->rk, 0, th->rkt, &md, 10000);
	if (err)
		return -1;
	th->exists = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
		     md->topics[0].partition_cnt > 0;
	rd_kafka_metadata_destroy(md);
	th->checked_ms = now_ms();
	if (th->exists)
		th->max_bytes = topic_max_bytes(pub, th->name);
	return 0;
}

/* What the broker will count against max.message.bytes for a batch holding
 * only this record: the payload, key and headers, plus the record and batch
 * framing (generous, so a row is never let through to fail in the commit). */
static int64_t record_wire_size(const struct batch *b, const struct record *r)
{
	int64_t n = 128 + (int64_t)(r->key_len + r->payload_len);

	for (size_t h = 0; h < r->hdr_count; h++)
		n += 10 + (int64_t)(b->hdrs[r->hdr_off + h].name_len + b->hdrs[r->hdr_off + h].value_len);
	return n + 32; /* the outbox-id header */
}

int publisher_check(struct publisher *pub, const struct batch *b, size_t i, char *why,
		    size_t whylen)
{
	const struct record *r = &b->recs[i];
	struct topic_handle *th = topic_get(pub, r->topic);
	int64_t size = record_wire_size(b, r);

	if (pub->client_max_bytes && size > pub->client_max_bytes) {
		snprintf(why, whylen,
			 "record of about %" PRId64 " bytes exceeds the producer's message.max.bytes (%" PRId64 ")",
			 size, pub->client_max_bytes);
		return 1;
	}
	if (topic_refresh(pub, th) < 0)
		return -1;
	if (!th->exists) {
		snprintf(why, whylen, "topic \"%s\" does not exist", r->topic);
		return 1;
	}
	if (th->max_bytes && size > th->max_bytes) {
		snprintf(why, whylen,
			 "record of about %" PRId64 " bytes exceeds max.message.bytes of topic \"%s\" (%" PRId64 ")",
			 size, r->topic, th->max_bytes);
		return 1;
	}
	return 0;
}

/* Errors that no retry can cure: the row itself cannot be published. */
static bool is_poison(rd_kafka_resp_err_t err)
{
	switch (err) {
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
	case RD_KAFKA_RESP_ERR_INVALID_MSG:
	case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
	case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
	case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
		return true;
	default:
		return false;
	}
}

/* Produce one message, waiting out a full local queue; the queue is sized
 * for a whole batch so that only happens while deliveries drain. msgflags:
 * RD_KAFKA_MSG_F_COPY, or 0 to lend val to librdkafka until the message is
 * delivered or purged. */
static rd_kafka_resp_err_t produce_to(struct publisher *pub, rd_kafka_topic_t *rkt,
				      int32_t partition, int msgflags, const void *key,
				      size_t klen, const void *val, size_t vlen, int64_t ts,
				      rd_kafka_headers_t *hdrs, int64_t id)
{
	rd_kafka_resp_err_t err;

	if (!rkt) /* rd_kafka_topic_new refused the name */
		return RD_KAFKA_RESP_ERR__INVALID_ARG;
	for (;;) {
		err = rd_kafka_producev(pub->rk, RD_KAFKA_V_RKT(rkt),
					RD_KAFKA_V_PARTITION(partition),
					RD_KAFKA_V_MSGFLAGS(msgflags),
					RD_KAFKA_V_KEY(key, klen), RD_KAFKA_V_VALUE((void *)val, vlen),
					RD_KAFKA_V_TIMESTAMP(ts), RD_KAFKA_V_HEADERS(hdrs),
					RD_KAFKA_V_OPAQUE((void *)(intptr_t)id), RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			return err;
		rd_kafka_poll(pub->rk, 50);
	}
}

/* Produce a row to the partition the partitioner picks for its key. The
 * payload is not copied: it stays in the batch's pages, which the caller
 * keeps until the transaction is committed or aborted or the producer is
 * freed (librdkafka copies keys and headers itself). */
static rd_kafka_resp_err_t produce(struct publisher *pub, rd_kafka_topic_t *rkt, const void *key,
				   size_t klen, const void *val, size_t vlen, int64_t ts,
				   rd_kafka_headers_t *hdrs, int64_t id)
{
	return produce_to(pub, rkt, RD_KAFKA_PARTITION_UA, 0, key, klen, val, vlen, ts, hdrs, id);
}

/* Abort after a failure before commit; any trouble makes the outcome the
 * next producer's to settle. */
static enum pub_status abort_txn(struct publisher *pub, enum pub_status want)
{
	rd_kafka_error_t *error = rd_kafka_abort_transaction(pub->rk, pub->cfg->commit_timeout_ms);

	if (!error)
		return want;
	pub->needs_recreate = true;
	if (rd_kafka_error_is_fatal(error)) {
		set_err(pub, "could not abort transaction", error);
		rd_kafka_error_destroy(error);
		return fatal_status(pub);
	}
	log_warning("could not abort transaction: %s", rd_kafka_error_string(error));
	rd_kafka_error_destroy(error);
	return PUB_UNKNOWN;
}

/* The row as a dead letter: its key, payload (when it fits) and headers,
 * and why it could not be published where it was meant to go. */
static rd_kafka_resp_err_t produce_dead_letter(struct publisher *pub, const struct batch *b,
					       const struct record *r, rd_kafka_headers_t *hdrs)
{
	const void *payload = r->payload;
	size_t plen = r->payload_len;
	char num[24];

	rd_kafka_header_add(hdrs, "outbox-error", -1, r->dead_reason, -1);
	rd_kafka_header_add(hdrs, "outbox-topic", -1, r->topic, -1);
	if (pub->client_max_bytes && record_wire_size(b, r) + 512 > pub->client_max_bytes) {
		/* Too large for any topic: the dead letter says so instead. */
		snprintf(num, sizeof(num), "%zu", r->payload_len);
		rd_kafka_header_add(hdrs, "outbox-payload-omitted-bytes", -1, num, -1);
		payload = NULL;
		plen = 0;
	}
	return produce(pub, fixed_topic(pub, &pub->dlq_rkt, pub->cfg->dead_letter_topic), r->key,
		       r->key_len, payload, plen, r->timestamp_ms, hdrs, r->id);
}

static enum pub_status produce_all(struct publisher *pub, const struct batch *b,
				   const char *ckpt_value)
{
	rd_kafka_resp_err_t err;
	rd_kafka_headers_t *ckpt_hdrs;

	for (size_t i = 0; i < b->nrecs; i++) {
		const struct record *r = &b->recs[i];
		rd_kafka_headers_t *hdrs = rd_kafka_headers_new(r->hdr_count + 4);
		char idbuf[24];

		for (size_t h = 0; h < r->hdr_count; h++) {
			const struct record_header *rh = &b->hdrs[r->hdr_off + h];
			rd_kafka_header_add(hdrs, rh->name, (ssize_t)rh->name_len, rh->value,
					    (ssize_t)rh->value_len);
		}
		snprintf(idbuf, sizeof(idbuf), "%" PRId64, r->id);
		rd_kafka_header_add(hdrs, "outbox-id", -1, idbuf, -1);
		if (r->dead_reason && pub->cfg->dead_letter_topic[0])
			err = produce_dead_letter(pub, b, r, hdrs);
		else
			err = produce(pub, topic_get(pub, r->topic)->rkt, r->key, r->key_len,
				      r->payload, r->payload_len, r->timestamp_ms, hdrs, r->id);
		if (err) {
			rd_kafka_headers_destroy(hdrs);
			snprintf(pub->errstr, sizeof(pub->errstr),
				 "could not produce outbox row %" PRId64 " to topic \"%s\": %s", r->id,
				 r->dead_reason ? pub->cfg->dead_letter_topic : r->topic,
				 rd_kafka_err2str(err));
			if (is_poison(err) && !r->dead_reason) {
				pub->poison_id = r->id;
				return abort_txn(pub, PUB_POISON);
			}
			if (rd_kafka_fatal_error(pub->rk, NULL, 0))
				return fatal_status(pub);
			/* a dead letter that cannot be written is not the row's fault */
			return abort_txn(pub, is_poison(err) ? PUB_FATAL : PUB_RESEND);
		}
	}
	/* Partition 0, always: it is where checkpoint_read_last looks, whatever
	 * the partition count of a topic someone else created. The marker
	 * header (and no outbox-id header) tells the reader that this relay's
	 * producer wrote it, not an outbox row aimed at the checkpoint topic. */
	ckpt_hdrs = rd_kafka_headers_new(1);
	rd_kafka_header_add(ckpt_hdrs, CHECKPOINT_MARKER_HEADER, -1, pub->cfg->relay_name, -1);
	err = produce_to(pub, fixed_topic(pub, &pub->ckpt_rkt, pub->cfg->checkpoint_topic), 0,
			 RD_KAFKA_MSG_F_COPY, pub->cfg->relay_name,
			 strlen(pub->cfg->relay_name), ckpt_value, strlen(ckpt_value), 0, ckpt_hdrs,
			 -1);
	if (err) {
		rd_kafka_headers_destroy(ckpt_hdrs);
		snprintf(pub->errstr, sizeof(pub->errstr), "could not produce checkpoint: %s",
			 rd_kafka_err2str(err));
		if (rd_kafka_fatal_error(pub->rk, NULL, 0))
			return fatal_status(pub);
		return abort_txn(pub, PUB_RESEND);
	}
	return PUB_OK;
}

/* Commit; a retriable failure (a timeout among them) is retried with the
 * same call, which resumes the commit in progress, until the transaction
 * timeout has passed. Any retry marks the producer for recreation. */
static enum pub_status commit(struct publisher *pub)
{
	int64_t deadline = now_ms() + pub->cfg->transaction_timeout_ms;
	int timeout = pub->cfg->commit_timeout_ms;
#ifdef OUTBOX_CRASH_POINTS
	/* "during-commit": send EndTxn, then die before its answer. */
	bool die = crash_point_due("during-commit");
	if (die)
		timeout = 1;
#endif
	for (;;) {
		rd_kafka_error_t *error = rd_kafka_commit_transaction(pub->rk, timeout);
		enum pub_status st;

#ifdef OUTBOX_CRASH_POINTS
		if (die)
			crash_now("during-commit");
#endif
		if (!error)
			return PUB_OK;
		set_err(pub, "could not commit transaction", error);
		if (rd_kafka_error_is_fatal(error)) {
			rd_kafka_error_destroy(error);
			return fatal_status(pub);
		}
		if (rd_kafka_error_txn_requires_abort(error)) {
			rd_kafka_error_destroy(error);
			st = abort_txn(pub, PUB_RESEND);
			/* The failed records' delivery reports say why. */
			rd_kafka_poll(pub->rk, 0);
			if (st != PUB_RESEND || !pub->dr_err || !is_poison(pub->dr_err))
				return st;
			if (pub->dr_id < 0) {
				/* The checkpoint record itself was refused: no row
				 * is to blame and no retry can help. */
				snprintf(pub->errstr, sizeof(pub->errstr),
					 "checkpoint topic \"%s\" refused the checkpoint record: %s",
					 pub->cfg->checkpoint_topic, rd_kafka_err2str(pub->dr_err));
				return PUB_FATAL;
			}
			pub->poison_id = pub->dr_id;
			snprintf(pub->errstr, sizeof(pub->errstr),
				 "could not deliver outbox row %" PRId64 ": %s", pub->dr_id,
				 rd_kafka_err2str(pub->dr_err));
			return PUB_POISON;
		}
		pub->needs_recreate = true;
		st = rd_kafka_error_is_retriable(error) && now_ms() < deadline ? PUB_OK : PUB_UNKNOWN;
		log_warning("%s%s", pub->errstr, st == PUB_OK ? "; retrying the commit" : "");
		rd_kafka_error_destroy(error);
		if (st != PUB_OK)
			return PUB_UNKNOWN;
		timeout = pub->cfg->commit_timeout_ms;
	}
}

enum pub_status publisher_produce(struct publisher *pub, const struct batch *b,
				  const char *ckpt_value)
{
	rd_kafka_error_t *error;
	enum pub_status st;

	pub->dr_err = RD_KAFKA_RESP_ERR_NO_ERROR;
	pub->poison_id = 0;
	pub->errstr[0] = '\0';
	error = rd_kafka_begin_transaction(pub->rk);
	if (error) {
		set_err(pub, "could not begin transaction", error);
		st = rd_kafka_error_is_fatal(error) ? fatal_status(pub) : PUB_UNKNOWN;
		rd_kafka_error_destroy(error);
		return st;
	}
	st = produce_all(pub, b, ckpt_value);
	if (st != PUB_OK)
		return st;
#ifdef OUTBOX_CRASH_POINTS
	if (crash_point_due("after-produce")) {
		/* make sure the records are in the broker's log, uncommitted */
		rd_kafka_flush(pub->rk, 10000);
		crash_now("after-produce");
	}
#endif
	return PUB_OK;
}

enum pub_status publisher_commit(struct publisher *pub)
{
	return commit(pub);
}

enum pub_status publisher_send(struct publisher *pub, const struct batch *b,
			       const char *ckpt_value)
{
	enum pub_status st = publisher_produce(pub, b, ckpt_value);

	return st == PUB_OK ? commit(pub) : st;
}

bool publisher_needs_recreate(const struct publisher *pub)
{
	return pub->needs_recreate;
}

const char *publisher_errstr(const struct publisher *pub)
{
	return pub->errstr;
}

int64_t publisher_poison_id(const struct publisher *pub)
{
	return pub->poison_id;
}

rd_kafka_t *publisher_handle(struct publisher *pub)
{
	return pub->rk;
}

void publisher_free(struct publisher *pub)
{
	if (!pub)
		return;
	for (size_t i = 0; i < pub->ntopics; i++) {
		rd_kafka_topic_destroy(pub->topics[i].rkt);
		free(pub->topics[i].name);
	}
	free(pub->topics);
	if (pub->ckpt_rkt)
		rd_kafka_topic_destroy(pub->ckpt_rkt);
	if (pub->dlq_rkt)
		rd_kafka_topic_destroy(pub->dlq_rkt);
	rd_kafka_destroy(pub->rk);
	free(pub);
}

int publisher_ping(struct publisher *pub)
{
	const struct rd_kafka_metadata *md;

	if (!pub || rd_kafka_metadata(pub->rk, 0,
				      fixed_topic(pub, &pub->ckpt_rkt, pub->cfg->checkpoint_topic),
				      &md, 2000))
		return -1;
	rd_kafka_metadata_destroy(md);
	return 0;
}
