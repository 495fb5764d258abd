/* config.c: one table of options drives defaults, types, ranges, validation
 * and the refusal of unknown keys; environment overrides for secrets. */
#include <errno.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "log.h"

enum opt_type { OPT_INT, OPT_INT64, OPT_BOOL, OPT_STRING, OPT_CHOICE, OPT_STRLIST };

struct option {
	const char *path;       /* "group.key" */
	enum opt_type type;
	size_t offset;          /* into struct config */
	const char *def_str;    /* OPT_STRING, OPT_CHOICE */
	long long def_int;      /* OPT_INT, OPT_INT64, OPT_BOOL; for OPT_STRLIST, the
				 * offset of its int count */
	long long min, max;     /* OPT_INT, OPT_INT64; for OPT_STRING, min is the minimum length */
	const char *const *choices;
	bool reloadable;        /* SIGHUP applies it to a running relay */
};

#define OFF(field) offsetof(struct config, field)

static const char *const db_ahead_choices[] = {"refuse", "trust-database", NULL};
static const char *const poison_choices[] = {"stop", "dead-letter", NULL};
static const char *const log_level_choices[] = {"debug", "info", "warning", "error", NULL};
static const char *const log_format_choices[] = {"text", "json", NULL};
static const char *const pooling_choices[] = {"none", "session", "transaction", NULL};

