/* test_publisher_mock.c: the publisher's error classes against librdkafka's
 * mock cluster with injected errors. The mock writes no transaction
 * markers, so it only tests what the producer API reports; visibility is
 * tested end to end on the real broker (tests/e2e). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "batch.h"
#include "common.h"
#include "config.h"
#include "publisher.h"
#include "wait.h"

/* Kafka protocol ApiKeys */
#define API_PRODUCE 0
#define API_INIT_PRODUCER_ID 22
#define API_ADD_PARTITIONS_TO_TXN 24
#define API_END_TXN 26

struct fx {
	struct config *cfg;
	struct publisher *pub;
	rd_kafka_mock_cluster_t *mc;
	struct batch b;
};

static const char *const payloads[] = {"one", "two", "three"};

/* Until the producer's metadata shows the leaders set above, a request can
 * still go to the old leader and take an error meant for another topic. */
static void wait_for_leaders(struct fx *fx)
{
	for (int tries = 0; tries < 100; tries++) {
		const struct rd_kafka_metadata *md;
		int ok = 0;

		if (rd_kafka_metadata(publisher_handle(fx->pub), 1, NULL, &md, 1000) != 0)
			continue;
		/* events [0] and [1] on broker 1, the checkpoint's [0] on broker 2 */
		for (int t = 0; t < md->topic_cnt; t++) {
			const rd_kafka_metadata_topic_t *mt = &md->topics[t];
			bool events = strcmp(mt->topic, "events") == 0;
			if (!events && strcmp(mt->topic, fx->cfg->checkpoint_topic) != 0)
				continue;
			for (int p = 0; p < mt->partition_cnt; p++)
				if (mt->partitions[p].id < (events ? 2 : 1))
					ok += mt->partitions[p].leader == (events ? 1 : 2);
		}
		rd_kafka_metadata_destroy(md);
		if (ok == 3)
			return;
		usleep(50000);
	}
	fail_msg("the producer never saw the partition leaders the test set");
}

/* props: more kafka.properties entries (each quoted, comma first); extra:
 * more config text (other groups). */
static int setup_with(void **state, const char *props, const char *kafka, const char *extra)
{
	static int n;
	rd_kafka_resp_err_t err_code;
	char text[2048], err[512];
	struct fx *fx = calloc(1, sizeof(*fx));

	/* commit_timeout_ms is at its minimum so the timeout case stays short */
	snprintf(text, sizeof(text),
		 "relay = { name = \"mock-%d\"; };\n"
		 "kafka = { bootstrap_servers = \"unused:9092\"; commit_timeout_ms = 1000;\n"
		 "  transaction_timeout_ms = 10000; %s\n"
		 "  properties = [\"test.mock.num.brokers=2\", \"retry.backoff.ms=10\"%s]; };\n"
		 "log = { level = \"error\"; };\n%s",
		 n++, kafka, props, extra);
	fx->cfg = config_load_string(text, "mock.conf", err, sizeof(err));
	if (!fx->cfg)
		fail_msg("%s", err);
	log_setup(LOG_FATAL, LOG_TEXT); /* the injected errors are expected */
	fx->pub = publisher_new(fx->cfg, err, sizeof(err));
	if (!fx->pub)
		fail_msg("%s", err);
	fx->mc = rd_kafka_handle_mock_cluster(publisher_handle(fx->pub));
	assert_non_null(fx->mc);
	assert_int_equal(rd_kafka_mock_topic_create(fx->mc, "events", 2, 1), 0);
	/* The producer asks for the checkpoint topic's metadata as soon as it
	 * exists, and the mock cluster creates a topic it is asked about: it
	 * may be there already, with one partition either way. */
	err_code = rd_kafka_mock_topic_create(fx->mc, fx->cfg->checkpoint_topic, 1, 1);
	assert_true(err_code == RD_KAFKA_RESP_ERR_NO_ERROR ||
		    err_code == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS);
	/* Rows go to broker 1, the checkpoint to broker 2, so a broker error
	 * can be aimed at either. */
	assert_int_equal(rd_kafka_mock_partition_set_leader(fx->mc, "events", 0, 1), 0);
	assert_int_equal(rd_kafka_mock_partition_set_leader(fx->mc, "events", 1, 1), 0);
	assert_int_equal(
		rd_kafka_mock_partition_set_leader(fx->mc, fx->cfg->checkpoint_topic, 0, 2), 0);
	wait_for_leaders(fx);
	for (int i = 0; i < 3; i++) {
		struct record *r = batch_add_record(&fx->b);
		r->id = 100 + i;
		r->topic = "events";
		r->key = "k";
		r->key_len = 1;
		r->payload = payloads[i];
		r->payload_len = strlen(payloads[i]);
		r->timestamp_ms = 1700000000000LL;
	}
	*state = fx;
	return 0;
}

