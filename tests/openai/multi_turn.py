"""A multi-turn conversation through the official openai client, each turn appending to
the last, with the prompt cache on and then off (`cache_prompt: false`, llama-server's
field). Reports per turn: usage (with cached_tokens), timings, the answer.

usage: multi_turn.py BASE_URL API_KEY MODEL MAX_TOKENS
"""
import json
import sys

import openai

base_url, api_key, model, max_tokens = sys.argv[1:5]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)
questions = [
    "Name three rivers in Europe.",
    "Which of them is the longest?",
    "Which countries does it flow through?",
    "Write one sentence about its history.",
    "Now summarize our conversation in two sentences.",
    "Thank you. Say goodbye in French.",
]


def conversation(cache):
    msgs, turns = [{"role": "system", "content": "You are a concise assistant."}], []
    for q in questions:
        msgs.append({"role": "user", "content": q})
        r = client.chat.completions.create(model=model, messages=msgs, max_tokens=int(max_tokens),
                                           temperature=0, extra_body={"cache_prompt": cache})
        text = r.choices[0].message.content
        extra = r.model_extra or {}
        turns.append({"text": text, "finish_reason": r.choices[0].finish_reason,
                      "usage": r.usage.model_dump(), "timings": extra.get("timings")})
        msgs.append({"role": "assistant", "content": text})
    return turns


print(json.dumps({"cached": conversation(True), "uncached": conversation(False)}))