/* The single source of truth; conf/relay.conf documents each entry. */
static const struct option options[] = {
	{"relay.name", OPT_STRING, OFF(relay_name), NULL, 0, 1, 0, NULL, false},
	{"relay.owner", OPT_STRING, OFF(owner), "", 0, 0, 0, NULL, false},
	{"relay.lease_ttl_ms", OPT_INT, OFF(lease_ttl_ms), NULL, 10000, 1000, 600000, NULL, true},
	{"relay.allow_other_names", OPT_BOOL, OFF(allow_other_names), NULL, 0, 0, 0, NULL, false},
	{"relay.on_database_ahead", OPT_CHOICE, OFF(on_database_ahead), "refuse", 0, 0, 0,
	 db_ahead_choices, false},
	{"relay.poison_policy", OPT_CHOICE, OFF(poison_policy), "stop", 0, 0, 0, poison_choices, true},
	{"relay.poison_retry_ms", OPT_INT, OFF(poison_retry_ms), NULL, 30000, 1000, 3600000, NULL,
	 true},
	{"postgres.conninfo", OPT_STRING, OFF(pg_conninfo), "", 0, 0, 0, NULL, false},
	{"postgres.pooling", OPT_CHOICE, OFF(pg_pooling), "none", 0, 0, 0, pooling_choices, false},
	{"postgres.prepared_statements", OPT_BOOL, OFF(pg_prepared_statements), NULL, 1, 0, 0, NULL,
	 false},
	{"postgres.retention_ms", OPT_INT64, OFF(retention_ms), NULL, 0, 0, 1LL << 40, NULL, false},
	{"postgres.statement_timeout_ms", OPT_INT, OFF(pg_statement_timeout_ms), NULL, 6000, 0,
	 3600000, NULL, false},
	{"kafka.bootstrap_servers", OPT_STRING, OFF(kafka_bootstrap), NULL, 0, 1, 0, NULL, false},
	/* "" = CHECKPOINT_TOPIC_PREFIX + relay.name, filled in by check_required */
	{"kafka.checkpoint_topic", OPT_STRING, OFF(checkpoint_topic), "", 0, 0, 0, NULL, false},
	{"kafka.checkpoint_replication_factor", OPT_INT, OFF(checkpoint_replication_factor), NULL, 1,
	 1, 32, NULL, false},
	{"kafka.transaction_timeout_ms", OPT_INT, OFF(transaction_timeout_ms), NULL, 60000, 1000,
	 900000, NULL, false},
	{"kafka.commit_timeout_ms", OPT_INT, OFF(commit_timeout_ms), NULL, 30000, 1000, 900000,
	 NULL, false},
	{"kafka.dead_letter_topic", OPT_STRING, OFF(dead_letter_topic), "", 0, 0, 0, NULL, false},
	{"kafka.properties", OPT_STRLIST, OFF(kafka_props), NULL, OFF(n_kafka_props), 0, 0, NULL,
	 false},
	{"topics.create", OPT_BOOL, OFF(topics_create), NULL, 0, 0, 0, NULL, false},
	/* -1 = the broker's default; 0 is refused by check_topics */
	{"topics.partitions", OPT_INT, OFF(topics_partitions), NULL, -1, -1, 100000, NULL, false},
	{"topics.replication_factor", OPT_INT, OFF(topics_replication_factor), NULL, -1, -1, 32,
	 NULL, false},
	{"topics.config", OPT_STRLIST, OFF(topics_config), NULL, OFF(n_topics_config), 0, 0, NULL,
	 false},
	{"batch.max_rows", OPT_INT, OFF(batch_max_rows), NULL, 10000, 1, 1000000, NULL, true},
	{"batch.max_bytes", OPT_INT64, OFF(batch_max_bytes), NULL, 16 << 20, 1024, 1LL << 31, NULL, true},
	{"batch.max_wait_ms", OPT_INT, OFF(batch_max_wait_ms), NULL, 250, 0, 60000, NULL, true},
	{"batch.poll_interval_ms", OPT_INT, OFF(poll_interval_ms), NULL, 200, 1, 60000, NULL, true},
	{"batch.look_interval_ms", OPT_INT, OFF(look_interval_ms), NULL, 10, 0, 60000, NULL, true},
	{"batch.notify", OPT_BOOL, OFF(notify), NULL, 1, 0, 0, NULL, false},
	{"http.listen", OPT_STRING, OFF(http_listen), "127.0.0.1:8080", 0, 0, 0, NULL, false},
	{"http.max_connections", OPT_INT, OFF(http_max_connections), NULL, 16, 1, 1024, NULL, false},
	{"http.timeout_s", OPT_INT, OFF(http_timeout_s), NULL, 5, 1, 300, NULL, false},
	{"http.ready_max_lag_rows", OPT_INT64, OFF(http_ready_max_lag_rows), NULL, 0, 0,
	 1LL << 40, NULL, false},
	{"http.ready_max_lag_seconds", OPT_INT, OFF(http_ready_max_lag_seconds), NULL, 0, 0,
	 86400 * 7, NULL, false},
	{"log.level", OPT_CHOICE, OFF(log_level), "info", 0, 0, 0, log_level_choices, true},
	{"log.format", OPT_CHOICE, OFF(log_format), "text", 0, 0, 0, log_format_choices, true},
};

static const char *const groups[] = {"relay", "postgres", "kafka", "topics", "batch", "http", "log"};

struct loader {
	const char *name;
	char *errbuf;
	size_t errlen;
};

PRINTF(4, 5)
static void fail(struct loader *ld, const config_setting_t *s, const char *key, const char *fmt,
		 ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (s && config_setting_source_line(s) > 0)
		snprintf(ld->errbuf, ld->errlen, "%s:%u: %s: %s", ld->name,
			 config_setting_source_line(s), key, msg);
	else
		snprintf(ld->errbuf, ld->errlen, "%s: %s: %s", ld->name, key, msg);
}

static const struct option *option_find(const char *path)
{
	for (size_t i = 0; i < ARRAY_LEN(options); i++)
		if (strcmp(options[i].path, path) == 0)
			return &options[i];
	return NULL;
}

static void set_defaults(struct config *cfg)
{
	for (size_t i = 0; i < ARRAY_LEN(options); i++) {
		const struct option *o = &options[i];
		char *field = (char *)cfg + o->offset;
		switch (o->type) {
		case OPT_INT:
		case OPT_BOOL:
			if (o->type == OPT_BOOL)
				*(bool *)field = o->def_int != 0;
			else
				*(int *)field = (int)o->def_int;
			break;
		case OPT_INT64:
			*(int64_t *)field = o->def_int;
			break;
		case OPT_STRING:
			*(char **)field = xstrdup(o->def_str);
			break;
		case OPT_CHOICE:
			for (int k = 0; o->choices[k]; k++)
				if (strcmp(o->choices[k], o->def_str) == 0)
					*(int *)field = k;
			break;
		case OPT_STRLIST:
			break;
		}
	}
}

