/* outbox_pg_check.c: outbox.c against a real PostgreSQL, where the relay
 * loop cannot show a defect directly. Run by tests/e2e/test_outbox_pg.py:
 *
 *     outbox_pg_check fd CONNINFO       outbox_wait() on a socket above
 *                                       FD_SETSIZE (1024): select() with
 *                                       FD_SET cannot (issue 12, item 8)
 *     outbox_pg_check reserve CONNINFO  outbox_reserve_topics(): what it
 *                                       registers refuses outbox rows
 *
 * Exit 0 when every check passes, 1 when one fails, 2 on a setup error. */
#include <fcntl.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "config.h"
#include "outbox.h"
#include "wait.h"

#define LOW_FDS 1100

static int failures;

static void check(int ok, const char *what)
{
	printf("%s: %s\n", ok ? "ok" : "FAILED", what);
	if (!ok)
		failures++;
}

static struct config *load(const char *conninfo)
{
	char text[2048], err[1024];
	struct config *cfg;

	snprintf(text, sizeof(text),
		 "relay = { name = \"pgcheck\"; };\nkafka = { bootstrap_servers = \"k:9092\"; };\n"
		 "postgres = { conninfo = \"%s\"; };\n",
		 conninfo);
	cfg = config_load_string(text, "pgcheck.conf", err, sizeof(err));
	if (!cfg)
		fprintf(stderr, "%s\n", err);
	return cfg;
}

/* The SQLSTATE of a statement on another connection ("" when it worked). */
static void sqlstate_of(PGconn *conn, const char *sql, char *out, size_t len)
{
	PGresult *res = PQexec(conn, sql);
	const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	snprintf(out, len, "%s", PQresultStatus(res) == PGRES_COMMAND_OK ? "" : st ? st : "?");
	PQclear(res);
}

static int check_reserve(const char *conninfo)
{
	const char *topics[] = {"pgcheck.checkpoints", "pgcheck.dead-letters"};
	struct config *cfg = load(conninfo);
	struct outbox *ob;
	struct lease lease;
	char err[1024], state[16];
	PGconn *writer;

	if (!cfg)
		return 2;
	ob = outbox_connect(cfg, NULL, err, sizeof(err));
	if (!ob) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	check(outbox_lease_acquire(ob, "me", &lease) == OB_OK && lease.acquired, "lease taken");
	check(outbox_reserve_topics(ob, lease.generation, topics, 2) == OB_OK,
	      "outbox_reserve_topics registers two topics");
	check(outbox_reserve_topics(ob, lease.generation + 1, topics, 1) == OB_FENCED,
	      "... and is fenced (OB_FENCED) with another generation");
	writer = PQconnectdb(conninfo);
	sqlstate_of(writer, "INSERT INTO outbox.event (topic) VALUES ('pgcheck.checkpoints')", state,
		    sizeof(state));
	check(strcmp(state, "OR006") == 0, "a row for the checkpoint topic is refused (OR006)");
	sqlstate_of(writer, "INSERT INTO outbox.event (topic) VALUES ('pgcheck.dead-letters')", state,
		    sizeof(state));
	check(strcmp(state, "OR006") == 0, "a row for the dead-letter topic is refused (OR006)");
	sqlstate_of(writer, "INSERT INTO outbox.event (topic) VALUES ('pgcheck.orders')", state,
		    sizeof(state));
	check(strcmp(state, "") == 0, "a row for another topic is accepted");
	PQfinish(writer);
	outbox_free(ob);
	config_free(cfg);
	return failures ? 1 : 0;
}

static int check_fd(const char *conninfo)
{
	char err[1024];
	struct rlimit rl;
	struct config *cfg;
	struct outbox *ob;
	PGconn *other;
	bool notified;
	int64_t t0;
	int fd, st;
	/* Take every descriptor below LOW_FDS, so the connections get higher ones. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < LOW_FDS + 64) {
		rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	do {
		fd = open("/dev/null", O_RDONLY);
	} while (fd >= 0 && fd < LOW_FDS);
	if (fd < 0) {
		perror("open /dev/null");
		return 2;
	}

	cfg = load(conninfo);
	if (!cfg)
		return 2;
	ob = outbox_connect(cfg, NULL, err, sizeof(err));
	if (!ob) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	check(outbox_listen(ob) == OB_OK, "LISTEN on a connection above descriptor 1024");

	t0 = now_ms();
	st = outbox_wait(ob, NULL, 300, &notified);
	check(st == OB_OK && !notified, "an idle wait returns OB_OK without a notification");
	check(now_ms() - t0 >= 280, "... after its timeout (300 ms), not at once");

	other = PQconnectdb(conninfo);
	check(PQsocket(other) > 1024 && PQstatus(other) == CONNECTION_OK,
	      "a second connection, also above descriptor 1024");
	PQclear(PQexec(other, "NOTIFY outbox_event"));
	t0 = now_ms();
	st = outbox_wait(ob, NULL, 10000, &notified);
	check(st == OB_OK && notified, "a NOTIFY wakes the wait");
	check(now_ms() - t0 < 5000, "... well before its timeout (10 s)");
	PQfinish(other);

	outbox_free(ob);
	config_free(cfg);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "fd") == 0)
		return check_fd(argv[2]);
	if (argc == 3 && strcmp(argv[1], "reserve") == 0)
		return check_reserve(argv[2]);
	fprintf(stderr, "usage: %s fd|reserve CONNINFO\n", argv[0]);
	return 2;
}
