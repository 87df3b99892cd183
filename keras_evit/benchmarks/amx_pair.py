"""The same int8 files on XNNPACK's AMX kernels and on its AVX-512 VNNI ones, on one CPU that has both.

XNNPACK takes AMX tiles for every int8 convolution and dense layer when the CPU has them (Intel Xeon since
Sapphire Rapids). Two processes load the same file, one of them denied AMX (``cpu.deny_amx``), and take turns
running it: each round times both, so both see the same moments of a shared machine, and the median of the
rounds' ratios holds where two separate runs drift apart.

    python -m keras_evit.benchmarks.amx_pair FILE.tflite [FILE ...] [--threads 1] [--rounds 15]
        [--json F] [--plot F]

``keras-evit bench --model m0 --runtimes litert-int8-mixed --workdir W`` leaves the shipped files in W.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

_CHILD = "child"


def _serve(deny, path, threads):
    """A child: loads ``path``, says how many calls fill ~0.1 s, then answers each number N on stdin with the
    seconds N calls took. Imports LiteRT alone (cpu.py is run from its file), so it starts in a second."""
    import runpy
    import time

    cpu = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu.py"))
    if deny:
        cpu["deny_amx"]()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    spec = interpreter.get_input_details()[0]
    interpreter.set_tensor(spec["index"], np.random.RandomState(0).randint(0, 256, spec["shape"]).astype(spec["dtype"]))
    for _ in range(10):
        interpreter.invoke()
    start = time.perf_counter()
    interpreter.invoke()
    once = time.perf_counter() - start
    print(json.dumps({"calls": max(1, int(0.1 / max(once, 1e-6))), "kernels": cpu["cpu_facts"]()["int8_kernels"]}),
          flush=True)
    for line in sys.stdin:
        calls = int(line)
        start = time.perf_counter()
        for _ in range(calls):
            interpreter.invoke()
        print(time.perf_counter() - start, flush=True)


def _start(deny, path, threads):
    child = subprocess.Popen([sys.executable, __file__, _CHILD, str(int(deny)), path, str(threads)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    if not line:
        child.wait()
        raise RuntimeError(f"the {'VNNI' if deny else 'AMX'} process could not run {path} (rc {child.returncode})")
    return child, json.loads(line)


def _time(child, calls):
    child.stdin.write(f"{calls}\n")
    child.stdin.flush()
    return float(child.stdout.readline()) / calls


def pair(path, threads=1, rounds=15):
    """{"amx_ms", "vnni_ms", "amx_over_vnni"} for one file: medians over ``rounds`` in which both processes ran
    it by turns (which goes first alternates)."""
    children = []
    try:
        amx, amx_info = _start(False, path, threads)
        children.append(amx)
        vnni, vnni_info = _start(True, path, threads)
        children.append(vnni)
        calls = min(amx_info["calls"], vnni_info["calls"])
        times = []
        for i in range(rounds):
            first, second = (amx, vnni) if i % 2 == 0 else (vnni, amx)
            a, b = _time(first, calls), _time(second, calls)
            times.append((a, b) if i % 2 == 0 else (b, a))
    finally:
        for child in children:
            child.stdin.close()
            child.wait()
    times = np.asarray(times)
    return {"file": os.path.basename(path), "threads": threads, "rounds": rounds, "calls_per_round": calls,
            "amx_kernels": amx_info["kernels"], "vnni_kernels": vnni_info["kernels"],
            "amx_ms": float(np.median(times[:, 0]) * 1e3), "vnni_ms": float(np.median(times[:, 1]) * 1e3),
            "amx_over_vnni": float(np.median(times[:, 0] / times[:, 1]))}


def format_table(rows):
    lines = [f"{'file':<42} {'AMX':>9} {'VNNI':>9} {'AMX / VNNI':>11}", "-" * 74]
    lines += [f"{r['file']:<42} {r['amx_ms']:>6.2f} ms {r['vnni_ms']:>6.2f} ms {r['amx_over_vnni']:>11.3f}"
              for r in rows]
    return "\n".join(lines)


def plot(rows, path):
    from keras_evit.utils import save_grouped_bars

    save_grouped_bars(path, rows, group=lambda r: r["file"].replace("efficientvit_", "").replace(".tflite", ""),
                      series=lambda r: "AMX / VNNI", value=lambda r: r["amx_over_vnni"], rotation=30,
                      ylabel="time with AMX / time with VNNI",
                      title="XNNPACK int8 kernels on one CPU: AMX tiles vs AVX-512 VNNI (above 1: AMX slower)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="int8 .tflite files")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 1000 or not 1 <= args.threads <= 256:
        parser.error("--rounds must be 1..1000 and --threads 1..256")
    from .cpu import amx_granted, cpu_facts
    from keras_evit.utils import check_outputs, write_reports

    check_outputs({"--json": args.json, "--plot": args.plot}, inputs=args.files)
    if not amx_granted():
        print(f"this CPU ({cpu_facts()['cpu']}) gives XNNPACK no AMX tiles: nothing to compare", file=sys.stderr)
        return 2
    rows = []
    for path in args.files:
        print(f"[amx_pair] {os.path.basename(path)}", file=sys.stderr, flush=True)
        rows.append(pair(path, args.threads, args.rounds))
    print(format_table(rows))
    write_reports(args, {"machine": cpu_facts(), "rows": rows,
                         "measure": "median over rounds in which an AMX process and one denied AMX ran the same "
                                    "file by turns"}, lambda path: plot(rows, path))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == _CHILD:
        _serve(sys.argv[2] == "1", sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(main())
