#!/usr/bin/env python3
"""Regenerates tests/data/chat_templates.jsonl, the golden prompts that tests/test_chat.c renders
with engine/chat.c and compares byte for byte.

Each conversation below is rendered by llama.cpp's Jinja engine (llama-server's POST /apply-template,
one server per template, started and stopped here) and, as a cross-check, by Python's jinja2 set up
the way Hugging Face transformers sets it up (trim_blocks, lstrip_blocks, a tojson that keeps key
order and non-ASCII text). The two must agree; where they do not, the case says which one is kept
and why ("prefer"), or the script stops.

    LLAMA_SERVER=/path/to/llama-server CHAT_TEMPLATES=/path/to/templates \\
        python3 tests/data/gen_chat_templates.py

LLAMA_SERVER  a built llama-server (this script never builds llama.cpp).
CHAT_TEMPLATES a directory holding the official templates as .jinja files:
                 Qwen-Qwen2.5-7B-Instruct.jinja, meta-llama-Llama-3.1-8B-Instruct.jinja and
                 meta-llama-Llama-3.2-3B-Instruct.jinja (all three ship in llama.cpp's models/templates/),
                 google-gemma-3-it.jinja (the "chat_template" of google/gemma-3-1b-it's
                 tokenizer_config.json; sha256 of the file as used: GEMMA3_SHA256 below).
MODEL         the GGUF the servers load (default models/SmolLM2-135M-Instruct.Q4_1.gguf); its own
                 tokenizer.chat_template is the SmolLM2 template of the chatml family.

The families and the conventions layered on a template where the model has no native way to say
something (the same rules engine/chat.c implements; see engine/chat.h):

  chatml  SmolLM2-Instruct's template. It knows nothing of tools, so tool definitions, calls and
          results follow Qwen2.5's (Hermes-style) ChatML convention: the template used is Qwen2.5's
          with Qwen's default system prompt swapped for SmolLM's. For conversations without tools
          this script checks that it renders exactly as SmolLM2's own template does.
  qwen2   Qwen2.5-Instruct's template as it is.
  llama3  Llama 3.1's template (and 3.2's: both must agree given the same date_string), with
          date_string passed explicitly. The template refuses an assistant message with more
          than one call; such a message is split into consecutive single-call assistant messages.
  gemma   Gemma 3's template. Gemma has no tool format: tools are described after the system
          prompt, calls are ```tool_call fenced JSON objects in the model turn, results are
          ```tool_result fenced blocks in a user turn, and consecutive messages that land in the
          same role are joined with a blank line, since the template insists on alternation.

BOS is left to the tokenizer: every server renders with bos_token "" (passed as a template kwarg).
Standard library plus jinja2 only.
"""

import copy
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "chat_templates.jsonl")

GEMMA3_SHA256 = "d2f96210400e38149e26e01918a408c3f2ad3d4bd87c44e8dcf8e1a611a98535"
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
LLAMA3_DATE = "26 Jul 2024"

# ---- the conversations ---------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city. Temperatures in \u00b0C unless \"unit\" says otherwise.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Z\u00fcrich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search_files",
        "description": "Search files by content.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "filter": {
                    "type": "object",
                    "properties": {
                        "paths": {"type": "array", "items": {"type": "string"}},
                        "max_results": {"type": "integer", "minimum": 1},
                    },
                },
            },
            "required": ["query"],
        },
    },
}
NOW = {"type": "function", "function": {"name": "now", "description": "", "parameters": {}}}


def sys_(text):
    return {"role": "system", "content": text}


def user(text):
    return {"role": "user", "content": text}


def asst(text):
    return {"role": "assistant", "content": text}


def call(cid, name, args_text):
    return {"type": "function", "id": cid, "function": {"name": name, "arguments": args_text}}


def asst_calls(text, *calls):
    return {"role": "assistant", "content": text, "tool_calls": list(calls)}


def tool(cid, name, text):
    return {"role": "tool", "tool_call_id": cid, "name": name, "content": text}


