/* crash.h: test-only crash points. A build with OUTBOX_CRASH_POINTS reads
 * OUTBOX_RELAY_CRASH_AT=NAME[:N] and SIGKILLs itself the N-th time (default
 * the first) it passes the point NAME. Names: after-fetch, after-produce,
 * during-commit, after-commit, after-advance. */
#ifndef OUTBOX_CRASH_H
#define OUTBOX_CRASH_H

#include <stdbool.h>

#ifdef OUTBOX_CRASH_POINTS
/* Read the environment once at start-up. */
void crash_setup(void);
void crash_point(const char *name);
/* True when the point NAME is the one armed and its next pass will kill. */
bool crash_point_armed(const char *name);
#else
static inline void crash_setup(void)
{
}
static inline void crash_point(const char *name)
{
	(void)name;
}
#endif

#endif
