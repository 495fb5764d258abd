/* producer.c: the bare librdkafka baselines the relay is measured against.
 *
 *   bench-producer txn -b HOST:PORT -t TOPIC -n ROWS -T TXN_ROWS [options]
 *       A transactional producer sending ROWS records from memory (the same
 *       keys, payloads and outbox-id header as the relay's rows) in
 *       transactions of TXN_ROWS, with the relay's producer settings.
 *   bench-producer idempotent -b HOST:PORT -t TOPIC -r RATE -s SECONDS --out FILE
 *       An idempotent producer sending RATE records/s on an open-loop
 *       schedule; FILE gets the CLOCK_REALTIME ns of each produce call,
 *       indexed by seq (int64 array, index 0 unused).
 *   bench-producer txn-stream -b HOST:PORT -t TOPIC -r RATE -s SECONDS --out FILE
 *       The transactional floor of steady latency: records fall due at RATE/s
 *       (open loop) and go out in back-to-back transactions, each holding
 *       every record due when it begins (at most TXN_ROWS), as the relay
 *       batches rows that committed while it was busy. FILE gets each
 *       record's due time.
 *
 * Options: -X name=value (librdkafka property, repeatable), --first SEQ
 * (first seq, default 1), --txn-id ID, --max-bytes N (the relay's
 * batch.max_bytes, for its queue sizing), --checkpoint-topic T (add one
 * relay-like checkpoint record per transaction), --hold-open K (txn: begin,
 * produce K records, flush, print "open" and wait to be killed).
 *
 * stdout, one line per event: "ready T_NS", "commit T_NS SEQ" (first
 * transaction only), "open T_NS", "done T_NS CPU_US HWM_KB TXNS". */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

struct opts {
	const char *mode, *bootstrap, *topic, *txn_id, *out, *ckpt_topic;
	int64_t rows, txn_rows, first, max_bytes, hold_open;
	double rate, seconds;
	struct bench_props props;
};

static int64_t delivery_errors;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	(void)opaque;
	if (m->err) {
		if (delivery_errors++ < 5)
			fprintf(stderr, "bench-producer: delivery failed: %s\n", rd_kafka_err2str(m->err));
	}
}

static void kcheck(rd_kafka_error_t *error, const char *what)
{
	if (error)
		bench_die("%s: %s", what, rd_kafka_error_string(error));
}

/* One record, as the relay sends it: key, payload, timestamp, outbox-id. */
static void produce_one(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int64_t seq)
{
	char key[16], payload[BENCH_PAYLOAD_LEN], idbuf[24];
	size_t klen = bench_key(seq, key);
	rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
	rd_kafka_resp_err_t err;

	bench_payload(seq, payload);
	snprintf(idbuf, sizeof(idbuf), "%" PRId64, seq);
	rd_kafka_header_add(hdrs, "outbox-id", -1, idbuf, -1);
	for (;;) {
		err = rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt),
					RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
					RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
					RD_KAFKA_V_KEY(key, klen),
					RD_KAFKA_V_VALUE(payload, sizeof(payload)),
					RD_KAFKA_V_TIMESTAMP(bench_now_ns() / 1000000),
					RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			break;
		rd_kafka_poll(rk, 50);
	}
	if (err) {
		rd_kafka_headers_destroy(hdrs);
		bench_die("produce: %s", rd_kafka_err2str(err));
	}
}

static rd_kafka_t *new_producer(const struct opts *o, bool transactional)
{
	rd_kafka_conf_t *conf = bench_kafka_conf(o->bootstrap, &o->props);
	char v[32], err[512];
	rd_kafka_t *rk;

	/* The relay's producer settings (relay/publisher.c), unless -X says
	 * otherwise: queues that hold a whole transaction, murmur2, no linger. */
	snprintf(v, sizeof(v), "%" PRId64, o->txn_rows * 2 + 16);
	bench_conf_default(conf, &o->props, "queue.buffering.max.messages", v);
	snprintf(v, sizeof(v), "%" PRId64, o->max_bytes * 2 / 1024 + 4096);
	bench_conf_default(conf, &o->props, "queue.buffering.max.kbytes", v);
	bench_conf_default(conf, &o->props, "partitioner", "murmur2_random");
	bench_conf_default(conf, &o->props, "linger.ms", "0");
	bench_conf_default(conf, &o->props, "message.timeout.ms", "60000");
	if (transactional) {
		bench_conf_set(conf, "transactional.id", o->txn_id);
		bench_conf_default(conf, &o->props, "transaction.timeout.ms", "60000");
	} else {
		bench_conf_set(conf, "enable.idempotence", "true");
	}
	rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	if (!rk)
		bench_die("rd_kafka_new: %s", err);
	return rk;
}

