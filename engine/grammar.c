/*
 * grammar.c - the byte-level pushdown matcher of a compiled JSON Schema (grammar.h) and the
 * shortest completion of a value.
 *
 * The state is a set of stacks of frames. A frame is a value being matched: VALUE (not begun:
 * which node is decided by its first byte, forking on ALT and LIT), OBJ, FREEOBJ, ARR, STR, NUM,
 * LIT, each with a small state and two counters. A finished frame is popped and its parent
 * notified; a number ends when a byte cannot continue it, and that byte goes on to the parent.
 */
#include "grammar_int.h"

#include <math.h>
#include <string.h>

static size_t stk_bytes(const struct stk *s)
{
    return offsetof(struct stk, f) + (size_t)s->depth * sizeof(struct frame);
}

/* Adds s to o unless it is there already (or o is full). */
static void emit(struct gstate *o, const struct stk *s)
{
    size_t nb = stk_bytes(s);
    for (int i = 0; i < o->n; i++)
        if (o->s[i].depth == s->depth && memcmp(&o->s[i], s, nb) == 0) return;
    if (o->n < ENG_GRAMMAR_MAX_STACKS) memcpy(&o->s[o->n++], s, nb);
}

static bool push(struct stk *s, int32_t node, uint8_t kind)
{
    if (s->depth >= ENG_GRAMMAR_MAX_DEPTH) return false;
    s->f[s->depth++] = (struct frame){.node = node, .kind = kind};
    return true;
}

/* Pops the finished top frame and tells its parent. */
static void complete(const struct eng_grammar *g, struct stk *s)
{
    (void)g;
    s->depth--;
    if (s->depth == 0) return;
    struct frame *p = &s->f[s->depth - 1];
    if (p->kind == FR_FREEOBJ && p->st == 1)
        p->st = 2; /* the key string ended */
    else if (p->kind == FR_ARR)
        p->a++;
}

static void feed(const struct eng_grammar *g, struct stk s, int b, struct gstate *o, int guard);

/* Begins the value of node at the top frame (a VALUE frame) with byte b. */
static void start(const struct eng_grammar *g, struct stk s, int32_t node, int b, struct gstate *o,
                  int guard)
{
    const struct gnode *n = &g->nodes[node];
    struct frame *t = &s.f[s.depth - 1];
    switch (n->kind) {
    case K_ALT:
        if (guard > 32) return;
        for (int i = 0; i < n->n; i++) {
            struct stk c = s;
            c.f[c.depth - 1].node = g->ints[n->a + i];
            feed(g, c, b, o, guard + 1);
        }
        return;
    case K_OBJ:
    case K_FREEOBJ:
        if (b != '{') return;
        *t = (struct frame){.node = node, .kind = n->kind == K_OBJ ? FR_OBJ : FR_FREEOBJ};
        emit(o, &s);
        return;
    case K_ARR:
        if (b != '[') return;
        *t = (struct frame){.node = node, .kind = FR_ARR};
        emit(o, &s);
        return;
    case K_STR:
        if (b != '"') return;
        *t = (struct frame){.node = node, .kind = FR_STR};
        emit(o, &s);
        return;
    case K_NUM:
    case K_INT:
        *t = (struct frame){.node = node, .kind = FR_NUM};
        if (b == '-')
            t->st = 1;
        else if (b == '0')
            t->st = 2;
        else if (b >= '1' && b <= '9')
            t->st = 3, t->a = 1;
        else
            return;
        emit(o, &s);
        return;
    case K_LIT:
        for (int i = 0; i < n->n; i++) {
            const char *l = g->lits[n->a + i];
            if ((unsigned char)l[0] != b) continue;
            struct stk c = s;
            c.f[c.depth - 1] = (struct frame){.node = node, .kind = FR_LIT, .a = n->a + i, .b = 1};
            if (g->lit_len[n->a + i] == 1) complete(g, &c);
            emit(o, &c);
        }
        return;
    default:
        return;
    }
}

/* OBJ: fork over the properties a '"' may begin: from index `from` up to the first required
 * one. */
static void obj_keys(const struct eng_grammar *g, struct stk *s, struct gstate *o)
{
    struct frame *t = &s->f[s->depth - 1];
    const struct gnode *n = &g->nodes[t->node];
    for (int i = t->a; i < n->n; i++) {
        struct stk c = *s;
        struct frame *ct = &c.f[c.depth - 1];
        ct->st = 1;
        ct->b = i << 16 | 1; /* candidate i, key byte 1 matched (the quote) */
        emit(o, &c);
        if (g->props[n->a + i].required) break;
    }
}

