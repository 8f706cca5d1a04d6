/*
 * engine.h - the inference engine's public face: what the daemon, agentd-infer and the
 * benchmarks may use. Code outside engine/ includes this header only (tests of the engine's
 * internals excepted).
 *
 * The engine is a set of small libraries, each documented in its own header, re-exported here:
 *   gguf.h       GGUF files: open (mapped, bounds-checked), metadata, tensors
 *   tokenizer.h  tokenize and detokenize with a model's vocabulary, special tokens
 *   chat.h       chat templates: render messages and tools, parse replies and tool calls
 *   grammar.h    JSON Schema to grammar; the token mask of constrained decoding
 *   sampler.h    greedy, temperature, top-k/top-p/min-p, penalties, seed
 *   model.h      a model in-process: load, forward, batched forward over a paged KV store
 *   serve.h      the engine as a service: one engine thread, continuous batching, streamed events
 *
 * What stays inside: the backends (ops.h and cpu/), the prefix cache (kvcache.h), the streaming
 * filter of tool calls and stop strings (toolcall.h) and the *_int.h headers.
 */
#ifndef ENG_ENGINE_H
#define ENG_ENGINE_H

#include "chat.h"
#include "gguf.h"
#include "grammar.h"
#include "model.h"
#include "sampler.h"
#include "serve.h"
#include "tokenizer.h"

#endif
