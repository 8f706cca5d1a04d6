/*
 * gen_schema.h - random JSON Schemas for tool parameters, from the subset OpenAI's structured
 * outputs accept (objects with required and optional properties, additionalProperties false,
 * strings, numbers, integers, booleans, null, enums, consts, arrays with items, anyOf, nested
 * objects, $defs/$ref). Deterministic for a seed. Used by tests and the engine benchmark.
 */
#ifndef AG_TEST_GEN_SCHEMA_H
#define AG_TEST_GEN_SCHEMA_H

#include <stdbool.h>
#include <stdint.h>

#include "../base/base.h"

struct gen_rng {
    uint64_t s;
};

static inline uint32_t gen_next(struct gen_rng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return (uint32_t)(r->s >> 11);
}

static inline void gen_value_schema(struct ag_buf *b, struct gen_rng *r, int depth, bool *use_def)
{
    static const char *const names[] = {"city", "count",   "query", "tags",  "mode", "limit",
                                        "user", "enabled", "items", "start", "end",  "note"};
    int k = (int)(gen_next(r) % (depth >= 2 ? 7 : 11));
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
        ag_buf_printf(b, "{\"type\":\"string\",\"enum\":[\"low\",\"medium\",\"high\"]}");
        break;
    case 5:
        ag_buf_printf(b, "{\"type\":[\"string\",\"null\"]}");
        break;
    case 6:
        if (!*use_def) {
            *use_def = true;
            ag_buf_printf(b, "{\"$ref\":\"#/$defs/point\"}");
        } else {
            ag_buf_printf(b, "{\"const\":\"fixed\"}");
        }
        break;
    case 7:
    case 8: {
        int n = 1 + (int)(gen_next(r) % 3);
        const char *chosen[3];
        ag_buf_printf(b, "{\"type\":\"object\",\"properties\":{");
        for (int i = 0; i < n; i++) {
            chosen[i] = names[(gen_next(r) % 3) * 4 + (uint32_t)i]; /* distinct: column i */
            ag_buf_printf(b, "%s\"%s\":", i ? "," : "", chosen[i]);
            gen_value_schema(b, r, depth + 1, use_def);
        }
        ag_buf_printf(b, "},\"required\":[");
        for (int i = 0; i < n; i++) ag_buf_printf(b, "%s\"%s\"", i ? "," : "", chosen[i]);
        ag_buf_printf(b, "],\"additionalProperties\":false}");
        break;
    }
    case 9:
        ag_buf_printf(b, "{\"type\":\"array\",\"items\":");
        gen_value_schema(b, r, depth + 1, use_def);
        ag_buf_printf(b, ",\"maxItems\":4}");
        break;
    default:
        ag_buf_printf(b, "{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"string\"}]}");
        break;
    }
}

/* A tool's parameters: an object of 1..4 properties, some required. */
static inline void gen_tool_schema(struct ag_buf *b, uint64_t seed)
{
    struct gen_rng r = {seed * 0x9E3779B97F4A7C15ULL + 1};
    bool use_def = false;
    int n = 1 + (int)(gen_next(&r) % 4);
    ag_buf_printf(b, "{\"type\":\"object\",\"properties\":{");
    for (int i = 0; i < n; i++) {
        ag_buf_printf(b, "%s\"arg%d\":", i ? "," : "", i);
        gen_value_schema(b, &r, 1, &use_def);
    }
    ag_buf_printf(b, "},\"required\":[");
    bool first = true;
    for (int i = 0; i < n; i++)
        if (i == 0 || gen_next(&r) % 2) {
            ag_buf_printf(b, "%s\"arg%d\"", first ? "" : ",", i);
            first = false;
        }
    ag_buf_printf(b, "],\"additionalProperties\":false,\"$defs\":{\"point\":{\"type\":\"object\","
                     "\"properties\":{\"x\":{\"type\":\"number\"},\"y\":{\"type\":\"number\"}},"
                     "\"required\":[\"x\",\"y\"],\"additionalProperties\":false}}}");
}

#endif
