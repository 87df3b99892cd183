"""``keras-evit train``, ``finetune`` and ``evaluate``."""

import sys

from .args import (MAX_EVAL_BATCH, MAX_TRAIN_BATCH, WEIGHTS_HELP, add_model_argument, bounded_int,
                                 image_size_arg, positive_int)

from keras_evit.training.recipe import PRESETS

STRATEGIES = ("mirrored", "multiworker", "tpu", "default")


def _recipe(args, preset):
    from keras_evit.training.recipe import get_recipe

    return get_recipe(
        args.recipe or preset, epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
        base_lr=args.lr, weight_decay=args.weight_decay, seed=args.seed, checkpoint_every=args.checkpoint_every,
        mixed_precision=args.mixed_precision or None, cache=args.cache or None,
        sync_bn=False if args.no_sync_bn else None, remat=args.remat or None,
        distill_teacher=getattr(args, "distill_teacher", None), distill_type=getattr(args, "distill_type", None))


def _run(args, preset, weights=None, freeze=False):
    import os

    from keras_evit.training.checkpoint import TrainingDiverged
    from keras_evit.training.loop import train

    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ValueError(f"--output {args.output!r} is a file: name a run folder (new, or one to resume)")

    try:
        train(args.model, args.data, args.output, _recipe(args, preset), strategy=args.strategy, weights=weights,
              data_dir=args.data_dir, freeze_backbone=freeze, steps_per_epoch=args.steps_per_epoch,
              verbose="auto" if sys.stdout.isatty() else 2)
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_train(args):
    return _run(args, "imagenet")


def cmd_finetune(args):
    from keras_evit.weights.artifacts import weights_arg

    return _run(args, "finetune", weights=weights_arg(args.weights),
                freeze=args.freeze_backbone)


def cmd_evaluate(args):
    from keras_evit.training.evaluate import evaluate

    if (args.batch_size or 0) > MAX_EVAL_BATCH:
        raise ValueError(f"--batch-size {args.batch_size} is over evaluate's {MAX_EVAL_BATCH} (a larger batch "
                         "only needs more memory): pass a smaller one")
    evaluate(args.model, args.weights, args.data, args.split, args.batch_size or 64, args.image_size,
             args.data_dir)
    return 0


def _common(p):
    add_model_argument(p)
    p.add_argument("--data", required=True, help="folder:PATH, tfds:NAME, or digits")
    p.add_argument("--data-dir", default=None, help="TFDS data dir (manual downloads such as ImageNet)")
    p.add_argument("--epochs", type=positive_int, default=None, help="default: the recipe's")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_TRAIN_BATCH), default=None,
                   help="global batch size (default: the recipe's; evaluate: 64, at most 4096)")
    p.add_argument("--image-size", type=image_size_arg, default=None,
                   help="default: the recipe's (evaluate: the model's own, else 224)")


def _training(p):
    _common(p)
    p.add_argument("--output", required=True, help="run directory (re-run the same command to resume)")
    p.add_argument("--strategy", default="mirrored", choices=STRATEGIES,
                   help="tf.distribute strategy: mirrored (all local devices), multiworker (reads TF_CONFIG), tpu, "
                        "default (no distribution)")
    p.add_argument("--recipe", default=None, choices=sorted(PRESETS),
                   help="hyper-parameter preset, imagenet being the paper's (default: imagenet for train, "
                        "finetune for finetune)")
    p.add_argument("--lr", type=float, default=None,
                   help="base learning rate per the recipe's reference batch (paper: 1e-3 per 512)")
    p.add_argument("--weight-decay", type=float, default=None, help="default: the recipe's")
    p.add_argument("--seed", type=int, default=None, help="default: the recipe's")
    p.add_argument("--checkpoint-every", type=positive_int, default=None,
                   help="steps between checkpoints (default: the recipe's)")
    p.add_argument("--steps-per-epoch", type=positive_int, default=None, help="cap steps per epoch (smoke runs)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="float16 compute on a GPU, bfloat16 elsewhere (TPUs); variables stay float32. "
                        "On a CPU it is no faster than float32 (slower on M0): leave it off there")
    p.add_argument("--cache", action="store_true", help="cache decoded evaluation images in memory")
    p.add_argument("--no-sync-bn", action="store_true",
                   help="per-replica BatchNorm statistics when distributed (default: synchronized)")
    p.add_argument("--remat", action="store_true",
                   help="recompute each block's activations in the backward pass instead of keeping them "
                        "(gradient checkpointing, timm's --grad-checkpointing): less memory, slower steps")


def register(sub):
    p = sub.add_parser("train", help="train from scratch (the paper's recipe by default)")
    _training(p)
    p.add_argument("--distill-teacher", default=None, help="a .keras teacher model")
    p.add_argument("--distill-type", default=None, choices=("soft", "hard"),
                   help="distillation loss (default: the recipe's, soft)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="transfer learning from pretrained weights")
    _training(p)
    p.add_argument("--weights", default="imagenet", help="imagenet or a weights/.keras file")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the new head")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="top-1/top-5 with the reference eval transform")
    _common(p)
    p.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    p.add_argument("--split", default="validation", choices=("validation", "train", "all", "test"),
                   help="validation: a folder's val/ (a folder without train/ and val/ is scored whole), a data "
                        "set's validation split; train: train/; all: the whole folder; test: a data set's test split")
    p.set_defaults(func=cmd_evaluate)
