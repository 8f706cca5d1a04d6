/*
 * test_grammar.c - JSON Schema grammars (engine/grammar.c) and validation
 * (protocol/jsonschema.c): accepted and rejected texts per feature, masks that agree with trying
 * every token, random schemas whose random token walks always validate, malformed schemas, and
 * the mask's cost on both real vocabularies (printed).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../engine/gguf.h"
#include "../engine/grammar.h"
#include "../engine/tokenizer.h"
#include "../protocol/protocol.h"
#include "gen_schema.h"
#include "test.h"

#define SMOLLM2 "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define GEMMA3  "models/gemma-3-270m-q4_k_m.gguf"

static bool accepts(const char *schema, const char *text)
{
    struct eng_grammar *g;
    struct eng_gmatch *m;
    struct ag_err err = {0};
    if (eng_grammar_from_schema(schema, strlen(schema), &g, &err) != 0) {
        printf("  schema %s: %s\n", schema, err.msg);
        return false;
    }
    eng_gmatch_new(g, &m, &err);
    bool ok = eng_gmatch_accept(m, text, strlen(text)) && eng_gmatch_can_end(m);
    eng_gmatch_free(m);
    eng_grammar_free(g);
    return ok;
}

static void test_accept_reject(void)
{
    static const struct {
        const char *schema, *text;
        bool ok;
    } cases[] = {
        {"{\"type\":\"string\"}", "\"hi \\\"there\\\" \\u00e9 caf\xc3\xa9\"", true},
        {"{\"type\":\"string\"}", "\"raw\nnewline\"", false},
        {"{\"type\":\"string\"}", "\"bad \\x escape\"", false},
        {"{\"type\":\"string\",\"maxLength\":3}", "\"abc\"", true},
        {"{\"type\":\"string\",\"maxLength\":3}", "\"abcd\"", false},
        {"{\"type\":\"integer\"}", "-120", true},
        {"{\"type\":\"integer\"}", "1.5", false},
        {"{\"type\":\"integer\"}", "012", false},
        {"{\"type\":\"number\"}", "-0.25e+10", true},
        {"{\"type\":\"number\"}", "1.", false},
        {"{\"type\":\"boolean\"}", "false", true},
        {"{\"type\":\"null\"}", "null", true},
        {"{\"type\":[\"string\",\"null\"]}", "null", true},
        {"{\"type\":[\"string\",\"null\"]}", "1", false},
        {"{\"enum\":[\"red\",\"green\",3]}", "\"green\"", true},
        {"{\"enum\":[\"red\",\"green\",3]}", "3", true},
        {"{\"enum\":[\"red\",\"green\",3]}", "\"blue\"", false},
        {"{\"const\":{\"a\":1}}", "{\"a\":1}", true},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":"
         "\"string\"}},\"required\":[\"b\"]}",
         "{\"a\": 1, \"b\": \"x\"}", true},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":"
         "\"string\"}},\"required\":[\"b\"]}",
         "{\"b\":\"x\"}", true},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":"
         "\"string\"}},\"required\":[\"b\"]}",
         "{\"a\":1}", false},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":"
         "\"string\"}},\"required\":[\"b\"]}",
         "{\"b\":\"x\",\"a\":1}", false}, /* schema order */
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}", "{}", true},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}", "{\"c\":1}", false},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}", "{\"a\":1,}",
         false},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}", "{\"a\":  1}",
         false},
        {"{\"type\":\"object\"}", "{\"any\": [1, {\"x\": null}], \"k\": \"v\"}", true},
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":2}",
         "[1, 2]", true},
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":2}",
         "[]", false},
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":2}",
         "[1,2,3]", false},
        {"{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"object\",\"properties\":{\"k\":{"
         "\"type\":\"string\"}},\"required\":[\"k\"]}]}",
         "{\"k\":\"v\"}", true},
        {"{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
         "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"v\","
         "\"kids\"]}},\"$ref\":\"#/$defs/node\"}",
         "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[]},{\"v\":3,\"kids\":[{\"v\":4,\"kids\":[]}]}]}",
         true},
        {"true", "[1, \"a\", {\"b\": false}]", true},
        {"{}", "\"x\"", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECKF(accepts(cases[i].schema, cases[i].text) == cases[i].ok, "case %zu: %s on %s", i,
               cases[i].text, cases[i].schema);
}

