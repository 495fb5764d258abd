/* http.h: the health and metrics endpoint (libmicrohttpd, its own thread) */
#ifndef OUTBOX_HTTP_H
#define OUTBOX_HTTP_H

#include "common.h"
#include "config.h"

struct http;

/* Listen on cfg->http_listen ("" disables: returns 0 with *out = NULL).
 * Serves /healthz, /readyz, /metrics and /status from metrics_snapshot()
 * on libmicrohttpd's own thread, so serving never blocks the relay loop.
 * A second thread closes any connection whose request is not over within
 * cfg->http_timeout_s of its first byte (or of the end of the request
 * before it on a kept-alive connection); it blocks every signal (the
 * caller blocks the handled ones around this call for libmicrohttpd's).
 * Copies what it needs from cfg. Call from the main thread. Returns 0, or
 * -1 with errbuf. */
int http_start(const struct config *cfg, struct http **out, char *errbuf, size_t errlen) MUSTCHECK;

/* Stop both threads, close the remaining connections and free; NULL is a
 * no-op. Call from the thread that called http_start. */
void http_stop(struct http *h);

#endif
