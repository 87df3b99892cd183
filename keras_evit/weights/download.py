"""ImageNet weights: download the official release once, verify, convert, cache as Keras weights.

Every file is written under a temporary name in the cache directory and renamed only when complete
and verified, so an interrupted or failed download never leaves a file that a later run would trust.
"""

import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from ..utils import atomic_output
from .checkpoint import CheckpointError, read_checkpoint

DEFAULT_URL_BASE = "https://github.com/xinyuliu-jeffrey/EfficientViT_Model_Zoo/releases/download/v1.0"
URL_ENV = "KERAS_EVIT_WEIGHTS_URL"
HOME_ENV = "KERAS_EVIT_HOME"


def cache_dir():
    default = os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")),
                           "keras_evit")
    return os.environ.get(HOME_ENV, default)


def weights_url(variant):
    base = os.environ.get(URL_ENV, DEFAULT_URL_BASE).rstrip("/")
    return f"{base}/efficientvit_{variant}.pth"


def cached_weights_path(variant):
    return os.path.join(cache_dir(), f"efficientvit_{variant}_imagenet.weights.h5")


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def download(url, dest_dir, progress=True, timeout=60):
    """Stream ``url`` to a temporary file in ``dest_dir``; returns its path. Checks the length."""
    from tqdm.auto import tqdm

    # ".part" marks it unfinished; the real extension tells read_checkpoint the format
    suffix = ".part" + os.path.splitext(urllib.parse.urlparse(url).path)[1]
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".download-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            received = 0
            with tqdm(total=total or None, unit="B", unit_scale=True, desc=os.path.basename(url),
                      disable=not progress) as bar:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total and received != total:
            raise CheckpointError(
                f"download of {url} is truncated: got {received} of {total} bytes. Try again.")
        return tmp
    except (urllib.error.URLError, OSError, ValueError) as exc:
        _remove(tmp)
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"could not download {url}: {exc}. Check the network, set {URL_ENV} to a mirror, or "
            "pass weights=PATH to a local checkpoint.") from exc
    except BaseException:
        _remove(tmp)
        raise


def get_imagenet_weights(variant, progress=True):
    """Path of the cached, verified Keras weights for ``variant`` (downloading on first use)."""
    final = cached_weights_path(variant)
    if os.path.isfile(final):
        return final
    from ..models import build_model  # late import: models imports this package
    from .convert import assign_state_dict

    os.makedirs(cache_dir(), exist_ok=True)
    url = weights_url(variant)
    raw = download(url, cache_dir(), progress=progress)
    try:
        state = read_checkpoint(raw)
        reference = build_model(variant, weights=None, classifier_activation=None)
        assign_state_dict(reference, state, variant=variant, allow_resize=False, source=f"download {url}")
        with atomic_output(final) as tmp:
            reference.save_weights(tmp)
    finally:
        _remove(raw)
    return final
