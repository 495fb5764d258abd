/* outbox.c: the relay's PostgreSQL connection. Every statement is a call of
 * an outbox.* function (sql/); pages come back in binary to skip parsing. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>

#include "log.h"
#include "outbox.h"
#include "wait.h"

/* The statements of the relay's hot loop, prepared once per connection
 * when postgres.prepared_statements is on: no parse and plan per call. */
enum hot_stmt { HOT_RENEW, HOT_FETCH, HOT_LOOK, HOT_ADVANCE, HOT_AWAKE, HOT_MARK, HOT_COUNT };

/*
 * The server's life: when its WAL statistics were last reset. PostgreSQL
 * resets them at the end of crash recovery (a crash of the server or of any
 * backend, an immediate stop), keeps them across a clean restart, and a
 * standby promoted in a failover has its own. A look and a write of the
 * relay's own that see the same value ran with no crash between them
 * (docs/design.md, "Crash-safe window ends"). pg_stat_wal is readable by
 * every role. A reset by hand (pg_stat_reset_shared('wal')) reads as a
 * crash: the relay reads its last windows again, which is harmless.
 */
#define LIFE_SQL "(SELECT sw.stats_reset::text FROM pg_catalog.pg_stat_wal AS sw)"


static const struct {
	const char *name;
	const char *sql;
	int nparams;
} hot[HOT_COUNT] = {
	{"outbox_relay_renew", "SELECT outbox.lease_renew($1, $2, $3)", 3},
	{"outbox_relay_fetch",
	 "SELECT id, topic, key, payload, header_names, header_values, created_ms, window_end "
	 "FROM outbox.read_page($1, $2, $3, $4, $5)",
	 5},
	/* A new window and its first page in one round trip. The row with a
	 * NULL id carries the window's end, pg_current_snapshot() (the snapshot
	 * this statement reads with, so the page sees exactly the window's
	 * commits; window_open() cannot be called here: it is VOLATILE and
	 * would take a later one), and the stored position; the others are
	 * read_page()'s. An end below either position ($1, or the stored one
	 * that window_open() checks) reads no page: the caller reports the
	 * regression, where read_page() would refuse a window that ends before
	 * it starts. */
	{"outbox_relay_look",
	 "WITH w AS MATERIALIZED (SELECT pg_catalog.pg_current_snapshot() AS s, "
	 "(SELECT coalesce(g.pos_next, g.pos_done) FROM outbox.position_get($5) AS g) AS stored, "
	 LIFE_SQL " AS life) "
	 "SELECT NULL::bigint, NULL::text, NULL::bytea, NULL::bytea, NULL::text[], NULL::text[], "
	 "NULL::bigint, NULL::boolean, w.s::text, w.stored, w.life FROM w "
	 "UNION ALL "
	 "SELECT p.id, p.topic, p.key, p.payload, p.header_names, p.header_values, p.created_ms, "
	 "p.window_end, NULL, NULL, NULL "
	 "FROM w, outbox.read_page($1::pg_snapshot, w.s, $2, $3, $4) AS p "
	 "WHERE pg_catalog.pg_snapshot_xmax(w.s) >= pg_catalog.pg_snapshot_xmax($1::pg_snapshot) "
	 "AND pg_catalog.pg_snapshot_xmax(w.s) >= pg_catalog.pg_snapshot_xmax(w.stored::pg_snapshot)",
	 5},
	/* With the transaction id it commits under and the server's life
	 * (struct db_mark). */
	{"outbox_relay_advance",
	 "SELECT outbox.advance($1, $2, $3, $4, $5, $6, $7), "
	 "pg_catalog.pg_current_xact_id()::text, " LIFE_SQL,
	 7},
	{"outbox_relay_awake", "SELECT outbox.relay_awake($1)", 1},
	/* The lease renewal as the write that makes a batch's windows
	 * crash-safe (outbox_mark). */
	{"outbox_relay_mark",
	 "SELECT outbox.lease_renew($1, $2, $3), pg_catalog.pg_current_xact_id()::text, " LIFE_SQL,
	 3},
};

/*
 * The relay's session settings. With postgres.pooling = "none" they ride in
 * the startup packet (options=-c ...). A pooler refuses that parameter
 * (PgBouncer: "unsupported startup parameter: options") or, told to ignore
 * it, drops it silently; so under "session" they are set once after
 * connecting, and under "transaction", where each transaction may run on
 * another server connection, for the transaction of every statement: this
 * statement goes first in the same pipeline (one Sync, one transaction), and
 * $2 = true makes it SET LOCAL. No parallel workers: the relay's statements
 * are small, except the lag count over a backlog, which parallel workers
 * made cost several times its serial CPU for a shorter wall time
 * (bench/sql/RESULTS.md, "Issue 13"). synchronous_commit on, whatever the
 * database or role says: the relay's own commits (advance, the lease, the
 * mark before a Kafka commit) must be flushed, or a crash could undo them
 * and hand out again transaction ids that a published window counts as
 * completed (struct db_mark).
 */
#define SETTINGS_SQL                                                                               \
	"SELECT pg_catalog.set_config('statement_timeout', $1, $2), "                              \
	"pg_catalog.set_config('max_parallel_workers_per_gather', '0', $2), "                      \
	"pg_catalog.set_config('synchronous_commit', 'on', $2)"

/* "none": how many of the three settings the server took from the startup
 * packet. Fewer means something in between dropped them: a pooler told to
 * ignore "options", which then is not a direct connection. */
#define STARTUP_CHECK_SQL                                                                          \
	"SELECT count(*) FROM pg_catalog.pg_settings WHERE source = 'client' AND name IN "         \
	"('statement_timeout', 'max_parallel_workers_per_gather', 'synchronous_commit')"

struct outbox {
	const struct config *cfg;
	PGconn *conn;
	/* A pipeline left in a state we cannot vouch for: reconnect. */
	bool broken;
	char timeout[16]; /* statement_timeout in ms, for SETTINGS_SQL */
	bool prepared[HOT_COUNT];
	/* The conninfo's password, if it has one: scrubbed from every message
	 * we keep (a misplaced value can end up quoted by libpq). */
	char *secret;
	char errstr[1024];
};

