/* publisher.c: the transactional producer. Maps librdkafka's transaction
 * errors onto what the relay must do: commit again, abort and re-send,
 * recreate and re-read the checkpoint, or stop. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "crash.h"
#include "log.h"
#include "publisher.h"
#include "topics.h"

/* After a metadata lookup failed (the broker could not be asked), every
 * lookup answers "could not ask" at once for this long: one failure answers
 * for a whole batch instead of one wait per row. */
#define LOOKUP_RETRY_MS 5000

/* A topic the relay produces to, and what it last learned of it. */
struct topic_handle {
	char *name;
	rd_kafka_topic_t *rkt;
	bool exists;
	bool denied;        /* TOPIC_AUTHORIZATION_FAILED */
	int64_t checked_ms; /* 0 = never */
	int64_t max_bytes;  /* the topic's max.message.bytes; 0 = unknown */
	bool configs_warned; /* said once that max.message.bytes is unknown */
};

struct publisher {
	const struct config *cfg;
	const struct waiter *w; /* borrowed; NULL: plain timeouts */
	rd_kafka_t *rk;
	struct topic_handle *topics;
	size_t ntopics;
	rd_kafka_topic_t *ckpt_rkt;
	rd_kafka_topic_t *dlq_rkt;
	int64_t client_max_bytes; /* the producer's message.max.bytes */
	int64_t queue_max_bytes;  /* queue.buffering.max.kbytes, in bytes */
	bool compressed;          /* compression.type is not "none" */
	int64_t lookup_retry_ms;  /* no metadata lookup before this (now_ms) */
	int64_t txn_begin_ms;     /* when the current transaction began */
	const struct batch *cur;  /* the current transaction's batch */
	bool needs_recreate;
	char errstr[1024];

	/* The first failed delivery of the current transaction (dr callback,
	 * served inside commit's flush on this thread). */
	rd_kafka_resp_err_t dr_err;
	int64_t dr_id;
	int64_t poison_id;
	bool poison_missing; /* see publisher_poison_topic_missing */
	/* Every row refused for size in the current transaction: a produce
	 * request carries many rows, and the broker refuses it as a whole. */
	int64_t *size_ids;
	size_t nsize_ids, cap_size_ids;

	/* Why the broker refused the connection itself (authentication, TLS),
	 * from the error callback (served on the caller's thread by
	 * rd_kafka_poll); "" when nothing such was seen. */
	char refused[768];
	/* The last failed verification of the broker's certificate chain, set
	 * by the verify callback on librdkafka's broker thread: an OpenSSL
	 * X509_V_ERR_* code (0: none) and the depth (0: the broker's own). */
	_Atomic int x509_err;
	_Atomic int x509_depth;
};

const char *pub_status_str(enum pub_status st)
{
	static const char *const names[] = {"ok",     "resend", "unknown", "fenced",
					    "poison", "fatal",  "refused"};
	return names[st];
}

const char *pub_check_str(enum pub_check st)
{
	static const char *const names[] = {"ok", "unsure", "poison", "later", "fatal"};
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

/* OpenSSL's X509_V_ERR_* codes that a misconfigured TLS setup gives, in
 * OpenSSL's words (the relay does not link libcrypto for
 * X509_verify_cert_error_string). */
static const char *x509_err_str(int err)
{
	switch (err) {
	case 9:
		return "certificate is not yet valid";
	case 10:
		return "certificate has expired";
	case 18:
		return "self-signed certificate";
	case 19:
		return "self-signed certificate in certificate chain";
	case 20:
		return "unable to get local issuer certificate";
	case 21:
		return "unable to verify the first certificate";
	case 23:
		return "certificate revoked";
	case 62:
		return "hostname mismatch";
	case 64:
		return "IP address mismatch";
	}
	return "certificate verification failed";
}

/* Keeps OpenSSL's verdict on each certificate of the broker's chain
 * (librdkafka takes the callback's answer instead of OpenSSL's, so an error
 * must be answered 0), and remembers a failure so that the start-up error
 * can say what was wrong with which certificate. librdkafka's broker thread. */
static int ssl_verify_cb(rd_kafka_t *rk, const char *broker_name, int32_t broker_id,
			 int *x509_error, int depth, const char *buf, size_t size, char *errstr,
			 size_t errstr_size, void *opaque)
{
	struct publisher *pub = opaque;

	(void)rk;
	(void)broker_id;
	(void)buf;
	(void)size;
	if (*x509_error == 0)
		return 1;
	atomic_store(&pub->x509_depth, depth);
	atomic_store(&pub->x509_err, *x509_error);
	snprintf(errstr, errstr_size, "%s certificate of %s: %s (X509 error %d)",
		 depth == 0 ? "the broker's" : "a CA", broker_name, x509_err_str(*x509_error),
		 *x509_error);
	return 0;
}

/* Errors the broker answers a connection with, as opposed to a broker that
 * is away: the credentials (SASL) or TLS (the broker's certificate, or the
 * broker refusing ours). Remembered for publisher_init, which is where the
 * relay first needs the broker; librdkafka keeps retrying meanwhile. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct publisher *pub = opaque;
	const char *mech = "";
	char hint[384] = "";
	int x509 = atomic_load(&pub->x509_err);

	(void)rk;
	for (int i = 0; i < pub->cfg->n_kafka_props; i++)
		if (strncmp(pub->cfg->kafka_props[i], "sasl.mechanism=", 15) == 0 ||
		    strncmp(pub->cfg->kafka_props[i], "sasl.mechanisms=", 16) == 0)
			mech = strchr(pub->cfg->kafka_props[i], '=') + 1;
	if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION) {
		snprintf(hint, sizeof(hint),
			 "check sasl.username and sasl.password (OUTBOX_KAFKA_SASL_USERNAME, "
			 "OUTBOX_KAFKA_SASL_PASSWORD) and sasl.mechanism");
		/* librdkafka before 2.6.1 sends a SCRAM proof that Kafka 4
		 * brokers refuse as invalid credentials, whatever the password */
		if (strncmp(mech, "SCRAM", 5) == 0 && rd_kafka_version() < 0x020601ff)
			snprintf(hint, sizeof(hint),
				 "check sasl.username and sasl.password; note that librdkafka %s "
				 "computes SCRAM proofs that Kafka 4.0 and later brokers refuse "
				 "(fixed in librdkafka 2.6.1): with such brokers use a newer "
				 "librdkafka, SASL PLAIN over TLS, or client certificates",
				 rd_kafka_version_str());
		snprintf(pub->refused, sizeof(pub->refused), "authentication failed: %s (%s)",
			 reason, hint);
	} else if (err == RD_KAFKA_RESP_ERR__SSL && x509) {
		snprintf(pub->refused, sizeof(pub->refused),
			 "the broker's certificate was not accepted (%s, %s): %s (check "
			 "kafka.properties ssl.ca.location: it must name the CA that signed the "
			 "broker's certificate)",
			 x509_err_str(x509),
			 atomic_load(&pub->x509_depth) == 0 ? "its own certificate" : "a CA of its chain",
			 reason);
	} else if (err == RD_KAFKA_RESP_ERR__SSL) {
		snprintf(pub->refused, sizeof(pub->refused), "TLS handshake failed: %s", reason);
	} else if (strstr(reason, "SSL alert number")) {
		/* The broker ended the handshake with an alert: with TLS 1.3 it
		 * judges the client's certificate after the client finished,
		 * so this arrives as a failed receive (Kafka answers an expired
		 * or unknown certificate alike: "certificate unknown"). */
		snprintf(pub->refused, sizeof(pub->refused),
			 "the broker refused the TLS connection: %s (check kafka.properties "
			 "ssl.certificate.location and ssl.key.location: the client certificate "
			 "may have expired, be not yet valid, or be signed by a CA the broker "
			 "does not trust)",
			 reason);
	}
}