static bool obj_required_left(const struct eng_grammar *g, const struct frame *t)
{
    const struct gnode *n = &g->nodes[t->node];
    for (int i = t->a; i < n->n; i++)
        if (g->props[n->a + i].required) return true;
    return false;
}

static bool is_hex(int b)
{
    return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F');
}

/* Feeds byte b to stack s; successors go to o. */
static void feed(const struct eng_grammar *g, struct stk s, int b, struct gstate *o, int guard)
{
    if (s.depth == 0) return; /* a finished value takes nothing more */
    struct frame *t = &s.f[s.depth - 1];
    switch (t->kind) {
    case FR_VALUE:
        start(g, s, t->node, b, o, guard);
        return;
    case FR_LIT: {
        const char *l = g->lits[t->a];
        if ((unsigned char)l[t->b] != b) return;
        if (++t->b == g->lit_len[t->a]) complete(g, &s);
        emit(o, &s);
        return;
    }
    case FR_STR: {
        const int max = g->nodes[t->node].max;
        if (t->b == 0) { /* normal */
            if (b == '"') {
                complete(g, &s);
            } else if (b == '\\') {
                if (max && t->a >= max) return; /* an escape is one more character */
                t->b = 1;
            } else if (b < 0x20) {
                return;
            } else {
                if (b >= 0x80) {
                    if (b >= 0xC2 && b <= 0xDF)
                        t->b = 6 + 1;
                    else if (b >= 0xE0 && b <= 0xEF)
                        t->b = 6 + 2;
                    else if (b >= 0xF0 && b <= 0xF4)
                        t->b = 6 + 3;
                    else
                        return;
                }
                if (max && t->a >= max) return;
                t->a++;
            }
        } else if (t->b == 1) { /* after a backslash */
            if (b == 'u')
                t->b = 14; /* 4 hex digits to come */
            else if (b && strchr("\"\\/bfnrt", b))
                t->b = 0;
            else
                return;
            t->a++;              /* counted against maxLength at the backslash */
        } else if (t->b >= 11) { /* \uXXXX: b - 10 hex digits left */
            if (!is_hex(b)) return;
            /* No surrogate halves (\uD800-\uDFFF): parsers refuse a lone one, and a pair is
             * better written as the character itself. st remembers a first digit d. */
            if (t->b == 14) t->st = b == 'd' || b == 'D';
            if (t->b == 13 && t->st && !(b >= '0' && b <= '7')) return;
            t->b = t->b == 11 ? 0 : t->b - 1;
        } else { /* UTF-8 continuation bytes left: b - 6 */
            if (b < 0x80 || b > 0xBF) return;
            t->b = t->b == 7 ? 0 : t->b - 1;
        }
        emit(o, &s);
        return;
    }
    case FR_NUM: {
        const bool integer = g->nodes[t->node].kind == K_INT;
        const bool digit = b >= '0' && b <= '9';
        int st = t->st;
        int next = -1;
        switch (st) {
        case 1:
            next = b == '0' ? 2 : digit ? 3 : -1;
            break;
        case 2:
            next = (b == '.' && !integer) ? 4 : ((b == 'e' || b == 'E') && !integer) ? 6 : -1;
            break;
        case 3:
            next = digit && t->a < (integer ? 18 : 20)  ? 3
                   : b == '.' && !integer               ? 4
                   : (b == 'e' || b == 'E') && !integer ? 6
                                                        : -1;
            break;
        case 4:
            next = digit ? 5 : -1;
            break;
        case 5:
            next = digit && t->a < 20 ? 5 : (b == 'e' || b == 'E') ? 6 : -1;
            break;
        case 6:
            next = (b == '+' || b == '-') ? 7 : digit ? 8 : -1;
            break;
        case 7:
            next = digit ? 8 : -1;
            break;
        case 8:
            next = digit && t->a < 3 ? 8 : -1;
            break;
        }
        if (next >= 0) {
            t->a = next == st ? t->a + 1 : (digit ? 1 : 0);
            t->st = (uint8_t)next;
            emit(o, &s);
            return;
        }
        if (st == 2 || st == 3 || st == 5 || st == 8) { /* the number ends; b is the parent's */
            complete(g, &s);
            feed(g, s, b, o, guard);
        }
        return;
    }
    case FR_OBJ: {
        const struct gnode *n = &g->nodes[t->node];
        switch (t->st) {
        case 0: /* after '{' */
        case 6: /* after ',' */
        case 7: /* after ", " */
            if (t->st == 6 && b == ' ') {
                t->st = 7;
                emit(o, &s);
            } else if (b == '"') {
                obj_keys(g, &s, o);
            } else if (b == '}' && t->st == 0 && !obj_required_left(g, t)) {
                complete(g, &s);
                emit(o, &s);
            }
            return;
        case 1: { /* inside a key */
            int cand = t->b >> 16, pos = t->b & 0xffff;
            const struct gprop *p = &g->props[n->a + cand];
            if ((unsigned char)p->key[pos] != b) return;
            pos++;
            t->b = cand << 16 | pos;
            if (pos == p->len) t->st = 2;
            emit(o, &s);
            return;
        }
        case 2: /* before ':' */
            if (b != ':') return;
            t->st = 3;
            emit(o, &s);
            return;
        case 3: /* after ':' */
        case 4: /* after ": " */
            if (t->st == 3 && b == ' ') {
                t->st = 4;
                emit(o, &s);
                return;
            }
            {
                int cand = t->b >> 16;
                t->a = cand + 1;
                t->st = 5;
                if (!push(&s, g->props[n->a + cand].node, FR_VALUE)) return;
                feed(g, s, b, o, guard);
            }
            return;
        case 5: /* after a value */
            if (b == ',' && t->a < n->n) {
                t->st = 6;
                emit(o, &s);
            } else if (b == '}' && !obj_required_left(g, t)) {
                complete(g, &s);
                emit(o, &s);
            }
            return;
        }
        return;
    }
    case FR_FREEOBJ:
        switch (t->st) {
        case 0: /* after '{' */
        case 6:
        case 7:
            if (t->st == 6 && b == ' ') {
                t->st = 7;
                emit(o, &s);
            } else if (b == '"') {
                t->st = 1;
                if (!push(&s, N_ANYSTR, FR_STR)) return;
                emit(o, &s);
            } else if (b == '}' && t->st == 0) {
                complete(g, &s);
                emit(o, &s);
            }
            return;
        case 2:
            if (b != ':') return;
            t->st = 3;
            emit(o, &s);
            return;
        case 3:
        case 4:
            if (t->st == 3 && b == ' ') {
                t->st = 4;
                emit(o, &s);
                return;
            }
            t->st = 5;
            if (!push(&s, N_ANY, FR_VALUE)) return;
            feed(g, s, b, o, guard);
            return;
        case 5:
            if (b == ',') {
                t->st = 6;
                emit(o, &s);
            } else if (b == '}') {
                complete(g, &s);
                emit(o, &s);
            }
            return;
        }
        return;
    case FR_ARR: {
        const struct gnode *n = &g->nodes[t->node];
        switch (t->st) {
        case 0: /* after '[' */
            if (b == ']') {
                if (n->min > 0) return;
                complete(g, &s);
                emit(o, &s);
                return;
            }
            t->st = 1;
            if (!push(&s, n->a, FR_VALUE)) return;
            feed(g, s, b, o, guard);
            return;
        case 1: /* after an item */
            if (b == ',' && t->a < n->max) {
                t->st = 2;
                emit(o, &s);
            } else if (b == ']' && t->a >= n->min) {
                complete(g, &s);
                emit(o, &s);
            }
            return;
        case 2: /* after ',' */
        case 3: /* after ", " */
            if (t->st == 2 && b == ' ') {
                t->st = 3;
                emit(o, &s);
                return;
            }
            t->st = 1;
            if (!push(&s, n->a, FR_VALUE)) return;
            feed(g, s, b, o, guard);
            return;
        }
        return;
    }
    }
}

