"""Drive `tandem chat` through a pseudo-terminal like a person would: two turns, /stats,
Ctrl-C in the middle of a long answer, /reset, /system, then Ctrl-D. Prints what it saw
as JSON.

usage: drive.py TANDEM_BINARY MODEL
"""
import json
import os
import pty
import re
import select
import sys
import time

binary, model = sys.argv[1:3]
pid, fd = pty.fork()
if pid == 0:
    os.execv(binary, [binary, "chat", "-m", model, "-n", "300", "-t", "2", "--draft", "ngram"])

buf = b""


def wait_for(pattern, start, timeout=180):
    """Read until `pattern` (bytes regex) appears after offset `start`."""
    global buf
    end = time.time() + timeout
    while time.time() < end:
        m = re.compile(pattern).search(buf, start)
        if m:
            return m
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            buf += data
    raise SystemExit(json.dumps({"error": f"timed out waiting for {pattern!r}",
                                 "seen": buf.decode(errors="replace")[-2000:]}))


def say(line):
    start = len(buf)
    os.write(fd, line.encode() + b"\n")
    return start


out = {}
wait_for(rb"> ", 0)
s = say("Say hello in one short sentence.")
wait_for(rb"\n> ", s + 10)
s = say("/stats")
m = wait_for(rb"\((\d+) reused from the cache\)", s)
out["first_reused"] = int(m.group(1))
wait_for(rb"\n> ", s)
s = say("Now say goodbye in one short sentence.")
wait_for(rb"\n> ", s + 10)
s = say("/stats")
m = wait_for(rb"prompt (\d+) tokens \((\d+) reused from the cache\)", s)
out["second_prompt"], out["second_reused"] = int(m.group(1)), int(m.group(2))
wait_for(rb"\n> ", s)
# A long answer, interrupted once some of it has appeared.
s = say("/reset")
wait_for(rb"\n> ", s)
s = say("Write a long story about a dragon who learns to bake bread.")
wait_for(rb"bread\.\r?\n[^\n]{30}", s)
t0 = time.time()
os.write(fd, b"\x03")
wait_for(rb"\(stopped\)", s)
wait_for(rb"\n> ", s)
out["stop_seconds"] = time.time() - t0
out["alive_after_ctrl_c"] = os.waitpid(pid, os.WNOHANG) == (0, 0)
s = say("/stats")
m = wait_for(rb"stop: (\w+)", s)
out["stop_after_ctrl_c"] = m.group(1).decode()
wait_for(rb"\n> ", s)
s = say("/reset")
wait_for(rb"\(conversation reset\)", s)
s = say("/system You answer in French.")
wait_for(rb"\(system prompt set", s)
wait_for(rb"\n> ", s)
os.write(fd, b"\x04")
_, status = os.waitpid(pid, 0)
out["exit_code"] = os.waitstatus_to_exitcode(status)
print(json.dumps(out))