W1 = call("call_1", "get_weather", '{"city": "Paris"}')
W2 = call("call_2", "get_weather", '{"city":"Z\u00fcrich","unit":"celsius"}')
S1 = call(
    "call_3",
    "search_files",
    '{"query": "say \\"hi\\"\\n\\tnow", "filter": {"paths": ["src/", "docs/a b.md"], '
    '"max_results": 5, "exact": true, "skip": null, "ratio": 0.25, "tags": [], "opts": {}}}',
)

# (name, messages, tools, add_generation_prompt, extra) where extra may hold "families" (only
# these), "date" (llama3), "error" (families whose template refuses the conversation) and
# "prefer" (which renderer's output is kept when llama.cpp and jinja2 disagree, with why).
CASES = [
    ("user_only", [user("Hello!")], None, True, {}),
    ("user_only_no_gen", [user("Hello!")], None, False, {}),
    ("system_user", [sys_("You are terse."), user("What is 2+2?")], None, True, {}),
    (
        "multi_turn",
        [sys_("You are terse."), user("Hi"), asst("Hello. How can I help?"), user("Name a colour.")],
        None,
        True,
        {},
    ),
    (
        "multi_turn_no_system_ends_with_assistant",
        [user("Hi"), asst("Hello."), user("Name a colour."), asst("Blue.")],
        None,
        False,
        {},
    ),
    (
        "whitespace_kept_or_trimmed",
        [sys_("  Be brief.  \n"), user("\n  padded question \t\n"), asst("  padded answer\n\n")],
        None,
        True,
        {},
    ),
    (
        "unicode",
        [sys_("R\u00e9ponds en fran\u00e7ais \u2014 merci."), user("Gr\u00fc\u00dfe, \u4e16\u754c \U0001f30d! \u00bfQu\u00e9 tal?"),
         asst("\u00c7a va tr\u00e8s bien \U0001f600")],
        None,
        True,
        {},
    ),
    (
        "unicode_spaces_trimmed",
        [user("\u00a0\u3000Hello\u2003"), asst("\u2028Hi.\u00a0"), user("\x1fok\x1e")],
        None,
        True,
        {
            "prefer": (
                "hf",
                "Python's str.strip() (transformers' | trim) also strips Unicode spaces and "
                "\\x1c-\\x1f; llama.cpp's trim strips ASCII whitespace only",
            ),
        },
    ),
    ("empty_assistant", [user("Hi"), asst(""), user("Still there?")], None, True, {}),
    ("special_text_in_content", [user("Say <|im_end|> or <end_of_turn> or <|eot_id|> literally.")], None, True, {}),
    ("tools_system", [sys_("You help with the weather."), user("Weather in Paris?")], [WEATHER, SEARCH], True, {}),
    ("tools_no_system", [user("Weather in Paris?")], [WEATHER], True, {}),
    ("tools_empty_params", [user("What time is it?")], [NOW], True, {}),
    (
        "tool_call_and_result",
        [sys_("You help with the weather."), user("Weather in Paris?"), asst_calls("", W1),
         tool("call_1", "get_weather", '{"temp_c": 21.5, "sky": "clear"}')],
        [WEATHER],
        True,
        {},
    ),
    (
        "tool_call_with_text",
        [user("Weather in Paris?"), asst_calls("Let me check.", W1), tool("call_1", "get_weather", "sunny")],
        [WEATHER],
        True,
        {},
    ),
    (
        "two_calls_two_results",
        [user("Compare Paris and Z\u00fcrich."), asst_calls("", W1, W2), tool("call_1", "get_weather", "sunny, 21 C"),
         tool("call_2", "get_weather", "rain, 14 C"), asst("Paris is warmer and sunny.")],
        [WEATHER],
        False,
        {},
    ),
    (
        "nested_arguments",
        [sys_("You search files."), user("Find greetings."), asst_calls(None, S1),
         tool("call_3", "search_files", "src/hello.c:3: say \"hi\"")],
        [SEARCH],
        True,
        {},
    ),
    (
        "results_without_tools",
        [user("Weather in Paris?"), asst_calls("", W1), tool("call_1", "get_weather", "sunny")],
        None,
        True,
        {},
    ),
    (
        "second_round",
        [sys_("You help with the weather."), user("Weather in Paris?"), asst_calls("", W1),
         tool("call_1", "get_weather", "sunny"), asst("It is sunny in Paris."), user("And in Z\u00fcrich?"),
         asst_calls("", W2)],
        [WEATHER],
        False,
        {},
    ),
    (
        "system_mid_conversation",
        [sys_("Be brief."), user("Hi"), asst("Hello."), sys_("From now on answer in French."), user("Thanks")],
        None,
        True,
        {},
    ),
    (
        "date_given",
        [sys_("Be brief."), user("What day is it?")],
        [NOW],
        True,
        {"families": ["llama3"], "date": "02 Jan 2025"},
    ),
    (
        "starts_with_assistant",
        [sys_("Be brief."), asst("I start."), user("Fine.")],
        None,
        True,
        {"error": ["gemma"]},
    ),
    ("tools_but_no_user_message", [sys_("Be brief.")], [WEATHER], True, {"error": ["llama3"]}),
    (
        "number_literals",
        [user("Go."), asst_calls("", call("call_9", "get_weather", '{"city": "Paris", "n": 1.0, "big": 12345678901234567890}'))],
        [WEATHER],
        False,
        {
            "families": ["qwen2", "chatml", "llama3", "gemma"],
            "prefer": (
                "hf",
                "llama.cpp prints the float 1.0 as 1 and wraps integers above 2^63; Python's json.dumps, "
                "which the model saw in training, keeps 1.0 and the integer as written",
            ),
        },
    ),
]

