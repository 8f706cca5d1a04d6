/*
 * grammar.c - JSON Schema to a byte-level pushdown matcher, and vocabulary masks (grammar.h).
 *
 * Compiled form: a table of nodes. Node kinds: OBJ (listed properties in order), FREEOBJ (any
 * keys, any values), ARR (items node, min and max count), STR (max length or 0), NUM, INT, LIT
 * (a set of literal JSON texts: enum, const, true/false/null) and ALT (alternatives: anyOf, type
 * arrays). "Any value" is the ALT of the built-in nodes below. $ref resolves to the node compiled
 * for its target, created before its children so that recursive schemas close on themselves.
 *
 * Matcher: a set of stacks of frames. A frame is a value being matched: VALUE (not begun: which
 * node is decided by its first byte, forking on ALT and LIT), OBJ, FREEOBJ, ARR, STR, NUM, LIT,
 * each with a small state and two counters. A finished frame is popped and its parent notified; a
 * number ends when a byte cannot continue it, and that byte goes on to the parent.
 */
#include "grammar.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

/* ---- compiled schema ---- */

enum nkind { K_OBJ = 1, K_FREEOBJ, K_ARR, K_STR, K_NUM, K_INT, K_LIT, K_ALT };

/* Built-in nodes. */
enum { N_ANY = 0, N_ANYOBJ, N_ANYARR, N_ANYSTR, N_ANYNUM, N_TFN, N_BUILTIN };

struct gnode {
    uint8_t kind;
    int32_t a, n;     /* OBJ: props[a..a+n); LIT: lits[a..a+n); ALT: ints[a..a+n); ARR: a item */
    int32_t min, max; /* ARR: item counts; STR: max = max length (0: any) */
};

struct gprop {
    char *key;   /* the key as JSON text, quotes included */
    int32_t len; /* bytes of key */
    int32_t node;
    bool required;
};

struct eng_grammar {
    struct gnode *nodes;
    int n_nodes, cap_nodes;
    struct gprop *props;
    int n_props, cap_props;
    char **lits;
    int32_t *lit_len;
    int n_lits, cap_lits;
    int32_t *ints;
    int n_ints, cap_ints;
    int root;
};

#define GROW(arr, n, cap)                                                                          \
    do {                                                                                           \
        if ((n) == (cap)) {                                                                        \
            (cap) = (cap) ? 2 * (cap) : 16;                                                        \
            (arr) = ag_realloc((arr), (size_t)(cap) * sizeof(*(arr)));                             \
        }                                                                                          \
    } while (0)

static int new_node(struct eng_grammar *g, uint8_t kind)
{
    GROW(g->nodes, g->n_nodes, g->cap_nodes);
    memset(&g->nodes[g->n_nodes], 0, sizeof(g->nodes[0]));
    g->nodes[g->n_nodes].kind = kind;
    return g->n_nodes++;
}

static int add_lit(struct eng_grammar *g, const char *text)
{
    GROW(g->lits, g->n_lits, g->cap_lits);
    if (g->n_lits + 1 > g->cap_lits) g->cap_lits++;
    g->lit_len = ag_realloc(g->lit_len, (size_t)g->cap_lits * sizeof(int32_t));
    g->lits[g->n_lits] = ag_strdup(text);
    g->lit_len[g->n_lits] = (int32_t)strlen(text);
    return g->n_lits++;
}

static int add_int(struct eng_grammar *g, int32_t v)
{
    GROW(g->ints, g->n_ints, g->cap_ints);
    g->ints[g->n_ints] = v;
    return g->n_ints++;
}

/* Compile state: the schema root (for $ref) and a memo of compiled subschemas. */
struct cc {
    struct eng_grammar *g;
    const cJSON *root;
    const cJSON **memo_key;
    int *memo_node;
    int n_memo, cap_memo;
    int depth;
    struct ag_err *err;
};

static int compile(struct cc *c, const cJSON *s, const char *where);

static int memo_find(const struct cc *c, const cJSON *s)
{
    for (int i = 0; i < c->n_memo; i++)
        if (c->memo_key[i] == s) return c->memo_node[i];
    return -1;
}

