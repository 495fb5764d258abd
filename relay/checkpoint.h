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
 * Where the relay stands in the outbox (DESIGN §2): every transaction visible
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

/* The checkpoint record's value. Returns a malloc'd NUL-terminated string. */
char *checkpoint_encode(const struct position *pos);

/* Parse a checkpoint value of `len` bytes into *pos (cleared first). Returns
 * 0, or -1 with the reason in errbuf; *pos is then left cleared. */
int checkpoint_decode(const void *buf, size_t len, struct position *pos, char *errbuf,
		      size_t errlen) MUSTCHECK;

/* Create `topic` with one partition if it is missing (compacted when
 * `compact`), through the admin API of `rk`. */
int kafka_topic_ensure(rd_kafka_t *rk, const char *topic, int rf, bool compact, char *errbuf,
		       size_t errlen) MUSTCHECK;

/* Create the checkpoint topic (compacted, one partition) if it is missing,
 * through the admin API of `rk` (any client handle). */
int checkpoint_ensure_topic(rd_kafka_t *rk, const struct config *cfg, char *errbuf,
			    size_t errlen) MUSTCHECK;

/* Read the newest committed checkpoint of relay cfg->relay_name: a
 * read_committed consumer reads the partition from the end backwards to the
 * last stable offset. Sets *found; fills *pos when found. Call only after
 * init_transactions, which settles any transaction of an older producer.
 * Returns 0, or -1 with errbuf (broker unreachable, or garbage in the topic). */
int checkpoint_read_last(const struct config *cfg, struct position *pos, bool *found,
			 char *errbuf, size_t errlen) MUSTCHECK;

#endif
