#!/usr/bin/env python3
"""llama_server_load.py - the same load as bench_serve's first part, against llama-server.

    llama_server_load.py URL

N concurrent streaming /completion requests (N = 1, 4, 8, 16), each with a distinct prompt of
exactly 128 tokens (calibrated with /tokenize) and n_predict 128 with ignore_eos: aggregate
decode tokens/s counted as bench_serve counts it (tokens streamed after the last sequence's first
token, over the time until the last one ends), and TTFT p50/max. Python standard library only.
"""
import json
import sys
import threading
import time
import urllib.request

WORDS = ["river", "stone", "light", "window", "garden", "music", "paper", "summer", "engine",
         "forest", "cloud", "bridge"]


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=600)


def count(url, text):
    with post(url + "/tokenize", {"content": text, "add_special": False}) as r:
        return len(json.load(r)["tokens"])


def prompt(url, i):
    words = [f"Story {i}:"]
    w = 0
    while count(url, " ".join(words)) < 128:
        words.append(WORDS[(w * 7 + i) % 12])
        w += 1
    text = " ".join(words)
    while count(url, text) > 128:
        text = text[:-1]
    return text


def run(url, text, out):
    t0 = time.monotonic()
    times = []
    body = {"prompt": text, "n_predict": 128, "temperature": 0, "ignore_eos": True,
            "stream": True, "cache_prompt": False}
    with post(url + "/completion", body) as r:
        for line in r:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("content"):
                times.append(time.monotonic())
            if msg.get("stop"):
                break
    out.append((t0, times, time.monotonic()))


def main():
    url = sys.argv[1].rstrip("/")
    prompts = [prompt(url, i) for i in range(16)]
    run(url, "Hello", [])  # warm-up
    print(f"{'sequences':<12} {'decode tok/s':>14} {'TTFT p50 ms':>12} {'TTFT max ms':>12}")
    for k, n in enumerate([1, 4, 8, 16]):
        out = []
        th = [threading.Thread(target=run, args=(url, prompts[(i + k) % 16], out))
              for i in range(n)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        t0 = max(times[0] for _, times, _ in out)
        t1 = max(end for _, _, end in out)
        toks = sum(1 for _, times, _ in out for t in times if t > t0)
        ttft = sorted((times[0] - start) * 1000 for start, times, _ in out)
        agg = toks / (t1 - t0) if t1 > t0 else 0
        print(f"{n:<12} {agg:14.1f} {ttft[(len(ttft) - 1) // 2]:12.1f} {ttft[-1]:12.1f}")
        print(f"RESULT llama_server_decode_tps npl={n} {agg:.1f}")


if __name__ == "__main__":
    main()
