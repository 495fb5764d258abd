/* topics.h: creating topics through librdkafka's Admin API: the relay's own
 * (checkpoint, dead-letter) when missing, and destination topics with the
 * topics.* settings (topics.create) */
#ifndef OUTBOX_TOPICS_H
#define OUTBOX_TOPICS_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "common.h"
#include "config.h"
#include "wait.h"

/* What a CreateTopics request for one topic came to. */
enum topic_create {
	TOPIC_CREATED,      /* created (or, validate_only, it would be) */
	TOPIC_EXISTS,       /* it exists already: another client was first */
	TOPIC_LATER,        /* no answer in time, a transient broker error, or a
			     * stop: ask again later */
	TOPIC_REFUSED,      /* the broker refuses this topic: its name (invalid,
			     * colliding), a create policy, an ACL */
	TOPIC_BAD_SETTINGS, /* the broker refuses the partitions, replication
			     * factor or configs asked for, whatever the name */
};

const char *topic_create_str(enum topic_create res);

/* Ask the cluster to create `name` with `partitions` and `rf` (-1: the
 * broker's default) and `nconfig` topic configs ("name=value", borrowed);
 * with validate_only, only to check that it could. Blocks in the waiter's
 * slices until deadline_ms at most. For anything but TOPIC_CREATED and
 * TOPIC_EXISTS, why says what the broker (or the client) answered:
 * "could not create topic \"name\": reason (CODE)". Does not wait for the
 * topic to show in anyone's metadata. Any thread with its own rk. */
enum topic_create topics_create(rd_kafka_t *rk, const char *name, int partitions, int rf,
				char *const *config, int nconfig, bool validate_only,
				const struct waiter *w, int64_t deadline_ms, char *why,
				size_t whylen) MUSTCHECK;

/* The made-up topic name topics_check_settings asks about. */
#define TOPICS_CHECK_NAME "outbox-relay.topics-check"

/* Have the broker judge cfg's topics.* settings: topics_create of
 * TOPICS_CHECK_NAME with validate_only (nothing is created). Only
 * TOPIC_BAD_SETTINGS condemns them: TOPIC_REFUSED (an ACL or a create
 * policy against the made-up name) and TOPIC_LATER leave the judgement to
 * the first real creation. */
enum topic_create topics_check_settings(rd_kafka_t *rk, const struct config *cfg,
					const struct waiter *w, int64_t deadline_ms, char *why,
					size_t whylen) MUSTCHECK;

/* Create `topic` with one partition (compacted when `compact`) through the
 * admin API of `rk` when a metadata lookup does not find it; an existing
 * topic is left alone, so no Create ACL is needed for it. Blocks in the
 * waiter's slices until deadline_ms; 0, or -1 with errbuf (also on stop).
 * For the relay's own topics (checkpoint, dead-letter). */
int topics_ensure(rd_kafka_t *rk, const char *topic, int rf, bool compact, const struct waiter *w,
		  int64_t deadline_ms, char *errbuf, size_t errlen) MUSTCHECK;

#endif
