"""The runtimes ``keras-evit bench`` knows, by name."""

ALL_RUNTIMES = ("keras", "xla", "litert", "onnxruntime", "torch")
REFERENCE = "torch-onnx"  # timm's own ONNX export on ONNX Runtime: the ratio baseline
GPU_LARGE_BATCH = 1024  # the paper's GPU throughput protocol
# runtime name -> (quantization, int8 io) of the .tflite it runs, each the file `keras-evit export
# --quantize Q [--int8-io]` writes; "--runtimes litert" means all of them
LITERT = {"litert": ("none", False), "litert-fp16": ("fp16", False), "litert-int8": ("int8", False),
          "litert-int8-io": ("int8", True), "litert-int8-mixed": ("int8-mixed", False)}
# with --twins: the same weights built with include_preprocessing=False (fed normalized images), to show
# what the raw-pixel input of the shipped file costs
TWIN_SUFFIX = "@normalized"
