/* main.c: command line, signals, and the start-up order of the daemon */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "crash.h"
#include "http.h"
#include "log.h"
#include "outbox.h"
#include "publisher.h"
#include "relay.h"
#include "topics.h"
#include "verify.h"
#include "version.h"

#define DEFAULT_CONFIG "/etc/outbox-relay/relay.conf"

static void usage(FILE *out)
{
	fprintf(out,
		"outbox-relay %s: moves outbox rows from PostgreSQL to Kafka exactly once\n"
		"\n"
		"Usage: outbox-relay [COMMAND] [-c FILE]\n"
		"       outbox-relay verify [-c FILE] [--topics T1,T2] [--since DURATION]\n"
		"                           [--from-batch N] [--json] [--list-lost]\n"
		"\n"
		"Commands:\n"
		"  run       relay until stopped (the default)\n"
		"  check     validate the configuration, reach PostgreSQL and Kafka, check the\n"
		"            outbox schema version\n"
		"  status    print the relay's position, lease owner, generation and lag\n"
		"  verify    audit what the relay committed to Kafka (reads only): the\n"
		"            checkpoint chain (batches contiguous, positions and generations\n"
		"            never back); in the --topics, the topics of the outbox rows and\n"
		"            the dead-letter topic, each outbox-id once, in id order per key\n"
		"            and partition, no record without an outbox-id; with\n"
		"            postgres.retention_ms, the kept rows equal to their records;\n"
		"            when Kafka's checkpoints pass the database's stored batch (a\n"
		"            failover to a replica that missed commits), the records Kafka\n"
		"            has that the database lost (lost_by_database)\n"
		"\n"
		"Options:\n"
		"  -c, --config FILE   configuration file (default: $OUTBOX_RELAY_CONFIG or\n"
		"                      " DEFAULT_CONFIG ")\n"
		"  -V, --version       print the version and the linked library versions\n"
		"  -h, --help          print this help\n"
		"\n"
		"verify options:\n"
		"  --topics T1,T2      destination topics to check (comma-separated)\n"
		"  --since DURATION    only records newer than DURATION (90s, 15m, 2h, 7d)\n"
		"  --from-batch N      check the checkpoint chain from batch N on\n"
		"  --json              print the summary as one JSON object\n"
		"  --list-lost         also list every record lost by the database: topic,\n"
		"                      partition, offset, outbox-id, key, why (tab-separated\n"
		"                      lines \"lost ...\", or \"lost_list\" with --json), and\n"
		"                      as \"published ...\" those whose row is still in the\n"
		"                      table (published already: docs/sql.md, OR003)\n"
		"\n"
		"Exit codes: 0 stopped cleanly, 1 configuration or start-up error, 2 usage,\n"
		"3 fenced (another relay took over), 5 positions disagree (operator decision\n"
		"needed; see README.md). verify: 0 nothing wrong, 6 violations found, 1\n"
		"configuration or connection error or a partition not read to its end.\n",
		OUTBOX_RELAY_VERSION);
}

static void print_version(void)
{
	int pq = PQlibVersion();

	printf("outbox-relay %s\nlibpq %d.%d\nlibrdkafka %s\n", OUTBOX_RELAY_VERSION, pq / 10000,
	       pq % 10000, rd_kafka_version_str());
}

static void on_stop_signal(int sig)
{
	static const char msg[] = "second stop signal: exiting at once\n";

	(void)sig;
	if (relay_stop_requested) {
		if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
			_exit(EXIT_STARTUP);
		_exit(EXIT_STARTUP);
	}
	relay_stop_requested = 1;
}

static void on_hup(int sig)
{
	(void)sig;
	relay_reload_requested = 1;
}

static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	/* no SA_RESTART: a signal must cut a sleep or a select short */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

/* The signals the main thread handles, blocked in every other thread: a
 * thread inherits its creator's mask, so they are blocked around the start
 * of libmicrohttpd's thread (librdkafka blocks every signal in its own
 * threads itself). A handled signal then always lands on the main thread,
 * where it cuts the loop's current wait short. */
static void handled_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
}

/* check, with topics.create: what the broker thinks of the topics.*
 * settings (validate only: nothing is created). 1 when it refuses them. */
