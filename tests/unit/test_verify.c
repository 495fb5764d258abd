/* test_verify.c: verify's pure parts: the checkpoint chain rules, the
 * content digest, durations, what the database lost */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "batch.h"
#include "verify.h"

/* One checkpoint of a chain case. */
struct ck {
	int64_t seq, gen;
	const char *done, *next;
	int64_t after;
};

static const struct chain_case {
	const char *what;
	struct ck cks[4];
	int n;
	enum verify_kind kind; /* VK_KIND_COUNT: clean */
} chain_cases[] = {
	{"contiguous, windows finishing", {{1, 1, "10:10:", "10:12:", 5}, {2, 1, "10:10:", "10:12:", 9},
	  {3, 1, "10:12:", NULL, 0}, {4, 2, "12:15:", NULL, 0}}, 4, VK_KIND_COUNT},
	{"a batch skipped", {{1, 1, "10:10:", NULL, 0}, {3, 1, "10:11:", NULL, 0}}, 2, VK_CHAIN_GAP},
	{"a batch repeated", {{1, 1, "10:10:", NULL, 0}, {1, 1, "10:10:", NULL, 0}}, 2,
	 VK_CHAIN_BACKWARDS},
	{"batch numbers back", {{5, 1, "10:10:", NULL, 0}, {4, 1, "10:11:", NULL, 0}}, 2,
	 VK_CHAIN_BACKWARDS},
	{"generation back", {{1, 3, "10:10:", NULL, 0}, {2, 2, "10:11:", NULL, 0}}, 2,
	 VK_GENERATION_BACK},
	{"done snapshot back", {{1, 1, "10:12:", NULL, 0}, {2, 1, "10:11:", NULL, 0}}, 2,
	 VK_POSITION_BACK},
	{"after_id back in a window", {{1, 1, "10:10:", "10:12:", 9}, {2, 1, "10:10:", "10:12:", 5}},
	 2, VK_POSITION_BACK},
};

static void test_chain(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(chain_cases) / sizeof(chain_cases[0]); c++) {
		const struct chain_case *cc = &chain_cases[c];
		struct verify_report rep;
		struct verify_chain ch;

		memset(&rep, 0, sizeof(rep));
		verify_chain_init(&ch);
		for (int i = 0; i < cc->n; i++) {
			struct position p = {.batch_seq = cc->cks[i].seq,
					     .generation = cc->cks[i].gen,
					     .done = (char *)cc->cks[i].done,
					     .next = (char *)cc->cks[i].next,
					     .after_id = cc->cks[i].after};
			verify_chain_add(&ch, &p, 100 + i, &rep);
		}
		if (cc->kind == VK_KIND_COUNT) {
			if (verify_total(&rep) != 0)
				fail_msg("%s: %s", cc->what, rep.example[0][0]);
		} else {
			if (rep.count[cc->kind] != 1 || verify_total(&rep) != 1)
				fail_msg("%s: expected one %s, got %lld in all", cc->what,
					 verify_kind_str(cc->kind), (long long)verify_total(&rep));
			assert_non_null(strstr(rep.example[cc->kind][0], "offset 101"));
		}
		assert_int_equal(ch.checkpoints, cc->n);
		assert_int_equal(ch.first_seq, cc->cks[0].seq);
		verify_chain_clear(&ch);
	}
}

static void test_examples_capped(void **state)
{
	struct verify_report rep;

	(void)state;
	memset(&rep, 0, sizeof(rep));
	for (int i = 0; i < 20; i++)
		verify_note(&rep, VK_DUPLICATE, "dup %d", i);
	assert_int_equal(rep.count[VK_DUPLICATE], 20);
	assert_string_equal(rep.example[VK_DUPLICATE][VERIFY_EXAMPLES - 1], "dup 4");
}

static void test_digest(void **state)
{
	struct record_header ab[] = {{"a", 1, "1", 1}, {"b", 1, "2", 1}};
	struct record_header ba[] = {{"b", 1, "2", 1}, {"outbox-id", 9, "7", 1}, {"a", 1, "1", 1}};
	struct record_header ab3[] = {{"a", 1, "1", 1}, {"b", 1, "3", 1}};
	uint64_t d = verify_digest("t", "k", 1, "p", 1, ab, 2);

	(void)state;
	/* header order and the outbox-id header do not count */
	assert_true(d == verify_digest("t", "k", 1, "p", 1, ba, 3));
	assert_true(d != verify_digest("t", "k", 1, "q", 1, ab, 2));
	assert_true(d != verify_digest("t", "K", 1, "p", 1, ab, 2));
	assert_true(d != verify_digest("u", "k", 1, "p", 1, ab, 2));
	assert_true(d != verify_digest("t", "k", 1, "p", 1, ab3, 2));
	assert_true(d != verify_digest("t", "k", 1, "p", 1, ab, 1));
	/* key and payload are not confused */
	assert_true(verify_digest("t", "x", 1, NULL, 0, NULL, 0) !=
		    verify_digest("t", NULL, 0, "x", 1, NULL, 0));
	assert_true(verify_digest("t", NULL, 0, NULL, 0, NULL, 0) ==
		    verify_digest("t", "", 0, "", 0, NULL, 0));
}

