/*
 * test_base.c - unit tests of base/'s containers and codecs: the intrusive list, the UTF-8
 * helpers and base64.
 */
#include "../base/base.h"
#include "test.h"

struct item {
    int v;
    struct ag_list node;
};

/* The values of l's items, front to back, as "1,2,3". */
static const char *values(struct ag_list *l)
{
    static char out[256];
    size_t o = 0;
    out[0] = '\0';
    ag_list_foreach (it, l) {
        struct item *x = ag_list_entry(it, struct item, node);
        o += (size_t)snprintf(out + o, sizeof(out) - o, o ? ",%d" : "%d", x->v);
    }
    return out;
}

static void test_list(void)
{
    struct ag_list l;
    struct item it[5];
    ag_list_init(&l);
    CHECK(ag_list_empty(&l));
    CHECK(ag_list_pop(&l) == NULL);
    CHECK_STR(values(&l), "");
    for (int i = 0; i < 5; i++) it[i].v = i;
    ag_list_insert_tail(&l, &it[1].node);
    ag_list_insert_tail(&l, &it[2].node);
    ag_list_insert_head(&l, &it[0].node);
    ag_list_insert_tail(&l, &it[3].node);
    CHECK(!ag_list_empty(&l));
    CHECK_STR(values(&l), "0,1,2,3");
    ag_list_remove(&it[2].node); /* middle */
    CHECK_STR(values(&l), "0,1,3");
    ag_list_remove(&it[2].node); /* again: on no list now, nothing happens */
    CHECK_STR(values(&l), "0,1,3");
    ag_list_remove(&it[0].node); /* first */
    ag_list_remove(&it[3].node); /* last */
    CHECK_STR(values(&l), "1");
    CHECK(ag_list_pop(&l) == &it[1].node);
    CHECK(ag_list_empty(&l));

    /* A zeroed node is on no list. */
    struct item z = {0};
    ag_list_remove(&z.node);
    CHECK(z.node.next == NULL);

    /* The safe walk may remove what it visits. */
    for (int i = 0; i < 5; i++) ag_list_insert_tail(&l, &it[i].node);
    ag_list_foreach_safe (n, &l) {
        if (ag_list_entry(n, struct item, node)->v % 2 == 0) ag_list_remove(n);
    }
    CHECK_STR(values(&l), "1,3");

    /* move keeps the order and empties the source. */
    struct ag_list m;
    ag_list_init(&m);
    ag_list_move(&m, &l); /* empty source: no change */
    CHECK_STR(values(&l), "1,3");
    ag_list_insert_tail(&m, &it[0].node);
    ag_list_insert_tail(&m, &it[4].node);
    ag_list_move(&m, &l);
    CHECK(ag_list_empty(&m));
    CHECK_STR(values(&l), "1,3,0,4");
    ag_list_move(&l, &m);
    CHECK(ag_list_empty(&l));
    CHECK_STR(values(&m), "1,3,0,4");
    int order[4], n = 0;
    for (struct ag_list *x; (x = ag_list_pop(&m)) != NULL;)
        order[n++] = ag_list_entry(x, struct item, node)->v;
    CHECK(n == 4 && order[0] == 1 && order[1] == 3 && order[2] == 0 && order[3] == 4);
}

