"""Argument types and help shared by every ``keras-evit`` subcommand (a leaf module: no cycles)."""

import argparse

WEIGHTS_HELP = "imagenet, none, a checkpoint file, a .keras model, or a training run folder"
LABELS_HELP = ("class names for a model whose names do not travel with it: a JSON list or one name per line "
               "(default: classes.json beside the .keras, ImageNet's for 1000 outputs, else class_0, class_1, ...)")
DEFAULT_MODEL = "m2"  # one default for every subcommand
MODEL_HELP = "EfficientViT variant: m0, m1, m2, m3, m4 or m5"


def add_model_argument(parser):
    parser.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default; a default of None or False says nothing, so it is left out (choices show
    in the option's own line, as ``{a,b,c}``)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument parser whose help shows every default; its subcommands' parsers are of this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.option_strings and not action.help:  # an option with no words still shows its default
            action.help = " ".join(action.dest.split("_"))
        return action


def positive_int(value):
    """argparse type: an integer >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def bounded_int(low, high):
    """argparse type: an integer in [low, high] (the upper bound stops a runtime from crashing on it)."""
    def parse(value):
        number = int(value)
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}")
        return number
    parse.__name__ = f"int in {low}..{high}"
    return parse


def int_list(low, high):
    """argparse type: comma-separated integers, each in [low, high]."""
    one = bounded_int(low, high)

    def parse(value):
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise argparse.ArgumentTypeError("give at least one number")
        return [one(v) for v in items]
    parse.__name__ = "comma-separated ints"
    return parse


# the largest batches and thread counts the commands accept: beyond them runtimes crash or exhaust memory
MAX_EXPORT_BATCH = 1024
MAX_EVAL_BATCH = 4096
MAX_TRAIN_BATCH = 65536
MAX_THREADS = 1024


def image_size_arg(value):
    from keras_evit.preprocessing import check_image_size

    try:
        return check_image_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
