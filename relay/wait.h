/* wait.h: the one way the relay waits. Every blocking step (a query, a
 * metadata call, a commit, a checkpoint read, a back-off, an idle poll)
 * blocks in slices no longer than the waiter allows, and calls the waiter's
 * tick between slices: the tick beats the heartbeat, renews the lease when it
 * is due and says whether to go on (no stop requested, lease still ours). */
#ifndef OUTBOX_WAIT_H
#define OUTBOX_WAIT_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"

struct waiter {
	/* Called between slices (and by wait_tick). Returns true to go on
	 * waiting, false to give up: a stop was requested or the lease is
	 * lost (the owner of the waiter knows which). May block briefly (a
	 * lease renewal). NULL: always go on. */
	bool (*tick)(void *arg);
	void *arg;
	/* The longest single blocking call, in ms (> 0). */
	int slice_ms;
};

/* How long the next blocking call may take: the smaller of the time left
 * before deadline_ms (monotonic, now_ms()) and the waiter's slice; 0 when
 * the deadline has passed. A NULL waiter has no slice limit. */
int wait_slice(const struct waiter *w, int64_t deadline_ms);

/* Call the waiter's tick: true to go on, false to give up. NULL: true. */
bool wait_tick(const struct waiter *w);

/* Sleep until deadline_ms, a signal, or the tick says stop; ticks between
 * slices. Returns true when the deadline was reached, false when the tick
 * said stop. A signal cuts the current slice short (the tick then decides). */
bool wait_until(const struct waiter *w, int64_t deadline_ms);

/* wait_until(w, now_ms() + ms). */
bool wait_ms(const struct waiter *w, int ms);

#endif
