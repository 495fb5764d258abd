/* publisher.h: the librdkafka side: one transactional producer that sends a
 * batch plus its checkpoint record as one Kafka transaction */
#ifndef OUTBOX_PUBLISHER_H
#define OUTBOX_PUBLISHER_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "batch.h"
#include "common.h"
#include "config.h"
#include "wait.h"

/* What a transaction attempt came to, and what the caller must do next. */
enum pub_status {
	PUB_OK,      /* committed */
	PUB_RESEND,  /* aborted cleanly: nothing visible; send the same batch
		      * again (every error not known to be permanent: the
		      * caller counts these in a row to show no progress) */
	PUB_UNKNOWN, /* outcome unknown (timeouts, broker gone, the waiter said
		      * stop mid-commit, or "fenced" after the transaction outlived
		      * transaction.timeout.ms, which the broker's own abort gives):
		      * recreate the producer, then read the checkpoint to learn
		      * the outcome */
	PUB_FENCED,  /* another producer took our transactional.id: stop */
	PUB_POISON,  /* a record can never be published (too large, unknown or
		      * forbidden topic, INVALID_TIMESTAMP, POLICY_VIOLATION, ...):
		      * see publisher_poison_id() */
	PUB_FATAL,   /* any other fatal producer error, or an error no row is
		      * to blame for and no retry can cure (INVALID_REQUIRED_ACKS,
		      * CLUSTER_AUTHORIZATION_FAILED, ...): stop */
	PUB_REFUSED, /* publisher_init only: the broker refused the connection
		      * (SASL authentication, the broker's certificate, or our
		      * client certificate); librdkafka keeps trying, so it may
		      * pass once the broker or the credentials change */
};

const char *pub_status_str(enum pub_status st);

struct publisher;

/* A librdkafka configuration with bootstrap.servers, the relay's logger and
 * cfg->kafka_props applied (in that order, so the file wins). Shared by the
 * producer, the checkpoint reader (`reader`: a consumer) and the admin
 * calls. Returns NULL with errbuf set when a property is refused. The
 * caller owns the result. */
rd_kafka_conf_t *kafka_conf_new(const struct config *cfg, bool reader, char *errbuf,
				size_t errlen) MUSTCHECK;

/* Create the transactional producer (transactional.id = relay name). cfg is
 * borrowed and must outlive it. Returns NULL with errbuf on a config error. */
struct publisher *publisher_new(const struct config *cfg, char *errbuf, size_t errlen) MUSTCHECK;

/* Every blocking call of the publisher after this (metadata lookups,
 * DescribeConfigs, waiting for room in the producer queue, commit, abort)
 * blocks in w's slices and calls its tick between them; when the tick says
 * stop, the call gives up with an error that says so. w is borrowed and must
 * outlive pub; NULL (tests, CLI): plain timeouts. */
void publisher_set_waiter(struct publisher *pub, const struct waiter *w);

/* rd_kafka_init_transactions: fences older producers with our
 * transactional.id and settles their open transaction. PUB_OK, PUB_UNKNOWN
 * (timed out or retriable: call again, which resumes the same
 * initialization), PUB_REFUSED (timed out, and the broker refused the
 * connection: publisher_errstr says why), PUB_FENCED or PUB_FATAL (with
 * the ACL to grant when the broker said which was missing). Waits at most
 * timeout_ms. */
enum pub_status publisher_init(struct publisher *pub, int timeout_ms) MUSTCHECK;

/* One transaction: every record of b (those with a dead_reason to the
 * dead-letter topic, with the reason in an "outbox-error" header), then the
 * checkpoint record (key =
 * relay name, value = ckpt_value) to the checkpoint topic; commit. Does not
 * wait for single deliveries: commit flushes. The batch stays the caller's.
 * Payloads are lent to librdkafka, not copied: keep b's pages until the
 * transaction is over (PUB_OK from the commit; PUB_RESEND or PUB_POISON:
 * aborted), after any other status until publisher_free. */
enum pub_status publisher_send(struct publisher *pub, const struct batch *b,
			       const char *ckpt_value) MUSTCHECK;

/* publisher_send in two halves, so that the caller can work while the
 * records travel: publisher_produce begins the transaction and hands every
 * record to librdkafka; publisher_commit (only after PUB_OK from
 * publisher_produce) commits it. b must stay untouched until the commit. */
enum pub_status publisher_produce(struct publisher *pub, const struct batch *b,
				  const char *ckpt_value) MUSTCHECK;
enum pub_status publisher_commit(struct publisher *pub) MUSTCHECK;
/* Abort the transaction that publisher_produce (or publisher_end) left
 * open, for a reason of the caller's (why, kept as publisher_errstr):
 * PUB_RESEND when aborted; otherwise as a failed commit (PUB_UNKNOWN: the
 * next producer settles it; PUB_FENCED, PUB_FATAL). */
