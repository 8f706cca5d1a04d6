/*
 * params.c - validation helpers for method parameters. Every failure names the field
 * ("params.name: expected a string, got number") so a client author sees what to fix.
 */
#include "protocol.h"

#include <string.h>

#include "protocol_int.h"

static const struct proto_val *member(const struct proto_val *params, const char *key,
                                      bool required, int *rc, struct ag_err *err)
{
    const struct proto_val *v = proto_get(params, key);
    *rc = 0;
    if (!v || proto_type(v) == PROTO_NULL) {
        if (required) *rc = ag_err_set(err, AG_EPARAMS, "params.%s: required", key);
        return NULL;
    }
    return v;
}

int proto_param_str(const struct proto_val *params, const char *key, bool required,
                    const char **out, struct ag_err *err)
{
    int rc;
    const struct proto_val *v = member(params, key, required, &rc, err);
    if (!v) return rc;
    if (!proto_str(v))
        return ag_err_set(err, AG_EPARAMS, "params.%s: expected a string, got %s", key,
                          proto_type_name(proto_type(v)));
    *out = proto_str(v);
    return 0;
}

int proto_param_int(const struct proto_val *params, const char *key, bool required, int64_t min,
                    int64_t max, int64_t *out, struct ag_err *err)
{
    int rc;
    const struct proto_val *v = member(params, key, required, &rc, err);
    if (!v) return rc;
    int64_t n = proto_int(v, 0);
    if (!proto_is_int(v) || n < min || n > max)
        return ag_err_set(err, AG_EPARAMS, "params.%s: expected an integer from %lld to %lld", key,
                          (long long)min, (long long)max);
    *out = n;
    return 0;
}

int proto_param_bool(const struct proto_val *params, const char *key, bool required, bool *out,
                     struct ag_err *err)
{
    int rc;
    const struct proto_val *v = member(params, key, required, &rc, err);
    if (!v) return rc;
    if (proto_type(v) != PROTO_BOOL)
        return ag_err_set(err, AG_EPARAMS, "params.%s: expected a boolean, got %s", key,
                          proto_type_name(proto_type(v)));
    *out = proto_bool(v, false);
    return 0;
}

int proto_param_obj(const struct proto_val *params, const char *key, bool required,
                    const struct proto_val **out, struct ag_err *err)
{
    int rc;
    const struct proto_val *v = member(params, key, required, &rc, err);
    if (!v) return rc;
    if (proto_type(v) != PROTO_OBJECT)
        return ag_err_set(err, AG_EPARAMS, "params.%s: expected an object, got %s", key,
                          proto_type_name(proto_type(v)));
    *out = v;
    return 0;
}

const char *proto__closest_key(const char *key, const char *const *keys)
{
    const char *best = NULL;
    int best_d = 3;
    for (size_t i = 0; keys[i]; i++) {
        int d = ag_levenshtein(key, keys[i]);
        /* A key that starts the right name ("max_frame") is a near miss too. */
        if (strlen(key) >= 3 && strncmp(keys[i], key, strlen(key)) == 0) d = 2;
        if (d < best_d) best_d = d, best = keys[i];
    }
    return best;
}

int proto_param_known(const struct proto_val *params, const char *const *keys, struct ag_err *err)
{
    for (const struct proto_val *m = proto_child(params); m; m = proto_next(m)) {
        const char *k = proto_key(m);
        bool known = false;
        for (size_t i = 0; keys[i] && !known; i++) known = strcmp(k, keys[i]) == 0;
        if (known) continue;
        const char *best = proto__closest_key(k, keys);
        if (best)
            return ag_err_set(err, AG_EPARAMS, "params.%s: unknown parameter (did you mean '%s'?)",
                              k, best);
        return ag_err_set(err, AG_EPARAMS, "params.%s: unknown parameter", k);
    }
    return 0;
}
