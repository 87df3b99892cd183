"""Our exported files on the phone's own kernels: LiteRT's aarch64 build (PyPI's ``ai-edge-litert`` wheel, with
XNNPACK's ARM NEON/dotprod kernels, whose int8 rounding differs from x86's) run under qemu user-mode emulation,
beside x86 LiteRT and Keras, on the same images.

    # once, as root on a Debian/Ubuntu machine: apt-get install qemu-user-static debootstrap
    python -m keras_evit.export.phones.arm64 setup
    python -m keras_evit.export.phones.arm64 compare --weights RUN_DIR|imagenet|none --model m0 \\
        --data folder:PATH|digits [--limit 64] [--json arm64.json] [--plot arm64.png]

``setup`` makes an arm64 Debian root (``debootstrap --foreign``: Debian's Python 3.11, unpacked, nothing run
in it) with the aarch64 wheels of ``ai-edge-litert`` beside it; no binfmt registration, no chroot: qemu runs
its Python with ``-L ROOT``. ``compare`` exports the files ``keras-evit export --quantize Q [--int8-io]``
writes with default flags, runs each on both LiteRT builds (one thread, the same runner code), and reports,
per mode, the largest output difference and the top-1 agreement of ARM against x86 and against Keras.
Emulation says nothing about speed: nothing is timed here.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"  # Debian 12: Python 3.11
PYTHON_VERSION = "3.11"
LITERT_VERSION = "2.3.0"  # the x86 pin in setup.py: both sides run the same release
WHEEL_PLATFORMS = ("manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux_2_17_aarch64",
                   "manylinux2014_aarch64")
QEMU = "qemu-aarch64-static"
ROOT_ENV = "KERAS_EVIT_ARM64_ROOT"
MARKER = "keras_evit_arm64.json"
FP32_TOLERANCE = 1e-4  # fp32 files: ARM against x86 and against Keras, probabilities
# ARM cores Debian 12's qemu emulates -> (variant, part, revision) of their MIDR. The emulated Python sees the
# root's /proc/cpuinfo and /sys CPU list (qemu -L): cpuinfo, which XNNPACK asks for the core, crashes on the
# host's x86 ones, and picks core-tuned kernels (e.g. Cortex-A53's) by this part number.
CPUS = {"cortex-a53": (0x0, 0xD03, 4), "cortex-a72": (0x0, 0xD08, 2), "cortex-a76": (0x4, 0xD0B, 1),
        "neoverse-n1": (0x4, 0xD0C, 1)}
DEFAULT_CPUS = ("cortex-a53", "cortex-a76")
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "litert_run.py")


def default_root():
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.environ.get(ROOT_ENV, os.path.join(keras_home, "keras_evit-arm64"))


def _tool(name, package):
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: apt-get install {package} (Debian/Ubuntu), then run again")
    return path


def _run(command, log=None, timeout=3600):
    if log:
        log(" ".join(os.path.basename(c) if i == 0 else c for i, c in enumerate(command[:6])) + " ...")
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{os.path.basename(command[0])} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def root_ready(root):
    """The root's marker, or None when ``setup`` has not finished there."""
    try:
        with open(os.path.join(root, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def setup(root=None, log=print):
    """Builds the arm64 root under a temporary name and renames it into place; an existing one is kept."""
    root = os.path.abspath(root or default_root())
    if root_ready(root):
        log(f"arm64 root ready: {root}")
        return root
    if os.path.exists(root):
        raise RuntimeError(f"{root} exists but is not a finished arm64 root (no {MARKER}): remove it or pass "
                           "another --root")
    _tool(QEMU, "qemu-user-static")
    debootstrap = _tool("debootstrap", "debootstrap")
    _tool("dpkg-deb", "dpkg")
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(root) + ".tmp-", dir=parent)
    try:
        # --foreign: download and unpack only; Python runs unconfigured, so no arm64 code runs during setup
        _run([debootstrap, "--arch=arm64", "--variant=minbase", "--foreign", "--include=python3", SUITE, tmp,
              MIRROR], log)
        debs = sorted(glob.glob(os.path.join(tmp, "var", "cache", "apt", "archives", "*.deb")))
        log(f"unpacking {len(debs)} packages")
        for deb in debs:
            _run(["dpkg-deb", "-x", deb, tmp])
        platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
        _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--only-binary=:all:",
              *platforms, "--python-version", PYTHON_VERSION, "--implementation", "cp",
              "--target", os.path.join(tmp, "opt", "litert"), f"ai-edge-litert=={LITERT_VERSION}"], log)
        info = {"suite": SUITE, "python": PYTHON_VERSION, "ai_edge_litert": LITERT_VERSION}
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump(info, f)
        probe = _emulated(tmp, ["-c", "import platform, ai_edge_litert.interpreter; print(platform.machine())"])
        if probe.strip() != "aarch64":
            raise RuntimeError(f"the emulated Python reports {probe.strip()!r}, not aarch64")
        os.chmod(tmp, 0o755)
        os.rename(tmp, root)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"arm64 root ready: {root}")
    return root