static void test_durations(void **state)
{
	(void)state;
	assert_int_equal(verify_parse_duration("90s"), 90000);
	assert_int_equal(verify_parse_duration("15m"), 900000);
	assert_int_equal(verify_parse_duration("2h"), 7200000);
	assert_int_equal(verify_parse_duration("7d"), 604800000);
	assert_int_equal(verify_parse_duration("250"), 250);
	assert_int_equal(verify_parse_duration("250ms"), 250);
	assert_int_equal(verify_parse_duration("0s"), -1);
	assert_int_equal(verify_parse_duration("-1h"), -1);
	assert_int_equal(verify_parse_duration("1w"), -1);
	assert_int_equal(verify_parse_duration("h"), -1);
	assert_int_equal(verify_parse_duration("99999999999999999d"), -1);
}

/* One partition's records against a position stored at 1000 ms. */
#define ADVANCED 1000
static const struct lost_case {
	const char *what;
	struct verify_lost_rec recs[5]; /* offset, ts, row; after is the expected */
	int n;
} lost_cases[] = {
	{"all before the position (rows deleted when relayed)",
	 {{10, 900, VR_NONE, VA_BEFORE}, {11, 900, VR_NONE, VA_BEFORE},
	  {13, 1000, VR_NONE, VA_BEFORE}}, 3},
	{"one batch behind, its rows present: nothing lost",
	 {{10, 900, VR_NONE, VA_BEFORE}, {11, 900, VR_NONE, VA_BEFORE},
	  {13, 900, VR_PENDING, VA_PRESENT}, {14, 1500, VR_PENDING, VA_PRESENT}}, 4},
	{"created after the position was stored, gone",
	 {{10, 900, VR_NONE, VA_BEFORE}, {11, 900, VR_NONE, VA_BEFORE},
	  {13, 1500, VR_NONE, VA_LOST}, {14, 1500, VR_NONE, VA_LOST}}, 4},
	{"an id that now names another row",
	 {{10, 900, VR_NONE, VA_BEFORE}, {12, 900, VR_PENDING_OTHER, VA_REUSED},
	  {13, 900, VR_NONE, VA_LOST}}, 3},
	{"the whole transaction of the first known record",
	 {{18, 900, VR_NONE, VA_BEFORE}, {20, 900, VR_NONE, VA_LOST}, {21, 900, VR_NONE, VA_LOST},
	  {22, 1500, VR_NONE, VA_LOST}, {24, 900, VR_NONE, VA_LOST}}, 5},
	{"a present row and a reused id in one batch",
	 {{10, 900, VR_PENDING, VA_PRESENT}, {11, 900, VR_PENDING_OTHER, VA_REUSED},
	  {12, 900, VR_NONE, VA_LOST}}, 3},
	{"a row the position covers is never after",
	 {{10, 900, VR_PENDING, VA_PRESENT}, {12, 900, VR_RELAYED, VA_BEFORE}}, 2},
	{"nor does its timestamp make it the first after",
	 {{10, 1500, VR_RELAYED, VA_BEFORE}, {12, 900, VR_NONE, VA_BEFORE}}, 2},
	{"no timestamp, no row: not known to be after",
	 {{10, -1, VR_NONE, VA_BEFORE}, {11, -1, VR_NONE, VA_BEFORE}}, 2},
};

static void test_lost_classify(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(lost_cases) / sizeof(lost_cases[0]); c++) {
		const struct lost_case *lc = &lost_cases[c];
		struct verify_lost_rec recs[5];

		memcpy(recs, lc->recs, sizeof(recs));
		for (int i = 0; i < lc->n; i++)
			recs[i].after = VA_PRESENT + VA_REUSED; /* none of them: must be set */
		verify_lost_classify(recs, (size_t)lc->n, ADVANCED);
		for (int i = 0; i < lc->n; i++)
			if (recs[i].after != lc->recs[i].after)
				fail_msg("%s: offset %lld: %s, expected %s", lc->what,
					 (long long)recs[i].offset, verify_after_str(recs[i].after),
					 verify_after_str(lc->recs[i].after));
	}
	verify_lost_classify(NULL, 0, ADVANCED); /* an empty partition */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chain),
		cmocka_unit_test(test_examples_capped),
		cmocka_unit_test(test_digest),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_lost_classify),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