static const char *type_name(int t)
{
	switch (t) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		return "an integer";
	case CONFIG_TYPE_FLOAT:
		return "a float";
	case CONFIG_TYPE_STRING:
		return "a string";
	case CONFIG_TYPE_BOOL:
		return "a boolean";
	case CONFIG_TYPE_GROUP:
		return "a group";
	case CONFIG_TYPE_ARRAY:
		return "an array";
	case CONFIG_TYPE_LIST:
		return "a list";
	}
	return "unknown";
}

/* A list of "name=value" strings into a NULL-terminated array at o->offset
 * and its count at o->def_int. */
static int apply_strlist(struct loader *ld, const struct option *o, config_setting_t *s,
			 struct config *cfg)
{
	char ***list = (char ***)((char *)cfg + o->offset);
	int *count = (int *)((char *)cfg + o->def_int);
	int n = config_setting_length(s);

	if (config_setting_type(s) != CONFIG_TYPE_ARRAY && config_setting_type(s) != CONFIG_TYPE_LIST) {
		fail(ld, s, o->path, "expected an array of \"name=value\" strings, got %s",
		     type_name(config_setting_type(s)));
		return -1;
	}
	*list = xcalloc((size_t)n + 1, sizeof(char *));
	for (int i = 0; i < n; i++) {
		config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		const char *v = config_setting_get_string(e);
		const char *eq = v ? strchr(v, '=') : NULL;
		if (!v || !eq || eq == v) {
			fail(ld, e, o->path, "element %d: expected a \"name=value\" string", i + 1);
			return -1;
		}
		(*list)[(*count)++] = xstrdup(v);
	}
	return 0;
}

static int apply_option(struct loader *ld, const struct option *o, config_setting_t *s,
			struct config *cfg)
{
	char *field = (char *)cfg + o->offset;
	int t = config_setting_type(s);
	long long v;

	switch (o->type) {
	case OPT_INT:
	case OPT_INT64:
		if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
			fail(ld, s, o->path, "expected an integer, got %s", type_name(t));
			return -1;
		}
		v = config_setting_get_int64(s);
		if (v < o->min || v > o->max) {
			fail(ld, s, o->path, "%lld is out of range (%lld..%lld)", v, o->min, o->max);
			return -1;
		}
		if (o->type == OPT_INT)
			*(int *)field = (int)v;
		else
			*(int64_t *)field = v;
		return 0;
	case OPT_BOOL:
		if (t != CONFIG_TYPE_BOOL) {
			fail(ld, s, o->path, "expected true or false, got %s", type_name(t));
			return -1;
		}
		*(bool *)field = config_setting_get_bool(s) != 0;
		return 0;
	case OPT_STRING:
		if (t != CONFIG_TYPE_STRING) {
			fail(ld, s, o->path, "expected a string, got %s", type_name(t));
			return -1;
		}
		if ((long long)strlen(config_setting_get_string(s)) < o->min) {
			fail(ld, s, o->path, "must not be empty");
			return -1;
		}
		free(*(char **)field);
		*(char **)field = xstrdup(config_setting_get_string(s));
		return 0;
	case OPT_CHOICE: {
		char allowed[256] = "";
		if (t == CONFIG_TYPE_STRING) {
			for (int k = 0; o->choices[k]; k++) {
				if (strcmp(o->choices[k], config_setting_get_string(s)) == 0) {
					*(int *)field = k;
					return 0;
				}
			}
		}
		for (int k = 0; o->choices[k]; k++) {
			strncat(allowed, k ? ", " : "", sizeof(allowed) - strlen(allowed) - 1);
			strncat(allowed, o->choices[k], sizeof(allowed) - strlen(allowed) - 1);
		}
		if (t == CONFIG_TYPE_STRING)
			fail(ld, s, o->path, "\"%s\" is not one of: %s", config_setting_get_string(s),
			     allowed);
		else
			fail(ld, s, o->path, "expected a string (one of: %s), got %s", allowed,
			     type_name(t));
		return -1;
	}
	case OPT_STRLIST:
		return apply_strlist(ld, o, s, cfg);
	}
	return -1;
}