static void done(int64_t txns)
{
	printf("done %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 "\n", bench_now_ns(),
	       bench_cpu_us(), bench_hwm_kb(), txns);
	fflush(stdout);
}

static int run_txn(const struct opts *o)
{
	rd_kafka_t *rk = new_producer(o, true);
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, o->topic, NULL);
	rd_kafka_topic_t *ckpt = o->ckpt_topic ? rd_kafka_topic_new(rk, o->ckpt_topic, NULL) : NULL;
	int64_t seq = o->first, end = o->first + o->rows, txns = 0;

	kcheck(rd_kafka_init_transactions(rk, 60000), "init_transactions");
	printf("ready %" PRId64 "\n", bench_now_ns());
	fflush(stdout);
	if (o->hold_open > 0) {
		kcheck(rd_kafka_begin_transaction(rk), "begin_transaction");
		for (int64_t i = 0; i < o->hold_open; i++)
			produce_one(rk, rkt, seq++);
		rd_kafka_flush(rk, 30000);
		printf("open %" PRId64 "\n", bench_now_ns());
		fflush(stdout);
		for (;;)
			pause();
	}
	while (seq < end) {
		int64_t stop = seq + o->txn_rows < end ? seq + o->txn_rows : end;

		kcheck(rd_kafka_begin_transaction(rk), "begin_transaction");
		for (; seq < stop; seq++)
			produce_one(rk, rkt, seq);
		if (ckpt) {
			char value[128];
			int n = snprintf(value, sizeof(value), "v1 seq=%" PRId64 " after=%" PRId64,
					 txns + 1, seq - 1);
			rd_kafka_resp_err_t err = rd_kafka_producev(
				rk, RD_KAFKA_V_RKT(ckpt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
				RD_KAFKA_V_KEY(o->txn_id, strlen(o->txn_id)),
				RD_KAFKA_V_VALUE(value, (size_t)n), RD_KAFKA_V_END);
			if (err)
				bench_die("produce checkpoint: %s", rd_kafka_err2str(err));
		}
		kcheck(rd_kafka_commit_transaction(rk, 60000), "commit_transaction");
		if (txns++ == 0) {
			printf("commit %" PRId64 " %" PRId64 "\n", bench_now_ns(), seq - 1);
			fflush(stdout);
		}
	}
	if (delivery_errors)
		bench_die("%" PRId64 " delivery errors", delivery_errors);
	done(txns);
	if (ckpt)
		rd_kafka_topic_destroy(ckpt);
	rd_kafka_topic_destroy(rkt);
	rd_kafka_destroy(rk);
	return 0;
}

static int run_idempotent(const struct opts *o)
{
	rd_kafka_t *rk = new_producer(o, false);
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, o->topic, NULL);
	int64_t n = (int64_t)(o->rate * o->seconds);
	int64_t *sent = calloc((size_t)(o->first + n), sizeof(int64_t));
	const struct rd_kafka_metadata *md;
	int64_t t0;
	FILE *f;

	if (!sent)
		bench_die("out of memory");
	/* Connected, with a producer id, before the schedule starts. */
	if (rd_kafka_metadata(rk, 0, rkt, &md, 10000))
		bench_die("metadata of %s: timed out", o->topic);
	rd_kafka_metadata_destroy(md);
	t0 = bench_now_ns() + 1000000000LL;
	printf("ready %" PRId64 "\n", t0);
	fflush(stdout);
	for (int64_t i = 0; i < n; i++) {
		int64_t due = t0 + (int64_t)((double)i * 1e9 / o->rate);
		int64_t now;

		while ((now = bench_now_ns()) < due) {
			int64_t left_ms = (due - now) / 1000000;
			if (left_ms > 0)
				rd_kafka_poll(rk, (int)(left_ms > 100 ? 100 : left_ms));
			else
				bench_sleep_until_ns(due);
		}
		sent[o->first + i] = bench_now_ns();
		produce_one(rk, rkt, o->first + i);
		rd_kafka_poll(rk, 0);
	}
	rd_kafka_flush(rk, 30000);
	if (delivery_errors)
		bench_die("%" PRId64 " delivery errors", delivery_errors);
	f = fopen(o->out, "wb");
	if (!f || fwrite(sent, sizeof(int64_t), (size_t)(o->first + n), f) != (size_t)(o->first + n) ||
	    fclose(f) != 0)
		bench_die("could not write %s", o->out);
	done(0);
	rd_kafka_topic_destroy(rkt);
	rd_kafka_destroy(rk);
	free(sent);
	return 0;
}

