"""Structured output through the official openai client: `response_format` with a JSON
Schema (the answer is parsed and validated with `jsonschema`), `json_object`, and an
invalid schema (a 400 naming the problem).

usage: structured.py BASE_URL API_KEY MODEL
"""
import json
import sys

import jsonschema
import openai

base_url, api_key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)
schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "enum": ["London", "Paris", "Berlin"]},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}
msgs = [{"role": "user", "content": "Reply with JSON only: a person called Ada, 36, living in London."}]
out = {}
r = client.chat.completions.create(
    model=model, messages=msgs, max_tokens=96, temperature=0,
    response_format={"type": "json_schema",
                     "json_schema": {"name": "person", "schema": schema, "strict": True}})
person = json.loads(r.choices[0].message.content)
jsonschema.validate(person, schema)
out["person"] = person
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Describe a cat as JSON."}],
    max_tokens=96, temperature=0, response_format={"type": "json_object"})
out["object_finish"] = r.choices[0].finish_reason
if r.choices[0].finish_reason == "stop":
    assert isinstance(json.loads(r.choices[0].message.content), dict)
try:
    client.chat.completions.create(
        model=model, messages=msgs, max_tokens=8,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "bad", "schema": {"$ref": "#/nowhere"}}})
    out["bad_status"] = 200
except openai.BadRequestError as e:
    out["bad_status"] = e.status_code
    out["bad_message"] = str(e)
print(json.dumps(out))
