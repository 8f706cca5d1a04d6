/*
 * fuzz_grammar.c - libFuzzer target for JSON Schema grammars (engine/grammar.c) and the
 * validator (protocol/jsonschema.c, proto_schema_validate). The input is a schema, a NUL byte, then
 * text. A schema either compiles or is refused with a message; the text is fed byte by byte;
 * whenever the matcher says a value is complete, the text so far must be JSON that the validator
 * accepts (keywords the grammar does not enforce aside: the seeds avoid them), and the shortest
 * completion of any prefix must finish the value.
 */
#include <stdlib.h>
#include <string.h>

#include "../engine/engine.h"
#include "../protocol/protocol.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const unsigned char *nul = memchr(data, 0, size);
    size_t slen = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : "";
    size_t tlen = nul ? size - slen - 1 : 0;

    struct eng_grammar *g = NULL;
    struct ag_err err = {0};
    int rc = eng_grammar_from_schema((const char *)data, slen, &g, &err);
    if (rc != 0) {
        if (g || err.msg[0] == '\0') abort();
        return 0;
    }
    struct eng_gmatch *m;
    if (eng_gmatch_new(g, &m, &err) != 0) abort();
    size_t i = 0;
    for (; i < tlen; i++)
        if (!eng_gmatch_accept(m, text + i, 1)) break;
    /* The shortest completion of what was accepted ends the value. */
    struct ag_buf comp;
    ag_buf_init(&comp);
    if (eng_gmatch_completion(m, &comp) == 0) {
        /* A number at the top level is complete without a terminator: can_end, not done. */
        if (!eng_gmatch_accept(m, comp.data ? comp.data : "", comp.len) || !eng_gmatch_can_end(m))
            abort();
        char *whole = malloc(i + comp.len + 1);
        memcpy(whole, text, i);
        memcpy(whole + i, comp.data ? comp.data : "", comp.len);
        whole[i + comp.len] = '\0';
        struct proto_val *v = proto_parse(whole, strlen(whole), NULL);
        if (!v) abort(); /* a complete value is JSON */
        struct proto_val *s = proto_parse((const char *)data, slen, NULL);
        struct ag_err verr = {0};
        (void)proto_schema_validate(s, v, &verr); /* must not crash; keywords may differ */
        proto_val_free(s);
        proto_val_free(v);
        free(whole);
    }
    ag_buf_release(&comp);
    eng_gmatch_free(m);
    eng_grammar_free(g);
    return 0;
}