void eng__gstate_advance(const struct eng_grammar *g, const struct gstate *in, int b,
                         struct gstate *o)
{
    o->n = 0;
    for (int i = 0; i < in->n; i++) feed(g, in->s[i], b, o, 0);
}

void eng__gstate_copy(struct gstate *dst, const struct gstate *src)
{
    dst->n = src->n;
    for (int i = 0; i < src->n; i++) memcpy(&dst->s[i], &src->s[i], stk_bytes(&src->s[i]));
}

void eng_gmatch_reset(struct eng_gmatch *m)
{
    m->st.n = 1;
    m->st.s[0].depth = 1;
    m->st.s[0].f[0] = (struct frame){.node = m->g->root, .kind = FR_VALUE};
}

int eng_gmatch_new(const struct eng_grammar *g, struct eng_gmatch **out, struct ag_err *err)
{
    (void)err;
    struct eng_gmatch *m = ag_calloc(1, sizeof(*m));
    m->g = g;
    eng_gmatch_reset(m);
    *out = m;
    return 0;
}

void eng_gmatch_free(struct eng_gmatch *m)
{
    if (!m) return;
    free(m->levels);
    free(m->dfs_node);
    free(m->dfs_depth);
    free(m);
}

bool eng_gmatch_accept(struct eng_gmatch *m, const char *bytes, size_t n)
{
    struct gstate *a = ag_calloc(2, sizeof(struct gstate)), *b = a + 1;
    eng__gstate_copy(a, &m->st);
    for (size_t i = 0; i < n; i++) {
        eng__gstate_advance(m->g, a, (unsigned char)bytes[i], b);
        if (b->n == 0) {
            free(a);
            return false;
        }
        eng__gstate_copy(a, b);
    }
    eng__gstate_copy(&m->st, a);
    free(a);
    return true;
}

