/*
 * client.h - agentctl's connection to agentd: one blocking Unix-socket client, one request at a
 * time.
 *
 * A connection is opened with ctl_open, which also performs the `initialize` handshake (every
 * connection starts with it, so the daemon knows who is talking and we know what it serves).
 * ctl_call sends one JSON-RPC request and reads lines until the response with the same id,
 * skipping notifications. Each call waits at most timeout_ms for its answer.
 *
 * Errors follow the house rule: 0 or a negative AG_E code, with the detail in struct ag_err.
 * For an error response from the daemon, err->code is the AG_E code matching the wire code
 * (proto_ag_code), err->msg is the daemon's message verbatim, and the handle keeps the error's
 * data.type ("already_exists", "invalid_definition", ...) for callers that branch on it. A
 * transport failure (timeout, daemon gone, garbage on the wire) closes the connection: later
 * calls fail with AG_ECLOSED.
 */
#ifndef CTL_CLIENT_H
#define CTL_CLIENT_H

#include <stdint.h>

#include "../protocol/protocol.h"

#define CTL_VERSION         "0.1.0"
#define CTL_MAX_FRAME_BYTES (64u * 1024 * 1024) /* longest response line we accept */

struct ctl_client {
    int fd;                     /* connected socket (non-blocking), -1 once closed */
    char path[108];             /* socket path, for messages ("pong from PATH") */
    int64_t timeout_ms;         /* how long one call waits for its answer; 0 waits forever */
    int64_t next_id;            /* id of the next request; ids start at 1 */
    struct proto_framer framer; /* splits the daemon's bytes into response lines */
    struct proto_val *server;   /* the initialize result (owned); NULL before it */
    char err_type[64];          /* data.type of the last error response; "" otherwise */
    /* Optional: called with each notification that arrives while ctl_call waits. */
    void (*on_notification)(void *ud, const char *method, const struct proto_val *params);
    void *notification_ud; /* passed to on_notification */
};

/* Connects to the socket at path and sends `initialize`. On failure the handle is still safe to
 * pass to ctl_close. A refused or missing socket gets a message telling how to start agentd. */
int ctl_open(struct ctl_client *c, const char *path, int64_t timeout_ms, struct ag_err *err);
void ctl_close(struct ctl_client *c);

/* Sends method with params (borrowed; NULL sends {}) and waits for its response. On success
 * *result is the response's result (caller frees). */
int ctl_call(struct ctl_client *c, const char *method, const struct proto_val *params,
             struct proto_val **result, struct ag_err *err);

#endif
