/*
 * files.c - host-side access to a session's workspace (files.put / files.get).
 *
 * The daemon runs as root on the host and the workspace's contents are written by untrusted
 * code, so every lookup is done relative to the workspace's directory fd (received from the
 * sandbox at spawn) with openat2: RESOLVE_BENEATH (no escaping the workspace, "/" and ".."
 * included), RESOLVE_NO_SYMLINKS (no symlink anywhere on the path, so a link planted by the
 * code cannot redirect the daemon), RESOLVE_NO_MAGICLINKS and RESOLVE_NO_XDEV (no other mount).
 * Paths are walked one component at a time so put can create directories without ever
 * following a name the sandbox could have swapped. Only regular files are read or written
 * (opened O_NONBLOCK, so a FIFO planted in place of a file cannot block the daemon).
 *
 * The calling thread acts as the sandbox's user while it does this (setfsuid/setfsgid are per
 * thread): the workspace belongs to the sandbox's user namespace, where the daemon's own ids
 * may have no mapping (creating a file would fail with EOVERFLOW), and new files must belong to
 * the code anyway. Acting as that user also drops root's permission overrides for the walk.
 */
#include "sbx_int.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RESOLVE_FLAGS                                                                              \
    (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)

static int open2(int dir, const char *name, uint64_t flags, uint64_t mode)
{
    struct open_how how = {.flags = flags | O_CLOEXEC, .mode = mode, .resolve = RESOLVE_FLAGS};
    int fd;
    do fd = (int)syscall(SYS_openat2, dir, name, &how, sizeof(how));
    while (fd < 0 && errno == EINTR);
    return fd;
}

/* Splits path into components after checking it; returns the count or a negative AG_E code. */
static int split(const char *path, char parts[][256], int max, struct ag_err *err)
{
    if (strncmp(path, "/work/", 6) == 0) path += 6;
    if (path[0] == '/' || path[0] == '\0')
        return ag_err_set(err, AG_EPARAMS,
                          "path '%s': give a path relative to the workspace (/work)", path);
    int n = 0;
    const char *p = path;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return ag_err_set(err, AG_EPARAMS,
                              "path '%s': empty, '.' and '..' components are not allowed", path);
        if (len >= 256 || n == max)
            return ag_err_set(err, AG_EPARAMS, "path '%s' is too long or too deep", path);
        memcpy(parts[n], p, len);
        parts[n][len] = '\0';
        n++;
        p += len;
        if (*p == '/') p++;
    }
    return n;
}

static int resolve_err(const char *path, const char *part, int e, struct ag_err *err)
{
    if (e == ENOENT)
        return ag_err_set(err, AG_ENOTFOUND, "%s: no such file in the workspace", path);
    if (e == ELOOP || e == EXDEV)
        return ag_err_set(err, AG_EPARAMS, "%s: '%s' is a symbolic link or leaves the workspace",
                          path, part);
    if (e == ENOTDIR) return ag_err_set(err, AG_EPARAMS, "%s: '%s' is not a directory", path, part);
    if (e == ENOSPC || e == EDQUOT)
        return ag_err_set(err, AG_EQUOTA, "%s: the workspace is full", path);
    return ag_err_set(err, AG_EIO, "%s: %s", path, strerror(e));
}

/* Opens the directory holding the last component; creates missing ones when asked. */
static int walk(int ws_fd, char parts[][256], int n, bool create, const char *path,
                struct ag_err *err)
{
    int dir = fcntl(ws_fd, F_DUPFD_CLOEXEC, 0);
    if (dir < 0) return ag_err_set(err, AG_EIO, "dup: %s", strerror(errno));
    for (int i = 0; i < n - 1; i++) {
        int next = open2(dir, parts[i], O_PATH | O_DIRECTORY, 0);
        if (next < 0 && errno == ENOENT && create) {
            if (mkdirat(dir, parts[i], 0755) != 0 && errno != EEXIST) {
                int e = errno;
                close(dir);
                return resolve_err(path, parts[i], e, err);
            }
            next = open2(dir, parts[i], O_PATH | O_DIRECTORY, 0);
        }
        int e = errno;
        close(dir);
        if (next < 0) return resolve_err(path, parts[i], e, err);
        dir = next;
    }
    return dir;
}

static int put(int ws_fd, const char *path, const void *data, size_t n, struct ag_err *err)
{
    char parts[32][256];
    int np = split(path, parts, 32, err);
    if (np < 0) return np;
    int dir = walk(ws_fd, parts, np, true, path, err);
    if (dir < 0) return dir;
    int fd = open2(dir, parts[np - 1], O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0644);
    int e = errno;
    close(dir);
    if (fd < 0) return resolve_err(path, parts[np - 1], e, err);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ag_err_set(err, AG_EPARAMS, "%s: not a regular file", path);
    }
    int rc = 0;
    if (ftruncate(fd, 0) != 0) rc = resolve_err(path, parts[np - 1], errno, err);
    const char *p = data;
    size_t left = n;
    while (rc == 0 && left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            rc = resolve_err(path, parts[np - 1], w < 0 ? errno : ENOSPC, err);
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    close(fd);
    return rc;
}

static int get(int ws_fd, const char *path, size_t max_bytes, char **data, size_t *n,
               struct ag_err *err)
{
    char parts[32][256];
    int np = split(path, parts, 32, err);
    if (np < 0) return np;
    int dir = walk(ws_fd, parts, np, false, path, err);
    if (dir < 0) return dir;
    int fd = open2(dir, parts[np - 1], O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
    int e = errno;
    close(dir);
    if (fd < 0) return resolve_err(path, parts[np - 1], e, err);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ag_err_set(err, AG_EPARAMS, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return ag_err_set(err, AG_ETOOBIG, "%s: %lld bytes, the limit is %zu", path,
                          (long long)st.st_size, max_bytes);
    }
    int rc = ag_read_fd(fd, path, max_bytes, data, n, err);
    close(fd);
    return rc;
}

int sbx__ws_put(int ws_fd, uid_t uid, gid_t gid, const char *path, const void *data, size_t n,
                struct ag_err *err)
{
    int old_g = setfsgid(gid), old_u = setfsuid(uid);
    int rc = put(ws_fd, path, data, n, err);
    setfsuid((uid_t)old_u);
    setfsgid((gid_t)old_g);
    return rc;
}

int sbx__ws_get(int ws_fd, uid_t uid, gid_t gid, const char *path, size_t max_bytes, char **data,
                size_t *n, struct ag_err *err)
{
    int old_g = setfsgid(gid), old_u = setfsuid(uid);
    int rc = get(ws_fd, path, max_bytes, data, n, err);
    setfsuid((uid_t)old_u);
    setfsgid((gid_t)old_g);
    return rc;
}
