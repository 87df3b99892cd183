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


def non_negative_int(value):
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def image_size_arg(value):
    from keras_evit.preprocessing import check_image_size

    try:
        return check_image_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