/* Walk every setting in the file: each must be a known group or option. */
static int apply_settings(struct loader *ld, config_t *lc, struct config *cfg)
{
	config_setting_t *root = config_root_setting(lc);
	char path[256];

	for (int i = 0; i < config_setting_length(root); i++) {
		config_setting_t *g = config_setting_get_elem(root, (unsigned)i);
		const char *gname = config_setting_name(g);
		bool known = false;

		for (size_t k = 0; k < ARRAY_LEN(groups); k++)
			known = known || strcmp(groups[k], gname) == 0;
		if (!known) {
			fail(ld, g, gname,
			     "unknown group (expected one of: relay, postgres, kafka, topics, batch, "
			     "http, log)");
			return -1;
		}
		if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
			fail(ld, g, gname, "expected a group { ... }, got %s",
			     type_name(config_setting_type(g)));
			return -1;
		}
		for (int j = 0; j < config_setting_length(g); j++) {
			config_setting_t *s = config_setting_get_elem(g, (unsigned)j);
			const struct option *o;

			snprintf(path, sizeof(path), "%s.%s", gname, config_setting_name(s));
			o = option_find(path);
			if (!o) {
				fail(ld, s, path, "unknown option");
				return -1;
			}
			if (apply_option(ld, o, s, cfg) < 0)
				return -1;
		}
	}
	return 0;
}

/* Secrets come from the environment so the file can be world-readable. */
static void apply_env(struct config *cfg)
{
	const char *v;

	if ((v = getenv("OUTBOX_PG_CONNINFO")) && *v) {
		free(cfg->pg_conninfo);
		cfg->pg_conninfo = xstrdup(v);
	}
	if ((v = getenv("OUTBOX_KAFKA_BOOTSTRAP_SERVERS")) && *v) {
		free(cfg->kafka_bootstrap);
		cfg->kafka_bootstrap = xstrdup(v);
	}
	static const char *const sasl[][2] = {
		{"OUTBOX_KAFKA_SASL_USERNAME", "sasl.username"},
		{"OUTBOX_KAFKA_SASL_PASSWORD", "sasl.password"},
	};
	for (size_t i = 0; i < ARRAY_LEN(sasl); i++) {
		char *kv;
		size_t len;

		if (!(v = getenv(sasl[i][0])) || !*v)
			continue;
		len = strlen(sasl[i][1]) + strlen(v) + 2;
		kv = xmalloc(len);
		snprintf(kv, len, "%s=%s", sasl[i][1], v);
		cfg->kafka_props = xrealloc(cfg->kafka_props,
					    ((size_t)cfg->n_kafka_props + 2) * sizeof(char *));
		cfg->kafka_props[cfg->n_kafka_props++] = kv;
		cfg->kafka_props[cfg->n_kafka_props] = NULL;
	}
}

/* The setting of `path` in the file, for its line number (NULL if absent). */
static config_setting_t *setting(config_t *lc, const char *path)
{
	return lc ? config_lookup(lc, path) : NULL;
}

/*
 * postgres.pooling = "transaction": every transaction may run on another
 * server connection, so nothing may live in the session. LISTEN (and the
 * "relay awake" lock that goes with batch.notify) would sit on a server
 * connection that writers then share; named prepared statements vanish
 * unless the pooler carries them (PgBouncer 1.21+, max_prepared_statements).
 * Both default to off then; batch.notify = true is refused, an explicit
 * prepared_statements = true is taken as the operator's word.
 */