static int setup(void **state)
{
	return setup_with(state, "", "", "");
}

static int teardown(void **state)
{
	struct fx *fx = *state;

	publisher_free(fx->pub);
	batch_free(&fx->b);
	config_free(fx->cfg);
	free(fx);
	return 0;
}

static enum pub_status send_batch(struct fx *fx)
{
	return publisher_send(fx->pub, &fx->b, "v1 seq=1 gen=1 after=102 done=1:1: next=5:5:");
}

/* One init call, long enough for librdkafka's own retries of retriable
 * errors (the relay calls again after a short one, which resumes it). */
static void init_ok(struct fx *fx)
{
	enum pub_status st = publisher_init(fx->pub, 10000);
	if (st != PUB_OK)
		fail_msg("init: %s: %s", pub_status_str(st), publisher_errstr(fx->pub));
}

static void expect(struct fx *fx, enum pub_status got, enum pub_status want)
{
	if (got != want)
		fail_msg("expected %s, got %s (%s)", pub_status_str(want), pub_status_str(got),
			 publisher_errstr(fx->pub));
}

static void test_clean_transaction(void **state)
{
	struct fx *fx = *state;

	init_ok(fx);
	expect(fx, send_batch(fx), PUB_OK);
	expect(fx, send_batch(fx), PUB_OK);
	assert_false(publisher_needs_recreate(fx->pub));
}

/*
 * The "retriable" tests aim their errors at one broker (broker errors take
 * precedence over cluster-wide ones) so that they can check the broker's
 * error stack is empty afterwards: the errors were served and retried, not
 * left unused by requests that never came.
 */
static void push_errors(struct fx *fx, int32_t broker, int16_t api, rd_kafka_resp_err_t e1,
			rd_kafka_resp_err_t e2)
{
	assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(fx->mc, broker, api, 2, e1,
								      0, e2, 0),
			 0);
}

static void assert_errors_served(struct fx *fx, int32_t broker, int16_t api)
{
	size_t left = 99;

	assert_int_equal(rd_kafka_mock_broker_error_stack_cnt(fx->mc, broker, api, &left), 0);
	if (left != 0)
		fail_msg("%zu injected error(s) for ApiKey %d never reached broker %d", left, api,
			 broker);
}

/* The transaction coordinator is broker 1, where the errors are aimed. */
static void coordinator_on_1(struct fx *fx)
{
	assert_int_equal(
		rd_kafka_mock_coordinator_set(fx->mc, "transaction", fx->cfg->relay_name, 1), 0);
}

/* InitProducerId: retriable errors are retried inside init_transactions */
static void test_init_retriable(void **state)
{
	struct fx *fx = *state;

	coordinator_on_1(fx);
	push_errors(fx, 1, API_INIT_PRODUCER_ID, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
		    RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE);
	init_ok(fx);
	assert_errors_served(fx, 1, API_INIT_PRODUCER_ID);
	expect(fx, send_batch(fx), PUB_OK);
}

/* InitProducerId: an error librdkafka hands back as retriable (an older
 * producer's transaction still settling) means "call init again later" */
