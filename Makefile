# Two commands set everything up on a fresh machine:  make demo  |  make test
PY ?= python3
PIP = $(PY) -m pip -q --disable-pip-version-check

.PHONY: install install-test install-arm64 install-perf accelerator-wheels demo test test-fast

install:
	$(PIP) install -e .

# torch first, pinned to the CPU build (nothing may pull a CUDA torch); timm without its
# torchvision dependency (no CPU wheel here: the tests stub it, see keras_evit/reference.py)
install-test:
	$(PIP) install torch==2.13.0
	$(PIP) install --no-deps timm==1.0.31
	$(PIP) install -e ".[test,reference]"
	$(PIP) install jax==0.10.2 jaxlib==0.10.2   # CPU: the JAX-backend tests
	keras-evit setup-mediapipe   # MediaPipe's metadata writer and Tasks client, in a venv of its own
	$(MAKE) install-arm64
	$(MAKE) install-perf

# LiteRT's aarch64 build under qemu user-mode emulation (the phone's ARM kernels): Debian's qemu-user-static
# and debootstrap (installed here when absent; needs root), then an arm64 root with Python and ai-edge-litert
install-arm64:
	command -v qemu-aarch64-static >/dev/null && command -v debootstrap >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static debootstrap)
	$(PY) -m keras_evit.export.phones.arm64 setup

# Linux perf, which samples where an exported file's time goes by XNNPACK kernel (keras_evit.benchmarks.kernel_profile)
install-perf:
	command -v perf >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf)

# Keras and what it needs beyond a GPU machine's JAX, PyTorch and timm (Python 3.12 wheels, into the ignored
# .whl/), for keras_evit.benchmarks.accelerator there (docs/benchmarks.md, "On an accelerator")
accelerator-wheels:
	$(PIP) download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0

demo: install
	keras-evit demo

# two workers: CI and developer machines have 2 cores (much of a test is single-threaded conversion).
# `make test` (what .ci/run runs): the default suite and the slow end-to-end cases; `make test-fast`: the
# default suite alone (`pytest`), for the edit-test loop.
test: install-test
	$(PY) -m ruff check .
	KERAS_EVIT_REQUIRE_REFERENCE=1 $(PY) -m pytest -n 2 --durations=15 -m ""

test-fast: install-test
	KERAS_EVIT_REQUIRE_REFERENCE=1 $(PY) -m pytest -n 2 --durations=15
