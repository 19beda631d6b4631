"""Bounded load test for a running `tandem serve` (loopback only): N concurrent streaming
chat clients, each sending R requests in turn, greedy. Every answer is compared with the
same prompt's answer to a lone client, measured first. Prints one JSON object.

usage: load.py BASE_URL API_KEY MODEL [--clients 8] [--requests 3] [--max-tokens 32]
"""
import argparse
import asyncio
import json
import statistics
import time

import openai

PROMPTS = [
    "Write a haiku about rivers.",
    "List three uses of a paperclip.",
    "Explain what a hash map is in two sentences.",
    "Give me a short packing list for a beach day.",
    "What is the capital of France? Answer in one sentence.",
    "Write a Python function that reverses a string.",
    "Describe the colour blue to someone who cannot see.",
    "Summarise the rules of chess in three sentences.",
]


async def ask(client, model, prompt, max_tokens):
    t0 = time.perf_counter()
    first = None
    text = ""
    finish = None
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens, temperature=0, stream=True)
    async for c in stream:
        for ch in c.choices:
            if ch.delta.content:
                if first is None:
                    first = time.perf_counter() - t0
                text += ch.delta.content
            if ch.finish_reason:
                finish = ch.finish_reason
    return {"prompt": prompt, "text": text, "finish": finish,
            "latency": time.perf_counter() - t0, "ttft": first}


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base_url")
    ap.add_argument("api_key")
    ap.add_argument("model")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()
    client = openai.AsyncOpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0, timeout=600)

    # Each prompt alone first: the reference answers and the unloaded latency.
    alone = {}
    for p in PROMPTS:
        alone[p] = await ask(client, a.model, p, a.max_tokens)

    async def one_client(i):
        res = []
        for r in range(a.requests):
            res.append(await ask(client, a.model, PROMPTS[(i + r) % len(PROMPTS)], a.max_tokens))
        return res

    t0 = time.perf_counter()
    results = [x for rs in await asyncio.gather(*(one_client(i) for i in range(a.clients))) for x in rs]
    wall = time.perf_counter() - t0
    bad = [r for r in results if r["text"] != alone[r["prompt"]]["text"] or r["finish"] is None]
    lat = [r["latency"] for r in results]
    ttft = [r["ttft"] for r in results if r["ttft"] is not None]
    single = [alone[p]["latency"] for p in PROMPTS]
    print(json.dumps({
        "clients": a.clients, "requests": len(results), "max_tokens": a.max_tokens,
        "all_equal": not bad, "mismatches": bad[:3],
        "wall_s": wall, "requests_per_s": len(results) / wall,
        "latency_p50_s": statistics.median(lat), "latency_p95_s": pct(lat, 0.95),
        "ttft_p50_s": statistics.median(ttft) if ttft else None,
        "ttft_p95_s": pct(ttft, 0.95) if ttft else None,
        "single_client_latency_median_s": statistics.median(single),
        "single_client_requests_per_s": len(single) / sum(single),
    }))


asyncio.run(main())
