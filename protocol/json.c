/*
 * json.c - struct proto_val: the protocol's JSON values, a thin veneer over cJSON.
 *
 * A proto_val pointer is a cJSON pointer; keeping the type opaque lets the rest of agentd stay
 * independent of the JSON library. Numbers are doubles (cJSON's model), so integers are exact up
 * to 2^53; proto_is_int and the param helpers reject anything else where an integer is asked for.
 */
#include "protocol.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#define C(v)  ((cJSON *)(v))
#define CC(v) ((const cJSON *)(v))
#define P(c)  ((struct proto_val *)(c))

struct proto_val *proto_parse(const char *text, size_t n, struct ag_err *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, 0);

    if (!root) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        if (at > n) at = n;
        ag_err_set(err, AG_EPARSE, "invalid JSON at byte %zu", at);
        return NULL;
    }
    /* cJSON stops after the first value; anything but whitespace after it is an error. */
    for (size_t i = (size_t)(end - text); i < n; i++) {
        char c = text[i];
        if (c == '\0' && i + 1 == n) break;
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
            cJSON_Delete(root);
            ag_err_set(err, AG_EPARSE, "invalid JSON: unexpected data after the value at byte %zu",
                       i);
            return NULL;
        }
    }
    return P(root);
}

void proto_val_free(struct proto_val *v)
{
    cJSON_Delete(C(v));
}

struct proto_val *proto_val_dup(const struct proto_val *v)
{
    cJSON *c = v ? cJSON_Duplicate(CC(v), 1) : NULL;
    if (v && !c) ag_malloc((size_t)-1); /* aborts: host OOM */
    return P(c);
}

static char *checked(char *s)
{
    if (!s) ag_malloc((size_t)-1); /* cJSON only fails to print on OOM */
    return s;
}

char *proto_print(const struct proto_val *v)
{
    return checked(cJSON_PrintUnformatted(CC(v)));
}

char *proto_print_pretty(const struct proto_val *v)
{
    return checked(cJSON_Print(CC(v)));
}

void proto_print_buf(const struct proto_val *v, struct ag_buf *b)
{
    char *s = proto_print(v);
    ag_buf_puts(b, s);
    cJSON_free(s);
}

enum proto_type proto_type(const struct proto_val *v)
{
    const cJSON *c = CC(v);
    if (!c) return PROTO_INVALID;
    switch (c->type & 0xff) {
    case cJSON_NULL:
        return PROTO_NULL;
    case cJSON_False:
    case cJSON_True:
        return PROTO_BOOL;
    case cJSON_Number:
        return PROTO_NUMBER;
    case cJSON_String:
        return PROTO_STRING;
    case cJSON_Array:
        return PROTO_ARRAY;
    case cJSON_Object:
        return PROTO_OBJECT;
    }
    return PROTO_INVALID;
}

const char *proto_type_name(enum proto_type t)
{
    static const char *const names[] = {"null",  "boolean", "number", "string",
                                        "array", "object",  "nothing"};
    return (unsigned)t <= PROTO_INVALID ? names[t] : "nothing";
}

bool proto_is_int(const struct proto_val *v)
{
    if (proto_type(v) != PROTO_NUMBER) return false;
    double d = CC(v)->valuedouble;
    return isfinite(d) && d == floor(d) && fabs(d) <= 9007199254740992.0;
}

const struct proto_val *proto_get(const struct proto_val *obj, const char *key)
{
    if (proto_type(obj) != PROTO_OBJECT) return NULL;
    return P(cJSON_GetObjectItemCaseSensitive(CC(obj), key));
}

const char *proto_str(const struct proto_val *v)
{
    return proto_type(v) == PROTO_STRING ? CC(v)->valuestring : NULL;
}

const char *proto_get_str(const struct proto_val *obj, const char *key)
{
    return proto_str(proto_get(obj, key));
}

double proto_num(const struct proto_val *v, double fallback)
{
    return proto_type(v) == PROTO_NUMBER ? CC(v)->valuedouble : fallback;
}

int64_t proto_int(const struct proto_val *v, int64_t fallback)
{
    return proto_is_int(v) ? (int64_t)CC(v)->valuedouble : fallback;
}

bool proto_bool(const struct proto_val *v, bool fallback)
{
    return proto_type(v) == PROTO_BOOL ? cJSON_IsTrue(CC(v)) : fallback;
}

