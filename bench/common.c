/* common.c: the shared record, clock and librdkafka configuration of the
 * benchmark programs. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common.h"

int64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void bench_sleep_until_ns(int64_t t_ns)
{
	struct timespec ts = {(time_t)(t_ns / 1000000000LL), (long)(t_ns % 1000000000LL)};

	while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) != 0)
		;
}

void bench_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "bench: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

size_t bench_key(int64_t seq, char *key)
{
	int k = (int)(seq % BENCH_KEYS);

	memcpy(key, "key-", 4);
	key[4] = (char)('0' + k / 10);
	key[5] = (char)('0' + k % 10);
	key[6] = '\0';
	return 6;
}

/* splitmix64: a fixed pseudo-random stream, identical in every program. */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* The padding depends on seq % PADS only, so the payloads are built from a
 * table once (the bare producer should spend its time in librdkafka, not
 * here); 4096 pads of 256 bytes repeat every 1 MB, far beyond lz4's 64 KB
 * window. Not thread-safe on first use: call it once before threads start. */
#define PADS 4096
static char pads[PADS][BENCH_PAYLOAD_LEN];
static int pads_ready;

static void pads_init(void)
{
	static const char hex[] = "0123456789abcdef";

	for (int k = 0; k < PADS; k++) {
		char *pl = pads[k];
		uint64_t r = 0;

		memcpy(pl, "{\"seq\":000000000000,\"pad\":\"", 27);
		for (int i = 27; i < BENCH_PAYLOAD_LEN - 2; i++) {
			if ((i - 27) % 16 == 0)
				r = mix((uint64_t)k * 64 + (uint64_t)i);
			pl[i] = hex[r & 15];
			r >>= 4;
		}
		pl[BENCH_PAYLOAD_LEN - 2] = '"';
		pl[BENCH_PAYLOAD_LEN - 1] = '}';
	}
	pads_ready = 1;
}

void bench_payload(int64_t seq, char *payload)
{
	uint64_t v = (uint64_t)seq;

	if (!pads_ready)
		pads_init();
	memcpy(payload, pads[seq % PADS], BENCH_PAYLOAD_LEN);
	/* {"seq": is 7 bytes, then 12 digits */
	for (int i = 18; i >= 7; i--) {
		payload[i] = (char)('0' + v % 10);
		v /= 10;
	}
}

int64_t bench_payload_seq(const void *payload, size_t len)
{
	const char *p = payload;
	int64_t v = 0;

	if (!p || len < 19 || memcmp(p, "{\"seq\":", 7) != 0)
		return -1;
	for (int i = 7; i < 19; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v;
}

void bench_props_add(struct bench_props *props, const char *kv)
{
	if (props->n == BENCH_MAX_PROPS)
		bench_die("too many -X properties");
	if (!strchr(kv, '='))
		bench_die("-X %s: expected name=value", kv);
	props->kv[props->n++] = kv;
}

void bench_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
	char err[512];

	if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) != RD_KAFKA_CONF_OK)
		bench_die("%s=%s: %s", name, value, err);
}

rd_kafka_conf_t *bench_kafka_conf(const char *bootstrap, const struct bench_props *props)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();

	bench_conf_set(conf, "bootstrap.servers", bootstrap);
	for (int i = 0; i < props->n; i++) {
		char name[256];
		const char *eq = strchr(props->kv[i], '=');
		size_t n = (size_t)(eq - props->kv[i]);

		if (n >= sizeof(name))
			bench_die("-X %s: name too long", props->kv[i]);
		memcpy(name, props->kv[i], n);
		name[n] = '\0';
		bench_conf_set(conf, name, eq + 1);
	}
	return conf;
}

void bench_conf_default(rd_kafka_conf_t *conf, const struct bench_props *props, const char *name,
			const char *value)
{
	size_t n = strlen(name);

	for (int i = 0; i < props->n; i++)
		if (strncmp(props->kv[i], name, n) == 0 && props->kv[i][n] == '=')
			return;
	bench_conf_set(conf, name, value);
}

int64_t bench_cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
	       ru.ru_stime.tv_usec;
}

int64_t bench_hwm_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %lld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}