const char *ob_status_str(int st)
{
	switch (st) {
	case OB_OK:
		return "ok";
	case OB_TRANSIENT:
		return "transient";
	case OB_FAILED:
		return "failed";
	case OB_FENCED:
		return "fenced";
	case OB_BACKWARDS:
		return "backwards";
	case OB_REGRESSION:
		return "regression";
	case OB_OTHER_NAME:
		return "other-name";
	case OB_UNKNOWN_RELAY:
		return "unknown-relay";
	case OB_READ_ONLY:
		return "read-only";
	case OB_STOPPED:
		return "stopped";
	}
	return "?";
}

static void notice_processor(void *arg, const char *message)
{
	(void)arg;
	log_write(LOG_INFO, "libpq", "%s", message);
}

/* Replace every double-quoted part of a libpq message with "***": its
 * conninfo parse errors quote fragments of the string, which may be a
 * password. */
static void redact_quoted(char *dst, size_t dstlen, const char *src)
{
	size_t n = 0;
	bool quoted = false;

	for (; *src && n + 1 < dstlen; src++) {
		if (*src == '"') {
			if (!quoted && n + 5 < dstlen) {
				memcpy(dst + n, "\"***\"", 5);
				n += 5;
			}
			quoted = !quoted;
		} else if (!quoted) {
			dst[n++] = *src;
		}
	}
	dst[n] = '\0';
	dst[strcspn(dst, "\n")] = '\0';
}

/* Overwrite each occurrence of secret in s with '*' (same length, in place).
 * Passwords shorter than 4 characters are left alone: starring every "ab"
 * of a message would hide more than it protects. */
static void scrub(char *s, const char *secret)
{
	size_t len;
	char *p;

	if (!secret || strlen(secret) < 4)
		return;
	len = strlen(secret);
	for (p = strstr(s, secret); p; p = strstr(p + len, secret))
		memset(p, '*', len);
}

/*
 * Parse the conninfo before connecting: libpq's parse errors quote parts of
 * the string ('missing "=" after "..."', 'invalid percent-encoded token:
 * "..."'), so they are reported with every quoted part redacted. On success
 * *secret gets a copy of the password, *options of the "options" (each NULL
 * when there is none).
 */
static int conninfo_check(const char *conninfo, char **secret, char **options, char *errbuf,
			  size_t errlen)
{
	char *msg = NULL, red[512];
	PQconninfoOption *opts;

	*secret = NULL;
	*options = NULL;
	/* libpq expands only what looks like a connection string (a URI, or
	 * anything with '='); the rest is a plain database name. */
	if (strncmp(conninfo, "postgresql://", 13) != 0 && strncmp(conninfo, "postgres://", 11) != 0 &&
	    !strchr(conninfo, '='))
		return 0;
	opts = PQconninfoParse(conninfo, &msg);
	if (!opts) {
		redact_quoted(red, sizeof(red), msg ? msg : "out of memory");
		snprintf(errbuf, errlen, "invalid postgres.conninfo: %s", red);
		PQfreemem(msg);
		return -1;
	}
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (o->val && *o->val && strcmp(o->keyword, "password") == 0)
			*secret = xstrdup(o->val);
		else if (o->val && *o->val && strcmp(o->keyword, "options") == 0)
			*options = xstrdup(o->val);
	PQconninfoFree(opts);
	return 0;
}

/* Add s to the message in buf (of size len), cut to fit. */
static void append(char *buf, size_t len, const char *s)
{
	size_t used = strlen(buf);

	snprintf(buf + used, len - used, "%s", s);
}

static int classify(struct outbox *ob, PGresult *res, const char *what);
static int run(struct outbox *ob, const char *name, const char *sql, int nparams,
	       const char *const *params, int result_format, PGresult **out);

/* What the server said at login, and a pooler's refusal of our startup
 * options turned into the setting to change. */
static int connect_failed(struct outbox *ob, char *errbuf, size_t errlen)
{
	const char *msg = PQerrorMessage(ob->conn);
	bool refused = strstr(msg, "unsupported startup parameter") != NULL;

	snprintf(errbuf, errlen, "could not connect to PostgreSQL: %s", msg);
	/* libpq's message ends with a newline */
	errbuf[strcspn(errbuf, "\n")] = '\0';
	scrub(errbuf, ob->secret);
	if (!refused)
		return OB_TRANSIENT;
	if (ob->cfg->pg_pooling == POOLING_NONE)
		append(errbuf, errlen,
		       " (a connection pooler such as PgBouncer refuses the startup options "
		       "that the relay sends on a direct connection; set postgres.pooling to "
		       "\"session\" or \"transaction\", the pooler's pool_mode)");
	else
		append(errbuf, errlen,
		       " (postgres.conninfo carries a parameter the pooler does not know: remove it, "
		       "or list it in the pooler's ignore_startup_parameters)");
	return OB_FAILED;
}

/* The relay's settings, after login: checked (none), set for the session
 * (session), or left to every statement (transaction). */
static int settings_apply(struct outbox *ob, char *errbuf, size_t errlen)
{
	const char *p[2] = {ob->timeout, "false"};
	PGresult *res;
	int rc;

	switch (ob->cfg->pg_pooling) {
	case POOLING_SESSION:
		rc = run(ob, NULL, SETTINGS_SQL, 2, p, 0, &res);
		break;
	case POOLING_NONE:
		rc = run(ob, NULL, STARTUP_CHECK_SQL, 0, NULL, 0, &res);
		if (rc == OB_OK && strcmp(PQgetvalue(res, 0, 0), "3") != 0) {
			snprintf(errbuf, errlen,
				 "PostgreSQL did not get the relay's startup options (statement_timeout, "
				 "max_parallel_workers_per_gather, synchronous_commit): something "
				 "between them dropped "
				 "them, such as PgBouncer with ignore_startup_parameters = options; "
				 "behind a pooler set postgres.pooling to \"session\" or \"transaction\", "
				 "the pooler's pool_mode");
			PQclear(res);
			return OB_FAILED;
		}
		break;
	default:
		return OB_OK;
	}
	if (rc != OB_OK) {
		snprintf(errbuf, errlen, "could not set up the connection: %s", ob->errstr);
		return rc;
	}
	PQclear(res);
	return OB_OK;
}