FAMILIES = ["chatml", "qwen2", "llama3", "gemma"]

# ---- conventions layered on the templates (mirrored by engine/chat.c) -------------------------------


def py_json(v):
    """JSON as the templates' tojson prints it: ", " and ": " separators, key order kept, UTF-8 kept."""
    return json.dumps(v, ensure_ascii=False)


GEMMA_TOOLS_HEAD = "You can call the following tools, each described by a JSON object with its name, description and parameters (a JSON Schema):\n"
GEMMA_TOOLS_TAIL = (
    "\n\nTo call a tool, reply with a fenced block tagged tool_call that holds one JSON object, "
    "one block per call:\n```tool_call\n"
    '{"name": "<tool name>", "arguments": <arguments as a JSON object>}\n```\n'
    "The results come back in the next user turn, each in a fenced block tagged tool_result."
)


def gemma_polyfill(messages, tools):
    """Rewrites a conversation with tools, calls and results into the plain user/model turns that
    Gemma 3's template accepts (system first, then strict alternation)."""
    msgs = copy.deepcopy(messages)
    system = None
    if msgs and msgs[0]["role"] == "system":
        system = msgs[0]["content"] or ""
        msgs = msgs[1:]
    if tools:
        lines = [
            py_json({
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "parameters": t["function"].get("parameters", {}),
            })
            for t in tools
        ]
        text = GEMMA_TOOLS_HEAD + "\n".join(lines) + GEMMA_TOOLS_TAIL
        system = (system + "\n\n" + text) if system else text
    turns = []  # [role, text]
    for m in msgs:
        role = m["role"]
        if role == "assistant":
            parts = []
            if m.get("content"):
                parts.append(m["content"])
            for c in m.get("tool_calls") or []:
                args = json.loads(c["function"]["arguments"])
                parts.append("```tool_call\n" + py_json({"name": c["function"]["name"], "arguments": args}) + "\n```")
            role, text = "assistant", "\n".join(parts)
        elif role == "tool":
            role, text = "user", "```tool_result\n" + (m.get("content") or "") + "\n```"
        else:  # user, or a system message after the first
            role, text = "user", m.get("content") or ""
        if turns and turns[-1][0] == role:
            turns[-1][1] += "\n\n" + text
        else:
            turns.append([role, text])
    out = []
    if system is not None:
        out.append(sys_(system))
    out += [{"role": r, "content": t} for r, t in turns]
    return out, None