static void memo_put(struct cc *c, const cJSON *s, int node)
{
    if (c->n_memo == c->cap_memo) {
        c->cap_memo = c->cap_memo ? 2 * c->cap_memo : 16;
        c->memo_key = ag_realloc(c->memo_key, (size_t)c->cap_memo * sizeof(*c->memo_key));
        c->memo_node = ag_realloc(c->memo_node, (size_t)c->cap_memo * sizeof(*c->memo_node));
    }
    c->memo_key[c->n_memo] = s;
    c->memo_node[c->n_memo++] = node;
}

static int resolve_ref(struct cc *c, const char *ref, const char *where)
{
    const cJSON *t = NULL;
    if (strcmp(ref, "#") == 0)
        t = c->root;
    else if (strncmp(ref, "#/$defs/", 8) == 0)
        t = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c->root, "$defs"),
                                             ref + 8);
    else if (strncmp(ref, "#/definitions/", 14) == 0)
        t = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(c->root, "definitions"), ref + 14);
    if (!t)
        return ag_err_set(c->err, AG_EUNSUPPORTED,
                          "%s: $ref \"%s\" does not resolve (use #, "
                          "#/$defs/NAME or #/definitions/NAME)",
                          where, ref);
    return compile(c, t, ref);
}

/* An ALT node over the compiled items of an array of schemas. */
static int compile_alts(struct cc *c, const cJSON *arr, const char *kw, const char *where)
{
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0)
        return ag_err_set(c->err, AG_EUNSUPPORTED, "%s/%s: expected a non-empty array", where, kw);
    int n = cJSON_GetArraySize(arr);
    int32_t *kids = ag_calloc((size_t)n, sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        char w[256];
        snprintf(w, sizeof(w), "%s/%s/%d", where, kw, i);
        int k = compile(c, cJSON_GetArrayItem(arr, i), w);
        if (k < 0) {
            free(kids);
            return k;
        }
        kids[i] = k;
    }
    int node = new_node(c->g, K_ALT);
    c->g->nodes[node].a = c->g->n_ints;
    c->g->nodes[node].n = n;
    for (int i = 0; i < n; i++) add_int(c->g, kids[i]);
    free(kids);
    return node;
}

static int compile_type(struct cc *c, const cJSON *s, const char *type, const char *where)
{
    struct eng_grammar *g = c->g;
    if (strcmp(type, "string") == 0) {
        const cJSON *ml = cJSON_GetObjectItemCaseSensitive(s, "maxLength");
        if (!cJSON_IsNumber(ml) || ml->valuedouble <= 0) return N_ANYSTR;
        int node = new_node(g, K_STR);
        g->nodes[node].max = ml->valuedouble > 1e6 ? 1000000 : (int32_t)ml->valuedouble;
        return node;
    }
    if (strcmp(type, "number") == 0) return N_ANYNUM;
    if (strcmp(type, "integer") == 0) return new_node(g, K_INT);
    if (strcmp(type, "boolean") == 0) {
        int node = new_node(g, K_LIT);
        g->nodes[node].a = add_lit(g, "true");
        add_lit(g, "false");
        g->nodes[node].n = 2;
        return node;
    }
    if (strcmp(type, "null") == 0) {
        int node = new_node(g, K_LIT);
        g->nodes[node].a = add_lit(g, "null");
        g->nodes[node].n = 1;
        return node;
    }
    if (strcmp(type, "array") == 0) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        int item = N_ANY;
        if (items) {
            char w[256];
            snprintf(w, sizeof(w), "%s/items", where);
            if ((item = compile(c, items, w)) < 0) return item;
        }
        int node = new_node(g, K_ARR);
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(s, "minItems");
        const cJSON *mx = cJSON_GetObjectItemCaseSensitive(s, "maxItems");
        g->nodes[node].a = item;
        g->nodes[node].min =
            cJSON_IsNumber(mn) && mn->valuedouble > 0 ? (int32_t)mn->valuedouble : 0;
        g->nodes[node].max = cJSON_IsNumber(mx) && mx->valuedouble >= 0 && mx->valuedouble < 1e6
                                 ? (int32_t)mx->valuedouble
                                 : 1000000;
        if (g->nodes[node].max < g->nodes[node].min)
            return ag_err_set(c->err, AG_EUNSUPPORTED, "%s: maxItems < minItems", where);
        return node;
    }
    if (strcmp(type, "object") == 0) {
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
        if (!props || cJSON_GetArraySize(props) == 0) return N_ANYOBJ;
        if (!cJSON_IsObject(props))
            return ag_err_set(c->err, AG_EUNSUPPORTED, "%s/properties: expected an object", where);
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
        if (req && !cJSON_IsArray(req))
            return ag_err_set(c->err, AG_EUNSUPPORTED, "%s/required: expected an array", where);
        int node = new_node(g, K_OBJ);
        int n = cJSON_GetArraySize(props);
        int32_t *kids = ag_calloc((size_t)n, sizeof(int32_t));
        int i = 0;
        for (const cJSON *p = props->child; p; p = p->next, i++) {
            char w[256];
            snprintf(w, sizeof(w), "%s/properties/%s", where, p->string);
            int k = compile(c, p, w);
            if (k < 0) {
                free(kids);
                return k;
            }
            kids[i] = k;
        }
        g->nodes[node].a = g->n_props;
        g->nodes[node].n = n;
        i = 0;
        for (const cJSON *p = props->child; p; p = p->next, i++) {
            GROW(g->props, g->n_props, g->cap_props);
            struct gprop *gp = &g->props[g->n_props++];
            cJSON *ks = cJSON_CreateString(p->string);
            gp->key = cJSON_PrintUnformatted(ks);
            cJSON_Delete(ks);
            gp->len = (int32_t)strlen(gp->key);
            gp->node = kids[i];
            gp->required = false;
            for (const cJSON *r = req ? req->child : NULL; r; r = r->next)
                if (cJSON_IsString(r) && strcmp(r->valuestring, p->string) == 0)
                    gp->required = true;
        }
        free(kids);
        return node;
    }
    return ag_err_set(c->err, AG_EUNSUPPORTED,
                      "%s/type: \"%s\" is not a JSON Schema type (string, number, integer, "
                      "boolean, null, array, object)",
                      where, type);
}