struct outbox *outbox_connect(const struct config *cfg, int *status, char *errbuf, size_t errlen)
{
	/* Our defaults come before dbname: the values expanded from the user's
	 * conninfo override them. But "options" comes after, as the user's
	 * own options (if any) followed by ours, and only on a direct
	 * connection (SETTINGS_SQL above). */
	const char *keys[] = {"fallback_application_name", "connect_timeout", "keepalives_idle",
			      "keepalives_interval", "keepalives_count", "dbname", "options", NULL};
	const char *vals[] = {"outbox-relay", "10", "10", "5", "3", cfg->pg_conninfo, NULL, NULL};
	const char *hs, *ro;
	struct outbox *ob;
	char *secret, *user_opts, *opts;
	size_t len;
	int rc;

	if (status)
		*status = OB_TRANSIENT;
	if (conninfo_check(cfg->pg_conninfo, &secret, &user_opts, errbuf, errlen) < 0)
		return NULL;
	len = (user_opts ? strlen(user_opts) : 0) + 128;
	opts = xmalloc(len);
	snprintf(opts, len,
		 "%s%s-c statement_timeout=%d -c max_parallel_workers_per_gather=0 "
		 "-c synchronous_commit=on",
		 user_opts ? user_opts : "", user_opts ? " " : "", cfg->pg_statement_timeout_ms);
	vals[6] = opts;
	if (cfg->pg_pooling != POOLING_NONE)
		keys[6] = NULL;
	ob = xcalloc(1, sizeof(*ob));
	ob->cfg = cfg;
	ob->secret = secret;
	snprintf(ob->timeout, sizeof(ob->timeout), "%d", cfg->pg_statement_timeout_ms);
	ob->conn = PQconnectdbParams(keys, vals, 1);
	free(opts);
	free(user_opts);
	if (PQstatus(ob->conn) != CONNECTION_OK)
		rc = connect_failed(ob, errbuf, errlen);
	else
		rc = settings_apply(ob, errbuf, errlen);
	if (rc != OB_OK) {
		if (status)
			*status = rc;
		outbox_free(ob);
		return NULL;
	}
	PQsetNoticeProcessor(ob->conn, notice_processor, NULL);
	/* Reported by servers since PostgreSQL 14 at connection start: a
	 * read-only server says so before any statement fails (25006). */
	hs = PQparameterStatus(ob->conn, "in_hot_standby");
	ro = PQparameterStatus(ob->conn, "default_transaction_read_only");
	if ((hs && strcmp(hs, "on") == 0) || (ro && strcmp(ro, "on") == 0))
		log_warning("connected to a read-only server (%s): the relay cannot take its lease or "
			    "advance there; postgres.conninfo must name the primary",
			    hs && strcmp(hs, "on") == 0 ? "a hot standby"
							: "default_transaction_read_only is on");
	if (status)
		*status = OB_OK;
	return ob;
}

bool outbox_connect_refused(const char *errmsg)
{
	/* libpq reports these only as text (no SQLSTATE before a session) */
	static const char *const refusals[] = {
		"certificate verify failed",	     /* sslrootcert does not sign it */
		"does not match host name",	     /* verify-full, wrong name */
		"root certificate file",	     /* sslrootcert missing */
		"server does not support SSL",	     /* sslmode=require and up */
		"password authentication failed",
		"no pg_hba.conf entry",
		"pg_hba.conf rejects connection",
		"sslv3 alert",			     /* the server refused our certificate */
		"tlsv1 alert",
	};

	for (size_t i = 0; i < ARRAY_LEN(refusals); i++)
		if (strstr(errmsg, refusals[i]))
			return true;
	return false;
}

void outbox_free(struct outbox *ob)
{
	if (!ob)
		return;
	PQfinish(ob->conn);
	free(ob->secret);
	free(ob);
}

const char *outbox_errstr(const struct outbox *ob)
{
	return ob->errstr;
}

bool outbox_read_only(const struct outbox *ob)
{
	const char *hs = PQparameterStatus(ob->conn, "in_hot_standby");
	const char *ro = PQparameterStatus(ob->conn, "default_transaction_read_only");

	return (hs && strcmp(hs, "on") == 0) || (ro && strcmp(ro, "on") == 0);
}

bool outbox_connected(const struct outbox *ob)
{
	return ob && !ob->broken && PQstatus(ob->conn) == CONNECTION_OK;
}

/* Map a failed result onto enum ob_status and keep its message. */
static int classify(struct outbox *ob, PGresult *res, const char *what)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;

	if (!msg)
		msg = PQerrorMessage(ob->conn);
	snprintf(ob->errstr, sizeof(ob->errstr), "%s: %s%s%s", what, msg, hint ? " (hint: " : "",
		 hint ? hint : "");
	if (hint)
		strncat(ob->errstr, ")", sizeof(ob->errstr) - strlen(ob->errstr) - 1);
	ob->errstr[strcspn(ob->errstr, "\n")] = '\0';
	scrub(ob->errstr, ob->secret);

	if (PQstatus(ob->conn) != CONNECTION_OK || !state)
		return OB_TRANSIENT;
	if (strcmp(state, "OR001") == 0)
		return OB_FENCED;
	if (strcmp(state, "OR002") == 0)
		return OB_BACKWARDS;
	if (strcmp(state, "OR003") == 0)
		return OB_REGRESSION;
	if (strcmp(state, "OR004") == 0)
		return OB_OTHER_NAME;
	if (strcmp(state, "OR005") == 0)
		return OB_UNKNOWN_RELAY;
	if (strcmp(state, "26000") == 0 || strcmp(state, "42P05") == 0) {
		/* A named prepared statement that "does not exist" (prepared on
		 * one server connection, run on another) or "already exists"
		 * (left on a server connection by an earlier client): only our
		 * hot statements are named. */
		append(ob->errstr, sizeof(ob->errstr),
		       ": a transaction-mode pooler runs each transaction on any server "
		       "connection; set postgres.prepared_statements = false (or use PgBouncer "
		       "1.21 or later with max_prepared_statements)");
		return OB_FAILED;
	}
	if (strcmp(state, "25006") == 0) {
		/* read_only_sql_transaction: a hot standby ("cannot execute LISTEN
		 * during recovery", "... in a read-only transaction") or a server
		 * with default_transaction_read_only on. No retry on this server
		 * will cure it; a failover or a fixed conninfo will. */
		append(ob->errstr, sizeof(ob->errstr),
		       ": the relay points at a read-only server (a standby, or "
		       "default_transaction_read_only is on); postgres.conninfo must name the "
		       "primary");
		return OB_READ_ONLY;
	}
	/* connection exceptions, shutdown, resources, serialization, timeouts */
	if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
	    strncmp(state, "53", 2) == 0 || strcmp(state, "40001") == 0 ||
	    strcmp(state, "40P01") == 0 || strcmp(state, "57014") == 0 ||
	    strcmp(state, "55P03") == 0)
		return OB_TRANSIENT;
	return OB_FAILED;
}

