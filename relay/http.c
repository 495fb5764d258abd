/* http.c: /healthz, /readyz, /metrics and /status on libmicrohttpd. The
 * handlers only copy the shared metrics under their mutex; they never call
 * PostgreSQL or Kafka. A watchdog thread closes every connection whose
 * request has taken longer than http.timeout_s in all. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "log.h"
#include "metrics.h"

/* One open connection. libmicrohttpd's own timeout counts only silence
 * (any byte read restarts it), so a client that sends a byte a second would
 * keep its slot for ever; the watchdog counts from `since` instead. */
struct http_conn {
	struct http_conn *prev, *next;
	int fd;           /* our duplicate of the socket, or -1 */
	int64_t since_ms; /* connection opened, or its last request completed */
	bool cut;         /* shut down by the watchdog; libmicrohttpd closes it */
};

struct http {
	struct MHD_Daemon *daemon;
	int64_t max_lag_rows;
	int64_t max_lag_seconds;
	int64_t stall_ms;
	int64_t deadline_ms; /* http.timeout_s: the most one request may take */
	pthread_mutex_t mu;  /* guards conns */
	struct http_conn *conns;
	pthread_t watchdog;
	bool watchdog_started;
	int wake[2]; /* a byte on wake[1] stops the watchdog */
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
		body = metrics_render(&m, ready, &len);
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

/* libmicrohttpd's thread: a connection opened or closed. The socket is
 * duplicated so that the watchdog's shutdown() always reaches this
 * connection: the duplicate keeps the socket (and its number) ours until
 * the close below, whatever libmicrohttpd has done with its descriptor. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct http *h = cls;
	struct http_conn *c;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *info =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		c = xcalloc(1, sizeof(*c));
		c->fd = info ? fcntl(info->connect_fd, F_DUPFD_CLOEXEC, 0) : -1;
		if (c->fd < 0)
			log_write(LOG_WARNING, "http",
				  "could not watch an HTTP connection's deadline: %s",
				  info ? strerror(errno) : "no socket");
		c->since_ms = now_ms();
		pthread_mutex_lock(&h->mu);
		c->next = h->conns;
		if (h->conns)
			h->conns->prev = c;
		h->conns = c;
		pthread_mutex_unlock(&h->mu);
		*socket_context = c;
		return;
	}
	c = *socket_context;
	if (!c)
		return;
	pthread_mutex_lock(&h->mu);
	if (c->prev)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&h->mu);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
	*socket_context = NULL;
}

/* libmicrohttpd's thread: a request is done; the next one on a kept-alive
 * connection has a deadline of its own. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct http *h = cls;
	const union MHD_ConnectionInfo *info =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct http_conn *c = info ? info->socket_context : NULL;

	(void)req_cls;
	(void)toe;
	if (!c)
		return;
	pthread_mutex_lock(&h->mu);
	c->since_ms = now_ms();
	pthread_mutex_unlock(&h->mu);
}

/* The watchdog's thread: shut down each connection past its deadline (the
 * client sees the connection closed; libmicrohttpd sees end of file and
 * frees the slot), then sleep until the next deadline, at most a second. */
static void *watchdog_main(void *arg)
{
	struct http *h = arg;

	for (;;) {
		int64_t now = now_ms(), next = now + 1000;
		struct pollfd pfd = {.fd = h->wake[0], .events = POLLIN};
		int cut = 0;

		pthread_mutex_lock(&h->mu);
		for (struct http_conn *c = h->conns; c; c = c->next) {
			int64_t due = c->since_ms + h->deadline_ms;

			if (c->cut || c->fd < 0)
				continue;
			if (due <= now) {
				shutdown(c->fd, SHUT_RDWR);
				c->cut = true;
				cut++;
			} else if (due < next) {
				next = due;
			}
		}
		pthread_mutex_unlock(&h->mu);
		if (cut)
			log_write(LOG_DEBUG, "http",
				  "closed %d connection(s) whose request took longer than "
				  "http.timeout_s (%" PRId64 " s)",
				  cut, h->deadline_ms / 1000);
		if (poll(&pfd, 1, (int)(next - now)) > 0)
			return NULL; /* http_stop */
	}
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

/* The watchdog thread, with every signal blocked: signals are for the
 * relay's loop. */
static int watchdog_start(struct http *h, char *errbuf, size_t errlen)
{
	sigset_t all, old;
	int rc;

	if (pipe2(h->wake, O_CLOEXEC) < 0) {
		h->wake[0] = h->wake[1] = -1;
		snprintf(errbuf, errlen, "http: could not create a pipe: %s", strerror(errno));
		return -1;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&h->watchdog, NULL, watchdog_main, h);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		snprintf(errbuf, errlen, "http: could not start a thread: %s", strerror(rc));
		return -1;
	}
	h->watchdog_started = true;
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
	pthread_mutex_init(&h->mu, NULL);
	h->wake[0] = h->wake[1] = -1;
	h->deadline_ms = 1000LL * cfg->http_timeout_s;
	h->max_lag_rows = cfg->http_ready_max_lag_rows;
	h->max_lag_seconds = cfg->http_ready_max_lag_seconds;
	/* the longest step that shows no sign of life: a commit retried up to
	 * the transaction timeout, then an abort */
	h->stall_ms = (int64_t)cfg->transaction_timeout_ms + 2LL * cfg->commit_timeout_ms + 10000;
	h->daemon = MHD_start_daemon(
		flags, 0, NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->http_max_connections,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->http_max_connections,
		/* silence; the watchdog bounds the whole request */
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->http_timeout_s,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_NOTIFY_COMPLETED,
		on_completed, h,
		/* bounds the request line and headers: a longer one gets 414/431 */
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384, MHD_OPTION_EXTERNAL_LOGGER,
		mhd_log, NULL, MHD_OPTION_END);
	if (!h->daemon) {
		snprintf(errbuf, errlen, "http.listen: could not listen on \"%s\" (address in use?)",
			 cfg->http_listen);
		http_stop(h);
		return -1;
	}
	if (watchdog_start(h, errbuf, errlen) < 0) {
		http_stop(h);
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
	if (h->watchdog_started) {
		while (write(h->wake[1], "x", 1) < 0 && errno == EINTR)
			;
		pthread_join(h->watchdog, NULL);
	}
	/* closes the remaining connections through on_connection */
	if (h->daemon)
		MHD_stop_daemon(h->daemon);
	if (h->wake[0] >= 0) {
		close(h->wake[0]);
		close(h->wake[1]);
	}
	pthread_mutex_destroy(&h->mu);
	free(h);
}
