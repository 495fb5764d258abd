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

void crash_setup(void)
{
	const char *v = getenv("OUTBOX_RELAY_CRASH_AT");
	const char *colon;

	if (!v || !*v)
		return;
	colon = strchr(v, ':');
	snprintf(armed, sizeof(armed), "%.*s", colon ? (int)(colon - v) : (int)strlen(v), v);
	remaining = colon ? atol(colon + 1) : 1;
	if (remaining < 1)
		remaining = 1;
	log_warning("crash point \"%s\" armed (pass %ld)", armed, remaining);
}

bool crash_point_due(const char *name)
{
	return armed[0] && strcmp(armed, name) == 0 && --remaining == 0;
}

void crash_now(const char *name)
{
	log_warning("crash point \"%s\" reached: killing myself", name);
	kill(getpid(), SIGKILL);
}

void crash_point(const char *name)
{
	if (crash_point_due(name))
		crash_now(name);
}
#endif
