/* sdnotify.h: systemd's readiness protocol (Type=notify), without libsystemd */
#ifndef OUTBOX_SDNOTIFY_H
#define OUTBOX_SDNOTIFY_H

/* Send `state` (e.g. "READY=1") to $NOTIFY_SOCKET; a no-op when the
 * variable is unset. Errors are logged, never fatal. Any thread. */
void sd_notify_state(const char *state);

#endif
