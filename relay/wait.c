/* wait.c: sleeping and slicing for the one wait primitive (wait.h). The
 * sleep is poll() with no descriptors: a handled signal delivered to the main
 * thread (the only one that does not block them) cuts it short. */
#include <poll.h>

#include "wait.h"

int wait_slice(const struct waiter *w, int64_t deadline_ms)
{
	int64_t left = deadline_ms - now_ms();

	if (left <= 0)
		return 0;
	if (w && w->slice_ms > 0 && left > w->slice_ms)
		return w->slice_ms;
	return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

bool wait_tick(const struct waiter *w)
{
	return !w || !w->tick || w->tick(w->arg);
}

bool wait_until(const struct waiter *w, int64_t deadline_ms)
{
	for (;;) {
		int ms;

		if (!wait_tick(w))
			return false;
		ms = wait_slice(w, deadline_ms);
		if (ms <= 0)
			return true;
		(void)poll(NULL, 0, ms);
	}
}

bool wait_ms(const struct waiter *w, int ms)
{
	return wait_until(w, now_ms() + ms);
}
