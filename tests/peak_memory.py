"""How much the code run after ``start()`` raised this process's peak resident memory (Linux).

Read from VmHWM, whose mark ``start()`` resets (/proc/self/clear_refs). Not from ru_maxrss: a child process
starts with its parent's peak there, so a child of a test worker that once held gigabytes would show no
growth at all, whatever it loaded."""

from keras_evit.utils import peak_resident_mb, resident_mb


def start():
    """Resets the peak to the memory resident now and returns that (MiB)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return resident_mb()


def grown_mb(started):
    """The peak since ``start()`` over what was resident then, in MiB."""
    return peak_resident_mb() - started
