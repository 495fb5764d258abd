/* test_checkpoint.c: position and checkpoint encode/decode, snapshot text */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "checkpoint.h"

static void round_trip(const struct position *in)
{
	struct position out;
	char err[256];
	char *s = checkpoint_encode(in);

	assert_int_equal(checkpoint_decode(s, strlen(s), &out, err, sizeof(err)), 0);
	assert_true(position_equal(in, &out));
	assert_true(in->generation == out.generation);
	free(s);
	position_clear(&out);
}

static void test_round_trips(void **state)
{
	struct position p;
	char big[8192];
	size_t n;

	(void)state;
	position_init(&p);
	round_trip(&p);

	p.batch_seq = 1;
	p.generation = 7;
	p.next = strdup("100:105:100,102,104");
	p.after_id = 42;
	round_trip(&p);

	p.batch_seq = INT64_MAX;
	p.generation = INT64_MAX;
	p.after_id = INT64_MAX;
	round_trip(&p);

	/* a snapshot with many in-progress transactions */
	n = (size_t)snprintf(big, sizeof(big), "1000:2000:");
	for (int x = 1000; x < 1600; x++)
		n += (size_t)snprintf(big + n, sizeof(big) - n, x == 1000 ? "%d" : ",%d", x);
	free(p.done);
	p.done = strdup(big);
	free(p.next);
	p.next = NULL;
	p.after_id = 0;
	round_trip(&p);
	position_clear(&p);
}

static void test_encoding_is_stable(void **state)
{
	struct position p = {.batch_seq = 3, .generation = 2, .after_id = 9};
	char *s;

	(void)state;
	p.done = strdup("10:12:11");
	p.next = strdup("12:14:");
	s = checkpoint_encode(&p);
	/* The wire form is a contract with every relay version that reads it. */
	assert_string_equal(s, "v1 seq=3 gen=2 after=9 done=10:12:11 next=12:14:");
	free(s);
	position_clear(&p);
}

static const char *const garbage[] = {
	"",
	"v1",
	"v2 seq=1 gen=1 after=0 done=1:1: next=-",
	"v1 seq=1 gen=1 after=0 done=1:1:",
	"v1 seq=1 gen=1 after=0 done=1:1: next=- extra=1",
	"v1 seq=1 gen=1 after=0 done=1:1: next=-  ",
	"v1 seq=-1 gen=1 after=0 done=1:1: next=-",
	"v1 seq=x gen=1 after=0 done=1:1: next=-",
	"v1 seq=99999999999999999999 gen=1 after=0 done=1:1: next=-",
	"v1 seq=1 gen=1 after=0 done=5:4: next=-",
	"v1 seq=1 gen=1 after=0 done=0:4: next=-",
	"v1 seq=1 gen=1 after=0 done=4:8:9 next=-",
	"v1 seq=1 gen=1 after=0 done=4:8:6,5 next=-",
	"v1 seq=1 gen=1 after=0 done=4:8:5, next=-",
	"v1 seq=1 gen=1 after=0 done=abc next=-",
	"v1 seq=1 gen=1 after=3 done=1:1: next=-",
	"v1 seq=1 gen=1 after=0 done=1:1: next=2:1:",
	"v1 gen=1 seq=1 after=0 done=1:1: next=-",
	"v1 seq= gen=1 after=0 done=1:1: next=-",
};

static void test_garbage(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
		struct position p;
		char err[256] = "";

		if (checkpoint_decode(garbage[i], strlen(garbage[i]), &p, err, sizeof(err)) != -1)
			fail_msg("garbage %zu accepted: \"%s\"", i, garbage[i]);
		assert_null(p.done);
		assert_null(p.next);
		assert_true(strlen(err) > 0);
	}
	/* an embedded NUL must not let a truncated string pass */
	{
		struct position p;
		char err[256];
		const char v[] = "v1 seq=1 gen=1 after=0 done=1:1: next=-\0junk";
		assert_int_equal(checkpoint_decode(v, sizeof(v) - 1, &p, err, sizeof(err)), -1);
		assert_int_equal(checkpoint_decode(NULL, 0, &p, err, sizeof(err)), -1);
	}
}

static void test_snapshot_valid(void **state)
{
	(void)state;
	assert_true(snapshot_valid("1:1:"));
	assert_true(snapshot_valid("748:752:748,750"));
	assert_false(snapshot_valid(NULL));
	assert_false(snapshot_valid("748:752"));
	assert_false(snapshot_valid("748:752:752"));
	assert_false(snapshot_valid("748:752:750,749"));
	assert_false(snapshot_valid("748:752:750,750"));
	assert_false(snapshot_valid(" 748:752:"));
}

static void test_window_moves(void **state)
{
	struct position a, b;

	(void)state;
	position_init(&a);
	position_init(&b);
	a.next = strdup("5:9:6");
	a.after_id = 17;
	assert_false(position_equal(&a, &b));
	position_copy(&b, &a);
	assert_true(position_equal(&a, &b));
	position_finish_window(&a);
	assert_string_equal(a.done, "5:9:6");
	assert_null(a.next);
	assert_int_equal(a.after_id, 0);
	assert_string_equal(b.next, "5:9:6"); /* the copy is independent */
	position_clear(&a);
	position_clear(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trips),   cmocka_unit_test(test_encoding_is_stable),
		cmocka_unit_test(test_garbage),       cmocka_unit_test(test_snapshot_valid),
		cmocka_unit_test(test_window_moves),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
