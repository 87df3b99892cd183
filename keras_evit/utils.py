"""Small shared helpers."""

import contextlib
import os
import shutil
import tempfile


def _suffix(path):
    """The full multi-part suffix Keras and friends check (".weights.h5", ".tflite", ...)."""
    name = os.path.basename(path)
    for suffix in (".weights.h5", ".weights.json"):
        if name.endswith(suffix):
            return suffix
    return os.path.splitext(name)[1]


@contextlib.contextmanager
def atomic_output(path, directory=False):
    """Yields a temporary path beside ``path``; renames it into place only if the block succeeds.

    A failure (or Ctrl-C) removes the temporary file, so no half-written output is ever left.
    ``directory=True`` is for outputs that are folders (``.mlpackage``): the block creates the
    temporary path itself, and an existing folder at ``path`` is replaced.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    prefix, suffix = f".{os.path.basename(path)}.", ".tmp" + _suffix(path)
    if directory:
        tmp = tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix)
        os.rmdir(tmp)  # a free unique name: the writer creates it
    else:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=prefix, suffix=suffix)
        os.close(fd)
    try:
        yield tmp
        if directory:
            if os.path.isdir(path):
                shutil.rmtree(path)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        elif os.path.exists(tmp):
            os.remove(tmp)
