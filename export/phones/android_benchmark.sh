#!/usr/bin/env bash
# Benchmark a .tflite on an Android phone with TFLite's benchmark_model (CPU threads, XNNPACK, GPU, NNAPI).
#
#   export/phones/android_benchmark.sh MODEL.tflite [BENCHMARK_MODEL_BINARY]
#
# Needs adb with one device attached (USB debugging on). BENCHMARK_MODEL_BINARY is the prebuilt
# android_aarch64 `benchmark_model` from the TensorFlow Lite / LiteRT releases (or built with
# `bazel build -c opt --config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model`).
# Defaults to ./benchmark_model. Results are printed and saved to MODEL.android.txt.
set -euo pipefail

model=${1:?usage: $0 MODEL.tflite [benchmark_model binary]}
binary=${2:-./benchmark_model}
[ -f "$model" ] || { echo "error: model file not found: $model" >&2; exit 2; }
[ -f "$binary" ] || { echo "error: benchmark_model binary not found: $binary (see the header of $0)" >&2; exit 2; }
command -v adb >/dev/null || { echo "error: adb not on PATH (install Android platform-tools)" >&2; exit 2; }
[ "$(adb devices | awk 'NR>1 && $2=="device"' | wc -l)" -ge 1 ] || { echo "error: no Android device attached" >&2; exit 2; }

remote=/data/local/tmp
name=$(basename "$model")
adb push "$binary" $remote/benchmark_model >/dev/null
adb shell chmod +x $remote/benchmark_model
adb push "$model" "$remote/$name" >/dev/null
out="${model%.tflite}.android.txt"
: > "$out"

run() {
  local label=$1; shift
  echo "== $label" | tee -a "$out"
  adb shell $remote/benchmark_model --graph="$remote/$name" --warmup_runs=10 --num_runs=100 "$@" 2>&1 \
    | grep -E "Inference timings|Init|Memory|ERROR|Failed|delegate" | tee -a "$out" || true
}

echo "device: $(adb shell getprop ro.product.model) / $(adb shell getprop ro.board.platform)" | tee -a "$out"
run "CPU 1 thread, XNNPACK" --num_threads=1 --use_xnnpack=true
run "CPU 4 threads, XNNPACK" --num_threads=4 --use_xnnpack=true
run "CPU 1 thread, no XNNPACK" --num_threads=1 --use_xnnpack=false
run "GPU delegate" --use_gpu=true
run "NNAPI" --use_nnapi=true
# per-op times for `keras-evit analyze runtime --format tflite --profile-file ...` (paper Fig. 2 groups)
profile="${model%.tflite}.android.t1.profile.pb"
adb shell $remote/benchmark_model --graph="$remote/$name" --warmup_runs=10 --num_runs=50 --num_threads=1 \
  --use_xnnpack=true --enable_op_profiling=true --op_profiling_output_mode=proto \
  --op_profiling_output_file=$remote/op_profile.pb >/dev/null 2>&1 \
  && adb pull $remote/op_profile.pb "$profile" >/dev/null && echo "op profile: $profile" | tee -a "$out" \
  || echo "op profile: benchmark_model did not write one (needs a build with --op_profiling_output_mode)" | tee -a "$out"
adb shell rm -f "$remote/$name" $remote/op_profile.pb
echo "saved $out"
