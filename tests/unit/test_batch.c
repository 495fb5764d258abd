/* test_batch.c: batch_truncate, which drops the rows an open transaction
 * read but must not take (stream_rows in relay.c) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "batch.h"

/* A row with key "k", a payload of plen bytes and nh one-byte headers. */
static void add_row(struct batch *b, int64_t id, size_t plen, size_t nh, const char *dead)
{
	static const char payload[64];
	struct record *r = batch_add_record(b);

	r->id = id;
	r->topic = "t";
	r->key = "k";
	r->key_len = 1;
	r->payload = payload;
	r->payload_len = plen;
	r->hdr_off = b->nhdrs;
	r->hdr_count = nh;
	r->dead_reason = dead ? strdup(dead) : NULL;
	b->bytes += (int64_t)(1 + plen);
	for (size_t i = 0; i < nh; i++) {
		struct record_header *h = batch_add_header(b);

		h->name = "h";
		h->name_len = 1;
		h->value = "v";
		h->value_len = 1;
		b->bytes += 2;
	}
}

static void test_truncate_drops_rows_headers_and_bytes(void **state)
{
	struct batch b = {0};

	(void)state;
	add_row(&b, 1, 10, 1, NULL);
	add_row(&b, 2, 20, 2, NULL);
	int64_t bytes_after_two = b.bytes;
	size_t hdrs_after_two = b.nhdrs;
	add_row(&b, 3, 30, 3, "dead: a reason"); /* its reason is freed (ASan) */
	add_row(&b, 4, 40, 0, NULL);
	assert_int_equal(b.nrecs, 4);

	batch_truncate(&b, 2);
	assert_int_equal(b.nrecs, 2);
	assert_int_equal(b.nhdrs, hdrs_after_two);
	assert_int_equal(b.bytes, bytes_after_two);
	assert_int_equal(b.recs[1].id, 2);

	/* rows read again land where the dropped ones were */
	add_row(&b, 3, 30, 1, NULL);
	assert_int_equal(b.nrecs, 3);
	assert_int_equal(b.recs[2].hdr_off, hdrs_after_two);

	batch_truncate(&b, 5); /* beyond the end: nothing */
	assert_int_equal(b.nrecs, 3);
	batch_truncate(&b, 0);
	assert_int_equal(b.nrecs, 0);
	assert_int_equal(b.nhdrs, 0);
	assert_int_equal(b.bytes, 0);
	batch_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_truncate_drops_rows_headers_and_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
