"""Zip archives from users' disks (``.keras``, PyTorch ``.pth``, ``.npz``), sized before ``zipfile`` opens them.

``zipfile.ZipFile`` reads the whole central directory and makes a Python object for every entry it lists,
however many the file declares: a 26 MB file of 300,000 empty entries took 167 MB and 1.6 s to open. Weights
need a few thousand entries at most (a PyTorch checkpoint has one per tensor: M5 with its AdamW state, 2,099
entries in 131 KB), so a directory larger than ``MAX_DIRECTORY_BYTES``, or declaring more entries than fit in
that, is refused before it is read.
"""

import contextlib
import os
import struct
import zipfile

from ..regular_file import NotRegularFile, open_regular

MAX_DIRECTORY_BYTES = 4 << 20  # ~85,000 entries at most: ~50 MB of zipfile's objects

_END = struct.Struct("<4s4H2LH")  # end of central directory record (22 bytes)
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes, just before the end record
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_MAX_COMMENT = 1 << 16
ENTRY_BYTES = 46  # a central-directory entry's fixed part: an entry takes at least this


def _zip64_declared(f, locator_at):
    """(entries, directory bytes) that a zip64 end record declares, at both places a reader may look for it."""
    if locator_at < 0:
        return []
    f.seek(locator_at)
    signature, _, record_at, _ = _ZIP64_LOCATOR.unpack(f.read(_ZIP64_LOCATOR.size))
    if signature != b"PK\x06\x07":
        return []
    found = []
    for at in {locator_at - _ZIP64_END.size, record_at}:  # where Python's zipfile looks, where the locator points
        if 0 <= at:
            f.seek(at)
            record = f.read(_ZIP64_END.size)
            if len(record) == _ZIP64_END.size and record[:4] == b"PK\x06\x06":
                fields = _ZIP64_END.unpack(record)
                found.append((max(fields[6], fields[7]), fields[8]))
    return found


def directory_declared(source):
    """(entries, bytes) of the central directory the archive ``source`` (a path or an open binary file)
    declares, as ``zipfile`` finds it (an end record at the end of the file or after a comment, updated by a
    zip64 record), or None when there is no end record. Where a crafted file could be read two ways, the
    larger of each. (PyTorch's reader sizes its tables by the entry count, Python's zipfile reads the bytes.)"""
    with contextlib.ExitStack() as stack:
        f = source if hasattr(source, "read") else stack.enter_context(open(source, "rb"))
        size = f.seek(0, os.SEEK_END)
        start = max(size - _END.size - _MAX_COMMENT, 0)
        f.seek(start)
        tail = f.read()
        at = len(tail) - _END.size
        if not (at >= 0 and tail[at:at + 4] == b"PK\x05\x06" and tail[-2:] == b"\0\0"):
            at = tail.rfind(b"PK\x05\x06")
            if at < 0 or at + _END.size > len(tail):
                return None
        fields = _END.unpack(tail[at:at + _END.size])
        declared = [(max(fields[3], fields[4]), fields[5]), *_zip64_declared(f, start + at - _ZIP64_LOCATOR.size)]
    return max(entries for entries, _ in declared), max(size for _, size in declared)


@contextlib.contextmanager
def open_zip(path, error=ValueError, max_directory_bytes=MAX_DIRECTORY_BYTES, name=None):
    """``with zipfile.ZipFile(path)``, refused first (``error``, a ValueError) when it is not a regular file (a
    FIFO or device would block or never end) or its central directory is over ``max_directory_bytes`` (or
    lists more entries than would fit in that). The file is opened once: what is checked is what zipfile
    reads. Missing: FileNotFoundError; not a zip: ``zipfile.BadZipFile``, as from zipfile itself. ``name``:
    what messages call the file (the user's path, where ``path`` is a pinned one)."""
    name = name or path
    try:
        f = open_regular(path)
    except NotRegularFile:
        raise error(f"{name} is not a regular file (a folder, pipe, device or socket): refused") from None
    with f:
        entries, size = directory_declared(f) or (0, 0)
        if size > max_directory_bytes or entries > max_directory_bytes // ENTRY_BYTES:
            raise error(f"{name}: its zip directory declares {entries:,} entries in {size:,} bytes, more "
                        f"than any model's weights need (at most {max_directory_bytes:,} bytes; crafted or "
                        "corrupt?): refused")
        f.seek(0)
        with zipfile.ZipFile(f) as archive:
            yield archive
