/* consumer.c: the read_committed consumer every scenario ends at. It
 * assigns all partitions of one or more topics from the beginning (no
 * group), notes the CLOCK_REALTIME ns at which each seq (parsed from the
 * payload) first arrives, and counts duplicates.
 *
 *   bench-consumer -b HOST:PORT -t TOPIC[,TOPIC...] --max-seq M [-n COUNT] [--out FILE]
 *                  [--out-ts FILE] [--from-end] [--timeout S] [-X name=value]...
 *
 * -t may be repeated or hold a comma-separated list (at most 16 topics).
 * --from-end starts at the partitions' current ends instead, so one topic
 * serves several runs.
 *
 * Stops after COUNT distinct seqs, on SIGTERM/SIGINT, or after S seconds.
 * stdout: "assigned T_NS PARTITIONS" once, then "P COUNT LAST_NS" whenever
 * new records arrived (at most every 10 ms), and at the end
 * "done FIRST_NS LAST_NS COUNT DUPS FOREIGN CPU_US LOG_APPEND_TIME_RECORDS".
 * FILE gets the arrival ns per seq (int64 array of M + 1, 0 = never
 * arrived); --out-ts FILE the record's timestamp in ms (the broker's append
 * time on a topic with message.timestamp.type=LogAppendTime, the producer's
 * create time otherwise; LOG_APPEND_TIME_RECORDS counts the former) of the
 * seq's first arrival, in the same layout. */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"max-seq", required_argument, NULL, 'M'},
		{"out", required_argument, NULL, 'o'},
		{"out-ts", required_argument, NULL, 'T'},
		{"timeout", required_argument, NULL, 'w'},
		{"from-end", no_argument, NULL, 'E'},
		{NULL, 0, NULL, 0},
	};
	const char *bootstrap = NULL, *out = NULL, *out_ts = NULL, *topics[16];
	int64_t max_seq = 0, want = 0, count = 0, dups = 0, foreign = 0, log_append = 0;
	int64_t first_ns = 0, last_ns = 0, last_report = 0, reported = -1, deadline;
	double timeout = 600;
	struct bench_props props = {0};
	const struct rd_kafka_metadata *md;
	rd_kafka_topic_partition_list_t *parts;
	rd_kafka_conf_t *conf;
	rd_kafka_topic_t *rkt;
	rd_kafka_t *rk;
	int64_t *arrived, *stamped;
	char err[512], group[64];
	int c, nparts = 0, ntopics = 0;
	bool from_end = false;

	while ((c = getopt_long(argc, argv, "b:t:n:X:", longopts, NULL)) != -1) {
		switch (c) {
		case 'b': bootstrap = optarg; break;
		case 't': {
			char *list = strdup(optarg), *save = NULL;
			for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				if (ntopics == 16)
					bench_die("-t: at most 16 topics");
				topics[ntopics++] = tok;
			}
			break;
		}
		case 'T': out_ts = optarg; break;
		case 'n': want = atoll(optarg); break;
		case 'X': bench_props_add(&props, optarg); break;
		case 'M': max_seq = atoll(optarg); break;
		case 'o': out = optarg; break;
		case 'w': timeout = atof(optarg); break;
		case 'E': from_end = true; break;
		default: bench_die("bad option");
		}
	}
	if (!bootstrap || ntopics < 1 || max_seq <= 0)
		bench_die("usage: bench-consumer -b BOOTSTRAP -t TOPIC --max-seq M [-n COUNT] [--out FILE]");
	arrived = calloc((size_t)max_seq + 1, sizeof(int64_t));
	stamped = calloc((size_t)max_seq + 1, sizeof(int64_t));
	if (!arrived || !stamped)
		bench_die("out of memory");
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);

	conf = bench_kafka_conf(bootstrap, &props);
	snprintf(group, sizeof(group), "bench-consumer-%d", (int)getpid());
	bench_conf_set(conf, "group.id", group); /* never joined: partitions are assigned */
	bench_conf_set(conf, "isolation.level", "read_committed");
	bench_conf_set(conf, "enable.auto.commit", "false");
	bench_conf_set(conf, "enable.partition.eof", "false");
	/* A fetch that the broker holds back is answered once data (for
	 * read_committed: the last stable offset) moves; this only bounds it. */
	bench_conf_default(conf, &props, "fetch.wait.max.ms", "100");
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
	if (!rk)
		bench_die("rd_kafka_new: %s", err);
	rd_kafka_poll_set_consumer(rk);
	parts = rd_kafka_topic_partition_list_new(16);
	for (int ti = 0; ti < ntopics; ti++) {
		const char *topic = topics[ti];
		int tparts;

		rkt = rd_kafka_topic_new(rk, topic, NULL);
		if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) || md->topic_cnt != 1 ||
		    md->topics[0].err || md->topics[0].partition_cnt < 1)
			bench_die("no metadata for topic %s", topic);
		tparts = md->topics[0].partition_cnt;
		rd_kafka_metadata_destroy(md);
		rd_kafka_topic_destroy(rkt);
		for (int p = 0; p < tparts; p++) {
			int64_t lo = 0, hi = RD_KAFKA_OFFSET_BEGINNING;

			/* From the end: the high watermark now, which is the last
			 * stable offset too when no transaction is open on the topic
			 * (the harness only starts a consumer between runs). */
			for (int tries = 0; from_end; tries++) {
				rd_kafka_resp_err_t qerr =
					rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
				if (!qerr)
					break;
				/* a new topic's leaders may still be spreading */
				if (tries == 50)
					bench_die("watermarks of %s [%d]: %s", topic, p, rd_kafka_err2str(qerr));
				usleep(200000);
			}
			rd_kafka_topic_partition_list_add(parts, topic, p)->offset = hi;
		}
		nparts += tparts;
	}
	if (rd_kafka_assign(rk, parts))
		bench_die("assign failed");
	rd_kafka_topic_partition_list_destroy(parts);
	printf("assigned %" PRId64 " %d\n", bench_now_ns(), nparts);
	fflush(stdout);

	deadline = bench_now_ns() + (int64_t)(timeout * 1e9);
	while (!stop && (want <= 0 || count < want)) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 10);
		int64_t now = bench_now_ns();

		if (m) {
			if (m->err) {
				if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
					fprintf(stderr, "bench-consumer: %s\n", rd_kafka_message_errstr(m));
			} else {
				int64_t seq = bench_payload_seq(m->payload, m->len);
				if (seq < 1 || seq > max_seq) {
					foreign++;
				} else if (arrived[seq]) {
					dups++;
				} else {
					rd_kafka_timestamp_type_t tstype;
					arrived[seq] = now;
					stamped[seq] = rd_kafka_message_timestamp(m, &tstype);
					if (tstype == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME)
						log_append++;
					if (!first_ns)
						first_ns = now;
					last_ns = now;
					count++;
				}
			}
			rd_kafka_message_destroy(m);
		}
		if (count != reported && now - last_report >= 10000000) {
			printf("P %" PRId64 " %" PRId64 "\n", count, last_ns);
			fflush(stdout);
			reported = count;
			last_report = now;
		}
		if (now > deadline) {
			fprintf(stderr, "bench-consumer: timed out with %" PRId64 " records\n", count);
			break;
		}
	}
	printf("P %" PRId64 " %" PRId64 "\n", count, last_ns);
	if (out) {
		FILE *f = fopen(out, "wb");
		if (!f || fwrite(arrived, sizeof(int64_t), (size_t)max_seq + 1, f) != (size_t)max_seq + 1 ||
		    fclose(f) != 0)
			bench_die("could not write %s", out);
	}
	if (out_ts) {
		FILE *f = fopen(out_ts, "wb");
		if (!f || fwrite(stamped, sizeof(int64_t), (size_t)max_seq + 1, f) != (size_t)max_seq + 1 ||
		    fclose(f) != 0)
			bench_die("could not write %s", out_ts);
	}
	printf("done %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
	       "\n",
	       first_ns, last_ns, count, dups, foreign, bench_cpu_us(), log_append);
	fflush(stdout);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	free(arrived);
	free(stamped);
	return 0;
}