static int compile_inner(struct cc *c, const cJSON *s, const char *where)
{
    struct eng_grammar *g = c->g;
    if (cJSON_IsTrue(s)) return N_ANY;
    if (!cJSON_IsObject(s))
        return ag_err_set(c->err, AG_EUNSUPPORTED, "%s: a schema must be an object or true", where);
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    if (ref) {
        if (!cJSON_IsString(ref))
            return ag_err_set(c->err, AG_EUNSUPPORTED, "%s/$ref: expected a string", where);
        return resolve_ref(c, ref->valuestring, where);
    }
    const cJSON *cst = cJSON_GetObjectItemCaseSensitive(s, "const");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    if (cst || en) {
        if (en && (!cJSON_IsArray(en) || cJSON_GetArraySize(en) == 0))
            return ag_err_set(c->err, AG_EUNSUPPORTED, "%s/enum: expected a non-empty array",
                              where);
        int node = new_node(g, K_LIT);
        g->nodes[node].a = g->n_lits;
        for (const cJSON *v = cst ? cst : en->child; v; v = cst ? NULL : v->next) {
            char *t = cJSON_PrintUnformatted(v);
            add_lit(g, t);
            cJSON_free(t);
            g->nodes[node].n++;
        }
        return node;
    }
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    if (!any) any = cJSON_GetObjectItemCaseSensitive(s, "oneOf");
    if (any)
        return compile_alts(
            c, any, cJSON_GetObjectItemCaseSensitive(s, "anyOf") ? "anyOf" : "oneOf", where);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (cJSON_IsString(type)) return compile_type(c, s, type->valuestring, where);
    if (cJSON_IsArray(type)) {
        int n = cJSON_GetArraySize(type);
        if (n == 0) return ag_err_set(c->err, AG_EUNSUPPORTED, "%s/type: empty array", where);
        int32_t kids[8];
        if (n > 8) return ag_err_set(c->err, AG_EUNSUPPORTED, "%s/type: too many types", where);
        for (int i = 0; i < n; i++) {
            const cJSON *t = cJSON_GetArrayItem(type, i);
            if (!cJSON_IsString(t))
                return ag_err_set(c->err, AG_EUNSUPPORTED, "%s/type/%d: expected a string", where,
                                  i);
            int k = compile_type(c, s, t->valuestring, where);
            if (k < 0) return k;
            kids[i] = k;
        }
        int node = new_node(g, K_ALT);
        g->nodes[node].a = g->n_ints;
        g->nodes[node].n = n;
        for (int i = 0; i < n; i++) add_int(g, kids[i]);
        return node;
    }
    if (type)
        return ag_err_set(c->err, AG_EUNSUPPORTED, "%s/type: expected a string or array", where);
    /* No type: properties or items decide; otherwise any value. */
    if (cJSON_GetObjectItemCaseSensitive(s, "properties"))
        return compile_type(c, s, "object", where);
    if (cJSON_GetObjectItemCaseSensitive(s, "items")) return compile_type(c, s, "array", where);
    return N_ANY;
}