static int run_txn_stream(const struct opts *o)
{
	rd_kafka_t *rk = new_producer(o, true);
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, o->topic, NULL);
	int64_t n = (int64_t)(o->rate * o->seconds), i = 0, txns = 0, t0;
	int64_t *due = calloc((size_t)(o->first + n), sizeof(int64_t));
	FILE *f;

	if (!due)
		bench_die("out of memory");
	kcheck(rd_kafka_init_transactions(rk, 60000), "init_transactions");
	t0 = bench_now_ns() + 500000000LL;
	printf("ready %" PRId64 "\n", t0);
	fflush(stdout);
	while (i < n) {
		int64_t first_due = t0 + (int64_t)((double)i * 1e9 / o->rate), k = 0;

		if (bench_now_ns() < first_due)
			bench_sleep_until_ns(first_due);
		kcheck(rd_kafka_begin_transaction(rk), "begin_transaction");
		/* everything due by now, as a relay would find it */
		for (int64_t now = bench_now_ns(); i < n && k < o->txn_rows; i++, k++) {
			int64_t d = t0 + (int64_t)((double)i * 1e9 / o->rate);
			if (d > now)
				break;
			due[o->first + i] = d;
			produce_one(rk, rkt, o->first + i);
		}
		kcheck(rd_kafka_commit_transaction(rk, 60000), "commit_transaction");
		txns++;
	}
	if (delivery_errors)
		bench_die("%" PRId64 " delivery errors", delivery_errors);
	f = fopen(o->out, "wb");
	if (!f || fwrite(due, sizeof(int64_t), (size_t)(o->first + n), f) != (size_t)(o->first + n) ||
	    fclose(f) != 0)
		bench_die("could not write %s", o->out);
	done(txns);
	rd_kafka_topic_destroy(rkt);
	rd_kafka_destroy(rk);
	free(due);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"first", required_argument, NULL, 'f'},    {"txn-id", required_argument, NULL, 'i'},
		{"max-bytes", required_argument, NULL, 'm'}, {"out", required_argument, NULL, 'o'},
		{"hold-open", required_argument, NULL, 'H'},
		{"checkpoint-topic", required_argument, NULL, 'C'},
		{NULL, 0, NULL, 0},
	};
	struct opts o = {.txn_id = "bench-producer", .first = 1, .txn_rows = 10000, .rate = 1000,
			 .seconds = 10};
	int c;

	if (argc < 2)
		bench_die("usage: bench-producer txn|txn-stream|idempotent -b BOOTSTRAP -t TOPIC ...");
	o.mode = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "b:t:n:T:r:s:X:", longopts, NULL)) != -1) {
		switch (c) {
		case 'b': o.bootstrap = optarg; break;
		case 't': o.topic = optarg; break;
		case 'n': o.rows = atoll(optarg); break;
		case 'T': o.txn_rows = atoll(optarg); break;
		case 'r': o.rate = atof(optarg); break;
		case 's': o.seconds = atof(optarg); break;
		case 'X': bench_props_add(&o.props, optarg); break;
		case 'f': o.first = atoll(optarg); break;
		case 'i': o.txn_id = optarg; break;
		case 'm': o.max_bytes = atoll(optarg); break;
		case 'o': o.out = optarg; break;
		case 'H': o.hold_open = atoll(optarg); break;
		case 'C': o.ckpt_topic = optarg; break;
		default: bench_die("bad option");
		}
	}
	if (!o.bootstrap || !o.topic)
		bench_die("-b and -t are required");
	if (o.max_bytes == 0)
		o.max_bytes = 16 << 20;
	if (strcmp(o.mode, "txn") == 0) {
		if (o.rows <= 0 && o.hold_open <= 0)
			bench_die("txn: -n ROWS is required");
		return run_txn(&o);
	}
	if (strcmp(o.mode, "txn-stream") == 0) {
		if (!o.out)
			bench_die("txn-stream: --out FILE is required");
		return run_txn_stream(&o);
	}
	if (strcmp(o.mode, "idempotent") == 0) {
		if (!o.out)
			bench_die("idempotent: --out FILE is required");
		return run_idempotent(&o);
	}
	bench_die("unknown mode \"%s\"", o.mode);
}
