/* test_config.c: the option table against good and bad configuration text */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

#define KAFKA_ONLY "relay = { name = \"r1\"; };\n\n"
/* 225 characters: with the checkpoint topic prefix, one more than Kafka allows */
#define LONG_NAME                                                                              \
	"rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr" \
	"rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr" \
	"rrrrrrrrrrrrrrrrrrrrrrrrrrrrr"
#define MIN_OK "relay = { name = \"r1\"; };\nkafka = { bootstrap_servers = \"k:9092\"; };\n"

static void test_defaults(void **state)
{
	char err[512];
	struct config *cfg = config_load_string(MIN_OK, "t.conf", err, sizeof(err));

	(void)state;
	assert_non_null(cfg);
	assert_string_equal(cfg->relay_name, "r1");
	assert_string_equal(cfg->kafka_bootstrap, "k:9092");
	/* one checkpoint topic per relay unless set (issue 12.1) */
	assert_string_equal(cfg->checkpoint_topic, "outbox-relay.checkpoints.r1");
	assert_int_equal(cfg->batch_max_rows, 10000);
	assert_int_equal(cfg->batch_max_bytes, 16 << 20);
	/* transactions stay open 50 ms at a steady rate (issue 16) */
	assert_int_equal(cfg->batch_max_wait_ms, 250);
	assert_int_equal(cfg->look_interval_ms, 10);
	assert_int_equal(cfg->lease_ttl_ms, 10000);
	assert_true(cfg->notify);
	assert_false(cfg->allow_other_names);
	assert_int_equal(cfg->on_database_ahead, DB_AHEAD_REFUSE);
	assert_int_equal(cfg->log_level, LOG_INFO);
	assert_int_equal(cfg->n_kafka_props, 0);
	/* destination topics are not created unless asked for (issue 14.4) */
	assert_false(cfg->topics_create);
	assert_int_equal(cfg->topics_partitions, -1);
	assert_int_equal(cfg->topics_replication_factor, -1);
	assert_int_equal(cfg->n_topics_config, 0);
	assert_null(cfg->topics_config);
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
			   "topics = { create = true; partitions = 3; replication_factor = 2;\n"
			   "  config = [\"cleanup.policy=delete\", \"retention.ms=86400000\"]; };\n"
			   "batch = { max_rows = 7; max_bytes = 2147483648L; max_wait_ms = 9;\n"
			   "  poll_interval_ms = 11; look_interval_ms = 3; notify = false; };\n"
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
	assert_true(cfg->topics_create);
	assert_int_equal(cfg->topics_partitions, 3);
	assert_int_equal(cfg->topics_replication_factor, 2);
	assert_int_equal(cfg->n_topics_config, 2);
	assert_string_equal(cfg->topics_config[0], "cleanup.policy=delete");
	assert_string_equal(cfg->topics_config[1], "retention.ms=86400000");
	assert_null(cfg->topics_config[2]);
	assert_int_equal(cfg->batch_max_rows, 7);
	assert_true(cfg->batch_max_bytes == 2147483648LL);
	assert_int_equal(cfg->batch_max_wait_ms, 9);
	assert_int_equal(cfg->poll_interval_ms, 11);
	assert_int_equal(cfg->look_interval_ms, 3);
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
	 "t.conf:3: relya: unknown group (expected one of: relay, postgres, kafka, topics, batch, "
	 "http, log)"},
	{MIN_OK "batch = {\n max_row = 5;\n};\n", "t.conf:4: batch.max_row: unknown option"},
	{MIN_OK "batch = { max_rows = 0; };\n",
	 "t.conf:3: batch.max_rows: 0 is out of range (1..1000000)"},
	{MIN_OK "batch = { max_rows = 1000001; };\n",
	 "t.conf:3: batch.max_rows: 1000001 is out of range (1..1000000)"},
	{MIN_OK "batch = { look_interval_ms = 60001; };\n",
	 "t.conf:3: batch.look_interval_ms: 60001 is out of range (0..60000)"},
	{MIN_OK "batch = { max_rows = \"10\"; };\n",
	 "t.conf:3: batch.max_rows: expected an integer, got a string"},
	{MIN_OK "batch = { max_rows = 1.5; };\n",
	 "t.conf:3: batch.max_rows: expected an integer, got a float"},
	{MIN_OK "batch = { max_bytes = 100; };\n",
	 "t.conf:3: batch.max_bytes: 100 is out of range (1024..2147483648)"},
	{MIN_OK "batch = { notify = 1; };\n",
	 "t.conf:3: batch.notify: expected true or false, got an integer"},
	{MIN_OK "postgres = { pooling = \"statement\"; };\n",
	 "t.conf:3: postgres.pooling: \"statement\" is not one of: none, session, transaction"},
	/* LISTEN and the awake lock need a session (issue 14.3) */
	{MIN_OK "postgres = { pooling = \"transaction\"; };\nbatch = {\n notify = true; };\n",
	 "t.conf:5: batch.notify: true needs a session connection (LISTEN), and postgres.pooling "
	 "is \"transaction\"; set batch.notify = false (the relay then polls) or use session "
	 "pooling"},
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
	 "t.conf:1: relay.name: \"a b\" may contain only letters, digits, '.', '_' and '-'"},
	{KAFKA_ONLY "kafka = { bootstrap_servers = \"k\"; commit_timeout_ms = 70000; };\n",
	 "t.conf:3: kafka.commit_timeout_ms: 70000 must not exceed kafka.transaction_timeout_ms "
	 "(60000)"},
	/* checkpoint and dead-letter topic names are Kafka's legal names */
	{KAFKA_ONLY "kafka = { bootstrap_servers = \"k\";\n checkpoint_topic = \"a/b\"; };\n",
	 "t.conf:4: kafka.checkpoint_topic: \"a/b\" may contain only ASCII letters, digits, '.', "
	 "'_' and '-' (Kafka's rule)"},
	{KAFKA_ONLY "kafka = { bootstrap_servers = \"k\"; checkpoint_topic = \"..\"; };\n",
	 "t.conf:3: kafka.checkpoint_topic: \"..\" may not be \".\" or \"..\""},
	{KAFKA_ONLY "kafka = { bootstrap_servers = \"k\"; dead_letter_topic = \"dl q\"; };\n",
	 "t.conf:3: kafka.dead_letter_topic: \"dl q\" may contain only ASCII letters, digits, "
	 "'.', '_' and '-' (Kafka's rule)"},
	{KAFKA_ONLY "kafka = { bootstrap_servers = \"k\";\n"
		    "  dead_letter_topic = \"outbox-relay.checkpoints.r1\"; };\n",
	 "t.conf:4: kafka.dead_letter_topic: must not be the checkpoint topic "
	 "\"outbox-relay.checkpoints.r1\""},
	{"kafka = { bootstrap_servers = \"k\"; };\nrelay = {\n name = \"" LONG_NAME "\"; };\n",
	 "t.conf:3: relay.name: the checkpoint topic derived from it, "
	 "\"outbox-relay.checkpoints.rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr...\", is longer than "
	 "Kafka's limit of 249 characters; set kafka.checkpoint_topic"},
	{"kafka = { bootstrap_servers = \"k\"; };\nrelay = {\n name = \"r\";\n on_database_ahead = \"yes\"; };\n",
	 "t.conf:4: relay.on_database_ahead: \"yes\" is not one of: refuse, trust-database"},
	/* topics.* (issue 14.4) */
	{MIN_OK "topics = {\n create = 1; };\n",
	 "t.conf:4: topics.create: expected true or false, got an integer"},
	{MIN_OK "topics = { create = true;\n partitions = 0; };\n",
	 "t.conf:4: topics.partitions: 0 is not a partition count (1..100000, or -1 for the "
	 "broker's num.partitions)"},
	{MIN_OK "topics = { partitions = -2; };\n",
	 "t.conf:3: topics.partitions: -2 is out of range (-1..100000)"},
	{MIN_OK "topics = { partitions = 100001; };\n",
	 "t.conf:3: topics.partitions: 100001 is out of range (-1..100000)"},
	{MIN_OK "topics = { partitions = \"3\"; };\n",
	 "t.conf:3: topics.partitions: expected an integer, got a string"},
	{MIN_OK "topics = { replication_factor = 0; };\n",
	 "t.conf:3: topics.replication_factor: 0 is not a replication factor (1..32, or -1 for "
	 "the broker's default.replication.factor)"},
	{MIN_OK "topics = { replication_factor = 33; };\n",
	 "t.conf:3: topics.replication_factor: 33 is out of range (-1..32)"},
	{MIN_OK "topics = { partition = 3; };\n", "t.conf:3: topics.partition: unknown option"},
	{MIN_OK "topics = { config = \"cleanup.policy=delete\"; };\n",
	 "t.conf:3: topics.config: expected an array of \"name=value\" strings, got a string"},
	{MIN_OK "topics = { config = [\"cleanup.policy\"]; };\n",
	 "t.conf:3: topics.config: element 1: expected a \"name=value\" string"},
	{MIN_OK "topics = { config = [\"retention.ms=1\",\n \"Cleanup.Policy=delete\"]; };\n",
	 "t.conf:4: topics.config: element 2: \"Cleanup.Policy\" is not a topic config name "
	 "(lowercase letters, digits, '.', '_' and '-', like \"cleanup.policy\")"},
	{MIN_OK "topics = { config = [\"retention.ms=\"]; };\n",
	 "t.conf:3: topics.config: element 1: \"retention.ms\" has no value"},
	{MIN_OK "topics = { config = [\"retention.ms=1\", \"segment.ms=9\",\n"
		"  \"retention.ms=2\"]; };\n",
	 "t.conf:4: topics.config: element 3: \"retention.ms\" is set twice (also element 1)"},
	{MIN_OK "topics = 5;\n", "t.conf:3: topics: expected a group { ... }, got an integer"},
};

