"""One training run per run folder: a second ``train`` into a folder that a live run is using is refused
(it would resume from, then overwrite, the first run's in-flight checkpoints).

The lock is an OS file lock (``flock``) on ``RUN_DIR/.lock``: the kernel drops it when the process ends,
however it ends, so a killed run never leaves a stale lock behind.
"""

import contextlib
import os

from keras_evit.utils import check_own_file

LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_dir_lock(run_dir):
    """Holds the run folder's lock for the block; ValueError naming the folder when another run holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; runs are not guarded there
        yield
        return
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK_NAME)
    check_own_file(path)  # the lock truncates the file it opens
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)  # no link made since
    try:
        check_own_file(path, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
            raise ValueError(f"{run_dir} is in use by a running training run (pid {holder}): wait for it to "
                             "finish, or train into another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
