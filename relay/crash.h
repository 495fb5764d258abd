/* crash.h: test-only crash points. A build with OUTBOX_CRASH_POINTS reads
 * OUTBOX_RELAY_CRASH_AT=NAME[:N] and SIGKILLs itself the N-th time (default
 * the first) it passes the point NAME. Names: after-fetch, after-produce
 * (after flushing the records to the broker), during-commit (EndTxn sent,
 * answer not awaited), after-commit (before the database advance),
 * after-advance. With OUTBOX_RELAY_CRASH_ACTION=stop it SIGSTOPs itself
 * there instead (a zombie frozen at a known point) and, once continued,
 * goes on as if nothing happened. */
#ifndef OUTBOX_CRASH_H
#define OUTBOX_CRASH_H

#include <stdbool.h>

#ifdef OUTBOX_CRASH_POINTS
/* Read the environment once at start-up. */
void crash_setup(void);
void crash_point(const char *name);
/* Count a pass of NAME like crash_point, but instead of dying return true
 * on the fatal pass: the caller starts what it wants interrupted, then
 * calls crash_now. */
bool crash_point_due(const char *name);
void crash_now(const char *name);
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
