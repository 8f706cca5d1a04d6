/*
 * util.c - clocks, string helpers and small filesystem helpers.
 */
#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t ag_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t ag_now_ms(void)
{
    return ag_now_ns() / 1000000;
}

int64_t ag_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ag_levenshtein(const char *a, const char *b)
{
    size_t la = strnlen(a, 255), lb = strnlen(b, 255);
    unsigned char row[256];

    for (size_t j = 0; j <= lb; j++) row[j] = (unsigned char)j;
    for (size_t i = 1; i <= la; i++) {
        unsigned diag = row[0];
        row[0] = (unsigned char)(i > 255 ? 255 : i);
        for (size_t j = 1; j <= lb; j++) {
            unsigned up = row[j];
            unsigned best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if ((unsigned)row[j - 1] + 1 < best) best = row[j - 1] + 1u;
            row[j] = (unsigned char)(best > 255 ? 255 : best);
            diag = up;
        }
    }
    return row[lb];
}

int ag_str_has_suffix(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

int ag_mkdir_p(const char *path, unsigned mode, struct ag_err *err)
{
    char tmp[4096];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof(tmp))
        return ag_err_set(err, AG_EINVAL, "bad directory path '%s'", path);
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0') continue;
        char saved = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, mode) != 0 && errno != EEXIST)
            return ag_err_set(err, AG_EIO, "cannot create directory '%s': %s", tmp,
                              strerror(errno));
        tmp[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return ag_err_set(err, AG_EIO, "'%s' exists and is not a directory", path);
    return 0;
}

int ag_read_fd(int fd, const char *name, size_t max_bytes, char **out, size_t *len,
               struct ag_err *err)
{
    struct ag_buf b;
    char chunk[16384];

    ag_buf_init(&b);
    ag_buf_reserve(&b, 0);
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            ag_buf_release(&b);
            return ag_err_set(err, AG_EIO, "%s: cannot read: %s", name, strerror(e));
        }
        if (n == 0) break;
        if (b.len + (size_t)n > max_bytes) {
            ag_buf_release(&b);
            return ag_err_set(err, AG_ETOOBIG, "%s: larger than %zu bytes", name, max_bytes);
        }
        ag_buf_append(&b, chunk, (size_t)n);
    }
    *out = ag_buf_detach(&b, len);
    return 0;
}

int ag_read_file(const char *path, size_t max_bytes, char **out, size_t *len, struct ag_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ag_err_set(err, AG_EIO, "%s: cannot open: %s", path, strerror(errno));
    int rc = ag_read_fd(fd, path, max_bytes, out, len, err);
    close(fd);
    return rc;
}

const char *ag_basename(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}
