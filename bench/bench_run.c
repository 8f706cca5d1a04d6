/*
 * bench_run.c - end-to-end latency of a one-tool agent run (issue 6): an agent asked for a
 * product calls python once and answers. Each run's time is split into prefill, decode, tool
 * and overhead (everything else: storage of events and messages, the loop, the protocol), as
 * the daemon measures it (run.completed timings) and as a client sees it (wall time from the
 * request to the answer, minus model and tool time).
 *
 *   bench_run [-m MODEL] [-t THREADS] [-n RUNS]
 */
#include "stats.h"
#include "../base/base.h"
#include "../tests/daemon_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static struct tdaemon D;

int main(int argc, char **argv)
{
    const char *model = "models/gemma-3-270m-q4_k_m.gguf", *threads = "2";
    int runs = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-m") == 0) model = argv[i + 1];
        if (strcmp(argv[i], "-t") == 0) threads = argv[i + 1];
        if (strcmp(argv[i], "-n") == 0) runs = atoi(argv[i + 1]);
    }
    if (runs < 1 || runs > 1000) runs = 20;
    if (access(model, R_OK) != 0) {
        fprintf(stderr, "bench_run: %s is missing (make model MODEL=all)\n", model);
        return 1;
    }
    if (!tdaemon_init(&D)) return 1;
    char agents[400], path[480];
    snprintf(agents, sizeof(agents), "%s/agents", D.dir);
    mkdir(agents, 0700);
    snprintf(path, sizeof(path), "%s/calc.agent.yaml", agents);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fputs("name: calc\n"
          "instructions: Use the python tool for any computation, then answer with its result.\n"
          "model:\n  temperature: 0\n  max_tokens: 32\n  tool_choice: required\n"
          "tools: [python]\nlimits:\n  max_steps: 2\n",
          f);
    fclose(f);
    const char *args[] = {"--model", model,         "--threads", threads, "--agents",
                          agents,    "--log-level", "warn",      NULL};
    if (!tdaemon_start_args(&D, args)) {
        fprintf(stderr, "bench_run: agentd did not start (log: %s)\n", D.log);
        return 1;
    }
    double *pre = calloc((size_t)runs, sizeof(double)), *dec = calloc((size_t)runs, sizeof(double));
    double *tool = calloc((size_t)runs, sizeof(double)),
           *over = calloc((size_t)runs, sizeof(double));
    double *cover = calloc((size_t)runs, sizeof(double)),
           *wall = calloc((size_t)runs, sizeof(double));
    int n = 0, failed = 0;
    for (int i = -1; i < runs; i++) { /* run -1 warms the caches and the sandbox pool */
        struct tconn c;
        if (!tconn_open(&c, D.sock)) break;
        int64_t t0 = ag_now_ns();
        struct proto_val *r =
            tcall(&c, 1, "run.create", "{\"agent\":\"calc\",\"input\":\"What is 12345 * 6789?\"}");
        /* tcall waits 10 s; a run under load may take longer */
        while (r && !proto_get(r, "id")) {
            proto_val_free(r);
            r = tconn_read(&c, 120000);
        }
        double w = (double)(ag_now_ns() - t0) / 1e6;
        tconn_close(&c);
        const struct proto_val *res = proto_get(r, "result");
        if (!res || proto_int(proto_get(res, "tool_calls"), 0) != 1) {
            failed++;
            proto_val_free(r);
            continue;
        }
        /* The stored run.completed event carries the split. */
        char *q = ag_asprintf("{\"run_id\":\"%s\"}", proto_get_str(res, "run_id"));
        struct tconn c2;
        double p = 0, d = 0, t = 0, o = 0, total = 0;
        if (tconn_open(&c2, D.sock)) {
            char *line = ag_asprintf(
                "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"run.subscribe\",\"params\":%s}\n", q);
            tconn_send(&c2, line);
            free(line);
            for (;;) {
                struct proto_val *m = tconn_read(&c2, 10000);
                if (!m) break;
                if (proto_get(m, "id")) {
                    proto_val_free(m);
                    break;
                }
                const struct proto_val *e = proto_get(m, "params");
                if (strcmp(proto_get_str(e, "type"), "run.completed") == 0) {
                    const struct proto_val *tm = proto_get(e, "timings");
                    p = proto_num(proto_get(tm, "prefill_ms"), 0);
                    d = proto_num(proto_get(tm, "decode_ms"), 0);
                    t = proto_num(proto_get(tm, "tool_ms"), 0);
                    o = proto_num(proto_get(tm, "overhead_ms"), 0);
                    total = proto_num(proto_get(tm, "total_ms"), 0);
                }
                proto_val_free(m);
            }
            tconn_close(&c2);
        }
        free(q);
        proto_val_free(r);
        (void)total;
        if (i < 0) continue;
        pre[n] = p, dec[n] = d, tool[n] = t, over[n] = o, wall[n] = w;
        cover[n] = w - p - d - t;
        n++;
    }
    printf("one-tool agent run (python), %d runs, %s threads, %s:\n", n, threads, model);
    printf("  %-34s %9s %9s\n", "", "p50 ms", "p95 ms");
    printf("  %-34s %9.1f %9.1f\n", "client wall time", pct(wall, n, 50), pct(wall, n, 95));
    printf("  %-34s %9.1f %9.1f\n", "prefill (time to first token)", pct(pre, n, 50),
           pct(pre, n, 95));
    printf("  %-34s %9.1f %9.1f\n", "decode", pct(dec, n, 50), pct(dec, n, 95));
    printf("  %-34s %9.1f %9.1f\n", "tool (python in the sandbox)", pct(tool, n, 50),
           pct(tool, n, 95));
    printf("  %-34s %9.2f %9.2f\n", "overhead, daemon (target <= 5)", pct(over, n, 50),
           pct(over, n, 95));
    printf("  %-34s %9.2f %9.2f\n", "overhead, as the client sees it", pct(cover, n, 50),
           pct(cover, n, 95));
    if (failed) printf("  (%d runs did not make exactly one tool call)\n", failed);
    tdaemon_cleanup(&D);
    return 0;
}
