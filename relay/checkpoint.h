/* checkpoint.h: the relay position, its wire form in the checkpoint record,
 * and reading the last committed checkpoint back from Kafka */
#ifndef OUTBOX_CHECKPOINT_H
#define OUTBOX_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "common.h"
#include "config.h"

/*
 * Where the relay stands in the outbox (docs/design.md, "Snapshot windows"): every transaction visible
 * in `done` is relayed; of the window (done, next], the rows with id <=
 * after_id are relayed too. `next` is NULL between windows. Snapshots are
 * pg_snapshot text ("xmin:xmax:xip,..."). batch_seq counts committed Kafka
 * transactions and orders positions: a higher batch_seq is a later position.
 */
struct position {
	int64_t batch_seq;
	int64_t generation; /* lease generation of the relay that wrote it */
	char *done;         /* owned */
	char *next;         /* owned; NULL between windows */
	int64_t after_id;
	/* Only in a checkpoint (set by the relay as it encodes one; the
	 * database's copy has none): what the batch that ends here held, the
	 * number of its rows and the sum of their ids (mod 2^63). A start that
	 * finds the database one batch behind compares them with the rows the
	 * database has in that span (docs/sql.md, "OR003"). */
	bool has_digest;
	int64_t batch_rows;
	int64_t batch_idsum;
};

/* The position of a relay that has relayed nothing yet (same as the SQL side). */
void position_init(struct position *pos);
void position_clear(struct position *pos);
/* dst gets its own copies of src's strings; dst's old strings are freed. */
void position_copy(struct position *dst, const struct position *src);
/* Same place in the outbox (batch_seq, done, next, after_id; not generation). */
bool position_equal(const struct position *a, const struct position *b);
/* Finish the open window: done := next, next := NULL, after_id := 0. */
void position_finish_window(struct position *pos);

/* True when s is a well-formed pg_snapshot text with xmin <= xmax and
 * every xip in [xmin, xmax). */
bool snapshot_valid(const char *s);
/* The xmax of a pg_snapshot text ("xmin:xmax:xip,..."); 0 for NULL. */
uint64_t snapshot_xmax(const char *snap);
/* The xmax of pos's newest snapshot (next inside a window, else done):
 * every transaction id below it that it does not list as running counts
 * as completed there. */
uint64_t position_xmax(const struct position *pos);

/* The checkpoint record's value. Returns a malloc'd NUL-terminated string. */
char *checkpoint_encode(const struct position *pos);

/* Parse a checkpoint value of `len` bytes into *pos (cleared first). Returns
 * 0, or -1 with the reason in errbuf; *pos is then left cleared. */
int checkpoint_decode(const void *buf, size_t len, struct position *pos, char *errbuf,
		      size_t errlen) MUSTCHECK;

/* The default kafka.checkpoint_topic: CHECKPOINT_TOPIC_PREFIX + relay name,
 * one topic per relay, because a shared one lets another relay's open
 * transaction hold our read back. Returns a malloc'd string. */
#define CHECKPOINT_TOPIC_PREFIX "outbox-relay.checkpoints."
char *checkpoint_default_topic(const char *relay_name);

/* Why `topic` is not a legal Kafka topic name, or NULL when it is. Static
 * string. */
const char *kafka_topic_name_problem(const char *topic);

/* The header the relay's own producer puts on every checkpoint record,
 * with the relay name as value. Outbox rows always carry an outbox-id
 * header instead, which a checkpoint record never has. */
#define CHECKPOINT_MARKER_HEADER "outbox-relay-checkpoint"

/* What one record of the checkpoint partition is to relay `relay_name`. */
enum checkpoint_record {
	CKPT_REC_OURS,        /* our key, our marker, decodes: it decides */
	CKPT_REC_LEGACY,      /* our key, no marker, no outbox-id, decodes: a checkpoint
			       * of a relay version before the marker; it decides */
	CKPT_REC_OTHER_KEY,   /* another key: the partition is shared */
	CKPT_REC_NOT_OURS,    /* our key, but an outbox row or another relay's marker */
	CKPT_REC_UNDECODABLE, /* our key, not an outbox row, but not a checkpoint */
};
const char *checkpoint_record_str(enum checkpoint_record rec);

/* Classify a record (key, value, the marker header's value or NULL, and
 * whether it has an outbox-id header). Fills *pos (caller clears it) only
 * for CKPT_REC_OURS and CKPT_REC_LEGACY; `why` says why a record of our key
 * does not count. Pure; any thread. */
enum checkpoint_record checkpoint_classify(const char *relay_name, const void *key, size_t klen,
					   const void *marker, size_t mlen, bool has_outbox_id,
					   const void *val, size_t vlen, struct position *pos,
					   char *why, size_t whylen);

/* The last header `name` of a consumed record: true with *val (borrowed
 * from m, NULL for a NULL value) and *len when it has one. Any thread. */
bool checkpoint_header_get(const rd_kafka_message_t *m, const char *name, const void **val,
			   size_t *len);

struct waiter;

/* topics_ensure (topics.h) for the checkpoint topic (compacted, one partition). */
int checkpoint_ensure_topic(rd_kafka_t *rk, const struct config *cfg, const struct waiter *w,
			    int64_t deadline_ms, char *errbuf, size_t errlen) MUSTCHECK;

/* Told while a checkpoint read waits behind another producer's open
 * transaction: held(arg, why) with a one-line reason when the wait starts
 * (for /readyz), held(arg, NULL) when it is over. Called on the reading
 * thread. */
struct checkpoint_watch {
	void (*held)(void *arg, const char *why);
	void *arg;
};

/* The time a checkpoint read may need: a commit timeout for the read, plus
 * a transaction timeout and the broker's 10 s sweep for a foreign
 * transaction that holds the partition back. For the caller's deadline. */
int checkpoint_read_budget_ms(const struct config *cfg);

/*
 * Read the newest checkpoint of relay cfg->relay_name from partition 0 of
 * the checkpoint topic. Only records of our key that our own producer wrote
 * decide (CKPT_REC_OURS, and CKPT_REC_LEGACY for migration); every other
 * record is skipped with a warning. The read reaches the log end offset a
 * read_uncommitted look gives: while another producer's open transaction
 * holds the last stable offset back (a read_committed reader stops there,
 * hiding our later checkpoints), it waits, tells `watch` (may be NULL) and
 * logs it. Blocks in the waiter's slices (w may be NULL) until deadline_ms
 * (monotonic, now_ms()); a stop from the tick ends it. Call only after
 * init_transactions, which settles any transaction of ours. Sets *found;
 * fills *pos when found. Returns 0, or -1 with errbuf: broker unreachable,
 * timed out (still held back), or stopped. Main thread.
 */
int checkpoint_read_last(const struct config *cfg, const struct waiter *w, int64_t deadline_ms,
			 const struct checkpoint_watch *watch, struct position *pos, bool *found,
			 char *errbuf, size_t errlen) MUSTCHECK;

#endif
