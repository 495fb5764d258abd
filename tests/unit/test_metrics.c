/* test_metrics.c: the readiness decision (a table) and the Prometheus and
 * JSON renderings */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static struct metrics healthy_leader(void)
{
	struct metrics m;

	memset(&m, 0, sizeof(m));
	m.role = ROLE_LEADER;
	m.lease_held = true;
	m.db_ok = true;
	m.kafka_ok = true;
	m.heartbeat_ms = 1000;
	m.lag_known = true;
	m.lag_rows = 10;
	m.lag_oldest_ms = 500;
	return m;
}

/* Each case changes a healthy leader and names the expected answer. */
struct rcase {
	const char *name;
	int field;
	bool ready;
	const char *reason;
};

enum { F_NONE, F_STANDBY, F_STANDBY_NO_KAFKA, F_STARTING, F_STOPPING, F_NO_DB, F_NO_KAFKA,
       F_LEASE_LOST, F_POISON, F_LAG_ROWS, F_LAG_SECONDS, F_LAG_UNKNOWN, F_STALLED,
       F_STANDBY_NO_DB, F_BLOCKED };

static void mutate(struct metrics *m, int field)
{
	switch (field) {
	case F_STANDBY:
		m->role = ROLE_STANDBY;
		m->lease_held = false;
		break;
	case F_STANDBY_NO_KAFKA:
		m->role = ROLE_STANDBY;
		m->lease_held = false;
		m->kafka_ok = false;
		break;
	case F_STANDBY_NO_DB:
		m->role = ROLE_STANDBY;
		m->db_ok = false;
		break;
	case F_STARTING:
		m->role = ROLE_STARTING;
		break;
	case F_STOPPING:
		m->role = ROLE_STOPPING;
		break;
	case F_NO_DB:
		m->db_ok = false;
		break;
	case F_NO_KAFKA:
		m->kafka_ok = false;
		break;
	case F_LEASE_LOST:
		m->lease_held = false;
		break;
	case F_POISON:
		m->poison_id = 42;
		break;
	case F_LAG_ROWS:
		m->lag_rows = 1001;
		break;
	case F_LAG_SECONDS:
		m->lag_oldest_ms = 61000;
		break;
	case F_LAG_UNKNOWN:
		m->lag_known = false;
		m->lag_rows = 999999;
		break;
	case F_BLOCKED:
		strcpy(m->blocked, "not making progress: batch 7 failed 5 times");
		break;
	case F_STALLED:
		m->heartbeat_ms = 1000 - 100000;
		break;
	}
}