size_t proto_len(const struct proto_val *v)
{
    enum proto_type t = proto_type(v);
    if (t != PROTO_ARRAY && t != PROTO_OBJECT) return 0;
    return (size_t)cJSON_GetArraySize(CC(v));
}

const struct proto_val *proto_at(const struct proto_val *v, size_t i)
{
    enum proto_type t = proto_type(v);
    if ((t != PROTO_ARRAY && t != PROTO_OBJECT) || i > (size_t)INT32_MAX) return NULL;
    return P(cJSON_GetArrayItem(CC(v), (int)i));
}

const struct proto_val *proto_child(const struct proto_val *v)
{
    enum proto_type t = proto_type(v);
    return t == PROTO_ARRAY || t == PROTO_OBJECT ? P(CC(v)->child) : NULL;
}

const struct proto_val *proto_next(const struct proto_val *v)
{
    return v ? P(CC(v)->next) : NULL;
}

const char *proto_key(const struct proto_val *member)
{
    return member ? CC(member)->string : NULL;
}

static struct proto_val *made(cJSON *c)
{
    if (!c) ag_malloc((size_t)-1);
    return P(c);
}

struct proto_val *proto_obj(void)
{
    return made(cJSON_CreateObject());
}

struct proto_val *proto_arr(void)
{
    return made(cJSON_CreateArray());
}

struct proto_val *proto_new_str(const char *s)
{
    return made(cJSON_CreateString(s ? s : ""));
}

struct proto_val *proto_new_num(double n)
{
    return made(cJSON_CreateNumber(n));
}

struct proto_val *proto_new_int(int64_t n)
{
    return made(cJSON_CreateNumber((double)n));
}

struct proto_val *proto_new_bool(bool b)
{
    return made(cJSON_CreateBool(b));
}

struct proto_val *proto_new_null(void)
{
    return made(cJSON_CreateNull());
}

struct proto_val *proto_add(struct proto_val *obj, const char *key, struct proto_val *item)
{
    if (!cJSON_AddItemToObject(C(obj), key, C(item))) ag_malloc((size_t)-1);
    return item;
}

struct proto_val *proto_add_str(struct proto_val *obj, const char *key, const char *s)
{
    return proto_add(obj, key, proto_new_str(s));
}

struct proto_val *proto_add_int(struct proto_val *obj, const char *key, int64_t n)
{
    return proto_add(obj, key, proto_new_int(n));
}

struct proto_val *proto_add_num(struct proto_val *obj, const char *key, double n)
{
    return proto_add(obj, key, proto_new_num(n));
}

struct proto_val *proto_add_bool(struct proto_val *obj, const char *key, bool b)
{
    return proto_add(obj, key, proto_new_bool(b));
}

struct proto_val *proto_add_null(struct proto_val *obj, const char *key)
{
    return proto_add(obj, key, proto_new_null());
}

struct proto_val *proto_add_raw(struct proto_val *obj, const char *key, const char *json)
{
    struct proto_val *v = proto_parse(json, strlen(json), NULL);
    return proto_add(obj, key, v ? v : proto_new_str(json));
}

struct proto_val *proto_push(struct proto_val *arr, struct proto_val *item)
{
    if (!cJSON_AddItemToArray(C(arr), C(item))) ag_malloc((size_t)-1);
    return item;
}

void proto_set(struct proto_val *obj, const char *key, struct proto_val *item)
{
    if (cJSON_GetObjectItemCaseSensitive(C(obj), key))
        cJSON_ReplaceItemInObjectCaseSensitive(C(obj), key, C(item));
    else
        proto_add(obj, key, item);
}

void proto_del(struct proto_val *obj, const char *key)
{
    cJSON_DeleteItemFromObjectCaseSensitive(C(obj), key);
}

bool proto_equal(const struct proto_val *a, const struct proto_val *b)
{
    return cJSON_Compare(CC(a), CC(b), 1);
}

void proto_buf_quote(struct ag_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;

    ag_buf_putc(b, '"');
    for (; *p; p++) {
        unsigned char c = *p;
        switch (c) {
        case '"':
            ag_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            ag_buf_append(b, "\\\\", 2);
            break;
        case '\n':
            ag_buf_append(b, "\\n", 2);
            break;
        case '\r':
            ag_buf_append(b, "\\r", 2);
            break;
        case '\t':
            ag_buf_append(b, "\\t", 2);
            break;
        default:
            if (c < 0x20) {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                ag_buf_append(b, esc, 6);
            } else {
                ag_buf_putc(b, (char)c);
            }
        }
    }
    ag_buf_putc(b, '"');
}
