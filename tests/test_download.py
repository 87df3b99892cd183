"""weights="imagenet" end to end against a loopback server (127.0.0.1 only): cache, bad downloads."""

import http.server
import os
import threading
import time

import numpy as np
import pytest

import keras_evit as ke
from keras_evit.weights import CheckpointError

from conftest import raw_images, timm_vs_keras


class _Server:
    """Serves {path: bytes}; ``declared`` overrides Content-Length to fake a cut connection."""

    def __init__(self):
        self.files, self.declared, self.requests, self.trickle, self.stall = {}, {}, [], {}, {}
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
                if self.path in server.stall:  # headers, then silence
                    self.wfile.flush()
                    time.sleep(server.stall[self.path])
                if self.path in server.trickle:  # a byte at a time, each well inside the per-read timeout
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(server.trickle[self.path])
                    return
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
    assert timm_vs_keras(ref, tm, model, raw_images(2, 224)) <= 1e-4
    assert _cache_files(tmp_path) == ["efficientvit_m0_imagenet.safetensors",
                                      "efficientvit_m0_imagenet.safetensors.sha256"]
    assert server.requests == ["/v1.0/efficientvit_m0.pth"]

    server.close()  # second call: no network at all
    again = ke.EfficientViTM0(weights="imagenet", include_top=False, input_shape=(256, 256, 3))
    assert again.output.shape[-1] == 192
    assert len(server.requests) == 1


@pytest.mark.parametrize("known", ["sha256", "size_bytes"])
def test_a_download_unlike_the_release_file_is_refused(ref, server, tmp_path, monkeypatch, known):
    """Where the facts table knows the release file's hash or size, a mirror sending another file is refused."""
    import dataclasses
    import hashlib

    from keras_evit import configs

    _, body = _official_bytes(ref, "m0", tmp_path)
    server.files["/v1.0/efficientvit_m0.pth"] = body
    cfg = configs.VARIANTS["m0"]
    wrong = {"sha256": hashlib.sha256(body + b"x").hexdigest(), "size_bytes": len(body) + 1}[known]
    monkeypatch.setitem(configs.VARIANTS, "m0", dataclasses.replace(
        cfg, released=dataclasses.replace(cfg.released, **{known: wrong})))
    with pytest.raises(CheckpointError, match="refused"):
        ke.EfficientViTM0(weights="imagenet")
    assert _cache_files(tmp_path) == []
    right = {"sha256": hashlib.sha256(body).hexdigest(), "size_bytes": len(body)}[known]
    monkeypatch.setitem(configs.VARIANTS, "m0", dataclasses.replace(
        cfg, released=dataclasses.replace(cfg.released, **{known: right})))
    ke.EfficientViTM0(weights="imagenet")
    assert _cache_files(tmp_path) == ["efficientvit_m0_imagenet.safetensors",
                                      "efficientvit_m0_imagenet.safetensors.sha256"]


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


def test_nan_download_is_refused_and_never_cached(ref, server, tmp_path):
    import argparse

    import torch

    tm = ref.create_timm_model("m0")
    state = ref.official_state_dict(ref.timm_state_dict(tm))
    state["blocks1.0.mixer.m.attn.attention_biases"][0, 3] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                "args": argparse.Namespace()}, str(path))
    server.files["/v1.0/efficientvit_m0.pth"] = path.read_bytes()
    with pytest.raises(CheckpointError, match="attention_biases has 1 non-finite"):
        ke.EfficientViTM0(weights="imagenet")
    assert _cache_files(tmp_path) == []


