/*
 * mem.c - allocation wrappers that abort on host out-of-memory, the bump arena and the growable
 * byte buffer.
 *
 * The arena hands out 16-byte aligned blocks from chunks; a request larger than the chunk size
 * gets a chunk of its own. Reset keeps the first chunk so a per-request arena stops allocating
 * once warm.
 */
#include "base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t bytes)
{
    fprintf(stderr, "agentd: out of memory allocating %zu bytes\n", bytes);
    abort();
}

void *ag_malloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) oom(bytes);
    return p;
}

void *ag_malloc_aligned(size_t align, size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, align, bytes ? bytes : 1) != 0) oom(bytes);
    return p;
}

void *ag_calloc(size_t n, size_t bytes)
{
    void *p = calloc(n ? n : 1, bytes ? bytes : 1);
    if (!p) oom(n * bytes);
    return p;
}

void *ag_realloc(void *p, size_t bytes)
{
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) oom(bytes);
    return q;
}

char *ag_strdup(const char *s)
{
    return ag_strndup(s, strlen(s));
}

char *ag_strndup(const char *s, size_t n)
{
    char *p = ag_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *ag_asprintf(const char *fmt, ...)
{
    struct ag_buf b;
    va_list ap;

    ag_buf_init(&b);
    va_start(ap, fmt);
    ag_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (!b.data) ag_buf_reserve(&b, 1);
    return ag_buf_detach(&b, NULL);
}

/* ---- arena ---- */

struct ag_arena_chunk {
    struct ag_arena_chunk *next; /* older chunk */
    size_t used;                 /* bytes handed out from data */
    size_t cap;                  /* bytes in data */
    _Alignas(16) unsigned char data[];
};

void ag_arena_init(struct ag_arena *a, size_t chunk_bytes)
{
    a->head = NULL;
    a->chunk_bytes = chunk_bytes ? chunk_bytes : 64 * 1024;
}

void *ag_arena_alloc(struct ag_arena *a, size_t bytes)
{
    size_t need = (bytes + 15) & ~(size_t)15;
    struct ag_arena_chunk *c = a->head;

    if (!c || c->cap - c->used < need) {
        size_t cap = need > a->chunk_bytes ? need : a->chunk_bytes;
        c = ag_malloc(sizeof(*c) + cap);
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += need;
    return p;
}

char *ag_arena_strdup(struct ag_arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = ag_arena_alloc(a, n);
    memcpy(p, s, n);
    return p;
}

void ag_arena_reset(struct ag_arena *a)
{
    struct ag_arena_chunk *c = a->head;
    if (!c) return;
    while (c->next) {
        struct ag_arena_chunk *older = c->next;
        free(c);
        c = older;
    }
    c->used = 0;
    a->head = c;
}

void ag_arena_release(struct ag_arena *a)
{
    ag_arena_reset(a);
    free(a->head);
    a->head = NULL;
}

/* ---- buffer ---- */

void ag_buf_init(struct ag_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void ag_buf_release(struct ag_buf *b)
{
    free(b->data);
    ag_buf_init(b);
}

void ag_buf_reserve(struct ag_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    b->data = ag_realloc(b->data, cap);
    b->cap = cap;
    b->data[b->len] = '\0';
}

void ag_buf_append(struct ag_buf *b, const void *data, size_t n)
{
    ag_buf_reserve(b, n);
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void ag_buf_puts(struct ag_buf *b, const char *s)
{
    ag_buf_append(b, s, strlen(s));
}

void ag_buf_putc(struct ag_buf *b, char c)
{
    ag_buf_append(b, &c, 1);
}

void ag_buf_vprintf(struct ag_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    ag_buf_reserve(b, 64);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    if (n >= 0 && (size_t)n >= b->cap - b->len) {
        ag_buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    }
    if (n > 0) b->len += (size_t)n;
    va_end(ap2);
}

void ag_buf_printf(struct ag_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ag_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void ag_buf_consume(struct ag_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data) b->data[b->len] = '\0';
}

void ag_buf_reset(struct ag_buf *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

char *ag_buf_detach(struct ag_buf *b, size_t *len)
{
    char *p = b->data;
    if (len) *len = b->len;
    ag_buf_init(b);
    return p;
}
