/* http.h: the health and metrics endpoint (libmicrohttpd, its own thread) */
#ifndef OUTBOX_HTTP_H
#define OUTBOX_HTTP_H

#include "common.h"
#include "config.h"

struct http;

/* Listen on cfg->http_listen ("" disables: returns 0 with *out = NULL).
 * Serves /healthz, /readyz, /metrics and /status from metrics_snapshot()
 * on libmicrohttpd's own thread, so serving never blocks the relay loop.
 * Copies what it needs from cfg. Returns 0, or -1 with errbuf. */
int http_start(const struct config *cfg, struct http **out, char *errbuf, size_t errlen) MUSTCHECK;

/* Stop serving and free; NULL is a no-op. */
void http_stop(struct http *h);

#endif