/* Compiles s once (memoized by identity). A schema that is only a $ref (or ALT) to itself with
 * no progress is refused when its node would be itself. */
static int compile(struct cc *c, const cJSON *s, const char *where)
{
    int m = memo_find(c, s);
    if (m == -2)
        return ag_err_set(c->err, AG_EUNSUPPORTED,
                          "%s: the schema refers to itself without "
                          "describing a value",
                          where);
    if (m >= 0) return m;
    if (++c->depth > 64) {
        c->depth--;
        return ag_err_set(c->err, AG_EUNSUPPORTED, "%s: schema nested deeper than 64", where);
    }
    /* A schema gets its node before its children (a one-way ALT patched afterwards), so that
     * recursion through it resolves; a $ref that reaches itself again without describing a
     * value in between is refused (-2). */
    int node;
    if (!cJSON_IsObject(s) || cJSON_GetObjectItemCaseSensitive(s, "$ref")) {
        memo_put(c, s, -2);
        int slot = c->n_memo - 1;
        node = compile_inner(c, s, where);
        c->memo_node[slot] = node < 0 ? -2 : node;
    } else {
        int ph = new_node(c->g, K_ALT);
        memo_put(c, s, ph);
        int real = compile_inner(c, s, where);
        if (real < 0) {
            c->depth--;
            return real;
        }
        c->g->nodes[ph].a = add_int(c->g, real);
        c->g->nodes[ph].n = 1;
        node = ph;
    }
    c->depth--;
    return node;
}

void eng_grammar_free(struct eng_grammar *g)
{
    if (!g) return;
    for (int i = 0; i < g->n_props; i++) cJSON_free(g->props[i].key);
    for (int i = 0; i < g->n_lits; i++) free(g->lits[i]);
    free(g->nodes);
    free(g->props);
    free(g->lits);
    free(g->lit_len);
    free(g->ints);
    free(g);
}

/* A grammar with the built-in nodes only: any = object | array | string | number | literal. */
static struct eng_grammar *grammar_new(void)
{
    struct eng_grammar *g = ag_calloc(1, sizeof(*g));
    new_node(g, K_ALT);
    new_node(g, K_FREEOBJ);
    int arr = new_node(g, K_ARR);
    g->nodes[arr].a = N_ANY;
    g->nodes[arr].max = 1000000;
    new_node(g, K_STR);
    new_node(g, K_NUM);
    int tfn = new_node(g, K_LIT);
    g->nodes[tfn].a = add_lit(g, "true");
    add_lit(g, "false");
    add_lit(g, "null");
    g->nodes[tfn].n = 3;
    g->nodes[N_ANY].a = g->n_ints;
    g->nodes[N_ANY].n = 5;
    for (int i = N_ANYOBJ; i <= N_TFN; i++) add_int(g, i);
    return g;
}

/* Compiles one schema document into g; returns its node. */
static int compile_doc(struct eng_grammar *g, const char *json, size_t len, const char *where,
                       struct ag_err *err)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return ag_err_set(err, AG_EPARSE, "%s: the schema is not valid JSON", where);
    struct cc c = {.g = g, .root = root, .err = err};
    int rc = compile(&c, root, where);
    free(c.memo_key);
    free(c.memo_node);
    cJSON_Delete(root);
    return rc;
}

