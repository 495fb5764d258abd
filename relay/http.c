/* http.c: /healthz, /readyz, /metrics and /status on libmicrohttpd. The
 * handlers only copy the shared metrics under their mutex; they never call
 * PostgreSQL or Kafka. */
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "http.h"
#include "log.h"
#include "metrics.h"

struct http {
	struct MHD_Daemon *daemon;
	int64_t max_lag_rows;
	int64_t max_lag_seconds;
	int64_t stall_ms;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, const char *type,
			     char *body, size_t len)
{
	struct MHD_Response *res =
		MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result r;

	MHD_add_response_header(res, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(res, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(res, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	r = MHD_queue_response(conn, code, res);
	MHD_destroy_response(res);
	return r;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned code, const char *text)
{
	return reply(conn, code, "text/plain; charset=utf-8", xstrdup(text), strlen(text));
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version, const char *upload_data,
			      size_t *upload_size, void **req_cls)
{
	struct http *h = cls;
	struct metrics m;
	char reason[256];
	bool ready;
	char *body;
	size_t len;

	(void)version;
	(void)upload_data;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		/* answer at once; the body, if any, is not read */
		*upload_size = 0;
		return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
	}
	if (*req_cls == NULL) {
		/* first call: headers only; answer on the next one */
		*req_cls = (void *)1;
		return MHD_YES;
	}
	metrics_snapshot(&m);
	ready = metrics_ready(&m, now_ms(), h->max_lag_rows, h->max_lag_seconds, h->stall_ms, reason,
			      sizeof(reason));
	if (strcmp(url, "/healthz") == 0) {
		/* alive: the loop shows signs of life; says nothing of the pipeline */
		bool alive = !m.heartbeat_ms || now_ms() - m.heartbeat_ms <= h->stall_ms;
		return reply_text(conn, alive ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
				  alive ? "ok\n" : "relay loop stalled\n");
	}
	if (strcmp(url, "/readyz") == 0) {
		body = xmalloc(512);
		len = (size_t)snprintf(body, 512, "{\"ready\":%s,\"role\":\"%s\",\"reason\":\"%s\"}\n",
				       ready ? "true" : "false", relay_role_str(m.role), reason);
		return reply(conn, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
			     "application/json", body, len);
	}
	if (strcmp(url, "/metrics") == 0) {
		body = metrics_render(&m, &len);
		return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len);
	}
	if (strcmp(url, "/status") == 0) {
		body = metrics_status_json(&m, ready, reason, &len);
		return reply(conn, MHD_HTTP_OK, "application/json", body, len);
	}
	return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	log_write(LOG_DEBUG, "http", "%s", msg);
}

/* "host:port" or "[v6]:port" into a socket address. */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, char *errbuf,
			size_t errlen)
{
	char host[256];
	const char *colon = strrchr(listen, ':');
	struct addrinfo hints = {0}, *ai;
	int rc;

	if (!colon || colon == listen || !colon[1]) {
		snprintf(errbuf, errlen, "http.listen: \"%s\" is not host:port", listen);
		return -1;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc != 0) {
		snprintf(errbuf, errlen, "http.listen: \"%s\": %s", listen, gai_strerror(rc));
		return -1;
	}
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	return 0;
}

int http_start(const struct config *cfg, struct http **out, char *errbuf, size_t errlen)
{
	struct sockaddr_storage ss = {0};
	struct http *h;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_POLL;

	*out = NULL;
	if (!cfg->http_listen[0])
		return 0;
	if (parse_listen(cfg->http_listen, &ss, errbuf, errlen) < 0)
		return -1;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	h = xcalloc(1, sizeof(*h));
	h->max_lag_rows = cfg->http_ready_max_lag_rows;
	h->max_lag_seconds = cfg->http_ready_max_lag_seconds;
	/* the longest step that shows no sign of life: a commit retried up to
	 * the transaction timeout, then an abort */
	h->stall_ms = (int64_t)cfg->transaction_timeout_ms + 2LL * cfg->commit_timeout_ms + 10000;
	h->daemon = MHD_start_daemon(
		flags, 0, NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->http_max_connections,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->http_max_connections,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->http_timeout_s,
		/* bounds the request line and headers: a longer one gets 414/431 */
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384, MHD_OPTION_EXTERNAL_LOGGER,
		mhd_log, NULL, MHD_OPTION_END);
	if (!h->daemon) {
		snprintf(errbuf, errlen, "http.listen: could not listen on \"%s\" (address in use?)",
			 cfg->http_listen);
		free(h);
		return -1;
	}
	log_info("serving /healthz, /readyz, /metrics and /status on http://%s", cfg->http_listen);
	*out = h;
	return 0;
}

void http_stop(struct http *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->daemon);
	free(h);
}
