/*
 * log.c - levelled logging to stderr: "2026-11-22T06:19:48.123Z info  message".
 *
 * One fprintf per line, so lines from different threads do not interleave.
 */
#include "base.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Atomic int log_level = AG_LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void ag_log_set_level(enum ag_log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum ag_log_level ag_log_get_level(void)
{
    return (enum ag_log_level)atomic_load(&log_level);
}

int ag_log_parse_level(const char *name, enum ag_log_level *out)
{
    for (int i = 0; i <= AG_LOG_DEBUG; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum ag_log_level)i;
            return 0;
        }
    }
    return AG_EINVAL;
}

void ag_log(enum ag_log_level level, const char *fmt, ...)
{
    char msg[2048], stamp[32];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if ((int)level > atomic_load(&log_level)) return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %-5s %s\n", stamp, ts.tv_nsec / 1000000, level_names[level], msg);
}