bool eng_gmatch_done(const struct eng_gmatch *m)
{
    for (int i = 0; i < m->st.n; i++)
        if (m->st.s[i].depth == 0) return true;
    return false;
}

bool eng_gmatch_can_end(const struct eng_gmatch *m)
{
    for (int i = 0; i < m->st.n; i++) {
        const struct stk *s = &m->st.s[i];
        if (s->depth == 0) return true;
        /* A number at the very end of the value may stop here. */
        bool ok = true;
        for (int d = s->depth - 1; d >= 0 && ok; d--) {
            const struct frame *f = &s->f[d];
            if (d == s->depth - 1)
                ok = f->kind == FR_NUM && (f->st == 2 || f->st == 3 || f->st == 5 || f->st == 8);
            else
                ok = false;
        }
        if (ok && s->depth == 1) return true;
    }
    return false;
}

/* ---- the shortest completion ---- */

/* Appends the shortest value of node to out; false when none within the recursion limit. */
static bool min_value(const struct eng_grammar *g, int32_t node, struct ag_buf *out, int depth)
{
    if (depth > 24) return false;
    const struct gnode *n = &g->nodes[node];
    switch (n->kind) {
    case K_ALT: {
        struct ag_buf best, cur;
        ag_buf_init(&best);
        ag_buf_init(&cur);
        bool found = false;
        for (int i = 0; i < n->n; i++) {
            cur.len = 0;
            if (!min_value(g, g->ints[n->a + i], &cur, depth + 1)) continue;
            if (!found || cur.len < best.len) {
                best.len = 0;
                ag_buf_append(&best, cur.data ? cur.data : "", cur.len);
                found = true;
            }
        }
        if (found) ag_buf_append(out, best.data ? best.data : "", best.len);
        ag_buf_release(&best);
        ag_buf_release(&cur);
        return found;
    }
    case K_OBJ: {
        ag_buf_append(out, "{", 1);
        bool first = true;
        for (int i = 0; i < n->n; i++) {
            const struct gprop *p = &g->props[n->a + i];
            if (!p->required) continue;
            if (!first) ag_buf_append(out, ",", 1);
            first = false;
            ag_buf_append(out, p->key, (size_t)p->len);
            ag_buf_append(out, ":", 1);
            if (!min_value(g, p->node, out, depth + 1)) return false;
        }
        ag_buf_append(out, "}", 1);
        return true;
    }
    case K_FREEOBJ:
        ag_buf_append(out, "{}", 2);
        return true;
    case K_ARR:
        ag_buf_append(out, "[", 1);
        for (int i = 0; i < n->min; i++) {
            if (i) ag_buf_append(out, ",", 1);
            if (!min_value(g, n->a, out, depth + 1)) return false;
        }
        ag_buf_append(out, "]", 1);
        return true;
    case K_STR:
        ag_buf_append(out, "\"\"", 2);
        return true;
    case K_NUM:
    case K_INT:
        ag_buf_append(out, "0", 1);
        return true;
    case K_LIT: {
        int best = 0;
        for (int i = 1; i < n->n; i++)
            if (g->lit_len[n->a + i] < g->lit_len[n->a + best]) best = i;
        ag_buf_append(out, g->lits[n->a + best], (size_t)g->lit_len[n->a + best]);
        return true;
    }
    }
    return false;
}

/* Appends the required properties of OBJ frame t from index t->a on, then '}'. */
static bool obj_rest(const struct eng_grammar *g, const struct frame *t, struct ag_buf *out,
                     bool comma_first)
{
    const struct gnode *n = &g->nodes[t->node];
    bool need_comma = comma_first;
    for (int i = t->a; i < n->n; i++) {
        const struct gprop *p = &g->props[n->a + i];
        if (!p->required) continue;
        if (need_comma) ag_buf_append(out, ",", 1);
        need_comma = true;
        ag_buf_append(out, p->key, (size_t)p->len);
        ag_buf_append(out, ":", 1);
        if (!min_value(g, p->node, out, 1)) return false;
    }
    ag_buf_append(out, "}", 1);
    return true;
}