static int check_pooling(struct loader *ld, config_t *lc, struct config *cfg)
{
	if (cfg->pg_pooling != POOLING_TRANSACTION)
		return 0;
	if (setting(lc, "batch.notify") && cfg->notify) {
		fail(ld, setting(lc, "batch.notify"), "batch.notify",
		     "true needs a session connection (LISTEN), and postgres.pooling is "
		     "\"transaction\"; set batch.notify = false (the relay then polls) or use "
		     "session pooling");
		return -1;
	}
	cfg->notify = false;
	if (!setting(lc, "postgres.prepared_statements"))
		cfg->pg_prepared_statements = false;
	return 0;
}

static int check_required(struct loader *ld, config_t *lc, struct config *cfg)
{
	const char *why;

	if (!cfg->relay_name) {
		fail(ld, NULL, "relay.name", "missing (required)");
		return -1;
	}
	if (!cfg->kafka_bootstrap) {
		fail(ld, NULL, "kafka.bootstrap_servers",
		     "missing (required; or set OUTBOX_KAFKA_BOOTSTRAP_SERVERS)");
		return -1;
	}
	/* The relay name becomes a Kafka record key and transactional.id and is
	 * matched in SQL; keep it to a printable, unsurprising alphabet. */
	for (const char *p = cfg->relay_name; *p; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-')) {
			fail(ld, setting(lc, "relay.name"), "relay.name",
			     "\"%s\" may contain only letters, digits, '.', '_' and '-'",
			     cfg->relay_name);
			return -1;
		}
	}
	if (!cfg->checkpoint_topic[0]) {
		/* One checkpoint topic per relay: another producer's open
		 * transaction on a shared one holds our read back. */
		free(cfg->checkpoint_topic);
		cfg->checkpoint_topic = checkpoint_default_topic(cfg->relay_name);
		if ((why = kafka_topic_name_problem(cfg->checkpoint_topic))) {
			fail(ld, setting(lc, "relay.name"), "relay.name",
			     "the checkpoint topic derived from it, \"%.60s...\", %s; set "
			     "kafka.checkpoint_topic",
			     cfg->checkpoint_topic, why);
			return -1;
		}
	} else if ((why = kafka_topic_name_problem(cfg->checkpoint_topic))) {
		fail(ld, setting(lc, "kafka.checkpoint_topic"), "kafka.checkpoint_topic",
		     "\"%.300s\" %s", cfg->checkpoint_topic, why);
		return -1;
	}
	if (cfg->dead_letter_topic[0]) {
		if ((why = kafka_topic_name_problem(cfg->dead_letter_topic))) {
			fail(ld, setting(lc, "kafka.dead_letter_topic"), "kafka.dead_letter_topic",
			     "\"%.300s\" %s", cfg->dead_letter_topic, why);
			return -1;
		}
		if (strcmp(cfg->dead_letter_topic, cfg->checkpoint_topic) == 0) {
			fail(ld, setting(lc, "kafka.dead_letter_topic"), "kafka.dead_letter_topic",
			     "must not be the checkpoint topic \"%s\"", cfg->checkpoint_topic);
			return -1;
		}
	}
	if (cfg->poison_policy == POISON_DEAD_LETTER && !cfg->dead_letter_topic[0]) {
		fail(ld, NULL, "kafka.dead_letter_topic",
		     "must be set when relay.poison_policy is \"dead-letter\"");
		return -1;
	}
	if (check_pooling(ld, lc, cfg) < 0)
		return -1;
	if (cfg->commit_timeout_ms > cfg->transaction_timeout_ms) {
		fail(ld, setting(lc, "kafka.commit_timeout_ms"), "kafka.commit_timeout_ms",
		     "%d must not exceed kafka.transaction_timeout_ms (%d)", cfg->commit_timeout_ms,
		     cfg->transaction_timeout_ms);
		return -1;
	}
	return 0;
}

