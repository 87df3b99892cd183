"""A tfds split's TFRecord files, checked before TensorFlow reads them.

TensorFlow's record reader allocates the length a record's header declares before it reads the record. A
112-byte file whose one header declares 30 GiB (with the header's checksum made right) crashed the process
with a segmentation fault on a 23 GB machine; a length within memory gives a clean "truncated record" error.
So every header is read first (12 bytes per record: ImageNet's 1,251 per training shard; ~600,000 records/s
from the page cache), and a record that would end past its file's end is refused, naming the file.
"""

import os
import struct

from keras_evit.regular_file import open_regular

HEADER = struct.Struct("<QI")  # the record's length, then a checksum of that length
FOOTER_BYTES = 4  # the record's checksum, after its data


def check_record_lengths(path):
    """Refuses (ValueError) a TFRecord file whose record headers declare more bytes than the file holds."""
    fix = "Prepare the data set again (tfds build), or delete the file if it is not yours"
    with open_regular(path) as f:
        raw, size, at = f.raw, os.fstat(f.fileno()).st_size, 0
        while at < size:
            raw.seek(at)
            header = raw.read(HEADER.size)
            if len(header) < HEADER.size:
                raise ValueError(f"{path} ends inside a record header at byte {at:,}: truncated, or not a TFRecord "
                                 f"file. {fix}")
            length, _ = HEADER.unpack(header)
            end = at + HEADER.size + length + FOOTER_BYTES
            if end > size:
                raise ValueError(f"{path}: the record at byte {at:,} declares {length:,} bytes, more than the file "
                                 f"holds ({size:,} bytes in all): truncated, corrupt or crafted. {fix}")
            at = end


def check_split_files(builder, split):
    """Checks the TFRecord files of a tfds ``split`` on local disks (``check_record_lengths``); files of another
    format, on remote storage, or not recorded in the data set's info are left to tfds."""
    info = builder.info
    file_format = getattr(info, "file_format", None)
    if file_format is not None and getattr(file_format, "value", file_format) != "tfrecord":
        return
    try:
        paths = [os.fspath(p) for p in info.splits[split].filepaths]
    except (KeyError, ValueError, TypeError):  # no files recorded: a split tfds resolves itself, or a mock
        return
    paths = [p for p in paths if "://" not in p and os.path.exists(p)]
    from tqdm.auto import tqdm

    for path in tqdm(paths, desc=f"checking {split} files", unit="file", disable=len(paths) < 16):
        check_record_lengths(path)
