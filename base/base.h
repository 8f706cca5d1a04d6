/*
 * base.h - shared primitives for every agentd module.
 *
 * Errors: functions return 0 on success or a negative AG_E... code. The code table below is the
 * single source of truth (an X-macro, as in libuv's uv-errno table): each code keeps its number
 * forever, so clients and logs can rely on it. Detail for a human goes into an optional
 * struct ag_err (code + message naming the file, line or field at fault).
 *
 * Also here: levelled logging, a bump arena, a growable byte buffer, an intrusive list, UTF-8 and
 * base64 helpers, clocks and a few string and filesystem helpers. Host out-of-memory aborts
 * (nothing a user does can cause it); everything a user or a file can cause returns an error.
 */
#ifndef AG_BASE_H
#define AG_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* name, number (never reused), default message. */
#define AG_ERRNO_MAP(X)                                                                            \
    X(NOMEM, -1, "out of memory")                                                                  \
    X(INVAL, -2, "invalid argument")                                                               \
    X(NOTFOUND, -3, "not found")                                                                   \
    X(EXISTS, -4, "already exists")                                                                \
    X(IO, -5, "input/output error")                                                                \
    X(PARSE, -6, "parse error")                                                                    \
    X(TOOBIG, -7, "too large")                                                                     \
    X(BUSY, -8, "busy")                                                                            \
    X(PROTO, -9, "protocol error")                                                                 \
    X(DB, -10, "database error")                                                                   \
    X(LOCKED, -11, "locked by another process")                                                    \
    X(CLOSED, -12, "connection closed")                                                            \
    X(TIMEOUT, -13, "timed out")                                                                   \
    X(UNSUPPORTED, -14, "not supported")                                                           \
    X(SPEC, -15, "invalid definition")                                                             \
    X(CTXOVERFLOW, -16, "context overflow")                                                        \
    X(QUOTA, -17, "quota exceeded")                                                                \
    X(TOOL, -18, "tool failed")                                                                    \
    X(SANDBOX, -19, "sandbox gone")                                                                \
    X(CANCELLED, -20, "cancelled")                                                                 \
    X(NOMETHOD, -21, "method not found")                                                           \
    X(PARAMS, -22, "invalid params")                                                               \
    X(SHUTDOWN, -23, "shutting down")                                                              \
    X(INTERNAL, -24, "internal error")

enum {
    AG_OK = 0,
#define AG__ERR_ENUM(name, num, msg) AG_E##name = (num),
    AG_ERRNO_MAP(AG__ERR_ENUM)
#undef AG__ERR_ENUM
};

/* Human-readable default message for a code ("unknown error" for an unknown one). */
const char *ag_strerror(int code);
/* Stable lower-case identifier for a code, e.g. "not_found"; used in protocol error data. */
const char *ag_errname(int code);

/* Error detail kept by the caller: a code plus a message naming the field, file or line. */
struct ag_err {
    int code;      /* AG_E... or 0 */
    char msg[512]; /* NUL-terminated, complete sentence-like message */
};

/* Records code and a printf-style message in err (which may be NULL). Returns code, so callers
 * can write "return ag_err_set(err, AG_EINVAL, "...")". */
