"""``keras-evit analyze heads`` (the paper's Fig. 4) and ``keras-evit analyze runtime`` (Fig. 2)."""

import os
import re
import sys

import numpy as np

from .cli_args import MAX_THREADS, WEIGHTS_HELP, add_model_argument, bounded_int, image_size_arg, positive_int
from .utils import check_outputs, write_reports


def head_report(model, images, batch_size=8):
    """[{block, heads, similarity}] averaged over ``images`` (RGB 0..255 for raw models)."""
    from .analysis import attention_maps, head_similarity
    from .preprocessing import model_inputs

    sums, count = {}, 0
    for start in range(0, len(images), batch_size):
        chunk = model_inputs(model, images[start:start + batch_size])
        for name, maps in attention_maps(model, chunk).items():
            sums.setdefault(name, []).append(head_similarity(maps) * len(chunk))
            sums[name + "/heads"] = maps.shape[3]
        count += len(chunk)
    return [{"block": name, "heads": sums[name + "/heads"], "similarity": float(sum(values) / count)}
            for name, values in sums.items() if not name.endswith("/heads")]


def plot_heads(rows, title, path):
    from .utils import atomic_output, pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(range(1, len(rows) + 1), [r["similarity"] for r in rows], marker="o")
    ax.set_xticks(range(1, len(rows) + 1), [r["block"].replace("stages-", "s").replace("-blocks-", "b")
                                             for r in rows], fontsize=8)
    ax.set_ylabel("avg max cosine similarity\nbetween heads (lower = diverse)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_overlay(model, image, path, block=None):
    """The chosen image and, per head, the attention each token receives in ``block`` (default: the
    first block), windows stitched back to the feature grid and laid over the image."""
    from PIL import Image

    from .analysis import attention_blocks, attention_maps, stitch_windows
    from .preprocessing import model_inputs
    from .utils import atomic_output, pyplot

    plt = pyplot()
    block = block or attention_blocks(model)[0][0]
    maps = attention_maps(model, model_inputs(model, image[None]))[block]
    height, width = model.get_layer(block).input.shape[1:3]
    grid = stitch_windows(maps, height, width)[0]  # (heads, h, w)
    heads = grid.shape[0]
    fig, axes = plt.subplots(1, heads + 1, figsize=(2.6 * (heads + 1), 2.8))
    axes[0].imshow(image.astype(np.uint8))
    axes[0].set_title("image", fontsize=8)
    for h in range(heads):
        heat = np.asarray(Image.fromarray(grid[h].astype(np.float32)).resize(image.shape[1::-1], Image.BICUBIC))
        axes[h + 1].imshow(image.astype(np.uint8))
        axes[h + 1].imshow(heat, alpha=0.55, cmap="inferno")
        axes[h + 1].set_title(f"{block} head {h}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def cmd_heads(args):
    import keras_evit as ke

    from .artifacts import model_image_size
    from .preprocessing import list_images

    check_outputs({"--json": args.json, "--plot": args.plot, "--overlay": args.overlay},
                  inputs=[args.weights, args.images])
    paths = list_images(args.images, recursive=True)[:args.limit]
    if args.overlay and args.overlay_index >= len(paths):
        raise ValueError(f"--overlay-index {args.overlay_index}: {args.images} has {len(paths)} image(s) "
                         f"(with --limit {args.limit}): use 0..{max(len(paths) - 1, 0)}")
    model, _ = ke.load_classifier(args.weights, args.model, args.image_size, classifier_activation=None)
    size = model_image_size(model)
    images, skipped = [], 0
    for path in paths:
        try:
            images.append(ke.load_image(path, size))
        except ValueError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            skipped += 1
    if not images:
        raise ValueError(f"no readable images in {args.images}")
    rows = head_report(model, np.stack(images).astype(np.float32))
    print(f"{model.name}: head similarity per block on {len(images)} images (paper Fig. 4; lower = more diverse)")
    for r in rows:
        print(f"  {r['block']:<20} {r['heads']} heads  {r['similarity']:.3f}")
    title = f"{model.name}, {len(images)} images from {os.path.basename(os.path.normpath(args.images))}"
    write_reports(args, {"model": model.name, "images": len(images), "weights": str(args.weights),
                         "metric": "mean over heads of the max cosine similarity to another head", "rows": rows},
                  lambda path: plot_heads(rows, title, path))
    if args.overlay:
        plot_overlay(model, images[min(args.overlay_index, len(images) - 1)].astype(np.float32), args.overlay,
                     args.overlay_block)
        print(f"wrote {args.overlay}")
    return 0


def cmd_runtime(args):
    import tempfile

    from keras_evit.export.runtime_profile import grouped, plot, table

    if args.format not in ("onnx", "tflite"):
        raise ValueError(f"--format {args.format!r}: choose onnx (ONNX Runtime's profiler) or tflite (LiteRT's "
                         "benchmark_model op profiling)")
    check_outputs({"--json": args.json, "--plot": args.plot}, inputs=[args.weights, *(args.profile_file or [])])
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        raw = _profiles(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="keras_evit_analyze_") as workdir:  # removed on every exit path
            raw = _profiles(args, workdir)
    results = {label: grouped(per_op) for label, per_op in raw.items()}
    runtime = "LiteRT benchmark_model" if args.format == "tflite" else "ONNX Runtime"
    if args.format == "tflite" and args.profile_file:
        print(f"{runtime} profiles (threads and input as they were run): ms per inference by group")
    else:
        print(f"{runtime}, {args.threads} thread(s), batch 1, {args.image_size} px: ms per inference by group")
    print(table(results))
    write_reports(args, {"runtime": runtime, "threads": args.threads, "image_size": args.image_size,
                         "groups_us": results, "per_op_us": raw}, lambda path: plot(results, path))
    return 0


def _profiles(args, workdir):
    return _tflite_profiles(args, workdir) if args.format == "tflite" else _onnx_profiles(args, workdir)


def profile_labels(paths):
    """A label per profile file: its name without ``.profile.pb``, or its full path where two names match."""
    short = [re.sub(r"(\.profile)?\.pb$", "", os.path.basename(p)) for p in paths]
    if len(set(os.path.realpath(p) for p in paths)) < len(paths):
        raise ValueError("the same --profile-file is given twice")
    return {(s if short.count(s) == 1 else p): p for s, p in zip(short, paths)}


def _onnx_profiles(args, workdir):
    import keras_evit as ke
    from keras_evit.export import to_onnx
    from keras_evit.export.runtime_profile import onnx_profile

    from .artifacts import weights_arg

    raw = {}
    for variant in _variants(args):
        model = ke.build_model(variant, weights=weights_arg(args.weights), input_shape=(args.image_size,) * 2 + (3,))
        path = to_onnx(model, os.path.join(workdir, f"{variant}.onnx"), batch_size=1)
        shape = (1, args.image_size, args.image_size, 3)
        raw[f"{variant} keras-evit"] = onnx_profile(path, shape, args.threads, args.runs)
        if _reference_available():
            from keras_evit.export.bench import export_reference_onnx

            ref_path = export_reference_onnx(variant, args.image_size, os.path.join(workdir, f"{variant}_timm.onnx"))
            raw[f"{variant} timm (reference)"] = onnx_profile(ref_path, shape, args.threads, args.runs, layout="NCHW")
    return raw


def _tflite_profiles(args, workdir):
    """Profiles written by benchmark_model (``--profile-file``), or made here by ``--benchmark-model``."""
    from keras_evit.export.runtime_profile import run_benchmark_model, tflite_profile

    if args.profile_file:
        return {label: tflite_profile(p) for label, p in profile_labels(args.profile_file).items()}
    import keras_evit as ke
    from keras_evit.export import to_tflite

    from .artifacts import weights_arg

    paths = {}
    for variant in _variants(args):
        model = ke.build_model(variant, weights=weights_arg(args.weights), input_shape=(args.image_size,) * 2 + (3,))
        paths[variant] = to_tflite(model, os.path.join(workdir, f"{variant}.tflite"))
    if not args.benchmark_model:
        files = " ".join(paths.values())
        raise ValueError(
            f"wrote {files}\nLiteRT's Python interpreter has no op profiler. Profile each file with LiteRT's "
            f"benchmark_model, then read the result here:\n  benchmark_model --graph=FILE --num_threads="
            f"{args.threads} --enable_op_profiling=true --op_profiling_output_mode=proto "
            "--op_profiling_output_file=FILE.profile.pb\n  keras-evit analyze runtime --format tflite "
            "--profile-file FILE.profile.pb [...]\n(on a phone: export/phones/android_benchmark.sh pulls the "
            "profile back; on this machine: --benchmark-model PATH runs it for you)")
    return {f"{variant} keras-evit (LiteRT)": tflite_profile(run_benchmark_model(
        args.benchmark_model, path, args.threads, args.runs)) for variant, path in paths.items()}


def _variants(args):
    return [v.strip() for v in args.model.split(",") if v.strip()]


def _reference_available():
    try:
        from . import reference

        reference.import_timm()
        return True
    except ImportError:
        return False


def register(sub):
    analyze = sub.add_parser("analyze", help="the paper's measurements: runtime breakdown, head similarity")
    kinds = analyze.add_subparsers(dest="analysis", required=True)

    p = kinds.add_parser("heads", help="head similarity per block (paper Fig. 4) and an attention overlay")
    add_model_argument(p)
    p.add_argument("--weights", default="imagenet", help=WEIGHTS_HELP)
    p.add_argument("--images", required=True, help="a folder of images")
    p.add_argument("--limit", type=positive_int, default=32)
    p.add_argument("--image-size", type=image_size_arg, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="line plot of the similarity per block (PNG)")
    p.add_argument("--overlay", default=None, help="attention overlay picture (PNG) for one image")
    p.add_argument("--overlay-index", type=bounded_int(0, 1_000_000), default=0,
                   help="which image (sorted) to overlay")
    p.add_argument("--overlay-block", default=None, help="block name, default the first")
    p.set_defaults(func=cmd_heads)

    p = kinds.add_parser("runtime", help="per-op-type runtime breakdown grouped as the paper's Fig. 2")
    p.add_argument("--model", default="m4", help="variant(s), comma separated")
    p.add_argument("--weights", default="none", help="none (timing does not depend on values) or " + WEIGHTS_HELP)
    p.add_argument("--format", default="onnx",
                   help="onnx (ONNX Runtime's profiler) or tflite (LiteRT benchmark_model's op profiling)")
    p.add_argument("--profile-file", action="append", default=None,
                   help="tflite: a benchmark_model --op_profiling_output_mode=proto file (repeatable)")
    p.add_argument("--benchmark-model", default=None, help="tflite: a desktop benchmark_model binary to run here")
    p.add_argument("--threads", type=bounded_int(1, MAX_THREADS), default=1)
    p.add_argument("--image-size", type=image_size_arg, default=224)
    p.add_argument("--runs", type=positive_int, default=20)
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="stacked bars per model (PNG)")
    p.set_defaults(func=cmd_runtime)
