/*
 * ops.c - what every backend shares: releasing one through its table, KV element sizes and
 * the RoPE angle table the model computes for the rope op (ops.h).
 */
#include "ops.h"

#include <math.h>

void eng_backend_release(struct eng_backend *be)
{
    if (be->ops) be->ops->release(be->ctx);
    be->ops = NULL;
    be->ctx = NULL;
}

size_t eng_kv_type_size(enum eng_kv_type type)
{
    return type == ENG_KV_F32 ? sizeof(float) : sizeof(uint16_t);
}

void eng_rope_cache(float *cs, int pos, int n_rot, float base)
{
    const float theta_scale = powf(base, -2.0f / (float)n_rot);
    float theta = (float)pos;
    for (int i = 0; i < n_rot / 2; i++) {
        cs[2 * i] = cosf(theta);
        cs[2 * i + 1] = sinf(theta);
        theta *= theta_scale;
    }
}