/* The shortest text that completes stack s. */
static bool stack_completion(const struct eng_grammar *g, const struct stk *s, struct ag_buf *out)
{
    for (int d = s->depth - 1; d >= 0; d--) {
        const struct frame *t = &s->f[d];
        const struct gnode *n = &g->nodes[t->node];
        switch (t->kind) {
        case FR_VALUE:
            if (!min_value(g, t->node, out, 0)) return false;
            break;
        case FR_LIT:
            ag_buf_append(out, g->lits[t->a] + t->b, (size_t)(g->lit_len[t->a] - t->b));
            break;
        case FR_STR:
            if (t->b == 1)
                ag_buf_append(out, "n", 1);
            else if (t->b >= 11)
                for (int k = 10; k < t->b; k++) ag_buf_append(out, "0", 1);
            else if (t->b >= 7)
                for (int k = 6; k < t->b; k++) ag_buf_append(out, "\x80", 1);
            ag_buf_append(out, "\"", 1);
            break;
        case FR_NUM:
            if (t->st == 1 || t->st == 4 || t->st == 6 || t->st == 7) ag_buf_append(out, "0", 1);
            break;
        case FR_OBJ: {
            int cand = t->b >> 16, pos = t->b & 0xffff;
            switch (t->st) {
            case 0:
            case 6:
            case 7:
                if (t->st == 0) {
                    if (!obj_rest(g, t, out, false)) return false;
                } else { /* a key must follow the comma: the next property */
                    const struct gprop *p = &g->props[n->a + t->a];
                    struct frame f = *t;
                    ag_buf_append(out, p->key, (size_t)p->len);
                    ag_buf_append(out, ":", 1);
                    if (!min_value(g, p->node, out, 1)) return false;
                    f.a = t->a + 1;
                    if (!obj_rest(g, &f, out, true)) return false;
                }
                break;
            case 1:
            case 2:
            case 3:
            case 4: {
                const struct gprop *p = &g->props[n->a + cand];
                if (t->st == 1) ag_buf_append(out, p->key + pos, (size_t)(p->len - pos));
                if (t->st <= 2) ag_buf_append(out, ":", 1);
                if (!min_value(g, p->node, out, 1)) return false;
                struct frame f = *t;
                f.a = cand + 1;
                if (!obj_rest(g, &f, out, true)) return false;
                break;
            }
            case 5: /* after a value: the rest needs a comma first */
                if (!obj_rest(g, t, out, true)) return false;
                break;
            }
            break;
        }
        case FR_FREEOBJ:
            switch (t->st) {
            case 1: /* the key's string frame above closed it */
            case 2:
                ag_buf_append(out, ":null}", 6);
                break;
            case 3:
            case 4:
                ag_buf_append(out, "null}", 5);
                break;
            case 6:
            case 7:
                ag_buf_append(out, "\"\":null}", 8);
                break;
            default:
                ag_buf_append(out, "}", 1);
                break;
            }
            break;
        case FR_ARR: {
            int have = t->a;
            if (t->st == 2 || t->st == 3) { /* an item must follow the comma */
                if (!min_value(g, n->a, out, 1)) return false;
                have++;
            }
            for (; have < n->min; have++) {
                if (have > 0 || t->st != 0) ag_buf_append(out, ",", 1);
                if (!min_value(g, n->a, out, 1)) return false;
            }
            ag_buf_append(out, "]", 1);
            break;
        }
        }
    }
    return true;
}

int eng_gmatch_completion(const struct eng_gmatch *m, struct ag_buf *out)
{
    struct ag_buf best, cur;
    ag_buf_init(&best);
    ag_buf_init(&cur);
    bool found = false;
    for (int i = 0; i < m->st.n; i++) {
        cur.len = 0;
        if (!stack_completion(m->g, &m->st.s[i], &cur)) continue;
        if (!found || cur.len < best.len) {
            best.len = 0;
            ag_buf_append(&best, cur.data ? cur.data : "", cur.len);
            found = true;
        }
    }
    if (found) ag_buf_append(out, best.data ? best.data : "", best.len);
    ag_buf_release(&best);
    ag_buf_release(&cur);
    return found ? 0 : AG_ENOTFOUND;
}