static void test_readiness(void **state)
{
	static const struct rcase cases[] = {
		{"healthy leader", F_NONE, true, "publishing"},
		{"standby", F_STANDBY, true, "standby"},
		{"standby without kafka (not its business yet)", F_STANDBY_NO_KAFKA, true, "standby"},
		{"standby without postgres", F_STANDBY_NO_DB, false, "postgresql unreachable"},
		{"starting", F_STARTING, false, "starting"},
		{"stopping", F_STOPPING, false, "stopping"},
		{"postgres down", F_NO_DB, false, "postgresql unreachable"},
		{"kafka down", F_NO_KAFKA, false, "kafka unreachable"},
		{"lease lost", F_LEASE_LOST, false, "lease lost"},
		{"poison row", F_POISON, false, "stopped on poison row 42"},
		{"lag rows over limit", F_LAG_ROWS, false, "lag of 1001 rows exceeds 1000"},
		{"lag age over limit", F_LAG_SECONDS, false,
		 "oldest unrelayed row is 61.0 s old, over 60 s"},
		{"publishing blocked", F_BLOCKED, false,
		 "not making progress: batch 7 failed 5 times"},
		{"lag unknown is not judged", F_LAG_UNKNOWN, true, "publishing"},
		{"loop stalled", F_STALLED, false, "relay loop stalled for 100000 ms"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct metrics m = healthy_leader();
		char reason[256];
		bool ready;

		mutate(&m, cases[i].field);
		ready = metrics_ready(&m, 1000, 1000, 60, 30000, reason, sizeof(reason));
		if (ready != cases[i].ready || strcmp(reason, cases[i].reason) != 0)
			fail_msg("%s: expected %d \"%s\", got %d \"%s\"", cases[i].name,
				 cases[i].ready, cases[i].reason, ready, reason);
	}
	/* limits of 0 mean none */
	{
		struct metrics m = healthy_leader();
		char reason[256];
		m.lag_rows = 1 << 30;
		m.lag_oldest_ms = 1LL << 40;
		assert_true(metrics_ready(&m, 1000, 0, 0, 30000, reason, sizeof(reason)));
	}
}

static void test_render(void **state)
{
	struct metrics m = healthy_leader();
	size_t len;
	char *text;

	(void)state;
	strcpy(m.relay_name, "orders \"main\"");
	strcpy(m.owner, "host:1\\x");
	m.rows_published = 12345;
	m.generation = 7;
	histogram_observe(&m.commit_seconds, commit_bucket_bounds, COMMIT_BUCKETS, 0.003);
	histogram_observe(&m.commit_seconds, commit_bucket_bounds, COMMIT_BUCKETS, 0.2);
	histogram_observe(&m.commit_seconds, commit_bucket_bounds, COMMIT_BUCKETS, 99);
	histogram_observe(&m.batch_rows, batch_bucket_bounds, BATCH_BUCKETS, 10000);
	text = metrics_render(&m, true, &len);
	assert_int_equal(strlen(text), len);
	assert_non_null(strstr(text, "outbox_relay_info{relay=\"orders \\\"main\\\"\",owner=\"host:1\\\\x\"} 1\n"));
	assert_non_null(strstr(text, "# TYPE outbox_relay_rows_published_total counter\n"
				     "outbox_relay_rows_published_total 12345\n"));
	assert_non_null(strstr(text, "outbox_relay_leader 1\n"));
	assert_non_null(strstr(text, "# TYPE outbox_relay_ready gauge\noutbox_relay_ready 1\n"));
	assert_non_null(strstr(text, "outbox_relay_lease_generation 7\n"));
	assert_non_null(strstr(text, "outbox_relay_lag_rows 10\n"));
	assert_non_null(strstr(text, "outbox_relay_lag_seconds 0.5\n"));
	/* cumulative buckets */
	assert_non_null(strstr(text, "outbox_relay_commit_duration_seconds_bucket{le=\"0.005\"} 1\n"));
	assert_non_null(strstr(text, "outbox_relay_commit_duration_seconds_bucket{le=\"0.25\"} 2\n"));
	assert_non_null(strstr(text, "outbox_relay_commit_duration_seconds_bucket{le=\"30\"} 2\n"));
	assert_non_null(strstr(text, "outbox_relay_commit_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
	assert_non_null(strstr(text, "outbox_relay_commit_duration_seconds_count 3\n"));
	assert_non_null(strstr(text, "outbox_relay_batch_rows_bucket{le=\"1000\"} 0\n"));
	assert_non_null(strstr(text, "outbox_relay_batch_rows_bucket{le=\"10000\"} 1\n"));
	free(text);
}

static void test_status_json(void **state)
{
	struct metrics m = healthy_leader();
	size_t len;
	char *json;

	(void)state;
	strcpy(m.relay_name, "r\n1");
	m.poison_id = 5;
	strcpy(m.poison_reason, "topic \"t\": too big");
	m.last_error_time = 10.5;
	strcpy(m.last_error, "boom\t");
	json = metrics_status_json(&m, false, "stopped on poison row 5", &len);
	assert_non_null(strstr(json, "\"relay\":\"r\\n1\""));
	assert_non_null(strstr(json, "\"ready\":false,\"reason\":\"stopped on poison row 5\""));
	assert_non_null(strstr(json, "\"poison_row\":{\"id\":5,\"reason\":\"topic \\\"t\\\": too big\"}"));
	assert_non_null(strstr(json, "\"last_error\":{\"time\":10.500,\"message\":\"boom\\u0009\"}"));
	assert_non_null(strstr(json, "\"lag\":{\"rows\":10,\"oldest_seconds\":0.500}"));
	free(json);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_readiness),
		cmocka_unit_test(test_render),
		cmocka_unit_test(test_status_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