static void test_init_call_again(void **state)
{
	struct fx *fx = *state;

	enum pub_status st;
	int calls = 1;

	rd_kafka_mock_push_request_errors(
		fx->mc, API_INIT_PRODUCER_ID, 8, RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
		RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS, RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
		RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS, RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
		RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS, RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
		RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS);
	expect(fx, publisher_init(fx->pub, fx->cfg->commit_timeout_ms), PUB_UNKNOWN);
	while ((st = publisher_init(fx->pub, fx->cfg->commit_timeout_ms)) == PUB_UNKNOWN && calls < 10)
		calls++;
	expect(fx, st, PUB_OK);
	expect(fx, send_batch(fx), PUB_OK);
}

/* InitProducerId: a fatal error stops the relay */
static void test_init_fatal(void **state)
{
	struct fx *fx = *state;

	rd_kafka_mock_push_request_errors(fx->mc, API_INIT_PRODUCER_ID, 1,
					  RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
	expect(fx, publisher_init(fx->pub, fx->cfg->commit_timeout_ms), PUB_FATAL);
}

/* AddPartitionsToTxn: retriable errors are retried; the transaction commits */
static void test_add_partitions_retriable(void **state)
{
	struct fx *fx = *state;

	coordinator_on_1(fx);
	init_ok(fx);
	push_errors(fx, 1, API_ADD_PARTITIONS_TO_TXN, RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
		    RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
	expect(fx, send_batch(fx), PUB_OK);
	assert_errors_served(fx, 1, API_ADD_PARTITIONS_TO_TXN);
}

/* AddPartitionsToTxn: an abortable error aborts; the same batch is re-sent
 * and then commits */
static void test_add_partitions_abortable(void **state)
{
	struct fx *fx = *state;

	init_ok(fx);
	rd_kafka_mock_push_request_errors(fx->mc, API_ADD_PARTITIONS_TO_TXN, 1,
					  RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
	expect(fx, send_batch(fx), PUB_RESEND);
	expect(fx, send_batch(fx), PUB_OK);
}

/* Produce: retriable errors are retried by the idempotent producer */
static void test_produce_retriable(void **state)
{
	struct fx *fx = *state;

	init_ok(fx);
	/* broker 1 leads the rows' partitions */
	push_errors(fx, 1, API_PRODUCE, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
		    RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
	expect(fx, send_batch(fx), PUB_OK);
	assert_errors_served(fx, 1, API_PRODUCE);
}

/* Produce: the broker refuses a record for good: a poison row, named. The
 * row is alone in its produce request, so it is the one to blame (see
 * test_batch_refused_for_size_blames_no_row for a request of many). */
static void test_produce_poison(void **state)
{
	struct fx *fx = *state;

	init_ok(fx);
	fx->b.nrecs = 1;
	assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(
				 fx->mc, 1, API_PRODUCE, 1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, 0),
			 0);
	expect(fx, send_batch(fx), PUB_POISON);
	assert_int_equal(publisher_poison_id(fx->pub), 100);
}

/* Produce: the checkpoint record refused for good is no row's fault: stop */
static void test_checkpoint_refused(void **state)
{
	struct fx *fx = *state;

	init_ok(fx);
	assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(
				 fx->mc, 2, API_PRODUCE, 1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, 0),
			 0);
	expect(fx, send_batch(fx), PUB_FATAL);
	assert_non_null(strstr(publisher_errstr(fx->pub), "refused the checkpoint record"));
}

/* Produce: a client-side size check names the row before anything is sent */
static void test_produce_too_large_locally(void **state)
{
	struct fx *fx = *state;
	static char big[2 << 20];

	init_ok(fx);
	fx->b.recs[1].payload = big;
	fx->b.recs[1].payload_len = sizeof(big);
	expect(fx, send_batch(fx), PUB_POISON);
	assert_int_equal(publisher_poison_id(fx->pub), 101);
}

/* EndTxn: fenced by a newer producer epoch: stop */
static void test_end_txn_fenced(void **state)
{
	struct fx *fx = *state;

	init_ok(fx);
	rd_kafka_mock_push_request_errors(fx->mc, API_END_TXN, 1,
					  RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
	expect(fx, send_batch(fx), PUB_FENCED);
}

/* EndTxn: retriable errors are retried inside commit_transaction */
static void test_end_txn_retriable(void **state)
{
	struct fx *fx = *state;

	coordinator_on_1(fx);
	init_ok(fx);
	push_errors(fx, 1, API_END_TXN, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
		    RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS);
	expect(fx, send_batch(fx), PUB_OK);
	assert_errors_served(fx, 1, API_END_TXN);
}

/* EndTxn answered after commit_timeout_ms: the commit times out, is called
 * again, completes, and the producer is marked for recreation */
static void test_end_txn_timeout_recreates(void **state)
{
	struct fx *fx = *state;

	/* the coordinator where the delay is (else it depends on the name's hash) */
	assert_int_equal(rd_kafka_mock_coordinator_set(fx->mc, "transaction",
						       fx->cfg->relay_name, 1),
			 0);
	init_ok(fx);
	assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(
				 fx->mc, 1, API_END_TXN, 1, RD_KAFKA_RESP_ERR_NO_ERROR, 2500),
			 0);
	expect(fx, send_batch(fx), PUB_OK);
	assert_true(publisher_needs_recreate(fx->pub));
}


/* ---- issue 12 ---- */

/* A waiter that counts its ticks and says stop after `stop_after`. */
struct ticks {
	int n, stop_after;
};

static bool count_tick(void *arg)
{
	struct ticks *t = arg;
	return ++t->n < t->stop_after;
}

/* A publisher for a broker that is not there (nothing listens on port 1). */
static struct publisher *unreachable_publisher(struct config **cfgp)
{
	char err[512];
	struct publisher *pub;

	*cfgp = config_load_string("relay = { name = \"unreachable\"; };\n"
				   "kafka = { bootstrap_servers = \"127.0.0.1:1\"; };\n"
				   "log = { level = \"error\"; };\n",
				   "unreachable.conf", err, sizeof(err));
	if (!*cfgp)
		fail_msg("%s", err);
	log_setup(LOG_FATAL, LOG_TEXT);
	pub = publisher_new(*cfgp, err, sizeof(err));
	if (!pub)
		fail_msg("%s", err);
	return pub;
}

/* 12.4: a fresh producer meeting an unreachable broker waits for one
 * lookup per batch, not one per row (the old code spent 10 s on each of
 * the 50 rows: 500 s with no heartbeat, lease renewal or stop check). */
static void test_unreachable_broker_one_lookup(void **state)
{
	struct config *cfg;
	struct publisher *pub = unreachable_publisher(&cfg);
	struct ticks t = {0, 1 << 30};
	struct waiter w = {count_tick, &t, 200};
	struct batch b = {0};
	char names[50][32], why[256];
	int64_t t0 = now_ms(), deadline = t0 + 3000;

	(void)state;
	publisher_set_waiter(pub, &w);
	for (int i = 0; i < 50; i++) {
		struct record *r = batch_add_record(&b);
		snprintf(names[i], sizeof(names[i]), "unknown-state-%d", i);
		r->id = i + 1;
		r->topic = names[i];
		r->payload = "x";
		r->payload_len = 1;
	}
	for (size_t i = 0; i < b.nrecs; i++) {
		enum pub_check rc = publisher_check(pub, &b, i, deadline, true, why, sizeof(why));
		int64_t took = now_ms() - t0;

		if (rc != CHECK_UNSURE)
			fail_msg("row %zu: expected unsure (could not ask), got %s (%s)", i,
				 pub_check_str(rc), why);
		/* one lookup bounded by the caller's 3 s deadline, then none */
		if (took > 6000)
			fail_msg("row %zu: %lld ms spent on lookups so far", i, (long long)took);
	}
	/* the lookup blocked in the waiter's slices, ticking between them */
	assert_true(t.n >= 5);
	publisher_free(pub);
	batch_free(&b);
	config_free(cfg);
}

/* 12.4: a lookup gives up as soon as the waiter says stop */
static void test_lookup_stops_on_waiter(void **state)
{
	struct config *cfg;
	struct publisher *pub = unreachable_publisher(&cfg);
	struct ticks t = {0, 3};
	struct waiter w = {count_tick, &t, 200};
	struct batch b = {0};
	struct record *r = batch_add_record(&b);
	char why[256];
	int64_t t0 = now_ms();

	(void)state;
	r->id = 1;
	r->topic = "stop-me";
	publisher_set_waiter(pub, &w);
	assert_int_equal(
		publisher_check(pub, &b, 0, now_ms() + 30000, true, why, sizeof(why)),
		CHECK_UNSURE);
	assert_int_equal(t.n, 3);
	assert_true(now_ms() - t0 < 2000);
	/* the ping takes a caller's timeout, and the waiter too */
	t.n = 0;
	t0 = now_ms();
	assert_int_equal(publisher_ping(pub, 30000), -1);
	assert_true(now_ms() - t0 < 2000);
	publisher_free(pub);
	batch_free(&b);
	config_free(cfg);
}

/* 12.5: LEADER_NOT_AVAILABLE (an election, an auto-creation) is not "the
 * topic does not exist": the row is not poison, it is asked about again */
static void test_leader_not_available_is_transient(void **state)
{
	struct fx *fx = *state;
	char why[256] = "";

	rd_kafka_mock_topic_set_error(fx->mc, "events", RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE);
	if (publisher_check(fx->pub, &fx->b, 0, now_ms() + 5000, true, why, sizeof(why)) !=
	    CHECK_UNSURE)
		fail_msg("LEADER_NOT_AVAILABLE taken as the row's fault: %s", why);
	rd_kafka_mock_topic_set_error(fx->mc, "events", RD_KAFKA_RESP_ERR_NO_ERROR);
	assert_int_equal(
		publisher_check(fx->pub, &fx->b, 0, now_ms() + 5000, true, why, sizeof(why)),
		CHECK_OK);
}

/* 12.5: an unknown topic (asked twice) and a forbidden one are the row's */
static void test_unknown_or_denied_topic_is_poison(void **state)
{
	struct fx *fx = *state;
	char why[256] = "";

	rd_kafka_mock_topic_set_error(fx->mc, "events", RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
	assert_int_equal(
		publisher_check(fx->pub, &fx->b, 0, now_ms() + 5000, true, why, sizeof(why)),
		CHECK_POISON);
	assert_non_null(strstr(why, "does not exist"));
	fx->b.recs[1].topic = "secret-events";
	assert_int_equal(rd_kafka_mock_topic_create(fx->mc, "secret-events", 1, 1), 0);
	rd_kafka_mock_topic_set_error(fx->mc, "secret-events",
				      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
	assert_int_equal(
		publisher_check(fx->pub, &fx->b, 1, now_ms() + 5000, true, why, sizeof(why)),
		CHECK_POISON);
	assert_non_null(strstr(why, "not allowed"));
}

static int setup_create(void **state)
{
	return setup_with(state, ", \"topic.metadata.propagation.max.ms=10\"", "",
			  "topics = { create = true; partitions = 2; };\n");
}

/* 14.4: with topics.create a missing topic is not the row's fault: it is
 * created before a transaction (the mock never answers CreateTopics: no
 * answer is "later", never poison) and never while one is open */
static void test_missing_topic_created_not_poison(void **state)
{
	struct fx *fx = *state;
	char why[256] = "";
	int64_t t0 = now_ms();

	rd_kafka_mock_topic_set_error(fx->mc, "events", RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
	assert_int_equal(
		publisher_check(fx->pub, &fx->b, 0, now_ms() + 5000, false, why, sizeof(why)),
		CHECK_LATER);
	assert_string_equal(why, "topic \"events\" does not exist yet: it is created before the "
				 "next transaction");
	assert_int_equal(
		publisher_check(fx->pub, &fx->b, 0, now_ms() + 2000, true, why, sizeof(why)),
		CHECK_LATER);
	assert_string_equal(why, "could not create topic \"events\": timed out");
	assert_true(now_ms() - t0 < 5000);
	/* the relay's own topics are never created, whatever topics.create */
	fx->b.recs[1].topic = fx->cfg->checkpoint_topic;
	assert_int_equal(
		publisher_check(fx->pub, &fx->b, 1, now_ms() + 2000, true, why, sizeof(why)),
		CHECK_POISON);
	assert_non_null(strstr(why, "is the relay's checkpoint topic"));
}

/* 14.4: a row whose topic turns out missing only in the transaction (not
 * looked up before it: the broker could not be asked) is poison without
 * topics.create; with it, the publisher says so and forgets what it knew of
 * the topic, so that the relay checks the batch again, which creates it */
static void test_missing_topic_in_transaction(void **state)
{
	for (int create = 0; create <= 1; create++) {
		struct fx *fx;
		char why[256] = "";

		setup_with(state, ", \"topic.metadata.propagation.max.ms=10\"", "",
			   create ? "topics = { create = true; };\n" : "");
		fx = *state;
		assert_int_equal(rd_kafka_mock_topic_create(fx->mc, "gone", 1, 1), 0);
		rd_kafka_mock_topic_set_error(fx->mc, "gone",
					      RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
		init_ok(fx);
		fx->b.recs[1].topic = "gone";
		expect(fx, send_batch(fx), PUB_POISON);
		assert_int_equal(publisher_poison_id(fx->pub), 101);
		assert_int_equal(publisher_poison_topic_missing(fx->pub), create);
		assert_int_equal(publisher_check(fx->pub, &fx->b, 1, now_ms() + 5000, false, why,
						 sizeof(why)),
				 create ? CHECK_LATER : CHECK_POISON);
		teardown(state);
	}
}

/* 12.3: a row aimed at the relay's own checkpoint or dead-letter topic is
 * refused before anything is asked or sent */
static void test_relay_topics_refused(void **state)
{
	struct fx *fx = *state;
	char why[256] = "", want[256];

	fx->b.recs[0].topic = fx->cfg->checkpoint_topic;
	assert_int_equal(
		publisher_check(fx->pub, &fx->b, 0, now_ms() + 5000, true, why, sizeof(why)),
		CHECK_POISON);
	snprintf(want, sizeof(want),
		 "topic \"%s\" is the relay's checkpoint topic; outbox rows may not target it",
		 fx->cfg->checkpoint_topic);
	assert_string_equal(why, want);
	fx->b.recs[1].topic = "the-dlq";
	assert_int_equal(
		publisher_check(fx->pub, &fx->b, 1, now_ms() + 5000, true, why, sizeof(why)),
		CHECK_POISON);
	assert_string_equal(why,
			    "topic \"the-dlq\" is the relay's dead-letter topic; outbox rows may not target it");
}

static int setup_dlq(void **state)
{
	return setup_with(state, "", "dead_letter_topic = \"the-dlq\";", "");
}

/* 12.9: a row larger than the producer queue but within a raised
 * message.max.bytes: the old code spun on QUEUE_FULL for ever. */
static void test_row_larger_than_queue(void **state)
{
	struct fx *fx = *state;
	static char big[5 << 20]; /* the queue: 2 KB * 2 + 4096 KB */
	char why[256] = "";

	alarm(60); /* the old code never returns: fail instead of hanging */
	init_ok(fx);
	fx->b.recs[2].payload = big;
	fx->b.recs[2].payload_len = sizeof(big);
	assert_int_equal(
		publisher_check(fx->pub, &fx->b, 2, now_ms() + 5000, true, why, sizeof(why)),
		CHECK_POISON);
	assert_string_equal(why, "record of 5242880 bytes exceeds the producer queue "
				 "(queue.buffering.max.kbytes = 4098); raise batch.max_bytes");
	/* and unchecked, the transaction names it instead of waiting */
	expect(fx, send_batch(fx), PUB_POISON);
	assert_int_equal(publisher_poison_id(fx->pub), 102);
	assert_non_null(strstr(publisher_errstr(fx->pub), "exceeds the producer queue"));
	alarm(0);
	expect(fx, publisher_send(fx->pub, &fx->b, "v1"), PUB_POISON); /* no leftovers */
}

static int setup_small_queue(void **state)
{
	return setup_with(state, ", \"message.max.bytes=10000000\"", "",
			  "batch = { max_bytes = 1024; };\n");
}

/* Issue 16: the producer does not linger unless kafka.properties says so,
 * under either of the property's names; the user's value wins. */
static void test_linger_default(void **state)
{
	static const struct {
		const char *props, *want;
	} cases[] = {
		{"", "0"},
		{"\"compression.type=lz4\"", "0"},
		{"\"linger.ms=7\"", "7"},
		{"\"queue.buffering.max.ms=9\"", "9"},
	};

	(void)state;
	log_setup(LOG_FATAL, LOG_TEXT);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[512], err[512], got[32];
		size_t sz = sizeof(got);
		struct config *cfg;
		struct publisher *pub;

		snprintf(text, sizeof(text),
			 "relay = { name = \"linger\"; };\n"
			 "kafka = { bootstrap_servers = \"127.0.0.1:1\"; properties = [%s]; };\n",
			 cases[i].props);
		cfg = config_load_string(text, "linger.conf", err, sizeof(err));
		if (!cfg)
			fail_msg("%s", err);
		pub = publisher_new(cfg, err, sizeof(err));
		if (!pub)
			fail_msg("case %zu: %s", i, err);
		assert_int_equal(rd_kafka_conf_get(rd_kafka_conf(publisher_handle(pub)), "linger.ms",
						   got, &sz),
				 RD_KAFKA_CONF_OK);
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("case %zu (%s): linger.ms %s, want %s", i, cases[i].props, got,
				 cases[i].want);
		publisher_free(pub);
		config_free(cfg);
	}
}

/* 12.12: a refused property is named, its value never shown, even where
 * librdkafka's own message quotes it */
static void test_secret_not_echoed(void **state)
{
	static const char *const props[] = {
		"sasl.pasword=hunter2secret",          /* misspelled name */
		"security.protocol=hunter2secret",     /* a secret in an enum property */
		"ssl.key.password=hunter2secret\", \"acks=hunter2secret", /* refused after it */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
		char text[512], err[512];
		struct config *cfg;
		rd_kafka_conf_t *conf;

		snprintf(text, sizeof(text),
			 "relay = { name = \"secret\"; };\n"
			 "kafka = { bootstrap_servers = \"unused:9092\"; properties = [\"%s\"]; };\n",
			 props[i]);
		cfg = config_load_string(text, "secret.conf", err, sizeof(err));
		if (!cfg)
			fail_msg("%s", err);
		conf = kafka_conf_new(cfg, false, err, sizeof(err));
		assert_null(conf);
		if (strstr(err, "hunter2"))
			fail_msg("case %zu: the value leaked: %s", i, err);
		assert_non_null(strstr(err, "secret.conf: kafka.properties: \""));
		config_free(cfg);
	}
}

/* 12.15: permanent broker errors outside the old poison list: the row's
 * fault (POLICY_VIOLATION, INVALID_TIMESTAMP) or the relay's
 * (INVALID_REQUIRED_ACKS), never "aborted, send again" for ever */
static void test_permanent_produce_errors(void **state)
{
	struct fx *fx = *state;
	static const struct {
		rd_kafka_resp_err_t err;
		enum pub_status want;
	} cases[] = {
		{RD_KAFKA_RESP_ERR_POLICY_VIOLATION, PUB_POISON},
		{RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP, PUB_POISON},
		{RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS, PUB_FATAL},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (i > 0) {
			teardown(state);
			setup(state);
			fx = *state;
		}
		init_ok(fx);
		assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(
					 fx->mc, 1, API_PRODUCE, 1, cases[i].err, 0),
				 0);
		expect(fx, send_batch(fx), cases[i].want);
		if (cases[i].want == PUB_POISON)
			assert_int_equal(publisher_poison_id(fx->pub), 100);
		assert_non_null(strstr(publisher_errstr(fx->pub), rd_kafka_err2name(cases[i].err)));
	}
}

/* Suspicion (a): one produce request carrying all three rows refused for
 * size: no row alone exceeds any limit, so none is blamed (the old code
 * poisoned row 100, the first of the request) */
static void test_batch_refused_for_size_blames_no_row(void **state)
{
	struct fx *fx = *state;

	init_ok(fx);
	assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(
				 fx->mc, 1, API_PRODUCE, 1, RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE, 0),
			 0);
	expect(fx, send_batch(fx), PUB_FATAL);
	assert_non_null(strstr(publisher_errstr(fx->pub), "refused a record batch of 3 rows"));
	assert_non_null(strstr(publisher_errstr(fx->pub), "batch.size"));
}

static int setup_linger(void **state)
{
	/* a long linger puts the three rows in one produce request */
	return setup_with(state, ", \"linger.ms=200\"", "", "");
}

/* A commit waiting for a slow EndTxn blocks in the waiter's slices: the
 * tick runs meanwhile (heartbeat, lease), and a stop ends the wait with the
 * outcome left to the next producer (the old commit blocked for
 * commit_timeout_ms and then retried, blind to a stop) */
static void test_commit_stops_on_waiter(void **state)
{
	struct fx *fx = *state;
	struct ticks t = {0, 3};
	struct waiter w = {count_tick, &t, 100};
	int64_t t0;

	/* the transaction coordinator on broker 1, where EndTxn is delayed */
	assert_int_equal(rd_kafka_mock_coordinator_set(fx->mc, "transaction",
						       fx->cfg->relay_name, 1),
			 0);
	init_ok(fx);
	publisher_set_waiter(fx->pub, &w);
	assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(
				 fx->mc, 1, API_END_TXN, 1, RD_KAFKA_RESP_ERR_NO_ERROR, 5000),
			 0);
	t0 = now_ms();
	expect(fx, send_batch(fx), PUB_UNKNOWN);
	assert_true(now_ms() - t0 < 1500);
	assert_int_equal(t.n, 3);
	assert_true(publisher_needs_recreate(fx->pub));
	assert_non_null(strstr(publisher_errstr(fx->pub), "stopped while committing"));
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_clean_transaction),
		T(test_init_retriable),
		T(test_init_call_again),
		T(test_init_fatal),
		T(test_add_partitions_retriable),
		T(test_add_partitions_abortable),
		T(test_produce_retriable),
		T(test_produce_poison),
		T(test_checkpoint_refused),
		T(test_produce_too_large_locally),
		T(test_end_txn_fenced),
		T(test_end_txn_retriable),
		T(test_end_txn_timeout_recreates),
		cmocka_unit_test(test_unreachable_broker_one_lookup),
		cmocka_unit_test(test_lookup_stops_on_waiter),
		T(test_leader_not_available_is_transient),
		T(test_unknown_or_denied_topic_is_poison),
		cmocka_unit_test_setup_teardown(test_relay_topics_refused, setup_dlq, teardown),
		cmocka_unit_test_setup_teardown(test_missing_topic_created_not_poison, setup_create,
						teardown),
		cmocka_unit_test(test_missing_topic_in_transaction),
		cmocka_unit_test_setup_teardown(test_row_larger_than_queue, setup_small_queue,
						teardown),
		cmocka_unit_test(test_secret_not_echoed),
		cmocka_unit_test(test_linger_default),
		T(test_permanent_produce_errors),
		T(test_commit_stops_on_waiter),
		cmocka_unit_test_setup_teardown(test_batch_refused_for_size_blames_no_row,
						setup_linger, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
