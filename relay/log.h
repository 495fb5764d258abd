/* log.h: one line per event, as text or JSON, to stderr */
#ifndef OUTBOX_LOG_H
#define OUTBOX_LOG_H

#include <stdbool.h>

#include "common.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR, LOG_FATAL };
enum log_format { LOG_TEXT, LOG_JSON };

/* Set the threshold and the format; may be called again on reload. */
void log_setup(enum log_level level, enum log_format format);

/* Parse "debug", "info", "warning", "error"; false when unknown. */
bool log_level_parse(const char *s, enum log_level *level);
const char *log_level_str(enum log_level level);

/* Write one line from module `src` (e.g. "relay", "librdkafka"). Any thread
 * may call it: the line is formatted into one buffer and written with one
 * write(2), so lines from threads never interleave. */
void log_write(enum log_level level, const char *src, const char *fmt, ...) PRINTF(3, 4);

bool log_enabled(enum log_level level);

/* Register a secret (a password from kafka.properties): from then on every
 * occurrence of it in any log line is replaced by "(hidden)", whoever wrote
 * the line (librdkafka's messages included). Call before any other thread
 * logs; secrets shorter than 4 characters are not registered (hiding every
 * "ab" of a message would hide more than it protects). */
void log_add_secret(const char *secret);

#define log_debug(...) log_write(LOG_DEBUG, "relay", __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, "relay", __VA_ARGS__)
#define log_warning(...) log_write(LOG_WARNING, "relay", __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, "relay", __VA_ARGS__)

#endif
