"""``keras-evit`` command line: predict, convert, demo, export, bench, train, finetune, evaluate."""

import argparse
import os
import sys


def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _weights_arg(value):
    return None if value in ("none", "None", "") else value


def cmd_predict(args):
    import numpy as np

    import keras_evit as ke

    model = ke.build_model(args.model, weights=_weights_arg(args.weights),
                           input_shape=(args.image_size, args.image_size, 3))
    failed = 0
    for path in args.images:
        try:
            image = ke.load_image(path, args.image_size)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        probs = model.predict(ke.preprocess_input(image[None]), verbose=0)
        print(path)
        for rank, (synset, name, score) in enumerate(ke.decode_predictions(np.asarray(probs), args.top)[0], 1):
            print(f"  {rank}. {name:<30} {synset}  {score:.4f}")
    return 2 if failed else 0


def cmd_convert(args):
    import keras_evit as ke
    from keras_evit.utils import atomic_output

    model = ke.build_model(args.model, weights=args.checkpoint, classifier_activation=None,
                           input_shape=(args.image_size, args.image_size, 3))
    if not args.output.endswith((".weights.h5", ".keras")):
        raise SystemExit("error: --output must end with .weights.h5 (weights) or .keras (whole model)")
    with atomic_output(args.output) as tmp:
        if args.output.endswith(".keras"):
            model.save(tmp)
        else:
            model.save_weights(tmp)
    print(f"wrote {args.output} ({model.name}, {model.count_params():,} parameters)")
    return 0


def cmd_demo(args):
    from keras_evit.demo import run_demo

    return run_demo(model=args.model, weights=_weights_arg(args.weights), images=args.images, limit=args.limit)


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-evit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="classify images with an ImageNet model")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", default="m2")
    p.add_argument("--weights", default="imagenet", help="imagenet, none, or a weights file")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--image-size", type=int, default=224)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("convert", help="convert an official/timm checkpoint to Keras weights")
    p.add_argument("checkpoint")
    p.add_argument("--model", required=True)
    p.add_argument("--output", required=True, help="*.weights.h5 or *.keras")
    p.add_argument("--image-size", type=int, default=224)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="classify the bundled ImageNet sample images")
    p.add_argument("--model", default="m2")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--images", default=None, help="folder of images (default: shared imagenet-sample)")
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=cmd_demo)

    for register in _optional_commands():
        register(sub)
    return parser


def _optional_commands():
    """Subcommands from keras_evit.export and keras_evit.training, when those are installed."""
    found = []
    for module in ("keras_evit.export.cli", "keras_evit.training.cli"):
        try:
            found.append(__import__(module, fromlist=["register"]).register)
        except ImportError as exc:
            if exc.name not in (module, module.rsplit(".", 1)[0]):
                raise
    return found


def main(argv=None):
    _quiet_tf()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