/* librdkafka's own error text may quote the refused value ("Invalid value
 * \"...\" for configuration property ..."), and the value may be a secret
 * (sasl.password): every occurrence of the value is cut out of msg, whatever
 * the property, so no value ever reaches a log line or an error string. */
static void redact_value(char *msg, size_t msglen, const char *value)
{
	char out[512];
	size_t n = 0, vlen = strlen(value);
	const char *p = msg;

	if (vlen == 0)
		return;
	while (*p && n + 1 < sizeof(out)) {
		if (strncmp(p, value, vlen) == 0) {
			n += (size_t)snprintf(out + n, sizeof(out) - n, "%s", "(value hidden)");
			if (n >= sizeof(out))
				n = sizeof(out) - 1;
			p += vlen;
		} else {
			out[n++] = *p++;
		}
	}
	out[n] = '\0';
	snprintf(msg, msglen, "%s", out);
}

/* Set one property; on refusal errbuf names the property, never its value. */
static int prop_set(rd_kafka_conf_t *conf, const char *name, const char *value,
		    const char *where, char *errbuf, size_t errlen)
{
	char rderr[512];

	if (rd_kafka_conf_set(conf, name, value, rderr, sizeof(rderr)) == RD_KAFKA_CONF_OK)
		return 0;
	redact_value(rderr, sizeof(rderr), value);
	snprintf(errbuf, errlen, "%s \"%s\": %s", where, name, rderr);
	return -1;
}

rd_kafka_conf_t *kafka_conf_new(const struct config *cfg, bool reader, char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char where[512];

	rd_kafka_conf_set_log_cb(conf, reader ? kafka_reader_log_cb : kafka_log_cb);
	snprintf(where, sizeof(where), "%s: kafka.bootstrap_servers:", cfg->path);
	if (prop_set(conf, "bootstrap.servers", cfg->kafka_bootstrap, where, errbuf, errlen) < 0 ||
	    prop_set(conf, "client.id", "outbox-relay", where, errbuf, errlen) < 0) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	snprintf(where, sizeof(where), "%s: kafka.properties:", cfg->path);
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
		if (prop_set(conf, kv, eq + 1, where, errbuf, errlen) < 0) {
			free(kv);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}
		free(kv);
	}
	return conf;
}