/* Take a statement's result: *out gets it on success; a failure is
 * classified (and cleared). */
static int take_result(struct outbox *ob, PGresult *res, const char *sql, PGresult **out)
{
	ExecStatusType st = PQresultStatus(res);
	int rc;

	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		*out = res;
		return OB_OK;
	}
	rc = classify(ob, res, sql);
	PQclear(res);
	*out = NULL;
	return rc;
}

/* In a pipeline: the first result of the next statement; the rest of its
 * results, up to the NULL that ends them, are consumed. */
static PGresult *pipeline_result(PGconn *conn)
{
	PGresult *res = PQgetResult(conn), *more;

	while (res && PQstatus(conn) == CONNECTION_OK && (more = PQgetResult(conn)) != NULL)
		PQclear(more);
	return res;
}

/*
 * Run one statement: the prepared statement `name`, or sql with text
 * parameters. *out gets the result on success. Under transaction pooling
 * SETTINGS_SQL goes first in one pipeline with a single Sync: both run in
 * one transaction on one server connection, in one round trip.
 */
static int run(struct outbox *ob, const char *name, const char *sql, int nparams,
	       const char *const *params, int result_format, PGresult **out)
{
	const char *set[2] = {ob->timeout, "true"};
	PGresult *settings = NULL, *res = NULL, *sync;
	bool sent;
	int rc;

	*out = NULL;
	if (ob->broken) {
		snprintf(ob->errstr, sizeof(ob->errstr),
			 "%s: the connection was given up after a failed pipeline", sql);
		return OB_TRANSIENT;
	}
	if (ob->cfg->pg_pooling != POOLING_TRANSACTION)
		return take_result(ob,
				   name ? PQexecPrepared(ob->conn, name, nparams, params, NULL, NULL,
							 result_format)
					: PQexecParams(ob->conn, sql, nparams, NULL, params, NULL,
						       NULL, result_format),
				   sql, out);
	sent = PQenterPipelineMode(ob->conn) &&
	       PQsendQueryParams(ob->conn, SETTINGS_SQL, 2, NULL, set, NULL, NULL, 0) &&
	       (name ? PQsendQueryPrepared(ob->conn, name, nparams, params, NULL, NULL,
					   result_format)
		     : PQsendQueryParams(ob->conn, sql, nparams, NULL, params, NULL, NULL,
					 result_format)) &&
	       PQpipelineSync(ob->conn);
	if (sent) {
		settings = pipeline_result(ob->conn);
		res = pipeline_result(ob->conn);
		sync = PQgetResult(ob->conn);
		sent = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
		PQclear(sync);
	}
	if (!sent || !PQexitPipelineMode(ob->conn)) {
		/* Lost in the middle (the connection, mostly): whatever the
		 * server did ended with the transaction; start afresh. */
		rc = classify(ob, NULL, sql);
		ob->broken = true;
		PQclear(settings);
		PQclear(res);
		return rc;
	}
	if (!settings || PQresultStatus(settings) != PGRES_TUPLES_OK) {
		PQclear(res);
		return take_result(ob, settings, SETTINGS_SQL, out);
	}
	PQclear(settings);
	return take_result(ob, res, sql, out);
}

/* Run one statement with text parameters; *out gets the result on success. */
static int call(struct outbox *ob, const char *sql, int nparams, const char *const *params,
		int result_format, PGresult **out)
{
	return run(ob, NULL, sql, nparams, params, result_format, out);
}

/* A hot statement: prepared on first use when configured, else sent whole. */
static int call_hot(struct outbox *ob, enum hot_stmt st, const char *const *params,
		    int result_format, PGresult **out)
{
	int rc;

	if (!ob->cfg->pg_prepared_statements)
		return call(ob, hot[st].sql, hot[st].nparams, params, result_format, out);
	if (!ob->prepared[st]) {
		rc = take_result(ob, PQprepare(ob->conn, hot[st].name, hot[st].sql, hot[st].nparams,
					       NULL),
				 hot[st].sql, out);
		if (rc != OB_OK)
			return rc;
		PQclear(*out);
		ob->prepared[st] = true;
	}
	return run(ob, hot[st].name, hot[st].sql, hot[st].nparams, params, result_format, out);
}

