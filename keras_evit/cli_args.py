"""Argument types and help shared by every ``keras-evit`` subcommand (a leaf module: no cycles)."""

import argparse

WEIGHTS_HELP = "imagenet, none, a checkpoint file, a .keras model, or a training run folder"


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