/* The topics.* settings beyond their table ranges: no partition count or
 * replication factor of 0, and topic configs with a plausible name (Kafka's
 * are lowercase, dotted), a value, and no name twice. What the broker thinks
 * of the values only the broker can say (relay.c asks it at start). */
static int check_topics(struct loader *ld, config_t *lc, struct config *cfg)
{
	config_setting_t *list = setting(lc, "topics.config");

	if (cfg->topics_partitions == 0) {
		fail(ld, setting(lc, "topics.partitions"), "topics.partitions",
		     "0 is not a partition count (1..100000, or -1 for the broker's num.partitions)");
		return -1;
	}
	if (cfg->topics_replication_factor == 0) {
		fail(ld, setting(lc, "topics.replication_factor"), "topics.replication_factor",
		     "0 is not a replication factor (1..32, or -1 for the broker's "
		     "default.replication.factor)");
		return -1;
	}
	for (int i = 0; i < cfg->n_topics_config; i++) {
		const char *kv = cfg->topics_config[i], *eq = strchr(kv, '=');
		config_setting_t *e = list ? config_setting_get_elem(list, (unsigned)i) : NULL;
		int len = (int)(eq - kv);

		for (const char *p = kv; p < eq; p++) {
			if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' ||
			      *p == '_' || *p == '-')) {
				fail(ld, e, "topics.config",
				     "element %d: \"%.*s\" is not a topic config name (lowercase "
				     "letters, digits, '.', '_' and '-', like \"cleanup.policy\")",
				     i + 1, len, kv);
				return -1;
			}
		}
		if (!eq[1]) {
			fail(ld, e, "topics.config", "element %d: \"%.*s\" has no value", i + 1, len,
			     kv);
			return -1;
		}
		for (int k = 0; k < i; k++) {
			if (strncmp(cfg->topics_config[k], kv, (size_t)len + 1) == 0) {
				fail(ld, e, "topics.config",
				     "element %d: \"%.*s\" is set twice (also element %d)", i + 1,
				     len, kv, k + 1);
				return -1;
			}
		}
	}
	return 0;
}

PRINTF(5, 6)
static void warn(struct loader *ld, config_t *lc, struct config *cfg, const char *key,
		 const char *fmt, ...)
{
	char msg[512], line[700];
	config_setting_t *s = setting(lc, key);
	size_t old = cfg->warnings ? strlen(cfg->warnings) : 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (s && config_setting_source_line(s) > 0)
		snprintf(line, sizeof(line), "%s:%u: %s: %s", ld->name,
			 config_setting_source_line(s), key, msg);
	else
		snprintf(line, sizeof(line), "%s: %s: %s", ld->name, key, msg);
	cfg->warnings = xrealloc(cfg->warnings, old + strlen(line) + 2);
	snprintf(cfg->warnings + old, strlen(line) + 2, "%s\n", line);
}

/*
 * Timing options against the lease. Safety never depends on them (a relay
 * that lost its lease is fenced by generation and transactional.id), only
 * whether a leader keeps its lease through a stall: the lease is renewed
 * between blocking steps, at most every third of the TTL, so one call that
 * blocks longer than the rest of the TTL (two thirds of it) lets a standby
 * take over while the leader still waits — on the same stuck database or
 * broker. Waits (batch.max_wait_ms, batch.poll_interval_ms, back-offs) and
 * Kafka calls (commit, init, metadata, checkpoint read) renew as they go and
 * are not limited; a database statement cannot. Refused: nothing a healthy relay does.
 * Warned: single calls that can outlast the lease.
 */
static void check_timing(struct loader *ld, config_t *lc, struct config *cfg)
{
	int most = cfg->lease_ttl_ms * 2 / 3;

	if (cfg->pg_statement_timeout_ms == 0)
		warn(ld, lc, cfg, "postgres.statement_timeout_ms",
		     "0 (no limit): a statement stuck in the database keeps the relay from "
		     "renewing its lease (relay.lease_ttl_ms %d) for as long as it runs",
		     cfg->lease_ttl_ms);
	else if (cfg->pg_statement_timeout_ms > most)
		warn(ld, lc, cfg, "postgres.statement_timeout_ms",
		     "%d is more than two thirds of relay.lease_ttl_ms (%d): one slow statement "
		     "can outlast the lease and a standby takes over",
		     cfg->pg_statement_timeout_ms, cfg->lease_ttl_ms);
	/* kafka.commit_timeout_ms is not judged: every Kafka call blocks in
	 * the waiter's slices, which renew the lease (wait.h). */
}