static bool is_size_error(rd_kafka_resp_err_t err)
{
	return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
	       err == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct publisher *pub = opaque;
	int64_t id = (int64_t)(intptr_t)m->_private;

	(void)rk;
	/* Purged records only echo the abort; keep the first real cause. */
	if (!m->err || m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
	    m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
		return;
	if (!pub->dr_err) {
		pub->dr_err = m->err;
		pub->dr_id = id;
	}
	if (is_size_error(m->err) && id >= 0) {
		if (pub->nsize_ids == pub->cap_size_ids) {
			pub->cap_size_ids = pub->cap_size_ids ? 2 * pub->cap_size_ids : 16;
			pub->size_ids = xrealloc(pub->size_ids,
						 pub->cap_size_ids * sizeof(*pub->size_ids));
		}
		pub->size_ids[pub->nsize_ids++] = id;
	}
}

/* Set a property the relay derives (after the user's kafka.properties). */
static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errbuf,
		    size_t errlen)
{
	return prop_set(conf, name, value, "could not set producer property", errbuf, errlen);
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
	pub->queue_max_bytes = kb * 1024;
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
	/* The relay hands librdkafka a whole page at once and commits soon
	 * after: a linger makes no request larger, it only delays each look's
	 * records, and librdkafka before 2.10 spins the broker thread through
	 * the last millisecond of every linger (bench/RESULTS.md, "L2").
	 * queue.buffering.max.ms is the same property under its older name. */
	if (!user_set(cfg, "linger.ms") && !user_set(cfg, "queue.buffering.max.ms") &&
	    conf_set(conf, "linger.ms", "0", errbuf, errlen) < 0)
		goto fail;
	rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
	rd_kafka_conf_set_error_cb(conf, error_cb);
	if (rd_kafka_conf_set_ssl_cert_verify_cb(conf, ssl_verify_cb) != RD_KAFKA_CONF_OK) {
		snprintf(errbuf, errlen, "could not set the TLS verification callback");
		goto fail;
	}
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
		sz = sizeof(buf);
		pub->compressed = rd_kafka_conf_get(rd_kafka_conf(pub->rk), "compression.codec",
						    buf, &sz) == RD_KAFKA_CONF_OK &&
				  strcmp(buf, "none") != 0;
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

static bool is_authorization(rd_kafka_resp_err_t err)
{
	return err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
	       err == RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED ||
	       err == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED;
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

/* What to grant when the broker refuses a request for want of an ACL
 * (deploy/README.md, "Kafka security"); "" for other errors. */
const char *publisher_acl_hint(const struct config *cfg, rd_kafka_resp_err_t err, char *buf,
			       size_t len)
{
	switch (err) {
	case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
		snprintf(buf, len,
			 ": the relay's Kafka principal needs Write on transactional id \"%s\" "
			 "(the relay name)",
			 cfg->relay_name);
		break;
	case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
		snprintf(buf, len,
			 ": the broker asks for IdempotentWrite on the cluster (older brokers do, "
			 "for a transactional producer)");
		break;
	case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
		snprintf(buf, len,
			 ": the relay's Kafka principal needs Write on every outbox topic of the "
			 "batch, Read and Write on checkpoint topic \"%s\"%s%s%s",
			 cfg->checkpoint_topic, cfg->dead_letter_topic[0] ? ", Write on dead-letter topic \"" : "",
			 cfg->dead_letter_topic, cfg->dead_letter_topic[0] ? "\"" : "");
		break;
	default:
		buf[0] = '\0';
	}
	return buf;
}

enum pub_status publisher_init(struct publisher *pub, int timeout_ms)
{
	rd_kafka_error_t *error;
	enum pub_status st;
	char hint[512];

	rd_kafka_poll(pub->rk, 0); /* errors of earlier attempts */
	pub->refused[0] = '\0';
	error = rd_kafka_init_transactions(pub->rk, timeout_ms);
	if (!error)
		return PUB_OK;
	set_err(pub, "could not initialize transactions", error);
	if (rd_kafka_error_is_fatal(error)) {
		st = is_fencing(rd_kafka_error_code(error)) ? PUB_FENCED : fatal_status(pub);
		size_t n = strlen(pub->errstr);

		publisher_acl_hint(pub->cfg, rd_kafka_error_code(error), hint, sizeof(hint));
		snprintf(pub->errstr + n, sizeof(pub->errstr) - n, "%s", hint);
	} else {
		st = PUB_UNKNOWN; /* timed out or retriable: init again later */
		/* the error callback says whether the broker refused us */
		rd_kafka_poll(pub->rk, 0);
		if (pub->refused[0]) {
			snprintf(pub->errstr, sizeof(pub->errstr),
				 "could not connect to Kafka at %.200s: %s", pub->cfg->kafka_bootstrap,
				 pub->refused);
			st = PUB_REFUSED;
		}
	}
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

void publisher_set_waiter(struct publisher *pub, const struct waiter *w)
{
	pub->w = w;
}

/* A metadata request for one topic (or none: rkt NULL), in slices of the
 * waiter until deadline_ms. Each slice is a request of its own; a broker
 * that cannot be reached answers __TRANSPORT at the end of a slice. Returns
 * __INTR when the waiter said stop, __TIMED_OUT (or the last error) when the
 * deadline passed. */
static rd_kafka_resp_err_t metadata_wait(struct publisher *pub, rd_kafka_topic_t *rkt,
					 const struct rd_kafka_metadata **md, int64_t deadline_ms)
{
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;

	for (;;) {
		int ms;

		if (!wait_tick(pub->w))
			return RD_KAFKA_RESP_ERR__INTR;
		ms = wait_slice(pub->w, deadline_ms);
		if (ms <= 0)
			return err;
		err = rd_kafka_metadata(pub->rk, 0, rkt, md, ms);
		if (err != RD_KAFKA_RESP_ERR__TIMED_OUT && err != RD_KAFKA_RESP_ERR__TRANSPORT)
			return err;
	}
}

/* The topic's max.message.bytes, or 0 when the broker will not say before
 * deadline_ms; *refusal (unless refusal is NULL) gets the broker's error
 * for the topic, if any (TOPIC_AUTHORIZATION_FAILED without DescribeConfigs). */
static int64_t topic_max_bytes(struct publisher *pub, const char *name, int64_t deadline_ms,
			       rd_kafka_resp_err_t *refusal)
{
	rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name);
	rd_kafka_queue_t *q = rd_kafka_queue_new(pub->rk);
	rd_kafka_AdminOptions_t *opts =
		rd_kafka_AdminOptions_new(pub->rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
	rd_kafka_event_t *ev = NULL;
	int64_t max = 0;
	int left = wait_slice(NULL, deadline_ms);

	if (left <= 0)
		goto out;
	(void)rd_kafka_AdminOptions_set_request_timeout(opts, left, NULL, 0);
	rd_kafka_DescribeConfigs(pub->rk, &res, 1, opts, q);
	/* The request's own timeout ends it; until then poll in slices. */
	while (!ev) {
		int ms = wait_slice(pub->w, deadline_ms + 1000);

		if (ms <= 0 || !wait_tick(pub->w))
			break;
		ev = rd_kafka_queue_poll(q, ms);
	}
	if (ev && !rd_kafka_event_error(ev)) {
		size_t nres, ncfg;
		const rd_kafka_ConfigResource_t **rs = rd_kafka_DescribeConfigs_result_resources(
			rd_kafka_event_DescribeConfigs_result(ev), &nres);
		for (size_t i = 0; i < nres; i++) {
			if (rd_kafka_ConfigResource_error(rs[i])) {
				if (refusal)
					*refusal = rd_kafka_ConfigResource_error(rs[i]);
				continue;
			}
			const rd_kafka_ConfigEntry_t **ce = rd_kafka_ConfigResource_configs(rs[i], &ncfg);
			for (size_t k = 0; k < ncfg; k++)
				if (strcmp(rd_kafka_ConfigEntry_name(ce[k]), "max.message.bytes") == 0 &&
				    rd_kafka_ConfigEntry_value(ce[k]))
					max = strtoll(rd_kafka_ConfigEntry_value(ce[k]), NULL, 10);
		}
	}
out:
	if (ev)
		rd_kafka_event_destroy(ev);
	rd_kafka_AdminOptions_destroy(opts);
	rd_kafka_queue_destroy(q);
	rd_kafka_ConfigResource_destroy(res);
	return max;
}

/* Learn whether a topic exists, whether we may write to it and its size
 * limit. A known topic is looked at again every five minutes, a missing one
 * every time it is needed. Only two answers are the row's fault: the topic
 * is unknown (asked twice, so that a broker still learning of a new topic
 * does not decide) and writing to it is not allowed. Any other topic error
 * (LEADER_NOT_AVAILABLE during an election or an auto-creation, ...) and a
 * broker that cannot be asked return -1: "could not ask". A failed lookup
 * is remembered for LOOKUP_RETRY_MS, so that the rows after it do not wait
 * again. */
static int topic_refresh(struct publisher *pub, struct topic_handle *th, int64_t deadline_ms)
{
	if (th->checked_ms && th->exists && now_ms() - th->checked_ms < 300000)
		return 0;
	if (now_ms() < pub->lookup_retry_ms)
		return -1;
	for (int attempt = 0;; attempt++) {
		const struct rd_kafka_metadata *md;
		rd_kafka_resp_err_t err = metadata_wait(pub, th->rkt, &md, deadline_ms);
		int partitions;

		if (err) {
			if (err != RD_KAFKA_RESP_ERR__INTR)
				pub->lookup_retry_ms = now_ms() + LOOKUP_RETRY_MS;
			snprintf(pub->errstr, sizeof(pub->errstr),
				 "could not look up topic \"%s\": %s", th->name, rd_kafka_err2str(err));
			return -1;
		}
		err = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
		partitions = md->topic_cnt == 1 ? md->topics[0].partition_cnt : 0;
		rd_kafka_metadata_destroy(md);
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR && partitions > 0) {
			th->exists = true;
			th->denied = false;
			break;
		}
		if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART && attempt == 0)
			continue; /* once more, a request of its own, before concluding */
		/* With topics.create, a name the broker calls invalid is left to
		 * the creation, whose refusal gives the broker's reason. */
		if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
		    err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
		    (err == RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION && pub->cfg->topics_create)) {
			th->exists = false;
			th->denied = err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
			th->checked_ms = now_ms();
			return 0;
		}
		snprintf(pub->errstr, sizeof(pub->errstr), "could not look up topic \"%s\": %s",
			 th->name, err ? rd_kafka_err2str(err) : "no partitions");
		return -1;
	}
	th->checked_ms = now_ms();
	{
		rd_kafka_resp_err_t refusal = RD_KAFKA_RESP_ERR_NO_ERROR;

		th->max_bytes = topic_max_bytes(pub, th->name, deadline_ms, &refusal);
		if (refusal && !th->configs_warned) {
			/* Not fatal: the broker still refuses an oversized
			 * row, only later, in the commit (size_culprit). */
			log_warning("could not read max.message.bytes of topic \"%s\": %s%s; a row "
				    "too large for the topic is found by the failed transaction "
				    "instead of before it",
				    th->name, rd_kafka_err2str(refusal),
				    refusal == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED
					    ? " (the relay's Kafka principal needs DescribeConfigs on the topic)"
					    : "");
			th->configs_warned = true;
		}
	}
	return 0;
}

