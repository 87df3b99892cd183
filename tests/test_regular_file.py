import os

import pytest

from keras_evit.regular_file import FileTooLarge, NotRegularFile, open_regular, read_regular


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
