/* relay.h: the relay loop: lease, producer set-up and reconciliation, then
 * page -> one Kafka transaction -> fenced database advance */
#ifndef OUTBOX_RELAY_H
#define OUTBOX_RELAY_H

#include <signal.h>

#include "config.h"

/* Process exit codes (documented in README.md). */
enum relay_exit {
	EXIT_OK = 0,        /* stopped by SIGTERM/SIGINT after a clean drain */
	EXIT_STARTUP = 1,   /* configuration, schema or other start-up error */
	EXIT_USAGE = 2,     /* bad command line */
	EXIT_FENCED = 3,    /* another relay took over (lease or transactional.id) */
	/* 4 is not used: a poison row halts publishing but not the process */
	EXIT_POSITION = 5,  /* positions disagree in a way an operator must decide */
};

/* Set from signal handlers; the loop checks it between steps. */
extern volatile sig_atomic_t relay_stop_requested;
extern volatile sig_atomic_t relay_reload_requested;

/* Run until stopped or fenced; returns the process exit code. cfg is
 * borrowed; SIGHUP reloads its reloadable options in place. Call from the
 * main thread only. */
int relay_run(struct config *cfg);

#endif
