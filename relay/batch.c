/* batch.c: growable arrays behind struct batch */
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "common.h"

static void *grow(void *arr, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return arr;
	*cap = *cap ? *cap * 2 : 64;
	while (*cap < need)
		*cap *= 2;
	return xrealloc(arr, *cap * elem);
}

size_t batch_add_page(struct batch *b, struct pg_result *res)
{
	b->pages = grow(b->pages, &b->cap_pages, b->npages + 1, sizeof(*b->pages));
	b->pages[b->npages] = res;
	return b->npages++;
}

struct record *batch_add_record(struct batch *b)
{
	b->recs = grow(b->recs, &b->cap_recs, b->nrecs + 1, sizeof(*b->recs));
	memset(&b->recs[b->nrecs], 0, sizeof(*b->recs));
	return &b->recs[b->nrecs++];
}

struct record_header *batch_add_header(struct batch *b)
{
	b->hdrs = grow(b->hdrs, &b->cap_hdrs, b->nhdrs + 1, sizeof(*b->hdrs));
	return &b->hdrs[b->nhdrs++];
}

void batch_reset(struct batch *b)
{
	for (size_t i = 0; i < b->nrecs; i++)
		free(b->recs[i].dead_reason);
	for (size_t i = 0; i < b->npages; i++)
		PQclear(b->pages[i]);
	b->npages = 0;
	b->nrecs = 0;
	b->nhdrs = 0;
	b->bytes = 0;
}

void batch_truncate(struct batch *b, size_t nrecs)
{
	if (nrecs >= b->nrecs)
		return;
	b->nhdrs = b->recs[nrecs].hdr_off;
	for (size_t i = nrecs; i < b->nrecs; i++) {
		const struct record *r = &b->recs[i];

		free(r->dead_reason);
		b->bytes -= (int64_t)(r->key_len + r->payload_len);
		for (size_t h = 0; h < r->hdr_count; h++)
			b->bytes -= (int64_t)(b->hdrs[r->hdr_off + h].name_len +
					      b->hdrs[r->hdr_off + h].value_len);
	}
	b->nrecs = nrecs;
}

void batch_free(struct batch *b)
{
	batch_reset(b);
	free(b->pages);
	free(b->recs);
	free(b->hdrs);
	b->pages = NULL;
	b->recs = NULL;
	b->hdrs = NULL;
	b->cap_pages = b->cap_recs = b->cap_hdrs = 0;
}
