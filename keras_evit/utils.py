"""Small shared helpers."""

import contextlib
import os
import tempfile


def _suffix(path):
    """The full multi-part suffix Keras and friends check (".weights.h5", ".tflite", ...)."""
    name = os.path.basename(path)
    for suffix in (".weights.h5", ".weights.json"):
        if name.endswith(suffix):
            return suffix
    return os.path.splitext(name)[1]


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path beside ``path``; renames it into place only if the block succeeds.

    A failure (or Ctrl-C) removes the temporary file, so no half-written output is ever left.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp" + _suffix(path))
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
