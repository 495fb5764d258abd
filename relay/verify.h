/* verify.h: `outbox-relay verify`, a read-only audit of what this relay
 * committed to Kafka: the checkpoint chain and the destination topics */
#ifndef OUTBOX_VERIFY_H
#define OUTBOX_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "checkpoint.h"
#include "common.h"
#include "config.h"

/* Exit code of verify when the history holds a violation (0: clean;
 * 1: configuration, connection, or a read that could not reach the end). */
#define EXIT_VIOLATIONS 6

/* The kinds of violation verify reports, each counted with a few examples. */
enum verify_kind {
	VK_CHAIN_GAP,          /* a checkpoint's batch_seq skips numbers */
	VK_CHAIN_BACKWARDS,    /* batch_seq repeats or goes back */
	VK_GENERATION_BACK,    /* a lease generation lower than an earlier one */
	VK_POSITION_BACK,      /* the done snapshot or after_id moves back */
	VK_CHECKPOINT_FOREIGN, /* our key, not a checkpoint our producer wrote */
	VK_DUPLICATE,          /* one outbox-id in two committed records */
	VK_OUT_OF_ORDER,       /* ids not increasing per key and partition */
	VK_NO_OUTBOX_ID,       /* a committed record without a valid outbox-id */
	VK_MISSING,            /* a kept, relayed row with no record in Kafka */
	VK_CONTENT,            /* a record whose key, payload or headers differ from its row */
	VK_NOT_IN_DB,          /* a record whose id the kept rows of its span lack */
	VK_LOST_BY_DB,         /* published after the stored position; its row is gone */
	VK_KIND_COUNT,
};
const char *verify_kind_str(enum verify_kind kind);

#define VERIFY_EXAMPLES 5

struct verify_report {
	int64_t count[VK_KIND_COUNT];
	char example[VK_KIND_COUNT][VERIFY_EXAMPLES][160];
};

/* Count a violation; keeps the first VERIFY_EXAMPLES messages. */
void verify_note(struct verify_report *rep, enum verify_kind kind, const char *fmt, ...)
	PRINTF(3, 4);
int64_t verify_total(const struct verify_report *rep);

/* The checkpoint chain as read in offset order. Pure; any thread. */
struct verify_chain {
	int64_t checkpoints;  /* positions taken */
	int64_t first_seq;    /* -1 before the first */
	struct position last; /* owned; valid when checkpoints > 0 */
};

void verify_chain_init(struct verify_chain *ch);
void verify_chain_clear(struct verify_chain *ch);
/* Take the next checkpoint (pos borrowed), read at `offset`, and note what
 * is wrong with the move from the previous one in rep. */
void verify_chain_add(struct verify_chain *ch, const struct position *pos, int64_t offset,
		      struct verify_report *rep);

/* What the command line asked for. */
struct verify_opts {
	int64_t since_ms;   /* > 0: read only records newer than now - since_ms */
	int64_t from_batch; /* > 0: check the chain from this batch_seq on */
	char **topics;      /* destination topics (owned by the caller) */
	int ntopics;
	bool json;
	bool list_lost; /* one line per event lost by the database */
};

/* Parse a duration such as "90s", "15m", "2h", "7d" or plain milliseconds.
 * Returns -1 when it does not parse or is not positive. */
int64_t verify_parse_duration(const char *s);

/* The content digest of a record or row: topic, key, payload and the
 * headers other than outbox-id, in any order (a NULL and an empty key,
 * payload or header value count as equal). hdrs: n name/value pairs as
 * struct record_header (batch.h). Pure. */
struct record_header;
uint64_t verify_digest(const char *topic, const void *key, size_t klen, const void *payload,
		       size_t plen, const struct record_header *hdrs, size_t n);

/*
 * Which records the database lost. After a failover to a replica that
 * missed commits, the database stores batch M while Kafka's checkpoints go
 * on to N > M: the records of batches M+1..N were published from commits
 * the database no longer counts as relayed. A record is known to be one of
 * them when its row is in the table but not relayed at the stored position,
 * or when it was created (its timestamp, the row's created_at) after the
 * database stored batch M; in a partition every record from the
 * transaction of the first such record on is one too (transactions are
 * committed one after the other; a transaction's records in a partition
 * have contiguous offsets, the commit marker follows them).
 */

/* What the database has under a record's outbox-id. */
enum verify_row {
	VR_NONE,          /* no row */
	VR_RELAYED,       /* a row relayed at the stored position */
	VR_PENDING,       /* a row not relayed yet, equal to the record */
	VR_PENDING_OTHER, /* a row not relayed yet that differs: the id was given again */
};

/* Where a record stands against the stored position. */
enum verify_after {
	VA_BEFORE,  /* at or before the stored position, as far as can be seen */
	VA_PRESENT, /* after it; its row is in the table (to be relayed) */
	VA_LOST,    /* after it; no row has its id */
	VA_REUSED,  /* after it; its id now belongs to another row */
};
const char *verify_after_str(enum verify_after after);

/* One record of a partition for verify_lost_classify. */
struct verify_lost_rec {
	int64_t offset;
	int64_t ts_ms;       /* the record's timestamp; -1 when it has none */
	enum verify_row row; /* in */
	enum verify_after after; /* out */
};

/* Classify the records of one partition, in offset order, against a
 * position stored at advanced_ms (database clock). Pure; any thread. */
void verify_lost_classify(struct verify_lost_rec *recs, size_t n, int64_t advanced_ms);

/* Run the audit and print the summary to stdout. Returns 0, EXIT_STARTUP
 * or EXIT_VIOLATIONS. Main thread. */
int verify_run(const struct config *cfg, const struct verify_opts *opts);

#endif
