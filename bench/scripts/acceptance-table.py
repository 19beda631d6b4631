#!/usr/bin/env python3
"""Tokens per verification step (total tokens / total steps) and mean acceptance, per
category and config, from a `tandem bench --json` file: python3 bench/scripts/acceptance-table.py FILE"""
import json,sys,statistics as st
d=json.load(open(sys.argv[1]))
cfgs=[c for c in d['configs'] if c!='none']
cats={}
for p in d['prompts']:
    for s in p['summaries']:
        cats.setdefault(p['category'],{}).setdefault(s['config'],[]).append(s)
def fmt(ss):
    # total tokens / total steps; every run generates max_tokens (the bench's -n)
    n=d['max_tokens']
    steps=sum(n/s['tokens_per_step'] for s in ss); tps=n*len(ss)/steps
    acc=st.mean(s['acceptance'] for s in ss)
    return f"{tps:.2f} ({acc*100:.0f}%)"
print('| category | '+' | '.join(cfgs)+' |'); print('|---'*(len(cfgs)+1)+'|')
for c in sorted(cats): print(f'| {c} | '+' | '.join(fmt(cats[c][k]) for k in cfgs)+' |')
allc={k:[s for c in cats for s in cats[c][k]] for k in cfgs}
print('| all | '+' | '.join(fmt(allc[k]) for k in cfgs)+' |')
