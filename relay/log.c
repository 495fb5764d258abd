/* log.c: the relay's only logger; librdkafka's and libpq's messages come
 * through here too, so an operator reads one stream in one format. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static _Atomic int cur_level = LOG_INFO;
static _Atomic int cur_format = LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warning", "error", "fatal"};

/* Written at start-up only, before librdkafka's and libmicrohttpd's threads
 * exist; read by every thread that logs. */
static char *secrets[8];
static size_t nsecrets;

void log_add_secret(const char *secret)
{
	if (!secret || strlen(secret) < 4 || nsecrets == ARRAY_LEN(secrets))
		return;
	for (size_t i = 0; i < nsecrets; i++)
		if (strcmp(secrets[i], secret) == 0)
			return;
	secrets[nsecrets++] = xstrdup(secret);
}

/* Replace every registered secret in msg (in place, within cap). A message
 * that fills msg was cut: where a mask no longer fits the message ends
 * before the secret, and a cut through a secret (the end of msg is the start
 * of one) ends it before that start. */
static void hide_secrets(char *msg, size_t cap)
{
	static const char mask[] = "(hidden)";
	const size_t mlen = sizeof(mask) - 1;

	for (size_t i = 0; i < nsecrets; i++) {
		size_t len = strlen(secrets[i]);
		char *from = msg, *p;

		/* after each replacement the search goes on behind the mask */
		while ((p = strstr(from, secrets[i]))) {
			size_t tail = strlen(p + len) + 1;

			if ((size_t)(p - msg) + mlen >= cap) {
				*p = '\0';
				break;
			}
			if ((size_t)(p - msg) + mlen + tail > cap)
				tail = cap - (size_t)(p - msg) - mlen;
			memmove(p + mlen, p + len, tail);
			memcpy(p, mask, mlen);
			msg[cap - 1] = '\0';
			from = p + mlen;
		}
	}
	for (size_t i = 0, n = strlen(msg); i < nsecrets && n == cap - 1; i++) {
		for (size_t k = strlen(secrets[i]) - 1; k > 0; k--) {
			if (k <= n && memcmp(msg + n - k, secrets[i], k) == 0) {
				msg[n - k] = '\0';
				return;
			}
		}
	}
}

void log_setup(enum log_level level, enum log_format format)
{
	atomic_store(&cur_level, level);
	atomic_store(&cur_format, format);
}

bool log_level_parse(const char *s, enum log_level *level)
{
	for (size_t i = 0; i < ARRAY_LEN(level_names) - 1; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*level = (enum log_level)i;
			return true;
		}
	}
	return false;
}

const char *log_level_str(enum log_level level)
{
	return level_names[level];
}

bool log_enabled(enum log_level level)
{
	return (int)level >= atomic_load(&cur_level);
}

/* Append s to buf as the inside of a JSON string. */
static size_t json_escape(char *buf, size_t pos, size_t cap, const char *s)
{
	for (; *s && pos + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			buf[pos++] = '\\';
			buf[pos++] = (char)c;
		} else if (c == '\n') {
			buf[pos++] = '\\';
			buf[pos++] = 'n';
		} else if (c < 0x20) {
			pos += (size_t)snprintf(buf + pos, cap - pos, "\\u%04x", c);
		} else {
			buf[pos++] = (char)c;
		}
	}
	return pos;
}

void log_write(enum log_level level, const char *src, const char *fmt, ...)
{
	char msg[4096], line[8192 + 64], ts[40];
	struct timeval tv;
	struct tm tm;
	va_list ap;
	size_t n;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	hide_secrets(msg, sizeof(msg));
	/* Messages from libraries end with a newline of their own. */
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(tv.tv_usec / 1000));

	if (atomic_load(&cur_format) == LOG_JSON) {
		n = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"src\":\"", ts,
				     level_names[level]);
		n = json_escape(line, n, sizeof(line), src);
		n += (size_t)snprintf(line + n, sizeof(line) - n, "\",\"msg\":\"");
		n = json_escape(line, n, sizeof(line), msg);
		n += (size_t)snprintf(line + n, sizeof(line) - n, "\"}\n");
	} else {
		n = (size_t)snprintf(line, sizeof(line), "%s %s %s: %s\n", ts, level_names[level], src,
				     msg);
	}
	if (n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	/* One write per line; a failed write to stderr has nowhere to be reported. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}

int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *check_alloc(void *p)
{
	if (!p) {
		static const char oom[] = "fatal relay: out of memory\n";
		if (write(STDERR_FILENO, oom, sizeof(oom) - 1) < 0)
			abort();
		abort();
	}
	return p;
}

char *xstrdup(const char *s)
{
	return s ? check_alloc(strdup(s)) : NULL;
}

void *xmalloc(size_t n)
{
	return check_alloc(malloc(n ? n : 1));
}

void *xcalloc(size_t n, size_t size)
{
	return check_alloc(calloc(n ? n : 1, size ? size : 1));
}

void *xrealloc(void *p, size_t n)
{
	return check_alloc(realloc(p, n ? n : 1));
}