static int64_t text_i64(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

int outbox_schema_version(struct outbox *ob, int *version)
{
	PGresult *res;
	int rc = call(ob, "SELECT outbox.version()", 0, NULL, 0, &res);

	if (rc == OB_OK) {
		*version = (int)text_i64(res, 0, 0);
		PQclear(res);
	}
	return rc;
}

int outbox_lease_acquire(struct outbox *ob, const char *owner, struct lease *lease)
{
	char ttl[16];
	const char *p[4] = {ob->cfg->relay_name, owner, ttl,
			    ob->cfg->allow_other_names ? "true" : "false"};
	PGresult *res;
	int rc;

	snprintf(ttl, sizeof(ttl), "%d", ob->cfg->lease_ttl_ms);
	rc = call(ob,
		  "SELECT acquired, generation, owner, expires_in_ms "
		  "FROM outbox.lease_acquire($1, $2, $3, $4)",
		  4, p, 0, &res);
	if (rc != OB_OK)
		return rc;
	memset(lease, 0, sizeof(*lease));
	lease->acquired = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	lease->generation = text_i64(res, 0, 1);
	snprintf(lease->owner, sizeof(lease->owner), "%s", PQgetvalue(res, 0, 2));
	lease->expires_in_ms = text_i64(res, 0, 3);
	PQclear(res);
	return OB_OK;
}

/* The transaction id and the server's life of a write's answer, columns
 * col and col + 1. */
static void take_mark(const PGresult *res, int col, struct db_mark *mark)
{
	mark->xid = strtoull(PQgetvalue(res, 0, col), NULL, 10);
	snprintf(mark->life, sizeof(mark->life), "%s", PQgetvalue(res, 0, col + 1));
}

/* A lease renewal by hot statement st: *held, and with HOT_MARK *mark. */
static int renew(struct outbox *ob, enum hot_stmt st, int64_t generation, bool *held,
		 struct db_mark *mark)
{
	char gen[24], ttl[16];
	const char *p[3] = {ob->cfg->relay_name, gen, ttl};
	PGresult *res;
	int rc;

	snprintf(gen, sizeof(gen), "%" PRId64, generation);
	snprintf(ttl, sizeof(ttl), "%d", ob->cfg->lease_ttl_ms);
	rc = call_hot(ob, st, p, 0, &res);
	if (rc != OB_OK)
		return rc;
	*held = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	if (mark)
		take_mark(res, 1, mark);
	PQclear(res);
	return OB_OK;
}

int outbox_lease_renew(struct outbox *ob, int64_t generation, bool *held)
{
	return renew(ob, HOT_RENEW, generation, held, NULL);
}

int outbox_lease_release(struct outbox *ob, int64_t generation)
{
	char gen[24];
	const char *p[2] = {ob->cfg->relay_name, gen};
	PGresult *res;
	int rc;

	snprintf(gen, sizeof(gen), "%" PRId64, generation);
	rc = call(ob, "SELECT outbox.lease_release($1, $2)", 2, p, 0, &res);
	if (rc == OB_OK)
		PQclear(res);
	return rc;
}

int outbox_position_get(struct outbox *ob, struct position *pos)
{
	const char *p[1] = {ob->cfg->relay_name};
	PGresult *res;
	int rc;

	rc = call(ob,
		  "SELECT generation, batch_seq, pos_done, pos_next, pos_after_id "
		  "FROM outbox.position_get($1)",
		  1, p, 0, &res);
	if (rc != OB_OK)
		return rc;
	position_clear(pos);
	pos->generation = text_i64(res, 0, 0);
	pos->batch_seq = text_i64(res, 0, 1);
	pos->done = xstrdup(PQgetvalue(res, 0, 2));
	pos->next = PQgetisnull(res, 0, 3) ? NULL : xstrdup(PQgetvalue(res, 0, 3));
	pos->after_id = text_i64(res, 0, 4);
	PQclear(res);
	return OB_OK;
}

/* OB_REGRESSION when a window's end `snap` is behind the position `done`. */
static int check_window_end(struct outbox *ob, const char *snap, const char *done)
{
	if (snapshot_xmax(snap) >= snapshot_xmax(done))
		return OB_OK;
	snprintf(ob->errstr, sizeof(ob->errstr),
		 "transaction ids went backwards: the database's current snapshot %s is "
		 "behind the relay's position %s; this database lost commits the relay "
		 "saw (a failover to a replica that missed them, or a restore), and Kafka "
		 "may hold events it no longer has. Stopping; follow \"OR003: transaction "
		 "ids behind the position\" in docs/sql.md",
		 snap, done);
	return OB_REGRESSION;
}

int outbox_span_digest(struct outbox *ob, const struct position *from, const struct position *to,
		       int64_t *rows, int64_t *idsum)
{
	char from_after[24], to_after[24];
	const char *p[6] = {from->done, from->next, from_after, to->done, to->next, to_after};
	PGresult *res;
	int rc;

	snprintf(from_after, sizeof(from_after), "%" PRId64, from->after_id);
	snprintf(to_after, sizeof(to_after), "%" PRId64, to->after_id);
	/* Rows below from.done's xmin are relayed at `from`, rows at or above
	 * the xmax of to's newest snapshot are not relayed at `to`: the txid
	 * bounds let the txid index find the span. */
	rc = call(ob,
		  "SELECT count(*), coalesce(sum(e.id::numeric), 0) % 9223372036854775808 "
		  "FROM outbox.event AS e "
		  "WHERE e.txid >= pg_snapshot_xmin($1::pg_snapshot) "
		  "AND e.txid < pg_snapshot_xmax(coalesce($5::pg_snapshot, $4::pg_snapshot)) "
		  "AND outbox.relayed(e.txid, e.id, $4::pg_snapshot, $5::pg_snapshot, $6::bigint) "
		  "AND NOT outbox.relayed(e.txid, e.id, $1::pg_snapshot, $2::pg_snapshot, "
		  "$3::bigint)",
		  6, p, 0, &res);
	if (rc != OB_OK)
		return rc;
	*rows = text_i64(res, 0, 0);
	*idsum = text_i64(res, 0, 1);
	PQclear(res);
	return OB_OK;
}

static int64_t bin_i64(const char *p)
{
	uint32_t hi, lo;

	memcpy(&hi, p, 4);
	memcpy(&lo, p + 4, 4);
	return (int64_t)(((uint64_t)ntohl(hi) << 32) | ntohl(lo));
}

static int32_t bin_i32(const char *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return (int32_t)ntohl(v);
}

/*
 * Walk a one-dimensional text[] in binary array format: ndim, has-nulls
 * flag, element type, then (size, lower bound) and each element as a length
 * (-1 for NULL) and its bytes. Returns the element count or -1 if malformed.
 * elems[i] gets pointer and length; NULL elements come back as NULL.
 */
static int bin_text_array(const char *p, int len, const char ***ptrs, size_t **lens)
{
	const char *end = p + len;
	int ndim, n;

	*ptrs = NULL;
	*lens = NULL;
	if (len < 12)
		return -1;
	ndim = bin_i32(p);
	if (ndim == 0)
		return 0;
	if (ndim != 1 || len < 20)
		return -1;
	n = bin_i32(p + 12);
	if (n < 0)
		return -1;
	p += 20;
	*ptrs = xcalloc((size_t)n, sizeof(char *));
	*lens = xcalloc((size_t)n, sizeof(size_t));
	for (int i = 0; i < n; i++) {
		int32_t el;

		if (end - p < 4)
			return -1;
		el = bin_i32(p);
		p += 4;
		if (el < 0) {
			continue;
		}
		if (end - p < el)
			return -1;
		(*ptrs)[i] = p;
		(*lens)[i] = (size_t)el;
		p += el;
	}
	return n;
}

/* Decode the header arrays of one row into b->hdrs. */
static int decode_headers(struct outbox *ob, PGresult *res, int row, struct batch *b,
			  struct record *r)
{
	const char **names = NULL, **vals = NULL;
	size_t *nlens = NULL, *vlens = NULL;
	int nn = 0, nv = 0, rc = OB_OK;

	r->hdr_off = b->nhdrs;
	r->hdr_count = 0;
	if (!PQgetisnull(res, row, 4))
		nn = bin_text_array(PQgetvalue(res, row, 4), PQgetlength(res, row, 4), &names,
				    &nlens);
	if (!PQgetisnull(res, row, 5))
		nv = bin_text_array(PQgetvalue(res, row, 5), PQgetlength(res, row, 5), &vals,
				    &vlens);
	if (nn < 0 || nv < 0 || nn != nv) {
		snprintf(ob->errstr, sizeof(ob->errstr),
			 "outbox row %" PRId64 ": malformed header arrays from outbox.fetch_page",
			 r->id);
		rc = OB_FAILED;
		goto out;
	}
	for (int i = 0; i < nn; i++) {
		struct record_header *h;

		if (!names[i])
			continue; /* the SQL side rejects these; never send a nameless header */
		h = batch_add_header(b);
		h->name = names[i];
		h->name_len = nlens[i];
		h->value = vals[i];
		h->value_len = vals[i] ? vlens[i] : 0;
		r->hdr_count++;
		b->bytes += (int64_t)(h->name_len + h->value_len);
	}
out:
	free(names);
	free(vals);
	free(nlens);
	free(vlens);
	return rc;
}

/* The rows of a result with fetch_page's columns (id, topic, key, payload,
 * header_names, header_values, created_ms) into b, which takes res; row
 * `skip` (-1: none) is not one. */
static int take_rows(struct outbox *ob, PGresult *res, int skip, struct batch *b)
{
	int rc;

	batch_add_page(b, res);
	for (int i = 0; i < PQntuples(res); i++) {
		struct record *r;

		if (i == skip)
			continue;
		r = batch_add_record(b);

		r->id = bin_i64(PQgetvalue(res, i, 0));
		r->topic = PQgetvalue(res, i, 1); /* libpq NUL-terminates binary values too */
		r->key = PQgetisnull(res, i, 2) ? NULL : PQgetvalue(res, i, 2);
		r->key_len = (size_t)PQgetlength(res, i, 2);
		r->payload = PQgetisnull(res, i, 3) ? NULL : PQgetvalue(res, i, 3);
		r->payload_len = (size_t)PQgetlength(res, i, 3);
		r->timestamp_ms = PQgetisnull(res, i, 6) ? 0 : bin_i64(PQgetvalue(res, i, 6));
		b->bytes += (int64_t)(r->key_len + r->payload_len);
		rc = decode_headers(ob, res, i, b, r);
		if (rc != OB_OK)
			return rc;
	}
	return OB_OK;
}

/* A binary bool column: one byte, 1 for true; NULL is false. */
static bool bin_true(const PGresult *res, int row, int col)
{
	return !PQgetisnull(res, row, col) && PQgetlength(res, row, col) == 1 &&
	       PQgetvalue(res, row, col)[0] == 1;
}

int outbox_fetch_page(struct outbox *ob, const struct position *pos, int max_rows,
		      int64_t max_bytes, struct batch *b, int *nrows, bool *window_end)
{
	char after[24], rows[16], bytes[24];
	const char *p[5] = {pos->done, pos->next, after, rows, bytes};
	PGresult *res;
	int rc, n;

	snprintf(after, sizeof(after), "%" PRId64, pos->after_id);
	snprintf(rows, sizeof(rows), "%d", max_rows);
	snprintf(bytes, sizeof(bytes), "%" PRId64, max_bytes);
	rc = call_hot(ob, HOT_FETCH, p, 1, &res);
	if (rc != OB_OK)
		return rc;
	n = PQntuples(res);
	*nrows = n;
	*window_end = n == 0;
	if (n == 0) {
		PQclear(res);
		return OB_OK;
	}
	*window_end = bin_true(res, n - 1, 7);
	return take_rows(ob, res, -1, b);
}

int outbox_look(struct outbox *ob, struct position *pos, int max_rows, int64_t max_bytes,
		struct batch *b, int *nrows, bool *window_end, char *life, size_t lifelen)
{
	char after[24], rows[16], bytes[24];
	const char *p[5] = {pos->done, after, rows, bytes, ob->cfg->relay_name};
	PGresult *res;
	int rc, n, snap = -1;
	int64_t last = pos->after_id;

	snprintf(after, sizeof(after), "%" PRId64, pos->after_id);
	snprintf(rows, sizeof(rows), "%d", max_rows);
	snprintf(bytes, sizeof(bytes), "%" PRId64, max_bytes);
	rc = call_hot(ob, HOT_LOOK, p, 1, &res);
	if (rc != OB_OK)
		return rc;
	n = PQntuples(res);
	/* One row without an id, the window's end; the page's rows in id
	 * order. Anything else is not this statement's answer: refuse it
	 * rather than send a page whose order we cannot vouch for. */
	for (int i = 0; i < n; i++) {
		int64_t id;

		if (PQgetisnull(res, i, 0)) {
			if (snap >= 0 || PQgetisnull(res, i, 8) || PQgetisnull(res, i, 9))
				goto malformed;
			snap = i;
			continue;
		}
		id = bin_i64(PQgetvalue(res, i, 0));
		if (id <= last)
			goto malformed;
		last = id;
	}
	if (snap < 0)
		goto malformed;
	snprintf(life, lifelen, "%s", PQgetvalue(res, snap, 10));
	rc = check_window_end(ob, PQgetvalue(res, snap, 8), pos->done);
	if (rc == OB_OK &&
	    snapshot_xmax(PQgetvalue(res, snap, 8)) < snapshot_xmax(PQgetvalue(res, snap, 9))) {
		/* window_open()'s OR003, in its words. */
		snprintf(ob->errstr, sizeof(ob->errstr),
			 "the database's transaction ids are behind the relay position of relay "
			 "\"%s\": the current snapshot is %s, the stored position's is %s; this "
			 "happens after restoring a dump into a new cluster or failing over to a "
			 "replica that missed commits, and new rows would be skipped (hint: Stop the "
			 "relay and follow \"Recovery: transaction id regression\" in docs/sql.md "
			 "(outbox.position_reset()))",
			 ob->cfg->relay_name, PQgetvalue(res, snap, 8), PQgetvalue(res, snap, 9));
		rc = OB_REGRESSION;
	}
	if (rc != OB_OK) {
		PQclear(res);
		return rc;
	}
	pos->next = xstrdup(PQgetvalue(res, snap, 8));
	*nrows = n - 1;
	*window_end = n == 1 || bin_true(res, snap == n - 1 ? n - 2 : n - 1, 7);
	if (n == 1) {
		PQclear(res);
		return OB_OK;
	}
	return take_rows(ob, res, snap, b);

malformed:
	snprintf(ob->errstr, sizeof(ob->errstr),
		 "unexpected answer to the relay's look (%d rows): not one window end and "
		 "rows in id order after %" PRId64,
		 n, pos->after_id);
	PQclear(res);
	return OB_FAILED;
}

int outbox_advance(struct outbox *ob, int64_t generation, const struct position *pos,
		   int64_t *truncated, bool *already, struct db_mark *mark)
{
	char gen[24], seq[24], after[24], keep[24];
	const char *p[7] = {ob->cfg->relay_name, gen, seq, pos->done, pos->next, after, keep};
	PGresult *res;
	int rc;

	snprintf(gen, sizeof(gen), "%" PRId64, generation);
	snprintf(seq, sizeof(seq), "%" PRId64, pos->batch_seq);
	snprintf(after, sizeof(after), "%" PRId64, pos->after_id);
	snprintf(keep, sizeof(keep), "%" PRId64, ob->cfg->retention_ms);
	rc = call_hot(ob, HOT_ADVANCE, p, 0, &res);
	if (rc != OB_OK)
		return rc;
	/* NULL: this exact position was stored by an earlier call whose reply
	 * never arrived (the connection dropped after the commit). */
	if (already)
		*already = PQgetisnull(res, 0, 0);
	if (PQgetisnull(res, 0, 0))
		log_info("advance of relay \"%s\" to batch %" PRId64 " was already applied (the reply "
			 "to an earlier try was lost)",
			 ob->cfg->relay_name, pos->batch_seq);
	*truncated = text_i64(res, 0, 0);
	take_mark(res, 1, mark);
	PQclear(res);
	return OB_OK;
}

int outbox_mark(struct outbox *ob, int64_t generation, bool *held, struct db_mark *mark)
{
	return renew(ob, HOT_MARK, generation, held, mark);
}

int outbox_reserve_topics(struct outbox *ob, int64_t generation, const char *const *topics, int n)
{
	char gen[24];
	const char *p[3] = {ob->cfg->relay_name, gen, NULL};
	size_t cap = 3, len = 0;
	char *arr;
	PGresult *res;
	int rc;

	for (int i = 0; i < n; i++)
		cap += 2 * strlen(topics[i]) + 3;
	arr = xcalloc(1, cap);
	/* An array literal: each element quoted, " and \ escaped. */
	arr[len++] = '{';
	for (int i = 0; i < n; i++) {
		if (i)
			arr[len++] = ',';
		arr[len++] = '"';
		for (const char *c = topics[i]; *c; c++) {
			if (*c == '"' || *c == '\\')
				arr[len++] = '\\';
			arr[len++] = *c;
		}
		arr[len++] = '"';
	}
	arr[len++] = '}';
	p[2] = arr;
	snprintf(gen, sizeof(gen), "%" PRId64, generation);
	rc = call(ob, "SELECT outbox.reserve_topics($1, $2, $3)", 3, p, 0, &res);
	free(arr);
	if (rc == OB_OK)
		PQclear(res);
	return rc;
}

int outbox_cleanup(struct outbox *ob, int64_t *truncated)
{
	const char *p[1] = {ob->cfg->relay_name};
	PGresult *res;
	int rc = call(ob, "SELECT outbox.cleanup($1)", 1, p, 0, &res);

	if (rc != OB_OK)
		return rc;
	*truncated = text_i64(res, 0, 0);
	PQclear(res);
	return OB_OK;
}

int outbox_purge(struct outbox *ob, int max_rows, int64_t *deleted)
{
	char keep[24], rows[16];
	const char *p[3] = {ob->cfg->relay_name, keep, rows};
	PGresult *res;
	int rc;

	snprintf(keep, sizeof(keep), "%" PRId64, ob->cfg->retention_ms);
	snprintf(rows, sizeof(rows), "%d", max_rows);
	rc = call(ob, "SELECT outbox.purge($1, $2, $3)", 3, p, 0, &res);
	if (rc != OB_OK)
		return rc;
	*deleted = text_i64(res, 0, 0);
	PQclear(res);
	return OB_OK;
}

int outbox_lag(struct outbox *ob, int64_t *rows, int64_t *oldest_age_ms)
{
	const char *p[1] = {ob->cfg->relay_name};
	PGresult *res;
	int rc = call(ob, "SELECT rows, oldest_age_ms FROM outbox.lag($1)", 1, p, 0, &res);

	if (rc != OB_OK)
		return rc;
	*rows = text_i64(res, 0, 0);
	*oldest_age_ms = text_i64(res, 0, 1);
	PQclear(res);
	return OB_OK;
}

int outbox_status_print(struct outbox *ob, FILE *out)
{
	const char *p[1] = {ob->cfg->relay_name};
	PGresult *res;
	int rc = call(ob, "SELECT * FROM outbox.status($1)", 1, p, 0, &res);

	if (rc != OB_OK)
		return rc;
	for (int r = 0; r < PQntuples(res); r++)
		for (int c = 0; c < PQnfields(res); c++)
			fprintf(out, "%-22s %s\n", PQfname(res, c),
				PQgetisnull(res, r, c) ? "(null)" : PQgetvalue(res, r, c));
	PQclear(res);
	return OB_OK;
}

int outbox_relay_awake(struct outbox *ob, bool awake, bool *held)
{
	const char *p[1] = {awake ? "true" : "false"};
	PGresult *res;
	int rc = call_hot(ob, HOT_AWAKE, p, 0, &res);

	if (rc != OB_OK)
		return rc;
	*held = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return OB_OK;
}

int outbox_listen(struct outbox *ob)
{
	PGresult *res;
	int rc = call(ob, "LISTEN outbox_event", 0, NULL, 0, &res);

	if (rc == OB_OK)
		PQclear(res);
	return rc;
}

/* Take what arrived on the socket; true when a notification is among it. */
static int drain_notifies(struct outbox *ob, bool *notified)
{
	PGnotify *n;

	if (!PQconsumeInput(ob->conn)) {
		classify(ob, NULL, "waiting for notifications");
		return OB_TRANSIENT;
	}
	while ((n = PQnotifies(ob->conn)) != NULL) {
		*notified = true;
		PQfreemem(n);
	}
	return OB_OK;
}

int outbox_wait(struct outbox *ob, const struct waiter *w, int timeout_ms, bool *notified)
{
	int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);

	*notified = false;
	for (;;) {
		struct pollfd pfd;
		int ms, rc;

		/* The tick may renew the lease on this connection: a query reads
		 * notifications that arrive meanwhile into libpq's queue, hence
		 * the drain before every poll. */
		if (!wait_tick(w)) {
			snprintf(ob->errstr, sizeof(ob->errstr),
				 "waiting for notifications: stopped");
			return OB_STOPPED;
		}
		pfd.fd = PQsocket(ob->conn);
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (pfd.fd < 0) {
			snprintf(ob->errstr, sizeof(ob->errstr), "connection to PostgreSQL lost");
			return OB_TRANSIENT;
		}
		rc = drain_notifies(ob, notified);
		if (rc != OB_OK || *notified)
			return rc;
		ms = wait_slice(w, deadline);
		if (ms <= 0)
			return OB_OK;
		if (poll(&pfd, 1, ms) < 0 && errno != EINTR) {
			snprintf(ob->errstr, sizeof(ob->errstr), "poll: %s", strerror(errno));
			return OB_TRANSIENT;
		}
		if (pfd.revents) {
			rc = drain_notifies(ob, notified);
			if (rc != OB_OK || *notified)
				return rc;
		}
	}
}

