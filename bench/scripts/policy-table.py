#!/usr/bin/env python3
"""Speedup per category (and geometric mean over prompts) of chosen configurations of a
`tandem bench --json` file, as a Markdown table; with --khist, the k distribution of one
configuration per category.

usage: policy-table.py FILE.json CONFIG[,CONFIG…] [--khist CONFIG]
"""
import json
import math
import sys


def main():
    path, configs = sys.argv[1], sys.argv[2].split(",")
    khist = sys.argv[sys.argv.index("--khist") + 1] if "--khist" in sys.argv else None
    r = json.load(open(path))
    cats = r["categories"]
    if khist:
        bins = [(0, 0), (1, 3), (4, 7), (8, 15), (16, 10**9)]
        parts = []
        for cat, m in cats.items():
            h = m[khist]["k_hist"]
            tot = sum(h) or 1
            shares = [
                sum(n for k, n in enumerate(h) if a <= k <= b) * 100 / tot for a, b in bins
            ]
            parts.append(f"{cat} {'/'.join(f'{x:.0f}' for x in shares)}")
        print("; ".join(parts) + ".")
        return
    print(f"{r['model']}:\n")
    print("| category | " + " | ".join(f"`{c}`" for c in configs) + " |")
    print("|---|" + "---|" * len(configs))
    for cat, m in cats.items():
        cells = []
        for c in configs:
            s = m[c]
            cells.append(f"{s['speedup']:.2f}×" + ("" if s["identical"] else "†"))
        print(f"| {cat} | " + " | ".join(cells) + " |")
    overall = []
    for c in configs:
        sp = [s["speedup"] for p in r["prompts"] for s in p["summaries"] if s["config"] == c]
        overall.append(f"**{math.exp(sum(math.log(max(x, 1e-9)) for x in sp) / len(sp)):.2f}×**")
    print("| overall | " + " | ".join(overall) + " |")


main()