static int check_topics(const struct config *cfg, rd_kafka_t *rk)
{
	char why[1024];

	switch (topics_check_settings(rk, cfg, NULL, now_ms() + 10000, why, sizeof(why))) {
	case TOPIC_CREATED:
	case TOPIC_EXISTS:
		printf("topics: ok (the broker accepts topics.partitions, "
		       "topics.replication_factor and topics.config)\n");
		return 0;
	case TOPIC_BAD_SETTINGS:
		printf("topics: FAILED: %s\n", why);
		return 1;
	case TOPIC_REFUSED:
	case TOPIC_LATER:
		break;
	}
	printf("topics: not checked: %s\n", why);
	return 0;
}

/* check: every step is reported; the exit code says whether all passed. */
static int cmd_check(const struct config *cfg)
{
	char err[1024];
	struct outbox *ob;
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	const struct rd_kafka_metadata *md;
	rd_kafka_resp_err_t kerr;
	int version = 0, failed = 0;

	printf("config %s: ok (relay \"%s\")\n", cfg->path, cfg->relay_name);
	ob = outbox_connect(cfg, NULL, err, sizeof(err));
	if (!ob) {
		printf("postgresql: FAILED: %s\n", err);
		failed++;
	} else if (outbox_schema_version(ob, &version) != OB_OK) {
		printf("postgresql: FAILED: %s (is sql/install.sql installed?)\n",
		       outbox_errstr(ob));
		failed++;
	} else if (version != OUTBOX_SCHEMA_VERSION) {
		printf("postgresql: FAILED: outbox schema version %d, this relay needs %d\n",
		       version, OUTBOX_SCHEMA_VERSION);
		failed++;
	} else {
		printf("postgresql: ok (outbox schema version %d)\n", version);
	}
	outbox_free(ob);

	conf = kafka_conf_new(cfg, false, err, sizeof(err));
	if (!conf) {
		printf("kafka: FAILED: %s\n", err);
		return EXIT_STARTUP;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	if (!rk) {
		rd_kafka_conf_destroy(conf);
		printf("kafka: FAILED: %s\n", err);
		return EXIT_STARTUP;
	}
	kerr = rd_kafka_metadata(rk, 1, NULL, &md, 10000);
	if (kerr) {
		printf("kafka: FAILED: %s: %s\n", cfg->kafka_bootstrap, rd_kafka_err2str(kerr));
		failed++;
	} else {
		bool has_ckpt = false;
		for (int i = 0; i < md->topic_cnt; i++)
			has_ckpt = has_ckpt || strcmp(md->topics[i].topic, cfg->checkpoint_topic) == 0;
		printf("kafka: ok (%d broker(s); checkpoint topic \"%s\" %s)\n", md->broker_cnt,
		       cfg->checkpoint_topic, has_ckpt ? "exists" : "will be created on start");
		rd_kafka_metadata_destroy(md);
		if (cfg->topics_create)
			failed += check_topics(cfg, rk);
	}
	rd_kafka_destroy(rk);
	return failed ? EXIT_STARTUP : EXIT_OK;
}

static int cmd_status(const struct config *cfg)
{
	char err[1024];
	struct outbox *ob = outbox_connect(cfg, NULL, err, sizeof(err));
	int st;

	if (!ob) {
		fprintf(stderr, "outbox-relay: %s\n", err);
		return EXIT_STARTUP;
	}
	st = outbox_status_print(ob, stdout);
	if (st != OB_OK)
		fprintf(stderr, "outbox-relay: %s\n", outbox_errstr(ob));
	outbox_free(ob);
	return st == OB_OK ? EXIT_OK : EXIT_STARTUP;
}

/* The options after `verify`; *opts gets owned strings (verify_opts_free). */
static int parse_verify_opts(int argc, char **argv, const char **path, struct verify_opts *opts)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"topics", required_argument, NULL, 't'},
		{"since", required_argument, NULL, 's'},
		{"from-batch", required_argument, NULL, 'b'},
		{"json", no_argument, NULL, 'j'},
		{"list-lost", no_argument, NULL, 'l'},
		{NULL, 0, NULL, 0},
	};
	char *end, *list, *tok, *save;
	int c;

	while ((c = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			*path = optarg;
			break;
		case 't':
			list = xstrdup(optarg);
			for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				opts->topics = xrealloc(opts->topics,
							(size_t)(opts->ntopics + 1) * sizeof(char *));
				opts->topics[opts->ntopics++] = xstrdup(tok);
			}
			free(list);
			break;
		case 's':
			opts->since_ms = verify_parse_duration(optarg);
			if (opts->since_ms < 0) {
				fprintf(stderr, "outbox-relay: --since: \"%s\" is not a duration "
						"(such as 90s, 15m, 2h, 7d)\n",
					optarg);
				return -1;
			}
			break;
		case 'b':
			errno = 0;
			opts->from_batch = strtoll(optarg, &end, 10);
			if (errno || end == optarg || *end || opts->from_batch < 1) {
				fprintf(stderr, "outbox-relay: --from-batch: \"%s\" is not a batch "
						"number (1 or more)\n",
					optarg);
				return -1;
			}
			break;
		case 'j':
			opts->json = true;
			break;
		case 'l':
			opts->list_lost = true;
			break;
		default:
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "outbox-relay: unknown argument \"%s\"\n", argv[optind]);
		return -1;
	}
	return 0;
}

