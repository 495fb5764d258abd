/* topics.c: creating topics through librdkafka's Admin API: the relay's own
 * when missing (topics_ensure), and one CreateTopics request of any topic,
 * its answer sorted into what the caller can do about it (topics_create). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "topics.h"

/* The longest single wait for an admin reply: a stop is seen this soon. */
#define ADMIN_POLL_MS 200

const char *topic_create_str(enum topic_create res)
{
	static const char *const names[] = {"created", "exists", "later", "refused",
					    "bad settings"};
	return names[res];
}

/* Wait for an admin request's reply on q in slices, ticking between them.
 * NULL on timeout or stop (errbuf says which). */
static rd_kafka_event_t *queue_wait(rd_kafka_queue_t *q, const struct waiter *w, int64_t deadline,
				    const char *what, char *errbuf, size_t errlen)
{
	for (;;) {
		rd_kafka_event_t *ev;
		int ms;

		if (!wait_tick(w)) {
			snprintf(errbuf, errlen, "%s: stopped", what);
			return NULL;
		}
		if (now_ms() >= deadline) {
			snprintf(errbuf, errlen, "%s: timed out", what);
			return NULL;
		}
		ms = wait_slice(w, deadline);
		ev = rd_kafka_queue_poll(q, ms > ADMIN_POLL_MS ? ADMIN_POLL_MS : ms);
		if (ev)
			return ev;
	}
}

/* What a CreateTopics error means for the caller. Refusals of the topic
 * itself are the row's (the poison policy handles them); refusals of what
 * was asked for would meet every new topic (the relay's configuration must
 * change); an error not known here is taken as the topic's, with the
 * broker's words, rather than retried for ever. */
static enum topic_create create_class(rd_kafka_resp_err_t err)
{
	switch (err) {
	case RD_KAFKA_RESP_ERR_NO_ERROR:
		return TOPIC_CREATED;
	case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS:
		return TOPIC_EXISTS;
	case RD_KAFKA_RESP_ERR_INVALID_PARTITIONS:
	case RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR:
	case RD_KAFKA_RESP_ERR_INVALID_REPLICA_ASSIGNMENT:
	case RD_KAFKA_RESP_ERR_INVALID_CONFIG:
	case RD_KAFKA_RESP_ERR_INVALID_REQUEST:
	case RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION:
	case RD_KAFKA_RESP_ERR__INVALID_ARG:
	case RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE:
		return TOPIC_BAD_SETTINGS;
	case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
	case RD_KAFKA_RESP_ERR_NOT_CONTROLLER:
	case RD_KAFKA_RESP_ERR_THROTTLING_QUOTA_EXCEEDED:
	case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
	case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
	case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
	case RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR:
	case RD_KAFKA_RESP_ERR__TIMED_OUT:
	case RD_KAFKA_RESP_ERR__TRANSPORT:
	case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
	case RD_KAFKA_RESP_ERR__DESTROY:
		return TOPIC_LATER;
	default: /* TOPIC_EXCEPTION (an invalid name), POLICY_VIOLATION,
		  * TOPIC_/CLUSTER_AUTHORIZATION_FAILED, ... */
		return TOPIC_REFUSED;
	}
}

/* The topic configs ("name=value") onto nt; -1 with why on a refusal. */
static int set_configs(rd_kafka_NewTopic_t *nt, char *const *config, int nconfig,
		       const char *what, char *why, size_t whylen)
{
	for (int i = 0; i < nconfig; i++) {
		char *kv = xstrdup(config[i]), *eq = strchr(kv, '=');
		rd_kafka_resp_err_t err;

		*eq = '\0';
		err = rd_kafka_NewTopic_set_config(nt, kv, eq + 1);
		if (err)
			snprintf(why, whylen, "%s: topic config \"%s\": %s", what, kv,
				 rd_kafka_err2str(err));
		free(kv);
		if (err)
			return -1;
	}
	return 0;
}

