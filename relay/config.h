/* config.h: the relay's settings, read from a libconfig file that one
 * option table validates (types, ranges, unknown keys) */
#ifndef OUTBOX_CONFIG_H
#define OUTBOX_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "log.h"

enum db_ahead_policy { DB_AHEAD_REFUSE, DB_AHEAD_TRUST_DATABASE };
enum poison_policy { POISON_STOP, POISON_DEAD_LETTER };
/* postgres.pooling: what sits between the relay and PostgreSQL. */
enum pg_pooling {
	POOLING_NONE,        /* a direct connection: settings ride in the startup packet */
	POOLING_SESSION,     /* a pooler's session mode: settings by SET after connecting */
	POOLING_TRANSACTION, /* transaction mode: no session state at all */
};

struct config {
	char *path;

	/* relay */
	char *relay_name;    /* also the Kafka transactional.id */
	char *owner;         /* lease owner; "" = host:pid:random */
	int lease_ttl_ms;
	bool allow_other_names;
	int on_database_ahead; /* enum db_ahead_policy */
	int poison_policy;     /* enum poison_policy */
	int poison_retry_ms;   /* a relay stopped on a poison row looks again this often */

	/* postgres */
	char *pg_conninfo;   /* "" = libpq's PG* environment */
	int pg_pooling;      /* enum pg_pooling */
	int pg_statement_timeout_ms;
	bool pg_prepared_statements;
	int64_t retention_ms; /* keep relayed rows this long; 0 = delete at once */

	/* kafka */
	char *kafka_bootstrap;
	char *checkpoint_topic; /* "" in the file: "outbox-relay.checkpoints.<relay.name>" */
	int checkpoint_replication_factor;
	int transaction_timeout_ms;
	int commit_timeout_ms;
	char *dead_letter_topic; /* "" = none */
	char **kafka_props;  /* "name=value", passed to librdkafka as is */
	int n_kafka_props;

	/* topics: destination topics (those outbox rows name) */
	bool topics_create;            /* create a missing one (Admin API) */
	int topics_partitions;         /* -1 = the broker's num.partitions */
	int topics_replication_factor; /* -1 = the broker's default.replication.factor */
	char **topics_config;          /* "name=value" topic configs, NULL-terminated */
	int n_topics_config;

	/* batch */
	int batch_max_rows;
	int64_t batch_max_bytes;
	int batch_max_wait_ms;
	int poll_interval_ms;
	int look_interval_ms; /* 0: max_wait_ms / 10 */
	bool notify;

	/* http */
	char *http_listen;   /* "" = no HTTP endpoint */
	int http_max_connections;
	int http_timeout_s;
	int64_t http_ready_max_lag_rows;   /* 0 = no limit */
	int http_ready_max_lag_seconds;    /* 0 = no limit */

	/* log */
	int log_level;       /* enum log_level */
	int log_format;      /* enum log_format */

	/* Warnings found at load ("file:line: key: problem" lines, each ending
	 * in a newline; NULL when none): timing options that let a stall
	 * outlast the lease. config_load (and so config_reload) logs them. */
	char *warnings;
};

/* Read and validate `path`. On success returns a new config (owned by the
 * caller, free with config_free) with environment overrides applied; on error
 * returns NULL and writes "file:line: key: problem" into errbuf. */
struct config *config_load(const char *path, char *errbuf, size_t errlen) MUSTCHECK;

/* Same from a string (the unit tests' entry point); `name` stands for the
 * file in messages. */
struct config *config_load_string(const char *text, const char *name, char *errbuf,
				  size_t errlen) MUSTCHECK;

void config_free(struct config *cfg);

/* Register every secret of kafka.properties (names with "password" or
 * "secret": sasl.password, ssl.key.password, ...) with log_add_secret, so
 * that no log line shows one, whoever writes it. At start-up, once. */
void config_hide_secrets(const struct config *cfg);

/* Log the warnings the load found (cfg->warnings), once the logger has its
 * configured format. */
void config_log_warnings(const struct config *cfg);

/* SIGHUP: read cfg->path again. When it is valid, apply the options marked
 * reloadable (batch.*, log.*, lease TTL, poison policy) and log each change,
 * a warning for changed options that need a restart, and the new file's
 * timing warnings; returns 0. When it is invalid, or it switches
 * relay.poison_policy to "dead-letter" with a kafka.dead_letter_topic other
 * than the running one (the topic is fixed at start: both or neither),
 * keep cfg as it is and return -1 with the reason in errbuf. Main thread
 * only. */
int config_reload(struct config *cfg, char *errbuf, size_t errlen) MUSTCHECK;

/* Write every option with its value (secrets masked) through the logger. */
void config_log(const struct config *cfg);

#endif
