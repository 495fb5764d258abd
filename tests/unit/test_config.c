/* test_config.c: the option table against good and bad configuration text */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

#define KAFKA_ONLY "relay = { name = \"r1\"; };\n\n"
#define MIN_OK "relay = { name = \"r1\"; };\nkafka = { bootstrap_servers = \"k:9092\"; };\n"

static void test_defaults(void **state)
{
	char err[512];
	struct config *cfg = config_load_string(MIN_OK, "t.conf", err, sizeof(err));

	(void)state;
	assert_non_null(cfg);
	assert_string_equal(cfg->relay_name, "r1");
	assert_string_equal(cfg->kafka_bootstrap, "k:9092");
	assert_string_equal(cfg->checkpoint_topic, "outbox-relay.checkpoints");
	assert_int_equal(cfg->batch_max_rows, 10000);
	assert_int_equal(cfg->batch_max_bytes, 16 << 20);
	assert_int_equal(cfg->lease_ttl_ms, 10000);
	assert_true(cfg->notify);
	assert_false(cfg->allow_other_names);
	assert_int_equal(cfg->on_database_ahead, DB_AHEAD_REFUSE);
	assert_int_equal(cfg->log_level, LOG_INFO);
	assert_int_equal(cfg->n_kafka_props, 0);
	config_free(cfg);
}

static void test_all_options(void **state)
{
	const char *text = "relay = { name = \"a.b_c-1\"; owner = \"me\"; lease_ttl_ms = 2000;\n"
			   "  allow_other_names = true; on_database_ahead = \"trust-database\"; };\n"
			   "postgres = { conninfo = \"host=x\"; statement_timeout_ms = 0; };\n"
			   "kafka = { bootstrap_servers = \"k:1\"; checkpoint_topic = \"ck\";\n"
			   "  checkpoint_replication_factor = 3; transaction_timeout_ms = 20000;\n"
			   "  commit_timeout_ms = 20000; properties = [\"linger.ms=1\", \"a.b=c=d\"]; };\n"
			   "batch = { max_rows = 7; max_bytes = 2147483648L; max_wait_ms = 9;\n"
			   "  poll_interval_ms = 11; notify = false; };\n"
			   "log = { level = \"debug\"; format = \"json\"; };\n";
	char err[512];
	struct config *cfg = config_load_string(text, "t.conf", err, sizeof(err));

	(void)state;
	if (!cfg)
		fail_msg("%s", err);
	assert_string_equal(cfg->owner, "me");
	assert_int_equal(cfg->lease_ttl_ms, 2000);
	assert_true(cfg->allow_other_names);
	assert_int_equal(cfg->on_database_ahead, DB_AHEAD_TRUST_DATABASE);
	assert_string_equal(cfg->pg_conninfo, "host=x");
	assert_int_equal(cfg->pg_statement_timeout_ms, 0);
	assert_string_equal(cfg->checkpoint_topic, "ck");
	assert_int_equal(cfg->checkpoint_replication_factor, 3);
	assert_int_equal(cfg->n_kafka_props, 2);
	assert_string_equal(cfg->kafka_props[0], "linger.ms=1");
	assert_string_equal(cfg->kafka_props[1], "a.b=c=d");
	assert_null(cfg->kafka_props[2]);
	assert_int_equal(cfg->batch_max_rows, 7);
	assert_true(cfg->batch_max_bytes == 2147483648LL);
	assert_int_equal(cfg->batch_max_wait_ms, 9);
	assert_int_equal(cfg->poll_interval_ms, 11);
	assert_false(cfg->notify);
	assert_int_equal(cfg->log_level, LOG_DEBUG);
	assert_int_equal(cfg->log_format, LOG_JSON);
	config_free(cfg);
}

