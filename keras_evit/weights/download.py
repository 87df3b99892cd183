"""Downloads and the weights cache: URLs, cache paths, streaming with a deadline, SHA-256 records.

Every file is written under a temporary name in the cache directory and renamed only when complete
and verified, so an interrupted or failed download never leaves a file that a later run would trust.
Converting a download into Keras weights is ``keras_evit.weights.pretrained``'s job.
"""

import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from ..configs import RELEASE_URL as DEFAULT_URL_BASE
from ..configs import VARIANTS
from ..utils import atomic_output
from .checkpoint import MAX_CHECKPOINT_BYTES, CheckpointError, sha256_of

URL_ENV = "KERAS_EVIT_WEIGHTS_URL"
HOME_ENV = "KERAS_EVIT_HOME"
DEADLINE_ENV = "KERAS_EVIT_DOWNLOAD_DEADLINE"
DEFAULT_DEADLINE_S = 1800  # a whole download, however slowly a server trickles
STALE_TEMP_S = 24 * 3600   # temporary files older than this are leftovers of killed runs


def cache_dir():
    default = os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")),
                           "keras_evit")
    return os.environ.get(HOME_ENV, default)


def weights_url(variant):
    """The release's file for ``variant`` (the facts table), under ``$KERAS_EVIT_WEIGHTS_URL`` when set (a mirror)."""
    base = os.environ.get(URL_ENV, DEFAULT_URL_BASE).rstrip("/")
    return f"{base}/{VARIANTS[variant].released.file}"


def check_release_file(path, variant, url):
    """Compares a download with what the facts table knows of the release's file (size, SHA-256), where known."""
    released = VARIANTS[variant].released
    if released.size_bytes is not None and os.path.getsize(path) != released.size_bytes:
        raise CheckpointError(f"{url} sent {os.path.getsize(path):,} bytes; the release's file has "
                              f"{released.size_bytes:,}: refused (a wrong or tampered mirror?)")
    if released.sha256 is not None and sha256_of(path) != released.sha256:
        raise CheckpointError(f"{url} does not match the release's SHA-256 {released.sha256}: refused "
                              "(a wrong or tampered mirror?)")


def cached_weights_path(variant):
    """The checked ImageNet state dict of ``variant`` in the cache (timm names, as safetensors)."""
    return os.path.join(cache_dir(), f"efficientvit_{variant}_imagenet.safetensors")


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def hashable(path):
    """True for a regular file no larger than any checkpoint: hashing it neither blocks (a pipe) nor takes
    minutes (a huge file)."""
    return os.path.isfile(path) and os.path.getsize(path) <= MAX_CHECKPOINT_BYTES


def write_hash(path):
    """Records ``path``'s SHA-256 beside it (``PATH.sha256``), atomically."""
    with atomic_output(path + ".sha256") as tmp, open(tmp, "w") as f:
        f.write(sha256_of(path) + "\n")


def recorded_sha256(path):
    """The SHA-256 recorded beside ``path`` (``PATH.sha256``), or None: missing, not a regular file (a pipe
    would block), longer than a hash, or not text."""
    from ..regular_file import read_regular

    try:
        return read_regular(path + ".sha256", 100).decode("ascii").strip()
    except (OSError, ValueError):
        return None


def hash_matches(path):
    """True when ``path`` and its recorded SHA-256 agree; False for a missing or mismatching record, and
    without reading either when the record is not a regular file or ``path`` is larger than any checkpoint
    (hashing it would take minutes)."""
    if not hashable(path):
        return False
    recorded = recorded_sha256(path)
    return recorded is not None and recorded == sha256_of(path)


# the names download() and atomic_output() give their temporary files in the cache
OWN_TEMPORARY = re.compile(r"\.download-[\w-]+\.part(\.\w+)?|\.efficientvit_m[0-5]_imagenet\.[\w.]+\.tmp[\w.]*")


def remove_stale_temporaries(directory, max_age_s=STALE_TEMP_S):
    """Deletes the temporary files killed runs of this project left in ``directory``: downloads
    (``.download-*.part*``) and half-written cache files (``.efficientvit_*.tmp*``); nothing else."""
    now = time.time()
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        path = os.path.join(directory, name)
        if OWN_TEMPORARY.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            try:
                if now - os.path.getmtime(path) > max_age_s:
                    os.remove(path)
            except OSError:
                pass


def download(url, dest_dir, progress=True, timeout=60, deadline_s=None):
    """Stream ``url`` to a temporary file in ``dest_dir``; returns its path. Checks the length, and gives
    up after ``deadline_s`` in all (default ``$KERAS_EVIT_DOWNLOAD_DEADLINE`` or 30 min)."""
    from tqdm.auto import tqdm

    deadline_s = deadline_s or float(os.environ.get(DEADLINE_ENV, DEFAULT_DEADLINE_S))
    # ".part" marks it unfinished; the real extension tells read_checkpoint the format
    suffix = ".part" + os.path.splitext(urllib.parse.urlparse(url).path)[1]
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".download-", suffix=suffix)
    started = time.monotonic()
    try:
        # a server that stops sending is caught by the socket timeout, never longer than the deadline
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=min(timeout, deadline_s)) as response:
            total = int(response.headers.get("Content-Length") or 0)
            if total > MAX_CHECKPOINT_BYTES:
                raise CheckpointError(f"{url} is {total:,} bytes, more than any EfficientViT checkpoint: refused")
            received = 0
            with tqdm(total=total or None, unit="B", unit_scale=True, desc=os.path.basename(url),
                      disable=not progress) as bar:
                while True:
                    chunk = response.read1(1 << 20)  # returns what has arrived: the deadline is checked
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if received > MAX_CHECKPOINT_BYTES:
                        raise CheckpointError(f"{url} sent more than {MAX_CHECKPOINT_BYTES:,} bytes: refused")
                    if time.monotonic() - started > deadline_s:
                        raise CheckpointError(f"download of {url} did not finish within {deadline_s:.0f} s "
                                              f"({received:,} bytes so far): try again, or set {DEADLINE_ENV}")
        if total and received != total:
            raise CheckpointError(
                f"download of {url} is truncated: got {received} of {total} bytes. Try again.")
        return tmp
    except (urllib.error.URLError, OSError, ValueError) as exc:
        _remove(tmp)
        if isinstance(exc, CheckpointError):
            raise
        if time.monotonic() - started >= deadline_s:
            raise CheckpointError(f"download of {url} did not finish within {deadline_s:.0f} s (the server stopped "
                                  f"sending): try again, or set {DEADLINE_ENV}") from exc
        raise CheckpointError(
            f"could not download {url}: {exc}. Check the network, set {URL_ENV} to a mirror, or "
            "pass a local checkpoint instead (--weights PATH on the command line, weights=PATH in Python).") from exc
    except BaseException:
        _remove(tmp)
        raise