/* How long a created topic may take to show in the producer's metadata is
 * the caller's deadline; between looks, this pause. */
#define CREATED_LOOK_MS 100

/* "3 partitions, replication factor 1, cleanup.policy=delete": what
 * topics.* asks for, for the log. */
static void creation_settings(const struct config *cfg, char *buf, size_t len)
{
	size_t n;

	if (cfg->topics_partitions > 0)
		n = (size_t)snprintf(buf, len, "%d partitions", cfg->topics_partitions);
	else
		n = (size_t)snprintf(buf, len, "the broker's default partitions");
	if (n < len && cfg->topics_replication_factor > 0)
		n += (size_t)snprintf(buf + n, len - n, ", replication factor %d",
				      cfg->topics_replication_factor);
	else if (n < len)
		n += (size_t)snprintf(buf + n, len - n, ", the broker's default replication factor");
	for (int i = 0; i < cfg->n_topics_config && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, ", %s", cfg->topics_config[i]);
}

/* True when md shows the topic with a leader for each of its partitions. */
static bool topic_ready(const struct rd_kafka_metadata *md)
{
	const rd_kafka_metadata_topic_t *mt = md->topic_cnt == 1 ? &md->topics[0] : NULL;

	if (!mt || mt->err || mt->partition_cnt <= 0)
		return false;
	for (int p = 0; p < mt->partition_cnt; p++)
		if (mt->partitions[p].leader < 0)
			return false;
	return true;
}

/*
 * topics.create: create th's topic for outbox row `id`, then wait until the
 * producer's own metadata shows it with a leader for each partition. The
 * wait matters: librdkafka fails records for a topic its metadata still
 * calls missing at once (__UNKNOWN_TOPIC), which would look like poison.
 * Another client creating it first is as good (TOPIC_ALREADY_EXISTS). A
 * topic that does not show by deadline_ms is CHECK_LATER, never poison.
 */
static enum pub_check topic_create(struct publisher *pub, struct topic_handle *th, int64_t id,
				   int64_t deadline_ms, char *why, size_t whylen)
{
	const struct config *cfg = pub->cfg;
	char settings[512];

	switch (topics_create(pub->rk, th->name, cfg->topics_partitions,
			      cfg->topics_replication_factor, cfg->topics_config,
			      cfg->n_topics_config, false, pub->w, deadline_ms, why, whylen)) {
	case TOPIC_CREATED:
		creation_settings(cfg, settings, sizeof(settings));
		log_info("created topic \"%s\" for outbox row %" PRId64 " (%s)", th->name, id,
			 settings);
		break;
	case TOPIC_EXISTS:
		log_info("topic \"%s\" for outbox row %" PRId64 " exists already (created meanwhile)",
			 th->name, id);
		break;
	case TOPIC_LATER:
		return CHECK_LATER;
	case TOPIC_REFUSED:
		return CHECK_POISON;
	case TOPIC_BAD_SETTINGS: {
		size_t n = strlen(why);

		snprintf(why + n, whylen - n,
			 "; the broker refuses topics.partitions, topics.replication_factor or "
			 "topics.config");
		return CHECK_FATAL;
	}
	}
	for (;;) {
		const struct rd_kafka_metadata *md;
		rd_kafka_resp_err_t err = metadata_wait(pub, th->rkt, &md, deadline_ms);
		bool ready = false;
		int64_t next = now_ms() + CREATED_LOOK_MS;

		if (!err) {
			ready = topic_ready(md);
			rd_kafka_metadata_destroy(md);
		}
		if (ready)
			break;
		if (err == RD_KAFKA_RESP_ERR__INTR || now_ms() >= deadline_ms ||
		    !wait_until(pub->w, next < deadline_ms ? next : deadline_ms)) {
			snprintf(why, whylen,
				 "topic \"%s\" was created but the producer's metadata does not "
				 "show it with a leader for each partition yet",
				 th->name);
			return CHECK_LATER;
		}
	}
	th->exists = true;
	th->denied = false;
	th->checked_ms = now_ms();
	th->max_bytes = topic_max_bytes(pub, th->name, deadline_ms, NULL);
	return CHECK_OK;
}