def test_corrupt_cache_is_replaced_or_named(ref, server, tmp_path):
    """A truncated cache file is caught by its SHA-256: removed and fetched again; offline, the error
    names the file."""
    _, body = _official_bytes(ref, "m0", tmp_path)
    server.files["/v1.0/efficientvit_m0.pth"] = body
    ke.EfficientViTM0(weights="imagenet")
    cached = tmp_path / "cache" / "efficientvit_m0_imagenet.safetensors"
    good = cached.read_bytes()
    cached.write_bytes(good[: len(good) // 3])
    with pytest.warns(UserWarning, match="do not match their recorded SHA-256"):
        ke.EfficientViTM0(weights="imagenet")
    assert cached.read_bytes() == good and len(server.requests) == 2
    cached.write_bytes(good[:100])
    server.close()
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match=f"cached weights {cached} were corrupt"):
        ke.EfficientViTM0(weights="imagenet")


def test_a_cache_record_that_is_a_pipe_is_replaced_not_read(ref, server, tmp_path):
    """The cache's SHA-256 record replaced by a pipe blocked the next load on reading it; now the cache
    entry counts as unverified: removed and fetched again."""
    import threading

    _, body = _official_bytes(ref, "m0", tmp_path)
    server.files["/v1.0/efficientvit_m0.pth"] = body
    ke.EfficientViTM0(weights="imagenet")
    record = tmp_path / "cache" / "efficientvit_m0_imagenet.safetensors.sha256"
    record.unlink()
    os.mkfifo(record)
    done = []

    def load():
        with pytest.warns(UserWarning, match="do not match their recorded SHA-256"):
            ke.EfficientViTM0(weights="imagenet")
        done.append(True)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(120)
    assert done, "the load blocked on the pipe"
    assert record.is_file() and len(server.requests) == 2


def test_stale_partial_downloads_are_cleaned(server, tmp_path):
    """Only this project's own temporary names go; a user's files in the same folder are never touched."""
    cache = tmp_path / "cache"
    cache.mkdir()
    old, fresh = cache / ".download-abc.part.pth", cache / ".download-new.part.pth"
    half_cached = cache / ".efficientvit_m0_imagenet.safetensors.x1y2.tmp.safetensors"
    users = [cache / ".notes.tmp.txt", cache / ".thesis.part", cache / "draft.tmp", cache / ".download-mine"]
    for path in (old, fresh, half_cached, *users):
        path.write_bytes(b"x" * 10)
    for path in (old, half_cached, *users):
        os.utime(path, (time.time() - 3 * 86400,) * 2)
    with pytest.raises(CheckpointError):
        ke.EfficientViTM0(weights="imagenet")  # 404 here; the stale file goes first
    assert not old.exists() and not half_cached.exists()
    assert fresh.exists()  # a fresh one may belong to a download in progress
    assert all(path.read_bytes() == b"x" * 10 for path in users)


def test_download_has_an_overall_deadline(server, tmp_path, monkeypatch):
    server.files["/v1.0/efficientvit_m0.pth"] = b"z" * 200  # 20 s at this trickle: the deadline must cut it
    server.trickle["/v1.0/efficientvit_m0.pth"] = 0.1
    monkeypatch.setenv("KERAS_EVIT_DOWNLOAD_DEADLINE", "1")
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="did not finish within 1 s"):
        ke.EfficientViTM0(weights="imagenet")
    assert time.monotonic() - started < 10  # well under the 20 s download, with room for a loaded machine
    assert _cache_files(tmp_path) == []


def test_download_deadline_holds_when_the_server_stops_sending(server, tmp_path, monkeypatch):
    server.files["/v1.0/efficientvit_m0.pth"] = b"z" * 200
    server.stall["/v1.0/efficientvit_m0.pth"] = 30  # headers, then 30 s of silence
    monkeypatch.setenv("KERAS_EVIT_DOWNLOAD_DEADLINE", "1")
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="did not finish within 1 s"):
        ke.EfficientViTM0(weights="imagenet")
    assert time.monotonic() - started < 10  # not the 60 s socket timeout, nor the 30 s stall
    assert _cache_files(tmp_path) == []


def test_a_cache_that_is_not_a_folder_is_named(server, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("mine")
    monkeypatch.setenv("KERAS_EVIT_HOME", str(home))
    with pytest.raises(CheckpointError, match="is a file, not a folder: point KERAS_EVIT_HOME at a folder"):
        ke.EfficientViTM0(weights="imagenet")
    assert home.read_text() == "mine"
    monkeypatch.setenv("KERAS_EVIT_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "efficientvit_m0_imagenet.safetensors").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="is not a file .* remove it"):
        ke.EfficientViTM0(weights="imagenet")


def test_a_cache_file_replaced_after_its_hash_check_is_refused_not_loaded(ref, server, tmp_path, monkeypatch):
    """The cache's recorded SHA-256 is checked on the very file that is then read: a file moved into the cache's
    path after the check (here, the same weights with one changed) is refused, never loaded."""
    from safetensors.numpy import load_file, save_file

    from keras_evit.weights import pretrained

    _, body = _official_bytes(ref, "m0", tmp_path)
    server.files["/v1.0/efficientvit_m0.pth"] = body
    ke.EfficientViTM0(weights="imagenet")
    cached = tmp_path / "cache" / "efficientvit_m0_imagenet.safetensors"
    state = load_file(str(cached))
    key = next(k for k in state if k.endswith("bias"))
    state[key] = state[key] + 1.0
    other = tmp_path / "other.safetensors"
    save_file(state, str(other))
    checked = pretrained.imagenet_weights

    def check_then_swap(*args, **kwargs):
        path = checked(*args, **kwargs)
        os.replace(other, path)
        return path

    monkeypatch.setattr(pretrained, "imagenet_weights", check_then_swap)
    with pytest.raises(CheckpointError, match="does not match its SHA-256 .* changed while it was loaded"):
        ke.EfficientViTM0(weights="imagenet")
    assert not other.exists() and len(server.requests) == 1
