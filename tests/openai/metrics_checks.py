"""`GET /metrics` read with prometheus_client's OpenMetrics parser, before and after a few
requests made with the official openai client; reports the counters' deltas and the sums
of the responses' `timings`.

usage: metrics_checks.py BASE_URL API_KEY MODEL
"""
import json
import sys
import urllib.error
import urllib.request

import openai
from prometheus_client.openmetrics.parser import text_string_to_metric_families

base_url, api_key, model = sys.argv[1:4]
root = base_url.rstrip("/").removesuffix("/v1")
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)


def scrape(key=api_key):
    req = urllib.request.Request(f"{root}/metrics",
                                 headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read().decode()
            ctype = r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, None, None
    values = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            values[s.name] = s.value
    return 200, values, ctype


_, before, ctype = scrape()
sums = {"prompt": 0, "cached": 0, "predicted": 0, "draft": 0, "accepted": 0}
msgs = [{"role": "user", "content": "List three colours."}]
for turn in range(3):
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=24, temperature=0)
    t = (r.model_extra or {})["timings"]
    sums["prompt"] += t["prompt_n"] + t["cache_n"]
    sums["cached"] += t["cache_n"]
    sums["predicted"] += t["predicted_n"]
    sums["draft"] += t["draft_n"]
    sums["accepted"] += t["draft_n_accepted"]
    msgs += [{"role": "assistant", "content": r.choices[0].message.content},
             {"role": "user", "content": "And three more?"}]
_, after, _ = scrape()
delta = {k: after[k] - before.get(k, 0) for k in after}
print(json.dumps({"content_type": ctype, "delta": delta, "after": after, "sums": sums,
                  "no_key_status": scrape(key=None)[0]}))
