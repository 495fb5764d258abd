/* batch.h: the rows of one Kafka transaction, decoded once from the outbox
 * pages and kept until the transaction is committed (a re-send after an
 * abort reuses them) */
#ifndef OUTBOX_BATCH_H
#define OUTBOX_BATCH_H

#include <stddef.h>
#include <stdint.h>

struct pg_result; /* libpq's PGresult */

struct record_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

/* One outbox row. Every pointer is borrowed from a page in the batch. */
struct record {
	int64_t id;
	const char *topic;   /* NUL-terminated */
	const char *key;     /* NULL for a NULL key */
	size_t key_len;
	const char *payload; /* NULL for a NULL payload */
	size_t payload_len;
	int64_t timestamp_ms;
	size_t hdr_off;      /* first header in batch.hdrs */
	size_t hdr_count;
	/* Set when the record goes to the dead-letter topic instead (owned,
	 * freed by batch_reset): why it cannot be published. */
	char *dead_reason;
};

struct batch {
	struct pg_result **pages; /* owned: cleared by batch_reset */
	size_t npages, cap_pages;
	struct record *recs;
	size_t nrecs, cap_recs;
	struct record_header *hdrs;
	size_t nhdrs, cap_hdrs;
	int64_t bytes; /* keys + payloads + headers */
};

/* Take ownership of a page; returns its index. */
size_t batch_add_page(struct batch *b, struct pg_result *res);
struct record *batch_add_record(struct batch *b);
struct record_header *batch_add_header(struct batch *b);

/* Drop every row and page; the arrays stay allocated for the next batch. */
void batch_reset(struct batch *b);
/* Drop the rows from nrecs on (their pages stay until batch_reset). */
void batch_truncate(struct batch *b, size_t nrecs);
/* Free everything; the struct itself is the caller's. */
void batch_free(struct batch *b);

#endif