def _describe_cpu(root, cpu):
    """One ARM core as Linux describes it, in the root (a single CPU: runs use one thread)."""
    variant, part, revision = CPUS[cpu]
    cpu_dir = os.path.join(root, "sys", "devices", "system", "cpu")
    os.makedirs(cpu_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "proc"), exist_ok=True)
    files = {os.path.join(cpu_dir, "possible"): "0\n", os.path.join(cpu_dir, "present"): "0\n",
             os.path.join(root, "proc", "cpuinfo"): (
                 "processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n"
                 f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {variant:#x}\n"
                 f"CPU part\t: {part:#05x}\nCPU revision\t: {revision}\n\n")}
    for path, text in files.items():
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)


def _emulated(root, args, cpu="cortex-a76", timeout=3600):
    """Runs the root's aarch64 Python under qemu as ``cpu`` (its features and part number decide the ARM
    kernels XNNPACK picks); host paths missing from the root resolve on the host."""
    import fcntl

    env = dict(os.environ, PYTHONPATH="/opt/litert", PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1",
               QEMU_CPU=cpu)
    env.pop("PYTHONHOME", None)
    with open(os.path.join(root, ".cpu.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the root describes one core at a time
        _describe_cpu(root, cpu)
        result = subprocess.run([_tool(QEMU, "qemu-user-static"), "-L", root,
                                 os.path.join(root, "usr", "bin", "python3"), *args],
                                capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"aarch64 Python failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def run_files(files, inputs, workdir, root=None, cpu="cortex-a76"):
    """{name: outputs} of each .tflite on the images in ``inputs`` (a .npy of float32 RGB 0..255) with this
    machine's LiteRT or, when ``root`` is given, the aarch64 one emulating ``cpu``: both through
    ``litert_run.py``."""
    side = f"arm64-{cpu}" if root else "x86"
    spec = {"inputs": inputs, "files": files, "output": os.path.join(workdir, f"outputs_{side}.npz"), "threads": 1}
    spec_path = os.path.join(workdir, f"spec_{side}.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    if root:
        stdout = _emulated(root, [RUNNER, spec_path], cpu)
    else:
        stdout = subprocess.run([sys.executable, RUNNER, spec_path], capture_output=True, text=True,
                                check=True).stdout
    info = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
    with np.load(spec["output"]) as data:
        return {name: data[name] for name in files}, info


def compare_rows(keras_out, x86, arm, cpu):
    """Per file: max |ARM - x86| and |ARM - Keras| on the outputs, top-1 agreement of ARM with each."""
    rows = []
    ref_top1 = keras_out.argmax(-1)
    for name in arm:
        a, x = arm[name], x86[name]
        rows.append({"cpu": cpu, "file": name, "max_abs_vs_x86": float(np.abs(a - x).max()),
                     "max_abs_vs_keras": float(np.abs(a - keras_out).max()),
                     "top1_vs_x86": float(np.mean(a.argmax(-1) == x.argmax(-1))),
                     "top1_vs_keras": float(np.mean(a.argmax(-1) == ref_top1)),
                     "x86_top1_vs_keras": float(np.mean(x.argmax(-1) == ref_top1)),
                     "bitwise_equal_to_x86": bool(np.array_equal(a, x))})
    for r in rows:
        if r["file"] == "litert":
            r["fp32_within_tolerance"] = max(r["max_abs_vs_x86"], r["max_abs_vs_keras"]) <= FP32_TOLERANCE
    return rows


def format_table(rows, title):
    lines = [title, f"{'ARM cpu':<12} {'file':<20} {'max|arm-x86|':>13} {'max|arm-keras|':>15} {'top-1 arm=x86':>14} "
                    f"{'top-1 arm=keras':>16} {'top-1 x86=keras':>16}"]
    for r in rows:
        lines.append(f"{r['cpu']:<12} {r['file']:<20} {r['max_abs_vs_x86']:13.2e} {r['max_abs_vs_keras']:15.2e} "
                     f"{100 * r['top1_vs_x86']:13.1f}% {100 * r['top1_vs_keras']:15.1f}% "
                     f"{100 * r['x86_top1_vs_keras']:15.1f}%")
    return "\n".join(lines)


def plot(rows, title, path):
    from keras_evit.utils import atomic_output, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(7.5, 0.8 * len(rows)), 4))
    idx = np.arange(len(rows))
    for k, (key, label) in enumerate((("top1_vs_x86", "ARM top-1 = x86"), ("top1_vs_keras", "ARM top-1 = Keras"),
                                      ("x86_top1_vs_keras", "x86 top-1 = Keras"))):
        ax.bar(idx + (k - 1) * 0.27, [100 * r[key] for r in rows], 0.27, label=label)
    ax.set_xticks(idx, [f"{r['cpu']}\n{r['file']}" for r in rows], rotation=30, ha="right", fontsize=7)
    low = min(r[k] for r in rows for k in ("top1_vs_x86", "top1_vs_keras", "x86_top1_vs_keras"))
    ax.set_ylim(max(0, 100 * low - 10), 100.5)
    ax.set_ylabel("top-1 agreement (%)")
    import textwrap

    ax.set_title(textwrap.fill(title, 100), fontsize=8)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def compare(args, log):
    import keras_evit as ke
    from keras_evit.weights.artifacts import model_image_size
    from keras_evit.models.fusion import float32_copy
    from keras_evit.models.inference import outputs
    from keras_evit.preprocessing import raw_input_model
    from keras_evit.utils import check_outputs

    from ..images import split_images
    from ..shipped import LITERT, export_shipped, shipped_metadata

    check_outputs({"--json": args.json, "--plot": args.plot}, inputs=[args.weights])
    root = os.path.abspath(args.root or default_root())
    info = root_ready(root)
    if info is None:
        raise RuntimeError(f"no arm64 root at {root}: run `python -m keras_evit.export.phones.arm64 setup` first")
    files = [f.strip() for f in args.files.split(",") if f.strip()]
    cpus = [c.strip() for c in args.cpus.split(",") if c.strip()]
    if not cpus or not set(cpus) <= set(CPUS):
        raise ValueError(f"--cpus: choose from {', '.join(CPUS)}")
    unknown = set(files) - set(LITERT)
    if unknown:
        raise ValueError(f"unknown file kind(s) {sorted(unknown)}: choose from {', '.join(LITERT)}")
    model, class_names = ke.load_classifier(args.weights, args.model, args.image_size,
                                            classifier_activation=None if args.logits else "softmax")
    model = raw_input_model(model)  # as `keras-evit export` does
    size = model_image_size(model)
    if args.data:
        from keras_evit.training.data import load_source

        source = load_source(args.data)
        images, _ = split_images(source, "validation", size, args.limit)
        calibration, _ = split_images(source, "train", size, args.calibration_limit)
    else:
        from ..images import load_folder

        folder = args.images
        images = load_folder(folder, size, args.limit)[0]
        calibration = load_folder(folder, size, args.calibration_limit)[0]
    keras_out = outputs(float32_copy(model), images)
    with tempfile.TemporaryDirectory(prefix="keras_evit_arm64_") as workdir:
        metadata = None if args.logits else shipped_metadata(model, class_names, log)
        paths = {name: export_shipped(model, name, 1, calibration, workdir, metadata, log) for name in files}
        inputs = os.path.join(workdir, "inputs.npy")  # written once, read by every run below
        np.save(inputs, np.asarray(images, np.float32))
        log(f"running {len(paths)} files on {len(images)} images: x86 LiteRT")
        x86, x86_info = run_files(paths, inputs, workdir)
        rows, first = [], None
        for cpu in cpus:
            log(f"running them on aarch64 LiteRT under qemu as {cpu} (slow: emulation)")
            arm, arm_info = run_files(paths, inputs, workdir, root, cpu)
            rows += compare_rows(keras_out, x86, arm, cpu)
            first = first or arm
            for r in rows[-len(arm):]:  # do the cores' kernels (dot product or not) compute the same bits?
                r["bitwise_equal_to_" + cpus[0]] = bool(np.array_equal(arm[r["file"]], first[r["file"]]))
    title = (f"{model.name} on {args.data or args.images} ({len(images)} images, {size} px): aarch64 LiteRT "
             f"{arm_info['litert']} under qemu vs x86 LiteRT {x86_info['litert']} vs Keras")
    print(format_table(rows, title))
    fp32 = [r for r in rows if "fp32_within_tolerance" in r]
    for r in fp32:
        ok = "yes" if r["fp32_within_tolerance"] else "NO"
        print(f"{r['cpu']}: fp32 within {FP32_TOLERANCE:g} of x86 and Keras: {ok}")
    from keras_evit.utils import write_reports

    write_reports(args, {"title": title, "outputs": "logits" if args.logits else "probabilities", "rows": rows,
                         "arm64": arm_info, "x86": x86_info, "root": info,
                         "fp32_tolerance": FP32_TOLERANCE,
                         "files": "what `keras-evit export --quantize Q [--int8-io]` writes with default flags"},
                  lambda path: plot(rows, title, path))
    return 0 if all(r["fp32_within_tolerance"] for r in fp32) else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="make the arm64 root (root privileges, qemu-user-static, debootstrap)")
    p.add_argument("--root", default=None, help=f"default: ${ROOT_ENV} or ~/.keras/keras_evit-arm64")
    p = sub.add_parser("compare", help="run the default export files on aarch64 and x86 LiteRT beside Keras")
    p.add_argument("--root", default=None)
    p.add_argument("--weights", default="imagenet", help="imagenet, none, a training run folder or a file")
    p.add_argument("--model", default="m0")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--data", default=None, help="folder:PATH, tfds:NAME or digits: its validation split "
                   "(calibration from its training split)")
    p.add_argument("--images", default=None, help="without --data: a folder of images (default: the sample set)")
    p.add_argument("--limit", type=int, default=64, help="images at most")
    p.add_argument("--calibration-limit", type=int, default=64)
    p.add_argument("--files", default=",".join(["litert", "litert-fp16", "litert-int8", "litert-int8-io",
                                                "litert-int8-mixed"]))
    p.add_argument("--logits", action="store_true", help="files with logits out (`keras-evit export --logits`): "
                   "differences on a scale that random weights do not flatten")
    p.add_argument("--cpus", default=",".join(DEFAULT_CPUS),
                   help="ARM cores qemu emulates: cortex-a53 (ARMv8.0, no dot product: older and budget phones), "
                        "cortex-a76 (ARMv8.2 with dot product and fp16: most phones since 2019), cortex-a72, "
                        "neoverse-n1")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = parser.parse_args(argv)
    log = lambda msg: print(f"[arm64] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    if args.command == "setup":
        setup(args.root, log)
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.data and not args.images:
        from keras_evit.demo import find_sample_dir

        args.images = find_sample_dir()
        if not args.images:
            raise SystemExit("no images: pass --data or --images")
    return compare(args, log)


if __name__ == "__main__":
    sys.exit(main())