/* postgres.pooling = "transaction" turns off what needs a session unless
 * the file says otherwise (and batch.notify = true is refused above); the
 * other modes leave the defaults alone. */
static void test_pooling_defaults(void **state)
{
	static const struct {
		const char *postgres;
		int pooling;
		bool notify, prepared;
	} cases[] = {
		{"", POOLING_NONE, true, true},
		{"pooling = \"session\";", POOLING_SESSION, true, true},
		{"pooling = \"transaction\";", POOLING_TRANSACTION, false, false},
		/* PgBouncer 1.21+ with max_prepared_statements: the operator's word */
		{"pooling = \"transaction\"; prepared_statements = true;", POOLING_TRANSACTION, false,
		 true},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[512], err[512];
		struct config *cfg;

		snprintf(text, sizeof(text), MIN_OK "postgres = { %s };\n", cases[i].postgres);
		cfg = config_load_string(text, "t.conf", err, sizeof(err));
		if (!cfg)
			fail_msg("case %zu: %s", i, err);
		assert_int_equal(cfg->pg_pooling, cases[i].pooling);
		assert_int_equal(cfg->notify, cases[i].notify);
		assert_int_equal(cfg->pg_prepared_statements, cases[i].prepared);
		config_free(cfg);
	}
}

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

static void test_derived_checkpoint_topic(void **state)
{
	char err[512];
	/* 224 characters: the derived name is exactly Kafka's limit of 249 */
	struct config *cfg = config_load_string(
		"kafka = { bootstrap_servers = \"k\"; };\nrelay = { name = \"" LONG_NAME "\"; };\n",
		"t.conf", err, sizeof(err));

	(void)state;
	assert_null(cfg); /* 225: one too many (see test_bad_inputs) */
	cfg = config_load_string("kafka = { bootstrap_servers = \"k\"; };\nrelay = { name = \"" LONG_NAME
				 "\"; };\n",
				 "t.conf", err, sizeof(err));
	assert_null(cfg);
	{
		char text[512], name[300];
		memset(name, 'r', 224);
		name[224] = '\0';
		snprintf(text, sizeof(text),
			 "kafka = { bootstrap_servers = \"k\"; };\nrelay = { name = \"%s\"; };\n",
			 name);
		cfg = config_load_string(text, "t.conf", err, sizeof(err));
		if (!cfg)
			fail_msg("%s", err);
		assert_int_equal(strlen(cfg->checkpoint_topic), 249);
		config_free(cfg);
	}
	/* an explicit name is kept as it is (the old shared default, too) */
	cfg = config_load_string(KAFKA_ONLY "kafka = { bootstrap_servers = \"k\";\n"
					    "  checkpoint_topic = \"outbox-relay.checkpoints\"; };\n",
				 "t.conf", err, sizeof(err));
	assert_non_null(cfg);
	assert_string_equal(cfg->checkpoint_topic, "outbox-relay.checkpoints");
	config_free(cfg);
}