/* What the broker will count against max.message.bytes for a batch holding
 * only this record, uncompressed: the payload, key and headers, plus the
 * record and batch framing (generous, so a row is never let through to fail
 * in the commit). */
static int64_t record_wire_size(const struct batch *b, const struct record *r)
{
	int64_t n = 128 + (int64_t)(r->key_len + r->payload_len);

	for (size_t h = 0; h < r->hdr_count; h++)
		n += 10 + (int64_t)(b->hdrs[r->hdr_off + h].name_len + b->hdrs[r->hdr_off + h].value_len);
	return n + 32; /* the outbox-id header */
}

/* Why record r can never be published by its size alone, or NULL. The
 * producer's message.max.bytes and its queue (queue.buffering.max.kbytes,
 * which counts payloads) are checked by librdkafka before any compression,
 * so they are exact. The topic's max.message.bytes is checked by the broker
 * against the batch as sent: compressed when compression.type is set, so a
 * record larger than the limit may still fit, and only the broker can tell
 * (a refusal then names the row, see size_culprit). */
static const char *size_refusal(struct publisher *pub, const struct batch *b,
				const struct record *r, const struct topic_handle *th, char *why,
				size_t whylen)
{
	int64_t size = record_wire_size(b, r);

	if (pub->client_max_bytes && size > pub->client_max_bytes) {
		snprintf(why, whylen,
			 "record of about %" PRId64 " bytes exceeds the producer's message.max.bytes (%" PRId64 ")",
			 size, pub->client_max_bytes);
		return why;
	}
	if (pub->queue_max_bytes && (int64_t)r->payload_len > pub->queue_max_bytes) {
		snprintf(why, whylen,
			 "record of %zu bytes exceeds the producer queue (queue.buffering.max.kbytes = %" PRId64 "); raise batch.max_bytes",
			 r->payload_len, pub->queue_max_bytes / 1024);
		return why;
	}
	if (th && th->max_bytes && size > th->max_bytes && !pub->compressed) {
		snprintf(why, whylen,
			 "record of about %" PRId64 " bytes exceeds max.message.bytes of topic \"%s\" (%" PRId64 ")",
			 size, r->topic, th->max_bytes);
		return why;
	}
	return NULL;
}

enum pub_check publisher_check(struct publisher *pub, const struct batch *b, size_t i,
			       int64_t deadline_ms, bool may_create, char *why, size_t whylen)
{
	const struct record *r = &b->recs[i];
	struct topic_handle *th;

	/* Rows that would wedge the relay's own topics: a record of ours in
	 * the checkpoint topic decides every later start. */
	if (strcmp(r->topic, pub->cfg->checkpoint_topic) == 0) {
		snprintf(why, whylen,
			 "topic \"%s\" is the relay's checkpoint topic; outbox rows may not target it",
			 r->topic);
		return CHECK_POISON;
	}
	if (pub->cfg->dead_letter_topic[0] && strcmp(r->topic, pub->cfg->dead_letter_topic) == 0) {
		snprintf(why, whylen,
			 "topic \"%s\" is the relay's dead-letter topic; outbox rows may not target it",
			 r->topic);
		return CHECK_POISON;
	}
	if (size_refusal(pub, b, r, NULL, why, whylen))
		return CHECK_POISON;
	th = topic_get(pub, r->topic);
	if (!th->rkt) {
		snprintf(why, whylen, "\"%s\" is not a valid topic name", r->topic);
		return CHECK_POISON;
	}
	if (topic_refresh(pub, th, deadline_ms) < 0)
		return CHECK_UNSURE;
	if (!th->exists && !th->denied && pub->cfg->topics_create) {
		enum pub_check st;

		if (!may_create) {
			snprintf(why, whylen,
				 "topic \"%s\" does not exist yet: it is created before the next "
				 "transaction",
				 r->topic);
			return CHECK_LATER;
		}
		if ((st = topic_create(pub, th, r->id, deadline_ms, why, whylen)) != CHECK_OK)
			return st;
	}
	if (!th->exists) {
		snprintf(why, whylen,
			 th->denied ? "writing to topic \"%s\" is not allowed (TOPIC_AUTHORIZATION_FAILED)"
				    : "topic \"%s\" does not exist",
			 r->topic);
		return CHECK_POISON;
	}
	return size_refusal(pub, b, r, th, why, whylen) ? CHECK_POISON : CHECK_OK;
}

/* What a refused record means. librdkafka sorts transaction errors into
 * fatal / abortable / retriable, but a record refused by the broker only
 * makes the transaction abortable: whether a re-send can ever succeed is
 * ours to decide, from the error code. */
enum err_class {
	ERR_RETRY, /* transient (or not known to be permanent): abort, send again */
	ERR_ROW,   /* the row can never be published as it is: a poison row */
	ERR_RELAY, /* no row is to blame and no retry helps: the relay's
		    * configuration or the cluster's must change */
};

static enum err_class err_class(rd_kafka_resp_err_t err)
{
	switch (err) {
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
	case RD_KAFKA_RESP_ERR_INVALID_MSG:
	case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
	case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
	case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
	case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
	case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
	case RD_KAFKA_RESP_ERR__INVALID_ARG: /* a topic name librdkafka refuses */
	/* the row's topic keeps a message format older than transactions */
	case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
		return ERR_ROW;
	case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
	case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION:
	case RD_KAFKA_RESP_ERR_UNSUPPORTED_COMPRESSION_TYPE:
	case RD_KAFKA_RESP_ERR_SECURITY_DISABLED:
	case RD_KAFKA_RESP_ERR_INVALID_CONFIG:
	case RD_KAFKA_RESP_ERR_INVALID_TRANSACTION_TIMEOUT:
	case RD_KAFKA_RESP_ERR__NOT_IMPLEMENTED:
	case RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE:
		return ERR_RELAY;
	default:
		return ERR_RETRY;
	}
}

/* A fatal error inside a transaction. When a transaction outlives
 * transaction.timeout.ms (the relay was paused, the host stalled), the
 * coordinator aborts it and bumps the producer's epoch, and librdkafka 2.0.2
 * turns the stalled producer's next request into a fatal error: "fenced"
 * (PRODUCER_FENCED and INVALID_PRODUCER_EPOCH both become __FENCED) or
 * INVALID_TXN_STATE from EndTxn, though no other relay exists. Such a
 * transaction is settled by a new producer (PUB_UNKNOWN), whose start
 * re-checks the lease first: a relay that truly took over holds the lease,
 * and this one then stops; any other fatal cause fails again there. */
