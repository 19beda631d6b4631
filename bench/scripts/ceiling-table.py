#!/usr/bin/env python3
"""Summarise bench/scripts/ceiling-before-after.sh: per model and k, the median over runs of
the oracle ceiling k / cost with all logits (llama.cpp's verification: before), last-only
logits (a bound, not a verification) and Tandem's lazy head (after)."""
import glob, json, os, statistics, sys

out = sys.argv[1]
runs = {}
for f in sorted(glob.glob(os.path.join(out, "*-*.json"))):
    model = os.path.basename(f)[:-5].rsplit("-", 1)[0]
    runs.setdefault(model, []).append(json.load(open(f)))
cols = (("ratio", "all logits (before)"), ("last_only_ratio", "last only (bound)"),
        ("lazy_ratio", "lazy head (after)"))
for model, rs in sorted(runs.items()):
    ks = [p["k"] for p in rs[0]["curve"]]
    med = lambda k, key: statistics.median(
        p["k"] / p[key] for r in rs for p in r["curve"] if p["k"] == k)
    step = statistics.median(r["curve"][0]["median_ms"] for r in rs)
    print(f"\n{model}: medians of {len(rs)} runs, depth 256, 2 threads; one plain step "
          f"{step:.1f} ms\n")
    print("| k | " + " | ".join(c for _, c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    best = {key: (0.0, 0) for key, _ in cols}
    for k in ks:
        vals = [med(k, key) for key, _ in cols]
        for (key, _), v in zip(cols, vals):
            best[key] = max(best[key], (v, k))
        print(f"| {k} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    print("\nbest k: " + ", ".join(f"{c} {best[key][0]:.2f} (k={best[key][1]})"
                                  for key, c in cols))
