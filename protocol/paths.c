/*
 * paths.c - where the daemon keeps its data and its socket when no flag says otherwise.
 *
 * The daemon and the client resolve the same defaults from the same environment, so
 * `agentd &` followed by `agentctl ping` works with no flags at all.
 */
#include "protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <sys/un.h>

static int put(char *buf, size_t n, struct ag_err *err, const char *a, const char *b)
{
    int w = snprintf(buf, n, "%s%s", a, b);
    if (w < 0 || (size_t)w >= n) return ag_err_set(err, AG_EINVAL, "path too long: %s%s", a, b);
    return 0;
}

int proto_default_data_dir(char *buf, size_t n, struct ag_err *err)
{
    const char *v = getenv("AGENTD_DATA");
    if (v && *v) return put(buf, n, err, v, "");
    v = getenv("XDG_DATA_HOME");
    if (v && *v) return put(buf, n, err, v, "/agentd");
    v = getenv("HOME");
    if (v && *v) return put(buf, n, err, v, "/.local/share/agentd");
    return ag_err_set(err, AG_EINVAL, "cannot choose a data dir: set --data, AGENTD_DATA or HOME");
}

int proto_default_socket(char *buf, size_t n, const char *data_dir, struct ag_err *err)
{
    char dd[4096];
    struct stat st;
    int rc;
    const char *v = getenv("AGENTD_SOCKET");

    if (v && *v) {
        rc = put(buf, n, err, v, "");
    } else if ((v = getenv("XDG_RUNTIME_DIR")) && *v && stat(v, &st) == 0 && S_ISDIR(st.st_mode)) {
        rc = put(buf, n, err, v, "/agentd.sock");
    } else {
        if (!data_dir) {
            if ((rc = proto_default_data_dir(dd, sizeof(dd), err)) != 0) return rc;
            data_dir = dd;
        }
        rc = put(buf, n, err, data_dir, "/agentd.sock");
    }
    if (rc) return rc;
    if (strlen(buf) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return ag_err_set(err, AG_EINVAL, "socket path '%s' is longer than %zu bytes", buf,
                          sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    return 0;
}