/*
 * For `verify` only (read-only, never on the relay's hot path): the kept rows
 * in id order, with the same columns as fetch_page and whether each is
 * relayed at the stored position. A plain SELECT rather than a new outbox.*
 * function: an audit read must work against the installed schema without
 * a migration; it reads outbox.event and outbox.position_get(), as the
 * relay's role may (tests/e2e/test_verify.py runs it as such a login).
 */
#define RETAINED_ROWS_SQL                                                                          \
	"SELECT e.id, e.topic, e.key, e.payload, "                                                 \
	"CASE WHEN e.headers IS NOT NULL THEN "                                                    \
	"ARRAY(SELECT pg_catalog.jsonb_object_keys(e.headers)) END, "                              \
	"CASE WHEN e.headers IS NOT NULL THEN "                                                    \
	"ARRAY(SELECT h.value FROM pg_catalog.jsonb_each_text(e.headers) AS h) END, "              \
	"(pg_catalog.date_part('epoch', e.created_at) * 1000000)::bigint / 1000, "                 \
	"outbox.relayed(e.txid, e.id, s.pos_done::pg_snapshot, s.pos_next::pg_snapshot, "         \
	"s.pos_after_id) "                                                                         \
	"FROM outbox.event AS e, outbox.position_get($1) AS s "                                    \
	"WHERE e.id > $2::bigint "                                                                 \
	"AND ($4::bigint = 0 OR e.created_at >= pg_catalog.now() - $4::bigint * interval '1 ms') " \
	"ORDER BY e.id LIMIT $3::int"