static void test_bad_schemas(void)
{
    static const char *const bad[] = {
        "not json",
        "{\"type\":\"strin\"}",
        "{\"$ref\":\"#/$defs/missing\"}",
        "{\"$ref\":\"#\"}",
        "[1,2]",
        "{\"enum\":[]}",
        "{\"type\":\"object\",\"properties\":[1]}",
        "{\"anyOf\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct eng_grammar *g = NULL;
        struct ag_err err = {0};
        int rc = eng_grammar_from_schema(bad[i], strlen(bad[i]), &g, &err);
        CHECKF(rc < 0 && g == NULL && err.msg[0], "%s accepted", bad[i]);
        eng_grammar_free(g);
    }
    /* Deep nesting is refused, not a stack overflow. */
    struct ag_buf b;
    ag_buf_init(&b);
    for (int i = 0; i < 200; i++) ag_buf_printf(&b, "{\"type\":\"array\",\"items\":");
    ag_buf_printf(&b, "true");
    for (int i = 0; i < 200; i++) ag_buf_printf(&b, "}");
    struct eng_grammar *g = NULL;
    struct ag_err err = {0};
    CHECK(eng_grammar_from_schema(b.data, b.len, &g, &err) < 0);
    CHECKF(strstr(err.msg, "deeper") != NULL, "%s", err.msg);
    ag_buf_release(&b);
}

