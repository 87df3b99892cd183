"""Where a ``.tflite`` file's CPU time goes, by XNNPACK kernel, sampled with Linux ``perf``.

LiteRT's Python interpreter has no op profiler and ``benchmark_model`` is not on PyPI, but XNNPACK's
kernels are named for what they compute (``xnn_qs8_qc8w_igemm_...`` is an int8 3x3 convolution), so a
sampling profile of an invoke loop says what bounds a file: which kernels a change could speed up, and
how much time is left to win. Only the invoke loop is sampled: perf starts with its events off and the
loop turns them on and off through perf's control FIFO, so the interpreter's start-up and the file's
load are not in the shares, however short the loop.

    python -m keras_evit.benchmarks.kernel_profile FILE.tflite [FILE ...] [--iterations 2000]
        [--json profile.json] [--plot profile.png]

Needs ``perf`` (Debian: ``apt-get install linux-perf``) and permission to sample one's own processes
(``/proc/sys/kernel/perf_event_paranoid`` <= 2, the default).
"""

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

from . import cpu

# first match wins; (group, dso words, symbol words)
KERNEL_GROUPS = (
    ("int8 3x3 convolutions (igemm)", ("litert",), ("qs8_qc8w_igemm", "qs8_igemm")),
    ("int8 1x1 convolutions and dense (gemm)", ("litert",), ("qs8_qc8w_gemm", "qs8_gemm")),
    ("int8 depthwise convolutions", ("litert",), ("qs8_qc8w_dwconv", "qs8_dwconv")),
    ("int8 add and multiply", ("litert",), ("qs8_vadd", "qs8_vmul")),
    ("float 3x3 convolutions (igemm)", ("litert",), ("f32_igemm", "f16_igemm")),
    ("float matmuls (attention, dense, 1x1)", ("litert",), ("f32_gemm", "f16_gemm", "f32_qc8w_gemm", "qd8_")),
    ("float depthwise convolutions", ("litert",), ("f32_dwconv", "f16_dwconv")),
    ("softmax", ("litert",), ("expminusmax", "_rmax_", "softmax", "compute_reciprocal", "f32_vmulc")),
    ("packing dynamic matmul operands", ("litert",), ("packw", "_pack_")),
    ("int8 <-> float conversion", ("litert",), ("vcvt",)),
    ("copies (slices, reshapes, concatenation)", ("litert", "libc"),
     ("slice", "copy", "memmove", "memcpy", "memset", "transpose", "concat")),
    ("runtime dispatch and other LiteRT", ("litert",), ("",)),
)
OUTSIDE = "outside LiteRT (Python, libc, other threads)"
_LINE = re.compile(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[.\]\s+(\S+)")


def group_of(dso, symbol):
    """The kernel group of one ``perf report --sort dso,symbol`` row."""
    for group, dsos, words in KERNEL_GROUPS:
        if any(d in dso for d in dsos) and any(w in symbol for w in words):
            return group
    return OUTSIDE


def parse_report(text):
    """{group: percent of samples} from ``perf report -q -n --no-children --sort dso,symbol`` output.

    Shares come from the sample counts, not perf's printed percentages: those are rounded per row, and
    hundreds of rows add up to more than 100.
    """
    samples = collections.Counter()
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            samples[group_of(match.group(2), match.group(3))] += int(match.group(1))
    total = sum(samples.values())
    if not total:
        raise ValueError("perf report printed no samples: was the file run at all?")
    return {group: round(100.0 * n / total, 3) for group, n in samples.most_common()}


# What is sampled, in a fresh process that imports nothing else: load the file, set one fixed input,
# invoke it once (XNNPACK packs weights on the first run), then ITERATIONS times with perf's events on.
# NumPy's BLAS is kept to one thread: its idle workers spin, and would be sampled as "outside LiteRT".
# With no_amx, the process is first denied AMX (deny_amx, run from cpu.py's file), as on a CPU without it.
INVOKE_LOOP = """
import sys
import numpy as np
path, iterations, threads, control, ack = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
if sys.argv[6]:
    import runpy
    runpy.run_path(sys.argv[6])["deny_amx"]()
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=path, num_threads=threads)
interpreter.allocate_tensors()
spec = interpreter.get_input_details()[0]
x = np.random.RandomState(0).uniform(0, 255, spec["shape"])
interpreter.set_tensor(spec["index"], x.astype(spec["dtype"]))
interpreter.invoke()
with open(control, "w") as ctl, open(ack, "r") as acks:
    def tell(command):
        ctl.write(command + "\\n")
        ctl.flush()
        if acks.readline().strip("\\x00\\n") != "ack":  # perf ends each ack with a NUL
            raise SystemExit("perf did not acknowledge " + command)
    tell("enable")
    for _ in range(iterations):
        interpreter.invoke()
    tell("disable")
"""


def kernel_isas(text):
    """{instruction set: percent of samples} of XNNPACK's micro-kernels in a ``perf report`` (the name after
    a kernel's ``__``: avx512amx, avx512vnni, avx512skx, neondot, ...): which kernels this CPU ran."""
    samples = collections.Counter()
    for line in text.splitlines():
        match = _LINE.match(line)
        isa = match and re.search(r"^xnn_.*__([a-z][a-z0-9]*)", match.group(3))
        if isa:
            samples[isa.group(1)] += int(match.group(1))
    total = sum(samples.values()) or 1
    return {isa: round(100.0 * n / total, 3) for isa, n in samples.most_common()}


def profile(path, iterations=2000, threads=1, frequency=4000, no_amx=False):
    """{group: percent} for one file, from a ``perf record`` of a fresh process running it."""
    return parse_report(record(path, iterations, threads, frequency, no_amx))


def record(path, iterations=2000, threads=1, frequency=4000, no_amx=False):
    """``perf report`` (by dso and symbol, with sample counts) of a fresh process running ``path``."""
    perf = shutil.which("perf")
    if perf is None:
        raise RuntimeError("`perf` is not installed: on Debian/Ubuntu, apt-get install linux-perf")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such .tflite file: {path}")
    with tempfile.TemporaryDirectory(prefix="keras_evit_perf_") as tmp:
        data, control, ack = (os.path.join(tmp, name) for name in ("perf.data", "control", "ack"))
        os.mkfifo(control)
        os.mkfifo(ack)
        loop = [sys.executable, "-c", INVOKE_LOOP, os.fspath(path), str(iterations), str(threads), control, ack,
                cpu.__file__ if no_amx else ""]
        run = subprocess.run([perf, "record", "-q", "-F", str(frequency), "-o", data, "--delay=-1",
                              f"--control=fifo:{control},{ack}", "--", *loop], capture_output=True, text=True,
                             env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"))
        if run.returncode != 0:
            raise RuntimeError(f"perf record failed ({run.returncode}): {run.stderr.strip()[-600:]}\n"
                               "sampling needs /proc/sys/kernel/perf_event_paranoid <= 2")
        report = subprocess.run([perf, "report", "-q", "-n", "-i", data, "--no-children", "--sort", "dso,symbol"],
                                capture_output=True, text=True, check=True)
    return report.stdout


def table(results):
    groups = list(dict.fromkeys(g for shares in results.values() for g in shares))
    width = max(len(g) for g in groups)
    names = list(results)
    lines = [f"{'kernel group':<{width}}  " + "  ".join(f"{os.path.basename(n):>28}" for n in names)]
    lines.append("-" * len(lines[0]))
    for g in groups:
        lines.append(f"{g:<{width}}  " + "  ".join(f"{results[n].get(g, 0.0):27.1f}%" for n in names))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help=".tflite files")
    p.add_argument("--iterations", type=int, default=2000, help="invokes per file (default 2000)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-amx", action="store_true", help="deny the process Intel's AMX tiles (XNNPACK then takes "
                   "its AVX-512 VNNI kernels, as on a CPU without AMX)")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)
    if not 1 <= args.iterations <= 10 ** 6 or not 1 <= args.threads <= 256:
        p.error("--iterations must be 1..1000000 and --threads 1..256")
    from keras_evit.utils import check_outputs, save_grouped_bars, write_reports

    check_outputs({"--json": args.json, "--plot": args.plot}, inputs=args.files)
    results, isas = {}, {}
    for path in args.files:
        print(f"[kernel_profile] sampling {path} ({args.iterations} invokes, {args.threads} thread(s))", flush=True)
        report = record(path, args.iterations, args.threads, no_amx=args.no_amx)
        results[path], isas[path] = parse_report(report), kernel_isas(report)
        print(f"[kernel_profile] XNNPACK kernels by instruction set: {isas[path]}", flush=True)
    print(table(results))
    rows = [(os.path.basename(n), g, v) for n, shares in results.items() for g, v in shares.items()]
    write_reports(args, {"machine": cpu.cpu_facts(), "no_amx": args.no_amx, "iterations": args.iterations,
                         "threads": args.threads, "percent_of_samples": results,
                         "xnnpack_kernels_by_isa": isas},
                  lambda path: save_grouped_bars(path, rows, group=lambda r: r[1], series=lambda r: r[0],
                                                 value=lambda r: r[2], ylabel="% of samples", rotation=30,
                                                 title="where the time goes, by XNNPACK kernel (perf)"))


if __name__ == "__main__":
    sys.exit(main())