int outbox_retained_topics(struct outbox *ob, char ***topics, int *n)
{
	PGresult *res;
	int rc = call(ob, "SELECT DISTINCT topic FROM outbox.event ORDER BY 1", 0, NULL, 0, &res);

	*topics = NULL;
	*n = 0;
	if (rc != OB_OK)
		return rc;
	*n = PQntuples(res);
	*topics = xcalloc((size_t)*n + 1, sizeof(char *));
	for (int i = 0; i < *n; i++)
		(*topics)[i] = xstrdup(PQgetvalue(res, i, 0));
	PQclear(res);
	return OB_OK;
}

int outbox_position_stamp(struct outbox *ob, int64_t *batch_seq, int64_t *advanced_ms)
{
	const char *p[1] = {ob->cfg->relay_name};
	PGresult *res;
	/* outbox.status, not the relay_state table: the relay's role may
	 * call the one and not read the other. */
	int rc = call(ob,
		      "SELECT batch_seq, "
		      "(pg_catalog.date_part('epoch', advanced_at) * 1000000)::bigint / 1000 "
		      "FROM outbox.status($1)",
		      1, p, 0, &res);

	if (rc == OB_UNKNOWN_RELAY) { /* no row yet: nothing stored */
		*batch_seq = -1;
		*advanced_ms = 0;
		return OB_OK;
	}
	if (rc != OB_OK)
		return rc;
	*batch_seq = PQntuples(res) ? text_i64(res, 0, 0) : -1;
	*advanced_ms = PQntuples(res) ? text_i64(res, 0, 1) : 0;
	PQclear(res);
	return OB_OK;
}

int outbox_retained_page(struct outbox *ob, int64_t after_id, int max_rows, int64_t since_ms,
			 struct batch *b, bool *relayed, int *nrows)
{
	char after[24], rows[16], since[24];
	const char *p[4] = {ob->cfg->relay_name, after, rows, since};
	PGresult *res;
	int rc;

	snprintf(after, sizeof(after), "%" PRId64, after_id);
	snprintf(rows, sizeof(rows), "%d", max_rows);
	snprintf(since, sizeof(since), "%" PRId64, since_ms);
	rc = call(ob, RETAINED_ROWS_SQL, 4, p, 1, &res);
	if (rc != OB_OK)
		return rc;
	*nrows = PQntuples(res);
	for (int i = 0; i < *nrows; i++)
		relayed[i] = !PQgetisnull(res, i, 7) && PQgetvalue(res, i, 7)[0] == 1;
	return take_rows(ob, res, -1, b); /* b takes res, also when empty */
}