static void test_validator(void)
{
    static const char *schema =
        "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"minLength\":2},"
        "\"unit\":{\"enum\":[\"c\",\"f\"]},\"days\":{\"type\":\"integer\",\"minimum\":1},"
        "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}},"
        "\"required\":[\"city\",\"unit\"],\"additionalProperties\":false}";
    static const struct {
        const char *v, *want;
    } cases[] = {
        {"{\"city\":\"Paris\",\"unit\":\"c\",\"days\":3,\"tags\":[\"a\"]}", NULL},
        {"{\"city\":\"Paris\"}", "/: missing required property \"unit\""},
        {"{\"city\":3,\"unit\":\"c\"}", "/city: expected string, got number"},
        {"{\"city\":\"Paris\",\"unit\":\"k\"}", "/unit: not one of the enum values"},
        {"{\"city\":\"Paris\",\"unit\":\"c\",\"tags\":[\"a\",\"b\",5]}",
         "/tags/2: expected string, got number"},
        {"{\"city\":\"Paris\",\"unit\":\"c\",\"days\":1.5}", "/days: expected integer"},
        {"{\"city\":\"Paris\",\"unit\":\"c\",\"days\":0}", "/days: out of range (minimum)"},
        {"{\"city\":\"P\",\"unit\":\"c\"}", "/city: shorter than minLength"},
        {"{\"city\":\"Paris\",\"unit\":\"c\",\"x\":1}", "property \"x\" is not allowed"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ag_err err = {0};
        int rc = proto_schema_validate_text(schema, cases[i].v, &err);
        if (!cases[i].want)
            CHECKF(rc == 0, "%s: %s", cases[i].v, err.msg);
        else
            CHECKF(rc == AG_EPARAMS && strstr(err.msg, cases[i].want), "%s: got '%s'", cases[i].v,
                   err.msg);
    }
}

/* ---- random schemas ---- */

static struct gen_rng rng = {88172645463325252ULL};
static uint32_t rnd(void)
{
    return gen_next(&rng);
}

static void gen_schema(struct ag_buf *b, int depth, bool *used_def)
{
    int k = (int)(rnd() % (depth > 2 ? 6 : 10));
    switch (k) {
    case 0:
        ag_buf_printf(b, "{\"type\":\"string\"}");
        break;
    case 1:
        ag_buf_printf(b, "{\"type\":\"integer\"}");
        break;
    case 2:
        ag_buf_printf(b, "{\"type\":\"number\"}");
        break;
    case 3:
        ag_buf_printf(b, "{\"type\":\"boolean\"}");
        break;
    case 4:
        ag_buf_printf(b, "{\"enum\":[\"a b\",\"c\",1,null]}");
        break;
    case 5:
        if (!*used_def && rnd() % 2) {
            *used_def = true;
            ag_buf_printf(b, "{\"$ref\":\"#/$defs/item\"}");
        } else {
            ag_buf_printf(b, "{\"type\":[\"string\",\"null\"]}");
        }
        break;
    case 6:
    case 7: {
        int n = 1 + (int)(rnd() % 3);
        ag_buf_printf(b, "{\"type\":\"object\",\"properties\":{");
        for (int i = 0; i < n; i++) {
            ag_buf_printf(b, "%s\"p%d\":", i ? "," : "", i);
            gen_schema(b, depth + 1, used_def);
        }
        ag_buf_printf(b, "},\"required\":[");
        bool first = true;
        for (int i = 0; i < n; i++)
            if (rnd() % 3) {
                ag_buf_printf(b, "%s\"p%d\"", first ? "" : ",", i);
                first = false;
            }
        ag_buf_printf(b, "],\"additionalProperties\":false}");
        break;
    }
    case 8:
        ag_buf_printf(b, "{\"type\":\"array\",\"maxItems\":3,\"items\":");
        gen_schema(b, depth + 1, used_def);
        ag_buf_printf(b, "}");
        break;
    default:
        ag_buf_printf(b, "{\"anyOf\":[");
        gen_schema(b, depth + 1, used_def);
        ag_buf_printf(b, ",");
        gen_schema(b, depth + 1, used_def);
        ag_buf_printf(b, "]}");
        break;
    }
}

static struct eng_tokenizer *load_tok(const char *path)
{
    struct eng_gguf *g;
    struct eng_tokenizer *t = NULL;
    if (eng_gguf_open(path, &g, NULL) != 0) return NULL;
    if (eng_tokenizer_load(g, &t, NULL) != 0) t = NULL;
    eng_gguf_close(g);
    return t;
}

/* Random walks over allowed tokens always give valid JSON for the schema; the mask equals the
 * brute-force set on the first states. */
static void test_random_walks(void)
{
    struct eng_tokenizer *tok = load_tok(SMOLLM2);
    if (!tok) SKIP("no " SMOLLM2 ": run `make model`");
    struct eng_gvocab *v;
    struct ag_err err = {0};
    CHECK(eng_gvocab_new(tok, &v, &err) == 0);
    const int nv = (int)eng_tokenizer_n_vocab(tok);
    int32_t *ids = calloc((size_t)nv, sizeof(int32_t));
    char *mark = calloc((size_t)nv, 1);
    const int n_schemas = SANITIZED ? 40 : 300;
    int walks = 0, valid = 0, brute_checked = 0, completions = 0;
    for (int si = 0; si < n_schemas; si++) {
        struct ag_buf b;
        ag_buf_init(&b);
        bool used_def = false;
        ag_buf_printf(&b, "{\"$defs\":{\"item\":{\"type\":\"object\",\"properties\":{\"id\":{"
                          "\"type\":\"integer\"},\"next\":{\"anyOf\":[{\"$ref\":\"#/$defs/item\"},"
                          "{\"type\":\"null\"}]}},\"required\":[\"id\",\"next\"]}},"
                          "\"type\":\"object\",\"properties\":{\"root\":");
        gen_schema(&b, 0, &used_def);
        ag_buf_printf(&b, "},\"required\":[\"root\"]}");
        struct eng_grammar *g;
        if (eng_grammar_from_schema(b.data, b.len, &g, &err) != 0) {
            CHECKF(0, "schema %d: %s\n%s", si, err.msg, b.data);
            ag_buf_release(&b);
            continue;
        }
        for (int w = 0; w < 2; w++) {
            struct eng_gmatch *m;
            eng_gmatch_new(g, &m, &err);
            struct ag_buf out;
            ag_buf_init(&out);
            int steps = 0;
            while (!eng_gmatch_done(m) && steps < 400) {
                int n = eng_gmatch_allowed(m, v, ids);
                if (n == 0) break;
                if (si < 5 && steps < 6) { /* brute force: every token on its own */
                    memset(mark, 0, (size_t)nv);
                    for (int i = 0; i < n; i++) mark[ids[i]] = 1;
                    int diff = 0;
                    for (int32_t id = 0; id < nv; id++) {
                        size_t len = 0;
                        const char *p = eng_token_piece(tok, id, 0, &len);
                        if (!p || len == 0) continue;
                        struct eng_gmatch *c;
                        eng_gmatch_new(g, &c, &err);
                        bool ok = eng_gmatch_accept(c, out.data ? out.data : "", out.len) &&
                                  eng_gmatch_accept(c, p, len);
                        eng_gmatch_free(c);
                        diff += ok != (mark[id] == 1);
                    }
                    CHECKF(diff == 0, "schema %d step %d: %d tokens differ from brute force", si,
                           steps, diff);
                    brute_checked++;
                }
                if (steps % 7 == 3) { /* the shortest completion ends it validly */
                    struct ag_buf comp;
                    ag_buf_init(&comp);
                    CHECK(eng_gmatch_completion(m, &comp) == 0);
                    struct eng_gmatch *c;
                    eng_gmatch_new(g, &c, &err);
                    bool ok = eng_gmatch_accept(c, out.data ? out.data : "", out.len) &&
                              eng_gmatch_accept(c, comp.data ? comp.data : "", comp.len) &&
                              eng_gmatch_done(c);
                    struct ag_buf whole;
                    ag_buf_init(&whole);
                    ag_buf_append(&whole, out.data ? out.data : "", out.len);
                    ag_buf_append(&whole, comp.data ? comp.data : "", comp.len);
                    struct ag_err verr = {0};
                    int vrc = proto_schema_validate_text(b.data, whole.data, &verr);
                    CHECKF(ok && vrc == 0, "schema %d: completion of '%s' by '%s': %s", si,
                           out.data ? out.data : "", comp.data ? comp.data : "", verr.msg);
                    completions++;
                    eng_gmatch_free(c);
                    ag_buf_release(&comp);
                    ag_buf_release(&whole);
                }
                /* Prefer short tokens late in long walks so that they end. */
                int32_t pick = ids[rnd() % (uint32_t)n];
                if (steps > 60) {
                    for (int tries = 0; tries < 8; tries++) {
                        int32_t alt = ids[rnd() % (uint32_t)n];
                        size_t la = 0, lp = 0;
                        eng_token_piece(tok, alt, 0, &la);
                        eng_token_piece(tok, pick, 0, &lp);
                        const char *pa = eng_token_piece(tok, alt, 0, &la);
                        if (pa && (strchr(pa, '}') || strchr(pa, ']') || strchr(pa, '"')))
                            pick = alt;
                    }
                }
                size_t len = 0;
                const char *p = eng_token_piece(tok, pick, 0, &len);
                CHECK(eng_gmatch_accept_token(m, v, pick));
                ag_buf_append(&out, p, len);
                steps++;
            }
            if (eng_gmatch_done(m)) {
                walks++;
                ag_buf_append(&out, "", 0);
                struct proto_val *inst = proto_parse(out.data, out.len, NULL);
                struct proto_val *sch = proto_parse(b.data, b.len, NULL);
                struct ag_err verr = {0};
                int rc = inst ? proto_schema_validate(sch, inst, &verr) : -1;
                CHECKF(rc == 0, "schema %d walk produced invalid %.*s: %s", si, (int)out.len,
                       out.data, inst ? verr.msg : "not JSON");
                valid += rc == 0;
                proto_val_free(inst);
                proto_val_free(sch);
            }
            ag_buf_release(&out);
            eng_gmatch_free(m);
        }
        eng_grammar_free(g);
        ag_buf_release(&b);
    }
    printf("  %d schemas, %d finished walks, %d valid, %d masks checked by brute force, %d "
           "completions checked\n",
           n_schemas, walks, valid, brute_checked, completions);
    CHECK(walks > n_schemas / 2);
    free(ids);
    free(mark);
    eng_gvocab_free(v);
    eng_tokenizer_free(tok);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Mask cost in a few states, both vocabularies (printed, not asserted). */
static void test_mask_speed(void)
{
    const char *files[] = {SMOLLM2, GEMMA3};
    for (int f = 0; f < 2; f++) {
        struct eng_tokenizer *tok = load_tok(files[f]);
        if (!tok) continue;
        struct eng_gvocab *v;
        eng_gvocab_new(tok, &v, NULL);
        int32_t *ids = calloc(eng_tokenizer_n_vocab(tok), sizeof(int32_t));
        const char *schema = "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
                             "\"string\"},\"days\":{\"type\":\"integer\"}},\"required\":[\"city\","
                             "\"days\"]}";
        const char *prefixes[] = {"", "{", "{\"city\": \"Par", "{\"city\": \"Paris\", \"days\": 1"};
        const char *names[] = {"start", "after {", "inside a string", "inside a number"};
        struct eng_grammar *g;
        eng_grammar_from_schema(schema, strlen(schema), &g, NULL);
        for (int k = 0; k < 4; k++) {
            struct eng_gmatch *m;
            eng_gmatch_new(g, &m, NULL);
            CHECK(eng_gmatch_accept(m, prefixes[k], strlen(prefixes[k])));
            int reps = SANITIZED ? 2 : 20, n = 0;
            double t0 = now_us();
            for (int r = 0; r < reps; r++) n = eng_gmatch_allowed(m, v, ids);
            printf("  %-8s %-16s %7d tokens allowed, %8.1f us per mask\n", f ? "gemma3" : "smollm2",
                   names[k], n, (now_us() - t0) / reps);
            CHECK(n > 0);
            eng_gmatch_free(m);
        }
        eng_grammar_free(g);
        free(ids);
        eng_gvocab_free(v);
        eng_tokenizer_free(tok);
    }
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_accept_reject);
    RUN(test_bad_schemas);
    RUN(test_validator);
    RUN(test_random_walks);
    RUN(test_mask_speed);
    return TEST_END();
}
