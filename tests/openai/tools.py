"""Tool calls through the official openai client: a required call (parsed `tool_calls`,
arguments validated against the tool's schema), the same streamed, the tool's result sent
back for a text answer, `auto`, and a tool_choice naming no tool (a 400).

usage: tools.py BASE_URL API_KEY MODEL
"""
import json
import sys

import jsonschema
import openai

base_url, api_key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)
params = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
tools = [
    {"type": "function", "function": {"name": "get_weather",
                                      "description": "Current weather in a city",
                                      "parameters": params}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                      "parameters": {"type": "object", "properties": {}}}},
]
msgs = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
out = {}

r = client.chat.completions.create(model=model, messages=msgs, tools=tools,
                                   tool_choice="required", max_tokens=64, temperature=0)
choice = r.choices[0]
call = choice.message.tool_calls[0]
args = json.loads(call.function.arguments)
if call.function.name == "get_weather":
    jsonschema.validate(args, params)
out["finish"] = choice.finish_reason
out["name"] = call.function.name
out["args"] = args
out["id"] = call.id

# The same, streamed: the call arrives as tool_calls deltas.
name, arguments, reason = "", "", None
for chunk in client.chat.completions.create(model=model, messages=msgs, tools=tools,
                                            tool_choice="required", max_tokens=64,
                                            temperature=0, stream=True):
    if not chunk.choices:
        continue
    d = chunk.choices[0].delta
    for tc in d.tool_calls or []:
        name += tc.function.name or ""
        arguments += tc.function.arguments or ""
    reason = chunk.choices[0].finish_reason or reason
out["stream_same"] = (name == call.function.name and json.loads(arguments) == args
                      and reason == "tool_calls")

# The tool's result goes back; with tool_choice "none" the answer is text.
msgs2 = msgs + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function",
         "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
    {"role": "tool", "tool_call_id": call.id, "content": "18 degrees, sunny"},
]
r = client.chat.completions.create(model=model, messages=msgs2, tools=tools,
                                   tool_choice="none", max_tokens=24, temperature=0)
out["after_tool"] = r.choices[0].message.content
# auto: either a call or a text answer, always well-formed.
r = client.chat.completions.create(model=model, messages=msgs2, tools=tools,
                                   max_tokens=48, temperature=0)
m = r.choices[0].message
out["auto"] = "call" if m.tool_calls else "text"
if m.tool_calls:
    json.loads(m.tool_calls[0].function.arguments)
try:
    client.chat.completions.create(model=model, messages=msgs, tools=tools, max_tokens=8,
                                   tool_choice={"type": "function",
                                                "function": {"name": "get_stock"}})
    out["bad_status"] = 200
except openai.BadRequestError as e:
    out["bad_status"] = e.status_code
    out["bad_message"] = str(e)
print(json.dumps(out))
