"""Keeps TensorFlow's start-up notes off a command's stderr, passing everything else through as it comes.

TensorFlow's C++ runtime writes INFO lines (oneDNN, CUDA stubs, CPU instructions) and, on a machine without
a GPU, a "failed call to cuInit" error straight to file descriptor 2, before ``absl`` is set up, so
``TF_CPP_MIN_LOG_LEVEL`` does not silence them. Set ``TF_CPP_MIN_LOG_LEVEL=0`` to see everything.
"""

import contextlib
import os
import re
import sys
import threading

NOTE = re.compile(rb"I\d{4} [\d:.]+ +\d+ .*"
                  rb"|E\d{4} [\d:.]+ +\d+ .*failed call to cuInit.*"
                  rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                  rb"|To enable the following instructions: .* rebuild TensorFlow"
                  rb" with the appropriate compiler flags\.")


def is_note(line):
    """True for one of TensorFlow's start-up notes (``line``: bytes without its newline)."""
    return NOTE.fullmatch(line.rstrip(b"\r")) is not None


def _forward(read_fd, write_fd):
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not is_note(line))
        if pending and not re.match(rb"[IEW]\d|WARNING: All|To enable", pending):
            out, pending = out + pending, b""  # progress bars: pass a partial line through at once
        if out:
            os.write(write_fd, out)
    if pending and not is_note(pending):
        os.write(write_fd, pending)
    os.close(read_fd)


@contextlib.contextmanager
def startup_notes_filtered():
    """Within the block, stderr (of this process and its children) goes through the filter."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
    except OSError:  # no stderr to filter
        yield
        return
    thread = threading.Thread(target=_forward, args=(read_fd, saved), daemon=True)
    thread.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last writer here; the reader then sees its end
        thread.join(timeout=5)
        os.close(saved)
