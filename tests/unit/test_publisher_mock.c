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
#include "config.h"
#include "publisher.h"

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

static int setup(void **state)
{
	static int n;
	rd_kafka_resp_err_t err_code;
	char text[1024], err[512];
	struct fx *fx = calloc(1, sizeof(*fx));

	/* commit_timeout_ms is at its minimum so the timeout case stays short */
	snprintf(text, sizeof(text),
		 "relay = { name = \"mock-%d\"; };\n"
		 "kafka = { bootstrap_servers = \"unused:9092\"; commit_timeout_ms = 1000;\n"
		 "  transaction_timeout_ms = 10000;\n"
		 "  properties = [\"test.mock.num.brokers=2\", \"retry.backoff.ms=10\"]; };\n"
		 "log = { level = \"error\"; };\n",
		 n++);
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

/* Produce: the broker refuses a record for good: a poison row, named */
static void test_produce_poison(void **state)
{
	struct fx *fx = *state;

	init_ok(fx);
	assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(
				 fx->mc, 1, API_PRODUCE, 1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, 0),
			 0);
	expect(fx, send_batch(fx), PUB_POISON);
	/* all three rows share key "k", so one partition and one request */
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

	init_ok(fx);
	assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(
				 fx->mc, 1, API_END_TXN, 1, RD_KAFKA_RESP_ERR_NO_ERROR, 2500),
			 0);
	expect(fx, send_batch(fx), PUB_OK);
	assert_true(publisher_needs_recreate(fx->pub));
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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
