"""weights="imagenet" end to end against a loopback server (127.0.0.1 only): cache, bad downloads."""

import http.server
import os
import threading

import numpy as np
import pytest

import keras_evit as ke
from keras_evit.weights import CheckpointError

from conftest import random_images


class _Server:
    """Serves {path: bytes}; ``declared`` overrides Content-Length to fake a cut connection."""

    def __init__(self):
        self.files, self.declared, self.requests = {}, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(server.declared.get(self.path, len(body))))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1.0"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch, tmp_path):
    srv = _Server()
    monkeypatch.setenv("KERAS_EVIT_WEIGHTS_URL", srv.url)
    monkeypatch.setenv("KERAS_EVIT_HOME", str(tmp_path / "cache"))
    yield srv
    srv.close()


def _official_bytes(ref, variant, tmp_path, drop=None, seed=0):
    import argparse

    import torch

    tm = ref.create_timm_model(variant, seed=seed)
    state = ref.official_state_dict(ref.timm_state_dict(tm))
    if drop:
        del state[drop]
    path = tmp_path / f"{variant}-{seed}.pth"
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                "args": argparse.Namespace(model=f"EfficientViT_{variant.upper()}")}, str(path))
    return tm, path.read_bytes()


def _cache_files(tmp_path):
    cache = tmp_path / "cache"
    return sorted(os.listdir(cache)) if cache.exists() else []


def test_imagenet_download_convert_cache(ref, server, tmp_path):
    tm, body = _official_bytes(ref, "m0", tmp_path)
    server.files["/v1.0/efficientvit_m0.pth"] = body
    model = ke.EfficientViTM0(weights="imagenet", classifier_activation=None)
    x = random_images(2, 224)
    assert np.abs(ref.timm_logits(tm, x) - model.predict(x, verbose=0)).max() <= 1e-4
    assert _cache_files(tmp_path) == ["efficientvit_m0_imagenet.weights.h5"]
    assert server.requests == ["/v1.0/efficientvit_m0.pth"]

    server.close()  # second call: no network at all
    again = ke.EfficientViTM0(weights="imagenet", include_top=False, input_shape=(256, 256, 3))
    assert again.output.shape[-1] == 192
    assert len(server.requests) == 1


def test_truncated_download(ref, server, tmp_path):
    _, body = _official_bytes(ref, "m0", tmp_path)
    server.files["/v1.0/efficientvit_m0.pth"] = body[: len(body) // 2]
    server.declared["/v1.0/efficientvit_m0.pth"] = len(body)
    with pytest.raises(CheckpointError, match="truncated"):
        ke.EfficientViTM0(weights="imagenet")
    assert _cache_files(tmp_path) == []


def test_corrupt_download(server, tmp_path):
    server.files["/v1.0/efficientvit_m0.pth"] = os.urandom(4096)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        ke.EfficientViTM0(weights="imagenet")
    assert _cache_files(tmp_path) == []


def test_wrong_variant_download(ref, server, tmp_path):
    _, body = _official_bytes(ref, "m1", tmp_path)
    server.files["/v1.0/efficientvit_m0.pth"] = body
    with pytest.raises(CheckpointError, match="holds efficientvit_m1 weights, not efficientvit_m0"):
        ke.EfficientViTM0(weights="imagenet")
    assert _cache_files(tmp_path) == []


def test_missing_tensor_download(ref, server, tmp_path):
    _, body = _official_bytes(ref, "m0", tmp_path, drop="blocks2.1.se.fc2.bias")
    server.files["/v1.0/efficientvit_m0.pth"] = body
    with pytest.raises(CheckpointError, match="missing.*patchmerge.se.fc2.bias"):
        ke.EfficientViTM0(weights="imagenet")
    assert _cache_files(tmp_path) == []


def test_not_found_names_the_fixes(server, tmp_path):
    with pytest.raises(CheckpointError, match="KERAS_EVIT_WEIGHTS_URL.*weights=PATH"):
        ke.EfficientViTM0(weights="imagenet")
    assert _cache_files(tmp_path) == []


def test_classes_mismatch_fails_before_download(server):
    with pytest.raises(ValueError, match="classes=10.*include_top=False"):
        ke.EfficientViTM0(weights="imagenet", classes=10)
    assert server.requests == []