static enum pub_status txn_fatal_status(struct publisher *pub)
{
	enum pub_status st = fatal_status(pub);
	int64_t age = now_ms() - pub->txn_begin_ms;
	char cause[512];

	pub->needs_recreate = true;
	if (!pub->txn_begin_ms || age < pub->cfg->transaction_timeout_ms)
		return st;
	snprintf(cause, sizeof(cause), "%.500s", pub->errstr);
	snprintf(pub->errstr, sizeof(pub->errstr),
		 "the transaction was open %" PRId64 " ms, longer than transaction.timeout.ms (%d): "
		 "the broker has aborted it and fenced this producer's epoch (%.300s)",
		 age, pub->cfg->transaction_timeout_ms, cause);
	return PUB_UNKNOWN;
}

/* Produce one message, waiting out a full local queue (the queue is sized
 * for a whole batch, so that only happens while deliveries drain) for at
 * most commit_timeout_ms, in the waiter's slices. A payload larger than the
 * whole queue would wait for ever (librdkafka counts it against
 * queue.buffering.max.kbytes and answers QUEUE_FULL however empty the queue
 * is): __QUEUE_FULL at once. __INTR when the waiter said stop. msgflags:
 * RD_KAFKA_MSG_F_COPY, or 0 to lend val to librdkafka until the message is
 * delivered or purged. */
