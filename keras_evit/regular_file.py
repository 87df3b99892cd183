"""Opening files users hand us (images, class lists, preset configs, checkpoint states) only when they are
regular files, checked on the open descriptor: a folder, pipe, device or socket never reaches a reader (a pipe
blocks a read forever, a device never ends), and a pipe put in a file's place after a check cannot block one."""

import contextlib
import os
import stat
import tempfile


class NotRegularFile(ValueError):
    """The path exists but is a folder, pipe, device or socket."""


class FileTooLarge(ValueError):
    """The file holds more bytes than its reader accepts; ``size`` says how many."""

    def __init__(self, message, size):
        super().__init__(message)
        self.size = size


def open_regular(path):
    """``path`` open for binary reading; FileNotFoundError when it is missing, NotRegularFile when it is not a
    regular file. Opened without blocking (an open of a pipe would wait for a writer) and checked with
    ``fstat`` on what was opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except IsADirectoryError:
        raise NotRegularFile(f"{path} is not a regular file (a folder)") from None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise NotRegularFile(f"{path} is not a regular file (a folder, pipe, device or socket)")
    return os.fdopen(fd, "rb")


def read_regular(path, limit):
    """The bytes of the regular file ``path``, when it holds at most ``limit`` of them: NotRegularFile,
    FileTooLarge (its size measured on the open file) or FileNotFoundError otherwise. Never reads more than
    ``limit + 1`` bytes, so a file that grows while it is read is refused too."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        size = max(size, len(data))
        raise FileTooLarge(f"{path} is {size:,} bytes, more than {limit:,}", size)
    return data


@contextlib.contextmanager
def pinned(path, suffix=""):
    """A path to the very file ``path`` names now, held open: checks and then a reader that wants a path
    (safetensors, h5py, torch, Keras) read the same file, even if ``path`` is replaced or swapped in between.

    On Linux that path is ``/proc/self/fd/N`` of the open file (behind a link named ``*suffix`` in a private
    folder, for readers that go by the name, as Keras does by ``.keras``); where there is no such path, ``path``
    itself. NotRegularFile or FileNotFoundError as ``open_regular``."""
    with open_regular(path) as f:
        held = f"/proc/self/fd/{f.fileno()}"
        if not os.path.exists(held):
            yield os.fspath(path)
            return
        if not suffix:
            yield held
            return
        with tempfile.TemporaryDirectory(prefix="keras_evit_pinned_") as folder:
            link = os.path.join(folder, "file" + suffix)
            os.symlink(held, link)
            yield link


@contextlib.contextmanager
def private_copy(path, limit, suffix=""):
    """A copy of the regular file ``path`` (at most ``limit`` bytes, else FileTooLarge) in a folder of this
    process' own, removed on exit: for readers that resolve the path they are given (HDF5 does, and cannot
    open a replaced file through ``pinned``'s link). Checks and reader then see the bytes copied."""
    with open_regular(path) as f, tempfile.TemporaryDirectory(prefix="keras_evit_copy_") as folder:
        copy = os.path.join(folder, "file" + suffix)
        with open(copy, "wb") as out:
            copied = 0
            while copied <= limit:
                block = f.read(min(1 << 20, limit + 1 - copied))
                if not block:
                    break
                out.write(block)
                copied += len(block)
        if copied > limit:
            raise FileTooLarge(f"{path} is more than {limit:,} bytes", copied)
        yield copy
