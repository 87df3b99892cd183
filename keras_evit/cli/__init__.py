"""The ``keras-evit`` command: every subcommand, from the packages that do the work (the model, export,
training, analysis). The top layer: nothing in the library imports it."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
