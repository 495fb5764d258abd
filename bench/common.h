/* common.h: what the benchmark programs share: the record every scenario
 * sends (so the relay's rows and the bare producers' records are the same
 * bytes), the clock, and librdkafka configuration from -X name=value. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_PAYLOAD_LEN 256
#define BENCH_KEYS 16
#define BENCH_MAX_PROPS 64

/* Wall clock in ns (CLOCK_REALTIME): every program and the harness on this
 * machine compare the same clock. */
int64_t bench_now_ns(void);
/* Sleep until an absolute CLOCK_REALTIME instant. */
void bench_sleep_until_ns(int64_t t_ns);

/* The record of sequence number seq (1-based): key "key-NN" (seq % 16) and a
 * 256-byte JSON payload {"seq":000000000123,"pad":"<hex>"} whose padding is
 * pseudo-random hex (compresses about like real JSON, not like a run of one
 * byte; it repeats every 4096 seqs, 1 MB apart). Returns the key length;
 * buffers must hold 16 and 256 bytes. The first call builds a table: make
 * it before starting threads. */
size_t bench_key(int64_t seq, char *key);
void bench_payload(int64_t seq, char *payload);
/* The seq of a payload written by bench_payload, or -1. */
int64_t bench_payload_seq(const void *payload, size_t len);

/* -X name=value properties, collected from argv. */
struct bench_props {
	const char *kv[BENCH_MAX_PROPS];
	int n;
};
void bench_props_add(struct bench_props *props, const char *kv);
/* A conf with bootstrap.servers and every property; exits on error. */
rd_kafka_conf_t *bench_kafka_conf(const char *bootstrap, const struct bench_props *props);
/* Set one property unless the user gave it with -X; exits on error. */
void bench_conf_default(rd_kafka_conf_t *conf, const struct bench_props *props, const char *name,
			const char *value);
void bench_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value);

/* This process's CPU time (user + system) in microseconds, and its peak RSS
 * (VmHWM) in kB. */
int64_t bench_cpu_us(void);
int64_t bench_hwm_kb(void);

void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