enum pub_status publisher_abort(struct publisher *pub, const char *why) MUSTCHECK;

/* publisher_produce in steps, for a transaction that takes rows while it is
 * open: publisher_begin begins it and hands b's records to librdkafka;
 * publisher_add hands over records [from, b->nrecs) appended since (b may
 * grow between the calls: its pages stay where they are, and records are
 * looked up by index); publisher_end adds the checkpoint record. Then
 * publisher_commit. A status other than PUB_OK from any of them ends the
 * transaction as publisher_produce's would (aborted, or left to the next
 * producer). */
enum pub_status publisher_begin(struct publisher *pub, const struct batch *b) MUSTCHECK;
enum pub_status publisher_add(struct publisher *pub, const struct batch *b, size_t from) MUSTCHECK;
enum pub_status publisher_end(struct publisher *pub, const char *ckpt_value) MUSTCHECK;

/* What publisher_check found out about a row. */
enum pub_check {
	CHECK_OK,     /* it looks fine */
	CHECK_UNSURE, /* the broker could not be asked, or answered with a
		       * transient topic error: the transaction will tell */
	CHECK_POISON, /* it can never be published: why says why */
	CHECK_LATER,  /* topics.create: its topic is missing and not created
		       * yet (may_create false, or the creation got no answer
		       * or a transient error), or created but not yet in the
		       * producer's metadata: check it again later */
	CHECK_FATAL,  /* topics.create: the broker refuses the topics.*
		       * settings themselves, whatever the topic: stop */
};

const char *pub_check_str(enum pub_check st);

/* Look at record i of b before its transaction. CHECK_POISON, with the
 * reason in why, when its topic is the relay's checkpoint or dead-letter
 * topic, does not exist (UNKNOWN_TOPIC_OR_PART twice in a row), may not be
 * written (TOPIC_AUTHORIZATION_FAILED), or the record is larger than the
 * producer's message.max.bytes, the producer queue
 * (queue.buffering.max.kbytes, which librdkafka would otherwise answer with
 * QUEUE_FULL for ever) or, without compression, the topic's
 * max.message.bytes (with compression.type set only the broker can tell).
 * With topics.create a missing topic (or one whose name the lookup calls
 * invalid) is created instead, when may_create (never inside an open
 * transaction: CHECK_LATER then), and waited for until the producer's
 * metadata shows a leader for each of its partitions; the broker's refusal
 * of the topic is CHECK_POISON with its reason, of the settings
 * CHECK_FATAL (why says which). The checkpoint and dead-letter topics are
 * never created here. CHECK_UNSURE when the broker could not be asked or
 * answered with a transient topic error (LEADER_NOT_AVAILABLE, ...).
 * Lookups block until deadline_ms at most (monotonic, now_ms()), in the
 * waiter's slices. Topic facts are cached; a failed lookup answers
 * CHECK_UNSURE at once for the next 5 s, so one unreachable broker costs
 * one lookup per batch, not one per row. */
enum pub_check publisher_check(struct publisher *pub, const struct batch *b, size_t i,
			       int64_t deadline_ms, bool may_create, char *why,
			       size_t whylen) MUSTCHECK;

/* True once a commit or abort timed out or was retried: the producer must be
 * destroyed and a new one created before the next transaction, so that a
 * delayed EndTxn cannot land on a later transaction (KAFKA-17754). */
bool publisher_needs_recreate(const struct publisher *pub);

/* ": <what to grant>" when err is an authorization error
 * (TRANSACTIONAL_ID_, TOPIC_, CLUSTER_AUTHORIZATION_FAILED), else "": in buf,
 * which is returned. */
const char *publisher_acl_hint(const struct config *cfg, rd_kafka_resp_err_t err, char *buf,
			       size_t len);

/* Last error text (after anything but PUB_OK). Borrowed. */
const char *publisher_errstr(const struct publisher *pub);

/* For PUB_POISON: the outbox id of the row and why. */
int64_t publisher_poison_id(const struct publisher *pub);

/* For PUB_POISON: true when the row's topic turned out missing in the
 * transaction (deleted since it was looked up, or not looked up: the broker
 * could not be asked) and topics.create is on. Not the row's fault yet:
 * check the batch again, which creates the topic, then send it. */
bool publisher_poison_topic_missing(const struct publisher *pub);

/* The client handle, for admin calls (checkpoint topic). Borrowed. */
rd_kafka_t *publisher_handle(struct publisher *pub);

/* A metadata round trip of at most timeout_ms (in the waiter's slices): 0
 * when the cluster answers. */
int publisher_ping(struct publisher *pub, int timeout_ms);

/* Destroy without waiting for the broker; an open transaction is left to
 * the next producer's init_transactions to abort. NULL is a no-op. */
void publisher_free(struct publisher *pub);

#endif
