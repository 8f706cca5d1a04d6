/*
 * now.c - the `now` tool: the current date and time, in the daemon's time zone and in UTC, so an
 * agent can answer "what day is it" or compute a deadline without running code. It needs no
 * service and answers at once.
 */
#include "tools.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static int start(struct tool_call *call, struct ag_err *err)
{
    (void)err;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_t t = ts.tv_sec;
    struct tm local, utc;
    localtime_r(&t, &local);
    gmtime_r(&t, &utc);
    char lbuf[32], ubuf[32], off[8], day[16];
    strftime(lbuf, sizeof(lbuf), "%Y-%m-%dT%H:%M:%S", &local);
    strftime(off, sizeof(off), "%z", &local);
    strftime(ubuf, sizeof(ubuf), "%Y-%m-%dT%H:%M:%SZ", &utc);
    strftime(day, sizeof(day), "%A", &local);
    /* +hhmm -> +hh:mm as ISO 8601 writes it; Z for UTC itself */
    char iso_off[8] = "Z";
    if (strlen(off) == 5 && strcmp(off, "+0000") != 0)
        snprintf(iso_off, sizeof(iso_off), "%.3s:%.2s", off, off + 3);
    char out[256];
    snprintf(out, sizeof(out), "local: %s%s (%s, time zone %s)\nutc: %s\nunix: %lld", lbuf, iso_off,
             day, local.tm_zone ? local.tm_zone : "UTC", ubuf, (long long)t);
    tool_call_done(call, true, out);
    return 0;
}

static const struct tool_ops now_ops = {start, NULL};

const struct tool_def tool_now = {
    "now", "Get the current date and time (local time with its time zone, UTC, and Unix seconds).",
    "{\"type\":\"object\",\"properties\":{},\"required\":[],\"additionalProperties\":false}",
    &now_ops, NULL};
