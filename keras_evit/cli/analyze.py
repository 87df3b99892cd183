"""``keras-evit analyze heads``: head similarity (the paper's Fig. 4) and attention overlays."""

import os
import sys

import numpy as np

from .args import WEIGHTS_HELP, add_model_argument, bounded_int, image_size_arg, positive_int
from ..utils import check_outputs, write_reports


def head_report(model, images, batch_size=8):
    """[{block, heads, similarity}] averaged over ``images`` (RGB 0..255 for raw models)."""
    from ..analysis import attention_maps, head_similarity
    from ..preprocessing import model_inputs

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
    from ..utils import atomic_output, pyplot

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

    from ..analysis import attention_blocks, attention_maps, stitch_windows
    from ..preprocessing import model_inputs
    from ..utils import atomic_output, pyplot

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

    from ..weights.artifacts import model_image_size
    from ..preprocessing import list_images

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


def register_heads(kinds):
    """``analyze heads``, under the ``analyze`` command's sub-parsers."""
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
