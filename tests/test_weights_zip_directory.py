"""Zip archives are sized from their end records before zipfile reads their directory: the size found is
the one zipfile reads, and a directory listing far more entries than weights need is refused by every reader
of zips (PyTorch checkpoints, .npz, .keras) before it costs memory."""

import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from keras_evit.weights.zip_directory import MAX_DIRECTORY_BYTES, directory_declared, open_zip
from conftest import raised_without_blocking

HERE = os.path.dirname(os.path.abspath(__file__))


def _entries_bytes(path):
    """The central directory's size, from the entries zipfile read out of it."""
    with zipfile.ZipFile(path) as archive:
        return sum(46 + len(info.filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"))
                   + len(info.extra) + len(info.comment) for info in archive.infolist())


def _write_zip(path, entries, comment=b"", compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for i in range(entries):
            archive.writestr(f"archive/data/{i}", np.full(8, i, np.float32).tobytes())
        archive.comment = comment


@pytest.mark.parametrize("entries,comment,compression", [
    (1, b"", zipfile.ZIP_STORED),
    (40, b"a comment with PK\x05 in it", zipfile.ZIP_DEFLATED),
    (70_000, b"", zipfile.ZIP_STORED),  # over 65,535 entries: a zip64 end record
    (70_000, b"x" * 1000, zipfile.ZIP_STORED),
], ids=["one", "comment", "zip64", "zip64+comment"])
def test_the_size_found_is_the_directory_zipfile_reads(tmp_path, entries, comment, compression):
    path = str(tmp_path / "a.zip")
    _write_zip(path, entries, comment, compression)
    assert directory_declared(path) == (entries, _entries_bytes(path))
    size = _entries_bytes(path)
    with open_zip(path, max_directory_bytes=size) as archive:
        assert len(archive.infolist()) == entries
    with pytest.raises(ValueError, match=f"a.zip: its zip directory declares {entries:,} entries in {size:,} bytes"):
        with open_zip(path, max_directory_bytes=size - 1):
            pass


def test_an_entry_count_beyond_the_directory_is_refused(tmp_path):
    """A zip64 end record may declare a billion entries over a small directory; PyTorch's reader sizes its
    tables by that count. Refused by the count, though the directory's bytes are within the limit."""
    path = str(tmp_path / "a.zip")
    with zipfile.ZipFile(path, "w") as archive:  # over 65,535 entries: a zip64 end record
        for i in range(66_000):
            archive.writestr(str(i), b"")
    data = bytearray((tmp_path / "a.zip").read_bytes())
    record = data.rfind(b"PK\x06\x06")
    data[record + 24:record + 40] = (10**9).to_bytes(8, "little") * 2  # entries on this disk, in all
    (tmp_path / "a.zip").write_bytes(bytes(data))
    assert directory_declared(path) == (10**9, _entries_bytes(path)) and _entries_bytes(path) < MAX_DIRECTORY_BYTES
    with pytest.raises(ValueError, match="declares 1,000,000,000 entries in"):
        with open_zip(path):
            pass


def test_users_weights_files_are_far_below_the_limit(tmp_path):
    """A .keras file and numpy's and PyTorch's own zips (PyTorch writes its archive itself)."""
    import keras

    np.savez(tmp_path / "w.npz", **{f"w{i}": np.zeros(3) for i in range(500)})
    paths = [str(tmp_path / "w.npz")]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    paths.append(str(tmp_path / "m.keras"))
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.save({f"w{i}": torch.zeros(3) for i in range(500)}, tmp_path / "w.pth")
        paths.append(str(tmp_path / "w.pth"))
    for path in paths:
        entries, size = directory_declared(path)
        assert 0 < size == _entries_bytes(path) < MAX_DIRECTORY_BYTES // 50, path
        with open_zip(path) as archive:
            assert entries == len(archive.infolist()), path


def test_a_pipe_is_refused_not_opened(tmp_path):
    """A FIFO named like a model would block a reader forever: every zip reader refuses it unopened."""
    from keras_evit.weights.artifacts import load_keras_file
    from keras_evit.weights.checkpoint import CheckpointError, read_checkpoint

    for name, load, error in [("m.keras", load_keras_file, ValueError), ("w.npz", read_checkpoint, CheckpointError),
                              ("w.pth", read_checkpoint, CheckpointError)]:
        os.mkfifo(tmp_path / name)
        raised = raised_without_blocking(load, str(tmp_path / name), timeout=60)
        assert isinstance(raised, error) and "not a regular file" in str(raised), (name, raised)


def test_not_a_zip_is_left_to_zipfile(tmp_path):
    path = tmp_path / "not.zip"
    path.write_bytes(b"PK\x05\x06 too short")
    assert directory_declared(str(path)) is None
    with pytest.raises(zipfile.BadZipFile):
        with open_zip(str(path)):
            pass


CHILD = """
import os, shutil, zipfile
import peak_memory
from keras_evit.weights.artifacts import load_keras_file
from keras_evit.weights.checkpoint import read_checkpoint

folder = {folder!r}
with zipfile.ZipFile(os.path.join(folder, "many.pth"), "w") as archive:
    for i in range(90_000):
        archive.writestr(f"archive/data/{{i}}", b"")
for ext in ("npz", "keras"):
    shutil.copy(os.path.join(folder, "many.pth"), os.path.join(folder, "many." + ext))
loads = {{"pth": lambda p: read_checkpoint(p), "pth (without torch)": lambda p: read_checkpoint(p, prefer_torch=False),
         "npz": read_checkpoint, "keras": load_keras_file}}
for name, load in loads.items():
    before = peak_memory.start()
    try:
        load(os.path.join(folder, "many." + name.split()[0]))
        outcome = "LOADED"
    except ValueError as exc:
        outcome = f"REFUSED {{exc}}"
    print(f"{{name}} | {{peak_memory.grown_mb(before):.1f}} MB | {{outcome}}")
"""


def test_a_zip_listing_far_more_entries_than_weights_need_is_refused_before_it_is_read(tmp_path):
    """90,000 empty entries (a 10 MB file): zipfile would make an object for each (~50 MB);
    every reader refuses the file from its end record instead, in a fresh process with its peak measured."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "numpy",
           "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD.format(folder=str(tmp_path)))],
                          capture_output=True, text=True, timeout=300, env=env, cwd=HERE)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.count(" | ") == 2]
    assert [row[0] for row in rows] == ["pth", "pth (without torch)", "npz", "keras"], proc.stdout
    for name, grown, outcome in rows:
        assert outcome.startswith("REFUSED") and "zip directory declares" in outcome, (name, outcome)
        assert "many." in outcome, (name, outcome)  # the file is named
        assert float(grown.split()[0]) < 20, (name, grown)