static void test_utf8_char(void)
{
    static const struct {
        const char *s;
        size_t n, want;
    } cases[] = {
        {"a", 1, 1},
        {"\x7F", 1, 1},
        {"", 1, 0},                 /* NUL */
        {"\xC3\xA9", 2, 2},         /* é */
        {"\xC3\xA9", 1, 0},         /* cut short */
        {"\xC0\x80", 2, 0},         /* overlong NUL */
        {"\xC1\xBF", 2, 0},         /* overlong */
        {"\xE2\x82\xAC", 3, 3},     /* € */
        {"\xE0\x9F\xBF", 3, 0},     /* overlong */
        {"\xE0\xA0\x80", 3, 3},     /* U+0800 */
        {"\xED\x9F\xBF", 3, 3},     /* U+D7FF */
        {"\xED\xA0\x80", 3, 0},     /* surrogate U+D800 */
        {"\xEF\xBF\xBD", 3, 3},     /* U+FFFD */
        {"\xF0\x8F\xBF\xBF", 4, 0}, /* overlong */
        {"\xF0\x9F\x98\x80", 4, 4}, /* 😀 */
        {"\xF4\x8F\xBF\xBF", 4, 4}, /* U+10FFFF */
        {"\xF4\x90\x80\x80", 4, 0}, /* past U+10FFFF */
        {"\xF5\x80\x80\x80", 4, 0},
        {"\x80", 1, 0},         /* lone continuation */
        {"\xE2\x28\xA1", 3, 0}, /* bad continuation */
        {"\xFF", 1, 0},
        {"\xC0\xAF", 2, 0},                 /* overlong '/' */
        {"\xE0\x80\xAF", 3, 0},             /* overlong '/' */
        {"\xF0\x80\x80\xAF", 4, 0},         /* overlong '/' */
        {"\xED\xBF\xBF", 3, 0},             /* surrogate U+DFFF */
        {"\xF8\x88\x80\x80\x80", 5, 0},     /* the old 5-byte form */
        {"\xFC\x84\x80\x80\x80\x80", 6, 0}, /* the old 6-byte form */
        {"\xBF", 1, 0},                     /* lone continuation */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECKF(ag_utf8_char(cases[i].s, cases[i].n) == cases[i].want, "case %zu: got %zu", i,
               ag_utf8_char(cases[i].s, cases[i].n));
    CHECK(ag_utf8_char("x", 0) == 0);
}

static void test_utf8_valid_append(void)
{
    CHECK(ag_utf8_valid("", 0));
    CHECK(ag_utf8_valid("h\xC3\xA9llo \xF0\x9F\x98\x80", 11));
    CHECK(!ag_utf8_valid("a\0b", 3));
    CHECK(!ag_utf8_valid("ab\xC3", 3));
    CHECK(!ag_utf8_valid("\xED\xA0\x80", 3));

    struct ag_buf b;
    ag_buf_init(&b);
    ag_utf8_append(&b, "", 0);
    CHECK(b.len == 0);
    ag_utf8_append(&b, "ok \xC3\xA9", 5);
    CHECK_STR(b.data, "ok \xC3\xA9");
    ag_buf_reset(&b);
    /* Each byte that starts no character becomes one U+FFFD; what follows is kept. */
    ag_utf8_append(&b,
                   "a\xFF"
                   "b\xC3",
                   4);
    CHECK_STR(b.data, "a\xEF\xBF\xBD"
                      "b\xEF\xBF\xBD");
    ag_buf_reset(&b);
    ag_utf8_append(&b, "x\0y", 3);
    CHECK_STR(b.data, "x\xEF\xBF\xBDy");
    ag_buf_reset(&b);
    ag_utf8_append(&b, "\xED\xA0\x80!", 4); /* a surrogate: three bytes, three replacements */
    CHECK_STR(b.data, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD!");
    CHECK(ag_utf8_valid(b.data, b.len));
    ag_buf_release(&b);
}

/* What a stream holds back at the end of a chunk: only the start of a character that may still
 * come out valid. */
static void test_utf8_tail(void)
{
    static const struct {
        const char *s;
        size_t n, want;
    } cases[] = {
        {"", 0, 0},
        {"ab", 2, 0},
        {"a\xC3", 2, 1},     /* é's first byte */
        {"a\xC3\xA9", 3, 0}, /* é, complete */
        {"a\xE2\x82", 3, 2}, /* two bytes of € */
        {"a\xE2", 2, 1},
        {"\xF0\x9F\x98", 3, 3},     /* three bytes of 😀 */
        {"\xF0\x9F\x98\x80", 4, 0}, /* 😀, complete */
        {"a\xE0\x80", 3, 0},        /* overlong already: nothing to wait for */
        {"a\xED\xA0", 3, 0},        /* a surrogate already */
        {"a\xF4\x90", 3, 0},        /* past U+10FFFF already */
        {"a\xC0", 2, 0},            /* leads nothing */
        {"a\xF8\x88\x80", 4, 0},    /* the old 5-byte form */
        {"a\x80", 2, 0},            /* lone continuation */
        {"\x80\x80\x80", 3, 0},
        {"\xF0\x9F\x98\x80\x80", 5, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECKF(ag_utf8_tail(cases[i].s, cases[i].n) == cases[i].want, "case %zu: got %zu", i,
               ag_utf8_tail(cases[i].s, cases[i].n));
}

static void test_utf8_count_prefix(void)
{
    CHECK(ag_utf8_count("") == 0);
    CHECK(ag_utf8_count("abc") == 3);
    CHECK(ag_utf8_count("h\xC3\xA9\xF0\x9F\x98\x80") == 3);

    const char *s = "ab\xC3\xA9\xE2\x82\xAC"; /* a b é € : 7 bytes */
    CHECK(ag_utf8_prefix(s, 7, 100) == 7);
    CHECK(ag_utf8_prefix(s, 7, 7) == 7);
    CHECK(ag_utf8_prefix(s, 7, 6) == 4); /* not inside € */
    CHECK(ag_utf8_prefix(s, 7, 5) == 4);
    CHECK(ag_utf8_prefix(s, 7, 4) == 4);
    CHECK(ag_utf8_prefix(s, 7, 3) == 2); /* not inside é */
    CHECK(ag_utf8_prefix(s, 7, 2) == 2);
    CHECK(ag_utf8_prefix(s, 7, 0) == 0);
}

static void test_base64(void)
{
    static const struct {
        const char *raw, *enc;
    } rfc[] = {
        /* RFC 4648 section 10 */
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof(rfc) / sizeof(rfc[0]); i++) {
        char *e = ag_base64_encode(rfc[i].raw, strlen(rfc[i].raw));
        CHECK_STR(e, rfc[i].enc);
        free(e);
        char *d = NULL;
        size_t n = 99;
        CHECK(ag_base64_decode(rfc[i].enc, &d, &n) == 0);
        CHECK(d && n == strlen(rfc[i].raw) && memcmp(d, rfc[i].raw, n) == 0 && d[n] == '\0');
        free(d);
    }
    /* Every byte value survives the round trip. */
    unsigned char all[256];
    for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
    char *e = ag_base64_encode(all, sizeof(all));
    CHECK(strlen(e) == 344);
    char *d = NULL;
    size_t n = 0;
    CHECK(ag_base64_decode(e, &d, &n) == 0 && n == 256 && memcmp(d, all, 256) == 0);
    free(e);
    free(d);
    /* Unpadded input decodes; anything after '=' is ignored; other bytes are errors. */
    CHECK(ag_base64_decode("Zm9vYg", &d, &n) == 0 && n == 4 && memcmp(d, "foob", 4) == 0);
    free(d);
    CHECK(ag_base64_decode("Zg==junk", &d, &n) == 0 && n == 1 && d[0] == 'f');
    free(d);
    d = NULL;
    CHECK(ag_base64_decode("Zm9v Yg==", &d, &n) == AG_EINVAL && d == NULL);
    CHECK(ag_base64_decode("Zm9v!", &d, &n) == AG_EINVAL && d == NULL);
    CHECK(ag_base64_decode("Zm9v-_", &d, &n) == AG_EINVAL); /* the URL alphabet is not ours */
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_list);
    RUN(test_utf8_char);
    RUN(test_utf8_valid_append);
    RUN(test_utf8_tail);
    RUN(test_utf8_count_prefix);
    RUN(test_base64);
    return TEST_END();
}
