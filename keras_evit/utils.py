"""Small shared helpers."""

import contextlib
import errno
import os
import shutil
import stat
import tempfile

import numpy as np

# HDF5 metadata per variable and per file, over the raw bytes (a generous bound, measured ~1 kB)
H5_BYTES_PER_VARIABLE = 4096
H5_BYTES_PER_FILE = 1 << 20


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


def check_output_path(path, suffixes=None, directory=False, flag="--output"):
    """Refuses an output path before any work is done: wrong suffix, an existing folder where a file
    goes, or a parent folder that cannot be created or written."""
    path = os.fspath(path)
    if suffixes and not path.endswith(tuple(suffixes)):
        raise ValueError(f"{flag} {path!r} should end with {' or '.join(suffixes)}")
    if os.path.isdir(path) and not directory:
        raise ValueError(f"{flag} {path!r} is an existing folder: name a file inside it instead")
    if os.path.exists(path) and directory and not os.path.isdir(path):
        raise ValueError(f"{flag} {path!r} is an existing file, but this output is a folder")
    parent = os.path.dirname(os.path.abspath(path))
    existing = parent
    while not os.path.isdir(existing):
        if os.path.exists(existing):
            raise ValueError(f"cannot write {path!r}: {existing} is a file, not a folder")
        existing = os.path.dirname(existing)
    try:  # a real file, not os.access: root passes any permission check, a read-only mount does not
        fd, probe = tempfile.mkstemp(prefix=".keras_evit-probe-", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"cannot write {path!r}: {existing} is not writable ({exc.strerror})") from None
    return path


def check_outputs(outputs, inputs=(), folders=()):
    """Checks every output before work: ``outputs`` maps a flag (``--report``) to a path or None; each must
    be writable and different from the others and from every input path. Flags in ``folders`` write folders."""
    seen = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        check_output_path(path, directory=flag in folders, flag=flag)
        real = os.path.realpath(path)
        if real in seen:
            raise ValueError(f"{seen[real]} and {flag} both name {path!r}: one would replace the other")
        seen[real] = flag
    for path in inputs:
        if path is None or not os.path.exists(path):
            continue
        real = os.path.realpath(path)
        if real in seen:
            raise ValueError(f"{seen[real]} {path!r} is also an input: it would be overwritten; write elsewhere")


def check_own_file(path, fd=None):
    """Refuses (ValueError) a ``path`` that exists but is not a file of its own: through a symbolic or hard
    link, what is written to it would land in another file; a pipe or device would block or never end.
    ``fd``: the file as opened (with ``O_NOFOLLOW``), checked instead of the path."""
    try:
        info = os.lstat(path) if fd is None else os.fstat(fd)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise ValueError(f"{path} is not a file of its own (a link, folder, pipe or device): it is written to, so it "
                         "is left alone. Delete it, or use another folder")


def ensure_free_space(path, nbytes):
    """Refuses to start a write of ``nbytes`` into ``path``'s folder when the disk cannot hold it
    (h5py crashes the process on ENOSPC instead of raising)."""
    parent = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(parent).free
    if free < nbytes:
        raise OSError(errno.ENOSPC, f"not enough free disk space in {parent} to write {os.path.basename(path)}: "
                      f"{free / 1e6:.1f} MB free, {nbytes / 1e6:.1f} MB needed. Free some space or write elsewhere",
                      path)


def save_keras(model, path, variables=None):
    """``model.save`` (``.keras``) or ``model.save_weights`` (``.weights.h5``), atomically and only when the
    disk has room for it. ``variables``: what the file will hold (default the model's weights)."""
    variables = model.weights if variables is None else variables
    needed = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize + H5_BYTES_PER_VARIABLE
                 for v in variables) + H5_BYTES_PER_FILE  # from shapes: no copy of the weights
    ensure_free_space(path, needed)
    with atomic_output(path) as tmp:
        if path.endswith(".keras"):
            model.save(tmp)
        else:
            model.save_weights(tmp)
    return path


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (reports draw PNGs; no display is needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grouped_bars(path, rows, group, series, value, ylabel, title, hatched=(), rotation=0):
    """A report's PNG: one cluster of bars per ``group(row)``, one bar per ``series(row)`` (in first-seen
    order) of height ``value(row)``; ``hatched`` series (the references) are drawn hatched."""
    import numpy as np

    plt = pyplot()
    groups = list(dict.fromkeys(group(r) for r in rows))
    names = list(dict.fromkeys(series(r) for r in rows))
    height = {(group(r), series(r)): value(r) for r in rows}
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, min(15.0, 2.5 + 0.45 * len(groups) * max(1, len(names)))), 4.2))
    for k, name in enumerate(names):
        ax.bar(np.arange(len(groups)) + k * width, [height.get((g, name), 0) for g in groups], width,
               label=str(name), hatch="//" if name in hatched else None)
    ax.set_xticks(np.arange(len(groups)) + width * (len(names) - 1) / 2, groups, rotation=rotation,
                  ha="right" if rotation else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def resident_mb():
    """This process's resident memory now, in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_resident_mb():
    """This process's peak resident memory in MiB (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status: memory is measured on Linux only")


def write_json(path, payload):
    """Writes ``payload`` as indented JSON, atomically, and says so (the reports' --json)."""
    import json

    with atomic_output(path) as tmp, open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {path}")


def write_reports(args, payload, draw):
    """A report command's ``--json`` (``payload``) and ``--plot`` (``draw(path)``), each when asked for."""
    if args.json:
        write_json(args.json, payload)
    if args.plot:
        draw(args.plot)
        print(f"wrote {args.plot}")