/* Each bad input and the exact message it must produce. */
static const struct {
	const char *text;
	const char *error;
} bad[] = {
	{"relay = { name = \"r1\" \n", "t.conf:2: syntax error"},
	{MIN_OK "relya = { name = \"x\"; };\n",
	 "t.conf:3: relya: unknown group (expected one of: relay, postgres, kafka, batch, http, log)"},
	{MIN_OK "batch = {\n max_row = 5;\n};\n", "t.conf:4: batch.max_row: unknown option"},
	{MIN_OK "batch = { max_rows = 0; };\n",
	 "t.conf:3: batch.max_rows: 0 is out of range (1..1000000)"},
	{MIN_OK "batch = { max_rows = 1000001; };\n",
	 "t.conf:3: batch.max_rows: 1000001 is out of range (1..1000000)"},
	{MIN_OK "batch = { max_rows = \"10\"; };\n",
	 "t.conf:3: batch.max_rows: expected an integer, got a string"},
	{MIN_OK "batch = { max_rows = 1.5; };\n",
	 "t.conf:3: batch.max_rows: expected an integer, got a float"},
	{MIN_OK "batch = { max_bytes = 100; };\n",
	 "t.conf:3: batch.max_bytes: 100 is out of range (1024..2147483648)"},
	{MIN_OK "batch = { notify = 1; };\n",
	 "t.conf:3: batch.notify: expected true or false, got an integer"},
	{MIN_OK "log = { level = \"verbose\"; };\n",
	 "t.conf:3: log.level: \"verbose\" is not one of: debug, info, warning, error"},
	{MIN_OK "log = { format = 1; };\n",
	 "t.conf:3: log.format: expected a string (one of: text, json), got an integer"},
	{MIN_OK "postgres = { conninfo = 5; };\n",
	 "t.conf:3: postgres.conninfo: expected a string, got an integer"},
	{KAFKA_ONLY "kafka = { bootstrap_servers = \"k\"; properties = [\"linger.ms\"]; };\n",
	 "t.conf:3: kafka.properties: element 1: expected a \"name=value\" string"},
	{KAFKA_ONLY "kafka = { bootstrap_servers = \"k\"; properties = [\"=x\"]; };\n",
	 "t.conf:3: kafka.properties: element 1: expected a \"name=value\" string"},
	{KAFKA_ONLY "kafka = { bootstrap_servers = \"k\"; properties = \"linger.ms=1\"; };\n",
	 "t.conf:3: kafka.properties: expected an array of \"name=value\" strings, got a string"},
	{MIN_OK "log = 5;\n", "t.conf:3: log: expected a group { ... }, got an integer"},
	{"kafka = { bootstrap_servers = \"k\"; };\n", "t.conf: relay.name: missing (required)"},
	{"relay = { name = \"\"; };\n", "t.conf:1: relay.name: must not be empty"},
	{"relay = { name = \"r\"; };\n",
	 "t.conf: kafka.bootstrap_servers: missing (required; or set "
	 "OUTBOX_KAFKA_BOOTSTRAP_SERVERS)"},
	{"relay = { name = \"a b\"; };\nkafka = { bootstrap_servers = \"k\"; };\n",
	 "t.conf: relay.name: \"a b\" may contain only letters, digits, '.', '_' and '-'"},
	{KAFKA_ONLY "kafka = { bootstrap_servers = \"k\"; commit_timeout_ms = 70000; };\n",
	 "t.conf: kafka.commit_timeout_ms: 70000 must not exceed kafka.transaction_timeout_ms "
	 "(60000)"},
	{"kafka = { bootstrap_servers = \"k\"; };\nrelay = {\n name = \"r\";\n on_database_ahead = \"yes\"; };\n",
	 "t.conf:4: relay.on_database_ahead: \"yes\" is not one of: refuse, trust-database"},
};

static void test_bad_inputs(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char err[512] = "";
		struct config *cfg = config_load_string(bad[i].text, "t.conf", err, sizeof(err));
		if (cfg || strcmp(err, bad[i].error) != 0)
			fail_msg("case %zu: expected \"%s\", got %s \"%s\"", i, bad[i].error,
				 cfg ? "success" : "error", err);
	}
}

static void test_missing_file(void **state)
{
	char err[512];

	(void)state;
	assert_null(config_load("/nonexistent/relay.conf", err, sizeof(err)));
	assert_string_equal(err, "could not open configuration file \"/nonexistent/relay.conf\": "
				 "No such file or directory");
}

static void test_env_overrides(void **state)
{
	char err[512];
	struct config *cfg;

	(void)state;
	setenv("OUTBOX_PG_CONNINFO", "host=secret password=x", 1);
	setenv("OUTBOX_KAFKA_BOOTSTRAP_SERVERS", "env:9092", 1);
	setenv("OUTBOX_KAFKA_SASL_USERNAME", "u1", 1);
	setenv("OUTBOX_KAFKA_SASL_PASSWORD", "p1", 1);
	/* the environment can supply a required value */
	cfg = config_load_string("relay = { name = \"r\"; };\n"
				 "kafka = { properties = [\"linger.ms=2\"]; };\n",
				 "t.conf", err, sizeof(err));
	unsetenv("OUTBOX_PG_CONNINFO");
	unsetenv("OUTBOX_KAFKA_BOOTSTRAP_SERVERS");
	unsetenv("OUTBOX_KAFKA_SASL_USERNAME");
	unsetenv("OUTBOX_KAFKA_SASL_PASSWORD");
	assert_non_null(cfg);
	assert_string_equal(cfg->pg_conninfo, "host=secret password=x");
	assert_string_equal(cfg->kafka_bootstrap, "env:9092");
	assert_int_equal(cfg->n_kafka_props, 3);
	assert_string_equal(cfg->kafka_props[0], "linger.ms=2");
	assert_string_equal(cfg->kafka_props[1], "sasl.username=u1");
	assert_string_equal(cfg->kafka_props[2], "sasl.password=p1");
	assert_null(cfg->kafka_props[3]);
	config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_all_options),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_env_overrides),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
