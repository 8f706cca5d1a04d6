/*
 * fuzz_spec.c - libFuzzer target for agent definition files (YAML and JSON) and the spec
 * validator. The first byte picks the format by file name; a definition that validates must
 * validate again, unchanged, from its own normalized JSON.
 */
#include <stdlib.h>
#include <string.h>

#include "../protocol/protocol.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static const char *const names[] = {"fuzz.agent.yaml", "fuzz.agent.json", "fuzz.agent"};
    struct proto_val *spec = NULL, *again = NULL;
    struct ag_err err = {0};

    if (size == 0) return 0;
    const char *name = names[data[0] % 3];
    if (proto_spec_load_text((const char *)data + 1, size - 1, name, &spec, &err) != 0) {
        if (!err.msg[0] || (err.code != AG_ESPEC && err.code != AG_ETOOBIG)) abort();
        return 0;
    }
    if (proto_spec_validate(spec, &again, &err) != 0) abort();
    if (!proto_equal(spec, again)) abort();
    proto_val_free(spec);
    proto_val_free(again);
    return 0;
}
