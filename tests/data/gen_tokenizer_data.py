#!/usr/bin/env python3
"""Regenerates the reference data that agentd's tokenizer and greedy-decoding parity tests compare against.

The reference is llama.cpp's llama-server (its HTTP API gives reliable JSON; piped CLI output can be lost).
Start one server per model, then run this once per model:

    llama-server -m models/SmolLM2-135M-Instruct.Q4_1.gguf -t 2 -c 2048 --port 8080
    python3 tests/data/gen_tokenizer_data.py --url http://127.0.0.1:8080 --model smollm2

It writes, into tests/data/ (or --out-dir):

  tokenizer_<model>.jsonl   one object per input string of tokenizer_strings.jsonl, in the same order:
                              {"text": s, "ids": [...], "ids_plain": [...]}
                            "ids":       POST /tokenize {"content": s, "add_special": false, "parse_special": true}
                                         special tokens written literally (e.g. "<|im_end|>") become their ids:
                                         what a chat template's own text needs.
                            "ids_plain": the same with "parse_special": false: special-token text is
                                         tokenized as ordinary text: what user-supplied content needs.
                            Neither adds BOS/EOS; tokenizer_<model>_meta.json records what add_special does.
  tokenizer_<model>_meta.json  the server's build and model, BOS/EOS handling with add_special true/false,
                            the chat template rendering check.
  greedy_<model>.jsonl      for each fixed prompt: {"name", "kind": "plain"|"chat", "prompt", "prompt_ids",
                            "ids", "text", "stop", "top"}: POST /completion with temperature 0 (greedy),
                            n_predict 64 (--n-predict), cache_prompt false. The prompt is tokenized as
                            /completion does it (add_special true, parse_special true), so "prompt_ids" carries
                            BOS where the model adds one. Generation stops early at an end-of-generation token
                            ("stop": "eos"; that token is the last of "ids") or after n_predict ("stop": "limit").
                            "top": per generated token, the 3 most likely [id, logprob] pairs before sampling
                            (softmax of the raw logits): a parity test can tell a real mismatch from a near-tie.

tokenizer_strings.jsonl holds one JSON string per line (ASCII, \\u escapes), so every string round-trips
exactly, newlines, tabs and astral-plane characters included. Standard library only.
"""

import argparse
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def post(url, path, body, timeout=300):
    req = urllib.request.Request(
        url.rstrip("/") + path,
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        sys.exit(f"gen: POST {path} failed: HTTP {e.code}: {e.read()[:500]!r}")
    except urllib.error.URLError as e:
        sys.exit(f"gen: cannot reach {url}: {e.reason} (is llama-server running?)")


def get(url, path, timeout=60):
    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=timeout) as r:
            return json.loads(r.read().decode("utf-8"))
    except urllib.error.URLError as e:
        sys.exit(f"gen: GET {path} failed: {e}")


def tokenize(url, text, add_special, parse_special):
    r = post(url, "/tokenize", {"content": text, "add_special": add_special, "parse_special": parse_special})
    return r["tokens"]


def detokenize(url, ids):
    return post(url, "/detokenize", {"tokens": ids})["content"]


# --- chat formats -----------------------------------------------------------------------------------
# Written out here rather than taken from the server, so the prompts are the same whatever template the
# server falls back to (the Gemma 3 270M file is the base model and carries no chat template).

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(messages, default_system=None):
    out = ""
    if default_system is not None and messages[0]["role"] != "system":
        out += "<|im_start|>system\n" + default_system + "<|im_end|>\n"
    for m in messages:
        out += "<|im_start|>" + m["role"] + "\n" + m["content"] + "<|im_end|>\n"
    return out + "<|im_start|>assistant\n"


def gemma_turns(messages):
    # Gemma 3's instruction format: no system role (it is prepended to the first user turn), the assistant is
    # "model". BOS is not written: the tokenizer adds it (add_bos_token = true), and writing it too would
    # give two.
    out = ""
    system = ""
    for m in messages:
        if m["role"] == "system":
            system = m["content"] + "\n\n"
            continue
        role = "model" if m["role"] == "assistant" else "user"
        content = m["content"]
        if role == "user" and system:
            content, system = system + content, ""
        out += "<start_of_turn>" + role + "\n" + content + "<end_of_turn>\n"
    return out + "<start_of_turn>model\n"


MODELS = {
    "smollm2": {"chat": lambda msgs: chatml(msgs, SMOLLM2_DEFAULT_SYSTEM)},
    "gemma3": {"chat": gemma_turns},
}

PLAIN_PROMPTS = [
    ("capital", "The capital of France is"),
    ("story", "Once upon a time, in a small village by the sea,"),
    ("code", "def fibonacci(n):\n"),
    ("list", "The planets of the solar system, in order from the Sun:\n1."),
    ("recipe", "Here is a simple recipe for pancakes.\n\nIngredients:\n-"),
    ("history", "In 1969, Neil Armstrong"),
]

CHAT_PROMPTS = [
    ("chat_capital", [{"role": "user", "content": "What is the capital of France?"}]),
    ("chat_poem", [{"role": "user", "content": "Write a short poem about the ocean."}]),
    (
        "chat_system",
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Explain what a CPU cache is."},
        ],
    ),
    (
        "chat_multiturn",
        [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "Give me three tips for writing clean C code."},
        ],
    ),
]