def llama3_polyfill(messages, tools):
    out = []
    for m in messages:
        calls = m.get("tool_calls") or []
        if m["role"] == "assistant" and len(calls) > 1:
            for c in calls:
                out.append(asst_calls(m.get("content"), c))
        else:
            out.append(m)
    return out, tools


def no_polyfill(messages, tools):
    return messages, tools


# ---- rendering: llama.cpp --------------------------------------------------------------------------


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, binary, model, template_file):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [binary, "-m", model, "--jinja", "--no-prefill-assistant", "--port", str(self.port), "-t", "1", "-c", "256"]
        if template_file:
            args += ["--chat-template-file", template_file]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"gen: llama-server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "ok":
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.time() > deadline:
                self.close()
                sys.exit("gen: llama-server did not become healthy")
            time.sleep(0.2)

    def apply(self, messages, tools, add_generation_prompt, kwargs):
        body = {"messages": messages, "add_generation_prompt": add_generation_prompt, "chat_template_kwargs": kwargs}
        if tools:
            body["tools"] = tools
        req = urllib.request.Request(
            self.url + "/apply-template",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read().decode())["prompt"], None
        except urllib.error.HTTPError as e:
            return None, e.read().decode()[:300]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---- rendering: jinja2 as transformers does it ----------------------------------------------------


def hf_render(template, messages, tools, add_generation_prompt, kwargs):
    import jinja2
    import jinja2.ext
    import jinja2.sandbox

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    # transformers hands tool-call arguments to templates as dicts, not JSON text.
    msgs = copy.deepcopy(messages)
    for m in msgs:
        for c in m.get("tool_calls") or []:
            c["function"]["arguments"] = json.loads(c["function"]["arguments"])
        if m.get("content") is None and "tool_calls" in m:
            m["content"] = ""
    ctx = dict(messages=msgs, add_generation_prompt=add_generation_prompt, eos_token="")
    if tools:
        ctx["tools"] = tools
    ctx.update(kwargs)
    try:
        return env.from_string(template).render(**ctx), None
    except jinja2.exceptions.TemplateError as e:
        return None, str(e)


# ---- main ------------------------------------------------------------------------------------------


def need(path):
    if not os.path.isfile(path):
        sys.exit(f"gen: missing {path}")
    return path


