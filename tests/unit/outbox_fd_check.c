/* outbox_fd_check.c: outbox_wait() on a connection whose socket number is
 * above FD_SETSIZE (1024), against a real PostgreSQL. A long-lived relay gets
 * there with librdkafka's sockets; select() with FD_SET cannot (issue 12,
 * item 8). Run by tests/e2e/test_outbox_fd.py:
 *
 *     outbox_fd_check CONNINFO
 *
 * Exit 0 when the wait honours its timeout and wakes on a NOTIFY. */
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

int main(int argc, char **argv)
{
	char text[2048], err[1024];
	struct rlimit rl;
	struct config *cfg;
	struct outbox *ob;
	PGconn *other;
	bool notified;
	int64_t t0;
	int fd, st;

	if (argc != 2) {
		fprintf(stderr, "usage: %s CONNINFO\n", argv[0]);
		return 2;
	}
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

	snprintf(text, sizeof(text),
		 "relay = { name = \"fd\"; };\nkafka = { bootstrap_servers = \"k:9092\"; };\n"
		 "postgres = { conninfo = \"%s\"; };\n",
		 argv[1]);
	cfg = config_load_string(text, "fd.conf", err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	ob = outbox_connect(cfg, err, sizeof(err));
	if (!ob) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	check(outbox_listen(ob) == OB_OK, "LISTEN on a connection above descriptor 1024");

	t0 = now_ms();
	st = outbox_wait(ob, NULL, 300, &notified);
	check(st == OB_OK && !notified, "an idle wait returns OB_OK without a notification");
	check(now_ms() - t0 >= 280, "... after its timeout (300 ms), not at once");

	other = PQconnectdb(argv[1]);
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
