"""Measurements: ``keras-evit bench`` (inference speed and memory of the shipped files beside the reference,
training throughput and memory, the training input pipeline, a training step's profile), runtime and
kernel profiles of exported files, quantization fidelity, and the studies behind docs/benchmarks.md.

A top layer like ``keras_evit.cli``: it uses export and training; nothing but the command line imports it.
"""