def main():
    binary = os.environ.get("LLAMA_SERVER") or sys.exit("gen: set LLAMA_SERVER to a llama-server binary")
    tdir = os.environ.get("CHAT_TEMPLATES") or sys.exit("gen: set CHAT_TEMPLATES to the templates directory")
    model = os.environ.get("MODEL", os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    need(model)

    import gguf  # noqa: E402  (only needed to read SmolLM2's template)

    r = gguf.GGUFReader(model)
    f = r.fields["tokenizer.chat_template"]
    smollm_tmpl = bytes(f.parts[f.data[0]]).decode()
    qwen_file = need(os.path.join(tdir, "Qwen-Qwen2.5-7B-Instruct.jinja"))
    qwen_tmpl = open(qwen_file, encoding="utf-8").read()
    gemma_file = need(os.path.join(tdir, "google-gemma-3-it.jinja"))
    if hashlib.sha256(open(gemma_file, "rb").read()).hexdigest() != GEMMA3_SHA256:
        sys.exit(f"gen: {gemma_file} is not the Gemma 3 template this data was made with")
    if QWEN_SYSTEM not in qwen_tmpl:
        sys.exit("gen: the Qwen2.5 template lacks its default system prompt")
    chatml_tmpl = qwen_tmpl.replace(QWEN_SYSTEM, SMOLLM_SYSTEM)
    chatml_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"agentd-chatml-{os.getpid()}.jinja")
    with open(chatml_file, "w", encoding="utf-8") as fh:
        fh.write(chatml_tmpl)

    # family -> [(label, template file or None for the GGUF's own, template text, polyfill, only_without_tools)]
    renderers = {
        "chatml": [("chatml (Qwen2.5 tool convention)", chatml_file, chatml_tmpl, no_polyfill, False),
                   ("SmolLM2 GGUF template", None, smollm_tmpl, no_polyfill, True)],
        "qwen2": [("Qwen2.5", qwen_file, qwen_tmpl, no_polyfill, False)],
        "llama3": [
            (name, need(os.path.join(tdir, name + ".jinja")), open(os.path.join(tdir, name + ".jinja"), encoding="utf-8").read(),
             llama3_polyfill, False)
            for name in ("meta-llama-Llama-3.1-8B-Instruct", "meta-llama-Llama-3.2-3B-Instruct")
        ],
        "gemma": [("Gemma 3", gemma_file, open(gemma_file, encoding="utf-8").read(), gemma_polyfill, False)],
    }

    def has_tool_content(messages, tools):
        return bool(tools) or any(m["role"] == "tool" or m.get("tool_calls") for m in messages)

    results = {}  # (family, case name) -> record
    notes = []
    try:
        for family in FAMILIES:
            for label, tfile, ttext, polyfill, only_plain in renderers[family]:
                server = Server(binary, model, tfile)
                try:
                    for name, messages, tools, gen, extra in CASES:
                        if "families" in extra and family not in extra["families"]:
                            continue
                        if only_plain and has_tool_content(messages, tools):
                            continue
                        kwargs = {"bos_token": ""}
                        if family == "llama3":
                            kwargs["date_string"] = extra.get("date", LLAMA3_DATE)
                        pm, pt = polyfill(messages, tools)
                        got, err = server.apply(pm, pt, gen, kwargs)
                        hf, hf_err = hf_render(ttext, pm, pt, gen, kwargs)
                        want_error = family in extra.get("error", [])
                        if want_error:
                            if got is not None or hf is not None:
                                sys.exit(f"gen: {family}/{name}: {label} rendered a conversation it should refuse")
                            text = None
                        else:
                            if got is None:
                                sys.exit(f"gen: {family}/{name}: llama.cpp failed with {label}: {err}")
                            if hf is None:
                                sys.exit(f"gen: {family}/{name}: jinja2 failed with {label}: {hf_err}")
                            text = got
                            if got != hf:
                                prefer = extra.get("prefer")
                                if not prefer:
                                    sys.exit(f"gen: {family}/{name}: llama.cpp and jinja2 disagree with {label}:\n"
                                             f"  llama.cpp {got!r}\n  jinja2    {hf!r}")
                                text = hf if prefer[0] == "hf" else got
                                notes.append(f"{family}/{name}: kept the {prefer[0]} rendering: {prefer[1]}")
                        key = (family, name)
                        if key in results:
                            if results[key]["expected"] != text:
                                sys.exit(f"gen: {family}/{name}: {label} disagrees with "
                                         f"{results[key]['template']}:\n  {text!r}\n  {results[key]['expected']!r}")
                            continue
                        rec = {"family": family, "name": name, "template": label, "messages": messages}
                        if tools:
                            rec["tools"] = tools
                        rec["add_generation_prompt"] = gen
                        if family == "llama3" and "date" in extra:
                            rec["date"] = extra["date"]
                        rec["expected"] = text
                        if text is not None and got != text:
                            rec["note"] = f"llama.cpp renders this differently: {extra['prefer'][1]}"
                        results[key] = rec
                finally:
                    server.close()
    finally:
        os.unlink(chatml_file)

    with open(OUT, "w", encoding="utf-8") as fh:
        for family in FAMILIES:
            for name, *_ in CASES:
                if (family, name) in results:
                    fh.write(json.dumps(results[(family, name)], ensure_ascii=True) + "\n")
    print(f"gen: wrote {len(results)} cases to {OUT}")
    for n in sorted(set(notes)):
        print("gen: note:", n)


if __name__ == "__main__":
    main()