int eng_grammar_from_schema(const char *schema_json, size_t len, struct eng_grammar **out,
                            struct ag_err *err)
{
    *out = NULL;
    struct eng_grammar *g = grammar_new();
    int rc = compile_doc(g, schema_json, len, "#", err);
    if (rc < 0) {
        eng_grammar_free(g);
        return rc;
    }
    g->root = rc;
    *out = g;
    return 0;
}

/* A property of an object node being built by hand. */
static void add_prop(struct eng_grammar *g, const char *key, int node)
{
    GROW(g->props, g->n_props, g->cap_props);
    struct gprop *gp = &g->props[g->n_props++];
    cJSON *ks = cJSON_CreateString(key);
    gp->key = cJSON_PrintUnformatted(ks);
    cJSON_Delete(ks);
    gp->len = (int32_t)strlen(gp->key);
    gp->node = node;
    gp->required = true;
}

int eng_grammar_from_tools(const char *const *names, const char *const *params, size_t n,
                           const char *args_key, struct eng_grammar **out, struct ag_err *err)
{
    *out = NULL;
    if (n == 0) return ag_err_set(err, AG_EINVAL, "no tools");
    struct eng_grammar *g = grammar_new();
    int32_t *objs = ag_calloc(n, sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {
        char where[160];
        snprintf(where, sizeof(where), "tool %s parameters #", names[i]);
        const char *p = params[i] && *params[i] ? params[i] : "{}";
        int args = compile_doc(g, p, strlen(p), where, err);
        if (args < 0) {
            free(objs);
            eng_grammar_free(g);
            return args;
        }
        cJSON *ns = cJSON_CreateString(names[i]);
        char *lit = cJSON_PrintUnformatted(ns);
        cJSON_Delete(ns);
        int name = new_node(g, K_LIT);
        g->nodes[name].a = add_lit(g, lit);
        g->nodes[name].n = 1;
        cJSON_free(lit);
        int obj = new_node(g, K_OBJ);
        g->nodes[obj].a = g->n_props;
        g->nodes[obj].n = 2;
        add_prop(g, "name", name);
        add_prop(g, args_key, args);
        objs[i] = obj;
    }
    int root = new_node(g, K_ALT);
    g->nodes[root].a = g->n_ints;
    g->nodes[root].n = (int32_t)n;
    for (size_t i = 0; i < n; i++) add_int(g, objs[i]);
    free(objs);
    g->root = root;
    *out = g;
    return 0;
}

/* ---- matcher ---- */

enum frkind { FR_VALUE = 1, FR_OBJ, FR_FREEOBJ, FR_ARR, FR_STR, FR_NUM, FR_LIT };

struct frame {
    int32_t node;
    uint8_t kind;
    uint8_t st;
    int32_t a, b;
};

struct stk {
    int depth;
    struct frame f[ENG_GRAMMAR_MAX_DEPTH];
};

struct gstate {
    int n;
    struct stk s[ENG_GRAMMAR_MAX_STACKS];
};

struct eng_gmatch {
    const struct eng_grammar *g;
    struct gstate st;
    struct gstate *levels; /* DFS scratch for eng_gmatch_allowed, per trie depth */
    int n_levels;
    int32_t *dfs_node; /* DFS stack: at most 256 pending siblings per level */
    int *dfs_depth;
};

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

/* o = in advanced by byte b. */
static void advance(const struct eng_grammar *g, const struct gstate *in, int b, struct gstate *o)
{
    o->n = 0;
    for (int i = 0; i < in->n; i++) feed(g, in->s[i], b, o, 0);
}

static void state_copy(struct gstate *dst, const struct gstate *src)
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
    state_copy(a, &m->st);
    for (size_t i = 0; i < n; i++) {
        advance(m->g, a, (unsigned char)bytes[i], b);
        if (b->n == 0) {
            free(a);
            return false;
        }
        state_copy(a, b);
    }
    state_copy(&m->st, a);
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

/* ---- vocabulary ---- */

struct tnode {
    int32_t child;   /* first child, -1 */
    int32_t sibling; /* next sibling, -1 */
    int32_t tok;     /* first token ending here, -1 */
    uint8_t byte;
};

struct trie {
    struct tnode *n;
    int32_t count, cap;
};

struct eng_gvocab {
    int32_t n_vocab;
    char *bytes;       /* every token's bytes end to end */
    int64_t *off;      /* (n_vocab + 1) offsets into bytes; a token with no bytes is skipped */
    int32_t *tok_next; /* next token with the same bytes, -1 */
    struct trie all;   /* every token */
    struct trie rest;  /* tokens that are not plain string text */
    int32_t *plain;    /* plain string text tokens */
    int32_t n_plain;
    int max_len; /* longest token */
};

static int32_t trie_node(struct trie *t, uint8_t byte)
{
    GROW(t->n, t->count, t->cap);
    t->n[t->count] = (struct tnode){.child = -1, .sibling = -1, .tok = -1, .byte = byte};
    return t->count++;
}

static void trie_insert(struct trie *t, struct eng_gvocab *v, const uint8_t *s, int len, int32_t id)
{
    int32_t cur = 0; /* root */
    for (int i = 0; i < len; i++) {
        int32_t c = t->n[cur].child, prev = -1;
        while (c >= 0 && t->n[c].byte != s[i]) prev = c, c = t->n[c].sibling;
        if (c < 0) {
            c = trie_node(t, s[i]);
            if (prev < 0)
                t->n[cur].child = c;
            else
                t->n[prev].sibling = c;
        }
        cur = c;
    }
    /* Tokens with the same bytes chain from the node. */
    v->tok_next[id] = t->n[cur].tok;
    t->n[cur].tok = id;
}

/* Text that stays inside a JSON string: no quote, backslash or control byte, whole UTF-8. */
static bool plain_text(const uint8_t *s, int len)
{
    int need = 0;
    for (int i = 0; i < len; i++) {
        uint8_t b = s[i];
        if (need) {
            if (b < 0x80 || b > 0xBF) return false;
            need--;
            continue;
        }
        if (b == '"' || b == '\\' || b < 0x20) return false;
        if (b >= 0x80) {
            if (b >= 0xC2 && b <= 0xDF)
                need = 1;
            else if (b >= 0xE0 && b <= 0xEF)
                need = 2;
            else if (b >= 0xF0 && b <= 0xF4)
                need = 3;
            else
                return false;
        }
    }
    return need == 0;
}

int eng_gvocab_new(const struct eng_tokenizer *tok, struct eng_gvocab **out, struct ag_err *err)
{
    (void)err;
    struct eng_gvocab *v = ag_calloc(1, sizeof(*v));
    v->n_vocab = (int32_t)eng_tokenizer_n_vocab(tok);
    v->off = ag_calloc((size_t)v->n_vocab + 1, sizeof(int64_t));
    v->tok_next = ag_calloc((size_t)v->n_vocab, sizeof(int32_t));
    v->plain = ag_calloc((size_t)v->n_vocab, sizeof(int32_t));
    struct ag_buf b;
    ag_buf_init(&b);
    for (int32_t id = 0; id < v->n_vocab; id++) {
        v->off[id] = (int64_t)b.len;
        v->tok_next[id] = -1;
        size_t len = 0;
        const char *p = eng_token_piece(tok, id, 0, &len);
        if (p && len > 0) ag_buf_append(&b, p, len);
    }
    v->off[v->n_vocab] = (int64_t)b.len;
    v->bytes = b.data ? b.data : ag_calloc(1, 1);
    trie_node(&v->all, 0);
    trie_node(&v->rest, 0);
    for (int32_t id = 0; id < v->n_vocab; id++) {
        int len = (int)(v->off[id + 1] - v->off[id]);
        if (len == 0) continue;
        const uint8_t *s = (const uint8_t *)v->bytes + v->off[id];
        if (len > v->max_len) v->max_len = len;
        trie_insert(&v->all, v, s, len, id);
        if (plain_text(s, len)) v->plain[v->n_plain++] = id;
    }
    /* The rest trie chains its own tokens: rebuild tok_next for them after the plain list. */
    for (int32_t id = 0; id < v->n_vocab; id++) {
        int len = (int)(v->off[id + 1] - v->off[id]);
        const uint8_t *s = (const uint8_t *)v->bytes + v->off[id];
        if (len == 0 || plain_text(s, len)) continue;
        /* Separate chain storage is not needed: same-byte tokens are either all plain or all
         * not, so the rest trie's node chains are the same lists. */
        int32_t cur = 0;
        for (int i = 0; i < len; i++) {
            int32_t c = v->rest.n[cur].child, prev = -1;
            while (c >= 0 && v->rest.n[c].byte != s[i]) prev = c, c = v->rest.n[c].sibling;
            if (c < 0) {
                c = trie_node(&v->rest, s[i]);
                if (prev < 0)
                    v->rest.n[cur].child = c;
                else
                    v->rest.n[prev].sibling = c;
            }
            cur = c;
        }
        /* The head of the chain in the full trie holds this token's list. */
        if (v->rest.n[cur].tok < 0) {
            int32_t a = 0;
            for (int i = 0; i < len; i++) {
                int32_t c = v->all.n[a].child;
                while (v->all.n[c].byte != s[i]) c = v->all.n[c].sibling;
                a = c;
            }
            v->rest.n[cur].tok = v->all.n[a].tok;
        }
    }
    *out = v;
    return 0;
}

void eng_gvocab_free(struct eng_gvocab *v)
{
    if (!v) return;
    free(v->bytes);
    free(v->off);
    free(v->tok_next);
    free(v->plain);
    free(v->all.n);
    free(v->rest.n);
    free(v);
}

/* Every stack is inside a free string, between characters. */
static bool in_free_string(const struct eng_grammar *g, const struct gstate *st)
{
    if (st->n == 0) return false;
    for (int i = 0; i < st->n; i++) {
        const struct stk *s = &st->s[i];
        if (s->depth == 0) return false;
        const struct frame *t = &s->f[s->depth - 1];
        if (t->kind != FR_STR || t->b != 0 || g->nodes[t->node].max) return false;
    }
    return true;
}

/* Depth-first walk of trie t from the matcher's state; appends allowed ids. */
static int walk(struct eng_gmatch *m, const struct eng_gvocab *v, const struct trie *t,
                int32_t *ids, int n)
{
    if (m->n_levels < v->max_len + 1) {
        free(m->levels);
        m->n_levels = v->max_len + 1;
        m->levels = ag_calloc((size_t)m->n_levels, sizeof(struct gstate));
        free(m->dfs_node);
        free(m->dfs_depth);
        m->dfs_node = ag_calloc((size_t)m->n_levels * 256, sizeof(int32_t));
        m->dfs_depth = ag_calloc((size_t)m->n_levels * 256, sizeof(int));
    }
    state_copy(&m->levels[0], &m->st);
    /* Explicit stack of (node, depth). */
    int32_t *stack_node = m->dfs_node;
    int *stack_depth = m->dfs_depth;
    int sp = 0;
    for (int32_t c = t->n[0].child; c >= 0; c = t->n[c].sibling) {
        stack_node[sp] = c;
        stack_depth[sp++] = 1;
    }
    while (sp > 0) {
        int32_t node = stack_node[--sp];
        int d = stack_depth[sp];
        struct gstate *st = &m->levels[d];
        advance(m->g, &m->levels[d - 1], t->n[node].byte, st);
        if (st->n == 0) continue;
        for (int32_t id = t->n[node].tok; id >= 0; id = v->tok_next[id]) ids[n++] = id;
        if (d >= v->max_len) continue;
        for (int32_t c = t->n[node].child; c >= 0; c = t->n[c].sibling) {
            stack_node[sp] = c;
            stack_depth[sp++] = d + 1;
        }
    }
    return n;
}

int eng_gmatch_allowed(const struct eng_gmatch *cm, const struct eng_gvocab *v, int32_t *ids)
{
    struct eng_gmatch *m = (struct eng_gmatch *)cm; /* scratch only */
    if (in_free_string(m->g, &m->st)) {
        memcpy(ids, v->plain, (size_t)v->n_plain * sizeof(int32_t));
        return walk(m, v, &v->rest, ids, v->n_plain);
    }
    return walk(m, v, &v->all, ids, 0);
}

bool eng_gmatch_accept_token(struct eng_gmatch *m, const struct eng_gvocab *v, int32_t id)
{
    if (id < 0 || id >= v->n_vocab) return false;
    int64_t a = v->off[id], b = v->off[id + 1];
    if (b == a) return false;
    return eng_gmatch_accept(m, v->bytes + a, (size_t)(b - a));
}
