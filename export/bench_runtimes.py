"""The runtimes ``keras-evit bench`` knows, by name."""

ALL_RUNTIMES = ("keras", "xla", "litert", "onnxruntime", "torch")
REFERENCE = "torch-onnx"  # timm's own ONNX export on ONNX Runtime: the ratio baseline
GPU_LARGE_BATCH = 1024  # the paper's GPU throughput protocol
# runtime name -> quantization of the .tflite it runs; "--runtimes litert" means all of them
LITERT = {"litert": "none", "litert-fp16": "fp16", "litert-int8": "int8", "litert-int8-mixed": "int8-mixed"}
