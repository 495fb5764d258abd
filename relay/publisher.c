/* publisher.c: the transactional producer. Maps librdkafka's transaction
 * errors onto what the relay must do: commit again, abort and re-send,
 * recreate and re-read the checkpoint, or stop. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crash.h"
#include "log.h"
#include "publisher.h"

struct topic_handle {
	char *name;
	rd_kafka_topic_t *rkt;
};

struct publisher {
	const struct config *cfg;
	rd_kafka_t *rk;
	struct topic_handle *topics;
	size_t ntopics;
	rd_kafka_topic_t *ckpt_rkt;
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

rd_kafka_conf_t *kafka_conf_new(const struct config *cfg, char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char rderr[512];

	rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
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

	conf = kafka_conf_new(cfg, errbuf, errlen);
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
	pub->ckpt_rkt = rd_kafka_topic_new(pub->rk, cfg->checkpoint_topic, NULL);
	return pub;
fail:
	rd_kafka_conf_destroy(conf);
	free(pub);
	return NULL;
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

enum pub_status publisher_init(struct publisher *pub)
{
	rd_kafka_error_t *error = rd_kafka_init_transactions(pub->rk, pub->cfg->commit_timeout_ms);
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

static rd_kafka_topic_t *topic_get(struct publisher *pub, const char *name)
{
	for (size_t i = 0; i < pub->ntopics; i++)
		if (strcmp(pub->topics[i].name, name) == 0)
			return pub->topics[i].rkt;
	pub->topics = xrealloc(pub->topics, (pub->ntopics + 1) * sizeof(*pub->topics));
	pub->topics[pub->ntopics].name = xstrdup(name);
	pub->topics[pub->ntopics].rkt = rd_kafka_topic_new(pub->rk, name, NULL);
	return pub->topics[pub->ntopics++].rkt;
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
 * for a whole batch so that only happens while deliveries drain. */
static rd_kafka_resp_err_t produce(struct publisher *pub, rd_kafka_topic_t *rkt, const void *key,
				   size_t klen, const void *val, size_t vlen, int64_t ts,
				   rd_kafka_headers_t *hdrs, int64_t id)
{
	rd_kafka_resp_err_t err;

	for (;;) {
		err = rd_kafka_producev(pub->rk, RD_KAFKA_V_RKT(rkt),
					RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
					RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
					RD_KAFKA_V_KEY(key, klen), RD_KAFKA_V_VALUE((void *)val, vlen),
					RD_KAFKA_V_TIMESTAMP(ts), RD_KAFKA_V_HEADERS(hdrs),
					RD_KAFKA_V_OPAQUE((void *)(intptr_t)id), RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			return err;
		rd_kafka_poll(pub->rk, 50);
	}
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

static enum pub_status produce_all(struct publisher *pub, const struct batch *b,
				   const char *ckpt_value)
{
	rd_kafka_resp_err_t err;

	for (size_t i = 0; i < b->nrecs; i++) {
		const struct record *r = &b->recs[i];
		rd_kafka_headers_t *hdrs = rd_kafka_headers_new(r->hdr_count + 1);
		char idbuf[24];

		for (size_t h = 0; h < r->hdr_count; h++) {
			const struct record_header *rh = &b->hdrs[r->hdr_off + h];
			rd_kafka_header_add(hdrs, rh->name, (ssize_t)rh->name_len, rh->value,
					    (ssize_t)rh->value_len);
		}
		snprintf(idbuf, sizeof(idbuf), "%" PRId64, r->id);
		rd_kafka_header_add(hdrs, "outbox-id", -1, idbuf, -1);
		err = produce(pub, topic_get(pub, r->topic), r->key, r->key_len, r->payload,
			      r->payload_len, r->timestamp_ms, hdrs, r->id);
		if (err) {
			rd_kafka_headers_destroy(hdrs);
			snprintf(pub->errstr, sizeof(pub->errstr),
				 "could not produce outbox row %" PRId64 " to topic \"%s\": %s", r->id,
				 r->topic, rd_kafka_err2str(err));
			if (is_poison(err)) {
				pub->poison_id = r->id;
				return abort_txn(pub, PUB_POISON);
			}
			if (rd_kafka_fatal_error(pub->rk, NULL, 0))
				return fatal_status(pub);
			return abort_txn(pub, PUB_RESEND);
		}
	}
	err = produce(pub, pub->ckpt_rkt, pub->cfg->relay_name, strlen(pub->cfg->relay_name),
		      ckpt_value, strlen(ckpt_value), 0, NULL, -1);
	if (err) {
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
	if (crash_point_armed("during-commit"))
		timeout = 1;
#endif
	for (;;) {
		rd_kafka_error_t *error = rd_kafka_commit_transaction(pub->rk, timeout);
		enum pub_status st;

		if (!error)
			return PUB_OK;
		crash_point("during-commit");
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

enum pub_status publisher_send(struct publisher *pub, const struct batch *b,
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
	crash_point("after-produce");
	return commit(pub);
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
	rd_kafka_destroy(pub->rk);
	free(pub);
}