static rd_kafka_resp_err_t produce_to(struct publisher *pub, rd_kafka_topic_t *rkt,
				      int32_t partition, int msgflags, const void *key,
				      size_t klen, const void *val, size_t vlen, int64_t ts,
				      rd_kafka_headers_t *hdrs, int64_t id)
{
	int64_t deadline = now_ms() + pub->cfg->commit_timeout_ms;
	rd_kafka_resp_err_t err;

	if (!rkt) /* rd_kafka_topic_new refused the name */
		return RD_KAFKA_RESP_ERR__INVALID_ARG;
	if (pub->queue_max_bytes && (int64_t)vlen > pub->queue_max_bytes)
		return RD_KAFKA_RESP_ERR__QUEUE_FULL;
	for (;;) {
		int ms;

		err = rd_kafka_producev(pub->rk, RD_KAFKA_V_RKT(rkt),
					RD_KAFKA_V_PARTITION(partition),
					RD_KAFKA_V_MSGFLAGS(msgflags),
					RD_KAFKA_V_KEY(key, klen), RD_KAFKA_V_VALUE((void *)val, vlen),
					RD_KAFKA_V_TIMESTAMP(ts), RD_KAFKA_V_HEADERS(hdrs),
					RD_KAFKA_V_OPAQUE((void *)(intptr_t)id), RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			return err;
		if (!wait_tick(pub->w))
			return RD_KAFKA_RESP_ERR__INTR;
		ms = wait_slice(pub->w, deadline);
		if (ms <= 0)
			return err;
		rd_kafka_poll(pub->rk, ms < 50 ? ms : 50);
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

/* Abort after a failure before commit, in the waiter's slices for at most
 * commit_timeout_ms (a timed-out abort_transaction resumes when called
 * again); any other trouble makes the outcome the next producer's to
 * settle. */
static enum pub_status abort_txn(struct publisher *pub, enum pub_status want)
{
	int64_t deadline = now_ms() + pub->cfg->commit_timeout_ms;

	for (;;) {
		int ms = wait_slice(pub->w, deadline);
		rd_kafka_error_t *error = rd_kafka_abort_transaction(pub->rk, ms > 0 ? ms : 1);

		if (!error)
			return want;
		if (rd_kafka_error_is_fatal(error)) {
			set_err(pub, "could not abort transaction", error);
			rd_kafka_error_destroy(error);
			return txn_fatal_status(pub);
		}
		if (rd_kafka_error_code(error) == RD_KAFKA_RESP_ERR__TIMED_OUT && now_ms() < deadline &&
		    wait_tick(pub->w)) {
			rd_kafka_error_destroy(error);
			continue; /* only a slice ended */
		}
		pub->needs_recreate = true;
		log_warning("could not abort transaction: %s", rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
		return PUB_UNKNOWN;
	}
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
	if ((pub->client_max_bytes && record_wire_size(b, r) + 512 > pub->client_max_bytes) ||
	    (pub->queue_max_bytes && (int64_t)r->payload_len > pub->queue_max_bytes)) {
		/* Too large for any topic: the dead letter says so instead. */
		snprintf(num, sizeof(num), "%zu", r->payload_len);
		rd_kafka_header_add(hdrs, "outbox-payload-omitted-bytes", -1, num, -1);
		payload = NULL;
		plen = 0;
	}
	return produce(pub, fixed_topic(pub, &pub->dlq_rkt, pub->cfg->dead_letter_topic), r->key,
		       r->key_len, payload, plen, r->timestamp_ms, hdrs, r->id);
}

/* A row refused with err in the transaction is poison, unless its topic
 * is missing and topics.create is on: then the topic is looked up afresh
 * and the caller checks the batch again (publisher_poison_topic_missing),
 * which creates it. */
static void poison_row(struct publisher *pub, int64_t id, const char *topic,
		       rd_kafka_resp_err_t err)
{
	pub->poison_id = id;
	pub->poison_missing = pub->cfg->topics_create && topic &&
			      (err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
			       err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
	if (pub->poison_missing) {
		struct topic_handle *th = topic_get(pub, topic);

		th->exists = false;
		th->checked_ms = 0;
	}
}

/* The topic of row `id` of the current transaction's batch, or NULL. */
static const char *row_topic(const struct publisher *pub, int64_t id)
{
	for (size_t i = 0; pub->cur && i < pub->cur->nrecs; i++)
		if (pub->cur->recs[i].id == id)
			return pub->cur->recs[i].dead_reason && pub->cfg->dead_letter_topic[0]
				       ? NULL /* a dead letter: its topic is not the row's */
				       : pub->cur->recs[i].topic;
	return NULL;
}

/* Rows [from, b->nrecs) of b into the open transaction. */
static enum pub_status produce_rows(struct publisher *pub, const struct batch *b, size_t from)
{
	rd_kafka_resp_err_t err;

	pub->cur = b;
	for (size_t i = from; i < b->nrecs; i++) {
		const struct record *r = &b->recs[i];
		rd_kafka_headers_t *hdrs;
		bool dead = r->dead_reason && pub->cfg->dead_letter_topic[0];
		char idbuf[24], why[256];

		if (!dead && size_refusal(pub, b, r, NULL, why, sizeof(why))) {
			/* librdkafka would refuse it (or, for the queue, wait
			 * for ever): name the row before anything waits */
			snprintf(pub->errstr, sizeof(pub->errstr), "outbox row %" PRId64 ": %s", r->id,
				 why);
			pub->poison_id = r->id;
			return abort_txn(pub, PUB_POISON);
		}
		hdrs = rd_kafka_headers_new(r->hdr_count + 4);
		for (size_t h = 0; h < r->hdr_count; h++) {
			const struct record_header *rh = &b->hdrs[r->hdr_off + h];
			rd_kafka_header_add(hdrs, rh->name, (ssize_t)rh->name_len, rh->value,
					    (ssize_t)rh->value_len);
		}
		snprintf(idbuf, sizeof(idbuf), "%" PRId64, r->id);
		rd_kafka_header_add(hdrs, "outbox-id", -1, idbuf, -1);
		if (dead)
			err = produce_dead_letter(pub, b, r, hdrs);
		else
			err = produce(pub, topic_get(pub, r->topic)->rkt, r->key, r->key_len,
				      r->payload, r->payload_len, r->timestamp_ms, hdrs, r->id);
		if (err) {
			enum err_class ec = err_class(err);

			rd_kafka_headers_destroy(hdrs);
			snprintf(pub->errstr, sizeof(pub->errstr),
				 "could not produce outbox row %" PRId64 " to topic \"%s\": %s", r->id,
				 dead ? pub->cfg->dead_letter_topic : r->topic,
				 err == RD_KAFKA_RESP_ERR__INTR ? "stopped while waiting for room in the producer queue"
								: rd_kafka_err2str(err));
			if (ec == ERR_ROW && !dead) {
				poison_row(pub, r->id, r->topic, err);
				return abort_txn(pub, PUB_POISON);
			}
			if (rd_kafka_fatal_error(pub->rk, NULL, 0))
				return txn_fatal_status(pub);
			/* a dead letter that cannot be written is not the row's fault */
			return abort_txn(pub, ec != ERR_RETRY ? PUB_FATAL : PUB_RESEND);
		}
	}
	return PUB_OK;
}

/* The checkpoint record, last in the open transaction. */
static enum pub_status produce_checkpoint(struct publisher *pub, const char *ckpt_value)
{
	rd_kafka_resp_err_t err;
	rd_kafka_headers_t *ckpt_hdrs;

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
			return txn_fatal_status(pub);
		return abort_txn(pub, err_class(err) != ERR_RETRY ? PUB_FATAL : PUB_RESEND);
	}
	return PUB_OK;
}

static int cmp_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Rows were refused for size. The broker judges a whole record batch (one
 * partition's share of a produce request, many rows) against the topic's
 * max.message.bytes and refuses every row in it, so the first refused row
 * is not necessarily the guilty one. Blame a row only when it was alone in
 * its request, or when it alone exceeds the topic's limit; otherwise no row
 * is to blame: librdkafka's batches are larger than the topic accepts. */
static enum pub_status size_culprit(struct publisher *pub)
{
	const struct batch *b = pub->cur;
	const struct record *worst = NULL;
	int64_t worst_size = 0, limit = 0;
	const char *topic = "";

	if (pub->nsize_ids == 1 || !b) {
		pub->poison_id = pub->nsize_ids ? pub->size_ids[0] : pub->dr_id;
		snprintf(pub->errstr, sizeof(pub->errstr), "could not deliver outbox row %" PRId64 ": %s",
			 pub->poison_id, rd_kafka_err2str(pub->dr_err));
		return PUB_POISON;
	}
	qsort(pub->size_ids, pub->nsize_ids, sizeof(*pub->size_ids), cmp_id);
	for (size_t i = 0; i < b->nrecs; i++) {
		const struct record *r = &b->recs[i];
		int64_t size = record_wire_size(b, r);

		if (!bsearch(&r->id, pub->size_ids, pub->nsize_ids, sizeof(*pub->size_ids), cmp_id))
			continue;
		if (size > worst_size) {
			struct topic_handle *th = topic_get(pub, r->dead_reason && pub->cfg->dead_letter_topic[0]
							    ? pub->cfg->dead_letter_topic : r->topic);
			worst = r;
			worst_size = size;
			limit = th->max_bytes;
			topic = th->name;
		}
	}
	if (worst && limit && worst_size > limit) {
		pub->poison_id = worst->id;
		snprintf(pub->errstr, sizeof(pub->errstr),
			 "could not deliver outbox row %" PRId64 ": %s (about %" PRId64 " bytes; max.message.bytes of topic \"%s\" is %" PRId64 ")",
			 worst->id, rd_kafka_err2str(pub->dr_err), worst_size, topic, limit);
		return PUB_POISON;
	}
	snprintf(pub->errstr, sizeof(pub->errstr),
		 "the broker refused a record batch of %zu rows for size (%s) though no row alone %s "
		 "topic's max.message.bytes: set kafka.properties \"batch.size\" below the smallest "
		 "max.message.bytes of the outbox topics",
		 pub->nsize_ids, rd_kafka_err2str(pub->dr_err),
		 limit ? "exceeds its" : "is known to exceed its");
	return PUB_FATAL;
}

/* Commit; a retriable failure (a timeout among them) is retried with the
 * same call, which resumes the commit in progress, until the transaction
 * timeout has passed. The call blocks in the waiter's slices; a slice that
 * ends is resumed at once, a commit_timeout_ms that ends or any other retry
 * marks the producer for recreation. When the waiter says stop, the outcome
 * is left unknown (the next producer settles it). */
static enum pub_status commit(struct publisher *pub)
{
	int64_t deadline = now_ms() + pub->cfg->transaction_timeout_ms;
	int64_t call_deadline = now_ms() + pub->cfg->commit_timeout_ms;
#ifdef OUTBOX_CRASH_POINTS
	/* "during-commit": send EndTxn, then die before its answer. */
	bool die = crash_point_due("during-commit");
#endif
	for (;;) {
		int timeout = wait_slice(pub->w, call_deadline);
		rd_kafka_error_t *error;
		enum pub_status st;

#ifdef OUTBOX_CRASH_POINTS
		if (die)
			timeout = 1;
#endif
		error = rd_kafka_commit_transaction(pub->rk, timeout > 0 ? timeout : 1);
#ifdef OUTBOX_CRASH_POINTS
		if (die) {
			crash_now("during-commit");
			die = false; /* continued after a stop: a timed-out call, retried */
		}
#endif
		if (!error)
			return PUB_OK;
		set_err(pub, "could not commit transaction", error);
		if (rd_kafka_error_is_fatal(error)) {
			rd_kafka_error_destroy(error);
			return txn_fatal_status(pub);
		}
		if (rd_kafka_error_txn_requires_abort(error)) {
			rd_kafka_resp_err_t cause = rd_kafka_error_code(error);
			char why[1024];

			snprintf(why, sizeof(why), "%s", pub->errstr);
			rd_kafka_error_destroy(error);
			st = abort_txn(pub, PUB_RESEND);
			/* The failed records' delivery reports say why. */
			rd_kafka_poll(pub->rk, 0);
			if (st == PUB_RESEND && is_authorization(cause) && !pub->dr_err) {
				char hint[512];

				snprintf(pub->errstr, sizeof(pub->errstr), "%.600s%s", why,
					 publisher_acl_hint(pub->cfg, cause, hint, sizeof(hint)));
				return PUB_RESEND;
			}
			if (st != PUB_RESEND && is_authorization(cause)) {
				/* A partition refused to the transaction for want of
				 * an ACL: librdkafka 2.0.2 then fails the abort too
				 * (INVALID_TXN_STATE, fatal), which says nothing of
				 * the cause. Nothing of the transaction can have
				 * committed; a new producer settles it and the batch
				 * is sent again, until the ACL is there. */
				char hint[512];

				snprintf(pub->errstr, sizeof(pub->errstr), "%.600s%s", why,
					 publisher_acl_hint(pub->cfg, cause, hint, sizeof(hint)));
				pub->needs_recreate = true;
				return PUB_UNKNOWN;
			}
			if (st != PUB_RESEND || !pub->dr_err)
				return st;
			switch (err_class(pub->dr_err)) {
			case ERR_RETRY:
				return st;
			case ERR_RELAY:
				snprintf(pub->errstr, sizeof(pub->errstr),
					 "the broker refused %s for a reason no retry can cure: %s (%s)",
					 pub->dr_id < 0 ? "the checkpoint record" : "the transaction's records",
					 rd_kafka_err2str(pub->dr_err), rd_kafka_err2name(pub->dr_err));
				return PUB_FATAL;
			case ERR_ROW:
				break;
			}
			if (pub->dr_id < 0) {
				/* The checkpoint record itself was refused: no row
				 * is to blame and no retry can help. */
				snprintf(pub->errstr, sizeof(pub->errstr),
					 "checkpoint topic \"%s\" refused the checkpoint record: %s",
					 pub->cfg->checkpoint_topic, rd_kafka_err2str(pub->dr_err));
				return PUB_FATAL;
			}
			if (is_size_error(pub->dr_err))
				return size_culprit(pub);
			poison_row(pub, pub->dr_id, row_topic(pub, pub->dr_id), pub->dr_err);
			snprintf(pub->errstr, sizeof(pub->errstr),
				 "could not deliver outbox row %" PRId64 ": %s (%s)", pub->dr_id,
				 rd_kafka_err2str(pub->dr_err), rd_kafka_err2name(pub->dr_err));
			return PUB_POISON;
		}
		if (rd_kafka_error_code(error) == RD_KAFKA_RESP_ERR__TIMED_OUT &&
		    now_ms() < call_deadline) {
			/* only a slice ended: the same commit goes on */
			rd_kafka_error_destroy(error);
			if (!wait_tick(pub->w)) {
				pub->needs_recreate = true;
				snprintf(pub->errstr, sizeof(pub->errstr),
					 "stopped while committing: the outcome is left to the next "
					 "producer");
				return PUB_UNKNOWN;
			}
			continue;
		}
		pub->needs_recreate = true;
		st = rd_kafka_error_is_retriable(error) && now_ms() < deadline && wait_tick(pub->w)
			     ? PUB_OK
			     : PUB_UNKNOWN;
		log_warning("%s%s", pub->errstr, st == PUB_OK ? "; retrying the commit" : "");
		rd_kafka_error_destroy(error);
		if (st != PUB_OK)
			return PUB_UNKNOWN;
		call_deadline = now_ms() + pub->cfg->commit_timeout_ms;
	}
}

enum pub_status publisher_begin(struct publisher *pub, const struct batch *b)
{
	rd_kafka_error_t *error;
	enum pub_status st;

	pub->dr_err = RD_KAFKA_RESP_ERR_NO_ERROR;
	pub->nsize_ids = 0;
	pub->poison_id = 0;
	pub->poison_missing = false;
	pub->errstr[0] = '\0';
	pub->cur = b;
	pub->txn_begin_ms = now_ms();
	error = rd_kafka_begin_transaction(pub->rk);
	if (error) {
		set_err(pub, "could not begin transaction", error);
		st = rd_kafka_error_is_fatal(error) ? fatal_status(pub) : PUB_UNKNOWN;
		rd_kafka_error_destroy(error);
		return st;
	}
	return produce_rows(pub, b, 0);
}

enum pub_status publisher_add(struct publisher *pub, const struct batch *b, size_t from)
{
	return produce_rows(pub, b, from);
}

enum pub_status publisher_end(struct publisher *pub, const char *ckpt_value)
{
	enum pub_status st = produce_checkpoint(pub, ckpt_value);

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

enum pub_status publisher_produce(struct publisher *pub, const struct batch *b,
				  const char *ckpt_value)
{
	enum pub_status st = publisher_begin(pub, b);

	return st == PUB_OK ? publisher_end(pub, ckpt_value) : st;
}

enum pub_status publisher_commit(struct publisher *pub)
{
	return commit(pub);
}

enum pub_status publisher_abort(struct publisher *pub, const char *why)
{
	snprintf(pub->errstr, sizeof(pub->errstr), "%s", why);
	return abort_txn(pub, PUB_RESEND);
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

bool publisher_poison_topic_missing(const struct publisher *pub)
{
	return pub->poison_missing;
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
	/* after the destroy: a delivery report served during it still
	 * writes here */
	free(pub->size_ids);
	free(pub);
}

int publisher_ping(struct publisher *pub, int timeout_ms)
{
	const struct rd_kafka_metadata *md;

	if (!pub || metadata_wait(pub, fixed_topic(pub, &pub->ckpt_rkt, pub->cfg->checkpoint_topic),
				  &md, now_ms() + timeout_ms))
		return -1;
	rd_kafka_metadata_destroy(md);
	return 0;
}