def read_strings(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            s = json.loads(line)
            if not isinstance(s, str):
                sys.exit(f"gen: {path}:{n}: not a JSON string")
            out.append(s)
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=True) + "\n")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="llama-server base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--model", required=True, choices=sorted(MODELS), help="which model the server has loaded")
    ap.add_argument("--strings", default=os.path.join(HERE, "tokenizer_strings.jsonl"))
    ap.add_argument("--out-dir", default=HERE)
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--skip-greedy", action="store_true")
    a = ap.parse_args()
    fmt = MODELS[a.model]

    props = get(a.url, "/props")
    model_path = props.get("model_path", "")
    meta = {
        "model": a.model,
        "model_file": os.path.basename(model_path),
        "model_sha256": sha256_file(model_path) if model_path and os.path.isfile(model_path) else None,
        "server_build_info": props.get("build_info"),
        "server_n_ctx": (props.get("default_generation_settings") or {}).get("n_ctx"),
        "bos_token": props.get("bos_token"),
        "eos_token": props.get("eos_token"),
        "tokenize_request": {"add_special": False, "parse_special": True},
        "tokenize_plain_request": {"add_special": False, "parse_special": False},
    }

    # BOS/EOS handling: what add_special adds.
    probe = "Hello world"
    with_sp = tokenize(a.url, probe, True, True)
    without = tokenize(a.url, probe, False, True)
    meta["add_special_probe"] = {"text": probe, "add_special_true": with_sp, "add_special_false": without}
    j = next((j for j in range(len(with_sp) - len(without) + 1) if with_sp[j : j + len(without)] == without), None)
    if j is None:
        sys.exit(f"gen: add_special changed the tokens of {probe!r} beyond adding some: {with_sp} vs {without}")
    meta["add_special_adds_bos"] = j > 0
    meta["add_special_prefix_ids"] = with_sp[:j]
    meta["add_special_suffix_ids"] = with_sp[j + len(without) :]
    meta["add_special_empty_string"] = tokenize(a.url, "", True, True)
    # A literal BOS text at the start with add_special: does the tokenizer add a second one?
    if props.get("bos_token"):
        bos_txt = props["bos_token"]
        meta["literal_bos_with_add_special"] = {"text": bos_txt + probe, "ids": tokenize(a.url, bos_txt + probe, True, True)}

    # Chat rendering check against the server's template engine (only meaningful where the GGUF has a
    # template; without one the server falls back to a built-in template).
    checks = []
    for name, msgs in CHAT_PROMPTS:
        mine = fmt["chat"](msgs)
        theirs = post(a.url, "/apply-template", {"messages": msgs}).get("prompt")
        checks.append({"name": name, "equal": theirs == mine, "ours": mine, "server_apply_template": theirs})
    meta["chat_template_check"] = checks

    strings = read_strings(a.strings)
    rows = []
    for i, s in enumerate(strings):
        rows.append({"text": s, "ids": tokenize(a.url, s, False, True), "ids_plain": tokenize(a.url, s, False, False)})
        if (i + 1) % 50 == 0:
            print(f"gen: {a.model}: tokenized {i + 1}/{len(strings)}", file=sys.stderr)
    # Round-trip sanity: detokenizing the plain ids gives the text back for ordinary strings.
    mism = [r["text"] for r in rows if detokenize(a.url, r["ids_plain"]) != r["text"]]
    meta["detokenize_roundtrip_mismatches"] = mism
    meta["n_strings"] = len(rows)
    write_jsonl(os.path.join(a.out_dir, f"tokenizer_{a.model}.jsonl"), rows)

    if not a.skip_greedy:
        prompts = [(n, "plain", p) for n, p in PLAIN_PROMPTS] + [(n, "chat", fmt["chat"](m)) for n, m in CHAT_PROMPTS]
        out = []
        for name, kind, prompt in prompts:
            prompt_ids = tokenize(a.url, prompt, True, True)
            r = post(
                a.url,
                "/completion",
                {
                    "prompt": prompt,
                    "n_predict": a.n_predict,
                    "temperature": 0,
                    "seed": 0,
                    "cache_prompt": False,
                    "return_tokens": True,
                    "n_probs": 3,
                },
            )
            ids = r.get("tokens") or []
            probs = r.get("completion_probabilities") or []
            top = [[[t["id"], round(t["logprob"], 5)] for t in p.get("top_logprobs", [])] for p in probs]
            if r.get("tokens_evaluated") not in (None, len(prompt_ids)):
                sys.exit(f"gen: {name}: the server evaluated {r['tokens_evaluated']} prompt tokens, /tokenize gave {len(prompt_ids)}")
            stop = "eos" if r.get("stop_type") == "eos" else "limit" if r.get("stop_type") == "limit" else r.get("stop_type")
            out.append(
                {
                    "name": name,
                    "kind": kind,
                    "prompt": prompt,
                    "prompt_ids": prompt_ids,
                    "ids": ids,
                    "text": r.get("content", ""),
                    "stop": stop,
                    "top": top[: len(ids)],
                }
            )
            print(f"gen: {a.model}: {name}: {len(prompt_ids)} prompt tokens, {len(ids)} generated ({stop})", file=sys.stderr)
        meta["greedy_request"] = {"n_predict": a.n_predict, "temperature": 0, "cache_prompt": False, "n_probs": 3}
        write_jsonl(os.path.join(a.out_dir, f"greedy_{a.model}.jsonl"), out)

    with open(os.path.join(a.out_dir, f"tokenizer_{a.model}_meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=True)
        f.write("\n")
    print(f"gen: {a.model}: wrote {len(rows)} tokenizer rows to {a.out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