/* Timing options that let one blocking call outlast the lease are warned
 * about (with file:line), never refused: fencing keeps them safe. */
static void test_timing_warnings(void **state)
{
	char err[512];
	struct config *cfg;

	(void)state;
	cfg = config_load_string("relay = { name = \"r\"; lease_ttl_ms = 30000; };\n"
				 "kafka = { bootstrap_servers = \"k\"; commit_timeout_ms = 20000; };\n"
				 "postgres = { statement_timeout_ms = 20000; };\n"
				 "batch = { max_wait_ms = 60000; poll_interval_ms = 60000; };\n",
				 "t.conf", err, sizeof(err));
	assert_non_null(cfg);
	/* two thirds of the TTL is fine; long waits and Kafka calls renew as
	 * they go (commit_timeout_ms is not judged) */
	assert_null(cfg->warnings);
	config_free(cfg);

	cfg = config_load_string("relay = { name = \"r\"; lease_ttl_ms = 30000; };\n"
				 "kafka = { bootstrap_servers = \"k\";\n commit_timeout_ms = 20001; };\n"
				 "postgres = { statement_timeout_ms = 0; };\n",
				 "t.conf", err, sizeof(err));
	assert_non_null(cfg);
	assert_string_equal(
		cfg->warnings,
		"t.conf:4: postgres.statement_timeout_ms: 0 (no limit): a statement stuck in the "
		"database keeps the relay from renewing its lease (relay.lease_ttl_ms 30000) for as "
		"long as it runs\n");
	config_free(cfg);

	cfg = config_load_string("relay = { name = \"r\"; lease_ttl_ms = 3000; };\n"
				 "kafka = { bootstrap_servers = \"k\"; commit_timeout_ms = 2000; };\n",
				 "t.conf", err, sizeof(err));
	assert_non_null(cfg);
	/* the default statement timeout (6 s) against a 3 s lease */
	assert_string_equal(cfg->warnings,
			    "t.conf: postgres.statement_timeout_ms: 6000 is more than two thirds of "
			    "relay.lease_ttl_ms (3000): one slow statement can outlast the lease and "
			    "a standby takes over\n");
	config_free(cfg);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

#define RELOAD_BASE "relay = { name = \"r\"; poison_policy = \"%s\"; };\n" \
		    "kafka = { bootstrap_servers = \"k\"; dead_letter_topic = \"%s\"; };\n" \
		    "batch = { max_rows = %d; };\n"

/* SIGHUP applies relay.poison_policy and kafka.dead_letter_topic both or
 * neither: the topic is fixed at start, so a switch to dead-lettering that
 * needs another topic is refused as a whole, and the running relay goes on
 * as it was (issue 12.10, 17.16). */
static void test_reload_dead_letter_both_or_neither(void **state)
{
	static const struct {
		const char *policy0, *topic0, *policy1, *topic1;
		int rc, policy_after;
		const char *error;
	} cases[] = {
		/* no dead-letter topic at start: refused, nothing applied */
		{"stop", "", "dead-letter", "dlq", -1, POISON_STOP,
		 "relay.poison_policy \"dead-letter\" cannot be applied on reload: the running "
		 "relay has no kafka.dead_letter_topic (set at start only); restart it to switch to "
		 "dead-lettering"},
		/* another topic than the running one: refused */
		{"stop", "dlq", "dead-letter", "dlq2", -1, POISON_STOP,
		 "relay.poison_policy \"dead-letter\" with kafka.dead_letter_topic \"dlq2\" cannot "
		 "be applied on reload: the running relay's dead-letter topic is \"dlq\" and changes "
		 "only at a restart"},
		/* the running topic: applied */
		{"stop", "dlq", "dead-letter", "dlq", 0, POISON_DEAD_LETTER, NULL},
		/* back to stop: applied (the topic change waits for a restart) */
		{"dead-letter", "dlq", "stop", "", 0, POISON_STOP, NULL},
		{"dead-letter", "dlq", "stop", "dlq", 0, POISON_STOP, NULL},
	};
	char path[] = "/tmp/test_config_reload_XXXXXX";
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	close(fd);
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		char text[512], err[512] = "";
		struct config *cfg;
		int rc;

		snprintf(text, sizeof(text), RELOAD_BASE, cases[i].policy0, cases[i].topic0, 10);
		write_file(path, text);
		cfg = config_load(path, err, sizeof(err));
		if (!cfg)
			fail_msg("case %zu: %s", i, err);
		snprintf(text, sizeof(text), RELOAD_BASE, cases[i].policy1, cases[i].topic1, 20);
		write_file(path, text);
		rc = config_reload(cfg, err, sizeof(err));
		if (rc != cases[i].rc)
			fail_msg("case %zu: reload returned %d (%s)", i, rc, err);
		assert_int_equal(cfg->poison_policy, cases[i].policy_after);
		/* the running topic never changes on reload */
		assert_string_equal(cfg->dead_letter_topic, cases[i].topic0);
		/* both or neither: a refused reload applies nothing else either */
		assert_int_equal(cfg->batch_max_rows, rc == 0 ? 20 : 10);
		if (cases[i].error) {
			char want[600];
			snprintf(want, sizeof(want), "%s: %s", path, cases[i].error);
			assert_string_equal(err, want);
		}
		config_free(cfg);
	}
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_all_options),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_pooling_defaults),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_env_overrides),
		cmocka_unit_test(test_derived_checkpoint_topic),
		cmocka_unit_test(test_timing_warnings),
		cmocka_unit_test(test_reload_dead_letter_both_or_neither),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