int ag_err_set(struct ag_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes err's message with a printf-style string (e.g. a file name); keeps the code. */
void ag_err_prefix(struct ag_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ag_err_clear(struct ag_err *err);

/* ---- logging ---- */
enum ag_log_level { AG_LOG_ERROR = 0, AG_LOG_WARN, AG_LOG_INFO, AG_LOG_DEBUG };

void ag_log_set_level(enum ag_log_level level);
enum ag_log_level ag_log_get_level(void);
/* Parses "error", "warn", "info" or "debug"; returns AG_EINVAL otherwise. */
int ag_log_parse_level(const char *name, enum ag_log_level *out);
void ag_log(enum ag_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define ag_error(...) ag_log(AG_LOG_ERROR, __VA_ARGS__)
#define ag_warn(...)  ag_log(AG_LOG_WARN, __VA_ARGS__)
#define ag_info(...)  ag_log(AG_LOG_INFO, __VA_ARGS__)
#define ag_debug(...)                                                                              \
    do {                                                                                           \
        if (ag_log_get_level() >= AG_LOG_DEBUG) ag_log(AG_LOG_DEBUG, __VA_ARGS__);                 \
    } while (0)

/* ---- allocation: abort on host OOM ---- */
void *ag_malloc(size_t bytes);
void *ag_calloc(size_t n, size_t bytes);
void *ag_realloc(void *p, size_t bytes);
/* bytes at an address that is a multiple of align (a power of two, at least sizeof(void *)),
 * freed with free(). */
void *ag_malloc_aligned(size_t align, size_t bytes);
char *ag_strdup(const char *s);
char *ag_strndup(const char *s, size_t n);
char *ag_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- arena: bump allocation, freed all at once (per-turn and per-request data) ---- */
struct ag_arena_chunk;
struct ag_arena {
    struct ag_arena_chunk *head; /* newest chunk first */
    size_t chunk_bytes;          /* default size of new chunks */
};

void ag_arena_init(struct ag_arena *a, size_t chunk_bytes);
void *ag_arena_alloc(struct ag_arena *a, size_t bytes); /* 16-byte aligned */
char *ag_arena_strdup(struct ag_arena *a, const char *s);
/* Frees every chunk but the first, which is kept for reuse. */
void ag_arena_reset(struct ag_arena *a);
void ag_arena_release(struct ag_arena *a);

/* ---- growable byte buffer, always NUL-terminated when data != NULL ---- */
struct ag_buf {
    char *data; /* owned; NULL until the first append */
    size_t len; /* bytes used, excluding the terminating NUL */
    size_t cap; /* bytes allocated */
};

void ag_buf_init(struct ag_buf *b);
void ag_buf_release(struct ag_buf *b);
void ag_buf_reserve(struct ag_buf *b, size_t extra);
void ag_buf_append(struct ag_buf *b, const void *data, size_t n);
void ag_buf_puts(struct ag_buf *b, const char *s);
void ag_buf_putc(struct ag_buf *b, char c);
void ag_buf_printf(struct ag_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ag_buf_vprintf(struct ag_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Drops the first n bytes. */
void ag_buf_consume(struct ag_buf *b, size_t n);
void ag_buf_reset(struct ag_buf *b);
/* Hands the data to the caller (who frees it) and leaves b empty. */
char *ag_buf_detach(struct ag_buf *b, size_t *len);

/* ---- intrusive doubly linked list (after libuv's queue.h) ----
 *
 * A list is a head node; items embed a struct ag_list and are found again with ag_list_entry.
 * The list is circular: an empty head points at itself, so insert and remove never test for
 * the ends. A removed node points at itself too, and removing a node that is on no list
 * (removed already, or zeroed) does nothing.
 *
 *   struct conn { struct ag_list node; ... };
 *   ag_list_insert_tail(&d->conns, &c->node);
 *   ag_list_foreach(it, &d->conns) { struct conn *c = ag_list_entry(it, struct conn, node); }
 */
struct ag_list {
    struct ag_list *prev, *next;
};

void ag_list_init(struct ag_list *l);
bool ag_list_empty(const struct ag_list *l);
void ag_list_insert_head(struct ag_list *l, struct ag_list *node);
void ag_list_insert_tail(struct ag_list *l, struct ag_list *node);
void ag_list_remove(struct ag_list *node);
/* The first node, unlinked; NULL when l is empty (a FIFO with insert_tail). */
struct ag_list *ag_list_pop(struct ag_list *l);
/* Moves every node of from to the end of to, in order; from is left empty. */
void ag_list_move(struct ag_list *from, struct ag_list *to);
/* The struct of type that holds node as its member field. */
#define ag_list_entry(node, type, field) ((type *)(void *)((char *)(node)-offsetof(type, field)))
/* Walks l's nodes front to back; the body must not remove node (see the _safe form). */
#define ag_list_foreach(node, l)                                                                   \
    for (struct ag_list *node = (l)->next; node != (l); node = node->next)
/* The same, where the body may remove (or free) node. */
#define ag_list_foreach_safe(node, l)                                                              \
    for (struct ag_list *node = (l)->next, *node##_next = node->next; node != (l);                 \
         node = node##_next, node##_next = node->next)

/* ---- UTF-8 ----
 * Valid means what RFC 3629 allows: no overlong forms, no surrogates, nothing past U+10FFFF.
 * NUL counts as invalid here, since the text goes into C strings and JSON. */
/* Bytes of the valid character that starts s (n bytes available): 1..4, or 0 when none does. */
size_t ag_utf8_char(const char *s, size_t n);
/* True when all n bytes are valid UTF-8 (and no NUL). */
bool ag_utf8_valid(const char *s, size_t n);
/* Appends s to b with each byte that starts no valid character replaced by U+FFFD. */
void ag_utf8_append(struct ag_buf *b, const char *s, size_t n);
/* Bytes at the end of s (n bytes) that begin a valid character but stop short of its end: 0..3.
 * A stream cut into chunks holds them back until the next chunk completes (or ends) them. */
size_t ag_utf8_tail(const char *s, size_t n);
/* Characters in the NUL-terminated s (bytes that are not continuation bytes). */
size_t ag_utf8_count(const char *s);
/* The longest prefix of s (n bytes) that is at most max bytes and does not end inside a
 * character: where to cut a long text. */
size_t ag_utf8_prefix(const char *s, size_t n, size_t max);

/* ---- base64 (RFC 4648, with padding) ---- */
/* NUL-terminated encoding of n bytes; caller frees. */
char *ag_base64_encode(const void *data, size_t n);
/* Decodes s up to its first '=' (or its end) into *out (n_out bytes, NUL-terminated as well;
 * caller frees). AG_EINVAL, *out untouched, when s holds a byte outside the alphabet. */
int ag_base64_decode(const char *s, char **out, size_t *n_out);

/* ---- clocks ---- */
int64_t ag_now_ms(void);  /* monotonic milliseconds */
int64_t ag_now_ns(void);  /* monotonic nanoseconds */
int64_t ag_wall_ms(void); /* Unix epoch milliseconds */

/* ---- strings and files ---- */
/* Edit distance between a and b (for "did you mean" suggestions); capped at 255 chars each. */
int ag_levenshtein(const char *a, const char *b);
int ag_str_has_suffix(const char *s, const char *suffix);
/* Creates dir and its parents with the given mode; existing directories are fine. */
int ag_mkdir_p(const char *path, unsigned mode, struct ag_err *err);
/* Reads a whole file (up to max_bytes) into *out (NUL-terminated; caller frees). */
int ag_read_file(const char *path, size_t max_bytes, char **out, size_t *len, struct ag_err *err);
/* Reads fd to its end (up to max_bytes) into *out, like ag_read_file; name is for messages. */
int ag_read_fd(int fd, const char *name, size_t max_bytes, char **out, size_t *len,
               struct ag_err *err);
/* Returns the last path component (a pointer into path). */
const char *ag_basename(const char *path);

#endif
