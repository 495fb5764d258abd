/* test_log.c: log_add_secret(): a registered secret never reaches the log,
 * wherever it stands in a line, in either format */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

#define SECRET "pw-1234"

/* Everything log_write() writes while fn runs, as a string (malloc'd). */
static char *captured(void (*fn)(void *), void *arg)
{
	FILE *tmp = tmpfile();
	int saved = dup(STDERR_FILENO);
	char *out;
	long len;

	assert_non_null(tmp);
	assert_true(saved >= 0);
	assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
	fn(arg);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	len = ftell(tmp);
	if (len < 0)
		len = lseek(fileno(tmp), 0, SEEK_END);
	assert_true(len > 0);
	out = calloc(1, (size_t)len + 1);
	assert_non_null(out);
	assert_int_equal(pread(fileno(tmp), out, (size_t)len, 0), len);
	fclose(tmp);
	return out;
}

/* No piece of the secret of 4 or more characters is in s. */
static void assert_no_secret_part(const char *s)
{
	const size_t n = strlen(SECRET);

	for (size_t from = 0; from + 4 <= n; from++)
		for (size_t len = 4; from + len <= n; len++) {
			char piece[sizeof(SECRET)];

			memcpy(piece, SECRET + from, len);
			piece[len] = '\0';
			if (strstr(s, piece) && (from == 0 || from + len == n))
				fail_msg("\"%s\" of the secret is in the log:\n%s", piece, s);
		}
}

static void log_plain(void *arg)
{
	(void)arg;
	log_write(LOG_ERROR, "librdkafka", "SASL authentication failed for password %s (%s)",
		  SECRET, SECRET);
}

static void test_every_occurrence(void **state)
{
	char *out;

	(void)state;
	out = captured(log_plain, NULL);
	assert_null(strstr(out, SECRET));
	assert_non_null(strstr(out, "password (hidden) ((hidden))"));
	free(out);
	log_setup(LOG_DEBUG, LOG_JSON);
	out = captured(log_plain, NULL);
	log_setup(LOG_DEBUG, LOG_TEXT);
	assert_null(strstr(out, SECRET));
	assert_non_null(strstr(out, "\"msg\":\"SASL authentication failed for password (hidden)"));
	free(out);
}

/* A message of `pad` characters, then the secret, then "!": the secret at
 * every place near the end of log_write's 4096-byte message buffer, where
 * its mask (longer than it) no longer fits or the message is cut inside it. */
static void log_padded(void *arg)
{
	int pad = *(int *)arg;
	char *fill = malloc((size_t)pad + 1);

	memset(fill, 'x', (size_t)pad);
	fill[pad] = '\0';
	log_write(LOG_ERROR, "relay", "%s%s!", fill, SECRET);
	free(fill);
}

static void test_at_the_end_of_a_long_line(void **state)
{
	(void)state;
	for (int pad = 4070; pad < 4100; pad++) {
		char *out = captured(log_padded, &pad);

		assert_no_secret_part(out);
		free(out);
	}
}

static void test_short_secrets_are_not_registered(void **state)
{
	(void)state;
	/* "ab" would hide every "ab" of every message */
	log_add_secret("ab");
	log_add_secret(NULL);
	{
		char *out = captured(log_plain, NULL);
		assert_null(strstr(out, SECRET));
		free(out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_occurrence),
		cmocka_unit_test(test_at_the_end_of_a_long_line),
		cmocka_unit_test(test_short_secrets_are_not_registered),
	};

	log_setup(LOG_DEBUG, LOG_TEXT);
	log_add_secret(SECRET);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
