"""One measurement in a fresh process: ``python -m MODULE`` fed a JSON spec, answering one JSON row."""

import json
import os
import subprocess
import sys


def run_child(module, spec, env=None, timeout=None, args=()):
    """The first JSON row ``python -m module *args`` prints for ``spec`` (given as JSON on stdin), or
    ``{"error": ...}``: the last line of its stderr when it fails, or that it printed none or outlasted
    ``timeout`` seconds. ``env``: variables set over this process' environment."""
    try:
        proc = subprocess.run([sys.executable, "-m", module, *args], input=json.dumps(spec), capture_output=True,
                              text=True, env=dict(os.environ, **(env or {})), timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    found = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0:
        return found[0] if found else {"error": "the measurement printed no result"}
    tail = proc.stderr.strip().splitlines()
    return {"error": tail[-1][:300] if tail else f"rc {proc.returncode}"}


def main(measure):
    """A child's entry point: reads the spec from stdin, prints ``measure(spec)`` as one JSON line."""
    print(json.dumps(measure(json.loads(sys.stdin.read()))), flush=True)