enum topic_create topics_create(rd_kafka_t *rk, const char *name, int partitions, int rf,
				char *const *config, int nconfig, bool validate_only,
				const struct waiter *w, int64_t deadline_ms, char *why,
				size_t whylen)
{
	char rderr[256], what[320];
	rd_kafka_NewTopic_t *nt;
	rd_kafka_AdminOptions_t *opts;
	rd_kafka_queue_t *q;
	rd_kafka_event_t *ev;
	rd_kafka_resp_err_t err;
	const char *msg;
	enum topic_create res;
	int left = wait_slice(NULL, deadline_ms);

	snprintf(what, sizeof(what), "could not create topic \"%.256s\"", name);
	nt = rd_kafka_NewTopic_new(name, partitions, rf, rderr, sizeof(rderr));
	if (!nt) {
		snprintf(why, whylen, "%s: %s", what, rderr);
		return TOPIC_BAD_SETTINGS;
	}
	if (set_configs(nt, config, nconfig, what, why, whylen) < 0) {
		rd_kafka_NewTopic_destroy(nt);
		return TOPIC_BAD_SETTINGS;
	}
	opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
	/* The request ends soon after our deadline (which decides: "timed
	 * out") rather than socket.timeout.ms later. */
	(void)rd_kafka_AdminOptions_set_request_timeout(opts, (left > 0 ? left : 1) + 1000, NULL, 0);
	if (validate_only)
		(void)rd_kafka_AdminOptions_set_validate_only(opts, 1, NULL, 0);
	q = rd_kafka_queue_new(rk);
	rd_kafka_CreateTopics(rk, &nt, 1, opts, q);
	ev = queue_wait(q, w, deadline_ms, what, why, whylen);
	res = TOPIC_LATER;
	if (!ev)
		goto out;
	err = rd_kafka_event_error(ev);
	msg = rd_kafka_event_error_string(ev);
	if (!err) {
		size_t n;
		const rd_kafka_topic_result_t **tres = rd_kafka_CreateTopics_result_topics(
			rd_kafka_event_CreateTopics_result(ev), &n);

		err = n == 1 ? rd_kafka_topic_result_error(tres[0]) : RD_KAFKA_RESP_ERR__BAD_MSG;
		msg = n == 1 ? rd_kafka_topic_result_error_string(tres[0]) : NULL;
	}
	res = create_class(err);
	if (res != TOPIC_CREATED && res != TOPIC_EXISTS)
		snprintf(why, whylen, "%s: %s (%s)", what, msg && *msg ? msg : rd_kafka_err2str(err),
			 rd_kafka_err2name(err));
out:
	if (ev)
		rd_kafka_event_destroy(ev);
	rd_kafka_queue_destroy(q);
	rd_kafka_AdminOptions_destroy(opts);
	rd_kafka_NewTopic_destroy(nt);
	return res;
}

enum topic_create topics_check_settings(rd_kafka_t *rk, const struct config *cfg,
					const struct waiter *w, int64_t deadline_ms, char *why,
					size_t whylen)
{
	return topics_create(rk, TOPICS_CHECK_NAME, cfg->topics_partitions,
			     cfg->topics_replication_factor, cfg->topics_config, cfg->n_topics_config,
			     true, w, deadline_ms, why, whylen);
}

/* 1 when `topic` exists, 0 when not, -1 when the broker could not say.
 * Asks for every topic's metadata: a request naming the topic could make a
 * broker with auto.create.topics.enable create it with its defaults (not
 * compacted, several partitions) before we can. */
static int topic_exists(rd_kafka_t *rk, const char *topic, const struct waiter *w,
			int64_t deadline, char *errbuf, size_t errlen)
{
	for (;;) {
		const struct rd_kafka_metadata *md;
		rd_kafka_resp_err_t err;
		int ms = wait_slice(w, deadline), found = 0;

		if (!wait_tick(w)) {
			snprintf(errbuf, errlen, "could not look up topic \"%s\": stopped", topic);
			return -1;
		}
		/* rd_kafka_metadata keeps its timeout; give it at least 1 s so
		 * that a slow but healthy cluster can answer at all. */
		err = rd_kafka_metadata(rk, 1, NULL, &md, ms < 1000 ? 1000 : ms);
		if (!err) {
			for (int i = 0; i < md->topic_cnt; i++)
				if (strcmp(md->topics[i].topic, topic) == 0 &&
				    md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
					found = 1;
			rd_kafka_metadata_destroy(md);
			return found;
		}
		if (now_ms() >= deadline || err != RD_KAFKA_RESP_ERR__TIMED_OUT) {
			snprintf(errbuf, errlen, "could not look up topic \"%s\": %s", topic,
				 rd_kafka_err2str(err));
			return -1;
		}
	}
}

int topics_ensure(rd_kafka_t *rk, const char *topic, int rf, bool compact, const struct waiter *w,
		  int64_t deadline_ms, char *errbuf, size_t errlen)
{
	/* Compaction keeps the newest checkpoint per relay name for ever. */
	static char *const compacted[] = {"cleanup.policy=compact", "min.compaction.lag.ms=3600000"};
	int exists;

	/* Look before creating: a relay then needs the Create ACL only for a
	 * topic that is really missing (CreateTopics checks authorization
	 * before existence, so "already exists" is no answer without it). */
	exists = topic_exists(rk, topic, w, deadline_ms, errbuf, errlen);
	if (exists != 0)
		return exists > 0 ? 0 : -1;
	switch (topics_create(rk, topic, 1, rf, compact ? compacted : NULL,
			      compact ? (int)ARRAY_LEN(compacted) : 0, false, w, deadline_ms, errbuf,
			      errlen)) {
	case TOPIC_CREATED:
		log_info("created topic \"%s\" (%s, replication factor %d)", topic,
			 compact ? "compacted" : "one partition", rf);
		return 0;
	case TOPIC_EXISTS:
		return 0;
	case TOPIC_REFUSED:
		/* Without Describe (or Read, Write) a topic is not in the
		 * metadata, so an existing one looks missing too. */
		if (strstr(errbuf, "AUTHORIZATION_FAILED")) {
			size_t n = strlen(errbuf);

			snprintf(errbuf + n, errlen - n, "%s",
				 ": the relay's Kafka principal may not see it or create it; create "
				 "the topic beforehand and grant the relay's ACLs on it (Write; Read "
				 "too for the checkpoint topic), or grant Create on it");
		}
		return -1;
	default:
		return -1;
	}
}