static struct config *load(config_t *lc, bool ok, const char *name, char *errbuf, size_t errlen)
{
	struct loader ld = {name, errbuf, errlen};
	struct config *cfg;

	if (!ok) {
		snprintf(errbuf, errlen, "%s:%d: %s", config_error_file(lc) ? config_error_file(lc) : name,
			 config_error_line(lc), config_error_text(lc));
		return NULL;
	}
	cfg = xcalloc(1, sizeof(*cfg));
	cfg->path = xstrdup(name);
	set_defaults(cfg);
	if (apply_settings(&ld, lc, cfg) < 0)
		goto fail;
	apply_env(cfg);
	/* Re-check after the environment so a variable can supply a required value. */
	if (check_required(&ld, lc, cfg) < 0 || check_topics(&ld, lc, cfg) < 0)
		goto fail;
	check_timing(&ld, lc, cfg);
	return cfg;
fail:
	config_free(cfg);
	return NULL;
}

struct config *config_load(const char *path, char *errbuf, size_t errlen)
{
	config_t lc;
	struct config *cfg;
	FILE *f = fopen(path, "r");

	if (!f) {
		snprintf(errbuf, errlen, "could not open configuration file \"%s\": %s", path,
			 strerror(errno));
		return NULL;
	}
	config_init(&lc);
	cfg = load(&lc, config_read(&lc, f) == CONFIG_TRUE, path, errbuf, errlen);
	config_destroy(&lc);
	fclose(f);
	return cfg;
}

void config_log_warnings(const struct config *cfg)
{
	for (const char *p = cfg->warnings, *nl; p && (nl = strchr(p, '\n')); p = nl + 1)
		log_warning("%.*s", (int)(nl - p), p);
}

struct config *config_load_string(const char *text, const char *name, char *errbuf, size_t errlen)
{
	config_t lc;
	struct config *cfg;

	config_init(&lc);
	cfg = load(&lc, config_read_string(&lc, text) == CONFIG_TRUE, name, errbuf, errlen);
	config_destroy(&lc);
	return cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < ARRAY_LEN(options); i++) {
		char *field = (char *)cfg + options[i].offset;

		if (options[i].type == OPT_STRING)
			free(*(char **)field);
		if (options[i].type == OPT_STRLIST) {
			char **list = *(char ***)field;

			for (int k = 0; list && list[k]; k++)
				free(list[k]);
			free(list);
		}
	}
	free(cfg->path);
	free(cfg->warnings);
	free(cfg);
}

void config_log(const struct config *cfg)
{
	for (size_t i = 0; i < ARRAY_LEN(options); i++) {
		const struct option *o = &options[i];
		const char *field = (const char *)cfg + o->offset;
		switch (o->type) {
		case OPT_INT:
			log_debug("config %s = %d", o->path, *(const int *)field);
			break;
		case OPT_INT64:
			log_debug("config %s = %lld", o->path, (long long)*(const int64_t *)field);
			break;
		case OPT_BOOL:
			log_debug("config %s = %s", o->path, *(const bool *)field ? "true" : "false");
			break;
		case OPT_STRING:
			/* conninfo may hold a password */
			log_debug("config %s = \"%s\"", o->path,
				  strcmp(o->path, "postgres.conninfo") == 0 ? "(hidden)"
									    : *(char *const *)field);
			break;
		case OPT_CHOICE:
			log_debug("config %s = %s", o->path, o->choices[*(const int *)field]);
			break;
		case OPT_STRLIST:
			log_debug("config %s = %d entries", o->path,
				  *(const int *)((const char *)cfg + o->def_int));
			break;
		}
	}
}

