"""Validate answers against JSON Schemas with the reference `jsonschema` package.

Usage: validate_json.py CASES.json, where CASES.json is a list of {"schema", "output"};
prints {"results": [{"ok": bool, "error": str}]}.
"""
import json
import sys

import jsonschema

cases = json.load(open(sys.argv[1]))
results = []
for c in cases:
    try:
        value = json.loads(c["output"])
        jsonschema.validate(value, c["schema"])
        results.append({"ok": True, "error": ""})
    except Exception as e:  # noqa: BLE001 - any failure is reported, not raised
        results.append({"ok": False, "error": f"{type(e).__name__}: {e}"[:300]})
print(json.dumps({"results": results}))