static void verify_opts_free(struct verify_opts *opts)
{
	for (int i = 0; i < opts->ntopics; i++)
		free(opts->topics[i]);
	free(opts->topics);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *path = getenv("OUTBOX_RELAY_CONFIG");
	const char *cmd = "run";
	struct verify_opts vopts = {0};
	char err[1024];
	struct config *cfg;
	int c, ex;

	if (!path || !*path)
		path = DEFAULT_CONFIG;
	while ((c = getopt_long(argc, argv, "+c:Vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'V':
			print_version();
			return EXIT_OK;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		cmd = argv[optind++];
	if (strcmp(cmd, "verify") == 0) {
		if (parse_verify_opts(argc, argv, &path, &vopts) < 0) {
			verify_opts_free(&vopts);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	/* options may also follow the command */
	while ((c = getopt_long(argc, argv, "c:Vh", longopts, NULL)) != -1) {
		if (c != 'c') {
			usage(stderr);
			return EXIT_USAGE;
		}
		path = optarg;
	}
	if (optind < argc || (strcmp(cmd, "run") && strcmp(cmd, "check") && strcmp(cmd, "status") &&
				strcmp(cmd, "verify"))) {
		fprintf(stderr, "outbox-relay: unknown command or argument \"%s\"\n",
			optind < argc ? argv[optind] : cmd);
		usage(stderr);
		return EXIT_USAGE;
	}

	cfg = config_load(path, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "outbox-relay: %s\n", err);
		verify_opts_free(&vopts);
		return EXIT_STARTUP;
	}
	log_setup((enum log_level)cfg->log_level, (enum log_format)cfg->log_format);
	config_hide_secrets(cfg);
	config_log_warnings(cfg);
	if (strcmp(cmd, "check") == 0)
		ex = cmd_check(cfg);
	else if (strcmp(cmd, "status") == 0)
		ex = cmd_status(cfg);
	else if (strcmp(cmd, "verify") == 0) {
		install_signals();
		ex = verify_run(cfg, &vopts);
	}
	else {
		struct http *http;
		sigset_t handled, saved;
		int rc;

		install_signals();
		crash_setup();
		handled_signals(&handled);
		pthread_sigmask(SIG_BLOCK, &handled, &saved);
		rc = http_start(cfg, &http, err, sizeof(err));
		pthread_sigmask(SIG_SETMASK, &saved, NULL);
		if (rc < 0) {
			fprintf(stderr, "outbox-relay: %s: %s\n", cfg->path, err);
			config_free(cfg);
			return EXIT_STARTUP;
		}
		log_info("outbox-relay %s starting (libpq %d, librdkafka %s), relay \"%s\", config %s",
			 OUTBOX_RELAY_VERSION, PQlibVersion(), rd_kafka_version_str(),
			 cfg->relay_name, cfg->path);
		config_log(cfg);
		ex = relay_run(cfg);
		http_stop(http);
		log_info("outbox-relay stopped (exit code %d)", ex);
	}
	config_free(cfg);
	verify_opts_free(&vopts);
	return ex;
}
