"""The runtimes ``keras-evit bench`` knows, by name."""

ALL_RUNTIMES = ("keras", "xla", "litert", "onnxruntime", "torch")
REFERENCE = "torch-onnx"  # timm's own ONNX export on ONNX Runtime: the ratio baseline
GPU_LARGE_BATCH = 1024  # the paper's GPU throughput protocol
# with --twins: the same weights built with include_preprocessing=False (fed normalized images), to show
# what the raw-pixel input of the shipped file costs
TWIN_SUFFIX = "@normalized"
