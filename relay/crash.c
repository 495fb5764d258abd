/* crash.c: SIGKILL at a named point, for the fault tests (test builds only) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crash.h"
#include "log.h"

#ifdef OUTBOX_CRASH_POINTS
static char armed[64];
static long remaining;
static bool stop_instead; /* OUTBOX_RELAY_CRASH_ACTION=stop */

void crash_setup(void)
{
	const char *v = getenv("OUTBOX_RELAY_CRASH_AT");
	const char *action = getenv("OUTBOX_RELAY_CRASH_ACTION");
	const char *colon;

	if (!v || !*v)
		return;
	if (action && *action && strcmp(action, "kill") != 0 && strcmp(action, "stop") != 0) {
		log_error("OUTBOX_RELAY_CRASH_ACTION: \"%s\" is neither kill nor stop", action);
		exit(1);
	}
	stop_instead = action && strcmp(action, "stop") == 0;
	colon = strchr(v, ':');
	snprintf(armed, sizeof(armed), "%.*s", colon ? (int)(colon - v) : (int)strlen(v), v);
	remaining = colon ? atol(colon + 1) : 1;
	if (remaining < 1)
		remaining = 1;
	log_warning("crash point \"%s\" armed (pass %ld, %s)", armed, remaining,
		    stop_instead ? "stop" : "kill");
}

bool crash_point_due(const char *name)
{
	return armed[0] && strcmp(armed, name) == 0 && --remaining == 0;
}

void crash_now(const char *name)
{
	if (stop_instead) {
		/* Freeze here, as a zombie does; on SIGCONT carry on as if
		 * nothing happened. */
		log_warning("crash point \"%s\" reached: stopping myself", name);
		kill(getpid(), SIGSTOP);
		log_warning("crash point \"%s\": continued", name);
		return;
	}
	log_warning("crash point \"%s\" reached: killing myself", name);
	kill(getpid(), SIGKILL);
}

void crash_point(const char *name)
{
	if (crash_point_due(name))
		crash_now(name);
}
#endif