static bool option_differs(const struct option *o, const struct config *a, const struct config *b)
{
	const char *fa = (const char *)a + o->offset, *fb = (const char *)b + o->offset;

	switch (o->type) {
	case OPT_INT:
	case OPT_CHOICE:
		return *(const int *)fa != *(const int *)fb;
	case OPT_INT64:
		return *(const int64_t *)fa != *(const int64_t *)fb;
	case OPT_BOOL:
		return *(const bool *)fa != *(const bool *)fb;
	case OPT_STRING:
		return strcmp(*(char *const *)fa, *(char *const *)fb) != 0;
	case OPT_STRLIST: {
		char *const *la = *(char *const *const *)fa, *const *lb = *(char *const *const *)fb;
		int n = *(const int *)((const char *)a + o->def_int);

		if (n != *(const int *)((const char *)b + o->def_int))
			return true;
		for (int i = 0; i < n; i++)
			if (strcmp(la[i], lb[i]) != 0)
				return true;
		return false;
	}
	}
	return false;
}

int config_reload(struct config *cfg, char *errbuf, size_t errlen)
{
	struct config *fresh = config_load(cfg->path, errbuf, errlen);

	if (!fresh)
		return -1;
	config_log_warnings(fresh);
	/* The dead-letter topic is fixed at start (the producer ensures it
	 * then); a policy that needs one the running relay does not have would
	 * make the next poison row fatal. Both or neither: refuse it all. */
	if (fresh->poison_policy == POISON_DEAD_LETTER && cfg->poison_policy != POISON_DEAD_LETTER &&
	    strcmp(fresh->dead_letter_topic, cfg->dead_letter_topic) != 0) {
		if (cfg->dead_letter_topic[0])
			snprintf(errbuf, errlen,
				 "%s: relay.poison_policy \"dead-letter\" with kafka.dead_letter_topic "
				 "\"%s\" cannot be applied on reload: the running relay's "
				 "dead-letter topic is \"%s\" and changes only at a restart",
				 cfg->path, fresh->dead_letter_topic, cfg->dead_letter_topic);
		else
			snprintf(errbuf, errlen,
				 "%s: relay.poison_policy \"dead-letter\" cannot be applied on reload: "
				 "the running relay has no kafka.dead_letter_topic (set at start "
				 "only); restart it to switch to dead-lettering",
				 cfg->path);
		config_free(fresh);
		return -1;
	}
	for (size_t i = 0; i < ARRAY_LEN(options); i++) {
		const struct option *o = &options[i];
		char *dst = (char *)cfg + o->offset, *src = (char *)fresh + o->offset;

		if (!option_differs(o, cfg, fresh))
			continue;
		if (!o->reloadable) {
			log_warning("configuration option %s changed: it takes effect at the next "
				    "start, not on reload",
				    o->path);
			continue;
		}
		switch (o->type) {
		case OPT_INT:
		case OPT_CHOICE:
			*(int *)dst = *(int *)src;
			break;
		case OPT_INT64:
			*(int64_t *)dst = *(int64_t *)src;
			break;
		case OPT_BOOL:
			*(bool *)dst = *(bool *)src;
			break;
		case OPT_STRING: {
			char *tmp = *(char **)dst;
			*(char **)dst = *(char **)src;
			*(char **)src = tmp;
			break;
		}
		case OPT_STRLIST:
			break; /* none is reloadable */
		}
		log_info("configuration option %s reloaded", o->path);
	}
	config_free(fresh);
	return 0;
}

void config_hide_secrets(const struct config *cfg)
{
	for (int i = 0; i < cfg->n_kafka_props; i++) {
		const char *kv = cfg->kafka_props[i], *eq = strchr(kv, '=');
		char name[128];

		snprintf(name, sizeof(name), "%.*s", (int)(eq - kv), kv);
		if (strstr(name, "password") || strstr(name, "secret"))
			log_add_secret(eq + 1);
	}
}
