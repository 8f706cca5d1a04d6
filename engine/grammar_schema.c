/*
 * grammar_schema.c - JSON Schema compiled to the grammar's node table (grammar.h, grammar_int.h).
 *
 * Compiled form: a table of nodes. Node kinds: OBJ (listed properties in order), FREEOBJ (any
 * keys, any values), ARR (items node, min and max count), STR (max length or 0), NUM, INT, LIT
 * (a set of literal JSON texts: enum, const, true/false/null) and ALT (alternatives: anyOf, type
 * arrays). "Any value" is the ALT of the built-in nodes. $ref resolves to the node compiled for
 * its target, created before its children so that recursive schemas close on themselves.
 */
#include "grammar_int.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

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
