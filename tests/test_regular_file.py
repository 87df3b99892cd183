import os

import pytest

from keras_evit.regular_file import FileTooLarge, NotRegularFile, open_regular, pinned, private_copy, read_regular


def test_a_regular_file_is_read_up_to_its_limit(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"0123456789")
    assert read_regular(str(path), 10) == b"0123456789"
    with pytest.raises(FileTooLarge, match="a.json is 10 bytes, more than 9") as raised:
        read_regular(str(path), 9)
    assert raised.value.size == 10
    link = tmp_path / "link.json"
    link.symlink_to(path)  # reading through a link reads the file it names
    assert read_regular(str(link), 10) == b"0123456789"


def test_what_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    """A pipe with no writer: opening it for reading would wait for one, reading it would wait for data."""
    os.mkfifo(tmp_path / "pipe.json")
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "pipe_link.json").symlink_to(tmp_path / "pipe.json")
    for path in [tmp_path / "pipe.json", tmp_path / "folder.json", tmp_path / "pipe_link.json", "/dev/zero"]:
        with pytest.raises(NotRegularFile, match="is not a regular file"):
            read_regular(str(path), 100)
        with pytest.raises(NotRegularFile):
            open_regular(str(path))
    with pytest.raises(FileNotFoundError):
        read_regular(str(tmp_path / "missing.json"), 100)


def test_a_pinned_path_reads_the_file_as_opened_whatever_replaces_it(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"checked")
    with pinned(str(path), ".keras") as held:
        assert held.endswith(".keras")
        (tmp_path / "crafted").write_bytes(b"crafted")
        os.replace(tmp_path / "crafted", path)  # swapped after the open
        with open(held, "rb") as f:
            assert f.read() == b"checked"
    with pinned(str(path)) as held:
        assert open(held, "rb").read() == b"crafted"
    os.mkfifo(tmp_path / "pipe.keras")
    with pytest.raises(NotRegularFile):
        with pinned(str(tmp_path / "pipe.keras")):
            pass


def test_a_private_copy_holds_the_bytes_as_opened_and_no_more_than_its_limit(tmp_path):
    path = tmp_path / "m0.weights.h5"
    path.write_bytes(b"0123456789")
    with private_copy(str(path), 10, ".weights.h5") as copy:
        path.write_bytes(b"crafted")  # changed after the copy
        assert copy.endswith(".weights.h5") and open(copy, "rb").read() == b"0123456789"
    assert not os.path.exists(copy)  # removed on exit
    with pytest.raises(FileTooLarge):
        with private_copy(str(path), 6):
            pass
