"""Drive a running `tandem serve` with the official openai client and report what came
back as JSON (the Rust test tests/serve_openai.rs compares it with `tandem generate`).

usage: client_checks.py BASE_URL API_KEY MODEL PROMPTS_JSON MAX_TOKENS
"""
import json
import sys

import openai

base_url, api_key, model, prompts_json, max_tokens = sys.argv[1:6]
prompts = json.loads(prompts_json)
max_tokens = int(max_tokens)
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
out = {"openai_version": openai.__version__}

out["models"] = [m.id for m in client.models.list().data]
out["model"] = client.models.retrieve(model).id

out["completions"] = []
for p in prompts:
    r = client.completions.create(model=model, prompt=p, max_tokens=max_tokens, temperature=0)
    out["completions"].append({
        "text": r.choices[0].text,
        "finish_reason": r.choices[0].finish_reason,
        "usage": r.usage.model_dump(),
        "tandem": (r.model_extra or {}).get("tandem"),
        "timings": (r.model_extra or {}).get("timings"),
    })

out["chat"] = []
out["chat_stream"] = []
for p in prompts:
    msgs = [{"role": "user", "content": p}]
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=max_tokens, temperature=0)
    out["chat"].append({
        "text": r.choices[0].message.content,
        "role": r.choices[0].message.role,
        "finish_reason": r.choices[0].finish_reason,
        "usage": r.usage.model_dump(),
    })
    stream = client.chat.completions.create(
        model=model, messages=msgs, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    text, chunks, finish, usage, stats, timings = "", 0, None, None, None, None
    for c in stream:
        if c.usage is not None:
            usage = c.usage.model_dump()
        for ch in c.choices:
            if ch.delta.content:
                text += ch.delta.content
                chunks += 1
            if ch.finish_reason:
                finish = ch.finish_reason
                stats = (c.model_extra or {}).get("tandem")
                timings = (c.model_extra or {}).get("timings")
    out["chat_stream"].append({"text": text, "chunks": chunks, "finish_reason": finish,
                               "usage": usage, "tandem": stats, "timings": timings})

# A stop string ends the answer before it.
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompts[0]}],
                                   max_tokens=max_tokens, temperature=0,
                                   stop=["NEVER-SEEN", out["chat"][0]["text"][8:12]])
out["stopped"] = {"text": r.choices[0].message.content, "finish_reason": r.choices[0].finish_reason}

# Seeded sampling repeats itself.
s = [client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompts[0]}],
                                    max_tokens=16, temperature=1.0, seed=7).choices[0].message.content
     for _ in range(2)]
out["seeded_equal"] = s[0] == s[1]

# Per-request speculation (llama-server's names): n_max 0 is plain decoding.
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompts[0]}],
                                   max_tokens=max_tokens, temperature=0,
                                   extra_body={"speculative.n_max": 0})
out["no_speculation"] = {"text": r.choices[0].message.content,
                         "timings": (r.model_extra or {}).get("timings")}
# Tandem's own per-request choice of drafter and policy.
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompts[0]}],
                                   max_tokens=max_tokens, temperature=0,
                                   extra_body={"tandem.draft": "ngram", "tandem.policy": "fixed"})
out["ngram_fixed"] = {"text": r.choices[0].message.content, "tandem": (r.model_extra or {}).get("tandem")}

# Errors come back as the client's typed exceptions.
def error_of(fn):
    try:
        fn()
        return None
    except openai.APIStatusError as e:
        return {"status": e.status_code, "type": type(e).__name__, "message": str(e)[:300]}

chat = [{"role": "user", "content": "hi"}]
out["errors"] = {
    "unknown_model": error_of(lambda: client.chat.completions.create(model="no-such-model", messages=chat, max_tokens=4)),
    "wrong_key": error_of(lambda: openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0)
                          .chat.completions.create(model=model, messages=chat, max_tokens=4)),
    "bad_temperature": error_of(lambda: client.chat.completions.create(model=model, messages=chat, max_tokens=4, temperature=-1)),
    "too_many_tokens": error_of(lambda: client.chat.completions.create(model=model, messages=chat, max_tokens=10**6)),
    "bad_role": error_of(lambda: client.chat.completions.create(model=model, messages=[{"role": "wizard", "content": "x"}], max_tokens=4)),
    "bad_n_max": error_of(lambda: client.chat.completions.create(model=model, messages=chat, max_tokens=4,
                                                                  extra_body={"speculative.n_max": -1})),
    "prompt_too_long": error_of(lambda: client.completions.create(model=model, prompt="word " * 5000, max_tokens=4)),
}
# llama-server's /tokenize and /detokenize (plain HTTP; the openai client has no such call).
import urllib.error
import urllib.request

root = base_url.rstrip("/").removesuffix("/v1")


def post(path, body, key=api_key):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"{root}{path}", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


text = prompts[0]
tok = post("/tokenize", {"content": text})[1]
pieces = post("/tokenize", {"content": text, "with_pieces": True})[1]
detok = post("/detokenize", {"tokens": tok["tokens"]})[1]
out["tokens"] = {"text": text, "tokens": tok["tokens"], "pieces": pieces["tokens"],
                 "detokenized": detok["content"],
                 "bad_status": post("/detokenize", {"tokens": [-1]})[0],
                 "no_key_status": post("/tokenize", {"content": "x"}, key=None)[0]}
print(json.dumps(out))
